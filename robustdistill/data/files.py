"""A folder of audio files as a map-style dataset (:class:`AudioFileDataset`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..audio import load_audio, load_audio_window, probe_audio
from .cropped import _CroppedAudioDataset

logger = logging.getLogger(__name__)


class AudioFileDataset(_CroppedAudioDataset):
    """Audio files, each decoded to mono 16 kHz and randomly cropped (map-style).

    Lengths are read once at construction with ``soundfile.info`` (header only). Files that
    cannot be opened, or that are shorter than ``min_length_s`` after resampling to 16 kHz,
    are dropped with one warning. Item ``index`` is the position in the kept, sorted-as-given
    file list (:attr:`files`).

    Args:
        files: audio file paths (e.g. from :func:`robustdistill.audio.list_audio_files`).
        max_length_s: crop length cap in seconds; None keeps whole files.
        min_length_s: shorter files are dropped, in seconds.
        seed: crop seed (>= 0).
        random_crop: False for validation: the crop depends on the index only.

    Raises:
        ValueError: bad lengths or seed, or no usable file at all.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        max_length_s: float | None = 4.0,
        min_length_s: float = 1.0,
        seed: int = 0,
        random_crop: bool = True,
    ) -> None:
        super().__init__([Path(f) for f in files], max_length_s, min_length_s, seed, random_crop)

    @property
    def files(self) -> list[Path]:
        """The kept files, in item order."""
        return list(self._sources)

    def _probe(self, source: Path) -> tuple[int, int]:
        info = probe_audio(source)  # AudioError names permission, empty or non-audio files
        return info.frames, info.sample_rate

    def _decode(self, source: Path) -> np.ndarray:
        return load_audio(source)

    def _decode_window(self, source: Path, start: int, num_samples: int) -> np.ndarray:
        return load_audio_window(source, start, num_samples)

    def _name(self, source: Path) -> str:
        return str(source)
