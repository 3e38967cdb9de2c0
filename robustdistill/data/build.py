"""The (train, validation) datasets a :class:`~robustdistill.data.DataConfig` describes."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import numpy as np

from ..audio import list_audio_files
from ..synthetic import write_synthetic_corpus
from .config import DataConfig
from .cropped import _CroppedAudioDataset
from .files import AudioFileDataset
from .hf_datasets import (
    HFAudioDataset,
    _cast_audio,
    _cell_identity,
    is_single_saved_dataset,
    load_hf_split,
)
from .streaming import StreamingAudioDataset

logger = logging.getLogger(__name__)

#: Fixed seed of the validation hold-out: the held-out items depend on the corpus, not on the
#: run seed, so validation losses of runs with different seeds are comparable.
_HOLDOUT_SEED = 20_240_617


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


def _take_cells(stream, audio_column: str, num_items: int) -> list[Any]:
    """The audio cells of the first ``num_items`` examples of a stream (unsharded, in order)."""
    cells = [example[audio_column] for example in stream.take(num_items)]
    if not cells:
        raise ValueError("the validation stream is empty")
    return cells


def _materialize(cells: list[Any], audio_column: str):
    """Audio cells as an in-memory ``datasets.Dataset`` with ``Audio(decode=False)``.

    Built from plain ``{"bytes", "path"}`` structs and then cast, because building a dataset
    with ``Audio`` features re-encodes each cell, which needs torchcodec.
    """
    import datasets

    return _cast_audio(datasets.Dataset.from_dict({audio_column: cells}), audio_column)


class _NotHeldOut:
    """Filter predicate: an audio cell whose :func:`_cell_identity` is not a held-out one.

    A picklable class rather than a closure, so DataLoader workers can receive it.
    """

    def __init__(self, held_out_cells: list[Any]) -> None:
        self.held_out = frozenset(_cell_identity(cell) for cell in held_out_cells)

    def __call__(self, cell: Any) -> bool:
        return _cell_identity(cell) not in self.held_out


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
      ``max_validation_items`` examples of the (unsharded) stream are held out, and training
      filters out every example whose audio cell has the same path and bytes as a held-out
      one (on every rank and worker, whatever the sharding).
    * Every validation item is read once here (:meth:`~robustdistill.data.cropped.
      _CroppedAudioDataset.readable`): items whose samples cannot be used (NaN/Inf, digital
      silence, a corrupt float file: what only decoding shows) are dropped, each logged with
      its reason and recorded in the dataset's ``skipped``.

    Args:
        cfg: the data configuration.
        seed: the crop (and synthetic corpus) seed, >= 0.
        rank, world_size: for the streaming shard.

    Returns:
        ``(train_dataset, validation_dataset)``.

    Raises:
        ValueError: no training source in ``cfg``, or no usable audio (no validation item
            can be read, counting the reasons); ``validation_split``
            of a ``save_to_disk`` folder holding a single dataset (it would be the training
            data); a ``validation_dir`` file that is also a training file.
        FileNotFoundError: ``train_dir`` / ``validation_dir`` missing or holding no audio.
    """
    crop = {"max_length_s": cfg.max_length_s, "min_length_s": cfg.min_length_s, "seed": seed}
    if cfg.source is None:
        raise ValueError(
            "DataConfig has no training audio: set train_dir, train_dataset or synthetic_items"
        )
    if cfg.validation_split and is_single_saved_dataset(cfg.train_dataset):
        raise ValueError(
            f"train_dataset {cfg.train_dataset} is a save_to_disk folder holding a single "
            f"dataset (one split), so validation_split {cfg.validation_split!r} would be the "
            "training data; unset validation_split to hold out validation items "
            "(validation_fraction / max_validation_items), or save a DatasetDict"
        )
    if cfg.streaming:
        return _build_streaming(cfg, crop, rank, world_size)

    train = _build_map_style_train(cfg, crop)
    logger.info(
        "training audio: %d items, %.1f min (%s)", len(train), train.total_seconds / 60, cfg.source
    )
    if cfg.validation_dir:
        validation = _validation_from_dir(cfg, crop)
        _check_disjoint_files(train, validation, cfg)
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
    return train, validation.readable()


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
        val_stream = load(cfg.validation_split) if cfg.validation_split else stream
        cells = _take_cells(val_stream, cfg.audio_column, cfg.max_validation_items)
        if not cfg.validation_split:
            stream = stream.filter(_NotHeldOut(cells), input_columns=[cfg.audio_column])
            logger.info(
                "streaming without validation_split: the first %d examples are held out for "
                "validation and filtered out of training (by audio path and bytes)",
                len(cells),
            )
        validation = HFAudioDataset(
            _materialize(cells, cfg.audio_column), cfg.audio_column, random_crop=False, **crop
        )
    train = StreamingAudioDataset(
        stream,
        cfg.audio_column,
        rank=rank,
        world_size=world_size,
        shuffle_buffer=cfg.shuffle_buffer,
        num_workers=cfg.num_workers,
        stream_end_sleep=cfg.stream_end_sleep,
        **crop,
    )
    return train, validation.readable()


def _validation_from_dir(cfg: DataConfig, crop: dict[str, Any]) -> AudioFileDataset:
    files = list_audio_files(cfg.validation_dir)
    files = [files[i] for i in _evenly_spaced(len(files), cfg.max_validation_items)]
    return AudioFileDataset(files, random_crop=False, **crop)


def _check_disjoint_files(train, validation: AudioFileDataset, cfg: DataConfig) -> None:
    """Raise ValueError when a validation file (resolved path) is also a training file."""
    if not isinstance(train, AudioFileDataset):
        return
    training = {f.resolve() for f in train.files}
    shared = [f for f in validation.files if f.resolve() in training]
    if shared:
        where = cfg.train_dir or cfg.synthetic_dir or "the synthetic corpus"
        raise ValueError(
            f"validation_dir {cfg.validation_dir} shares {len(shared)} of its "
            f"{len(validation.files)} validation file(s) with the training audio "
            f"({where}), e.g. {shared[0]}: use a validation_dir outside train_dir, or no "
            "validation_dir to hold out training items"
        )
