"""Mutation-found gaps in the SE code: the student's gain and synthesis, streaming reuse, the
real-time factor, the losses by hand, enhancement at another rate, held-out evaluation."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from conftest import require_shared_data

from robustdistill.se.losses import LossConfig, SELoss, neg_si_sdr
from robustdistill.se.streaming import StreamingEnhancer, real_time_factor
from robustdistill.se.students import GRUMaskStudent, StudentConfig
from robustdistill.se.teachers.base import SEOutput


def _constant_mask_student(logit: float) -> GRUMaskStudent:
    """A student whose mask is sigmoid(logit) on every bin and frame."""
    torch.manual_seed(0)
    m = GRUMaskStudent(StudentConfig(hidden_size=8)).eval()
    with torch.no_grad():
        m.fc_mask.weight.zero_()
        m.fc_mask.bias.fill_(logit)
    return m


def _noise(n=4000, seed=0, batch=2):
    return 0.1 * torch.randn(batch, n, generator=torch.Generator().manual_seed(seed))


# ---- students.py -----------------------------------------------------------------------------


def test_a_unit_mask_reconstructs_the_input_exactly():
    """Analysis window x synthesis window overlap-adds to 1: a student passing every bin
    returns its input (the STFT round trip is perfect)."""
    m = _constant_mask_student(40.0)
    x = _noise()
    with torch.no_grad():
        y = m(x).enhanced
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_a_zero_mask_is_floored_at_min_gain_db():
    """NSNet2's gain floor: -80 dB is an amplitude factor 1e-4 on every bin."""
    m = _constant_mask_student(-60.0)
    x = _noise()
    with torch.no_grad():
        y = m(x).enhanced
    torch.testing.assert_close(y, 1e-4 * x, atol=1e-9, rtol=0)
    m.min_gain = 10.0 ** (-40.0 / 20.0)  # the floor follows min_gain
    with torch.no_grad():
        torch.testing.assert_close(m(x).enhanced, 1e-2 * x, atol=1e-8, rtol=0)


def test_a_loaded_student_is_in_eval_mode(tmp_path):
    m = GRUMaskStudent(StudentConfig(hidden_size=8)).train()
    m.save_pretrained(tmp_path / "s")
    assert GRUMaskStudent.from_pretrained(tmp_path / "s").training is False


# ---- streaming.py ----------------------------------------------------------------------------


def test_a_flushed_stream_starts_again_from_zero_state():
    m = GRUMaskStudent(StudentConfig(hidden_size=8)).eval()
    x = _noise(1000, batch=1)
    s = StreamingEnhancer(m)
    first = torch.cat([s.push(x), s.flush()], dim=1)
    second = torch.cat([s.push(x), s.flush()], dim=1)
    assert torch.equal(first, second)


def test_real_time_factor_is_elapsed_time_over_audio_duration(monkeypatch):
    import robustdistill.se.streaming as streaming

    ticks = iter([100.0, 103.0])  # start, end of the timed loop
    monkeypatch.setattr(streaming, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    rtf = real_time_factor(GRUMaskStudent(StudentConfig(hidden_size=8)).eval(), seconds=0.5)
    assert rtf == pytest.approx(3.0 / 0.5)


# ---- losses.py -------------------------------------------------------------------------------


def test_neg_si_sdr_removes_the_mean_first():
    ref = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    est = 2 * ref + torch.tensor([[0.5, 0.5, -0.5, -0.5]]) + 10.0  # a DC offset of 10
    torch.testing.assert_close(neg_si_sdr(est, ref + 3.0),
                               torch.tensor(-10 * np.log10(16.0), dtype=torch.float32),
                               atol=1e-4, rtol=0)


def test_neg_si_sdr_is_the_batch_mean():
    ref = torch.tensor([[1.0, -1.0, 1.0, -1.0]] * 2)
    err = torch.tensor([[0.5, 0.5, -0.5, -0.5], [1.0, 1.0, -1.0, -1.0]])
    est = 2 * ref + err  # SI-SDR 10 log10(16) and 10 log10(4)
    expected = -(10 * np.log10(16.0) + 10 * np.log10(4.0)) / 2
    torch.testing.assert_close(neg_si_sdr(est, ref), torch.tensor(expected, dtype=torch.float32),
                               atol=1e-4, rtol=0)


def test_task_loss_adds_the_mean_l1_of_magnitude_spectra():
    g = torch.Generator().manual_seed(0)
    enhanced, clean = torch.randn(2, 2000, generator=g), torch.randn(2, 2000, generator=g)
    loss = SELoss(LossConfig(spectral_weight=0.5), {})
    win = torch.hann_window(512)
    mag = [torch.stft(x, 512, 128, window=win, return_complex=True).abs()
           for x in (enhanced, clean)]
    expected = neg_si_sdr(enhanced, clean) + 0.5 * (mag[0] - mag[1]).abs().mean()
    torch.testing.assert_close(loss.task_loss(enhanced, clean), expected)


def test_cosine_term_is_the_mean_over_its_pairs():
    from robustdistill.objectives.cosine_alignment import cosine_alignment_loss

    g = torch.Generator().manual_seed(0)
    acts = {n: torch.randn(2, 5, 4, generator=g) for n in ("gru1", "gru2")}
    t_acts = {n: torch.randn(2, 5, 6, generator=g) for n in ("gru1", "gru2")}
    pairs = [["gru1", "gru1"], ["gru2", "gru2"]]
    loss = SELoss(LossConfig(teacher="nsnet2", cosine_weight=1.0, cosine_pairs=pairs),
                  {"gru1": 4, "gru2": 4}, {"gru1": 6, "gru2": 6})
    s, t = SEOutput(torch.zeros(2, 10), acts), SEOutput(torch.zeros(2, 10), t_acts)
    per_pair = [cosine_alignment_loss(loss.bottlenecks[f"{a}__{b}"](acts[a]), t_acts[b])
                for a, b in pairs]
    torch.testing.assert_close(loss.kd_terms(s, t)["cosine"], sum(per_pair) / 2)


def test_output_kd_scores_the_student_against_the_teacher_and_trains_the_student():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 800, generator=g).requires_grad_()
    teacher = torch.randn(2, 800, generator=g).requires_grad_()
    loss = SELoss(LossConfig(teacher="nsnet2", output_kd_weight=1.0), {}, {})
    term = loss.kd_terms(SEOutput(student), SEOutput(teacher))["output_kd"]
    torch.testing.assert_close(term, neg_si_sdr(student, teacher))
    term.backward()  # (SI-SDR is symmetric in value; the gradient is what differs)
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None  # the teacher's output is the reference


def _si_sdr_pair():
    """Clean ``c``, a student output ``2c + e`` and a teacher output ``2c + 2e`` (``e`` zero
    mean, orthogonal to ``c``, ``|c|^2 = 4``, ``|e|^2 = 1``): SI-SDR(student, clean) =
    10 log10(|2c|^2 / |e|^2) = 10 log10(16); SI-SDR(student, teacher): the projection is
    (16 + 2) / (16 + 4) = 0.9 of the teacher, |0.9 t|^2 = 16.2, the rest 0.2c - 0.8e has
    energy 0.16 + 0.64 = 0.8: 10 log10(20.25)."""
    c = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    e = torch.tensor([[0.5, 0.5, -0.5, -0.5]])
    task, kd = -10 * np.log10(16.0), -10 * np.log10(20.25)
    return c, SEOutput(2 * c + e), SEOutput(2 * c + 2 * e), task, kd


@pytest.mark.parametrize(("schedule", "step", "expected_parts", "kd_factor", "task_factor"), [
    ("sum", 0, {"task", "output_kd"}, 1.0, 1.0),
    ("mixture", 0, {"task", "output_kd"}, 0.25, 0.75),  # alpha KD + (1 - alpha) task
    ("two_step", 0, {"output_kd"}, 1.0, 0.0),  # phase 1: KD only
    ("two_step", 3, {"task"}, 0.0, 1.0),  # phase 2 (kd_steps 3): the task only
])
def test_total_is_the_scheduled_sum_of_task_and_weighted_kd_by_hand(
        schedule, step, expected_parts, kd_factor, task_factor):
    c, student, teacher, task, kd = _si_sdr_pair()
    loss = SELoss(LossConfig(teacher="nsnet2", output_kd_weight=2.0, schedule=schedule,
                             alpha=0.25, kd_steps=3), {}, {})
    total, parts = loss(step, student, c, teacher if kd_factor > 0 else None)
    assert set(parts) == expected_parts
    if "task" in parts:
        assert parts["task"].item() == pytest.approx(task, abs=1e-4)
    if "output_kd" in parts:  # unweighted in parts
        assert parts["output_kd"].item() == pytest.approx(kd, abs=1e-4)
    assert total.item() == pytest.approx(kd_factor * 2.0 * kd + task_factor * task, abs=1e-4)


def test_without_a_teacher_the_task_loss_counts_whole_whatever_the_schedule():
    """A recipe with no KD term trains on the task loss alone, with factor 1 (a ``mixture``
    schedule's ``1 - alpha`` would only shrink the learning rate)."""
    c, student, _, task, _ = _si_sdr_pair()
    loss = SELoss(LossConfig(schedule="mixture", alpha=0.25), {})
    total, parts = loss(0, student, c)
    assert set(parts) == {"task"}
    assert total.item() == pytest.approx(task, abs=1e-4)


# ---- enhance.py ------------------------------------------------------------------------------


def test_enhancing_8khz_audio_is_resampled_there_and_back():
    from robustdistill.audio import resample
    from robustdistill.se.enhance import enhance_waveform

    m = GRUMaskStudent(StudentConfig(hidden_size=8)).eval()
    x = (0.1 * np.random.default_rng(0).standard_normal(4000)).astype(np.float32)
    y = enhance_waveform(m, x, 8000)
    up = resample(x, 8000, 16000)
    with torch.no_grad():
        whole = m(torch.from_numpy(up)[None]).enhanced[0].numpy()
    ref = resample(whole, 16000, 8000)
    ref = np.pad(ref, (0, max(0, x.size - ref.size)))[: x.size]
    assert y.shape == x.shape
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=0)


# ---- evaluate.py -----------------------------------------------------------------------------


class _Oracle(torch.nn.Module):
    """Returns a fixed estimate per input length (a stand-in enhancer)."""

    def __init__(self, estimates):
        super().__init__()
        self.estimates = {e.size: e for e in estimates}

    def forward(self, noisy):
        return SEOutput(torch.from_numpy(self.estimates[noisy.shape[-1]])[None])


def test_evaluate_model_means_scores_and_improvements_per_snr():
    from downstream.tasks.speech_enhancement.task import speech_metrics
    from robustdistill.audio import list_audio_files, load_audio
    from robustdistill.se.evaluate import TestPairs, evaluate_model

    data = require_shared_data()
    files = list_audio_files(data / "librispeech-mini" / "test-other")[:2]
    rng = np.random.default_rng(0)
    clean = [load_audio(f)[: 16000 + 800 * i].astype(np.float32) for i, f in enumerate(files)]
    noise = [(0.05 * rng.standard_normal(c.size)).astype(np.float32) for c in clean]
    noisy = {0.0: [c + 4 * n for c, n in zip(clean, noise, strict=True)]}
    scores = {0.0: [speech_metrics(y, c) for y, c in zip(noisy[0.0], clean, strict=True)]}
    pairs = TestPairs(clean, noisy, [f"u{i}" for i in range(2)], scores)
    estimates = [c + n for c, n in zip(clean, noise, strict=True)]  # less noise: better
    out = evaluate_model(_Oracle(estimates), pairs)
    assert list(out) == ["0"] and out["0"]["n"] == 2
    enhanced = [speech_metrics(e, c) for e, c in zip(estimates, clean, strict=True)]
    for k in ("si_sdr", "stoi", "pesq"):
        assert out["0"][k] == pytest.approx(np.mean([m[k] for m in enhanced]), abs=1e-6)
        expected = np.mean([m[k] - b[k] for m, b in zip(enhanced, scores[0.0], strict=True)])
        assert out["0"][f"{k}_i"] == pytest.approx(expected, abs=1e-6)
    assert out["0"]["si_sdr_i"] > 5  # 12 dB less noise
    assert out["0"]["unscored"] == {}
    # a silent output on the first utterance: SI-SDR undefined, counted, not averaged in
    silent = evaluate_model(_Oracle([np.zeros_like(estimates[0]), estimates[1]]), pairs)["0"]
    assert silent["unscored"]["si_sdr"] == 1 and silent["unscored"]["si_sdr_i"] == 1
    assert silent["n"] == 2
    assert silent["si_sdr"] == pytest.approx(enhanced[1]["si_sdr"], abs=1e-6)
    # a failed noisy PESQ is the noisy row's unscored item (and every model's pesq_i's)
    from robustdistill.se.evaluate import noisy_summary

    scores[0.0][0] = {**scores[0.0][0], "pesq": float("nan")}
    noisy = noisy_summary(pairs)["0"]
    assert noisy["unscored"] == {"pesq": 1} and noisy["n"] == 2
    assert noisy["pesq"] == pytest.approx(scores[0.0][1]["pesq"])
    assert evaluate_model(_Oracle(estimates), pairs)["0"]["unscored"] == {"pesq_i": 1}
