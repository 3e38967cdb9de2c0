"""Objective values against hand computation, padding invariance, and where gradients go."""

from __future__ import annotations

import math

import pytest
import torch

from robustdistill.objectives import (
    OBJECTIVES,
    DistillationInputs,
    LayerwisePrediction,
    MaskEnhancement,
    build_objective,
)
from robustdistill.objectives.enhancement import magnitude_stft, stft_frame_lengths
from robustdistill.upstream import UpstreamOutput, lengths_to_mask


def _output(hidden: torch.Tensor, frame_lengths: list[int]) -> UpstreamOutput:
    lengths = torch.tensor(frame_lengths)
    return UpstreamOutput((hidden, hidden), lengths, lengths_to_mask(lengths, hidden.shape[1]))


def _identity_layerwise(lambda_cos: float = 1.0) -> LayerwisePrediction:
    objective = LayerwisePrediction(teacher_hidden_size=2, teacher_num_layers=1,
                                    student_hidden_size=2, teacher_layers=[1],
                                    lambda_cos=lambda_cos, head="linear")
    with torch.no_grad():
        objective.heads[0].weight.copy_(torch.eye(2))
        objective.heads[0].bias.zero_()
    return objective


def _layerwise_inputs(pad_frames: int = 0) -> DistillationInputs:
    # Utterance 0: 3 real frames; utterance 1: 1 real frame, then padding (garbage values
    # that must not count).
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                            [[2.0, 0.0], [9.0, 9.0], [-7.0, 3.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [0.0, -1.0], [2.0, 2.0]],
                            [[0.0, 2.0], [5.0, -5.0], [4.0, 4.0]]])
    if pad_frames:
        student = torch.cat([student, torch.randn(2, pad_frames, 2) * 100], dim=1)
        teacher = torch.cat([teacher, torch.randn(2, pad_frames, 2) * 100], dim=1)
    frames = [3, 1]
    mask = lengths_to_mask(torch.tensor(frames), student.shape[1])
    wave = torch.zeros(2, 10)
    return DistillationInputs(_output(teacher, frames), _output(student, frames), mask,
                              wave, wave, torch.tensor([10, 10]))


def test_layerwise_equals_hand_computation_with_padding():
    terms = _identity_layerwise(lambda_cos=0.5)(_layerwise_inputs())
    # Per real frame (P = student, H = teacher):
    #   u0 f0: |P-H| = (0, 0) -> 0;   cos = 1  -> -log sigmoid(1)  = log(1 + e^-1)
    #   u0 f1: |P-H| = (0, 2) -> 1;   cos = -1 -> -log sigmoid(-1) = log(1 + e)
    #   u0 f2: |P-H| = (1, 1) -> 1;   cos = 4 / (sqrt 2 * sqrt 8) = 1 -> log(1 + e^-1)
    #   u1 f0: |P-H| = (2, 2) -> 2;   cos = 0 -> log 2
    l1_sum = 0 + 1 + 1 + 2
    cos_sum = 2 * math.log1p(math.exp(-1)) + math.log1p(math.e) + math.log(2)
    assert terms["layer1_l1"].total.item() == pytest.approx(l1_sum, abs=1e-6)
    assert terms["layer1_cos"].total.item() == pytest.approx(cos_sum, abs=1e-6)
    assert terms["layer1_l1"].unit == "frames" and terms["layer1_cos"].weight == 0.5
    # L_1 itself is logged, weight 0 (its parts carry the loss): l1 + lambda_cos * cos
    assert terms["layer1"].total.item() == pytest.approx(l1_sum + 0.5 * cos_sum, abs=1e-6)
    assert terms["layer1"].weight == 0.0
    # The trainer's mean over the 4 real frames: L = 4/4 + 0.5 * cos_sum / 4.
    loss = sum(t.weight * t.total for t in terms.values()) / 4
    assert loss.item() == pytest.approx(1.0 + 0.5 * cos_sum / 4, abs=1e-6)


def test_layerwise_does_not_change_when_padding_is_added():
    objective = _identity_layerwise()
    base = objective(_layerwise_inputs())
    padded = objective(_layerwise_inputs(pad_frames=5))
    for name in base:
        assert padded[name].total.item() == pytest.approx(base[name].total.item(), abs=1e-5)


def test_layerwise_default_targets_scale_with_teacher_depth():
    objective = LayerwisePrediction(teacher_hidden_size=4, teacher_num_layers=12,
                                    student_hidden_size=3)
    assert objective.teacher_layers == [4, 8, 12]
    with pytest.raises(ValueError, match="outside"):
        LayerwisePrediction(teacher_hidden_size=4, teacher_num_layers=4, student_hidden_size=3,
                            teacher_layers=[5])


def test_stft_frames_match_hand_arithmetic_and_zero_padding():
    x = torch.randn(1, 1000)
    spec = magnitude_stft(x)
    assert spec.shape == (1, 1000 // 160 + 1, 257)
    assert stft_frame_lengths(torch.tensor([1000, 160, 159])).tolist() == [7, 2, 1]
    padded = magnitude_stft(torch.cat([x, torch.zeros(1, 600)], dim=1))
    torch.testing.assert_close(padded[:, : spec.shape[1]], spec, atol=1e-5, rtol=1e-5)


def _enhancement_inputs(clean, noisy, lengths, hidden, real_frames=5):
    out = _output(hidden, [real_frames] * clean.shape[0])
    return DistillationInputs(out, out, out.frame_mask, clean, noisy, lengths)


def test_enhancement_loss_equals_manual_l1_and_ignores_padding():
    torch.manual_seed(0)
    objective = MaskEnhancement(teacher_hidden_size=8, teacher_num_layers=2,
                                student_hidden_size=8, hidden_size=8, num_layers=1)
    clean, noise = torch.randn(1, 1600), torch.randn(1, 1600) * 0.3
    hidden = torch.randn(1, 5, 8)
    terms = objective(_enhancement_inputs(clean, clean + noise, torch.tensor([1600]), hidden))
    # By hand: the same head, mask applied to |Y|, L1 to |X|, mean over bins, sum over frames.
    mask = objective.head(hidden, torch.tensor([5]), 11, torch.tensor([11]))
    expected = (mask * magnitude_stft(clean + noise) - magnitude_stft(clean)).abs().mean(-1).sum()
    assert terms["l1"].total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["l1"].unit == "stft_frames" and terms["l1"].weight == 2.0
    # Padding the waveform batch (and the features) changes nothing.
    pad = torch.zeros(1, 800)
    padded = objective(_enhancement_inputs(torch.cat([clean, pad], 1),
                                           torch.cat([clean + noise, pad], 1),
                                           torch.tensor([1600]),
                                           torch.cat([hidden, torch.randn(1, 3, 8)], 1)))
    assert padded["l1"].total.item() == pytest.approx(terms["l1"].total.item(), rel=1e-5)
    assert objective.count_units(torch.tensor([1600, 800]))["stft_frames"].item() == 11 + 6


def test_gradients_reach_heads_and_student_but_not_teacher():
    objective = build_objective("layerwise", teacher_hidden_size=4, teacher_num_layers=2,
                                student_hidden_size=3, student_conv_dim=None,
                                teacher_layers=[1, 2])
    student_hidden = torch.randn(2, 4, 3, requires_grad=True)
    teacher_hidden = torch.randn(2, 4, 4, requires_grad=True)
    frames = [4, 2]
    mask = lengths_to_mask(torch.tensor(frames), 4)
    teacher = UpstreamOutput((teacher_hidden,) * 3, torch.tensor(frames), mask)
    student = UpstreamOutput((student_hidden,) * 3, torch.tensor(frames), mask)
    wave = torch.zeros(2, 8)
    terms = objective(DistillationInputs(teacher, student, mask, wave, wave,
                                         torch.tensor([8, 8])))
    sum(t.total for t in terms.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.parameters())
    assert student_hidden.grad.abs().sum() > 0
    assert student_hidden.grad[1, 2:].abs().sum() == 0  # padded frames get no gradient
    assert teacher_hidden.grad is None


def test_registry_names_and_typos():
    assert {"layerwise", "enhancement"} <= set(OBJECTIVES)
    with pytest.raises(KeyError, match="unknown objective"):
        build_objective("layerwize", teacher_hidden_size=4, teacher_num_layers=2,
                        student_hidden_size=3, student_conv_dim=None)
    with pytest.raises(TypeError, match="lambda_co"):
        build_objective("layerwise", teacher_hidden_size=4, teacher_num_layers=2,
                        student_hidden_size=3, student_conv_dim=None, lambda_co=1.0)


@pytest.mark.parametrize(("name", "options"), [
    ("layerwise", {"student_layer": 3}),
    ("cosine_alignment", {"student_layer": -4}),
    ("gram_kd", {"layer_pairs": [[1, 3]]}),
    ("tfckd", {"teacher_layers": [1, 2], "student_layers": [1, 3]}),
])
def test_a_student_layer_beyond_the_student_is_refused_at_build(name, options):
    facts = {"teacher_hidden_size": 4, "teacher_num_layers": 2, "student_hidden_size": 4,
             "student_conv_dim": None}
    build_objective(name, **facts, **options)  # without the student's depth: not checked
    with pytest.raises(ValueError, match=r"student layers \[-?\d\] outside"):
        build_objective(name, **facts, student_num_layers=2, **options)
    assert build_objective(name, **facts, student_num_layers=3, **{
        k: v for k, v in options.items() if k != "student_layer"}) is not None
