"""The :class:`DataConfig`: where the training audio comes from and how it is cut and batched."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


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
    stream_end_sleep: bool = field(
        default=False,
        metadata={
            "help": "Streaming only: keep the 5 s sleep datasets makes whenever a shuffled "
            "Parquet stream ends (every epoch, in every worker); false skips it at a natural "
            "end, where every Parquet scan has finished (datasets 5.x; a stream closed early "
            "still sleeps). The stream's order is the same either way."
        },
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
    num_workers: int = field(
        default=0,
        metadata={"help": "DataLoader worker processes (0: read in the training process). A "
                          "map-style training set keeps its workers from epoch to epoch. More "
                          "than the CPUs this process may use is kept as configured, with one "
                          "warning at start-up."},
    )
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
            fail("synthetic_items", f"synthetic audio cannot be combined with {sources[0]}; "
                 f"allowed: synthetic_items 0 with {sources[0]} (--data.synthetic_items 0 over "
                 "a recipe that sets it, such as configs/demo.yaml)")
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
