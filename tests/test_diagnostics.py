"""Hidden-state statistics, prediction distances and linear CKA on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from robustdistill.diagnostics import hidden_state_stats, linear_cka, prediction_distance


def test_hidden_state_stats_by_hand_and_padding_ignored():
    # utterance 1: frames 0, 2 (std 1); utterance 2: frames 1, 1, 1 (std 0); 99 is padding
    hidden = torch.tensor([[[0.0], [2.0], [99.0]], [[1.0], [1.0], [1.0]]])
    stats = hidden_state_stats([hidden, 3 * hidden], torch.tensor([2, 3]))
    assert stats[0].std_over_time == pytest.approx(0.5)
    assert stats[0].utterance_mean_spread == pytest.approx(0.0)  # both means are 1
    assert stats[0].rms == pytest.approx(math.sqrt(7 / 5))
    assert stats[0].frames == 5
    assert stats[1].std_over_time == pytest.approx(1.5)  # scales with the layer
    # different means: 1 and 3 -> population std 1
    other = torch.tensor([[[0.0], [2.0]], [[3.0], [3.0]]])
    assert hidden_state_stats([other], torch.tensor([2, 2]))[0].utterance_mean_spread == \
        pytest.approx(1.0)


def test_hidden_state_stats_refuses_undefined_spreads():
    with pytest.raises(ValueError, match="2 utterances"):
        hidden_state_stats([torch.zeros(1, 4, 2)], torch.tensor([4]))
    with pytest.raises(ValueError, match="2 real frames"):
        hidden_state_stats([torch.zeros(2, 4, 2)], torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="expected hidden"):
        hidden_state_stats([torch.zeros(2, 4)], torch.tensor([4, 4]))


def test_prediction_distance_by_hand():
    prediction = torch.tensor([[[1.0, 0.0], [5.0, 5.0]]])
    target = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False]])  # the second frame is padding
    d = prediction_distance(prediction, target, mask)
    assert (d.l1, d.cosine, d.frames) == (pytest.approx(1.0), pytest.approx(0.0), 1)
    target2 = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    same = prediction_distance(2 * target2, target2, torch.ones(1, 2).bool())
    assert same.cosine == pytest.approx(1.0) and same.l1 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no real frame"):
        prediction_distance(prediction, target, torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="shapes differ"):
        prediction_distance(prediction, target[:, :1], mask)


def test_linear_cka_invariances_and_limits():
    torch.manual_seed(0)
    x = torch.randn(200, 6)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6))
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-9)
    # independent random features: near 0 (expected about D/N for N frames)
    assert linear_cka(x, torch.randn(200, 6)) < 0.1
    # Exact values from orthogonal columns (Walsh-Hadamard rows, zero mean, norm 2 each),
    # shifted by a constant the centring must remove: X = [a, b], Y = a gives
    # ||Y^T X||^2 / (||X^T X|| ||Y^T Y||) = 16 / (4 sqrt(2) * 4) = 1 / sqrt(2); with b scaled
    # by 2, X^T X = diag(4, 16): 16 / (4 sqrt(17) * 4) = 1 / sqrt(17); Y orthogonal to X: 0.
    a = torch.tensor([1.0, -1.0, 1.0, -1.0])
    b = torch.tensor([1.0, 1.0, -1.0, -1.0])
    c = torch.tensor([1.0, -1.0, -1.0, 1.0])
    both = torch.stack([a, b], 1) + 7.0
    assert linear_cka(both, a[:, None] - 3.0) == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    assert linear_cka(a[:, None], both) == pytest.approx(1 / math.sqrt(2), abs=1e-12)  # symmetric
    assert linear_cka(torch.stack([a, 2 * b], 1), a[:, None]) == pytest.approx(
        1 / math.sqrt(17), abs=1e-12)
    assert linear_cka(torch.stack([a, 2 * b], 1), b[:, None]) == pytest.approx(
        4 / math.sqrt(17), abs=1e-12)
    assert linear_cka(both, c[:, None] + 1.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="constant"):
        linear_cka(x, torch.ones(200, 3))
    with pytest.raises(ValueError, match="expected"):
        linear_cka(x, torch.randn(100, 6))
