"""Mutation-testing additions for the FBANK anchor upstream: power spectrum, per-frame DC
removal, Povey window, CMVN to unit variance, and the frame count."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from downstream.fbank import FbankConfig, FbankUpstream

SR = 16000


def _tone(n=6000, seed=0):
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.standard_normal(n)
    return torch.from_numpy(wave.astype(np.float32))


def test_log_mel_energies_are_of_the_power_spectrum():
    # doubling the waveform multiplies the power spectrum by 4: every log mel energy grows by
    # ln 4 (a magnitude spectrum would give ln 2)
    raw = FbankUpstream(FbankConfig(delta_order=0, cmvn=False))
    wave = _tone()
    diff = raw.features(2.0 * wave) - raw.features(wave)
    torch.testing.assert_close(diff, torch.full_like(diff, math.log(4.0)), atol=1e-3, rtol=0)


def test_dc_offset_is_removed_per_frame():
    raw = FbankUpstream(FbankConfig(delta_order=0, cmvn=False))
    wave = _tone()
    torch.testing.assert_close(raw.features(wave + 0.5), raw.features(wave), atol=2e-3, rtol=0)


def test_povey_window():
    n = torch.arange(400, dtype=torch.float64)
    povey = (0.5 - 0.5 * torch.cos(2 * math.pi * n / 399)) ** 0.85
    torch.testing.assert_close(FbankUpstream().window, povey.float())


def test_cmvn_gives_zero_mean_unit_variance_per_feature():
    wave = _tone(8000)
    raw = FbankUpstream(FbankConfig(cmvn=False)).features(wave).double()  # (48, 240)
    feats = FbankUpstream().features(wave).double()
    # per utterance and feature: (x - mean) / (population std + 1e-5)
    expected = (raw - raw.mean(0)) / (raw.std(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(feats, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(feats.mean(0), torch.zeros(240, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    std = feats.std(0, unbiased=False)
    assert float(std.min()) > 0.99 and float(std.max()) < 1.0 + 1e-6


@pytest.mark.parametrize("samples", [400, 559, 560, 8000, 12345])
def test_frame_lengths_match_the_features(samples):
    up = FbankUpstream()
    expected = 1 + (samples - 400) // 160  # Kaldi snip_edges
    assert int(up.frame_lengths(torch.tensor([samples]))[0]) == expected
    assert up.features(_tone(samples)).shape[0] == expected
