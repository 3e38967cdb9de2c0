"""Student creation: stock configs, exact copies of the chosen teacher layers."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel

from robustdistill.student import (
    StudentConfig,
    create_student,
    save_student,
    student_feature_extractor,
)
from robustdistill.teachers import make_random_teacher
from robustdistill.upstream import Upstream


def test_student_copies_the_chosen_teacher_layers_exactly(tmp_path):
    teacher_dir = make_random_teacher("wavlm", "tiny", tmp_path / "t")
    config = AutoConfig.from_pretrained(teacher_dir)
    config.num_hidden_layers = 3
    AutoModel.from_config(config).save_pretrained(teacher_dir)  # a 3-layer tiny teacher
    teacher = Upstream.from_pretrained(teacher_dir)
    student = create_student(teacher, StudentConfig(num_layers=2, init_layers=[2, 0]))
    s, t = student.state_dict(), teacher.model.state_dict()
    for key, value in s.items():
        if key.startswith("encoder.layers.0.") and "rel_attn_embed" not in key:
            source = key.replace("encoder.layers.0.", "encoder.layers.2.")
        elif key.startswith("encoder.layers.1."):
            source = key.replace("encoder.layers.1.", "encoder.layers.0.")
        else:  # CNN, projection, positional conv, layer norm, WavLM's relative position bias
            source = key.replace("encoder.layers.0.attention.rel_attn_embed",
                                 "encoder.layers.0.attention.rel_attn_embed")
        assert torch.equal(value, t[source]), key
    assert student.config.num_hidden_layers == 2 and student.config.layerdrop == 0.0
    assert not student.config.apply_spec_augment


@pytest.mark.parametrize("family", ["wavlm", "hubert"])
def test_keep_train_randomness_restores_the_teacher_checkpoints_settings(tmp_path, family):
    """The frozen teacher runs without LayerDrop/SpecAugment; a student that keeps them gets
    the teacher checkpoint's values (same family or not), the default student none."""
    teacher_dir = make_random_teacher("wavlm", "tiny", tmp_path / "t")
    stored = AutoConfig.from_pretrained(teacher_dir)
    assert (stored.layerdrop, stored.apply_spec_augment, stored.mask_time_prob) == (
        0.1, True, 0.05)  # transformers' defaults, as the hub checkpoints
    teacher = Upstream.from_pretrained(teacher_dir)
    assert teacher.model.config.layerdrop == 0.0
    kept = create_student(teacher, StudentConfig(family=family, keep_train_randomness=True))
    assert (kept.config.layerdrop, kept.config.apply_spec_augment,
            kept.config.mask_time_prob) == (0.1, True, 0.05)
    plain = create_student(teacher, StudentConfig(family=family))
    assert (plain.config.layerdrop, plain.config.apply_spec_augment,
            plain.config.mask_time_prob) == (0.0, False, 0.0)


def test_default_heads_need_not_divide_by_64_and_bad_heads_are_named(tmp_path):
    teacher = Upstream.from_pretrained(make_random_teacher("wavlm", "tiny", tmp_path / "t"))
    StudentConfig(hidden_size=96)  # one head by default: accepted
    assert create_student(teacher, StudentConfig(hidden_size=96)).config.num_attention_heads == 1
    with pytest.raises(ValueError, match="num_attention_heads 5"):
        StudentConfig(hidden_size=96, num_attention_heads=5)
    with pytest.raises(ValueError, match="not divisible by its 3 attention heads"):
        create_student(teacher, StudentConfig(hidden_size=200))
    # the tiny teacher's positional convolution has 2 groups: torch's own error named no option
    with pytest.raises(ValueError, match="width 97 is not divisible by the 2 groups of the "
                                         "positional convolution"):
        create_student(teacher, StudentConfig(hidden_size=97, num_attention_heads=1))


def test_distilhubert_shape_from_a_base_teacher_config(tmp_path):
    teacher_dir = make_random_teacher("hubert", "base", tmp_path / "base")
    teacher = Upstream.from_pretrained(teacher_dir)
    student = create_student(teacher)
    params = sum(p.numel() for p in student.parameters()) / 1e6
    assert type(student).__name__ == "HubertModel"
    assert student.config.hidden_size == 768 and student.config.num_hidden_layers == 2
    assert 23.0 < params < 24.0  # DistilHuBERT: about 23.5 M


def test_other_family_and_width_is_random_and_loads_without_custom_code(tmp_path):
    teacher = Upstream.from_pretrained(make_random_teacher("wavlm", "tiny", tmp_path / "t"))
    student = create_student(teacher, StudentConfig(family="hubert", hidden_size=64,
                                                    num_layers=1))
    assert type(student).__name__ == "HubertModel" and student.config.num_attention_heads == 1
    out = save_student(student, student_feature_extractor(teacher, student.config), tmp_path / "s")
    reloaded = AutoModel.from_pretrained(out)
    for key, value in student.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key


def test_bad_student_configs():
    with pytest.raises(ValueError, match="family"):
        StudentConfig(family="bert")
    with pytest.raises(ValueError, match="init_layers"):
        StudentConfig(num_layers=2, init_layers=[0])


def test_init_layers_outside_the_teacher(tmp_path):
    teacher = Upstream.from_pretrained(make_random_teacher("hubert", "tiny", tmp_path / "t"))
    with pytest.raises(ValueError, match="outside"):
        create_student(teacher, StudentConfig(num_layers=1, init_layers=[5]))


def test_hubert_student_has_the_distilhubert_projection_and_exports_to_s3prl(tmp_path):
    teacher = Upstream.from_pretrained(make_random_teacher("hubert", "tiny", tmp_path / "t"))
    assert teacher.config.feat_proj_layer_norm  # HubertConfig's default, like HuBERT Base
    student = create_student(teacher, StudentConfig(num_layers=1))
    assert student.config.feat_proj_layer_norm is False
    t = teacher.model.state_dict()
    s = student.state_dict()
    assert torch.equal(s["feature_extractor.conv_layers.0.conv.weight"],
                       t["feature_extractor.conv_layers.0.conv.weight"])
    # Copied although the student lacks the layer norm before it, as s3prl's distiller does.
    assert torch.equal(s["feature_projection.projection.weight"],
                       t["feature_projection.projection.weight"])
    random = create_student(teacher, StudentConfig(num_layers=1, copy_projection=False))
    assert not torch.equal(random.state_dict()["feature_projection.projection.weight"],
                           t["feature_projection.projection.weight"])
    with_norm = create_student(teacher, StudentConfig(num_layers=1, projection_layer_norm=True))
    assert torch.equal(with_norm.state_dict()["feature_projection.projection.weight"],
                       t["feature_projection.projection.weight"])
