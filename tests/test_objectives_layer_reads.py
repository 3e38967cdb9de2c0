"""Mutation-testing gaps in the layer-wise and enhancement objectives: the student layer the
heads read, the x2 STFT upsampling of the enhancement head, and which student features the
enhancement head reads. Values by hand or by a plain re-implementation."""

from __future__ import annotations

import math

import pytest
import torch

from robustdistill.objectives import (
    DistillationInputs,
    LayerwisePrediction,
    MaskEnhancement,
    build_objective,
)
from robustdistill.objectives.enhancement import magnitude_stft
from robustdistill.upstream import UpstreamOutput, lengths_to_mask


def _inputs(teacher_states, student_states, frames, wave_len=10):
    lengths = torch.tensor(frames)
    t = teacher_states[0].shape[1]
    mask = lengths_to_mask(lengths, t)
    wave = torch.zeros(len(frames), wave_len)
    return DistillationInputs(UpstreamOutput(tuple(teacher_states), lengths, mask),
                              UpstreamOutput(tuple(student_states), lengths, mask), mask, wave,
                              wave, torch.full((len(frames),), wave_len))


def _identity_linear(objective):
    with torch.no_grad():
        for head in objective.heads:
            head.weight.copy_(torch.eye(head.weight.shape[0], head.weight.shape[1]))
            head.bias.zero_()


def test_layerwise_reads_the_configured_student_layer():
    objective = LayerwisePrediction(teacher_hidden_size=2, teacher_num_layers=1,
                                    student_hidden_size=2, teacher_layers=[1], head="linear",
                                    student_layer=0)
    _identity_linear(objective)
    teacher = torch.tensor([[[1.0, 0.0]]])
    first = torch.tensor([[[1.0, 0.0]]])  # student layer 0: equals the target -> l1 0
    last = torch.tensor([[[3.0, 4.0]]])  # the last layer (wrong one): l1 (2 + 4) / 2 = 3
    terms = objective(_inputs([teacher, teacher], [first, last], [1]))
    assert terms["layer1_l1"].total.item() == pytest.approx(0.0, abs=1e-7)
    assert terms["layer1_cos"].total.item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-6)


def _manual_mask(head, features, num_frames):
    """The head on one full-length utterance, by hand: each feature frame repeated twice
    (the last one repeated to fill), then the BiLSTM, linear, sigmoid (no packing needed)."""
    rep = features.repeat_interleave(2, dim=1)[:, :num_frames]
    if rep.shape[1] < num_frames:
        rep = torch.cat([rep, rep[:, -1:].expand(-1, num_frames - rep.shape[1], -1)], dim=1)
    out, _ = head.lstm(rep)
    return torch.sigmoid(head.proj(out))


def test_enhancement_head_repeats_each_feature_frame_twice():
    torch.manual_seed(0)
    objective = MaskEnhancement(teacher_hidden_size=4, teacher_num_layers=1,
                                student_hidden_size=4, hidden_size=4, num_layers=1)
    features = torch.randn(1, 5, 4)
    # 11 STFT frames from 5 feature frames: 0,0,1,1,2,2,3,3,4,4,4
    got = objective.head(features, torch.tensor([5]), 11, torch.tensor([11]))
    expected = _manual_mask(objective.head, features, 11)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_enhancement_input_last_reads_the_last_hidden_state():
    torch.manual_seed(1)
    objective = MaskEnhancement(teacher_hidden_size=4, teacher_num_layers=1,
                                student_hidden_size=4, hidden_size=4, num_layers=1)
    clean = torch.randn(1, 1600)
    noisy = clean + 0.5 * torch.randn(1, 1600)
    first, last = torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    lengths = torch.tensor([5])
    mask = lengths_to_mask(lengths, 5)
    out = UpstreamOutput((first, last), lengths, mask)
    inputs = DistillationInputs(out, out, mask, clean, noisy, torch.tensor([1600]))
    total = objective(inputs)["l1"].total
    m = _manual_mask(objective.head, last, 11)
    expected = (m * magnitude_stft(noisy) - magnitude_stft(clean)).abs().mean(-1).sum()
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    wrong = (_manual_mask(objective.head, first, 11) * magnitude_stft(noisy)
             - magnitude_stft(clean)).abs().mean(-1).sum()
    assert abs(wrong.item() - expected.item()) > 1e-4  # the test can tell the layers apart


def test_cnn_input_reads_extract_features():
    torch.manual_seed(2)
    objective = MaskEnhancement(teacher_hidden_size=4, teacher_num_layers=1,
                                student_hidden_size=4, student_conv_dim=3, input="cnn",
                                hidden_size=4, num_layers=1)
    assert objective.needs_extract_features
    clean = torch.randn(1, 1600)
    noisy = clean + 0.5 * torch.randn(1, 1600)
    hidden, cnn = torch.randn(1, 5, 4), torch.randn(1, 5, 3)
    lengths = torch.tensor([5])
    mask = lengths_to_mask(lengths, 5)
    out = UpstreamOutput((hidden, hidden), lengths, mask, extract_features=cnn)
    total = objective(DistillationInputs(out, out, mask, clean, noisy,
                                         torch.tensor([1600])))["l1"].total
    m = _manual_mask(objective.head, cnn, 11)
    expected = (m * magnitude_stft(noisy) - magnitude_stft(clean)).abs().mean(-1).sum()
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert m.shape == (1, 11, 257)


def _objectives(**options):
    return {name: build_objective(name, teacher_hidden_size=4, teacher_num_layers=4,
                                  student_hidden_size=4, student_conv_dim=3,
                                  student_num_layers=2, **kwargs)
            for name, kwargs in options.items()}


def test_a_student_no_objective_trains_is_refused():
    """Enhancement on the CNN alone with feature_grad_mult 0: only its head would learn."""
    from robustdistill.config import ConfigError
    from robustdistill.startup_checks import check_student_is_trained

    only_cnn = _objectives(enhancement={"input": "cnn", "hidden_size": 4, "num_layers": 1})
    with pytest.raises(ConfigError, match=r"\['enhancement'\] read only the CNN features and "
                                          r"student.feature_grad_mult is 0"):
        check_student_is_trained(only_cnn, 2, 0.0)
    check_student_is_trained(only_cnn, 2, 0.1)  # the CNN learns: allowed (a warning)
    last = _objectives(enhancement={"hidden_size": 4, "num_layers": 1})
    assert last["enhancement"].student_layers_read() == [-1]
    check_student_is_trained(last, 2, 0.0)  # input last: every layer gets a gradient


def test_student_layers_no_objective_reads_are_named(caplog):
    from robustdistill.startup_checks import check_student_is_trained

    caplog.set_level("WARNING", logger="robustdistill.startup_checks")
    check_student_is_trained(_objectives(layerwise={"teacher_layers": [2], "student_layer": 1}),
                             2, 0.1)
    assert "student layers 2..2 are read by no objective" in caplog.text
    caplog.clear()
    check_student_is_trained(_objectives(layerwise={"teacher_layers": [2]}), 2, 0.1)
    assert caplog.text == ""  # the last hidden state: every layer trains
