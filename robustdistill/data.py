"""Audio datasets, sampler and batching for distillation (and downstream evaluation).

Three sources give the same items, ``{"waveform": float32 (S,), "index": int}``, mono at 16 kHz
and randomly cropped to at most ``max_length_s``:

* :class:`AudioFileDataset`: a folder of audio files (wav/flac/ogg/mp3, read by soundfile
  through :func:`robustdistill.audio.load_audio`);
* :class:`HFAudioDataset`: a map-style Hugging Face ``datasets`` split (hub name or local path);
* :class:`StreamingAudioDataset`: a streaming ``datasets`` split, sharded by rank.

Audio through ``datasets`` is never decoded by ``datasets`` itself (its 5.x decoder needs
torchcodec and FFmpeg): the audio column is cast to ``Audio(decode=False)`` and the encoded
``bytes`` (or ``path``) are decoded with :func:`~robustdistill.audio.load_audio`.

Randomness is a pure function of ``(seed, epoch, index)``, never of the global RNG, the worker
or the process: :class:`ShardedRandomSampler` yields ``(index, epoch)`` keys, and the dataset
draws the crop start from ``np.random.default_rng([seed, epoch, index])``. A run therefore
resumes exactly from ``(epoch, samples consumed)`` with :meth:`ShardedRandomSampler.set_start`.

Bad audio never stops a run. Files that are unreadable or shorter than ``min_length_s`` are
dropped when the dataset is built, with one warning giving the count and the first names. A
file that fails at read time (corrupt since the scan, NaN/Inf samples, which a header scan
cannot see) is logged (once per process) and replaced by the next readable item (``index + 1``,
``index + 2``, ...), so the batch stays full and deterministic; only when
:data:`MAX_READ_FAILURES` items in a row fail does :class:`~robustdistill.audio.AudioError`
stop the run, since the data is then broken, not noisy.

Tensor legend (lhotse style):

* ``B``: batch size (utterances);
* ``S``: samples at 16 kHz; ``S_max`` the longest in the batch;
* ``waveforms``: ``(B, S_max)`` float32, zero after each utterance's end;
* ``lengths``: ``(B,)`` int64, real samples per utterance (``lengths[b] <= S_max``);
* ``indices``: ``(B,)`` int64, dataset index of each utterance (see each dataset for meaning).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Sampler

from .audio import SAMPLE_RATE, AudioError, list_audio_files, load_audio
from .synthetic import write_synthetic_corpus

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_READ_FAILURES",
    "AudioFileDataset",
    "DataConfig",
    "HFAudioDataset",
    "ShardedRandomSampler",
    "StreamingAudioDataset",
    "build_dataloader",
    "build_datasets",
    "collate_waveforms",
    "load_hf_split",
]

#: Read-time failures in a row (distinct items) after which a dataset gives up with an error.
MAX_READ_FAILURES = 16
#: How many file names a drop warning lists.
_NAMES_IN_WARNING = 5
#: Fixed seed of the validation hold-out: the held-out items depend on the corpus, not on the
#: run seed, so validation losses of runs with different seeds are comparable.
_HOLDOUT_SEED = 20_240_617


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Where the training audio comes from and how it is cut and batched.

    Exactly one training source: ``train_dir`` (a folder), ``train_dataset`` (a ``datasets``
    name or local path) or ``synthetic_items > 0`` (generated speech-like audio, for the
    offline demo). :func:`build_datasets` raises if none is set. Validation audio comes from
    ``validation_dir``, or ``validation_split`` of ``train_dataset``, or else a deterministic
    hold-out of ``validation_fraction`` of the training items (at most
    ``max_validation_items``).

    Raises:
        ValueError: in ``__post_init__``, naming the field, for contradictory or out-of-range
            settings (two training sources, ``min_length_s > max_length_s``, a non-positive
            ``batch_size``, ...).
    """

    train_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of training audio, searched recursively (wav/flac/ogg/mp3)."},
    )
    train_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Hugging Face `datasets` name, or a local folder (written by save_to_disk, "
            "or data files load_dataset can read). Alternative to train_dir."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration name of train_dataset, if it has several."}
    )
    train_split: str = field(
        default="train", metadata={"help": "Split of train_dataset to train on."}
    )
    audio_column: str = field(
        default="audio", metadata={"help": "Column of train_dataset holding the audio."}
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream train_dataset instead of downloading/reading it whole."},
    )
    shuffle_buffer: int = field(
        default=1000,
        metadata={"help": "Streaming only: shuffle buffer size in examples (0: no shuffling)."},
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "Folder of validation audio (searched recursively)."}
    )
    validation_split: str | None = field(
        default=None, metadata={"help": "Split of train_dataset used for validation."}
    )
    validation_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Without validation_dir/validation_split: fraction of the training items "
            "held out for validation (deterministic, at least 1, at most max_validation_items)."
        },
    )
    max_validation_items: int = field(
        default=200, metadata={"help": "At most this many validation utterances."}
    )
    max_length_s: float = field(
        default=4.0, metadata={"help": "Random crop length cap in seconds (longer audio is cut)."}
    )
    min_length_s: float = field(
        default=1.0, metadata={"help": "Audio shorter than this (seconds) is dropped, with a log."}
    )
    batch_size: int = field(default=8, metadata={"help": "Utterances per batch and per process."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    synthetic_items: int = field(
        default=0,
        metadata={"help": "Train on this many generated speech-like utterances (offline demo)."},
    )
    synthetic_seconds: list[float] = field(
        default_factory=lambda: [2.0, 5.0],
        metadata={"help": "Duration range (min max) in seconds of the synthetic utterances."},
    )
    synthetic_dir: str | None = field(
        default=None,
        metadata={"help": "Where to write the synthetic corpus (default: a temporary folder)."},
    )

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"DataConfig.{name}: {message}")

        sources = [n for n in ("train_dir", "train_dataset") if getattr(self, n)]
        if len(sources) == 2:
            fail("train_dataset", "set either train_dir or train_dataset, not both")
        if self.synthetic_items < 0:
            fail("synthetic_items", f"must be >= 0, got {self.synthetic_items}")
        if self.synthetic_items > 0 and sources:
            fail("synthetic_items", f"synthetic audio cannot be combined with {sources[0]}")
        if not self.train_dataset:
            for name in ("dataset_config", "validation_split"):
                if getattr(self, name):
                    fail(name, "only applies to train_dataset, which is not set")
            if self.streaming:
                fail("streaming", "only applies to train_dataset, which is not set")
        if self.validation_dir and self.validation_split:
            fail("validation_split", "set either validation_dir or validation_split, not both")
        if self.validation_split and self.validation_split == self.train_split:
            fail("validation_split", f"is the training split {self.train_split!r}")
        if not self.audio_column:
            fail("audio_column", "must not be empty")
        if self.max_length_s <= 0:
            fail("max_length_s", f"must be positive, got {self.max_length_s}")
        if self.min_length_s < 0:
            fail("min_length_s", f"must be >= 0, got {self.min_length_s}")
        if self.min_length_s > self.max_length_s:
            fail("min_length_s", f"{self.min_length_s} > max_length_s {self.max_length_s}")
        if not 0 < self.validation_fraction < 1:
            fail("validation_fraction", f"must be in (0, 1), got {self.validation_fraction}")
        if self.max_validation_items <= 0:
            fail("max_validation_items", f"must be positive, got {self.max_validation_items}")
        if self.batch_size <= 0:
            fail("batch_size", f"must be positive, got {self.batch_size}")
        if self.num_workers < 0:
            fail("num_workers", f"must be >= 0, got {self.num_workers}")
        if self.shuffle_buffer < 0:
            fail("shuffle_buffer", f"must be >= 0, got {self.shuffle_buffer}")
        self.synthetic_seconds = [float(s) for s in self.synthetic_seconds]
        seconds = self.synthetic_seconds
        if len(seconds) != 2 or not 0 < seconds[0] <= seconds[1]:
            fail("synthetic_seconds", f"must be [min, max] with 0 < min <= max, got {seconds}")

    @property
    def source(self) -> str | None:
        """``"folder"``, ``"dataset"``, ``"synthetic"``, or None when no source is set."""
        if self.train_dir:
            return "folder"
        if self.train_dataset:
            return "dataset"
        if self.synthetic_items > 0:
            return "synthetic"
        return None


# --------------------------------------------------------------------------------------------
# Map-style datasets
# --------------------------------------------------------------------------------------------


def _to_samples(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * SAMPLE_RATE)


def _parse_key(key: Any) -> tuple[int, int]:
    """``(index, epoch)`` or a plain index (epoch 0) -> ``(index, epoch)``."""
    if isinstance(key, tuple | list):
        if len(key) != 2:
            raise TypeError(f"dataset key must be an index or (index, epoch), got {key!r}")
        return int(key[0]), int(key[1])
    if isinstance(key, int | np.integer) or (torch.is_tensor(key) and key.ndim == 0):
        return int(key), 0
    raise TypeError(f"dataset key must be an index or (index, epoch), got {key!r}")


def _crop(waveform: np.ndarray, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """``(S,)`` -> ``(min(S, max_samples),)``, a window starting uniformly in ``[0, S - max]``."""
    if max_samples is None or len(waveform) <= max_samples:
        return waveform
    start = int(rng.integers(0, len(waveform) - max_samples + 1))
    return waveform[start : start + max_samples]


def _length_at_16k(frames: int, sample_rate: int) -> int:
    """Samples after resampling ``frames`` at ``sample_rate`` to 16 kHz (soxr rounds)."""
    return round(frames * SAMPLE_RATE / sample_rate)


class _CroppedAudioDataset(torch.utils.data.Dataset):
    """Shared logic of the map-style datasets: scan, filter, read with fallback, crop.

    Subclasses provide ``_probe(source) -> (frames, sample_rate)`` (header only),
    ``_decode(source) -> (S,) float32 at 16 kHz`` and ``_name(source) -> str``.
    """

    def __init__(
        self,
        sources: Sequence[Any],
        max_length_s: float | None,
        min_length_s: float,
        seed: int,
        random_crop: bool,
    ) -> None:
        if max_length_s is not None and max_length_s <= 0:
            raise ValueError(f"max_length_s must be positive or None, got {max_length_s}")
        if min_length_s < 0:
            raise ValueError(f"min_length_s must be >= 0, got {min_length_s}")
        if max_length_s is not None and min_length_s > max_length_s:
            raise ValueError(f"min_length_s {min_length_s} > max_length_s {max_length_s}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.max_length_s = max_length_s
        self.min_length_s = min_length_s
        self.seed = int(seed)
        self.random_crop = random_crop
        self._max_samples = _to_samples(max_length_s)
        self._min_samples = _to_samples(min_length_s)
        self._bad: set[int] = set()  # items that failed at read time, in this process
        self._sources, self.lengths = self._scan(list(sources))

    def _probe_all(self, sources: list[Any]) -> Iterator[tuple[int, int] | Exception]:
        """``(frames, sample_rate)`` of each source's header, or the error reading it."""
        for source in sources:
            try:
                yield self._probe(source)
            except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as err:
                yield err

    def _scan(self, sources: list[Any]) -> tuple[list[Any], np.ndarray]:
        """Read every header once; drop unreadable and too-short items with one warning."""
        kept, lengths, too_short, unreadable = [], [], [], []
        for source, probe in zip(sources, self._probe_all(sources), strict=True):
            if isinstance(probe, Exception):
                unreadable.append(f"{self._name(source)} ({probe})")
                continue
            length = _length_at_16k(*probe)
            if length < max(self._min_samples, 1):
                too_short.append(f"{self._name(source)} ({length / SAMPLE_RATE:.2f} s)")
                continue
            kept.append(source)
            lengths.append(length)
        if too_short or unreadable:
            logger.warning(
                "%s: dropped %d of %d items: %d shorter than min_length_s=%.2f s, %d unreadable; "
                "first: %s",
                type(self).__name__,
                len(too_short) + len(unreadable),
                len(sources),
                len(too_short),
                self.min_length_s,
                len(unreadable),
                "; ".join((unreadable + too_short)[:_NAMES_IN_WARNING]),
            )
        if not kept:
            raise ValueError(
                f"{type(self).__name__}: none of the {len(sources)} items is usable "
                f"(min_length_s={self.min_length_s}); see the warning above"
            )
        return kept, np.asarray(lengths, dtype=np.int64)

    def _probe(self, source: Any) -> tuple[int, int]:
        raise NotImplementedError

    def _decode(self, source: Any) -> np.ndarray:
        raise NotImplementedError

    def _name(self, source: Any) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._sources)

    @property
    def names(self) -> list[str]:
        """A readable name per item (file path, or dataset row)."""
        return [self._name(s) for s in self._sources]

    @property
    def total_seconds(self) -> float:
        """Duration of all kept items in seconds (before cropping)."""
        return float(self.lengths.sum()) / SAMPLE_RATE

    def subset(self, positions: Sequence[int], random_crop: bool | None = None):
        """A copy holding only the items at ``positions`` (no re-scan), indexed 0..len-1.

        Args:
            positions: item positions in this dataset.
            random_crop: override the crop mode (validation subsets use ``False``).
        """
        positions = [int(p) for p in positions]
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._sources = [self._sources[p] for p in positions]
        new.lengths = self.lengths[positions] if positions else self.lengths[:0]
        new._bad = set()
        if random_crop is not None:
            new.random_crop = random_crop
        return new

    def __getitem__(self, key: Any) -> dict[str, Any]:
        """Decode and crop one item.

        Args:
            key: ``(index, epoch)`` from :class:`ShardedRandomSampler`, or a plain ``index``
                (epoch 0).

        Returns:
            ``{"waveform": (S,) float32 with S <= max_length samples, "index": int}``. The
            crop start comes from ``np.random.default_rng([seed, epoch, index])`` with
            ``random_crop=True``, from ``np.random.default_rng(index)`` (same every epoch and
            seed) with ``random_crop=False``. ``index`` is the item actually returned: a later
            one when ``index`` failed to decode (see the module docstring).

        Raises:
            IndexError: ``index`` out of range.
            AudioError: :data:`MAX_READ_FAILURES` items in a row failed to decode, or all
                items have failed.
        """
        index, epoch = _parse_key(key)
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        failures = 0
        last_error = ""
        for offset in range(n):
            candidate = (index + offset) % n
            if candidate in self._bad:
                continue
            source = self._sources[candidate]
            try:
                waveform = self._decode(source)
                if len(waveform) < self._min_samples:
                    raise AudioError(
                        f"{self._name(source)}: decoded {len(waveform) / SAMPLE_RATE:.2f} s, "
                        f"shorter than min_length_s={self.min_length_s}"
                    )
            except AudioError as err:
                self._bad.add(candidate)
                last_error = str(err)
                logger.warning("skipping item %d at read time: %s", candidate, err)
                failures += 1
                if failures >= MAX_READ_FAILURES:
                    break
                continue
            if self.random_crop:
                rng = np.random.default_rng([self.seed, epoch, candidate])
            else:
                rng = np.random.default_rng(candidate)
            return {"waveform": _crop(waveform, self._max_samples, rng), "index": candidate}
        raise AudioError(
            f"{type(self).__name__}: no item from index {index} on could be read: "
            f"{failures} failed to decode in this call, {len(self._bad)} of {n} in this process; "
            f"last error: {last_error or 'see the earlier warnings'}"
        )


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
        info = sf.info(str(source))
        return info.frames, info.samplerate

    def _decode(self, source: Path) -> np.ndarray:
        return load_audio(source)

    def _name(self, source: Path) -> str:
        return str(source)


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


def _decode_cell(value: Any, name: str) -> np.ndarray:
    try:
        return load_audio(_audio_value(value))
    except AudioError as err:
        raise AudioError(f"{name}: {err}") from err


def _probe_cell(value: Any) -> tuple[int, int]:
    source = _audio_value(value)
    info = sf.info(io.BytesIO(source) if isinstance(source, bytes) else source)
    return info.frames, info.samplerate


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


# --------------------------------------------------------------------------------------------
# datasets loading and streaming
# --------------------------------------------------------------------------------------------


def _cast_audio(dataset, audio_column: str):
    """Check the column exists and cast it to ``Audio(decode=False)`` (no torchcodec)."""
    from datasets import Audio

    columns = dataset.column_names
    if columns is not None and audio_column not in columns:
        raise ValueError(f"audio_column {audio_column!r} is not a column; columns: {columns}")
    features = dataset.features
    current = features.get(audio_column) if features is not None else None
    if isinstance(current, Audio) and not current.decode:
        return dataset
    return dataset.cast_column(audio_column, Audio(decode=False))


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by ``save_to_disk`` (a ``DatasetDict`` or a single ``Dataset``)."""
    return path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json"))


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
        ValueError: unknown split of a saved dataset, missing audio column.
        Errors of ``datasets.load_dataset`` (unknown name, no network) propagate unchanged.
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
        dataset = datasets.load_dataset(name, config, split=split, streaming=streaming)
    return _cast_audio(dataset, audio_column)


class StreamingAudioDataset(torch.utils.data.IterableDataset):
    """A streaming ``datasets`` split as cropped 16 kHz waveforms, sharded by rank.

    The stream is cast to ``Audio(decode=False)``, optionally shuffled with a buffer
    (``datasets``' shard-order plus buffer shuffle, reseeded by :meth:`set_epoch`), and split
    across ranks with ``datasets.distributed.split_dataset_by_node``; DataLoader workers then
    share this rank's shards (``datasets`` does that itself). Items that fail to decode or
    are shorter than ``min_length_s`` are skipped: the first few with a warning each, then
    counted in :attr:`skipped`.

    ``index`` in each item is its position in this rank's (and worker's) stream for the epoch;
    the crop start comes from ``np.random.default_rng([seed, epoch, rank, worker, index])``.

    Resume guarantees (:meth:`state_dict` / :meth:`load_state_dict`, which wrap those of
    ``datasets.IterableDataset``): with ``num_workers=0`` and no shuffle buffer, resuming
    yields exactly the items that were not yet consumed, with the same crops. With a shuffle
    buffer, the examples that were in the buffer at the checkpoint are lost (``datasets``
    refills it). With ``num_workers > 0`` the iteration runs in the worker processes and this
    object's :meth:`state_dict` records only the epoch, so resuming restarts that epoch
    (``torchdata``'s ``StatefulDataLoader`` collects per-worker states; not tested here). A
    loaded state applies to the next iteration only; :meth:`set_epoch` discards it.

    Args:
        dataset: a ``datasets.IterableDataset`` (see :func:`load_hf_split`).
        audio_column: the column holding the audio.
        max_length_s, min_length_s, seed, random_crop: as :class:`AudioFileDataset`.
        rank, world_size: this process and the number of processes.
        shuffle_buffer: shuffle buffer size in examples; 0: no buffer shuffle (``datasets``
            may still reorder whole shards from epoch 1 on, deterministically).
    """

    _MAX_LOGGED_SKIPS = 5

    def __init__(
        self,
        dataset,
        audio_column: str = "audio",
        max_length_s: float | None = 4.0,
        min_length_s: float = 1.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 0,
        random_crop: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world {world_size}")
        if max_length_s is not None and min_length_s > max_length_s:
            raise ValueError(f"min_length_s {min_length_s} > max_length_s {max_length_s}")
        if seed < 0 or shuffle_buffer < 0:
            raise ValueError(f"seed and shuffle_buffer must be >= 0, got {seed}, {shuffle_buffer}")
        stream = _cast_audio(dataset, audio_column)
        if shuffle_buffer > 0:
            stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
        self._base = stream
        self.audio_column = audio_column
        self.max_length_s = max_length_s
        self.min_length_s = min_length_s
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.random_crop = random_crop
        self._max_samples = _to_samples(max_length_s)
        self._min_samples = _to_samples(min_length_s)
        self.epoch = 0
        self.position = 0  # raw examples consumed from this rank's stream this epoch
        self.skipped = 0
        self._stream = None
        self._pending_state: dict | None = None
        self._resuming = False

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: reseeds the shuffle and the crops, drops a loaded state."""
        self.epoch = int(epoch)
        self.position = 0
        self._stream = None
        self._pending_state = None
        self._resuming = False

    def _build_stream(self):
        from datasets.distributed import split_dataset_by_node

        stream = split_dataset_by_node(self._base, rank=self.rank, world_size=self.world_size)
        stream.set_epoch(self.epoch)
        if self._pending_state is not None:
            stream.load_state_dict(self._pending_state)
            self._pending_state = None
        return stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else 0
        if not self._resuming:
            self.position = 0
        self._resuming = False
        self._stream = self._build_stream()
        logged = 0
        for example in self._stream:
            position = self.position
            self.position += 1
            name = f"example {position} of rank {self.rank}"
            try:
                waveform = _decode_cell(example[self.audio_column], name)
                if len(waveform) < max(self._min_samples, 1):
                    raise AudioError(
                        f"{name}: {len(waveform) / SAMPLE_RATE:.2f} s < "
                        f"min_length_s={self.min_length_s}"
                    )
            except AudioError as err:
                self.skipped += 1
                if logged < self._MAX_LOGGED_SKIPS:
                    logged += 1
                    more = " (further skips are counted, not logged)" * (
                        logged == self._MAX_LOGGED_SKIPS
                    )
                    logger.warning("skipping streamed audio: %s%s", err, more)
                continue
            if self.random_crop:
                key = [self.seed, self.epoch, self.rank, worker_id, position]
            else:
                key = [self.rank, worker_id, position]
            rng = np.random.default_rng(key)
            yield {"waveform": _crop(waveform, self._max_samples, rng), "index": position}

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "position", "skipped", "stream"}``: where this rank's stream stands."""
        stream = self._stream.state_dict() if self._stream is not None else self._pending_state
        return {
            "epoch": self.epoch,
            "position": self.position,
            "skipped": self.skipped,
            "stream": stream,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the next iteration continues that epoch."""
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.skipped = int(state["skipped"])
        self._stream = None
        self._pending_state = state["stream"]
        self._resuming = True


# --------------------------------------------------------------------------------------------
# Sampler, collation, loader
# --------------------------------------------------------------------------------------------


class ShardedRandomSampler(Sampler):
    """Shuffled ``(index, epoch)`` keys for one rank, exactly resumable.

    Each epoch draws a permutation of ``range(num_samples)`` from
    ``np.random.default_rng([seed, epoch])`` (identity when ``shuffle=False``), truncates it to
    ``world_size * (num_samples // world_size)`` so every rank gets the same number of samples
    (the remainder, different every epoch when shuffled, is dropped), and rank ``r`` takes
    positions ``r, r + world_size, ...``. The ranks' samples are disjoint.

    Resume: after ``set_epoch(e)``, ``set_start(k)`` skips the first ``k`` samples of this rank's
    epoch (``k = batches consumed * batch size``); ``set_epoch`` resets the start to 0, so call
    it first.

    Args:
        num_samples: dataset length.
        seed: permutation seed (>= 0).
        shuffle: False yields ``0, 1, 2, ...`` (validation).
        rank, world_size: this process and the number of processes.

    Raises:
        ValueError: ``num_samples < world_size`` (a rank would get nothing), bad rank.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world {world_size}")
        if num_samples < world_size:
            raise ValueError(
                f"num_samples {num_samples} < world_size {world_size}: some rank gets no sample"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    @property
    def samples_per_rank(self) -> int:
        """Samples each rank gets per epoch (before :meth:`set_start`)."""
        return self.num_samples // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation and reset the start to 0."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        self.start = 0

    def set_start(self, position: int) -> None:
        """Skip the first ``position`` samples of this rank's current epoch.

        Raises:
            ValueError: ``position`` outside ``[0, samples_per_rank]``.
        """
        if not 0 <= position <= self.samples_per_rank:
            raise ValueError(f"start {position} outside [0, {self.samples_per_rank}]")
        self.start = int(position)

    def _rank_indices(self) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        total = self.samples_per_rank * self.world_size
        return order[:total][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._rank_indices()[self.start :]:
            yield int(index), self.epoch

    def __len__(self) -> int:
        return self.samples_per_rank - self.start

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "start", "seed", "num_samples", "world_size"}``."""
        return {
            "epoch": self.epoch,
            "start": self.start,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore epoch and start.

        Raises:
            ValueError: the state belongs to a different dataset size, seed or world size.
        """
        for name in ("seed", "num_samples", "world_size"):
            if int(state[name]) != getattr(self, name):
                raise ValueError(
                    f"sampler state has {name}={state[name]}, this sampler {getattr(self, name)}"
                )
        self.set_epoch(int(state["epoch"]))
        self.set_start(int(state["start"]))


def collate_waveforms(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad a list of dataset items into a batch.

    Args:
        items: ``{"waveform": (S_b,) array, "index": int}`` each.

    Returns:
        ``{"waveforms": (B, S_max) float32, zero past each length, "lengths": (B,) int64,
        "indices": (B,) int64}``.

    Raises:
        ValueError: no items, or a waveform that is not one-dimensional.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    waves = [torch.as_tensor(np.asarray(item["waveform"]), dtype=torch.float32) for item in items]
    for item, wave in zip(items, waves, strict=True):
        if wave.ndim != 1:
            raise ValueError(f"item {item.get('index')}: waveform must be (S,), got {wave.shape}")
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    waveforms = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for b, wave in enumerate(waves):
        waveforms[b, : len(wave)] = wave
    indices = torch.tensor([int(item["index"]) for item in items], dtype=torch.long)
    return {"waveforms": waveforms, "lengths": lengths, "indices": indices}


def build_dataloader(
    dataset,
    batch_size: int,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` with :func:`collate_waveforms`.

    Args:
        dataset: a map-style dataset of this module, or a :class:`StreamingAudioDataset`.
        batch_size: utterances per batch.
        sampler: for map-style datasets, usually a :class:`ShardedRandomSampler`; None reads in
            order. Must be None for a streaming dataset.
        num_workers: worker processes (0: read in the main process).
        drop_last: drop a last, smaller batch.
        pin_memory: pin batches (for GPU training).

    Raises:
        ValueError: non-positive ``batch_size``, a sampler given with a streaming dataset.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if isinstance(dataset, torch.utils.data.IterableDataset) and sampler is not None:
        raise ValueError("a streaming dataset takes no sampler (it shards itself by rank)")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_waveforms,
        drop_last=drop_last,
        pin_memory=pin_memory,
        # A private generator: creating an iterator draws the workers' base seed from it,
        # never from the global torch RNG, so a resumed run's dropout masks stay exact.
        generator=torch.Generator().manual_seed(0),
    )


# --------------------------------------------------------------------------------------------
# From a DataConfig
# --------------------------------------------------------------------------------------------


def _evenly_spaced(n: int, k: int) -> list[int]:
    """``min(n, k)`` positions spread evenly over ``range(n)`` (covers the whole corpus)."""
    if n <= k:
        return list(range(n))
    return np.linspace(0, n - 1, k).round().astype(int).tolist()


def _hold_out(dataset: _CroppedAudioDataset, cfg: DataConfig):
    """Split a map-style dataset into (train, validation) with a fixed-seed permutation."""
    n = len(dataset)
    if n < 2:
        raise ValueError(
            f"cannot hold out validation items from {n} training item(s); set validation_dir "
            "or validation_split"
        )
    k = min(cfg.max_validation_items, max(1, round(cfg.validation_fraction * n)), n - 1)
    order = np.random.default_rng(_HOLDOUT_SEED).permutation(n)
    held = sorted(order[:k].tolist())
    kept = sorted(order[k:].tolist())
    logger.info(
        "no validation_dir/validation_split: holding out %d of %d training items for validation "
        "(validation_fraction=%.3f, max_validation_items=%d, fixed seed)",
        k,
        n,
        cfg.validation_fraction,
        cfg.max_validation_items,
    )
    return dataset.subset(kept), dataset.subset(held, random_crop=False)


def _materialize(stream, audio_column: str, num_items: int):
    """The first ``num_items`` audio cells of a stream as an in-memory ``datasets.Dataset``.

    Built from plain ``{"bytes", "path"}`` structs and then cast, because building a dataset
    with ``Audio`` features re-encodes each cell, which needs torchcodec.
    """
    import datasets

    cells = [example[audio_column] for example in stream.take(num_items)]
    if not cells:
        raise ValueError("the validation stream is empty")
    return _cast_audio(datasets.Dataset.from_dict({audio_column: cells}), audio_column)


def build_datasets(cfg: DataConfig, seed: int = 0, rank: int = 0, world_size: int = 1):
    """Build the (train, validation) datasets a :class:`DataConfig` describes.

    * ``train_dir``: :class:`AudioFileDataset` over the folder; ``synthetic_items``: the same
      over a corpus written by :func:`robustdistill.synthetic.write_synthetic_corpus` (into
      ``synthetic_dir``, else a temporary folder named after the settings);
      ``train_dataset``: :class:`HFAudioDataset`, or :class:`StreamingAudioDataset` with
      ``streaming`` (sharded by ``rank``; the map-style ones are sharded by the sampler).
    * Validation (always map-style, ``random_crop=False``, at most ``max_validation_items``
      spread evenly): ``validation_dir``; or ``validation_split`` (its first items when
      streaming); or else a hold-out of ``validation_fraction`` of the training items drawn
      with a fixed seed (logged). When streaming without ``validation_split``, the first
      ``max_validation_items`` examples of the stream are held out and skipped by training.

    Args:
        cfg: the data configuration.
        seed: the crop (and synthetic corpus) seed, >= 0.
        rank, world_size: for the streaming shard.

    Returns:
        ``(train_dataset, validation_dataset)``.

    Raises:
        ValueError: no training source in ``cfg``, or no usable audio.
        FileNotFoundError: ``train_dir`` / ``validation_dir`` missing or holding no audio.
    """
    crop = {"max_length_s": cfg.max_length_s, "min_length_s": cfg.min_length_s, "seed": seed}
    if cfg.source is None:
        raise ValueError(
            "DataConfig has no training audio: set train_dir, train_dataset or synthetic_items"
        )
    if cfg.streaming:
        return _build_streaming(cfg, crop, rank, world_size)

    train = _build_map_style_train(cfg, crop)
    logger.info(
        "training audio: %d items, %.1f min (%s)", len(train), train.total_seconds / 60, cfg.source
    )
    if cfg.validation_dir:
        validation = _validation_from_dir(cfg, crop)
    elif cfg.validation_split:
        validation = HFAudioDataset.from_hub_or_disk(
            cfg.train_dataset,
            cfg.dataset_config,
            cfg.validation_split,
            cfg.audio_column,
            random_crop=False,
            **crop,
        )
        validation = validation.subset(_evenly_spaced(len(validation), cfg.max_validation_items))
    else:
        train, validation = _hold_out(train, cfg)
    return train, validation


def _build_map_style_train(cfg: DataConfig, crop: dict[str, Any]) -> _CroppedAudioDataset:
    if cfg.source == "dataset":
        return HFAudioDataset.from_hub_or_disk(
            cfg.train_dataset, cfg.dataset_config, cfg.train_split, cfg.audio_column, **crop
        )
    if cfg.source == "synthetic":
        low, high = cfg.synthetic_seconds
        out_dir = cfg.synthetic_dir or os.path.join(
            tempfile.gettempdir(),
            f"robustdistill-synthetic-seed{crop['seed']}-n{cfg.synthetic_items}-{low:g}-{high:g}s",
        )
        files = write_synthetic_corpus(out_dir, cfg.synthetic_items, (low, high), crop["seed"])
    else:
        files = list_audio_files(cfg.train_dir)
    return AudioFileDataset(files, **crop)


def _build_streaming(cfg: DataConfig, crop: dict[str, Any], rank: int, world_size: int):
    def load(split: str):
        return load_hf_split(cfg.train_dataset, cfg.dataset_config, split, cfg.audio_column, True)

    stream = load(cfg.train_split)
    if cfg.validation_dir:
        validation = _validation_from_dir(cfg, crop)
    else:
        if cfg.validation_split:
            val_stream = load(cfg.validation_split)
        else:
            val_stream, stream = stream, stream.skip(cfg.max_validation_items)
            logger.info(
                "streaming without validation_split: the first %d examples are held out for "
                "validation and skipped by training",
                cfg.max_validation_items,
            )
        cells = _materialize(val_stream, cfg.audio_column, cfg.max_validation_items)
        validation = HFAudioDataset(cells, cfg.audio_column, random_crop=False, **crop)
    train = StreamingAudioDataset(
        stream,
        cfg.audio_column,
        rank=rank,
        world_size=world_size,
        shuffle_buffer=cfg.shuffle_buffer,
        **crop,
    )
    return train, validation


def _validation_from_dir(cfg: DataConfig, crop: dict[str, Any]) -> AudioFileDataset:
    files = list_audio_files(cfg.validation_dir)
    files = [files[i] for i in _evenly_spaced(len(files), cfg.max_validation_items)]
    return AudioFileDataset(files, random_crop=False, **crop)
