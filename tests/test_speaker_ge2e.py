"""The GE2E teacher: weights of the installed resemblyzer package, front end and embedding
parity with Resemblyzer's own VoiceEncoder."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from robustdistill.speaker.ge2e import (
    GE2E,
    MelSpectrogram,
    mel_filters,
    normalize_volume,
    partial_slices,
)

needs_resemblyzer = pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None,
                                       reason="resemblyzer (GE2E weights) is not installed")


def test_normalize_volume_raises_only():
    quiet = torch.full((16000,), 0.001)  # -60 dBFS -> +30 dB
    out = normalize_volume(quiet)
    assert float(out[0]) == pytest.approx(0.001 * 10 ** 1.5, rel=1e-5)
    loud = torch.full((100,), 0.5)
    assert torch.equal(normalize_volume(loud), loud)
    assert torch.equal(normalize_volume(torch.zeros(10)), torch.zeros(10))


def test_mel_filters_and_mel_match_librosa():
    librosa = pytest.importorskip("librosa")
    np.testing.assert_array_equal(mel_filters(),  # bit-exact: cached maps stay valid
                                  librosa.filters.mel(sr=16000, n_fft=400, n_mels=40))

    wav = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    ours = MelSpectrogram()(torch.from_numpy(wav)[None])[0].numpy()
    ref = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160,
                                         n_mels=40).T
    assert ours.shape == ref.shape == (1 + 8000 // 160, 40)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())


@needs_resemblyzer
def test_weights_load_strict_and_count():
    model = GE2E.from_resemblyzer()
    lstm_linear = sum(p.numel() for n, p in model.named_parameters()
                      if n.startswith(("lstm", "linear")))
    assert lstm_linear == 1_423_616
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training


@needs_resemblyzer
@pytest.mark.parametrize("samples", [100, 16000, 25600, 41000, 160000])
def test_partial_slices_equal_resemblyzer(samples):
    pytest.importorskip("webrtcvad")
    from resemblyzer import VoiceEncoder

    _, mel_slices = VoiceEncoder.compute_partial_slices(samples, 1.3, 0.75)
    assert partial_slices(samples) == [(s.start, s.stop) for s in mel_slices]


@needs_resemblyzer
def test_embedding_equals_resemblyzer_on_real_speech():
    from conftest import require_shared_data

    data = require_shared_data()
    pytest.importorskip("webrtcvad")
    from resemblyzer import VoiceEncoder

    from robustdistill.audio import list_audio_files, load_audio

    ours_model = GE2E.from_resemblyzer()
    ref_model = VoiceEncoder("cpu", verbose=False)
    files = list_audio_files(data / "librispeech-mini" / "test-other")[:: 50]  # two speakers
    embs = []
    for path in files:
        wav = normalize_volume(torch.from_numpy(load_audio(path)))
        ours = ours_model.embed_utterance(wav).numpy()
        ref = ref_model.embed_utterance(wav.numpy())
        np.testing.assert_allclose(ours, ref, atol=1e-5)
        assert math.isclose(float(np.linalg.norm(ours)), 1.0, rel_tol=1e-5)
        embs.append(ours)
    assert float(embs[0] @ embs[1]) < 0.95  # different speakers are not the same point
