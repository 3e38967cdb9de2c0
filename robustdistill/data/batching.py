"""Padding items into batches (:func:`collate_waveforms`) and the ``DataLoader`` built on it."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..interrupts import worker_outlives_sigterm, workers_forked

logger = logging.getLogger(__name__)


def collate_waveforms(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad a list of dataset items into a batch.

    Args:
        items: ``{"waveform": (S_b,) array, "index": int}`` each.

    Returns:
        ``{"waveforms": (B, S_max) float32, zero past each length, "lengths": (B,) int64,
        "indices": (B,) int64}``; when every item has a ``"key"`` also ``"offsets"`` ``(B,)``
        int64 (crop starts in samples) and ``"keys"`` (list of B content hashes); when every
        item has a ``"worker"`` (a stream's), ``"workers"`` ``(B,)`` int64; when items replaced
        unreadable ones, ``"skipped"``: list of ``(name, reason)`` pairs.

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
    batch = {"waveforms": waveforms, "lengths": lengths, "indices": indices}
    skipped = [pair for item in items for pair in item.get("skipped", ())]
    if skipped:  # (name, reason) of items that failed to decode and were replaced
        batch["skipped"] = skipped
    if all("worker" in item for item in items):  # the DataLoader worker that read each item
        batch["workers"] = torch.tensor([int(item["worker"]) for item in items], dtype=torch.long)
    if all("key" in item for item in items):  # a teacher feature cache's lookup keys
        batch["offsets"] = torch.tensor([int(item["offset"]) for item in items], dtype=torch.long)
        batch["keys"] = [item["key"] for item in items]
    return batch


def usable_cpus() -> int:
    """The CPUs this process may run on: ``len(os.sched_getaffinity(0))`` (a job's share of
    the machine), ``os.cpu_count()`` where that call does not exist (macOS, Windows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def workers_beyond_cpus(num_workers: int, key: str = "data.num_workers") -> str | None:
    """The start-up line for more DataLoader workers than :func:`usable_cpus`, or None.

    The number is kept as configured, not capped: a recipe's is written for its GPU node, a
    streamed run resumes only with the number it started with (a capped number would depend
    on the machine), and a map-style set's batches are the same for any number. The workers
    then share the CPUs.
    """
    cpus = usable_cpus()
    if num_workers <= cpus:
        return None
    return (f"{key} {num_workers} is more than the {cpus} CPUs this process may use: kept as "
            f"configured (a streamed run resumes only with the number it started with), the "
            f"workers share the CPUs; --{key} {cpus} suits this machine if data_wait_share is "
            f"high")


class _Loader(DataLoader):
    """``DataLoader`` whose worker processes are forked with SIGTERM blocked inside the
    trainers' SIGTERM deferral (:func:`robustdistill.interrupts.workers_forked`)."""

    def _get_iterator(self):
        with workers_forked():
            return super()._get_iterator()

    def check_worker_number_rationality(self) -> None:
        """Nothing: torch's multi-line UserWarning for more workers than CPUs, given at
        construction and again when the workers start, is the trainer's one start-up line
        here (:func:`workers_beyond_cpus`)."""


def build_dataloader(
    dataset,
    batch_size: int,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    collate_fn=None,
    persistent_workers: bool = False,
) -> DataLoader:
    """A ``DataLoader`` with :func:`collate_waveforms` (or ``collate_fn``, which must return
    what it returns, plus any extra keys: e.g. a teacher cache's ``CacheReader``).

    Args:
        dataset: a map-style dataset of this module, or a :class:`StreamingAudioDataset`.
        batch_size: utterances per batch.
        sampler: for map-style datasets, usually a :class:`ShardedRandomSampler`; None reads in
            order. Must be None for a streaming dataset.
        num_workers: worker processes (0: read in the main process). Started inside the
            trainers' SIGTERM deferral they outlive a SIGTERM sent to the whole process group
            (:func:`robustdistill.interrupts.worker_outlives_sigterm`). More than
            :func:`usable_cpus` gives no torch warning here (the trainer logs
            :func:`workers_beyond_cpus` once).
        drop_last: drop a last, smaller batch.
        pin_memory: pin batches (for GPU training).
        persistent_workers: keep the workers from one iteration (epoch) to the next instead
            of starting new ones (ignored without workers). Only for a map-style dataset whose
            items are a function of the sampler's keys: a kept worker holds its copy of the
            dataset as it was when it started (a stream's epoch, set in the main process,
            would be stale).

    Raises:
        ValueError: non-positive ``batch_size``, a sampler given with a streaming dataset,
            ``persistent_workers`` with a streaming dataset.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if isinstance(dataset, torch.utils.data.IterableDataset) and sampler is not None:
        raise ValueError("a streaming dataset takes no sampler (it shards itself by rank)")
    if isinstance(dataset, torch.utils.data.IterableDataset) and persistent_workers:
        raise ValueError("a streaming dataset cannot keep its workers: its epoch is set in the "
                         "main process, after the workers copied it")
    return _Loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn or collate_waveforms,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        # inside the trainers' SIGTERM deferral, a worker outlives the run's own SIGTERM
        worker_init_fn=worker_outlives_sigterm if num_workers else None,
        # A private generator: creating an iterator draws the workers' base seed from it,
        # never from the global torch RNG, so a resumed run's dropout masks stay exact.
        generator=torch.Generator().manual_seed(0),
    )
