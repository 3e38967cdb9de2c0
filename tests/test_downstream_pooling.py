"""Mutation-testing additions: pooling over real frames, padding, the featurizer's layer order
and the encoder keeping only real frames, in input order."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from downstream.base import Batch, Example, encode_examples, pad_hidden
from downstream.featurizer import Featurizer
from downstream.pooling import frame_mask, masked_mean, masked_mean_std


def _padded():
    """Two utterances of 2 and 3 real frames (D = 1) padded to 4 with large garbage."""
    x = torch.tensor([[[0.0], [2.0], [1e3], [-1e3]],
                      [[1.0], [2.0], [6.0], [1e3]]])
    return x, torch.tensor([2, 3])


def test_frame_mask_marks_exactly_the_real_frames():
    mask = frame_mask(torch.tensor([2, 3]), 4)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, False]]


def test_masked_mean_and_std_by_hand():
    x, lengths = _padded()
    # means over real frames: (0 + 2) / 2 = 1; (1 + 2 + 6) / 3 = 3
    torch.testing.assert_close(masked_mean(x, lengths), torch.tensor([[1.0], [3.0]]))
    # population variances: ((0-1)^2 + (2-1)^2) / 2 = 1; ((1-3)^2 + (2-3)^2 + (6-3)^2) / 3 = 14/3
    eps = 1e-5
    expected = torch.tensor([[1.0, (1.0 + eps) ** 0.5], [3.0, (14 / 3 + eps) ** 0.5]])
    torch.testing.assert_close(masked_mean_std(x, lengths, eps), expected)


def test_pad_hidden_pads_at_the_end_with_zeros():
    a = torch.arange(6.0).view(1, 3, 2)  # (N=1, T=3, D=2)
    b = torch.full((1, 1, 2), 7.0)
    out, lengths = pad_hidden([a, b])
    assert lengths.tolist() == [3, 1] and out.shape == (2, 1, 3, 2)
    torch.testing.assert_close(out[1, 0], torch.tensor([[7.0, 7.0], [0.0, 0.0], [0.0, 0.0]]))
    batch = Batch(out, lengths, [])
    assert batch.frame_mask.tolist() == [[True, True, True], [True, False, False]]


def test_featurizer_weights_follow_the_listed_layer_order():
    f = Featurizer(num_hidden_states=3, hidden_size=1, layers=[2, 0])
    with torch.no_grad():
        f.weights.copy_(torch.log(torch.tensor([0.9, 0.1])))  # layer 2: 0.9, layer 0: 0.1
    assert f.layer_weights() == {"2": pytest.approx(0.9), "0": pytest.approx(0.1)}
    hs = [torch.full((1, 2, 1), v) for v in (1.0, 10.0, 100.0)]
    out = f(f.select(hs))
    torch.testing.assert_close(out, torch.full((1, 2, 1), 0.9 * 100.0 + 0.1 * 1.0))


class _FakeUpstream:
    """Hidden state = the waveform's first sample on real frames, 999 on padded frames;
    one frame per 10 samples."""

    def __call__(self, waves, lengths):
        frames = lengths // 10
        t = int(frames.max())
        h = torch.full((waves.shape[0], t, 1), 999.0)
        for j in range(waves.shape[0]):
            h[j, : frames[j]] = waves[j, 0]
        return SimpleNamespace(hidden_states=(h,), frame_lengths=frames)


def test_encode_keeps_real_frames_in_input_order():
    f = Featurizer(1, 1)
    examples = [Example(str(i), np.full(n, float(i + 1), np.float32), 0)
                for i, n in enumerate((50, 20, 40))]
    encoded = encode_examples(_FakeUpstream(), f, examples, batch_size=3, dtype=torch.float32)
    assert [e.example.key for e in encoded] == ["0", "1", "2"]
    assert [e.num_frames for e in encoded] == [5, 2, 4]
    for i, e in enumerate(encoded):
        assert e.hidden.shape == (1, e.num_frames, 1)
        assert torch.all(e.hidden == float(i + 1))  # no padded (999) frame kept
