"""Hugging Face ``datasets`` sources: :func:`load_hf_split` and the map-style
:class:`HFAudioDataset`, decoding audio without torchcodec (``Audio(decode=False)``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..audio import AudioError, load_audio, probe_audio
from .cropped import _CroppedAudioDataset

logger = logging.getLogger(__name__)


def _audio_value(value: Any) -> bytes | str:
    """An ``Audio(decode=False)`` cell (``{"bytes", "path"}`` or a path) -> bytes or path."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            return value["path"]
        raise AudioError(f"audio cell has neither bytes nor path: {sorted(value)}")
    if isinstance(value, str | bytes):
        return value
    raise AudioError(f"unexpected audio cell of type {type(value).__name__}")


def _cell_identity(value: Any) -> tuple[str | None, str | None]:
    """``(path, blake2b hex digest of the bytes)`` of an audio cell, None where absent.

    Identifies a streamed example whatever the sharding or order of the stream: two cells
    share it only when both their paths and their encoded bytes are equal.
    """
    if isinstance(value, dict):
        path, data = value.get("path"), value.get("bytes")
    elif isinstance(value, bytes):
        path, data = None, value
    else:
        path, data = value, None
    digest = hashlib.blake2b(data, digest_size=16).hexdigest() if data else None
    return (str(path) if path else None), digest


def _decode_cell(value: Any, name: str) -> np.ndarray:
    """Decode one audio cell (see :func:`_audio_value`) to ``(S,)`` float32 at 16 kHz.

    Raises:
        AudioError: naming ``name``, with the reason :func:`~robustdistill.audio.load_audio`
            gave (``"silent"``, ``"non-finite"``, ...; what run summaries count).
    """
    try:
        return load_audio(_audio_value(value))
    except AudioError as err:
        raise AudioError(f"{name}: {err}", err.reason) from err


def _probe_cell(value: Any) -> tuple[int, int]:
    info = probe_audio(_audio_value(value))
    return info.frames, info.sample_rate


class HFAudioDataset(_CroppedAudioDataset):
    """A map-style Hugging Face ``datasets`` split, decoded without torchcodec.

    The audio column is cast to ``Audio(decode=False)``; its bytes (or path) are decoded by
    :func:`robustdistill.audio.load_audio`. The construction scan reads every row's audio
    header once (the whole column is read from disk once: for corpora too large for that,
    use :class:`StreamingAudioDataset`). Item ``index`` is the position among the kept rows;
    :attr:`rows` maps it back to the row of ``dataset``.

    Args:
        dataset: a ``datasets.Dataset`` (see :func:`load_hf_split`).
        audio_column: the column holding the audio.
        max_length_s, min_length_s, seed, random_crop: as :class:`AudioFileDataset`.

    Raises:
        ValueError: ``audio_column`` is not a column, bad lengths, no usable row.
    """

    def __init__(
        self,
        dataset,
        audio_column: str = "audio",
        max_length_s: float | None = 4.0,
        min_length_s: float = 1.0,
        seed: int = 0,
        random_crop: bool = True,
    ) -> None:
        self._dataset = _cast_audio(dataset, audio_column).select_columns([audio_column])
        self.audio_column = audio_column
        super().__init__(range(len(self._dataset)), max_length_s, min_length_s, seed, random_crop)

    @classmethod
    def from_hub_or_disk(
        cls,
        name: str,
        config: str | None = None,
        split: str = "train",
        audio_column: str = "audio",
        **kwargs,
    ) -> HFAudioDataset:
        """Load ``name`` with :func:`load_hf_split` (non-streaming) and wrap it."""
        dataset = load_hf_split(name, config, split, audio_column, streaming=False)
        return cls(dataset, audio_column, **kwargs)

    @property
    def rows(self) -> list[int]:
        """Row of the underlying dataset for each item."""
        return list(self._sources)

    def _probe_all(self, sources: list[int]) -> Iterator[tuple[int, int] | Exception]:
        # Batched reads: one pass over the column, one batch of encoded audio in memory.
        for batch in self._dataset.iter(batch_size=64):
            for cell in batch[self.audio_column]:
                try:
                    yield _probe_cell(cell)
                except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as err:
                    yield err

    def _decode(self, source: int) -> np.ndarray:
        return _decode_cell(self._dataset[int(source)][self.audio_column], self._name(source))

    def _name(self, source: int) -> str:
        return f"row {source}"


def _cast_audio(dataset, audio_column: str):
    """Check the column exists and cast it to ``Audio(decode=False)`` (no torchcodec).

    Raises:
        ValueError: ``audio_column`` is not a column, or holds decoded ``{"array",
            "sampling_rate"}`` structs (casting those re-encodes them, which needs torchcodec).
    """
    from datasets import Audio

    columns = dataset.column_names
    if columns is not None and audio_column not in columns:
        raise ValueError(f"audio_column {audio_column!r} is not a column; columns: {columns}")
    features = dataset.features
    current = features.get(audio_column) if features is not None else None
    if isinstance(current, Audio) and not current.decode:
        return dataset
    if isinstance(current, dict) and "array" in current:
        raise ValueError(
            f"audio_column {audio_column!r} holds decoded arrays ({sorted(current)}), not "
            "encoded audio: store the files' bytes or paths (Audio(decode=False) cells)"
        )
    return dataset.cast_column(audio_column, Audio(decode=False))


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by ``save_to_disk`` (a ``DatasetDict`` or a single ``Dataset``)."""
    return path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json"))


def is_single_saved_dataset(name: str) -> bool:
    """Whether ``name`` is a ``save_to_disk`` folder holding one ``Dataset`` (no splits)."""
    path = Path(name)
    return _is_saved_dataset(path) and not (path / "dataset_dict.json").exists()


def load_hf_split(
    name: str,
    config: str | None = None,
    split: str = "train",
    audio_column: str = "audio",
    streaming: bool = False,
):
    """Load one split of a ``datasets`` dataset with its audio column left undecoded.

    ``name`` is a folder written by ``save_to_disk`` (read with ``load_from_disk``; a folder
    holding a single ``Dataset`` has no splits and serves only ``split="train"`` or its own
    split name), or anything ``datasets.load_dataset`` accepts (a hub name, a local folder of
    data files).

    Args:
        name: dataset name or local path.
        config: configuration name, or None.
        split: split name.
        audio_column: the audio column, cast to ``Audio(decode=False)``.
        streaming: return a ``datasets.IterableDataset``.

    Returns:
        ``datasets.Dataset``, or ``datasets.IterableDataset`` when ``streaming``.

    Raises:
        ValueError: unknown split of a saved dataset, missing audio column; a dataset that
            ``datasets`` reads only with torchcodec (not installed: e.g. a folder of audio
            files, which its ``audiofolder`` builder encodes), found for a stream by reading
            its first row.
        Other errors of ``datasets.load_dataset`` (unknown name, no network) propagate
        unchanged.
    """
    import datasets

    path = Path(name)
    if _is_saved_dataset(path):
        if config is not None:
            raise ValueError(f"dataset_config {config!r} given for a saved dataset at {path}")
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"split {split!r} not in {path}; splits: {sorted(loaded)}")
            dataset = loaded[split]
        else:
            own = str(loaded.split) if loaded.split is not None else None
            if split not in ("train", own):
                raise ValueError(
                    f"{path} holds a single dataset (split {own!r}), not split {split!r}"
                )
            dataset = loaded
        if streaming:
            dataset = dataset.to_iterable_dataset(num_shards=max(1, min(len(dataset), 64)))
    else:
        with _torchcodec_needed(name):
            dataset = datasets.load_dataset(name, config, split=split, streaming=streaming)
    dataset = _cast_audio(dataset, audio_column)
    if streaming:  # a stream encodes lazily: read its first row now, not in the first step
        with _torchcodec_needed(name):
            next(iter(dataset.take(1)), None)
    return dataset


@contextmanager
def _torchcodec_needed(name: str):
    """Turn ``datasets``' failure to import torchcodec (the cause of its error, or the error
    itself) into a ``ValueError`` that says what to do: ``datasets`` reads a folder of audio
    files with its ``audiofolder`` builder, which encodes each file's path with torchcodec."""
    try:
        yield
    except Exception as err:
        cause = err
        while cause is not None and not (isinstance(cause, ImportError)
                                         and "torchcodec" in str(cause)):
            cause = cause.__cause__
        if cause is None:
            raise
        raise ValueError(
            f"datasets cannot read {name} without torchcodec ({cause}): a folder of audio files "
            "goes in data.train_dir / data.validation_dir instead; a datasets dataset needs its "
            "audio as Audio(decode=False) cells (save_to_disk, parquet), or torchcodec "
            "installed") from err
