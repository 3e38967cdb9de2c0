"""Mutation-testing gaps in I2RF-TFCKD (temperature, constant calibration weights, the
inter-set term's weight and teacher fusion), the loss schedule's alpha bounds and the
registry's student-layer range. Values by hand or by a plain re-implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustdistill.objectives import (
    DistillationInputs,
    LossSchedule,
    TFCalibratedKD,
    build_objective,
    calibrated_set_loss,
)
from robustdistill.upstream import UpstreamOutput, lengths_to_mask


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_calibrated_set_loss_divides_similarities_by_the_temperature():
    # The hand example of test_objectives_literature, at tau = 2 and tau = 0.5:
    # loss = w_freq[s1] * 1 + w_time[s2] * 1 = 2 / (1 + exp((c - 1) / tau)).
    teacher = _t([[[2.0, 2.0], [2.0, 2.0]]])
    s1 = _t([[[1.0, 1.0], [3.0, 3.0]]])
    s2 = _t([[[1.0, 3.0], [1.0, 3.0]]])
    c = 8 / math.sqrt(80)
    for tau in (2.0, 0.5):
        loss, (w_time, _) = calibrated_set_loss([s1, s2], [teacher], temperature=tau,
                                                return_weights=True)
        assert loss.item() == pytest.approx(2 / (1 + math.exp((c - 1) / tau)), rel=1e-6)
        assert w_time[0, 0].item() == pytest.approx(1 / (1 + math.exp((1 - c) / tau)), rel=1e-6)


def _reference(students, teacher, detach):
    """Plain re-implementation for (B, T, D) features without padding."""
    t_tp, t_fp = teacher.mean(-1), teacher.mean(1)
    d_t, d_f, s_t, s_f = [], [], [], []
    for s in students:
        tp, fp = s.mean(-1), s.mean(1)
        d_t.append((tp - t_tp).pow(2).mean(-1))
        d_f.append((fp - t_fp).pow(2).mean(-1))
        s_t.append(F.cosine_similarity(tp, t_tp, dim=-1))
        s_f.append(F.cosine_similarity(fp, t_fp, dim=-1))
    d_t, d_f = torch.stack(d_t, 1), torch.stack(d_f, 1)
    s_t, s_f = torch.stack(s_t, 1), torch.stack(s_f, 1)
    if detach:
        s_t, s_f = s_t.detach(), s_f.detach()
    return (torch.softmax(s_f, 1) * d_t + torch.softmax(s_t, 1) * d_f).sum(1)


@pytest.mark.parametrize("detach", [True, False])
def test_calibration_weights_are_constants_only_when_detached(detach):
    torch.manual_seed(0)
    a0, b0 = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    teacher = torch.randn(2, 3, 4)
    a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    calibrated_set_loss([a, b], [teacher], detach_weights=detach).sum().backward()
    ra, rb = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    _reference([ra, rb], teacher, detach).sum().backward()
    torch.testing.assert_close(a.grad, ra.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(b.grad, rb.grad, atol=1e-6, rtol=1e-5)
    # and the two settings really differ in gradient (the test can tell them apart)
    oa, ob = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    _reference([oa, ob], teacher, not detach).sum().backward()
    assert not torch.allclose(a.grad, oa.grad, atol=1e-5)


def test_tfckd_objective_inter_term_weight_and_fused_teacher_by_hand():
    # One set: teacher layers [1, 2], student layers [-2, -1] (identity projections).
    # Fused student: s(-1) + s(-2) = [[1, 1], [1, 1]] -> time profile [1, 1], feature profile
    # [1, 1]. Fused teacher: t2 + t1 = [[2, 2], [2, 1]] -> time [2, 1.5], feature [2, 1.5].
    # One pair, so both calibration weights are 1: inter = d_time + d_freq
    # = (1 + 0.25) / 2 + (1 + 0.25) / 2 = 1.25.
    objective = TFCalibratedKD(teacher_hidden_size=2, teacher_num_layers=2,
                               student_hidden_size=2, teacher_layers=[1, 2],
                               student_layers=[-2, -1], num_sets=1, intra_weight=0.5,
                               inter_weight=3.0)
    with torch.no_grad():
        for proj in objective.projections.values():
            proj.weight.copy_(torch.eye(2))
            proj.bias.zero_()
    t1, t2 = _t([[[0.0, 0.0], [2.0, 0.0]]]), _t([[[2.0, 2.0], [0.0, 1.0]]])
    s1, s2 = _t([[[1.0, 0.0], [0.0, 0.0]]]), _t([[[0.0, 1.0], [1.0, 1.0]]])
    lengths = torch.tensor([2])
    mask = lengths_to_mask(lengths, 2)
    teacher = UpstreamOutput((torch.zeros(1, 2, 2), t1, t2), lengths, mask)
    student = UpstreamOutput((torch.zeros(1, 2, 2), s1, s2), lengths, mask)
    wave = torch.zeros(1, 10)
    terms = objective(DistillationInputs(teacher, student, mask, wave, wave, torch.tensor([10])))
    assert set(terms) == {"set0", "inter"}
    assert terms["set0"].weight == 0.5 and terms["inter"].weight == 3.0
    assert terms["inter"].total.item() == pytest.approx(1.25, rel=1e-6)
    expected_set = calibrated_set_loss([s1, s2], [t1, t2], mask).sum()
    assert terms["set0"].total.item() == pytest.approx(expected_set.item(), rel=1e-6)


def test_mixture_alpha_accepts_both_bounds():
    w = LossSchedule("mixture", alpha=0.0).weights(3)
    assert (w.kd, w.task, w.phase) == (0.0, 1.0, 0)
    w = LossSchedule("mixture", alpha=1.0).weights(0)
    assert (w.kd, w.task, w.phase) == (1.0, 0.0, 0)
    with pytest.raises(ValueError, match="alpha"):
        LossSchedule("mixture", alpha=-0.01)


def test_student_layer_range_includes_minus_l_plus_one():
    facts = {"teacher_hidden_size": 4, "teacher_num_layers": 2, "student_hidden_size": 4,
             "student_conv_dim": None}
    # 2 student layers -> 3 hidden states: indices -3 .. 2 are valid (-3 is hidden_states[0])
    for layer in (-3, 0, 2):
        assert build_objective("layerwise", **facts, student_num_layers=2,
                               student_layer=layer).student_layer == layer
    for layer in (-4, 3):
        with pytest.raises(ValueError, match="outside"):
            build_objective("layerwise", **facts, student_num_layers=2, student_layer=layer)
