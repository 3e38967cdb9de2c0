"""A narrower student CNN pruned from the teacher's (``student.narrow_cnn_init: prune``)."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModel

from robustdistill.pruning import copy_pruned_cnn, select_cnn_channels
from robustdistill.student import (
    StudentConfig,
    create_student,
    save_student,
    student_feature_extractor,
)
from robustdistill.upstream import Upstream

CONV = "feature_extractor.conv_layers.{}.conv.weight"
NORM = "feature_extractor.conv_layers.{}.layer_norm.weight"
PROJ = "feature_projection.projection.weight"


def _two_layer_state(projection_norm: list[float] | None = None) -> dict[str, torch.Tensor]:
    """A 2-layer CNN (4 -> 3 channels) whose reading weights have hand-picked L1 norms."""
    reads = torch.tensor([[1.0, 1.0, 4.0, 1.0],   # |W1[o, c, :]|_1 for outputs o, inputs c
                          [9.0, 0.0, 0.0, 1.0],
                          [1.0, 3.0, 1.0, 1.0]])
    state = {
        CONV.format(0): torch.randn(4, 1, 2),
        NORM.format(0): torch.tensor([1.0, 0.5, 1.0, 3.0]),
        CONV.format(1): torch.stack([reads / 2, -reads / 2], dim=-1),
        PROJ: torch.tensor([[2.0, 1.0, -1.0], [-3.0, 0.0, 2.0]]),  # column L1: 5, 1, 3
    }
    if projection_norm is not None:
        state["feature_projection.layer_norm.weight"] = torch.tensor(projection_norm)
    return state


def test_channels_are_chosen_by_their_kept_readers_and_norm_gain():
    kept = select_cnn_channels(_two_layer_state(), [2, 2])
    # Last layer: projection columns 5, 1, 3 -> channels 0 and 2.
    assert kept[1].tolist() == [0, 2]
    # Layer 0: rows 0 and 2 of W1 read it with [2, 4, 5, 2], times gains [1, .5, 1, 3]
    # = [2, 2, 5, 6] -> channels 2 and 3. (All rows would give [11, 2, 5, 9] -> 0 and 3;
    # no gain [2, 4, 5, 2] -> 1 and 2.)
    assert kept[0].tolist() == [2, 3]
    # A layer norm before the projection scales its columns: [5, 10, 3] -> 0 and 1; then
    # rows 0 and 1 read layer 0 with [10, 1, 4, 2], times the gains [10, .5, 4, 6] -> 0 and 3.
    kept = select_cnn_channels(_two_layer_state([1.0, 10.0, 1.0]), [2, 2])
    assert [k.tolist() for k in kept] == [[0, 3], [0, 1]]
    # A layer the student keeps whole is the identity.
    assert [k.tolist() for k in select_cnn_channels(_two_layer_state(), [4, 3])] == [
        [0, 1, 2, 3], [0, 1, 2]]


def test_a_student_wider_than_the_teacher_or_of_another_depth_is_refused():
    with pytest.raises(ValueError, match=r"layers \[1\] are wider than the teacher's \(\[3\]"):
        select_cnn_channels(_two_layer_state(), [2, 4])
    with pytest.raises(ValueError, match="fewer than 3 layers"):
        select_cnn_channels(_two_layer_state(), [2, 2, 2])
    with pytest.raises(ValueError, match="more than 1 layers"):
        select_cnn_channels(_two_layer_state(), [2])
    with pytest.raises(ValueError, match="narrow_cnn_init must be one of"):
        StudentConfig(narrow_cnn_init="l1")


@pytest.fixture(scope="module")
def teacher(tiny_wavlm_dir):
    return Upstream.from_pretrained(tiny_wavlm_dir)


def _conv0_output(model, wave):
    out = {}
    handle = model.feature_extractor.conv_layers[0].register_forward_hook(
        lambda _m, _i, o: out.setdefault("x", o))
    with torch.no_grad():
        model(wave)
    handle.remove()
    return out["x"]


def test_pruned_student_keeps_the_teachers_weights_and_layer0_outputs(teacher):
    student = create_student(teacher, StudentConfig(conv_dim=[16, 16, 16], narrow_cnn_init="prune"))
    kept = select_cnn_channels(teacher.model.state_dict(), [16, 16, 16])
    t, s = teacher.model.state_dict(), student.state_dict()
    assert torch.equal(s[CONV.format(0)], t[CONV.format(0)][kept[0]])
    for layer in (1, 2):
        assert torch.equal(s[CONV.format(layer)], t[CONV.format(layer)][kept[layer]][:, kept[layer - 1]])
    assert torch.equal(s[NORM.format(0)], t[NORM.format(0)][kept[0]])
    assert torch.equal(s["feature_projection.layer_norm.weight"],
                       t["feature_projection.layer_norm.weight"][kept[2]])
    assert torch.equal(s[PROJ], t[PROJ][:, kept[2]])
    # Layer 0's norm is per channel (GroupNorm with one group per channel): the kept
    # channels give the teacher's outputs.
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_conv0_output(student, wave),
                               _conv0_output(teacher.model, wave)[:, kept[0]])
    # The transformer layers are copied as by default.
    key = "encoder.layers.0.attention.q_proj.weight"
    assert torch.equal(s[key], t[key])
    # Without the option the narrower CNN starts random, as before.
    random_cnn = create_student(teacher, StudentConfig(conv_dim=[16, 16, 16])).state_dict()
    assert not torch.equal(random_cnn[CONV.format(0)], s[CONV.format(0)])


def test_pruning_to_the_teachers_width_is_the_plain_copy(teacher):
    pruned = create_student(teacher, StudentConfig(narrow_cnn_init="prune")).state_dict()
    for key, value in create_student(teacher, StudentConfig()).state_dict().items():
        if key.startswith("feature_"):
            assert torch.equal(pruned[key], value), key
            assert torch.equal(value, teacher.model.state_dict()[key]), key


def test_a_student_of_another_family_gets_the_pruned_cnn(teacher, caplog):
    student = create_student(teacher, StudentConfig(family="hubert", conv_dim=[8, 8, 8],
                                                    narrow_cnn_init="prune"))
    kept = select_cnn_channels(teacher.model.state_dict(), [8, 8, 8])
    assert torch.equal(student.state_dict()[CONV.format(2)],
                       teacher.model.state_dict()[CONV.format(2)][kept[2]][:, kept[1]])
    with pytest.raises(ValueError, match="cannot be pruned"):
        other = AutoModel.from_config(student.config.__class__(
            **{**student.config.to_dict(), "conv_kernel": [4, 8, 8]}))
        copy_pruned_cnn(other, teacher.model)


def test_pruned_student_saves_and_loads_exactly(teacher, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="robustdistill.student"):
        student = create_student(teacher, StudentConfig(conv_dim=[24, 16, 8],
                                                        narrow_cnn_init="prune"))
    assert "student CNN [24, 16, 8] pruned from the teacher's [32, 32, 32]" in caplog.text
    out = save_student(student, student_feature_extractor(teacher, student.config), tmp_path / "s")
    loaded = AutoModel.from_pretrained(out)
    assert list(loaded.config.conv_dim) == [24, 16, 8]
    for key, value in student.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_pruning_follows_copy_projection_for_a_hubert_teacher(tmp_path):
    """HuBERT's projection follows a layer norm the DistilHuBERT-style student lacks: it is
    sliced and copied by default (as s3prl's distiller copies it), left random with
    ``copy_projection: false``, as the plain copy does."""
    from robustdistill.teachers import make_random_teacher

    hubert = Upstream.from_pretrained(make_random_teacher("hubert", "tiny", tmp_path / "t"))
    narrow = [width // 2 for width in hubert.config.conv_dim]
    kept = select_cnn_channels(hubert.model.state_dict(), narrow)
    t = hubert.model.state_dict()
    taken = create_student(hubert, StudentConfig(num_layers=1, conv_dim=narrow,
                                                 narrow_cnn_init="prune")).state_dict()
    assert "feature_projection.layer_norm.weight" not in taken
    assert torch.equal(taken[PROJ], t[PROJ][:, kept[-1]])
    left = create_student(hubert, StudentConfig(num_layers=1, conv_dim=narrow, copy_projection=False,
                                                narrow_cnn_init="prune")).state_dict()
    assert not torch.equal(left[PROJ], t[PROJ][:, kept[-1]])
    assert torch.equal(left[CONV.format(0)], t[CONV.format(0)][kept[0]])  # the CNN is pruned


def test_the_pruned_preset_prunes_the_teachers_cnn(teacher):
    student = create_student(teacher, StudentConfig(preset="pruned"))
    assert list(student.config.conv_dim) == [16, 16, 32]
    kept = select_cnn_channels(teacher.model.state_dict(), [16, 16, 32])
    assert kept[2].tolist() == list(range(32))
    assert torch.equal(student.state_dict()[CONV.format(2)],
                       teacher.model.state_dict()[CONV.format(2)][:, kept[1]])
    assert torch.equal(student.state_dict()[PROJ], teacher.model.state_dict()[PROJ])


def test_a_layer_norm_cnn_with_biases_is_pruned_too():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from robustdistill.teachers import PRESETS

    torch.manual_seed(0)
    config = Wav2Vec2Config(**PRESETS["tiny"], conv_bias=True, feat_extract_norm="layer")
    teacher = Upstream(Wav2Vec2Model(config), normalize=True)
    student = create_student(teacher, StudentConfig(conv_dim=[16, 8, 32], narrow_cnn_init="prune"))
    kept = select_cnn_channels(teacher.model.state_dict(), [16, 8, 32])
    t, s = teacher.model.state_dict(), student.state_dict()
    for layer in range(3):
        for part in ("conv.bias", "layer_norm.weight", "layer_norm.bias"):
            key = f"feature_extractor.conv_layers.{layer}.{part}"
            assert torch.equal(s[key], t[key][kept[layer]]), key


def test_a_data2vec_audio_teacher_is_pruned_too():
    """data2vec-audio's config has no feat_extract_norm (its CNN is always layer norm)."""
    from transformers import Data2VecAudioConfig, Data2VecAudioModel

    from robustdistill.teachers import PRESETS

    torch.manual_seed(0)
    teacher = Upstream(Data2VecAudioModel(Data2VecAudioConfig(**PRESETS["tiny"])),
                       normalize=True)
    student = create_student(teacher, StudentConfig(preset="pruned"))
    kept = select_cnn_channels(teacher.model.state_dict(), [16, 16, 32])
    t, s = teacher.model.state_dict(), student.state_dict()
    assert torch.equal(s[CONV.format(1)], t[CONV.format(1)][kept[1]][:, kept[0]])
    assert torch.equal(s[NORM.format(0)], t[NORM.format(0)][kept[0]])
