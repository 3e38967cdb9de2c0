"""Mutation-testing additions for robustdistill.augment: segment draws, RIR polarity, the
convolver's spectrum cache, channel banks, and the noise_first order of "noise+reverb"."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf

from robustdistill.augment import (
    AugmentationConfig,
    Corruptor,
    RirBank,
    mix_at_snr,
    noise_segment,
    prepare_rir,
    reverberate,
)
from robustdistill.augment.rooms import PreparedRirConvolver

SR = 16_000


def _tone(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.1 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _rir(taps: dict[int, float], length: int) -> np.ndarray:
    h = np.zeros(length)
    for i, v in taps.items():
        h[i] = v
    return h


# ---- noise segments ------------------------------------------------------------------------


def test_noise_segment_start_is_uniform_over_every_valid_offset() -> None:
    """A contiguous segment may start anywhere in [0, N - length], the last offset included,
    and a noise exactly as long as the segment is returned whole."""
    noise = np.arange(10, dtype=np.float32)
    rng = np.random.default_rng(0)
    starts = [int(noise_segment(noise, 8, rng)[0]) for _ in range(200)]
    assert set(starts) == {0, 1, 2}
    assert min(starts.count(s) for s in (0, 1, 2)) > 40  # roughly uniform
    np.testing.assert_array_equal(noise_segment(noise, 10, rng), noise)


def test_tiled_noise_starts_at_a_random_offset() -> None:
    """A noise shorter than the segment is tiled from a random start, not always from 0."""
    noise = np.arange(5, dtype=np.float32)
    rng = np.random.default_rng(1)
    starts = set()
    for _ in range(100):
        seg = noise_segment(noise, 12, rng)
        np.testing.assert_array_equal(seg, (seg[0] + np.arange(12)) % 5)
        starts.add(int(seg[0]))
    assert starts == {0, 1, 2, 3, 4}


# ---- RIR preparation -----------------------------------------------------------------------


def test_prepare_rir_polarity_follows_the_largest_of_the_first_16_samples() -> None:
    """The sign makes the largest tap of the first 16 samples (1 ms) positive, even when the
    onset (first tap within 20 dB) has the other sign; taps after 16 samples do not count."""
    rir = _rir({3: 0.5, 8: -1.0, 30: 0.2}, 64)  # onset at 3 (+0.5), largest of 1 ms at 8 (-1)
    expected = -rir[3:] / math.sqrt(0.25 + 1.0 + 0.04)
    got = prepare_rir(rir)
    assert got.size == 61 and got[5] > 0 and got[0] < 0
    np.testing.assert_allclose(got, expected, atol=1e-7)
    late = _rir({0: 0.5, 20: -1.0}, 32)  # the larger tap is outside the first 16 samples
    np.testing.assert_allclose(prepare_rir(late), late / math.sqrt(1.25), atol=1e-7)


# ---- the convolver's spectrum cache --------------------------------------------------------


def test_convolver_keeps_one_spectrum_per_key_for_different_rirs() -> None:
    """Two different RIRs of the same length, convolved with crops of one length: each key
    gets its own spectrum (a cache keyed on sizes only would reuse the first RIR's)."""
    a = prepare_rir(_rir({0: 1.0, 5: 0.5}, 40))
    b = prepare_rir(_rir({0: 1.0, 17: -0.7, 30: 0.3}, 40))
    x = _tone(500)
    convolver = PreparedRirConvolver()
    for h, key in ((a, (0, None)), (b, (1, None)), (a, (0, None)), (b, (1, None))):
        np.testing.assert_allclose(convolver.convolve(x, h, key), reverberate(x, h), atol=2e-6)
    assert (convolver.misses, convolver.hits) == (2, 2)


def test_corruptor_reverberates_with_the_drawn_room() -> None:
    """Every "reverb" output is the crop convolved with the RIR its info names (two rooms,
    crops of one length, so the spectra cache is exercised across rooms)."""
    bank = RirBank((prepare_rir(_rir({0: 1.0, 5: 0.5}, 40)),
                    prepare_rir(_rir({0: 1.0, 17: -0.7, 30: 0.3}, 40))), ("a", "b"))
    cfg = AugmentationConfig(p_noise=0.0, p_reverb=1.0, p_noise_reverb=0.0, p_none=0.0)
    corruptor = Corruptor(cfg, rir_bank=bank)
    rng = np.random.default_rng(0)
    x = _tone(400)
    seen = set()
    for _ in range(12):
        out, info = corruptor.corrupt(x, rng)
        seen.add(info.rir_index)
        np.testing.assert_allclose(out, reverberate(x, bank.rirs[info.rir_index]), atol=2e-6)
    assert seen == {0, 1}


# ---- multi-channel RIR banks ---------------------------------------------------------------


def test_channel_bank_rirs_are_the_first_channel_of_each_file(tmp_path: Path) -> None:
    """With channels="one", ``rirs[i]`` is file i's first channel (as documented), each
    channel aligned on its own direct path."""
    stereo = np.zeros((64, 2), np.float32)
    stereo[[10, 30], 0] = [1.0, 0.5]
    stereo[[14, 40], 1] = [0.8, -0.4]
    folder = tmp_path / "rir"
    folder.mkdir()
    sf.write(folder / "room.wav", stereo, SR, subtype="FLOAT")
    bank = RirBank.from_folder(folder, channels="one")
    assert len(bank) == 1 and len(bank.channels[0]) == 2
    ch0 = _rir({0: 1.0, 20: 0.5}, 54) / math.sqrt(1.25)
    ch1 = _rir({0: 0.8, 26: -0.4}, 50) / math.sqrt(0.8)
    np.testing.assert_allclose(bank.channels[0][0], ch0, atol=1e-6)
    np.testing.assert_allclose(bank.channels[0][1], ch1, atol=1e-6)
    np.testing.assert_array_equal(bank.rirs[0], bank.channels[0][0])


# ---- "noise+reverb" with noise_first --------------------------------------------------------


def test_noise_first_adds_noise_to_dry_speech_then_reverberates_both() -> None:
    """noise_first: the output is reverberate(mix_at_snr(dry, noise, snr), rir), with the
    random draws consumed in the documented order (kind, RIR, SNR, white noise)."""
    h = prepare_rir(_rir({0: 1.0, 7: 0.6, 25: -0.3}, 60))
    bank = RirBank((h,), ("r",))
    cfg = AugmentationConfig(p_noise=0.0, p_reverb=0.0, p_noise_reverb=1.0, p_none=0.0,
                             noise_reverb_order="noise_first", snr_min=0.0, snr_max=10.0)
    corruptor = Corruptor(cfg, rir_bank=bank)
    x = _tone(800, seed=3)
    for seed in range(3):
        out, info = corruptor.corrupt(x, np.random.default_rng(seed))
        assert info.kind == "noise+reverb" and info.rir_index == 0
        replay = np.random.default_rng(seed)
        replay.choice(4, p=corruptor.probabilities())
        replay.integers(0, 1)
        snr = float(replay.uniform(0.0, 10.0))
        noise = replay.standard_normal(x.size, dtype=np.float32)
        assert info.snr_db == snr
        expected = reverberate(mix_at_snr(x, noise, snr), h)
        np.testing.assert_allclose(out, expected, atol=2e-6)
        assert not np.allclose(out, mix_at_snr(x, noise, snr), atol=1e-3)  # reverberated
