"""Checks and helpers shared by the noise and room modules (not public)."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..audio import (
    AudioError,
    decode_audio,
    list_audio_files,
    load_audio,
    prepare_waveform,
)

logger = logging.getLogger(__name__)


def _check_signal(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D float array; AudioError for other shapes, emptiness, NaN/Inf."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D (samples,) waveform, got shape {x.shape}")
    if x.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise AudioError(f"{name}: audio contains NaN or Inf samples")
    return x


def _power(x: np.ndarray) -> float:
    """Mean square of ``x``, computed in float64."""
    # Not np.dot: a threaded BLAS call costs milliseconds on a busy machine.
    return float(np.mean(np.square(x, dtype=np.float64)))


def _load_folder(root: str | os.PathLike, sample_rate: int, what: str) -> tuple[list, list]:
    """Load every readable, non-silent audio file below ``root``; skip (and log) the others."""
    files = list_audio_files(root)
    waves, names = [], []
    for path in files:
        try:
            wave = load_audio(path, target_sr=sample_rate)
        except AudioError as err:
            logger.warning("skipping unreadable %s file: %s", what, err)
            continue
        if not np.any(wave):
            logger.warning("skipping silent %s file: %s", what, path)
            continue
        waves.append(wave)
        names.append(str(path))
    if not waves:
        raise AudioError(f"{root}: none of the {len(files)} {what} files could be used")
    logger.info("loaded %d %s files from %s", len(waves), what, root)
    return waves, names


def _load_channels(
    root: str | os.PathLike, sample_rate: int, what: str
) -> tuple[list[list[np.ndarray]], list[str]]:
    """Like :func:`_load_folder`, but every channel of each file, each resampled on its own
    (silent channels dropped; a file with no usable channel skipped with a warning)."""
    files = list_audio_files(root)
    per_file, names = [], []
    for path in files:
        try:  # the same checks as every other audio (load_audio), one channel at a time
            data, rate = decode_audio(path)
            channels = [
                prepare_waveform(np.ascontiguousarray(data[:, c]), rate, sample_rate,
                                 name=f"{path} channel {c}", allow_silence=True)
                for c in range(data.shape[1])
            ]
        except AudioError as err:
            logger.warning("skipping unreadable %s file %s: %s", what, path, err)
            continue
        channels = [c for c in channels if np.any(c)]
        if not channels:
            logger.warning("skipping silent %s file: %s", what, path)
            continue
        per_file.append(channels)
        names.append(str(path))
    if not per_file:
        raise AudioError(f"{root}: none of the {len(files)} {what} files could be used")
    logger.info(
        "loaded %d %s files (%d channels) from %s",
        len(per_file),
        what,
        sum(len(c) for c in per_file),
        root,
    )
    return per_file, names
