"""The SUPERB featurizer: weights sum to one, gradients reach them, layer selection."""

from __future__ import annotations

import pytest
import torch

from downstream.featurizer import Featurizer


def test_weights_sum_to_one_and_start_uniform():
    f = Featurizer(num_hidden_states=5, hidden_size=8)
    w = f.normalized_weights()
    assert w.sum().item() == pytest.approx(1.0)
    assert torch.allclose(w, torch.full((5,), 0.2))
    with torch.no_grad():
        f.weights.copy_(torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0]))
    assert sum(f.layer_weights().values()) == pytest.approx(1.0)


def test_forward_is_the_weighted_sum():
    f = Featurizer(num_hidden_states=3, hidden_size=4)
    with torch.no_grad():
        f.weights.copy_(torch.log(torch.tensor([0.5, 0.3, 0.2])))  # softmax -> 0.5, 0.3, 0.2
    hs = [torch.full((2, 6, 4), float(v)) for v in (1.0, 10.0, 100.0)]
    out = f(f.select(hs))
    assert out.shape == (2, 6, 4)
    assert torch.allclose(out, torch.full((2, 6, 4), 0.5 + 3.0 + 20.0))


def test_gradient_reaches_the_weights():
    f = Featurizer(num_hidden_states=3, hidden_size=4)
    hs = [torch.randn(2, 5, 4) * (i + 1) for i in range(3)]
    f(f.select(hs)).pow(2).mean().backward()
    assert f.weights.grad is not None
    assert f.weights.grad.abs().sum() > 0


def test_layer_selection_and_layer_norm():
    f = Featurizer(num_hidden_states=4, hidden_size=4, layers=[0, -1], layer_norm=True)
    assert f.layers == [0, 3]
    assert list(f.layer_weights()) == ["0", "3"]
    hs = [torch.randn(1, 3, 4) * 100 + i for i in range(4)]
    out = f(f.select(hs))
    # each selected layer is normalised over D, so the mix of two is bounded (|x| <= sqrt(D-1))
    assert out.abs().max() <= 4 ** 0.5
    expected = 0.5 * (torch.nn.functional.layer_norm(hs[0], (4,))
                      + torch.nn.functional.layer_norm(hs[3], (4,)))
    assert torch.allclose(out, expected, atol=1e-6)


def test_bad_layers_raise():
    with pytest.raises(ValueError, match="out of range"):
        Featurizer(3, 4, layers=[3])
    with pytest.raises(ValueError, match="duplicates"):
        Featurizer(3, 4, layers=[1, -2])
    with pytest.raises(ValueError, match="empty"):
        Featurizer(3, 4, layers=[])
    f = Featurizer(3, 4)
    with pytest.raises(ValueError, match="expected 3 hidden states"):
        f.select([torch.zeros(1, 2, 4)] * 2)
