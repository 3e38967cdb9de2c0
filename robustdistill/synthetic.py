"""Speech-like synthetic audio, for the offline demo and for tests.

No real recordings are needed to exercise the whole pipeline: :func:`synthetic_waveform` builds
a crude source-filter "speech" signal, and :func:`write_synthetic_corpus` writes a folder of
16-bit WAV files of it that :class:`robustdistill.data.AudioFileDataset` reads like any corpus.

The model (classic source-filter synthesis, as in Klatt's formant synthesiser, J. Acoust. Soc.
Am. 67(3), 1980, much simplified):

* source: a glottal pulse train whose pitch (F0) wanders slowly between 90 and 250 Hz, smoothed
  by a one-pole low-pass (the glottal spectral tilt), plus a little aspiration noise;
* filter: 2 to 4 second-order formant resonances in series; each syllable has a vowel target
  (F1, F2, F3, F4) and the formants glide between targets, applied per 16 ms STFT hop;
* prosody: syllable-rate amplitude modulation at 3 to 6 Hz, short pauses (0.1 to 0.4 s) between
  phrases, and a mild noise floor (about -60 dBFS).

Everything is drawn from the ``numpy.random.Generator`` passed in, so a corpus is a pure
function of its seed. It is not speech (no phonetics, no words); it only has speech's coarse
statistics: harmonic structure, formants, syllabic rhythm and pauses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import istft, lfilter, stft

from .audio import SAMPLE_RATE
from .files import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["synthetic_waveform", "write_synthetic_corpus"]

#: Vowel formant targets (F1, F2, F3, F4) in Hz, roughly those of an adult speaker
#: (Peterson & Barney, J. Acoust. Soc. Am. 24(2), 1952): /a/, /i/, /u/, /e/, /o/, /ae/, /er/.
_VOWELS_HZ = np.array(
    [
        [730.0, 1090.0, 2440.0, 3400.0],
        [270.0, 2290.0, 3010.0, 3700.0],
        [300.0, 870.0, 2240.0, 3300.0],
        [530.0, 1840.0, 2480.0, 3500.0],
        [570.0, 840.0, 2410.0, 3300.0],
        [660.0, 1720.0, 2410.0, 3450.0],
        [490.0, 1350.0, 1690.0, 3300.0],
    ]
)
#: Formant bandwidths (Hz) for F1..F4.
_BANDWIDTHS_HZ = np.array([80.0, 100.0, 140.0, 200.0])


def _pitch_contour(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``(S,)`` F0 in Hz, a slow random wander clipped to [90, 250] Hz."""
    t = np.arange(num_samples) / sample_rate
    base = rng.uniform(100.0, 200.0)
    f0 = np.full(num_samples, base)
    for _ in range(3):  # a few slow sinusoids: intonation
        rate = rng.uniform(0.2, 2.0)
        depth = rng.uniform(0.03, 0.12) * base
        f0 += depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    return np.clip(f0, 90.0, 250.0)


def _envelope(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``(S,)`` amplitude in [0, 1]: syllables at 3-6 Hz, with pauses between phrases."""
    t = np.arange(num_samples) / sample_rate
    rate = rng.uniform(3.0, 6.0)
    # Raised cosine per syllable, slightly jittered rate, sharpened so syllables separate.
    phase = 2 * np.pi * rate * t + 0.5 * np.sin(2 * np.pi * 0.7 * t) + rng.uniform(0, 2 * np.pi)
    env = (0.5 - 0.5 * np.cos(phase)) ** 1.5
    # Pauses: after each phrase of 0.6-1.8 s, silence of 0.1-0.4 s with 20 ms ramps.
    gate = np.ones(num_samples)
    ramp = max(1, int(0.02 * sample_rate))
    pos = int(rng.uniform(0.6, 1.8) * sample_rate)
    while pos < num_samples:
        length = int(rng.uniform(0.1, 0.4) * sample_rate)
        gate[pos : pos + length] = 0.0
        down = np.arange(max(0, pos - ramp), pos)
        gate[down] = np.minimum(gate[down], (pos - down) / ramp)
        up = np.arange(pos + length, min(num_samples, pos + length + ramp))
        gate[up] = np.minimum(gate[up], (up - pos - length) / ramp)
        pos += length + int(rng.uniform(0.6, 1.8) * sample_rate)
    return env * gate


def _formant_tracks(
    num_frames: int, hop_s: float, num_formants: int, rng: np.random.Generator
) -> np.ndarray:
    """``(num_frames, num_formants)`` formant frequencies in Hz gliding between vowel targets."""
    syllable_s = rng.uniform(1 / 6, 1 / 3)
    num_targets = int(np.ceil(num_frames * hop_s / syllable_s)) + 2
    speaker_scale = rng.uniform(0.85, 1.2)  # vocal tract length
    targets = _VOWELS_HZ[rng.integers(0, len(_VOWELS_HZ), num_targets), :num_formants]
    targets = targets * speaker_scale * rng.uniform(0.93, 1.07, size=targets.shape)
    target_times = np.arange(num_targets) * syllable_s
    frame_times = np.arange(num_frames) * hop_s
    return np.stack(
        [np.interp(frame_times, target_times, targets[:, k]) for k in range(num_formants)], axis=1
    )


def synthetic_waveform(
    seconds: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """One utterance of speech-like audio (see the module docstring for the model).

    Args:
        seconds: duration in seconds (> 0).
        rng: the source of all randomness; the same generator state gives the same waveform.
        sample_rate: in Hz (default 16 kHz).

    Returns:
        ``(max(1, round(seconds * sample_rate)),)`` float32, peak about 0.5 (-6 dBFS), never
        above 1.

    Raises:
        ValueError: non-positive ``seconds`` or ``sample_rate``.
    """
    if seconds <= 0 or sample_rate <= 0:
        raise ValueError(f"seconds and sample_rate must be positive, got {seconds}, {sample_rate}")
    num_samples = max(1, round(seconds * sample_rate))

    # Source: one impulse per glottal cycle, then the glottal tilt (one-pole low-pass).
    f0 = _pitch_contour(num_samples, sample_rate, rng)
    cycles = np.cumsum(f0) / sample_rate
    pulses = np.zeros(num_samples)
    pulses[1:][np.diff(np.floor(cycles)) > 0] = 1.0
    source = lfilter([1.0], [1.0, -0.97], pulses)
    source -= lfilter([1.0], [1.0, -0.995], source) * (1 - 0.995)  # remove DC drift
    source += 0.02 * rng.standard_normal(num_samples)  # aspiration

    # Filter: 2-4 formant resonators in series, applied frame by frame in the STFT domain
    # (32 ms Hann frames, 16 ms hop) so the formants can glide without a per-sample loop.
    num_formants = int(rng.integers(2, 5))
    nperseg = 2 ** int(np.ceil(np.log2(0.032 * sample_rate)))
    hop = nperseg // 2
    freqs, frame_times, spectrum = stft(
        source, sample_rate, nperseg=nperseg, noverlap=nperseg - hop
    )
    num_frames = len(frame_times)
    tracks = _formant_tracks(num_frames, hop / sample_rate, num_formants, rng)  # (T, K)
    tracks = np.minimum(tracks, 0.45 * sample_rate)
    radii = np.exp(-np.pi * _BANDWIDTHS_HZ[:num_formants] / sample_rate).astype(np.float32)
    theta = (2 * np.pi * tracks / sample_rate).astype(np.float32)  # (T, K)
    z1 = np.exp(-2j * np.pi * freqs / sample_rate).astype(np.complex64)[:, None, None]  # (F,1,1)
    gain = (1 - radii) * np.sqrt(1 - 2 * radii * np.cos(2 * theta) + radii**2)  # ~unit peak
    response = gain / (1 - 2 * radii * np.cos(theta) * z1 + radii**2 * z1**2)  # (F, T, K)
    _, out = istft(
        spectrum * response.prod(axis=2), sample_rate, nperseg=nperseg, noverlap=nperseg - hop
    )
    out = out[:num_samples]
    if len(out) < num_samples:
        out = np.pad(out, (0, num_samples - len(out)))

    out = out * _envelope(num_samples, sample_rate, rng)
    peak = np.max(np.abs(out))
    if peak > 0:
        out = out * (0.5 / peak)
    out += 1e-3 * rng.standard_normal(num_samples)  # noise floor, about -60 dBFS
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def write_synthetic_corpus(
    out_dir: str | os.PathLike,
    num_items: int,
    seconds_range: Sequence[float] = (2.0, 5.0),
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
) -> list[Path]:
    """Write ``num_items`` speech-like 16-bit WAV files into ``out_dir``.

    Item ``i`` is drawn from ``np.random.default_rng([seed, i])``: its duration uniformly from
    ``seconds_range``, then its waveform with :func:`synthetic_waveform`. So the corpus is a pure
    function of ``(seed, sample_rate)`` per item, and a larger corpus extends a smaller one.
    Files are written to a temporary name and renamed, so concurrent writers (several ranks)
    of the same corpus never expose a half-written file.

    Args:
        out_dir: created if missing; files are named ``synthetic_00000.wav`` and so on.
        num_items: number of files (> 0).
        seconds_range: ``(min, max)`` duration in seconds, ``0 < min <= max``.
        seed: the corpus seed.
        sample_rate: in Hz.

    Returns:
        The written paths, in item order.

    Raises:
        ValueError: ``num_items <= 0`` or a bad ``seconds_range``.
    """
    if num_items <= 0:
        raise ValueError(f"num_items must be positive, got {num_items}")
    if len(seconds_range) != 2 or not 0 < seconds_range[0] <= seconds_range[1]:
        raise ValueError(
            f"seconds_range must be (min, max) with 0 < min <= max, got {seconds_range}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_items):
        rng = np.random.default_rng([seed, i])
        seconds = rng.uniform(seconds_range[0], seconds_range[1])
        waveform = synthetic_waveform(seconds, rng, sample_rate)
        path = out_dir / f"synthetic_{i:05d}.wav"
        with atomic_path(path) as tmp:
            sf.write(tmp, waveform, sample_rate, subtype="PCM_16", format="WAV")
        paths.append(path)
    logger.info(
        "wrote %d synthetic utterances (%.1f-%.1f s) to %s", num_items, *seconds_range, out_dir
    )
    return paths
