"""Speaker-labelled audio for IML-KD: fixed training crops and verification sets.

* Training: LibriSpeech ``train-clean-100`` as in ``../shared/data/librispeech-mini`` (one
  utterance per speaker, speaker = first field of the file name): ``crops_per_utterance``
  crops of ``crop_seconds`` at evenly spaced, fixed positions (fixed so that the teacher's maps
  are computed once and cached); an utterance shorter than a crop is zero-padded at the end
  (as Resemblyzer pads its partials), one shorter than ``min_length_s`` is skipped as
  ``too short`` (the recipe's ``data.min_length_s``, 1 s: a 10 ms file was a 2 s crop of
  zeros, trained on silently).
* Verification: LibriSpeech ``test-other`` (``<speaker>/<file>``) and FSDD
  (``{digit}_{speaker}_{take}.wav``, 8 kHz, resampled to 16 kHz with soxr), whole utterances;
  one shorter than ``min_length_s`` (the recipe's ``data.min_test_length_s``, 0.1 s) is
  skipped as ``too short`` (it was scored on a frame or two, the teacher's on a partial of
  zeros).

Every waveform is volume-normalised to -30 dBFS (raise only), the GE2E teacher's input
convention; teacher and student see the same audio.

A file that cannot be used (not audio, truncated, empty, NaN/Inf, digital silence: an
:class:`~robustdistill.audio.AudioError`; or too short) is skipped with a warning naming it and
the reason, and recorded in the ``skipped`` mapping the loaders take (``{path: reason}``); a
set left empty, a
verification speaker left with fewer than two usable utterances, or a verification set with no
target or no non-target trial raises :class:`SpeakerDataError` (one line).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustdistill.audio import AudioError, list_audio_files, load_audio

from .ge2e import normalize_volume

__all__ = ["Crop", "SpeakerDataError", "Utterance", "check_disjoint", "load_fsdd",
           "load_speaker_folders", "load_train_crops", "skipped_counts"]

logger = logging.getLogger("robustdistill.speaker")


class SpeakerDataError(ValueError):
    """A training or verification set that cannot be used once its unusable files are skipped:
    no usable file, a verification speaker left with fewer than two utterances, or no target
    or no non-target trial. The message names the folder and the skipped counts."""


@dataclass
class Crop:
    """A fixed training crop. ``audio``: ``(N,)`` float32 16 kHz; ``speaker``: label;
    ``key``: ``file:start_sample``."""

    speaker: str
    key: str
    audio: np.ndarray


@dataclass
class Utterance:
    """A whole verification utterance: ``audio`` ``(N,)`` float32 16 kHz."""

    speaker: str
    key: str
    audio: np.ndarray


def _prepare(audio: np.ndarray) -> np.ndarray:
    return normalize_volume(torch.from_numpy(audio)).numpy().astype(np.float32)


#: A LibriSpeech file stem, ``<speaker>-<chapter>-<utterance>``: the training speaker labels.
_LIBRISPEECH_NAME = re.compile(r"[^-]+-[^-]+-[^-]+")


def _load(path: Path, sample_rate: int, skipped: dict[str, str], set_name: str,
          min_length_s: float = 0.0, min_key: str = "min_length_s") -> np.ndarray | None:
    """``(N,)`` float32 prepared audio, or None for a file that cannot be used or is shorter
    than ``min_length_s`` seconds (reason ``too short``; ``min_key``: the setting the
    warning names), logged with its reason and recorded in ``skipped`` as
    ``{str(path): reason}``."""
    try:
        audio = load_audio(path, sample_rate)
    except AudioError as err:
        skipped[str(path)] = err.reason
        logger.warning("%s: skipping %s [%s]: %s", set_name, path, err.reason, err)
        return None
    if len(audio) < round(min_length_s * sample_rate):
        skipped[str(path)] = "too short"
        logger.warning("%s: skipping %s [too short]: %.4f s < %s=%g s", set_name, path,
                       len(audio) / sample_rate, min_key, min_length_s)
        return None
    return _prepare(audio)


def skipped_counts(skipped: dict[str, str]) -> dict[str, int]:
    """``{reason: number of files}`` of a ``skipped`` mapping (``{path: reason}``)."""
    return dict(sorted(Counter(skipped.values()).items()))


def _summary(skipped: dict[str, str]) -> str:
    counts = skipped_counts(skipped)
    return ", ".join(f"{n} {reason}" for reason, n in counts.items()) or "none"


def _speaker_skips(skipped: dict[str, str], paths: list[Path], named: int = 5) -> str:
    """One speaker's skipped files for an error: the first ``named`` of ``paths`` found in
    ``skipped`` by name with their reasons, the rest counted, and the number of other files in
    ``skipped`` (other speakers', named in the warnings logged when each was skipped)."""
    own = {path: skipped[str(path)] for path in paths if str(path) in skipped}
    names = ", ".join(f"{path.name} [{reason}]" for path, reason in list(own.items())[:named])
    text = (f"its {len(own)} skipped files ({_summary({str(p): r for p, r in own.items()})}): "
            f"{names}" + (f" and {len(own) - named} more" if len(own) > named else ""))
    if others := len(skipped) - len(own):
        text += f"; {others} files of other speakers skipped"
    return text


def _check_trials(utterances: list[Utterance], folder, skipped: dict[str, str]) -> None:
    """Raise :class:`SpeakerDataError` when a verification set has no target trial (no
    speaker with two utterances) or no non-target trial (one speaker), as
    :func:`downstream.tasks.speaker_verification.task.build_trials` would after training."""
    counts = Counter(u.speaker for u in utterances)
    if len(counts) < 2 or max(counts.values()) < 2:
        raise SpeakerDataError(
            f"{folder}: {len(utterances)} usable utterances of {len(counts)} speakers give no "
            f"target or no non-target trial (need 2+ speakers, one with 2+ utterances); skipped "
            f"files: {_summary(skipped)}")


def load_train_crops(folder: str | Path, crop_seconds: float, crops_per_utterance: int,
                     sample_rate: int = 16_000, skipped: dict[str, str] | None = None,
                     min_length_s: float = 0.0, min_key: str = "data.min_length_s"
                     ) -> list[Crop]:
    """Fixed crops of every usable utterance of a LibriSpeech-style folder (flat or nested).

    Args:
        folder: audio files named ``<speaker>-<chapter>-<utt>.<ext>``.
        crop_seconds: crop length (s).
        crops_per_utterance: at most this many crops, evenly spaced, never overlapping; fewer
            when the utterance is short (at least one).
        sample_rate: Hz of the crops (default 16 kHz).
        skipped: if given, filled with ``{path: reason}`` of every file skipped as unusable
            (reasons: :data:`robustdistill.audio.AUDIO_ERROR_REASONS`; ``"invalid"`` also for
            a file not named ``<speaker>-<chapter>-<utt>``, whose speaker is unknown;
            ``"too short"`` for one shorter than ``min_length_s``); each is also logged.
        min_length_s: utterances shorter than this (s) are skipped, not zero-padded to a
            crop (default 0: every one is kept; ``train-speaker`` passes
            ``DataConfig.min_train_seconds``).
        min_key: the setting the too-short warning names as the minimum
            (``DataConfig.min_train_key``: ``data.crop_seconds`` when the crop is it).

    Returns:
        crops ordered by file then position, each ``round(crop_seconds * sample_rate)``
        samples.

    Raises:
        FileNotFoundError: ``folder`` does not exist or holds no audio file.
        ValueError: non-positive ``crop_seconds`` or ``crops_per_utterance``.
        SpeakerDataError: no file of ``folder`` is usable.
    """
    if crop_seconds <= 0 or crops_per_utterance < 1:
        raise ValueError(f"need crop_seconds > 0 and crops_per_utterance >= 1, got "
                         f"{crop_seconds}, {crops_per_utterance}")
    files = list_audio_files(folder)
    if not files:
        raise FileNotFoundError(f"no audio files in {folder}")
    length = int(round(crop_seconds * sample_rate))
    skipped = {} if skipped is None else skipped
    crops = []
    for path in files:
        if not _LIBRISPEECH_NAME.fullmatch(Path(path).stem):  # its speaker label is unknown
            skipped[str(path)] = "invalid"
            logger.warning("train: skipping %s [invalid]: not named <speaker>-<chapter>-<utt>, "
                           "so its speaker is unknown", path)
            continue
        audio = _load(path, sample_rate, skipped, "train", min_length_s, min_key)
        if audio is None:
            continue
        speaker = Path(path).name.split("-")[0]
        n = max(1, min(crops_per_utterance, len(audio) // length))
        if len(audio) < length:
            audio = np.pad(audio, (0, length - len(audio)))
        starts = np.linspace(0, len(audio) - length, n).round().astype(int) if n > 1 else [
            (len(audio) - length) // 2]
        for s in starts:
            crops.append(Crop(speaker, f"{Path(path).name}:{int(s)}", audio[s:s + length].copy()))
    if not crops:
        raise SpeakerDataError(f"no usable training audio in {folder}: all {len(files)} files "
                               f"skipped ({_summary(skipped)})")
    if skipped:
        logger.warning("train: %d of %d files in %s skipped (%s)", len(skipped), len(files),
                       folder, _summary(skipped))
    return crops


def load_speaker_folders(folder: str | Path, sample_rate: int = 16_000,
                         skipped: dict[str, str] | None = None,
                         min_length_s: float = 0.0) -> list[Utterance]:
    """``<folder>/<speaker>/<file>`` (LibriSpeech test-other layout), whole utterances.

    Each is decoded to mono at ``sample_rate`` Hz (default 16 kHz) and its level raised to
    -30 dBFS when below (:func:`~robustdistill.speaker.ge2e.normalize_volume`). A file that
    cannot be used (:func:`robustdistill.audio.load_audio` raises
    :class:`~robustdistill.audio.AudioError`), or is shorter than ``min_length_s`` seconds
    (``too short``; default 0: none; ``train-speaker`` passes ``data.min_test_length_s``), is
    skipped, logged and recorded in ``skipped`` (``{path: reason}``) when given.

    Raises:
        FileNotFoundError: ``folder`` is not a folder, or has no speaker folder with audio.
        SpeakerDataError: no usable file; a speaker whose skipped files leave it fewer than 2
            usable utterances; or no target or no non-target trial.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"verification folder does not exist: {folder}")
    skipped = {} if skipped is None else skipped
    out, total = [], 0
    for spk in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            files = list_audio_files(spk)
        except FileNotFoundError:  # a speaker folder without audio
            continue
        total += len(files)
        usable = [Utterance(spk.name, Path(path).name, audio) for path in files
                  if (audio := _load(path, sample_rate, skipped, str(folder), min_length_s,
                                     "data.min_test_length_s")) is not None]
        if len(usable) < min(2, len(files)):
            own = {p: r for p, r in skipped.items() if Path(p).parent == spk}
            raise SpeakerDataError(
                f"{spk}: {len(usable)} of {len(files)} utterances usable, too few for a target "
                f"trial (skipped: {_summary(own)})")
        out += usable
    if not total:
        raise FileNotFoundError(f"no <speaker>/<audio> folders in {folder}")
    _check_trials(out, folder, skipped)
    if skipped:
        logger.warning("%s: %d of %d files skipped (%s)", folder, len(skipped), total,
                       _summary(skipped))
    return out


def load_fsdd(folder: str | Path, per_speaker: int, sample_rate: int = 16_000,
              skipped: dict[str, str] | None = None, min_length_s: float = 0.0
              ) -> list[Utterance]:
    """FSDD recordings ``{digit}_{speaker}_{take}.wav`` resampled to ``sample_rate`` Hz
    (default 16 kHz): per speaker, the first ``per_speaker`` usable files in (take, digit)
    order, so every digit is represented. Levels below -30 dBFS are raised to it, as in
    :func:`load_speaker_folders`. A file that cannot be used, or shorter than ``min_length_s``
    seconds (default 0: none), is skipped (logged, recorded in ``skipped`` as
    ``{path: reason}`` when given) and the speaker's next file taken instead.

    Raises:
        FileNotFoundError: ``folder`` does not exist or holds no FSDD file.
        ValueError: ``per_speaker < 2`` (no target trial).
        SpeakerDataError: a speaker whose skipped files leave it fewer than 2 usable ones (the
            message names that speaker's skipped files, up to 5, and counts the others), or
            no target or no non-target trial.
    """
    if per_speaker < 2:
        raise ValueError(f"per_speaker must be >= 2 for target trials, got {per_speaker}")
    by_speaker: dict[str, list[tuple[int, int, Path]]] = {}
    for path in list_audio_files(folder):
        parts = Path(path).stem.split("_")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            continue
        by_speaker.setdefault(parts[1], []).append((int(parts[2]), int(parts[0]), Path(path)))
    if not by_speaker:
        raise FileNotFoundError(f"no FSDD files ({{digit}}_{{speaker}}_{{take}}.wav) in {folder}")
    skipped = {} if skipped is None else skipped
    out = []
    for spk in sorted(by_speaker):
        taken = []
        for _, _, path in sorted(by_speaker[spk]):
            if len(taken) == per_speaker:
                break
            if (audio := _load(path, sample_rate, skipped, str(folder), min_length_s,
                               "data.min_test_length_s")) is not None:
                taken.append(Utterance(spk, path.name, audio))
        if len(taken) < min(2, len(by_speaker[spk])):
            raise SpeakerDataError(
                f"{folder}: FSDD speaker {spk!r} has {len(taken)} usable files of "
                f"{len(by_speaker[spk])}, too few for a target trial; "
                f"{_speaker_skips(skipped, [path for *_, path in sorted(by_speaker[spk])])}")
        out += taken
    _check_trials(out, folder, skipped)
    if skipped:
        logger.warning("%s: %d FSDD files skipped (%s)", folder, len(skipped), _summary(skipped))
    return out


def check_disjoint(train_speakers, test_speakers, name: str) -> None:
    """Raise ValueError naming the shared speakers if a test set has training speakers."""
    shared = sorted(set(train_speakers) & set(test_speakers))
    if shared:
        raise ValueError(f"{name}: speakers {shared[:10]} are also training speakers")
