"""Objectives from the literature (objectives.md sections 3-5): values computed by hand on
tiny tensors, padding and width mismatch, gradients to the student only, the loss schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustdistill.objectives import (
    DistillationInputs,
    LinearInvertedBottleneck,
    LossSchedule,
    build_objective,
    calibrated_set_loss,
    cosine_alignment_loss,
    gram_kd_loss,
    gram_matrix,
    resample_frames,
    residual_fusion,
    tfckd_loss,
)
from robustdistill.objectives.similarity import gram_kd_per_utterance
from robustdistill.objectives.tfckd import contiguous_sets, frequency_profile, time_profile
from robustdistill.upstream import UpstreamOutput, lengths_to_mask

SQ5 = math.sqrt(5.0)


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ------------------------------------------------------------------ Gram KD (section 3)
def test_time_gram_matrix_is_row_normalised_by_hand():
    # A = [[1], [2]]: G = [[1, 2], [2, 4]], each row / its norm -> both rows [1, 2] / sqrt(5).
    g = gram_matrix(_t([[[1.0], [2.0]]]), "time")
    assert torch.allclose(g[0], _t([[1, 2], [1, 2]]) / SQ5)


def test_time_gram_loss_by_hand_with_width_mismatch():
    student = _t([[[1.0], [2.0]]])  # (1, 2, 1): D_s = 1
    teacher = _t([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2): D_t = 2, G_t = I
    # ||G_s - I||_F^2 = (1/sqrt5 - 1)^2 + 4/5 + 1/5 + (2/sqrt5 - 1)^2 = 4 - 6/sqrt5; / T^2 = 4.
    expected = (4 - 6 / SQ5) / 4
    assert gram_kd_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_feature_gram_loss_by_hand():
    student = _t([[[1.0, 0.0], [1.0, 1.0]]])  # features: [1, 1] and [0, 1] over time
    teacher = _t([[[1.0, 0.0], [0.0, 1.0]]])
    # G_s = [[2, 1], [1, 1]] -> rows [2, 1]/sqrt5, [1, 1]/sqrt2; G_t = I.
    sq = (2 / SQ5 - 1) ** 2 + 1 / 5 + 1 / 2 + (1 / math.sqrt(2) - 1) ** 2
    got = gram_kd_loss(student, teacher, axes=("feature",))
    assert got.item() == pytest.approx(sq / 4, rel=1e-6)
    both = gram_kd_loss(student, teacher, axes=("time", "feature"))
    time_only = gram_kd_loss(student, teacher, axes=("time",))
    assert both.item() == pytest.approx(time_only.item() + sq / 4, rel=1e-6)


def test_gram_loss_ignores_padding_and_averages_utterances():
    student = _t([[[1.0], [2.0], [0.0]], [[1.0], [1.0], [5.0]]])
    teacher = _t([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    padded = student.clone()
    padded[0, 2] = 123.0  # garbage on a padded frame
    mask = torch.tensor([[True, True, False], [True, True, True]])
    per_utt = gram_kd_per_utterance(padded, teacher, mask)
    first = gram_kd_loss(student[:1, :2], teacher[:1, :2])
    second = gram_kd_loss(student[1:], teacher[1:])
    assert per_utt[0].item() == pytest.approx((4 - 6 / SQ5) / 4, rel=1e-6)
    assert torch.allclose(per_utt, torch.stack([first, second]))
    assert gram_kd_loss(padded, teacher, mask).item() == pytest.approx(per_utt.mean().item())


def test_gram_on_time_frequency_activations():
    # (B, C, T, F) with C = 1 along time equals the (B, T, D) hidden-state case.
    s, t = torch.randn(2, 1, 5, 3), torch.randn(2, 1, 5, 4)
    assert torch.allclose(gram_kd_loss(s, t), gram_kd_loss(s[:, 0], t[:, 0]))
    # Channel Gram by hand: channels [1] and [2] (T = F = 1) vs the identity over two bins.
    s = _t([[[[1.0]], [[2.0]]]])  # (1, 2, 1, 1)
    t = _t([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2): F may differ for a channel Gram
    assert gram_kd_loss(s, t, axes=("channel",)).item() == pytest.approx((4 - 6 / SQ5) / 4)
    # Frequency Gram sums over channels and real frames: a padded frame changes nothing.
    s, t = torch.randn(2, 3, 4, 6), torch.randn(2, 5, 4, 6)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    s2 = s.clone()
    s2[0, :, 3] = 50.0
    axes = ("time", "frequency")
    assert torch.allclose(gram_kd_loss(s, t, mask, axes), gram_kd_loss(s2, t, mask, axes))


def test_centred_gram_removes_a_shared_offset_by_hand():
    student = _t([[[1.0], [3.0]]])  # centred: [[-1], [1]] -> rows [1, -1]/sqrt2, [-1, 1]/sqrt2
    teacher = _t([[[1.0, 0.0], [0.0, 1.0]]])  # centred: +-[0.5, -0.5] -> the same matrix
    assert gram_kd_loss(student, teacher, center=True).item() == pytest.approx(0, abs=1e-6)
    # uncentred: G_s rows both [1, 3]/sqrt10, G_t = I: (4 - 8/sqrt10) / 4
    assert gram_kd_loss(student, teacher).item() == pytest.approx(1 - 2 / math.sqrt(10))
    s, t = torch.randn(2, 5, 3), torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    shifted = s + torch.tensor([5.0, -2.0, 7.0])  # one offset on every frame
    assert torch.allclose(gram_kd_loss(shifted, t, mask, center=True),
                          gram_kd_loss(s, t, mask, center=True), atol=1e-5)
    assert not torch.allclose(gram_kd_loss(shifted, t, mask), gram_kd_loss(s, t, mask))


def test_gram_errors_name_the_problem():
    with pytest.raises(ValueError, match="only the time axis"):
        gram_kd_loss(torch.randn(1, 3, 2), torch.randn(1, 3, 4), axes=("feature",))
    with pytest.raises(ValueError, match="frame"):
        gram_kd_loss(torch.randn(1, 3, 2), torch.randn(1, 4, 2))
    with pytest.raises(ValueError, match="channel"):
        gram_kd_loss(torch.randn(1, 3, 2), torch.randn(1, 3, 2), axes=("channel",))
    with pytest.raises(ValueError, match="no real frame"):
        gram_kd_loss(torch.randn(1, 3, 2), torch.randn(1, 3, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="axis"):
        gram_kd_loss(torch.randn(1, 3, 2), torch.randn(1, 3, 2), axes=("banana",))


# ------------------------------------------------------------------ cosine alignment (section 4)
def test_cosine_alignment_by_hand_with_mask():
    student = _t([[[1.0, 0.0], [1.0, 1.0]]])
    teacher = _t([[[0.0, 1.0], [1.0, 1.0]]])  # cos = 0 then 1: distances 1 and 0
    assert cosine_alignment_loss(student, teacher).item() == pytest.approx(0.5)
    assert cosine_alignment_loss(student, teacher, torch.tensor([[1, 0]])).item() == 1.0
    # scale does not matter
    assert cosine_alignment_loss(7 * student, teacher).item() == pytest.approx(0.5)


def test_inverted_bottleneck_is_linear_and_expands():
    bottleneck = LinearInvertedBottleneck(1, 2)
    with torch.no_grad():
        bottleneck.layers[0].weight.copy_(_t([[1.0], [2.0]]))
        bottleneck.layers[0].bias.zero_()
    z = _t([[[3.0]]])
    assert torch.equal(bottleneck(z), _t([[[3.0, 6.0]]]))
    assert cosine_alignment_loss(bottleneck(z), _t([[[1.0, 2.0]]])).item() == pytest.approx(0, abs=1e-6)
    two = LinearInvertedBottleneck(3, 4, expanded_size=8)
    assert [m.out_features for m in two.layers] == [8, 4]
    assert not any(isinstance(m, (nn.ReLU, nn.GELU, nn.Tanh)) for m in two.modules())
    x, y = torch.randn(5, 3), torch.randn(5, 3)  # linear (affine): f(x)+f(y)-f(0) = f(x+y)
    assert torch.allclose(two(x) + two(y) - two(torch.zeros(5, 3)), two(x + y), atol=1e-5)
    with pytest.raises(ValueError, match="expands"):
        LinearInvertedBottleneck(8, 4)
    with pytest.raises(ValueError, match="expanded_size"):
        LinearInvertedBottleneck(3, 4, expanded_size=3)


def test_resample_frames_linear_interpolation_by_hand():
    x = _t([[[0.0], [2.0], [99.0]]])  # third frame is padding, never read
    out = resample_frames(x, torch.tensor([2]), torch.tensor([4]))
    # align_corners=False: output frame centres at -0.25, 0.25, 0.75, 1.25 (clamped to the ends)
    assert torch.allclose(out[0, :, 0], _t([0.0, 0.5, 1.5, 2.0]))
    same = resample_frames(x, torch.tensor([3]), torch.tensor([3]))
    assert torch.equal(same, x)
    padded = resample_frames(x, torch.tensor([2]), torch.tensor([1]), num_frames=3)
    assert torch.allclose(padded[0, :, 0], _t([1.0, 0.0, 0.0]))


def test_cosine_alignment_on_time_frequency_activations_flattens_channels_and_bins():
    s, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    flat = lambda x: x.permute(0, 2, 1, 3).reshape(2, 4, 15)  # noqa: E731
    assert torch.allclose(cosine_alignment_loss(s, t), cosine_alignment_loss(flat(s), flat(t)))


# ------------------------------------------------------------------ I2RF-TFCKD (section 5)
def test_profiles_by_hand():
    x = _t([[[1.0, 3.0], [5.0, 7.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(time_profile(x, mask), _t([[2.0, 6.0, 0.0]]))
    assert torch.equal(frequency_profile(x, mask), _t([[3.0, 5.0]]))


def test_calibrated_set_loss_cross_weights_by_hand():
    teacher = _t([[[2.0, 2.0], [2.0, 2.0]]])  # time profile [2, 2], frequency profile [2, 2]
    s1 = _t([[[1.0, 1.0], [3.0, 3.0]]])  # time [1, 3] (d_time 1), frequency [2, 2] (d_freq 0)
    s2 = _t([[[1.0, 3.0], [1.0, 3.0]]])  # time [2, 2] (d_time 0), frequency [1, 3] (d_freq 1)
    c = 8 / math.sqrt(80)  # cos([1, 3], [2, 2])
    w_time = torch.softmax(_t([c, 1.0]), 0)  # s_time of pairs (s1, s2)
    w_freq = torch.softmax(_t([1.0, c]), 0)
    loss, (wt, wf) = calibrated_set_loss([s1, s2], [teacher], return_weights=True)
    assert torch.allclose(wt[0], w_time) and torch.allclose(wf[0], w_freq)
    # cross-weighting: w_freq weighs d_time, w_time weighs d_freq
    expected = w_freq[0] * 1.0 + w_time[1] * 1.0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert expected.item() == pytest.approx(2 / (1 + math.exp(c - 1)), rel=1e-6)
    l1 = calibrated_set_loss([s1, s2], [teacher], distance="l1")
    assert l1.item() == pytest.approx(expected.item(), rel=1e-6)  # |gap| = gap^2 = 1 here


def test_calibrated_set_loss_ignores_padding():
    s, t = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    s2, t2 = s.clone(), t.clone()
    s2[0, 2:], t2[0, 2:] = 9.0, -4.0
    a = calibrated_set_loss([s, 2 * s], [t], mask)
    b = calibrated_set_loss([s2, 2 * s2], [t2], mask)
    assert torch.allclose(a, b)
    alone = calibrated_set_loss([s[:1, :2], 2 * s[:1, :2]], [t[:1, :2]])
    assert torch.allclose(a[0], alone[0])


def test_residual_fusion_and_total_by_hand():
    a, b, c = _t([[[1.0]]]), _t([[[3.0]]]), _t([[[10.0]]])
    assert torch.equal(residual_fusion([a, b, c]), _t([[[12.0]]]))  # 10 + mean(1, 3)
    assert torch.equal(residual_fusion([a]), a)
    s_sets = [[torch.randn(2, 3, 4)], [torch.randn(2, 3, 4), torch.randn(2, 3, 4)]]
    t_sets = [[torch.randn(2, 3, 4), torch.randn(2, 3, 4)], [torch.randn(2, 3, 4)]]
    intra = sum(calibrated_set_loss(s, t) for s, t in zip(s_sets, t_sets, strict=True))
    inter = calibrated_set_loss([residual_fusion(s) for s in s_sets],
                                [residual_fusion(t) for t in t_sets])
    total = tfckd_loss(s_sets, t_sets, intra_weight=0.5, inter_weight=2.0)
    assert total.item() == pytest.approx((0.5 * intra + 2.0 * inter).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="number of"):
        tfckd_loss(s_sets, t_sets[:1])
    with pytest.raises(ValueError, match="project"):
        calibrated_set_loss([torch.randn(2, 3, 5)], [torch.randn(2, 3, 4)])


def test_contiguous_sets():
    assert contiguous_sets([1, 2, 3, 4], 3) == [[1, 2], [3], [4]]
    assert contiguous_sets([-2, -1], 2) == [[-2], [-1]]
    with pytest.raises(ValueError, match="num_sets"):
        contiguous_sets([1, 2], 3)


# ------------------------------------------------------------------ registry objectives
class _Pair(nn.Module):
    """A 'teacher' and a 'student' that are single linear layers, for gradient checks."""

    def __init__(self, d_in=3, d_t=6, d_s=4, layers=2):
        super().__init__()
        self.teacher = nn.ModuleList(nn.Linear(d_in, d_t) for _ in range(layers + 1))
        self.student = nn.ModuleList(nn.Linear(d_in, d_s) for _ in range(layers + 1))

    def inputs(self, teacher_frames=(5, 3), student_frames=(5, 3)):
        torch.manual_seed(0)
        b, t = len(teacher_frames), max(max(teacher_frames), max(student_frames))
        x = torch.randn(b, t, 3)
        t_len, s_len = torch.tensor(teacher_frames), torch.tensor(student_frames)
        t_hid = tuple(m(x)[:, :max(teacher_frames)] for m in self.teacher)
        s_hid = tuple(m(x)[:, :max(student_frames)] for m in self.student)
        teacher = UpstreamOutput(t_hid, t_len, lengths_to_mask(t_len, t_hid[0].shape[1]))
        student = UpstreamOutput(s_hid, s_len, lengths_to_mask(s_len, s_hid[0].shape[1]))
        common = torch.minimum(t_len, s_len)
        frames = min(t_hid[0].shape[1], s_hid[0].shape[1])
        waves = torch.zeros(b, 10)
        return DistillationInputs(teacher, student, lengths_to_mask(common, frames), waves,
                                  waves, torch.full((b,), 10))


def _build(name, **options):
    return build_objective(name, teacher_hidden_size=6, teacher_num_layers=2,
                           student_hidden_size=4, student_conv_dim=None, **options)


@pytest.mark.parametrize("name, options", [
    ("gram_kd", {"layer_pairs": [[1, 1], [2, -1]]}),
    ("cosine_alignment", {"teacher_layers": [1, 2], "expanded_size": 8}),
    ("tfckd", {"student_layers": [0, 1, 2], "num_sets": 2}),
])
def test_gradients_reach_student_and_projections_never_teacher(name, options):
    pair = _Pair()
    objective = _build(name, **options)
    terms = objective(pair.inputs())
    loss = sum(term.weight * term.total for term in terms.values())
    loss.backward()
    used_student = {0, 1, 2} if name == "tfckd" else ({1, 2} if name == "gram_kd" else {2})
    for i, module in enumerate(pair.student):
        reached = module.weight.grad is not None and module.weight.grad.abs().sum() > 0
        assert reached == (i in used_student), (name, i)
    assert all(p.grad is None for p in pair.teacher.parameters())
    for param in objective.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_gram_objective_terms_equal_the_functional_loss():
    pair = _Pair()
    inputs = pair.inputs()
    terms = _build("gram_kd", layer_pairs=[[2, -1]])(inputs)
    assert set(terms) == {"pair2_-1"} and terms["pair2_-1"].unit == "utterances"
    expected = gram_kd_per_utterance(inputs.student.hidden_states[-1],
                                     inputs.teacher.hidden_states[2], inputs.frame_mask).sum()
    assert torch.allclose(terms["pair2_-1"].total, expected)
    with pytest.raises(ValueError, match="equal widths"):
        _build("gram_kd", axes=["time", "feature"])
    with pytest.raises(ValueError, match="outside"):
        _build("gram_kd", layer_pairs=[[3, -1]])


def test_cosine_objective_resamples_student_frames_to_the_teacher():
    pair = _Pair()
    inputs = pair.inputs(teacher_frames=(4, 3), student_frames=(5, 3))
    objective = _build("cosine_alignment", teacher_layers=[2])
    total = objective(inputs)["layer2"].total
    student = inputs.student.hidden_states[-1]
    w = objective.bottlenecks[0]
    first = resample_frames(student[:1], torch.tensor([5]), torch.tensor([4]))
    d0 = cosine_alignment_loss(w(first), inputs.teacher.hidden_states[2][:1, :4])
    d1 = cosine_alignment_loss(w(student[1:, :3]), inputs.teacher.hidden_states[2][1:, :3])
    # utterance 0: mean over its 4 teacher frames times its 4 common frames; utterance 1: sum
    assert total.item() == pytest.approx((4 * d0 + 3 * d1).item(), rel=1e-5)


def test_tfckd_objective_terms_and_defaults():
    pair = _Pair()
    objective = _build("tfckd")
    assert objective.teacher_sets == [[1], [2]] and objective.student_sets == [[-2], [-1]]
    terms = objective(pair.inputs())
    assert set(terms) == {"set0", "set1", "inter"}
    assert all(term.unit == "utterances" for term in terms.values())
    with pytest.raises(ValueError, match="both"):
        _build("tfckd", teacher_sets=[[1]])


# ------------------------------------------------------------------ schedule
def test_two_step_schedule_switches_once_at_kd_steps():
    schedule = LossSchedule("two_step", kd_steps=3)
    weights = [schedule.weights(step) for step in range(5)]
    assert [(w.kd, w.task, w.phase) for w in weights] == [
        (1.0, 0.0, 1), (1.0, 0.0, 1), (1.0, 0.0, 1), (0.0, 1.0, 2), (0.0, 1.0, 2)]
    assert [schedule.switches_at(step) for step in range(5)] == [False, False, False, True, False]
    assert schedule.single_phase_note(4) is None  # phase 2 is step 3
    assert schedule.single_phase_note(3) == (
        "two_step: kd_steps (3) >= max_steps (3), so this run never reaches phase 2 and its "
        "task losses never train (resume with more steps to train them)")
    assert LossSchedule("mixture").single_phase_note(1) is None
    mixture = LossSchedule("mixture", alpha=0.25)
    assert (mixture.weights(0).kd, mixture.weights(10**6).task) == (0.25, 0.75)
    assert LossSchedule().weights(7).kd == LossSchedule().weights(7).task == 1.0
    with pytest.raises(ValueError, match="kd_steps"):
        LossSchedule("two_step", kd_steps=0)
    with pytest.raises(ValueError, match="alpha"):
        LossSchedule("mixture", alpha=1.5)
    with pytest.raises(ValueError, match="one of"):
        LossSchedule("cosine")


# ------------------------------------------------------------------ the schedule in the trainer
def _run_config(tmp_path, teacher_dir, out: str, **training):
    from robustdistill.config import load_config

    overrides = {
        "teacher": str(teacher_dir), "output_dir": str(tmp_path / out), "seed": 5,
        "data.synthetic_items": 10, "data.synthetic_seconds": "[0.6, 1.0]",
        "data.synthetic_dir": str(tmp_path / "corpus"), "data.batch_size": 2,
        "data.max_length_s": 1.0, "data.min_length_s": 0.5, "data.validation_fraction": 0.2,
        "augmentation.num_simulated_rooms": 2, "augmentation.room_max_order": 2,
        "objectives": "{gram_kd: {layer_pairs: [[2, -1]]}, cosine_alignment: {}, "
                      "tfckd: {}, enhancement: {hidden_size: 8, num_layers: 1}}",
        "training.learning_rate": 1e-3, "training.warmup_ratio": 0.0, "training.cpu": True,
        "training.log_every": 1, "training.eval_every": 100, "training.report_to": "[]",
        "training.eval_at_start": False, "training.export_student": False,
        "training.loss_schedule": "two_step", "training.kd_steps": 2,
        "training.task_objectives": "[enhancement]",
        **{f"training.{k}": v for k, v in training.items()},
    }
    argv = [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    return load_config(None, argv)


def _records(run_dir) -> list[dict]:
    import json

    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_step_schedule_in_the_trainer_switches_logs_and_resumes_exactly(
        tmp_path, tiny_wavlm_dir, caplog):
    from safetensors.torch import load_file

    from robustdistill.trainer import train

    train(_run_config(tmp_path, tiny_wavlm_dir, "full", max_steps=4, save_every=2))
    full = _records(tmp_path / "full")
    steps = [r for r in full if r["split"] == "train"]
    assert [r["schedule/phase"] for r in steps] == [1, 1, 2, 2]
    for r in steps:  # phase 1: the KD objectives only; phase 2: the task objective only
        kd = sum(v for k, v in r.items() if k.split("/")[0] in ("gram_kd", "cosine_alignment",
                                                                  "tfckd"))
        task = 2.0 * r["enhancement/l1"]  # lambda_enh = 2
        assert r["loss"] == pytest.approx(kd if r["schedule/phase"] == 1 else task, rel=1e-9)
    switch = [r for r in full if r["split"] == "schedule"]
    assert [(r["step"], r["phase"]) for r in switch] == [(2, 2)]
    # Resumed at the switch: same parameters, same losses, the switch logged once.
    mid = tmp_path / "full" / "checkpoints" / "checkpoint_0"
    train(_run_config(tmp_path, tiny_wavlm_dir, "part", max_steps=4, save_every=2,
                      resume_from=str(mid)))
    part = _records(tmp_path / "part")
    assert [r for r in part if r["split"] == "schedule"] == switch
    assert ([r["loss"] for r in part if r["split"] == "train"]
            == [r["loss"] for r in steps if r["step"] > 2])

    def state(run):
        folder = sorted((tmp_path / run / "checkpoints").glob("checkpoint_*"))[-1]
        return load_file(str(folder / "model.safetensors"))

    a, b = state("full"), state("part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Phase 1 never moved the task head (zero gradient, zero Adam moments).
    first = load_file(str(mid / "model.safetensors"))
    init_run = _run_config(tmp_path, tiny_wavlm_dir, "init", max_steps=1,
                           loss_schedule="two_step", kd_steps=5)
    with caplog.at_level("WARNING", logger="robustdistill.trainer"):
        train(init_run)
    assert "training.two_step: kd_steps (5) >= max_steps (1)" in caplog.text
    after_one = state("init")
    enh = [k for k in first if "enhancement" in k]
    assert enh and all(torch.equal(first[k], after_one[k]) for k in enh)


def test_schedule_config_errors(tmp_path, tiny_wavlm_dir):
    from robustdistill.config import ConfigError
    from robustdistill.trainer import train

    with pytest.raises(ConfigError, match="kd_steps"):
        _run_config(tmp_path, tiny_wavlm_dir, "x", kd_steps=0)
    with pytest.raises(ConfigError, match="not objectives of this run"):
        train(_run_config(tmp_path, tiny_wavlm_dir, "y", task_objectives="[enhancment]"))
