"""IML-KD losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from robustdistill.speaker.losses import batch_loss, class_loss, instance_loss, map_kl


def test_instance_loss_hand_value():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 1.0], [0.0, 5.0]])
    # 1 - cos: 1 - 1/sqrt(2) and 0; mean over the batch
    assert instance_loss(s, t).item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2, abs=1e-7)


def test_class_loss_hand_value_tau_1_and_2():
    z_s = torch.tensor([[0.0, 0.0]])
    z_t = torch.tensor([[math.log(3.0), 0.0]])
    # tau 1: p_t = (3/4, 1/4), q = (1/2, 1/2)
    kl1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert class_loss(z_s, z_t, tau=1.0).item() == pytest.approx(kl1, abs=1e-6)
    # tau 2: p_t = (sqrt3, 1) / (sqrt3 + 1), times tau^2 = 4
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert class_loss(z_s, z_t, tau=2.0).item() == pytest.approx(4 * kl2, abs=1e-6)
    assert class_loss(z_t, z_t).item() == pytest.approx(0.0, abs=1e-7)


def test_batch_loss_hand_value():
    e_s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # Gram = I
    e_t = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # Gram rows normalise to (1, 1)/sqrt2
    r = 1 / math.sqrt(2)
    expected = (2 * (1 - r) ** 2 + 2 * r**2) / 4
    assert batch_loss(e_s, e_t).item() == pytest.approx(expected, abs=1e-6)
    assert batch_loss(e_t, 7 * e_t).item() == pytest.approx(0.0, abs=1e-7)  # scale-free


def test_map_kl_hand_value_and_zero_entries():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]])
    logits = torch.zeros(2, 3)  # q uniform
    row1 = 2 * 0.5 * math.log(0.5 * 3)
    row2 = 2 * 0.25 * math.log(0.25 * 3) + 0.5 * math.log(0.5 * 3)
    assert map_kl(logits, p).item() == pytest.approx((row1 + row2) / 2, abs=1e-6)
    assert map_kl(torch.log(p[1:]), p[1:]).item() == pytest.approx(0.0, abs=1e-7)


def test_losses_reject_bad_input():
    with pytest.raises(ValueError, match="sum to one"):
        map_kl(torch.zeros(1, 3), torch.tensor([[0.5, 0.2, 0.1]]))
    with pytest.raises(ValueError, match="differ"):
        map_kl(torch.zeros(1, 3), torch.ones(1, 4) / 4)
    with pytest.raises(ValueError, match="differ"):
        instance_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="tau"):
        class_loss(torch.zeros(1, 2), torch.zeros(1, 2), tau=0.0)
    with pytest.raises(ValueError, match="batch loss"):
        batch_loss(torch.zeros(2, 3), torch.zeros(3, 3))
