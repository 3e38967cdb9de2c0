"""Downstream evaluation v2 (issue 7): one noise draw across SNRs, per-item results and
intervals, test-set identity, padding-independent encoding, model-selection and PESQ fixes."""

from __future__ import annotations

import numpy as np
import pytest

from downstream.conditions import TestCorruptor, parse_condition
from robustdistill.augment import NoiseBank, RirBank


def _banks():
    rng = np.random.default_rng(0)
    noise = NoiseBank(tuple(rng.standard_normal(8000).astype(np.float32) for _ in range(3)),
                      ("a", "b", "c"))
    rirs = RirBank((np.array([1.0, 0.5, 0.25], np.float32), np.array([1.0, -0.3], np.float32)),
                   ("r1", "r2"))
    return noise, rirs


def test_one_noise_draw_across_snrs_and_rooms():
    """snr-5 and snr20 of an utterance hold the same noise segment (only the gain differs), and
    reverb / reverb+snr use the same room: a curve varies the SNR only."""
    noise, rirs = _banks()
    corruptor = TestCorruptor(noise, rirs, seed=3)
    clean = np.sin(np.arange(1600) / 5.0).astype(np.float32)
    for key in ("utt1", "utt2", "spk/utt3"):
        residuals = {snr: corruptor.apply(clean, parse_condition(f"snr{snr}"), key).astype(
            np.float64) - clean for snr in (-5, 0, 20)}
        # same segment: the residuals are multiples (up to float32 rounding of the mix), with
        # the gain the SNRs imply
        for snr in (0, 20):
            a, b = residuals[-5], residuals[snr]
            assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) == pytest.approx(1.0, abs=1e-6)
            assert (a @ b) / (b @ b) == pytest.approx(10 ** ((snr + 5) / 20), rel=1e-5)
        reverb = corruptor.apply(clean, parse_condition("reverb"), key).astype(np.float64)
        both = corruptor.apply(clean, parse_condition("reverb+snr0"), key).astype(np.float64)
        noisy_part = both - reverb  # same room: the difference is the noise alone
        cos = noisy_part @ residuals[0] / np.linalg.norm(noisy_part) / np.linalg.norm(residuals[0])
        assert cos == pytest.approx(1.0, abs=1e-5)
    # the draw depends on seed and key only, and changes with either
    a = corruptor.draw("utt1", 1600)
    assert np.array_equal(a.noise, TestCorruptor(noise, rirs, seed=3).draw("utt1", 1600).noise)
    assert not np.array_equal(a.noise, TestCorruptor(noise, rirs, seed=4).draw("utt1", 1600).noise)
    assert not np.array_equal(a.noise, corruptor.draw("utt2", 1600).noise)
    # the noise does not depend on whether a room bank is loaded
    assert np.array_equal(a.noise, TestCorruptor(noise, None, seed=3).draw("utt1", 1600).noise)


def test_corruption_fingerprint_covers_seed_and_files():
    noise, rirs = _banks()
    base = TestCorruptor(noise, rirs, seed=0).fingerprint()
    assert base == TestCorruptor(noise, rirs, seed=0).fingerprint()
    assert base != TestCorruptor(noise, rirs, seed=1).fingerprint()
    assert base != TestCorruptor(noise, None, seed=0).fingerprint()
    changed = NoiseBank((noise.waveforms[0] * 0.5, *noise.waveforms[1:]), noise.names)
    assert base != TestCorruptor(changed, rirs, seed=0).fingerprint()
