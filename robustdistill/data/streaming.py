"""A streaming ``datasets`` split as cropped 16 kHz waveforms (:class:`StreamingAudioDataset`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..audio import SAMPLE_RATE, AudioError
from .cropped import _crop, _to_samples
from .hf_datasets import _cast_audio, _decode_cell

logger = logging.getLogger(__name__)


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

    Raises:
        ValueError: ``rank`` outside ``[0, world_size)``, ``min_length_s > max_length_s``, or
            a negative ``seed`` or ``shuffle_buffer``.
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
