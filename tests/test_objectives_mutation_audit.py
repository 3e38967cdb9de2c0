"""Hand-computed checks that kill the mutations the objectives' tests let through (session 13
mutation audit): the mean over targets of ``layerwise``, which teacher layer each target
reads, the GELU of DistilHuBERT's MLP heads and their s3prl layout, and ``frames_last``'s feature
order."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustdistill.objectives import DistillationInputs, LayerwisePrediction
from robustdistill.objectives.cosine_alignment import frames_last
from robustdistill.upstream import UpstreamOutput, lengths_to_mask


def _out(states: tuple[torch.Tensor, ...]) -> UpstreamOutput:
    lengths = torch.tensor([states[0].shape[1]] * states[0].shape[0])
    return UpstreamOutput(states, lengths, lengths_to_mask(lengths, states[0].shape[1]))


def _inputs(teacher_states, student_states) -> DistillationInputs:
    teacher, student = _out(teacher_states), _out(student_states)
    wave = torch.zeros(1, 10)
    return DistillationInputs(teacher, student, teacher.frame_mask, wave, wave,
                              torch.tensor([10]))


def _identity_heads(objective: LayerwisePrediction) -> LayerwisePrediction:
    with torch.no_grad():
        for head in objective.heads:
            head.weight.copy_(torch.eye(2))
            head.bias.zero_()
    return objective


# Teacher layers 0, 1, 2 all differ, so a target that read its neighbour would change the
# value; the student's last layer is [1, 0] (one frame).
TEACHER = (torch.tensor([[[5.0, 5.0]]]), torch.tensor([[[1.0, 0.0]]]),
           torch.tensor([[[0.0, 1.0]]]))
STUDENT = (torch.tensor([[[7.0, 7.0]]]), torch.tensor([[[1.0, 0.0]]]))
# layer 1: |P - H| = (0, 0) -> 0, cos = 1 -> -log sigmoid(1) = log(1 + e^-1)
# layer 2: |P - H| = (1, 1) -> 1, cos = 0 -> -log sigmoid(0) = log 2
L1 = {1: 0.0, 2: 1.0}
COS = {1: math.log1p(math.exp(-1.0)), 2: math.log(2.0)}


@pytest.mark.parametrize(("reduction", "scale"), [("mean", 0.5), ("sum", 1.0)])
def test_layerwise_reads_each_target_layer_and_averages_over_targets_by_hand(reduction, scale):
    objective = _identity_heads(LayerwisePrediction(
        teacher_hidden_size=2, teacher_num_layers=2, student_hidden_size=2,
        teacher_layers=[1, 2], lambda_cos=1.0, head="linear", reduction=reduction))
    terms = objective(_inputs(TEACHER, STUDENT))
    for layer in (1, 2):
        assert terms[f"layer{layer}_l1"].total.item() == pytest.approx(L1[layer], abs=1e-6)
        assert terms[f"layer{layer}_cos"].total.item() == pytest.approx(COS[layer], abs=1e-6)
        assert terms[f"layer{layer}_l1"].weight == pytest.approx(scale)
        assert terms[f"layer{layer}_cos"].weight == pytest.approx(scale)
    # one real frame: the training loss is the weighted sum of the terms
    loss = sum(t.weight * t.total for t in terms.values()).item()
    assert loss == pytest.approx(scale * (L1[1] + COS[1] + L1[2] + COS[2]), abs=1e-6)


def _gelu(x: float) -> float:
    return x * 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def test_mlp_heads_apply_gelu_and_give_each_target_its_own_chunk_by_hand():
    # D_s = D_t = 1, two targets: expand x -> (x, 2x), GELU, head k scales its chunk by k + 3
    objective = LayerwisePrediction(teacher_hidden_size=1, teacher_num_layers=2,
                                    student_hidden_size=1, teacher_layers=[1, 2], head="mlp")
    with torch.no_grad():
        objective.expand.weight.copy_(torch.tensor([[1.0], [2.0]]))
        objective.expand.bias.zero_()
        for k, head in enumerate(objective.heads):
            head.weight.fill_(k + 3.0)
            head.bias.zero_()
    first, second = objective.predict(torch.tensor([[[-1.0]]]))
    assert first.item() == pytest.approx(3.0 * _gelu(-1.0), abs=1e-6)   # -0.4760
    assert second.item() == pytest.approx(4.0 * _gelu(-2.0), abs=1e-6)  # -0.1820


def test_frames_last_orders_features_channel_major_by_hand():
    # (B=1, C=2, T=1, F=2): frame 0 holds channel 0's bins, then channel 1's
    x = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    assert frames_last(x).tolist() == [[[1.0, 2.0, 3.0, 4.0]]]


def test_s3prl_heads_compute_what_predict_computes_with_equal_widths():
    # D_s = D_t (DistilHuBERT's 768 -> 768): a SplitLinear weight left untransposed would have
    # the right shape and the wrong values. s3prl's output layer: Linear, GELU, then
    # SplitLinear: hidden (B, T, N, D_s) times weight (N, D_s, D_t) plus bias (1, 1, N, D_t).
    torch.manual_seed(0)
    objective = LayerwisePrediction(teacher_hidden_size=3, teacher_num_layers=2,
                                    student_hidden_size=3, teacher_layers=[1, 2], head="mlp")
    state = objective.s3prl_heads()["state_dict"]
    x = torch.randn(1, 4, 3)
    inner = F.gelu(x @ state["0.weight"].T + state["0.bias"]).reshape(1, 4, 2, 3)
    theirs = torch.einsum("btnd,ndf->btnf", inner, state["2.weight"]) + state["2.bias"]
    ours = objective.predict(x)
    for k in range(2):
        torch.testing.assert_close(theirs[:, :, k], ours[k], atol=1e-6, rtol=1e-6)
