"""Student presets (default, pruned, fast), SDPA attention, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, WavLMConfig, WavLMModel

from robustdistill.config import ConfigError, load_config
from robustdistill.student import STUDENT_PRESETS, StudentConfig, _student_config, create_student
from robustdistill.trainer import _Run
from robustdistill.upstream import Upstream


@pytest.fixture(scope="module")
def base_teacher():
    """The WavLM Base+ shape on the meta device: configs and parameter counts, no weights."""
    with torch.device("meta"):
        return Upstream(WavLMModel(WavLMConfig()))


def _params(config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModel.from_config(config).parameters())


def test_presets_give_the_documented_shapes(base_teacher):
    default = _student_config(base_teacher, StudentConfig())
    fast = _student_config(base_teacher, StudentConfig(preset="fast"))
    pruned = _student_config(base_teacher, StudentConfig(preset="pruned"))
    assert (default.model_type, default.hidden_size, list(default.conv_dim)) == (
        "wavlm", 768, [512] * 7)
    assert (pruned.model_type, pruned.hidden_size, pruned.num_attention_heads,
            pruned.intermediate_size, list(pruned.conv_dim), pruned.num_hidden_layers) == (
        "wavlm", 768, 12, 3072, [256, 256, 512, 512, 512, 512, 512], 2)
    assert (fast.model_type, fast.hidden_size, fast.num_attention_heads,
            fast.intermediate_size, list(fast.conv_dim), fast.num_hidden_layers) == (
        "hubert", 384, 6, 1536, [256] * 7, 2)
    # Same frame arithmetic as the teacher: 320 samples per frame, same receptive field.
    assert fast.conv_stride == base_teacher.config.conv_stride
    assert fast.conv_kernel == base_teacher.config.conv_kernel
    assert round(_params(default) / 1e6, 1) == 23.5  # DistilHuBERT's size
    assert round(_params(fast) / 1e6, 1) == 5.9
    assert round(_params(pruned) / 1e6, 1) == 22.5
    # The fast student's model type has SDPA attention in transformers; WavLM has not.
    with torch.device("meta"):
        assert AutoModel.from_config(fast).config._attn_implementation == "sdpa"


def test_pruned_preset_halves_the_first_two_cnn_layers_of_any_teacher():
    with torch.device("meta"):
        small = Upstream(WavLMModel(WavLMConfig(conv_dim=[256] * 7, hidden_size=256,
                                                num_attention_heads=4, intermediate_size=1024)))
        three = Upstream(WavLMModel(WavLMConfig(conv_dim=[30, 32, 32], conv_kernel=[8, 8, 8],
                                                conv_stride=[4, 4, 4])))
    assert list(_student_config(small, StudentConfig(preset="pruned")).conv_dim) == [128] * 2 + [256] * 5
    assert list(_student_config(three, StudentConfig(preset="pruned")).conv_dim) == [15, 16, 32]
    # an explicit conv_dim wins over the preset's fractions
    explicit = _student_config(small, StudentConfig(preset="pruned", conv_dim=[64] * 7))
    assert list(explicit.conv_dim) == [64] * 7


def test_explicit_fields_override_the_preset(base_teacher):
    wide = _student_config(base_teacher, StudentConfig(preset="fast", hidden_size=512))
    assert (wide.hidden_size, wide.num_attention_heads, wide.intermediate_size) == (512, 8, 2048)
    assert list(wide.conv_dim) == [256] * 7 and wide.model_type == "hubert"
    wavlm = _student_config(base_teacher, StudentConfig(preset="fast", family="wavlm",
                                                        conv_dim=[128] * 7, num_layers=3))
    assert (wavlm.model_type, list(wavlm.conv_dim), wavlm.num_hidden_layers) == (
        "wavlm", [128] * 7, 3)
    assert set(STUDENT_PRESETS) == {"default", "pruned", "fast"}


def test_bad_preset_is_named():
    with pytest.raises(ValueError, match=r"student.preset must be one of \('default', 'pruned', 'fast'\)"):
        StudentConfig(preset="tiny")
    with pytest.raises(ConfigError, match="student"):
        load_config(None, ["--teacher", "x", "--student.preset", "turbo"])


def test_fast_student_runs_on_the_teachers_frames(tmp_path):
    from robustdistill.teachers import make_random_teacher

    teacher = Upstream.from_pretrained(make_random_teacher("wavlm", "small", tmp_path / "t"))
    student = Upstream(create_student(teacher, StudentConfig(preset="fast")), frozen=True)
    waves, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 5000])
    out = student(waves, lengths)
    assert out.hidden_states[-1].shape == (2, 24, 384)
    assert torch.equal(out.frame_lengths, teacher(waves, lengths).frame_lengths)


def _config(tmp_path, teacher_dir, out, **training):
    overrides = {
        "teacher": str(teacher_dir), "output_dir": str(tmp_path / out), "seed": 2,
        "data.synthetic_items": 6, "data.synthetic_seconds": "[1.2, 1.2]",
        "data.synthetic_dir": str(tmp_path / "corpus"), "data.batch_size": 2,
        "data.max_length_s": 1.0, "data.min_length_s": 0.5, "data.validation_fraction": 0.34,
        "augmentation.num_simulated_rooms": 2, "augmentation.room_max_order": 3,
        "objectives": "{layerwise: {teacher_layers: [1, 2]}}", "training.cpu": True,
        "training.report_to": "[]", "training.max_steps": 2,
        **{f"training.{k}": v for k, v in training.items()},
    }
    return load_config(None, [x for k, v in overrides.items() for x in (f"--{k}", str(v))])


def test_gradient_checkpointing_gives_the_same_step(tmp_path, tiny_wavlm_dir):
    """Recomputing the student's layers in the backward pass (dropout masks replayed from
    the saved RNG state) gives the same losses and the same updated weights."""
    results = []
    for checkpointing in (False, True):
        run = _Run(_config(tmp_path, tiny_wavlm_dir, f"gc{checkpointing}",
                           gradient_checkpointing=checkpointing))
        student = run.accelerator.unwrap_model(run.model).student.model
        assert student.is_activation_checkpointing == checkpointing
        batches = run._batches()
        losses = [run.train_step(batches)["loss"] for _ in range(2)]
        results.append((losses, {k: v.clone() for k, v in student.state_dict().items()}))
    (plain_losses, plain), (gc_losses, gc) = results
    assert gc_losses == pytest.approx(plain_losses, rel=1e-6)
    for key in plain:
        torch.testing.assert_close(gc[key], plain[key], rtol=1e-5, atol=1e-6)


def test_family_help_names_the_presets_family_as_create_student_resolves_it(base_teacher,
                                                                             capsys):
    """`--family`'s help (and `student.family`'s, in docs/config.md) used to say the default is
    the teacher's, but the `fast` preset makes a HuBERT student from any teacher."""
    from robustdistill.cli import main
    from robustdistill.config import DistillConfig
    from robustdistill.config_reference import config_reference

    assert _student_config(base_teacher, StudentConfig(preset="fast")).model_type == "hubert"
    assert _student_config(base_teacher, StudentConfig()).model_type == "wavlm"
    with pytest.raises(SystemExit):
        main(["create-student", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert ("--family {hubert,wavlm,wav2vec2,data2vec-audio} student model type; default: the "
            "preset's (fast: hubert), else the teacher's when it is one of these, else hubert"
            ) in help_text
    row = next(line for line in config_reference(DistillConfig, markdown=True).splitlines()
               if line.startswith("| `student.family`"))
    assert "default: the preset's (fast: hubert), else the teacher's" in row
