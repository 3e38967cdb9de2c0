"""Tests for robustdistill.augment: SNR, alignment, batch padding, seeding, schedule, errors."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import correlate, correlation_lags

import robustdistill.augment.signals as augment_signals
from robustdistill.audio import AudioError, load_audio
from robustdistill.augment import (
    KINDS,
    AugmentationConfig,
    Corruptor,
    NoiseBank,
    RirBank,
    mix_at_snr,
    noise_segment,
    prepare_rir,
    reverberate,
    simulate_rir_bank,
    white_if_silent,
)

SR = 16_000
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def measured_snr(clean: np.ndarray, mixed: np.ndarray) -> float:
    clean = clean.astype(np.float64)
    noise = mixed.astype(np.float64) - clean
    return 10 * math.log10(np.mean(clean**2) / np.mean(noise**2))


def speech_like(n: int, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonics plus a little noise: non-white, with loud and quiet parts."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t)) ** 2
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450, 900), 1))
    return (0.1 * envelope * tone + 0.005 * rng.standard_normal(n)).astype(np.float32)


def write(path: Path, data: np.ndarray, sr: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr)
    return path


@pytest.fixture
def noise_dir(tmp_path: Path) -> Path:
    """Two noise files at other rates and channel counts (one nested, one stereo)."""
    rng = np.random.default_rng(1)
    brown = np.cumsum(rng.standard_normal(8_000)) * 0.01
    brown = (brown - brown.mean()) / np.abs(brown).max() * 0.5
    write(tmp_path / "noise" / "brown_8k.wav", brown.astype(np.float32), 8_000)
    hum = 0.3 * np.sin(2 * np.pi * 50 * np.arange(44_100 * 2) / 44_100)
    stereo = np.stack([hum, 0.5 * rng.standard_normal(hum.size) * 0.1], axis=1)
    write(tmp_path / "noise" / "sub" / "hum_44k.flac", stereo.astype(np.float32), 44_100)
    return tmp_path / "noise"


def synthetic_rir(delay: int = 50, length: int = 800, seed: int = 0) -> np.ndarray:
    """Unit direct path at ``delay`` followed by an exponentially decaying random tail."""
    rng = np.random.default_rng(seed)
    rir = np.zeros(length)
    rir[delay] = 1.0
    tail = np.arange(length - delay - 1)
    rir[delay + 1 :] = 0.3 * rng.standard_normal(tail.size) * np.exp(-tail / 150)
    return rir


def tiny_corruptor(**overrides) -> Corruptor:
    """A corruptor with two synthetic RIRs (no simulation) and white noise."""
    cfg = AugmentationConfig(**overrides)
    bank = RirBank(
        tuple(prepare_rir(synthetic_rir(10 + 20 * i, 300, seed=i)) for i in range(2)),
        ("a", "b"),
    )
    return Corruptor(cfg, noise_bank=None, rir_bank=bank)


# ---- mixing at an SNR ----------------------------------------------------------------------


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.3, 20.0])
def test_mix_at_snr_is_exact_for_white_and_file_noise(noise_dir: Path, snr_db: float) -> None:
    clean = speech_like(16_000)
    rng = np.random.default_rng(0)
    white = rng.standard_normal(40_000).astype(np.float32)
    bank = NoiseBank.from_folder(noise_dir)
    assert len(bank) == 2
    for noise in (white, *bank.waveforms):
        mixed = mix_at_snr(clean, noise, snr_db, rng)
        assert mixed.shape == clean.shape and mixed.dtype == np.float32
        assert abs(measured_snr(clean, mixed) - snr_db) < 0.01


def test_mix_at_snr_tiles_short_noise_and_needs_rng_for_segments() -> None:
    clean = speech_like(5_000)
    short = np.random.default_rng(3).standard_normal(700)
    mixed = mix_at_snr(clean, short, 3.0, np.random.default_rng(0))
    assert abs(measured_snr(clean, mixed) - 3.0) < 0.01
    with pytest.raises(ValueError, match="rng"):
        mix_at_snr(clean, short, 3.0)
    same_length = np.ones(5_000)
    expected = clean + math.sqrt(np.mean(clean.astype(np.float64) ** 2) / 10**0.5)
    np.testing.assert_allclose(mix_at_snr(clean, same_length, 5.0), expected, atol=1e-7)


def test_noise_segment_is_contiguous_or_wraps() -> None:
    rng = np.random.default_rng(0)
    noise = np.arange(5, dtype=np.float32)
    tiled = noise_segment(noise, 12, rng)
    start = int(tiled[0])
    np.testing.assert_array_equal(tiled, (start + np.arange(12)) % 5)
    long = np.arange(100, dtype=np.float32)
    for _ in range(50):
        seg = noise_segment(long, 30, rng)
        assert seg.size == 30 and seg[-1] - seg[0] == 29  # contiguous, inside the file


def test_silent_speech_is_returned_unchanged_without_nan(caplog) -> None:
    silent = np.zeros(1_000, dtype=np.float32)
    with caplog.at_level(logging.DEBUG, logger="robustdistill.augment"):
        out = mix_at_snr(silent, np.ones(1_000), 0.0)
    np.testing.assert_array_equal(out, silent)
    assert "silent speech" in caplog.text
    corruptor = tiny_corruptor(p_noise=1.0, p_reverb=0.0, p_noise_reverb=0.0, p_none=0.0)
    out, info = corruptor.corrupt(silent, np.random.default_rng(0))
    np.testing.assert_array_equal(out, silent)
    assert info.kind == "noise" and info.snr_db is None


def test_silent_noise_segment_becomes_seeded_white_noise(caplog) -> None:
    noise = np.array([0.0, 0.0, 0.0, 0.5, -0.5], dtype=np.float32)
    kept, replaced = white_if_silent(noise, np.random.default_rng(7), "n.wav")
    assert kept is noise and not replaced
    kept, replaced = white_if_silent(noise, np.random.default_rng(7), "n.wav", real=4)
    assert kept is noise and not replaced
    from robustdistill.augment import noise as noise_module

    noise_module._SAID_SILENT.discard("n.wav")  # another test may have used the name
    with caplog.at_level(logging.WARNING, logger="robustdistill.augment"):
        white, replaced = white_if_silent(noise, np.random.default_rng(7), "n.wav", real=3)
        assert replaced and "silent segment of n.wav" in caplog.text
        caplog.clear()
        assert white_if_silent(noise, np.random.default_rng(7), "n.wav", real=3)[1]
    assert "silent segment" not in caplog.text  # said once per file, not at every draw
    np.testing.assert_array_equal(
        white, np.random.default_rng(7).standard_normal(5, dtype=np.float32)
    )
    # The corruptor uses the same fallback: a recording silent but for its last sample.
    wave = np.zeros(4_000, dtype=np.float32)
    wave[-1] = 1.0
    corruptor = Corruptor(
        AugmentationConfig(p_noise=1.0, p_reverb=0.0, p_noise_reverb=0.0, p_none=0.0,
                           noise_file_prob=1.0),
        noise_bank=NoiseBank((wave,), ("n.wav",)),
    )
    x = speech_like(1_000)
    out, info = corruptor.corrupt(x, np.random.default_rng(3))
    assert info.noise_index is None
    assert measured_snr(x, out) == pytest.approx(info.snr_db, abs=1e-3)
    np.testing.assert_array_equal(out, corruptor.corrupt(x, np.random.default_rng(3))[0])


def test_bad_audio_raises_audio_error() -> None:
    bad = speech_like(1_000)
    bad[10] = np.nan
    corruptor = tiny_corruptor()
    with pytest.raises(AudioError, match="NaN"):
        mix_at_snr(bad, np.ones(1_000), 5.0)
    with pytest.raises(AudioError, match="NaN"):
        reverberate(bad, synthetic_rir())
    with pytest.raises(AudioError, match="NaN"):
        corruptor.corrupt(bad, np.random.default_rng(0))
    with pytest.raises(AudioError, match="row 1"):
        batch = torch.zeros(2, 1_000)
        batch[1] = torch.from_numpy(bad)
        corruptor.corrupt_batch(batch, [1_000, 1_000], np.random.default_rng(0))
    with pytest.raises(AudioError, match="silent"):
        mix_at_snr(speech_like(100), np.zeros(100), 5.0)
    with pytest.raises(AudioError, match="all zeros"):
        prepare_rir(np.zeros(10))


# ---- reverberation -------------------------------------------------------------------------


def test_reverberation_keeps_length_and_direct_path_alignment() -> None:
    x = np.random.default_rng(5).standard_normal(4_000).astype(np.float32)
    y = reverberate(x, synthetic_rir(delay=50))
    assert y.shape == x.shape and y.dtype == np.float32
    xcorr = correlate(y, x, mode="full")
    assert correlation_lags(y.size, x.size)[np.argmax(xcorr)] == 0
    # Without the alignment the same RIR delays the output by 50 samples.
    naive = np.convolve(x, synthetic_rir(delay=50))[: x.size]
    assert correlation_lags(y.size, x.size)[np.argmax(correlate(naive, x))] == 50


def test_reverberate_matches_hand_computed_output() -> None:
    x = np.random.default_rng(6).standard_normal(300).astype(np.float32)
    rir = np.zeros(100)
    rir[20], rir[50], rir[60] = 0.5, 1.0, 0.5  # a weaker direct path, then a stronger echo
    delayed = np.concatenate([np.zeros(10), x[:-10]])
    # Default: the direct path (first tap within 20 dB of the largest) goes to index 0.
    later = np.concatenate([np.zeros(30), x[:-30]])
    latest = np.concatenate([np.zeros(40), x[:-40]])
    expected = (0.5 * x + later + 0.5 * latest) / math.sqrt(1.5)
    np.testing.assert_allclose(reverberate(x, rir), expected, atol=1e-5)
    # direct_path_db=0 aligns on the largest tap and drops what precedes it.
    expected_peak = (x + 0.5 * delayed) / math.sqrt(1.25)
    np.testing.assert_allclose(reverberate(x, rir, direct_path_db=0.0), expected_peak, atol=1e-5)
    # Unit-peak normalisation, and a negative RIR keeps the speech's polarity.
    np.testing.assert_allclose(
        reverberate(x, -rir, "peak", direct_path_db=0.0), x + 0.5 * delayed, atol=1e-5
    )


def test_prepared_rir_convolver_matches_reverberate_and_reuses_spectra() -> None:
    from robustdistill.augment.rooms import PreparedRirConvolver

    rng = np.random.default_rng(9)
    h = prepare_rir(synthetic_rir(delay=12))
    convolver = PreparedRirConvolver(max_entries=2)
    for size in (300, 300, 4_000, 300):  # a shorter signal than the RIR uses fewer taps
        x = rng.standard_normal(size).astype(np.float32)
        got = convolver.convolve(x, h, key=("room", 0))
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got, reverberate(x, h), atol=2e-5)
    # 300 samples: computed once, then reused; 4000 samples: another FFT size
    assert (convolver.misses, convolver.hits) == (2, 2)
    convolver.convolve(x, h, key=("other", 1))  # a third entry evicts the oldest
    assert len(convolver._spectra) == 2
    with pytest.raises(AudioError):
        convolver.convolve(np.full(10, np.nan, dtype=np.float32), h, key=("room", 0))


def test_corruptor_prepares_a_bank_built_with_other_settings() -> None:
    """A bank prepared with unit peak, used by a config asking unit energy: the corruptor
    normalises it once, so its output equals reverberate's with the config's settings."""
    raw = 2.0 * synthetic_rir(delay=30)
    bank = RirBank((prepare_rir(raw, "peak"),), ("peaky",))
    config = AugmentationConfig(p_noise=0.0, p_reverb=1.0, p_noise_reverb=0.0, p_none=0.0)
    corruptor = Corruptor(config, rir_bank=bank)
    x = np.random.default_rng(3).standard_normal(2_000).astype(np.float32)
    noisy, info = corruptor.corrupt(x, np.random.default_rng(0))
    assert info.kind == "reverb"
    np.testing.assert_allclose(noisy, reverberate(x, raw), atol=2e-5)


def test_prepare_rir_aligns_normalises_and_is_idempotent() -> None:
    rir = 3.0 * synthetic_rir(delay=37)
    prepared = prepare_rir(rir)
    assert prepared.size == rir.size - 37
    assert np.argmax(np.abs(prepared)) == 0 and prepared[0] > 0
    assert math.isclose(float(np.sum(prepared.astype(np.float64) ** 2)), 1.0, rel_tol=1e-5)
    np.testing.assert_allclose(prepare_rir(prepared), prepared, rtol=1e-6)
    with pytest.raises(ValueError, match="normalization"):
        prepare_rir(rir, "rms")  # type: ignore[arg-type]


def test_rir_bank_from_folder_resamples_downmixes_and_aligns(tmp_path: Path) -> None:
    rir = synthetic_rir(delay=441, length=4_410)  # 10 ms delay at 44.1 kHz
    stereo = np.stack([rir, rir], axis=1).astype(np.float32) * 0.5
    write(tmp_path / "rirs" / "room.wav", stereo, 44_100)
    bank = RirBank.from_folder(tmp_path / "rirs")
    assert len(bank) == 1
    h = bank.rirs[0]
    assert abs(h.size - (4_410 - 441) * SR / 44_100) <= 8  # resampled, delay removed
    assert np.argmax(np.abs(h)) <= 1  # band-limited impulse: onset at most one sample early
    assert math.isclose(float(np.sum(h.astype(np.float64) ** 2)), 1.0, rel_tol=1e-5)


def test_simulated_room_bank_is_seeded_and_aligned() -> None:
    a = simulate_rir_bank(3, (0.2, 0.6), seed=7, max_order=6)
    b = simulate_rir_bank(3, (0.2, 0.6), seed=7, max_order=6)
    c = simulate_rir_bank(3, (0.2, 0.6), seed=8, max_order=6)
    assert len(a) == 3 and a.names == b.names
    for ha, hb in zip(a.rirs, b.rirs, strict=True):
        np.testing.assert_array_equal(ha, hb)
        assert np.argmax(np.abs(ha)) <= 2 and ha[np.argmax(np.abs(ha[:16]))] > 0
        assert math.isclose(float(np.sum(ha.astype(np.float64) ** 2)), 1.0, rel_tol=1e-5)
    assert a.names != c.names
    with pytest.raises(ValueError, match="rt60_range"):
        simulate_rir_bank(1, (0.5, 0.2))


# ---- banks: loading once, skipping, errors -------------------------------------------------


def test_folders_without_audio_raise_file_not_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty"))):
        NoiseBank.from_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="empty"):
        Corruptor.from_config(AugmentationConfig(rir_dir=str(tmp_path / "empty")))
    with pytest.raises(FileNotFoundError, match="missing"):
        Corruptor.from_config(AugmentationConfig(noise_dir=str(tmp_path / "missing")))


def test_unreadable_noise_file_is_skipped_but_empty_bank_fails(
    noise_dir: Path, tmp_path: Path, caplog
) -> None:
    (noise_dir / "broken.wav").write_bytes(b"RIFF not really a wav file")
    with caplog.at_level(logging.WARNING, logger="robustdistill.augment"):
        bank = NoiseBank.from_folder(noise_dir)
    assert len(bank) == 2 and "broken.wav" in caplog.text
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "broken.wav").write_bytes(b"garbage")
    write(only_bad / "silent.wav", np.zeros(100, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="none of the 2"):
        NoiseBank.from_folder(only_bad)


def test_noise_files_are_loaded_once(noise_dir: Path, monkeypatch) -> None:
    calls = []

    def counting_load(path, target_sr=SR):
        calls.append(path)
        return load_audio(path, target_sr)

    monkeypatch.setattr(augment_signals, "load_audio", counting_load)
    cfg = AugmentationConfig(
        noise_dir=str(noise_dir), p_noise=1.0, p_reverb=0.0, p_noise_reverb=0.0, p_none=0.0
    )
    corruptor = Corruptor.from_config(cfg)
    rng = np.random.default_rng(0)
    for _ in range(20):
        corruptor.corrupt(speech_like(800), rng)
    assert len(calls) == 2


# ---- the corruptor -------------------------------------------------------------------------


@pytest.mark.parametrize("file_prob", [0.0, 1.0])
def test_corruptor_noise_meets_drawn_snr(noise_dir: Path, file_prob: float) -> None:
    cfg = AugmentationConfig(
        noise_dir=str(noise_dir),
        noise_file_prob=file_prob,
        p_noise=1.0,
        p_reverb=0.0,
        p_noise_reverb=0.0,
        p_none=0.0,
        snr_min=-5.0,
        snr_max=5.0,
    )
    corruptor = Corruptor.from_config(cfg)
    clean = speech_like(16_000)
    rng = np.random.default_rng(0)
    for _ in range(5):
        noisy, info = corruptor.corrupt(clean, rng)
        assert info.kind == "noise" and info.rir_index is None
        assert (info.noise_index is None) == (file_prob == 0.0)
        assert -5.0 <= info.snr_db <= 5.0
        assert abs(measured_snr(clean, noisy) - info.snr_db) < 0.01


def test_noise_and_reverb_measures_snr_against_reverberant_speech() -> None:
    corruptor = tiny_corruptor(p_noise=0.0, p_reverb=0.0, p_noise_reverb=1.0, p_none=0.0)
    clean = speech_like(8_000)
    noisy, info = corruptor.corrupt(clean, np.random.default_rng(1))
    assert info.kind == "noise+reverb" and info.rir_index is not None
    wet = reverberate(clean, corruptor.rir_bank.rirs[info.rir_index])
    assert abs(measured_snr(wet, noisy) - info.snr_db) < 0.01


def test_batch_keeps_shape_dtype_and_zero_padding() -> None:
    corruptor = tiny_corruptor()
    lengths = torch.tensor([3_000, 1_234, 0, 2_500])
    batch = torch.zeros(4, 3_000, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        batch[b, :n] = torch.from_numpy(speech_like(n, seed=b)) if n else 0
    batch[1, 2_000:] = 0.7  # garbage in the padding must not leak into the output
    rng = np.random.default_rng(0)
    for _ in range(8):  # enough draws to see every kind
        noisy, infos = corruptor.corrupt_batch(batch, lengths, rng)
        assert noisy.shape == batch.shape and noisy.dtype == batch.dtype
        assert len(infos) == 4 and infos[2].kind == "none"
        for b, n in enumerate(lengths.tolist()):
            assert torch.all(noisy[b, n:] == 0)
            if infos[b].kind == "none":
                torch.testing.assert_close(noisy[b, :n], batch[b, :n].float().double())
    with pytest.raises(ValueError, match="lengths"):
        corruptor.corrupt_batch(batch, [3_000, 10, 0, 3_001], rng)
    with pytest.raises(ValueError, match="floating"):
        corruptor.corrupt_batch(batch.long(), lengths, rng)


def test_same_seed_identical_different_seed_differs() -> None:
    corruptor = tiny_corruptor()
    batch = torch.from_numpy(np.stack([speech_like(2_000, s) for s in range(6)]))
    lengths = torch.full((6,), 2_000)

    def run(seed: int):
        return corruptor.corrupt_batch(batch, lengths, np.random.default_rng(seed))

    (a, info_a), (b, info_b), (c, _) = run(11), run(11), run(12)
    assert torch.equal(a, b) and info_a == info_b
    assert not torch.equal(a, c)


def test_a_generator_per_row_makes_each_row_depend_on_its_own_generator_alone() -> None:
    """Validation's path: row b drawn from rngs[b] is corrupt(row b, rngs[b]), whatever the
    other rows or the row's place in the batch; one shared generator stays the training path."""
    corruptor = tiny_corruptor()
    rows = [speech_like(2_000, s) for s in range(3)]
    lengths = torch.tensor([2_000, 1_500, 2_000])
    batch = torch.from_numpy(np.stack(rows))
    batch[1, 1_500:] = 0
    noisy, infos = corruptor.corrupt_batch(
        batch, lengths, [np.random.default_rng([5, b]) for b in range(3)])
    for b, n in enumerate(lengths.tolist()):
        alone, info = corruptor.corrupt(rows[b][:n], np.random.default_rng([5, b]))
        assert torch.equal(noisy[b, :n], torch.from_numpy(alone)) and infos[b] == info
    # the same rows in another order and batch size: the same corruption per row
    pair, _ = corruptor.corrupt_batch(batch[[2, 0]], lengths[[2, 0]],
                                      [np.random.default_rng([5, 2]), np.random.default_rng([5, 0])])
    assert torch.equal(pair[0], noisy[2]) and torch.equal(pair[1], noisy[0])
    with pytest.raises(ValueError, match="one per row"):
        corruptor.corrupt_batch(batch, lengths, [np.random.default_rng(0)] * 2)


def test_kind_probabilities_are_respected() -> None:
    probs = (0.1, 0.2, 0.3, 0.4)
    corruptor = tiny_corruptor(
        p_noise=probs[0], p_reverb=probs[1], p_noise_reverb=probs[2], p_none=probs[3]
    )
    corruptor.noise_bank = NoiseBank((np.ones(50, dtype=np.float32),), ("dc",))
    rng = np.random.default_rng(0)
    x = speech_like(64)
    infos = [corruptor.corrupt(x, rng)[1] for _ in range(4_000)]
    counts = {k: sum(i.kind == k for i in infos) / len(infos) for k in KINDS}
    for kind, p in zip(KINDS, probs, strict=True):
        assert abs(counts[kind] - p) < 0.03, (kind, counts)
    noisy = [i for i in infos if i.snr_db is not None]
    from_file = sum(i.noise_index is not None for i in noisy) / len(noisy)
    assert abs(from_file - 0.7) < 0.04
    rirs = [i.rir_index for i in infos if i.rir_index is not None]
    assert set(rirs) == {0, 1}


def test_curriculum_endpoints_and_schedule() -> None:
    corruptor = tiny_corruptor(
        p_noise=0.1, p_reverb=0.2, p_noise_reverb=0.3, p_none=0.4, curriculum_steps=100
    )
    assert corruptor.probabilities(0) == pytest.approx((0.4, 0.0, 0.0, 0.6))
    assert corruptor.probabilities(50) == pytest.approx((0.25, 0.1, 0.15, 0.5))
    assert corruptor.probabilities(100) == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert corruptor.probabilities(10_000) == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert corruptor.snr_range(0) == (20.0, 20.0)
    assert corruptor.snr_range(25) == pytest.approx((15.0, 20.0))
    assert corruptor.snr_range(100) == (0.0, 20.0)
    rng = np.random.default_rng(0)
    at_start = [corruptor.corrupt(speech_like(64), rng, step=0)[1] for _ in range(200)]
    assert all(i.rir_index is None for i in at_start)
    assert {i.snr_db for i in at_start if i.snr_db is not None} == {20.0}
    with pytest.raises(ValueError, match="step"):
        corruptor.corrupt(speech_like(64), rng)
    without = tiny_corruptor(p_noise=0.1, p_reverb=0.2, p_noise_reverb=0.3, p_none=0.4)
    assert without.probabilities() == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert without.snr_range() == (0.0, 20.0)


def test_disabled_corruptor_returns_clean_copy() -> None:
    corruptor = Corruptor.from_config(AugmentationConfig(enabled=False))
    assert corruptor.rir_bank is None  # no room simulated
    x = speech_like(500)
    out, info = corruptor.corrupt(x, np.random.default_rng(0))
    np.testing.assert_array_equal(out, x)
    assert info.kind == "none"


def test_from_config_simulates_rooms_when_no_rir_dir() -> None:
    cfg = AugmentationConfig(num_simulated_rooms=2, room_max_order=4, rt60_max=0.4)
    a, b = Corruptor.from_config(cfg, seed=3), Corruptor.from_config(cfg, seed=3)
    assert len(a.rir_bank) == 2 and a.noise_bank is None
    for ha, hb in zip(a.rir_bank.rirs, b.rir_bank.rirs, strict=True):
        np.testing.assert_array_equal(ha, hb)


def test_probabilities_summing_to_one_within_tolerance_are_normalised() -> None:
    # Accepted by the config (|sum - 1| = 1e-7 <= 1e-6) but beyond numpy's choice tolerance.
    corruptor = tiny_corruptor(p_noise=0.3333333, p_reverb=0.0, p_noise_reverb=0.3333333,
                               p_none=0.3333333)
    probs = corruptor.probabilities()
    assert probs == pytest.approx((1 / 3, 0.0, 1 / 3, 1 / 3), abs=1e-15)
    rng = np.random.default_rng(0)
    kinds = {corruptor.corrupt(speech_like(64), rng)[1].kind for _ in range(30)}
    assert kinds == {"noise", "noise+reverb", "none"}


# ---- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"p_noise": -0.1, "p_none": 0.6}, "p_noise"),
        ({"p_reverb": float("nan")}, "p_reverb"),
        ({"p_none": 0.3}, "sum to 1"),
        ({"noise_file_prob": 1.5}, "noise_file_prob"),
        ({"snr_min": 30.0}, "snr_min"),
        ({"rt60_min": 0.0}, "rt60_min"),
        ({"rt60_max": 0.1}, "rt60_max"),
        ({"rir_normalization": "rms"}, "rir_normalization"),
        ({"rir_direct_path_db": -3.0}, "rir_direct_path_db"),
        ({"curriculum_steps": -1}, "curriculum_steps"),
        ({"num_simulated_rooms": 0}, "num_simulated_rooms"),
    ],
)
def test_config_validation_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AugmentationConfig(**overrides)


def test_config_parses_with_hf_argument_parser() -> None:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(AugmentationConfig)
    (default,) = parser.parse_args_into_dataclasses([])
    assert default == AugmentationConfig() and default.noise_dir is None
    (cfg,) = parser.parse_args_into_dataclasses(
        ["--noise_dir", "/n", "--p_noise", "0.5", "--p_none", "0.0", "--enabled", "false"]
    )
    assert cfg.noise_dir == "/n" and cfg.p_noise == 0.5 and cfg.enabled is False
    with pytest.raises(ValueError, match="sum to 1"):
        parser.parse_dict({"p_noise": 0.9})
    with pytest.raises(ValueError, match="p_nosie"):
        parser.parse_dict({"p_nosie": 0.9})


# ---- real recordings -----------------------------------------------------------------------


@pytest.mark.skipif(
    not (SHARED / "noise").is_dir() or not (SHARED / "rir").is_dir(),
    reason="../shared/data/noise and ../shared/data/rir are not available",
)
def test_real_noise_and_rir_folders() -> None:
    cfg = AugmentationConfig(noise_dir=str(SHARED / "noise"), rir_dir=str(SHARED / "rir"))
    corruptor = Corruptor.from_config(cfg)
    assert len(corruptor.noise_bank) == 4 and len(corruptor.rir_bank) == 4
    for h in corruptor.rir_bank.rirs:  # 44.1 kHz stereo -> 16 kHz mono, aligned, unit energy
        assert h.ndim == 1 and h.size < 5.1 * SR
        assert np.abs(h[0]) >= 0.1 * np.abs(h).max()
        assert math.isclose(float(np.sum(h.astype(np.float64) ** 2)), 1.0, rel_tol=1e-4)
    speech_files = sorted((SHARED / "librispeech-mini" / "train-clean-100").glob("*.flac"))
    clean = load_audio(speech_files[0])[: 2 * SR] if speech_files else speech_like(2 * SR)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(24):
        noisy, info = corruptor.corrupt(clean, rng)
        seen.add(info.kind)
        assert noisy.shape == clean.shape and np.isfinite(noisy).all()
        if info.snr_db is not None:
            bank = corruptor.rir_bank
            reference = (
                reverberate(clean, bank.channels[info.rir_index][info.rir_channel])
                if info.rir_index is not None
                else clean
            )
            assert abs(measured_snr(reference, noisy) - info.snr_db) < 0.1
    assert seen == set(KINDS)
