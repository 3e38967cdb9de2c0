"""Frame pairing between the teacher and the student of ``distill``: the objectives pair teacher
frame ``t`` with student frame ``t``, so both must read the same samples. Checked by hand and by
perturbing single samples on the real model classes (layer-norm CNNs, where nothing normalises
across frames)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

from robustdistill.config import ConfigError
from robustdistill.startup_checks import check_frame_grids
from robustdistill.student import StudentConfig, create_student
from robustdistill.upstream import Upstream

_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
          "intermediate_size": 64, "num_conv_pos_embeddings": 16,
          "num_conv_pos_embedding_groups": 2, "feat_extract_norm": "layer", "conv_bias": True}


def _encoder(family: str = "wavlm", **cnn) -> AutoModel:
    """A random tiny encoder; ``cnn``: conv_dim / conv_kernel / conv_stride (default: the
    wav2vec 2.0 CNN's kernels 10, 3, 3, 3, 3, 2, 2 and strides 5, 2, ..., 2, 16 channels)."""
    torch.manual_seed(0)
    cnn.setdefault("conv_dim", (16,) * len(cnn.get("conv_kernel", (0,) * 7)))
    return AutoModel.from_config(AutoConfig.for_model(family, **_SMALL, **cnn)).eval()


def _frames_moved(upstream: Upstream, x: torch.Tensor, sample: int) -> list[int]:
    """CNN frames (``extract_features``) that change when ``sample`` of ``x (1, S)`` changes."""
    n = torch.tensor([x.shape[1]])
    with torch.no_grad():
        base = upstream(x, n, return_extract_features=True).extract_features[0]
        y = x.clone()
        y[0, sample] += 0.5
        moved = upstream(y, n, return_extract_features=True).extract_features[0]
    return torch.nonzero((moved - base).abs().amax(-1) > 1e-6).flatten().tolist()


@pytest.mark.parametrize("preset", ["default", "pruned", "fast"])
def test_a_created_students_frame_k_reads_the_teachers_samples(preset):
    """``pruned`` halves the first two CNN layers' channels and ``fast`` has 256-channel layers:
    only channels change, so student frame ``k`` reads the teacher's samples
    ``[320 k, 320 k + 400)`` (by hand: field ``1 + 9 + 2*5 + 2*10 + 2*20 + 2*40 + 80 + 160``)
    and both have ``(S - 400) // 320 + 1`` frames."""
    teacher = Upstream(_encoder())
    teacher.freeze()
    student = Upstream(create_student(teacher, StudentConfig(preset=preset)).eval())
    x = torch.randn(1, 1600) * 0.1
    for sample, frames in ((0, [0]), (319, [0]), (320, [0, 1]), (399, [0, 1]), (400, [1]),
                           (959, [2]), (960, [2, 3]), (1039, [2, 3]),
                           (1040, [3]), (1359, [3]), (1360, [])):
        assert _frames_moved(teacher, x, sample) == frames, sample
        assert _frames_moved(student, x, sample) == frames, sample
    for n in (400, 719, 720, 1039, 1040, 16000):
        lengths = torch.tensor([n])
        expected = (n - 400) // 320 + 1
        assert int(teacher.frame_lengths(lengths)[0]) == expected
        assert int(student.frame_lengths(lengths)[0]) == expected
        with torch.no_grad():
            assert student(torch.randn(1, n), lengths).hidden_states[-1].shape[1] == expected
    assert (student.samples_per_frame, student.first_frame_centre) == (320, 200)


def test_check_frame_grids_refuses_a_student_with_other_frames(tiny_whisper_dir):
    """Hop 64, field 148 (kernels 8, strides 4 x 3: frame ``k`` centred at ``64 k + 74``)
    against the wav2vec 2.0 CNN (hop 320, centred at ``320 k + 200``): refused both ways, and
    so is another centre at the same hop (kernels 8,3,3,3,3,2,2: field 398, centre 199).
    A Whisper teacher on the student's grid (``ssl``) passes; on its own grid (``native``,
    centred at ``320 k``) only the hop is checked, its documented 200-sample offset."""
    base = Upstream(_encoder())
    small = Upstream(_encoder(conv_kernel=(8, 8, 8), conv_stride=(4, 4, 4)))
    shifted = Upstream(_encoder(conv_kernel=(8, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2)))
    assert (small.samples_per_frame, small.first_frame_centre) == (64, 74)
    assert (shifted.samples_per_frame, shifted.first_frame_centre) == (320, 199)
    check_frame_grids(base, Upstream(_encoder("hubert")))  # another family, the same CNN
    with pytest.raises(ConfigError, match=r"every 64 samples, frame 0 centred at sample 74\) "
                                          r"are not the teacher's \(every 320, centred at 200\)"):
        check_frame_grids(base, small)
    with pytest.raises(ConfigError, match="every 320, centred at 199"):
        check_frame_grids(shifted, base)
    native = Upstream.from_pretrained(tiny_whisper_dir)
    on_grid = Upstream.from_pretrained(tiny_whisper_dir, whisper_frames="ssl")
    check_frame_grids(on_grid, base)
    check_frame_grids(native, base)
    with pytest.raises(ConfigError, match=r"every 320, centred at 0\)"):
        check_frame_grids(native, small)


def test_distill_refuses_a_student_init_that_frames_audio_otherwise(tmp_path, tiny_wavlm_dir):
    """The tiny teacher has hop 64; a ``student_init`` with the wav2vec 2.0 CNN (hop 320) was
    trained with teacher frame ``t`` (``64 t + 74``) against student frame ``t``
    (``320 t + 200``), in silence. A student_init with the teacher's CNN is accepted."""
    from conftest import tiny_run_config

    from robustdistill.trainer import _Run

    folder = tmp_path / "base_cnn_student"
    _encoder("hubert").save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    cfg = tiny_run_config(tmp_path, tiny_wavlm_dir, "run", student_init=str(folder))
    with pytest.raises(ConfigError, match="are not the teacher's"):
        _Run(cfg)
    assert not (tmp_path / "run" / "student_init").exists()  # refused before writing it

    same = tmp_path / "same_cnn_student"
    teacher_cnn = AutoConfig.from_pretrained(tiny_wavlm_dir)
    _encoder("hubert", conv_dim=tuple(teacher_cnn.conv_dim), conv_kernel=tuple(
        teacher_cnn.conv_kernel), conv_stride=tuple(teacher_cnn.conv_stride)).save_pretrained(same)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(same)
    run = _Run(tiny_run_config(tmp_path, tiny_wavlm_dir, "run2", student_init=str(same)))
    assert run.model.student.samples_per_frame == 64
