"""Speaker-labelled audio for IML-KD: fixed training crops and verification sets.

* Training: LibriSpeech ``train-clean-100`` as in ``../shared/data/librispeech-mini`` (one
  utterance per speaker, speaker = first field of the file name): ``crops_per_utterance``
  crops of ``crop_seconds`` at evenly spaced, fixed positions (fixed so that the teacher's maps
  are computed once and cached); an utterance shorter than a crop is zero-padded at the end
  (as Resemblyzer pads its partials).
* Verification: LibriSpeech ``test-other`` (``<speaker>/<file>``) and FSDD
  (``{digit}_{speaker}_{take}.wav``, 8 kHz, resampled to 16 kHz with soxr), whole utterances.

Every waveform is volume-normalised to -30 dBFS (raise only), the GE2E teacher's input
convention; teacher and student see the same audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustdistill.audio import list_audio_files, load_audio

from .ge2e import normalize_volume

__all__ = ["Crop", "Utterance", "check_disjoint", "load_fsdd", "load_speaker_folders",
           "load_train_crops"]


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


def load_train_crops(folder: str | Path, crop_seconds: float, crops_per_utterance: int,
                     sample_rate: int = 16_000) -> list[Crop]:
    """Fixed crops of every utterance of a LibriSpeech-style folder (flat or nested).

    Args:
        folder: audio files named ``<speaker>-<chapter>-<utt>.<ext>``.
        crop_seconds: crop length (s).
        crops_per_utterance: at most this many crops, evenly spaced, never overlapping; fewer
            when the utterance is short (at least one).

    Returns:
        crops ordered by file then position.

    Raises:
        FileNotFoundError: no audio in ``folder``.
        ValueError: non-positive ``crop_seconds`` or ``crops_per_utterance``.
    """
    if crop_seconds <= 0 or crops_per_utterance < 1:
        raise ValueError(f"need crop_seconds > 0 and crops_per_utterance >= 1, got "
                         f"{crop_seconds}, {crops_per_utterance}")
    files = list_audio_files(folder)
    if not files:
        raise FileNotFoundError(f"no audio files in {folder}")
    length = int(round(crop_seconds * sample_rate))
    crops = []
    for path in files:
        audio = _prepare(load_audio(path, sample_rate))
        speaker = Path(path).name.split("-")[0]
        n = max(1, min(crops_per_utterance, len(audio) // length))
        if len(audio) < length:
            audio = np.pad(audio, (0, length - len(audio)))
        starts = np.linspace(0, len(audio) - length, n).round().astype(int) if n > 1 else [
            (len(audio) - length) // 2]
        for s in starts:
            crops.append(Crop(speaker, f"{Path(path).name}:{int(s)}", audio[s:s + length].copy()))
    return crops


def load_speaker_folders(folder: str | Path, sample_rate: int = 16_000) -> list[Utterance]:
    """``<folder>/<speaker>/<file>`` (LibriSpeech test-other layout), whole utterances.

    Each is decoded to mono at ``sample_rate`` Hz (default 16 kHz) and its level raised to
    -30 dBFS when below (:func:`~robustdistill.speaker.ge2e.normalize_volume`).

    Raises:
        FileNotFoundError: no speaker folder with audio.
        AudioError: a file that cannot be used (:func:`robustdistill.audio.load_audio`).
    """
    out = []
    for spk in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        for path in list_audio_files(spk):
            out.append(Utterance(spk.name, Path(path).name,
                                 _prepare(load_audio(path, sample_rate))))
    if not out:
        raise FileNotFoundError(f"no <speaker>/<audio> folders in {folder}")
    return out


def load_fsdd(folder: str | Path, per_speaker: int, sample_rate: int = 16_000
              ) -> list[Utterance]:
    """FSDD recordings ``{digit}_{speaker}_{take}.wav`` resampled to ``sample_rate`` Hz
    (default 16 kHz): per speaker, the first ``per_speaker`` files in (take, digit) order, so
    every digit is represented. Levels below -30 dBFS are raised to it, as in
    :func:`load_speaker_folders`.

    Raises:
        FileNotFoundError: no FSDD file in ``folder``.
        ValueError: ``per_speaker < 2`` (no target trial).
        AudioError: a file that cannot be used (:func:`robustdistill.audio.load_audio`).
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
    out = []
    for spk in sorted(by_speaker):
        for _, _, path in sorted(by_speaker[spk])[:per_speaker]:
            out.append(Utterance(spk, path.name, _prepare(load_audio(path, sample_rate))))
    return out


def check_disjoint(train_speakers, test_speakers, name: str) -> None:
    """Raise ValueError naming the shared speakers if a test set has training speakers."""
    shared = sorted(set(train_speakers) & set(test_speakers))
    if shared:
        raise ValueError(f"{name}: speakers {shared[:10]} are also training speakers")
