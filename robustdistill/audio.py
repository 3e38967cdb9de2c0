"""Reading audio files: decode, check, down-mix and resample.

Every waveform that enters the library passes through :func:`load_audio` (files) or
:func:`prepare_waveform` (arrays already in memory), so the checks live in one place:
empty or corrupt audio, NaN/Inf samples and wrong channel layouts raise
:class:`AudioError` with the file name instead of producing silent wrong results.

Decoding uses ``soundfile`` (libsndfile, bundled in its wheel: WAV, FLAC, OGG/Vorbis, MP3),
resampling uses ``soxr`` (VHQ). No FFmpeg or torchaudio is needed.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "AUDIO_EXTENSIONS",
    "SAMPLE_RATE",
    "AudioError",
    "list_audio_files",
    "load_audio",
    "prepare_waveform",
    "resample",
    "to_mono",
]

#: The sample rate (Hz) of every SSL speech encoder the library handles.
SAMPLE_RATE = 16_000

#: File name extensions that :func:`list_audio_files` picks up (lower case).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class AudioError(ValueError):
    """Raised for audio that cannot be used: unreadable, empty, NaN/Inf, or badly shaped."""


def to_mono(waveform: np.ndarray) -> np.ndarray:
    """Down-mix to one channel by averaging channels.

    Args:
        waveform: ``(samples,)`` or ``(samples, channels)`` as returned by soundfile.

    Returns:
        ``(samples,)`` float32.

    Raises:
        AudioError: for arrays with more than two dimensions.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim == 2:
        return waveform.mean(axis=1, dtype=np.float32)
    raise AudioError(f"expected (samples,) or (samples, channels) audio, got shape {waveform.shape}")


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono waveform with soxr (very high quality).

    Args:
        waveform: ``(samples,)`` float32.
        orig_sr: its sample rate in Hz.
        target_sr: the wanted sample rate in Hz.

    Returns:
        ``(round(samples * target_sr / orig_sr),)`` float32; the input itself when the rates match.

    Raises:
        AudioError: for a non-positive sample rate.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return waveform
    return soxr.resample(waveform, orig_sr, target_sr, quality="VHQ").astype(np.float32, copy=False)


def prepare_waveform(
    waveform: np.ndarray,
    sample_rate: int,
    target_sr: int = SAMPLE_RATE,
    name: str = "<array>",
) -> np.ndarray:
    """Check, down-mix and resample a decoded waveform.

    Args:
        waveform: ``(samples,)`` or ``(samples, channels)``, any float or int dtype.
        sample_rate: its rate in Hz.
        target_sr: the rate to return, in Hz (default 16 kHz).
        name: used in error messages (a file name, a dataset row).

    Returns:
        ``(samples',)`` float32 mono at ``target_sr``.

    Raises:
        AudioError: empty audio, NaN or Inf samples, more than two dimensions.
    """
    waveform = np.asarray(waveform)
    if waveform.dtype.kind in "iu":  # integer PCM -> [-1, 1)
        waveform = waveform.astype(np.float32) / float(np.iinfo(waveform.dtype).max + 1)
    mono = to_mono(waveform)
    if mono.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if not np.isfinite(mono).all():
        raise AudioError(f"{name}: audio contains NaN or Inf samples")
    return resample(mono, int(sample_rate), target_sr)


def load_audio(source: str | os.PathLike | bytes, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file (or its bytes) to mono float32 at ``target_sr``.

    Args:
        source: a path, or the encoded file's bytes (as a ``datasets`` ``Audio(decode=False)``
            column holds them).
        target_sr: the rate to return, in Hz (default 16 kHz).

    Returns:
        ``(samples,)`` float32 in [-1, 1].

    Raises:
        AudioError: unreadable/corrupt file, empty audio, NaN or Inf samples.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        data, sr = sf.read(handle, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as err:
        raise AudioError(f"{name}: cannot decode audio ({err})") from err
    return prepare_waveform(data, sr, target_sr, name=name)


def list_audio_files(
    root: str | os.PathLike, extensions: Iterable[str] = AUDIO_EXTENSIONS
) -> list[Path]:
    """All audio files below ``root``, recursively, sorted by path (deterministic order).

    Args:
        root: a folder, or a single audio file.
        extensions: lower-case suffixes to accept.

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no audio file.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"audio path does not exist: {root}")
    suffixes = tuple(ext.lower() for ext in extensions)
    if root.is_file():
        files = [root] if root.suffix.lower() in suffixes else []
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(suffixes)}) found under {root}")
    return files
