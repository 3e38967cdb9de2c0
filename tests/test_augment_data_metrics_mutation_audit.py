"""Mutation-audit additions (session 13) for augmentation, data and metrics: behaviours that
a plausible bug changed without any test failing. Each test asserts hand-computed values, on real audio from
``../shared/data`` where the behaviour is about real signals (skipped when it is absent)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robustdistill.audio import load_audio
from robustdistill.augment import AugmentationConfig, Corruptor, RirBank, prepare_rir

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _real_speech(seconds: float) -> np.ndarray:
    """The first ``seconds`` of a real LibriSpeech utterance (skips without shared data)."""
    path = SHARED_DATA / "librispeech-mini" / "train-clean-100" / "103-1240-0000.flac"
    if not path.is_file():
        pytest.skip("../shared/data is absent (real audio for this test)")
    return load_audio(path)[: int(seconds * 16_000)]


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean = clean.astype(np.float64)
    noise = noisy.astype(np.float64) - clean
    return 10.0 * math.log10(np.mean(clean**2) / np.mean(noise**2))


# ---- augment: a padded batch is corrupted on each row's real samples only ------------------


def test_batch_rows_meet_their_snr_on_the_real_samples_not_the_padded_row():
    # Rows of real speech of 1.0 s, 0.5 s and 0.25 s padded to 1.0 s, noise only at an SNR in
    # [0, 10] dB. The SNR is defined over each row's real samples: 10 log10(mean(s^2) /
    # mean(n^2)) over those samples equals the drawn snr_db. Mixing the padded row instead
    # measures the speech power over S samples (the zeros included) and spreads the noise over
    # them: the real part then sits at snr_db + 10 log10(S / n) dB (3.01 dB for a half row).
    speech = _real_speech(1.0)
    lengths = [16_000, 8_000, 4_000]
    batch = torch.zeros(3, 16_000)
    for b, n in enumerate(lengths):
        batch[b, :n] = torch.from_numpy(speech[:n])
    corruptor = Corruptor(AugmentationConfig(p_noise=1.0, p_reverb=0.0, p_noise_reverb=0.0,
                                             p_none=0.0, snr_min=0.0, snr_max=10.0))
    noisy, infos = corruptor.corrupt_batch(batch, torch.tensor(lengths),
                                           np.random.default_rng(3))
    for b, n in enumerate(lengths):
        assert infos[b].kind == "noise"
        assert _snr_db(speech[:n], noisy[b, :n].numpy()) == pytest.approx(infos[b].snr_db,
                                                                           abs=0.01)
        assert torch.all(noisy[b, n:] == 0)


def test_convolver_spectrum_of_one_room_is_not_reused_for_a_crop_needing_more_taps():
    # A RIR longer than the crops: direct path 1 at 0 and a reflection 0.5 at 4950 samples,
    # energy-normalised by sqrt(1.25). Crops of 4900 then 5000 samples both use FFTs of 10000
    # points, but the first needs 4900 taps and the second 5000: reusing the first's spectrum
    # drops the reflection, which reaches samples 4950..4999 of the longer crop:
    # out[4950 + j] = (x[4950 + j] + 0.5 x[j]) / sqrt(1.25).
    from robustdistill.augment.rooms import PreparedRirConvolver

    h = np.zeros(6000)
    h[0], h[4950] = 1.0, 0.5
    h = prepare_rir(h)
    x = _real_speech(1.0)
    convolver = PreparedRirConvolver()
    convolver.convolve(x[:4900], h, key=(0, None))
    out = convolver.convolve(x[:5000], h, key=(0, None))
    j = np.arange(50)
    expected = (x[4950 + j].astype(np.float64) + 0.5 * x[j]) / math.sqrt(1.25)
    np.testing.assert_allclose(out[4950:], expected, atol=1e-6)
    np.testing.assert_allclose(out[:4950], x[:4950] / math.sqrt(1.25), atol=1e-6)



def test_channel_bank_draws_every_channel_of_a_real_stereo_rir_about_equally():
    # shared/data/rir: 4 measured rooms, 44.1 kHz stereo. With channels="one" a draw picks a
    # file uniformly, then one of its 2 channels uniformly: over 800 draws each of the 8
    # (file, channel) pairs is drawn about 100 times (binomial sd 9.4), channel 1 in about half
    # (sd 0.018), and the RIR returned is that channel's own (aligned and normalised alone).
    rir_dir = SHARED_DATA / "rir"
    if not rir_dir.is_dir():
        pytest.skip("../shared/data is absent (real audio for this test)")
    bank = RirBank.from_folder(rir_dir, channels="one")
    assert [len(c) for c in bank.channels] == [2, 2, 2, 2]
    rng = np.random.default_rng(0)
    counts = np.zeros((4, 2), dtype=int)
    for _ in range(800):
        rir, index, channel = bank.draw(rng)
        assert rir is bank.channels[index][channel]
        counts[index, channel] += 1
    assert counts.min() >= 60, counts  # > 4 sd below 100
    assert abs(counts[:, 1].sum() / 800 - 0.5) < 0.075, counts


# ---- data: an item that decodes shorter than min_length_s is skipped at read time ------------


def test_item_decoding_shorter_than_min_length_is_skipped_as_too_short(tmp_path):
    # Two real utterances of 1.5 s pass the header scan (min_length_s = 1.0). The first file
    # is then replaced by 0.5 s of the same speech (a header that overstated the length, or a
    # file rewritten since the scan): reading it must not return a 0.5 s item, but skip it as
    # "too short" and return the next item (index 1, its own 1.5 s).
    import soundfile as sf

    from robustdistill.data import AudioFileDataset

    speech = _real_speech(3.0)
    files = [tmp_path / "a.wav", tmp_path / "b.wav"]
    sf.write(files[0], speech[:24_000], 16_000, subtype="FLOAT")
    sf.write(files[1], speech[24_000:48_000], 16_000, subtype="FLOAT")
    ds = AudioFileDataset(files, max_length_s=4.0, min_length_s=1.0)
    assert len(ds) == 2
    sf.write(files[0], speech[:8_000], 16_000, subtype="FLOAT")
    item = ds[(0, 0)]
    assert item["index"] == 1
    np.testing.assert_array_equal(item["waveform"], speech[24_000:48_000])
    assert ds.skipped == {str(files[0]): "too short"}



# ---- metrics: the evaluate SI-SDRi module averages every signal ------------------------------


def test_si_sdr_improvement_module_is_the_mean_over_signals_on_real_speech_and_noise():
    # Real speech c and real noise e (running tap), both zero-mean, e made orthogonal to c and
    # scaled to c's energy. SI-SDR(a (c + g e), c) = 10 log10(|c|^2 / (g^2 |e|^2)) = -20 log10(g)
    # for any scale a != 0 (scale invariance). Noisy c + e: 0 dB. Signal 1: estimate c + 0.1 e,
    # 20 dB, improvement 20 dB. Signal 2: estimate 0.5 (c + 10^(-1/4) e), 5 dB, improvement
    # 5 dB. The module reports the mean improvement, 12.5 dB (the first alone would be 20).
    from robustdistill.metrics import load_metric, si_sdr

    noise_path = SHARED_DATA / "noise" / "running_tap.wav"
    if not noise_path.is_file():
        pytest.skip("../shared/data is absent (real audio for this test)")
    c = _real_speech(1.0).astype(np.float64)
    c -= c.mean()
    e = load_audio(noise_path)[16_000:32_000].astype(np.float64)
    e -= e.mean()
    e -= (e @ c) / (c @ c) * c
    e *= math.sqrt((c @ c) / (e @ e))
    g2 = 10 ** (-1 / 4)
    assert float(si_sdr(0.5 * (c + g2 * e), c)) == pytest.approx(5.0, abs=1e-6)
    out = load_metric("si_sdr_improvement").compute(
        predictions=[c + 0.1 * e, 0.5 * (c + g2 * e)], references=[c, c], noisy=[c + e, c + e])
    assert out["si_sdr_improvement"] == pytest.approx(12.5, abs=1e-4)


def test_min_dcf_module_passes_the_costs_on():
    # Targets [0.9, 0.8, 0.4], non-targets [0.7, 0.3, 0.2, 0.1] (as in test_metrics), accept at
    # score >= t. p_target 0.1, C_miss 10, C_fa 1: C_det = P_miss + 0.9 P_fa, normalised by
    # min(1, 0.9) = 0.9; at t = 0.4 (P_miss 0, P_fa 1/4) it is 0.225 / 0.9 = 0.25, the minimum.
    # With unit costs the same prior gives P_miss + 9 P_fa, minimum 1/3 at t = 0.8.
    from robustdistill.metrics import load_metric

    labels = [1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]
    out = load_metric("min_dcf").compute(predictions=scores, references=labels, p_target=0.1,
                                         c_miss=10.0, c_fa=1.0)
    assert out["min_dcf"] == pytest.approx(0.25) and out["threshold"] == 0.4
    out = load_metric("min_dcf").compute(predictions=scores, references=labels, p_target=0.1)
    assert out["min_dcf"] == pytest.approx(1 / 3) and out["threshold"] == 0.8


# ---- data: a streaming validation crop depends on the position only, not the seed -----------


def test_streaming_validation_crops_are_the_same_for_every_seed(monkeypatch):
    # Three 1.5 s pieces of real speech streamed with random_crop=False, max_length_s 0.5: item
    # p's crop starts at default_rng([rank 0, worker 0, p]).integers(0, 24000 - 8000 + 1), the
    # same for any run seed (validation losses comparable across runs), and is exactly those
    # 8000 samples of the piece.
    import io
    import sys

    import soundfile as sf
    from datasets import Audio, Dataset

    from robustdistill.data import StreamingAudioDataset

    monkeypatch.setitem(sys.modules, "torchcodec", None)
    speech = _real_speech(4.5)
    pieces = [speech[i * 24_000:(i + 1) * 24_000] for i in range(3)]
    cells = []
    for i, piece in enumerate(pieces):
        buffer = io.BytesIO()
        sf.write(buffer, piece, 16_000, format="WAV", subtype="FLOAT")
        cells.append({"bytes": buffer.getvalue(), "path": f"{i}.wav"})
    table = Dataset.from_dict({"audio": cells}).cast_column("audio", Audio(decode=False))
    for seed in (3, 7):
        ds = StreamingAudioDataset(table.to_iterable_dataset(num_shards=1), max_length_s=0.5,
                                   min_length_s=0.5, seed=seed, random_crop=False)
        items = list(ds)
        assert [x["index"] for x in items] == [0, 1, 2]
        for x in items:
            start = int(np.random.default_rng([0, 0, x["index"]]).integers(0, 16_001))
            np.testing.assert_array_equal(x["waveform"], pieces[x["index"]][start:start + 8000])
