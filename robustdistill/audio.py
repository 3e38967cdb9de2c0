"""Reading audio files: decode, check, down-mix and resample.

Every waveform that enters the library passes through :func:`load_audio` (files) or
:func:`prepare_waveform` (arrays already in memory), so the checks live in one place:
unreadable, empty, truncated or non-audio files, NaN/Inf samples, digital silence, samples
beyond :data:`MAX_PEAK` (a corrupt float file) and wrong channel layouts raise
:class:`AudioError` with the file name and a short
:attr:`AudioError.reason` (one of :data:`AUDIO_ERROR_REASONS`, what run summaries count)
instead of producing silent wrong results. Unusual but valid audio is converted, not refused:
8-bit or 24-bit PCM, any sample rate from :data:`MIN_SAMPLE_RATE` (1 kHz) up (96 kHz, 8 kHz,
...), any number of channels (averaged),
any length (one sample; an hour). :func:`probe_audio` reads only a file's header.

Decoding uses ``soundfile`` (libsndfile, bundled in its wheel: WAV, FLAC, OGG/Vorbis, MP3),
resampling uses ``soxr`` (VHQ). No FFmpeg or torchaudio is needed.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "AUDIO_ERROR_REASONS",
    "AUDIO_EXTENSIONS",
    "SAMPLE_RATE",
    "AudioError",
    "AudioInfo",
    "MAX_CHANNELS",
    "MAX_PEAK",
    "MIN_SAMPLE_RATE",
    "check_channels_last",
    "check_peak",
    "decode_audio",
    "list_audio_files",
    "require_float_audio",
    "load_audio",
    "load_audio_window",
    "probe_audio",
    "prepare_waveform",
    "resample",
    "to_mono",
]

logger = logging.getLogger(__name__)

#: The sample rate (Hz) of every SSL speech encoder the library handles.
SAMPLE_RATE = 16_000

#: The lowest sample rate (Hz) taken as audio. A header claiming less is corrupt: resampling
#: its samples to 16 kHz would multiply them (a 14 s file read as 1 Hz asked for 3.6 billion
#: samples, 14 GB, and the command died of memory).
MIN_SAMPLE_RATE = 1_000

#: libsndfile's frame count for streams of unknown length (e.g. some OGG/MP3 headers).
SF_UNKNOWN_FRAMES = 2**62

#: A WAV ``data`` or AIFF ``SSND`` chunk size of at least this many bytes is a writer's
#: "length unknown" placeholder (0xFFFFFFFF from FFmpeg's pipe output, 0x7FFFF000 from
#: others), not a claim about the file's length.
_UNKNOWN_CHUNK_SIZE = 0x7FFF_F000

#: libsndfile's header report of a sample chunk larger than the bytes present:
#: ``data : 64000 (should be 31978)`` (WAV) or ``SSND : 3208 (should be 1581)`` (AIFF).
_SHORT_CHUNK = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)

#: File name extensions that :func:`list_audio_files` picks up (lower case).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


#: The short reasons an :class:`AudioError` carries (what run summaries count).
AUDIO_ERROR_REASONS = (
    "permission denied",  # the file exists but this process may not read it
    "unreadable",  # not audio, truncated, corrupt, or a missing file
    "empty",  # zero samples (a valid header with no data, or a 0-byte file)
    "non-finite",  # NaN or Inf samples
    "silent",  # every sample is exactly zero (digital silence)
    "too short",  # shorter than a dataset's min_length_s (set by the datasets)
    "invalid",  # anything else: bad shape, bad sample rate, samples beyond MAX_PEAK
)

#: The largest absolute sample value usable audio may hold (full scale is 1.0; 100 is 40 dB
#: above it). Only a floating-point file can exceed full scale, and one that does by this much
#: is corrupt, or holds integer-scaled samples (+-32768) stored as floats: a 1e30 sample passes
#: the NaN/Inf check but overflows SNR mixing, features and losses (NaN gradients, non-finite
#: downstream features). One limit for every reader (:func:`check_peak`): the datasets of
#: ``distill``, ``evaluate``'s data, and ``train-se``'s speech index.
MAX_PEAK = 100.0


class AudioError(ValueError):
    """Raised for audio that cannot be used: unreadable, empty, NaN/Inf, silent, badly shaped.

    Args:
        message: names the file (or row) and the problem.
        reason: one of :data:`AUDIO_ERROR_REASONS` (default ``"invalid"``).

    Raises:
        ValueError: ``reason`` is not one of :data:`AUDIO_ERROR_REASONS`.
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        if reason not in AUDIO_ERROR_REASONS:
            raise ValueError(f"unknown AudioError reason {reason!r}; known: {AUDIO_ERROR_REASONS}")
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep the reason across DataLoader worker processes (pickle)
        return type(self), (str(self), self.reason)


#: More channels than this (and than samples) in a 2-D array means a ``(channels, samples)``
#: array (torchaudio's layout), not ``(samples, channels)``.
MAX_CHANNELS = 64


def check_channels_last(waveform: np.ndarray) -> None:
    """Refuse a 2-D array that is ``(channels, samples)`` rather than ``(samples, channels)``.

    Averaging such an array over its last axis would silently return one "sample" per channel
    (e.g. a 1-sample waveform from torchaudio's ``(1, N)``).

    Raises:
        AudioError: (``"invalid"``) a 2-D array with more than :data:`MAX_CHANNELS` columns
            and more columns than rows.
    """
    if waveform.ndim == 2 and waveform.shape[1] > max(MAX_CHANNELS, waveform.shape[0]):
        raise AudioError(f"shape {waveform.shape} looks like (channels, samples); "
                         "expected (samples,) or (samples, channels) (transpose it)")


def check_peak(waveform: np.ndarray, name: str = "<array>") -> None:
    """Refuse audio with a sample beyond :data:`MAX_PEAK` in absolute value.

    Args:
        waveform: float samples, any shape (NaN/Inf are for the caller's finiteness check).
        name: the file or item, for the message.

    Raises:
        AudioError: ``"invalid"``, naming ``name``, the peak and the limit.
    """
    waveform = np.asarray(waveform)
    peak = float(np.max(np.abs(waveform))) if waveform.size else 0.0
    if peak > MAX_PEAK:
        raise AudioError(f"{name}: a sample of absolute value {peak:.3g} (more than "
                         f"{MAX_PEAK:g} times full scale): a corrupt float file, or float "
                         "samples at integer scale", "invalid")


def require_float_audio(waveform) -> None:
    """Refuse integer (or bool) audio where float samples in [-1, 1] are expected: int16 PCM
    would otherwise be read as samples of +-32768.

    Args:
        waveform: a NumPy array or a torch tensor, any shape.

    Raises:
        ValueError: a non-floating dtype (the message points to :func:`prepare_waveform`,
            which scales integer PCM).
    """
    dtype = waveform.dtype
    floating = (dtype.is_floating_point if hasattr(dtype, "is_floating_point")
                else np.issubdtype(dtype, np.floating))
    if not floating:
        raise ValueError(f"expected float audio in [-1, 1], got {dtype} (scale integer PCM "
                         "first, e.g. robustdistill.audio.prepare_waveform)")


def to_mono(waveform: np.ndarray) -> np.ndarray:
    """Down-mix to one channel by averaging channels.

    Args:
        waveform: ``(samples,)`` or ``(samples, channels)`` as returned by soundfile.

    Returns:
        ``(samples,)`` float32.

    Raises:
        AudioError: for arrays with more than two dimensions, or a 2-D array laid out as
            ``(channels, samples)`` (see :func:`check_channels_last`).
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim == 2:
        check_channels_last(waveform)
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
        AudioError: for a non-positive sample rate, or an ``orig_sr`` below
            :data:`MIN_SAMPLE_RATE` (a corrupt header; ``"invalid"``).
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr < MIN_SAMPLE_RATE and orig_sr != target_sr:
        raise AudioError(f"a sample rate of {orig_sr} Hz is below {MIN_SAMPLE_RATE} Hz: a "
                         "corrupt header, not audio to resample")
    if orig_sr == target_sr:
        return waveform
    return soxr.resample(waveform, orig_sr, target_sr, quality="VHQ").astype(np.float32, copy=False)


def prepare_waveform(
    waveform: np.ndarray,
    sample_rate: int,
    target_sr: int = SAMPLE_RATE,
    name: str = "<array>",
    allow_silence: bool = False,
) -> np.ndarray:
    """Check, down-mix and resample a decoded waveform.

    Args:
        waveform: ``(samples,)`` or ``(samples, channels)``, any float or int dtype.
        sample_rate: its rate in Hz.
        target_sr: the rate to return, in Hz (default 16 kHz).
        name: used in error messages (a file name, a dataset row).
        allow_silence: accept audio whose samples are all zero (refused by default: it
            carries no speech, and an SNR mix with it is undefined).

    Returns:
        ``(samples',)`` float32 mono at ``target_sr``: integer PCM scaled to [-1, 1), float
        input unscaled (up to :data:`MAX_PEAK`).

    Raises:
        AudioError: empty audio (reason ``"empty"``), NaN or Inf samples (``"non-finite"``,
            checked before and after resampling), every sample zero (``"silent"``, unless
            ``allow_silence``), more than two dimensions, a ``(channels, samples)`` array
            (:func:`check_channels_last`), a bad rate, or a mono sample beyond
            :data:`MAX_PEAK` (:func:`check_peak`; all ``"invalid"``).
    """
    waveform = np.asarray(waveform)
    if waveform.dtype.kind == "u":  # unsigned (8-bit) PCM: centred on 2**(bits-1)
        offset = float(np.iinfo(waveform.dtype).max + 1) / 2
        waveform = (waveform.astype(np.float32) - offset) / offset
    elif waveform.dtype.kind == "i":  # integer PCM -> [-1, 1)
        waveform = waveform.astype(np.float32) / float(np.iinfo(waveform.dtype).max + 1)
    try:
        mono = to_mono(waveform)
    except AudioError as err:
        raise AudioError(f"{name}: {err}") from err
    if mono.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)", "empty")
    finite = np.isfinite(mono)
    if not finite.all():
        bad = int(mono.size - finite.sum())
        raise AudioError(f"{name}: {bad} of {mono.size} samples are NaN or Inf", "non-finite")
    if not allow_silence and not np.any(mono):
        if np.any(waveform):  # the channels cancel: not a silent recording
            raise AudioError(f"{name}: its channels cancel when averaged to mono (anti-phase "
                             f"channels; all {mono.size} mono samples are 0)", "silent")
        raise AudioError(f"{name}: digital silence (all {mono.size} samples are 0)", "silent")
    try:
        out = resample(mono, int(sample_rate), target_sr)
    except AudioError as err:
        raise AudioError(f"{name}: {err}") from err
    if not np.isfinite(out).all():  # huge finite samples can overflow float32 when filtered
        raise AudioError(f"{name}: resampling produced NaN or Inf (samples too large?)",
                         "non-finite")
    check_peak(out, name)
    return out


class AudioInfo(NamedTuple):
    """What a file's header says: ``frames`` per channel, ``sample_rate`` (Hz), ``channels``."""

    frames: int
    sample_rate: int
    channels: int


def _open_source(source: str | os.PathLike | bytes):
    """``(file object, name)``; opened here, so the OS's errors are ours to name."""
    if isinstance(source, bytes):
        if not source:
            raise AudioError("<bytes>: empty file (0 bytes)", "empty")
        return io.BytesIO(source), "<bytes>"
    name = str(source)
    try:
        handle = open(source, "rb")  # noqa: SIM115 - closed by the callers
    except PermissionError as err:
        raise AudioError(f"{name}: permission denied ({err.strerror})",
                         "permission denied") from err
    except OSError as err:
        raise AudioError(f"{name}: cannot open ({err.strerror or err})", "unreadable") from err
    if os.fstat(handle.fileno()).st_size == 0:
        handle.close()
        raise AudioError(f"{name}: empty file (0 bytes)", "empty")
    return handle, name


def _refuse_short_chunk(audio_info: str, name: str) -> None:
    """Refuse a WAV/AIFF file cut short: its sample chunk announces more bytes than it holds.

    libsndfile shrinks the frame count of such a file to the bytes present, so a WAV cut in
    half would otherwise decode as a shorter clip without an error; its header report
    (``SoundFile.extra_info``) still names the announced and the present sizes.

    Raises:
        AudioError: ``"unreadable"``, naming the announced and present byte counts.
    """
    match = _SHORT_CHUNK.search(audio_info)
    if match is None:
        return
    chunk, announced, present = match.group(1), int(match.group(2)), int(match.group(3))
    if present < announced < _UNKNOWN_CHUNK_SIZE:
        raise AudioError(f"{name}: truncated: its '{chunk}' chunk announces {announced} bytes "
                         f"of samples, the file holds {present}", "unreadable")


def _sound_file(handle) -> sf.SoundFile:
    """``soundfile.SoundFile`` over an :func:`_open_source` handle: over its file descriptor
    when it has one (left open: ``handle`` closes it), else (bytes) over the object itself.

    With a file object, libsndfile reads through Python callbacks, and cffi swallows an
    exception raised in one ("Exception ignored from cffi callback"): a Ctrl-C during a
    decode was lost and the command went on (``cache-teacher`` ran to its end). Over a
    descriptor no Python runs inside the read, so the ``KeyboardInterrupt`` comes as it
    returns.
    """
    try:
        fd = handle.fileno()
    except (AttributeError, OSError):  # io.BytesIO: io.UnsupportedOperation, an OSError
        return sf.SoundFile(handle)
    return sf.SoundFile(fd, closefd=False)


def _decode_error(err: Exception) -> str:
    """The text of a decode error without libsndfile's "Error opening ...: " prefix, which
    names what it was handed (a file descriptor, "Error opening 6", or a file object), not
    the file: callers name the file themselves."""
    if isinstance(err, sf.LibsndfileError):
        return err.error_string
    return str(err)


def probe_audio(source: str | os.PathLike | bytes) -> AudioInfo:
    """Read only the header of an audio file (or its bytes).

    Raises:
        AudioError: ``"permission denied"``, ``"empty"`` (0 bytes), ``"unreadable"`` (not
            audio, a corrupt header, a missing file, a WAV/AIFF file whose sample chunk is
            cut short), ``"invalid"`` (a sample rate below :data:`MIN_SAMPLE_RATE`).
    """
    handle, name = _open_source(source)
    with handle:
        try:
            info = sf.info(handle)
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as err:
            raise AudioError(f"{name}: not readable as audio ({_decode_error(err)})",
                             "unreadable") from err
    _refuse_short_chunk(info.extra_info, name)
    if info.samplerate < MIN_SAMPLE_RATE:
        raise AudioError(f"{name}: its header says {info.samplerate} Hz, below "
                         f"{MIN_SAMPLE_RATE} Hz: a corrupt header", "invalid")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def decode_audio(source: str | os.PathLike | bytes) -> tuple[np.ndarray, int]:
    """Decode an audio file (or its bytes) as it is: every channel, its own rate.

    Returns:
        ``(data, sample_rate)``: ``data`` ``(samples, channels)`` float32, rate in Hz.

    Raises:
        AudioError: with :attr:`~AudioError.reason` ``"permission denied"``, ``"unreadable"``
            (not audio, truncated or corrupt: a decode error, fewer samples than the header
            announces, or a WAV/AIFF sample chunk cut short), ``"empty"`` (0 bytes).
    """
    handle, name = _open_source(source)
    with handle:
        try:
            with _sound_file(handle) as audio:
                announced, sr = audio.frames, audio.samplerate
                header = audio.extra_info
                data = audio.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as err:
            raise AudioError(f"{name}: cannot decode audio ({_decode_error(err)})",
                             "unreadable") from err
    _refuse_short_chunk(header, name)
    if 0 < announced < SF_UNKNOWN_FRAMES and len(data) < announced:
        raise AudioError(f"{name}: truncated: decoded {len(data)} of the {announced} frames "
                         "its header announces", "unreadable")
    return data, int(sr)


def load_audio(
    source: str | os.PathLike | bytes,
    target_sr: int = SAMPLE_RATE,
    allow_silence: bool = False,
) -> np.ndarray:
    """Decode an audio file (or its bytes) to mono float32 at ``target_sr``
    (:func:`decode_audio`, then :func:`prepare_waveform`).

    Args:
        source: a path, or the encoded file's bytes (as a ``datasets`` ``Audio(decode=False)``
            column holds them).
        target_sr: the rate to return, in Hz (default 16 kHz).
        allow_silence: accept all-zero audio (see :func:`prepare_waveform`).

    Returns:
        ``(samples,)`` float32: integer PCM scaled to [-1, 1); floating-point files as
        stored (full scale 1; a float file may hold larger values, which are kept up to
        :data:`MAX_PEAK`).

    Raises:
        AudioError: with :attr:`~AudioError.reason` ``"permission denied"``, ``"unreadable"``
            (not audio, truncated or corrupt), ``"empty"``, ``"non-finite"``, ``"silent"``,
            ``"invalid"`` (a sample beyond :data:`MAX_PEAK`, :func:`check_peak`).
    """
    data, sr = decode_audio(source)
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    return prepare_waveform(data, sr, target_sr, name=name, allow_silence=allow_silence)


#: Extra source frames read on each side of a window that is resampled (the resampler's
#: filter needs context; soxr VHQ's is well below this at the rates seen in speech corpora).
_WINDOW_PAD_FRAMES = 256


def load_audio_window(
    source: str | os.PathLike,
    start: int,
    num_samples: int,
    target_sr: int = SAMPLE_RATE,
) -> np.ndarray:
    """Decode only ``num_samples`` samples starting at sample ``start`` (both at ``target_sr``).

    For long files (an hour-long recording is 230 MB of float32 at 16 kHz): only the window is
    read from disk (libsndfile seeks, FLAC included). At the file's own rate the result is
    exactly ``load_audio(source)[start:start + num_samples]``; otherwise the window is read
    with :data:`_WINDOW_PAD_FRAMES` frames of context on each side, resampled and trimmed
    (equal to the whole-file resampling up to the resampler's edge effects).

    Silence is allowed (a long recording may hold silent stretches).

    Args:
        source: an audio file path.
        start: first sample, at ``target_sr``, >= 0.
        num_samples: window length at ``target_sr``, > 0.
        target_sr: Hz.

    Returns:
        ``(num_samples,)`` float32 mono.

    Raises:
        ValueError: a negative ``start`` or a non-positive ``num_samples``.
        AudioError: ``"unreadable"`` (also when the file holds fewer samples than the window
            needs, or a WAV/AIFF sample chunk is cut short: truncated), ``"permission
            denied"``, ``"empty"``, ``"non-finite"``, ``"invalid"`` (a sample of the window
            beyond :data:`MAX_PEAK`).
    """
    if start < 0 or num_samples <= 0:
        raise ValueError(f"need start >= 0 and num_samples > 0, got {start}, {num_samples}")
    handle, name = _open_source(source)
    with handle:
        try:
            with _sound_file(handle) as audio:
                _refuse_short_chunk(audio.extra_info, name)
                sr = audio.samplerate
                # Start on a frame that falls on the target grid (a multiple of
                # sr / gcd frames = target_sr / gcd samples), with context before it.
                g = math.gcd(sr, target_sr)
                block_frames, block_samples = sr // g, target_sr // g
                context = 0 if sr == target_sr else -(-_WINDOW_PAD_FRAMES // block_frames)
                first_block = max(0, start // block_samples - context)
                first = first_block * block_frames
                offset = start - first_block * block_samples  # samples at target_sr
                frames = -(-(offset + num_samples) * sr // target_sr)
                if sr != target_sr:
                    frames += _WINDOW_PAD_FRAMES
                audio.seek(first)
                data = audio.read(frames, dtype="float32", always_2d=False)
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as err:
            raise AudioError(f"{name}: cannot decode audio ({_decode_error(err)})",
                             "unreadable") from err
    window = prepare_waveform(data, sr, target_sr, name=name, allow_silence=True)
    window = window[offset: offset + num_samples]
    if len(window) < num_samples:
        raise AudioError(f"{name}: truncated: samples {start}..{start + num_samples} at "
                         f"{target_sr} Hz are past the audio's end", "unreadable")
    return window


def list_audio_files(
    root: str | os.PathLike, extensions: Iterable[str] = AUDIO_EXTENSIONS
) -> list[Path]:
    """All audio files below ``root``, recursively, sorted by path (deterministic order).

    Symbolic links to folders are followed (a corpus folder made of links to its subsets),
    each real folder searched once: a link back up the tree (a loop) or a second link to a
    folder already searched adds nothing. A link that cannot be followed (:func:`_dangling`:
    its target deleted, or on a volume not mounted, or a loop of links) is listed when its
    name has an audio suffix, so that its reader names it and counts it (``"unreadable"``:
    cannot open) instead of the file silently missing from the corpus; one without (a link to
    a folder no longer there) is named in a warning (once a process), as not searched.
    Callers that compare listed files use :func:`os.path.realpath` (``Path.resolve`` raises
    on a loop).

    Args:
        root: a folder, or a single audio file.
        extensions: suffixes to accept, in any case (one suffix may be given as a string).

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no audio file.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"audio path does not exist: {root}")
    if isinstance(extensions, str):  # ".flac" would be read as ".", "f", "l", "a", "c"
        extensions = (extensions,)
    suffixes = tuple(ext.lower() for ext in extensions)
    if root.is_file():
        files = [root] if root.suffix.lower() in suffixes else []
    else:
        listed, broken = _walk_files(root)
        files = sorted(p for p in listed if p.suffix.lower() in suffixes)
        lost = sorted(str(p) for p in broken if p.suffix.lower() not in suffixes
                      and str(p) not in _SAID_BROKEN)
        _SAID_BROKEN.update(lost)
        if lost:  # e.g. a link to a corpus subset on a volume not mounted; said once a process
            logger.warning("%s: %d symbolic link(s) that cannot be followed, not searched: %s",
                           root, len(lost), "; ".join(lost[:5]))
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(suffixes)}) found under {root}")
    return files


#: Links without an audio suffix that cannot be followed, already named in a warning.
_SAID_BROKEN: set[str] = set()


def _walk_files(root: Path) -> tuple[list[Path], list[Path]]:
    """Every file below the folder ``root``, through symbolic links to folders, each real
    folder (device, inode) visited once, folders in sorted order (which path a folder reached
    twice is listed under does not depend on the file system's listing order); also every
    link that cannot be followed (:func:`_dangling`), for the reader to name.

    Returns:
        ``(files, broken)``: ``files`` includes the links that cannot be followed; ``broken``
        is those links alone (found while listing: no second look at each file).
    """
    files: list[Path] = []
    broken: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError:  # a link that cannot be resolved (a loop of links, a dangling one)
            subfolders[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            subfolders[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        subfolders.sort()
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                files.append(Path(path))
            elif _dangling(path):
                files.append(Path(path))
                broken.append(Path(path))
    return files, broken


def _dangling(path: str) -> bool:
    """Whether ``path`` is a symbolic link that cannot be followed: its target does not exist
    (deleted, or on a volume not mounted), or a loop of links (ELOOP)."""
    if not os.path.islink(path):
        return False
    try:
        os.stat(path)
    except OSError:
        return True
    return False
