"""IML-KD: the teacher's 10 ms IG frame maps moved onto a student's frames (``map_targets``).

The GE2E teacher's frame ``i`` of a segment ``[a, b)`` is centred at ``a + 160 i``; a wav2vec
2.0-style CNN's frame ``k`` reads samples ``[320 k, 320 k + 400)``, centre ``320 k + 200``, and a
crop of ``N`` samples has ``(N - 400) // 320 + 1`` of them. Every sample belongs to the teacher
frame and to the student frame with the nearest centre; a student frame receives the share of
each teacher frame's samples it holds. Hand-computed maps, a per-sample reference over many
lengths, and the frame centres the encoders report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robustdistill.speaker.attribution import segment_bounds
from robustdistill.speaker.ge2e import MelSpectrogram
from robustdistill.speaker.targets import map_targets


def _ssl_frames(n: int) -> int:
    return (n - 400) // 320 + 1


def test_one_second_on_the_wav2vec2_grid_by_hand():
    # 1 s = 16000 samples: 101 teacher frames (centres 0, 160, ..., 16000), 49 student frames
    # (centres 200, 520, ..., 15560). Student k holds samples [320 k + 40, 320 k + 360) (the
    # first from 0, the last, 48, from 15400 to the end); teacher frame i holds
    # [160 i - 80, 160 i + 80) within [0, 16000). So student 0 takes teacher 0, 1 and 3/4 of 2;
    # student k in 1..47 takes 1/4 of 2k, all of 2k + 1 and 3/4 of 2k + 2; student 48 takes
    # 1/4 of 96 and all of 97..100. (The old rule, student floor(160 i / 320), gave student k
    # teacher 2k and 2k + 1: every even teacher frame went whole to the frame whose centre is
    # 200 samples away rather than to the one 120 samples away.)
    expected = torch.zeros(101, 49)
    expected[0, 0] = expected[1, 0] = 1.0
    for k in range(49):
        if k > 0:
            expected[2 * k, k] = 0.25
        if k < 48:
            expected[2 * k + 1, k] = 1.0
            expected[2 * k + 2, k] = 0.75
    expected[97:, 48] = 1.0
    (m,) = map_targets([(0, 16000)], _ssl_frames(16000), 320, 200)
    assert m.shape == (101, 49)
    assert torch.equal(m, expected)

    # A teacher map all on frame 2 (centre 320 = the start of student 1's receptive field,
    # 120 samples after student 0's centre): 3/4 to student 0, 1/4 to student 1.
    p = torch.zeros(1, 101)
    p[0, 2] = 1.0
    q = p @ m
    assert q[0, :2].tolist() == [0.75, 0.25] and float(q[0, 2:].abs().sum()) == 0.0
    # A uniform teacher map: 2 teacher frames per student frame inside, 2.75 and 4.25 at the
    # ends (the last student frame also holds the 240 samples its CNN drops); sum still one.
    uniform = torch.full((1, 101), 1 / 101) @ m
    want = torch.tensor([2.75] + [2.0] * 47 + [4.25]) / 101
    torch.testing.assert_close(uniform[0], want, rtol=0, atol=1e-7)
    assert float(uniform.sum()) == pytest.approx(1.0, abs=1e-6)


def test_two_second_crop_segments_on_the_wav2vec2_grid_by_hand():
    # 2 s crop, segments (0, 16000), (16000, 32000), (0, 32000); 99 student frames.
    bounds = segment_bounds(32000, [1.0, 2.0, None])
    assert bounds == [(0, 16000), (16000, 32000)] + [(0, 32000)]
    first, second, whole = map_targets(bounds, _ssl_frames(32000), 320, 200)
    # The first second ends inside student 49's cell [15720, 16040): teacher 98 ([15600,
    # 15760)) gives it 1/4, 99 and 100 ([15760, 16000)) all of theirs.
    assert first[98, 48].item() == 0.75 and first[98, 49].item() == 0.25
    assert first[99:, 49].tolist() == [1.0, 1.0] and float(first[:, 50:].sum()) == 0.0
    # The second second's frame 0 holds [16000, 16080): half in student 49, half in 50;
    # its frame 1 ([16080, 16240)) is student 50's; frame 100 ([31920, 32000]) the last one's.
    assert second[0, 49].item() == 0.5 and second[0, 50].item() == 0.5
    assert second[1, 50].item() == 1.0 and second[100, 98].item() == 1.0
    assert float(second[:, :49].sum()) == 0.0
    # The whole crop: 2 teacher frames per student frame, 2.75 and 4.25 at the ends.
    torch.testing.assert_close(whole.sum(0), torch.tensor([2.75] + [2.0] * 97 + [4.25]))


def test_past_the_last_student_frame_and_short_segments_by_hand():
    # Segment (0, 640) of a crop whose student has 2 frames (centres 200 and 520; cells up to
    # 360 and from 360): teacher frames hold [0, 80), [80, 240), [240, 400), [400, 560),
    # [560, 640). Frame 2 is split 120 / 40; frames 3 and 4 go to the last student frame.
    (m,) = map_targets([(0, 640)], num_student_frames=2, student_hop=320, student_centre=200)
    assert m.tolist() == [[1, 0], [1, 0], [0.75, 0.25], [0, 1], [0, 1]]
    p = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2]])
    torch.testing.assert_close(p @ m, torch.tensor([[0.525, 0.475]]))
    # A segment shorter than a teacher hop, (250, 400): one teacher frame holding all 150
    # samples; 110 of them ([250, 360)) in student 0, 40 in student 1.
    (short,) = map_targets([(250, 400)], 2, 320, 200)
    torch.testing.assert_close(short, torch.tensor([[110 / 150, 40 / 150]]))
    # Length not a multiple of 160: (0, 250) has teacher frames 0 ([0, 80)) and 1 ([80, 250):
    # its 170 samples, up to the segment's end).
    (odd,) = map_targets([(0, 250)], 1, 320, 200)
    assert odd.tolist() == [[1.0], [1.0]]


def _by_sample(a: int, b: int, num_student: int, hop: int, centre: int) -> np.ndarray:
    """Reference: walk the samples one by one (nearest centre, ties to the later frame)."""
    t = 1 + (b - a) // 160
    counts = np.zeros((t, num_student))
    for s in range(a, b):
        i = min((s - a + 80) // 160, t - 1)
        k = min(max((s - centre + hop // 2) // hop, 0), num_student - 1)
        counts[i, k] += 1
    return counts / counts.sum(1, keepdims=True)


# (hop, centre of frame 0, frames of N samples): the wav2vec 2.0 CNN, the log-mel LSTM (the
# teacher's own grid), the tests' tiny CNN (kernels 8, stride 4 x 3: field 148) and Whisper's
# native frames (centred at 320 k, ceil(N / 320) of them)
GRIDS = {"ssl": (320, 200, _ssl_frames), "mel": (160, 0, lambda n: 1 + n // 160),
         "tiny": (64, 74, lambda n: (n - 148) // 64 + 1), "whisper": (320, 0, lambda n: -(-n // 320))}


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("num_samples", [400, 401, 559, 560, 4000, 16000, 16080, 16100, 24160,
                                         32000, 32123])
def test_each_student_frame_gets_the_samples_it_holds_for_any_length(grid, num_samples):
    hop, centre, frames = GRIDS[grid]
    num_student = frames(num_samples)
    bounds = segment_bounds(num_samples, [0.0255, 1.0, 2.0, None])  # 0.0255 s: 408 samples
    teacher_frames = MelSpectrogram()(torch.zeros(1, num_samples)).shape[1]
    for (a, b), m in zip(bounds, map_targets(bounds, num_student, hop, centre), strict=True):
        assert m.shape == (1 + (b - a) // 160, num_student)
        if (a, b) == (0, num_samples):
            assert m.shape[0] == teacher_frames  # the teacher's own frame count
        np.testing.assert_allclose(m.numpy(), _by_sample(a, b, num_student, hop, centre),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(m.sum(1), torch.ones(m.shape[0]))  # no mass lost or doubled


def test_the_teacher_grid_is_a_shifted_identity_so_the_lstm_student_is_unchanged():
    # hop 160, centre 0: each teacher frame to one student frame, as before the fix.
    for n in (3200, 16080, 32000, 32123):
        k = 1 + n // 160
        for (a, b), m in zip(bounds := segment_bounds(n, [1.0, 2.0, None]),
                             map_targets(bounds, k, 160, 0), strict=True):
            old = torch.clamp(a // 160 + torch.arange(1 + (b - a) // 160), max=k - 1)
            assert torch.equal(m, torch.nn.functional.one_hot(old, k).float())


def test_map_targets_refuses_an_empty_segment_or_no_student_frame():
    with pytest.raises(ValueError, match="not a sample range"):
        map_targets([(160, 160)], 3, 320, 200)
    with pytest.raises(ValueError, match="at least one student frame"):
        map_targets([(0, 160)], 0, 320, 200)


def test_upstream_first_frame_centre_is_the_middle_of_its_receptive_field():
    """A layer-norm CNN (no normalisation across frames): a change at sample ``s`` reaches
    exactly the frames ``k`` with ``64 k <= s < 64 k + 148`` for kernels 8, strides 4 x 3, so
    frame ``k`` is centred at ``64 k + 74``."""
    from transformers import WavLMConfig, WavLMModel

    from robustdistill.upstream import Upstream

    small = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 16, "num_conv_pos_embeddings": 16,
             "num_conv_pos_embedding_groups": 2}
    torch.manual_seed(0)
    model = WavLMModel(WavLMConfig(**small, conv_dim=(4, 4, 4), conv_kernel=(8, 8, 8),
                                   conv_stride=(4, 4, 4), feat_extract_norm="layer")).eval()
    upstream = Upstream(model)
    assert (upstream.samples_per_frame, upstream.first_frame_centre) == (64, 74)
    x = torch.randn(1, 1000)
    with torch.no_grad():
        base = model.feature_extractor(x)
        for s in (0, 63, 64, 147, 148, 500):
            y = x.clone()
            y[0, s] += 1.0
            moved = (model.feature_extractor(y) - base).abs().sum(1)[0] > 0
            assert torch.nonzero(moved).flatten().tolist() == [
                k for k in range(base.shape[-1]) if 64 * k <= s < 64 * k + 148], s
    # the wav2vec 2.0 CNN (kernels 10, 3, 3, 3, 3, 2, 2; strides 5, 2, ..., 2): field 400
    base_cnn = Upstream(WavLMModel(WavLMConfig(**small, conv_dim=(4,) * 7)))
    assert (base_cnn.samples_per_frame, base_cnn.first_frame_centre) == (320, 200)


def test_whisper_first_frame_centre_follows_its_frame_grid(tiny_whisper_dir):
    from robustdistill.upstream import Upstream

    assert Upstream.from_pretrained(tiny_whisper_dir).first_frame_centre == 0
    assert Upstream.from_pretrained(tiny_whisper_dir, whisper_frames="ssl").first_frame_centre == 200


def test_training_moves_the_maps_with_the_students_own_frame_grid(tiny, tiny_wavlm_dir, tmp_path,
                                                                  monkeypatch):
    """The trainer passes the upstream student's hop and frame centre (tiny WavLM: 64, 74) and
    the LSTM's (160, 0) to ``map_targets``."""
    from conftest import speaker_kd_config

    from robustdistill.speaker import train as speaker_train

    calls = []

    def spy(bounds, frames, hop, centre):
        calls.append((list(bounds), frames, hop, centre))
        return map_targets(bounds, frames, hop, centre)

    monkeypatch.setattr(speaker_train, "map_targets", spy)
    teacher, crops = tiny
    n = len(crops[0].audio)
    bounds = segment_bounds(n, speaker_kd_config(tmp_path, "x", 1).ig.durations)
    cfg = speaker_kd_config(tmp_path, "up", 1)
    cfg.student.kind, cfg.student.upstream = "upstream", str(tiny_wavlm_dir)
    speaker_train.train_system(cfg, teacher, crops)
    speaker_train.train_system(speaker_kd_config(tmp_path, "lstm", 1), teacher, crops)
    assert calls == [(bounds, (n - 148) // 64 + 1, 64, 74), (bounds, 1 + n // 160, 160, 0)]
    # both runs record the rule with their checkpoints and results (resume and table checks)
    for out in ("up", "lstm"):
        saved = json.loads((tmp_path / out / "checkpoints" / "epoch_1" / "speaker_run.json")
                           .read_text())
        result = json.loads((tmp_path / out / "result.json").read_text())
        assert saved["ig.map_frames"] == result["map_frames"] == "nearest_centre_sample_share"


def _imlkd_config(tmp_path, kind: str, durations: list, method: str = "imlkd"):
    from downstream.config import from_dict
    from robustdistill.speaker.config import SpeakerKDConfig

    return from_dict(SpeakerKDConfig, {
        "student": {"kind": kind, "upstream": "student-folder" if kind == "upstream" else None},
        "ig": {"durations": durations}, "loss": {"method": method},
        "training": {"output_dir": str(tmp_path / "run"), "epochs": 2, "resume": True}})


# (student, ig.durations of 2 s crops, method, whether the rule before 2026-12-07 gave other
# targets): always for an upstream student; for the LSTM (hop 160, centre 0) only with
# segments off its 10 ms grid (0.0255 s = 408 samples: segments start at 408, 816, ...)
OLD_RULE_CASES = [("upstream", [1.0, 2.0, None], "imlkd", True),
                  ("lstm", [1.0, 2.0, None], "imlkd", False),
                  ("lstm", [0.0255, None], "imlkd", True),
                  ("upstream", [1.0, 2.0, None], "none", False)]


@pytest.mark.parametrize(("kind", "durations", "method", "differs"), OLD_RULE_CASES)
def test_a_resume_from_a_checkpoint_trained_on_the_old_frame_mapping_is_refused(
        tmp_path, kind, durations, method, differs):
    """A checkpoint written before 2026-12-07 has no ``ig.map_frames`` in its settings: a
    resume with this code would train its later epochs on other map targets than its earlier
    ones and report one run; refused where the targets differ, and only there."""
    from robustdistill.speaker import run_folder

    cfg = _imlkd_config(tmp_path, kind, durations, method)
    epoch = tmp_path / "run" / "checkpoints" / "epoch_1"
    epoch.mkdir(parents=True)
    before = {k: v for k, v in run_folder.weight_settings(cfg).items() if k != "ig.map_frames"}
    (epoch / "speaker_run.json").write_text(json.dumps(before))
    if differs:
        with pytest.raises(ValueError, match=r"epoch_1 was trained before 2026-12-07 on IML-KD "
                                             r"map targets put on other student frames"):
            run_folder.check_run_folder(cfg)
    else:
        assert run_folder.check_run_folder(cfg) == (epoch, 1)
    # a checkpoint that records the rule (this code's) resumes
    (epoch / "speaker_run.json").write_text(json.dumps(run_folder.weight_settings(cfg)))
    assert run_folder.check_run_folder(cfg) == (epoch, 1)


@pytest.mark.parametrize(("kind", "durations", "method", "differs"), OLD_RULE_CASES)
def test_the_table_retrains_a_finished_run_of_the_old_frame_mapping(tmp_path, kind, durations,
                                                                    method, differs):
    """``table`` reuses a finished run's ``result.json``; one from before 2026-12-07 (no
    ``map_frames``) whose map targets differ is trained again instead."""
    from downstream.config import to_dict
    from robustdistill.speaker.table import finished_run

    cfg = _imlkd_config(tmp_path, kind, durations, method)
    (tmp_path / "run").mkdir()
    result = {"config": to_dict(cfg), "params": 1000,  # the two sets the config names
              "eval": {"test_other": {"eer": 0.1, "min_dcf": 0.5},
                       "fsdd": {"eer": 0.2, "min_dcf": 0.6}}}
    (tmp_path / "run" / "result.json").write_text(json.dumps(result))
    assert (finished_run(cfg) is None) == differs
    (tmp_path / "run" / "result.json").write_text(json.dumps(
        {**result, "map_frames": "nearest_centre_sample_share"}))
    assert finished_run(cfg)["eval"] == result["eval"]


@pytest.mark.parametrize(("family", "kernels", "strides", "centre"), [
    ("wavlm", (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), 200),
    ("hubert", (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), 200),
    ("wav2vec2", (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), 200),
    ("data2vec-audio", (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), 200),
    ("wavlm", (7, 3), (3, 2), 6),  # receptive field 13 (odd): frame k reads [6 k, 6 k + 13)
])
def test_first_frame_centre_of_each_family_by_single_sample_perturbation(family, kernels,
                                                                         strides, centre):
    """The real model classes (layer-norm CNN with bias, so nothing normalises across frames):
    a change at sample ``s`` reaches exactly the frames ``k`` with ``hop k <= s < hop k +
    field``, ``field = 2 centre`` (400 for the wav2vec 2.0 CNN) or ``2 centre + 1`` (odd)."""
    from transformers import AutoConfig, AutoModel

    from robustdistill.upstream import Upstream

    config = AutoConfig.for_model(
        family, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, conv_dim=(4,) * len(kernels),
        conv_kernel=kernels, conv_stride=strides, conv_bias=True, feat_extract_norm="layer")
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    upstream = Upstream(model)
    hop, field = upstream.samples_per_frame, 1 + sum(
        (k - 1) * int(np.prod(strides[:i])) for i, k in enumerate(kernels))
    assert upstream.first_frame_centre == centre == field // 2
    x = torch.randn(1, 2000)
    with torch.no_grad():
        base = model.feature_extractor(x)
        assert base.shape[-1] == int(upstream.frame_lengths(torch.tensor([2000]))[0])
        for s in (0, centre, hop - 1, hop, field - 1, field, 999, 1999):
            y = x.clone()
            y[0, s] += 1.0
            moved = (model.feature_extractor(y) - base).abs().sum(1)[0] > 0
            assert torch.nonzero(moved).flatten().tolist() == [
                k for k in range(base.shape[-1]) if hop * k <= s < hop * k + field], s
