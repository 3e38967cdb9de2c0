"""Noise and RIR banks from folders: resampling to the requested rate, names aligned with
waveforms, silent channels, file suffixes (mutation-testing round 3, reviewer b)."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from test_augment import SR, noise_dir, write  # noqa: F401 (a fixture)

from robustdistill.audio import load_audio
from robustdistill.augment import NoiseBank, RirBank
from robustdistill.augment.signals import _load_channels


def test_noise_bank_is_resampled_to_the_requested_rate(noise_dir):  # noqa: F811
    """brown_8k.wav: 8000 samples at 8 kHz; sub/hum_44k.flac: 88200 at 44.1 kHz (stereo)."""
    files = [noise_dir / "brown_8k.wav", noise_dir / "sub" / "hum_44k.flac"]
    for rate, lengths in ((SR, [16_000, 32_000]), (8_000, [8_000, 16_000])):
        bank = NoiseBank.from_folder(noise_dir, sample_rate=rate)
        assert bank.names == tuple(str(f) for f in files)
        assert [w.size for w in bank.waveforms] == lengths
        for wave, path in zip(bank.waveforms, files, strict=True):
            assert wave.dtype == np.float32
            np.testing.assert_array_equal(wave, load_audio(path, target_sr=rate))


def test_noise_bank_names_stay_aligned_when_files_are_skipped(tmp_path):
    rng = np.random.default_rng(0)
    a = (0.1 * rng.standard_normal(1_000)).astype(np.float32)
    d = (0.2 * rng.standard_normal(1_500)).astype(np.float32)
    write(tmp_path / "a.wav", a, SR)
    (tmp_path / "b.wav").write_bytes(b"RIFF not a wav")
    write(tmp_path / "c.wav", np.zeros(800, np.float32), SR)
    write(tmp_path / "d.wav", d, SR)
    bank = NoiseBank.from_folder(tmp_path)
    assert bank.names == (str(tmp_path / "a.wav"), str(tmp_path / "d.wav"))
    assert [w.size for w in bank.waveforms] == [1_000, 1_500]
    np.testing.assert_allclose(bank.waveforms[1], d, atol=1e-4)  # 16-bit PCM


def test_noise_bank_takes_upper_case_suffixes(tmp_path):
    write(tmp_path / "LOUD.WAV", np.full(500, 0.25, np.float32), SR)
    write(tmp_path / "quiet.Flac", np.full(700, 0.125, np.float32), SR)
    bank = NoiseBank.from_folder(tmp_path)
    assert [w.size for w in bank.waveforms] == [500, 700]


def test_silent_channels_and_all_silent_files_are_dropped_from_channel_banks(tmp_path):
    stereo = np.zeros((64, 2), np.float32)
    stereo[[10, 30], 0] = [1.0, 0.5]  # channel 1 silent
    sf.write(tmp_path / "a_half_silent.wav", stereo, SR, subtype="FLOAT")
    sf.write(tmp_path / "b_silent.wav", np.zeros((64, 2), np.float32), SR, subtype="FLOAT")
    three = np.zeros((64, 3), np.float32)
    three[5, 0], three[9, 2] = 1.0, -0.5  # channel 1 silent
    sf.write(tmp_path / "c_three.wav", three, SR, subtype="FLOAT")

    per_file, names = _load_channels(tmp_path, SR, "RIR")
    assert names == [str(tmp_path / "a_half_silent.wav"), str(tmp_path / "c_three.wav")]
    assert [len(c) for c in per_file] == [1, 2]
    np.testing.assert_array_equal(per_file[0][0], stereo[:, 0])
    np.testing.assert_array_equal(per_file[1][1], three[:, 2])

    bank = RirBank.from_folder(tmp_path, channels="one")
    assert len(bank) == 2 and [len(c) for c in bank.channels] == [1, 2]


def test_file_or_white_noise_draws_follow_the_documented_order():
    """rng order: kind, recording-or-white, SNR, then recording index and offset (or white
    noise); replayed by hand with a copy of the generator, both branches taken."""
    from robustdistill.augment import AugmentationConfig, Corruptor, mix_at_snr, noise_segment

    rng0 = np.random.default_rng(1)
    bank = NoiseBank(tuple((0.1 * rng0.standard_normal(n)).astype(np.float32)
                           for n in (900, 3000, 2500)), ("a", "b", "c"))
    cfg = AugmentationConfig(p_noise=1.0, p_reverb=0.0, p_noise_reverb=0.0, p_none=0.0,
                             noise_file_prob=0.5, snr_min=-5.0, snr_max=15.0)
    corruptor = Corruptor(cfg, noise_bank=bank)
    x = (0.2 * np.sin(np.arange(2000) / 5.0)).astype(np.float32)
    branches = set()
    for seed in range(12):
        out, info = corruptor.corrupt(x, np.random.default_rng(seed))
        r = np.random.default_rng(seed)
        assert int(r.choice(4, p=corruptor.probabilities())) == 0  # "noise"
        use_file = r.random() < 0.5
        snr = float(r.uniform(-5.0, 15.0))
        if use_file:
            index = int(r.integers(0, 3))
            noise = noise_segment(bank.waveforms[index], x.size, r)
        else:
            index, noise = None, r.standard_normal(x.size, dtype=np.float32)
        assert (info.kind, info.snr_db, info.noise_index) == ("noise", snr, index)
        np.testing.assert_array_equal(out, mix_at_snr(x, noise, snr))
        branches.add(use_file)
    assert branches == {True, False}
