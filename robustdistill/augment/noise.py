"""Additive noise: segments of recordings, mixing at an exact SNR, the noise bank."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE, AudioError
from .signals import _check_signal, _load_folder, _power

logger = logging.getLogger(__name__)


def noise_segment(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample segment of ``noise``, looping the noise when it is shorter.

    Args:
        noise: ``(N,)`` waveform.
        length: wanted number of samples (> 0).
        rng: source of the random start offset.

    Returns:
        ``(length,)`` array of ``noise``'s dtype. When ``N >= length`` the segment is contiguous
        (start uniform in ``[0, N - length]``); otherwise ``noise`` is tiled from a random start.

    Raises:
        AudioError: empty or non-finite noise.
        ValueError: ``length < 1``.
    """
    noise = _check_signal(noise, "noise")
    if length < 1:
        raise ValueError(f"length must be >= 1 sample, got {length}")
    n = noise.size
    if n >= length:
        start = int(rng.integers(0, n - length + 1))
        return noise[start : start + length]
    start = int(rng.integers(0, n))
    return np.take(noise, np.arange(start, start + length), mode="wrap")


def mix_at_snr(
    clean: np.ndarray,
    noise: np.ndarray,
    snr_db: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Add ``noise`` to ``clean`` at exactly ``snr_db``, measured over the whole crop.

    The noise (a segment of it, see :func:`noise_segment`, when its length differs from the
    speech) is scaled so that ``10 * log10(mean(clean**2) / mean(scaled_noise**2)) == snr_db``.
    The mix is not rescaled, so the speech keeps its scale (RobustDistiller, arXiv 2302.09437).

    Args:
        clean: ``(S,)`` speech (or reverberant speech).
        noise: ``(N,)`` noise, any length.
        snr_db: target SNR in dB (any finite value; negative means more noise than speech).
        rng: needed only when ``N != S``, to choose the segment.

    Returns:
        ``(S,)`` float32 ``clean + scaled noise``. Silent speech (zero power) is returned
        unchanged (logged at debug level): no SNR can be defined for it.

    Raises:
        AudioError: empty, non-1-D or non-finite input; silent (zero-power) noise.
        ValueError: non-finite ``snr_db``; ``rng`` missing when a segment must be chosen.
    """
    clean = _check_signal(clean, "speech")
    noise = _check_signal(noise, "noise")
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    if noise.size != clean.size:
        if rng is None:
            raise ValueError(
                f"noise has {noise.size} samples, speech {clean.size}: pass rng to choose a segment"
            )
        noise = noise_segment(noise, clean.size, rng)
    p_speech = _power(clean)
    if p_speech == 0.0:
        logger.debug("silent speech (zero power): returned without noise")
        return clean.astype(np.float32, copy=True)
    p_noise = _power(noise)
    if p_noise == 0.0:
        raise AudioError("noise segment is silent (zero power): cannot scale it to an SNR")
    scale = math.sqrt(p_speech / (p_noise * 10.0 ** (snr_db / 10.0)))
    mixed = clean.astype(np.float64) + scale * noise.astype(np.float64)
    return mixed.astype(np.float32)


def white_if_silent(
    noise: np.ndarray, rng: np.random.Generator, source: str, real: int | None = None
) -> tuple[np.ndarray, bool]:
    """``noise``, or white Gaussian noise in its place when it is silent.

    A noise recording may hold a digitally silent stretch, and a segment drawn from it cannot
    be scaled to an SNR (:func:`mix_at_snr` raises); such a segment is replaced (logged as a
    warning, once per ``source`` and process) by standard normal noise drawn from ``rng``, so
    the result is a function of the generator's state.

    Args:
        noise: ``(N,)`` segment.
        rng: the source of the white noise (consumed only when it is needed).
        source: what the segment came from, for the warning (e.g. the file name).
        real: only the first ``real`` samples must be audible (default: all ``N``).

    Returns:
        ``(segment, replaced)``: ``noise`` itself and False, or a ``(N,)`` float32 white-noise
        segment and True when the first ``real`` samples of ``noise`` have zero power.
    """
    if _power(noise[:real]) > 0.0:
        return noise, False
    if source not in _SAID_SILENT:  # once per file and process: a file with long silent
        _SAID_SILENT.add(source)     # stretches would log at every draw
        logger.warning("silent segment of %s: white noise used instead (said once per file; "
                       "a file with long silent stretches is better trimmed or removed)", source)
    return rng.standard_normal(noise.size, dtype=np.float32), True


#: The sources :func:`white_if_silent` has warned about in this process.
_SAID_SILENT: set[str] = set()

#: The recordings :meth:`NoiseBank.draw` has said it loops, in this process.
_SAID_LOOPED: set[str] = set()


@dataclass(frozen=True)
class NoiseBank:
    """Noise recordings held in memory (mono float32 at the speech's rate).

    Attributes:
        waveforms: one ``(N_i,)`` array per recording.
        names: the file each came from.
    """

    waveforms: tuple[np.ndarray, ...]
    names: tuple[str, ...]

    @classmethod
    def from_folder(cls, root: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> NoiseBank:
        """Load all audio files below ``root`` once (down-mixed, resampled to ``sample_rate`` Hz).

        Unreadable or all-zero files are skipped with a warning.

        Raises:
            FileNotFoundError: ``root`` does not exist or holds no audio file.
            AudioError: no file could be used.
        """
        waves, names = _load_folder(root, sample_rate, "noise")
        return cls(tuple(waves), tuple(names))

    def __len__(self) -> int:
        return len(self.waveforms)

    def draw(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A random recording's random ``(length,)`` segment (see :func:`noise_segment`).

        A recording shorter than ``length`` is looped, and a warning says so once per
        recording and process (a 10 ms file looped over a 2 s crop is a 100 Hz buzz, not the
        noise the folder was meant to hold).

        Returns:
            ``(segment, index)``: the float32 segment and the recording's index in the bank.
        """
        index = int(rng.integers(0, len(self.waveforms)))
        n, name = self.waveforms[index].size, self.names[index]
        if n < length and name not in _SAID_LOOPED:
            _SAID_LOOPED.add(name)
            logger.warning("noise %s (%d samples) is shorter than the %d-sample segment drawn: "
                           "looped (said once per file; a longer recording, or none this "
                           "short, is better)", name, n, length)
        return noise_segment(self.waveforms[index], length, rng), index
