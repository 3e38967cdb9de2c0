"""A streaming ``datasets`` split as cropped 16 kHz waveforms (:class:`StreamingAudioDataset`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import count, islice
from typing import Any

import numpy as np
import torch

from ..audio import SAMPLE_RATE, AudioError
from .cropped import _crop, _to_samples
from .hf_datasets import _cast_audio, _decode_cell

logger = logging.getLogger(__name__)

#: ``datasets`` major versions whose end-of-stream sleep was read and checked (5.2.0): outside
#: them :func:`_no_sleep_at_stream_end` changes nothing and datasets sleeps as it would.
_SLEEP_SKIP_VERIFIED_MAJOR = (5,)
_END = object()


def _datasets_sleep_skippable() -> bool:
    """Whether this ``datasets`` has the end-of-stream sleep :func:`_no_sleep_at_stream_end`
    knows: a verified major version with ``config.SLEEP_TIME_ON_THREADS_SHUTDOWN``."""
    import datasets

    major = int(datasets.__version__.split(".")[0])
    return (major in _SLEEP_SKIP_VERIFIED_MAJOR
            and hasattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN"))


@contextmanager
def _no_sleep_at_stream_end(enabled: bool):
    """Set ``datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN`` to 0 inside the block when
    ``enabled`` (the caller checks :func:`_datasets_sleep_skippable`), restoring it on leaving.

    ``datasets`` (5.2.0, ``iterable_dataset.py`` lines 900-901 and 976-977) sleeps that long
    (5 s) in the ``finally`` of ``CyclingMultiSourcesExamplesIterable``, which ``shuffle`` puts
    over a stream's shards (``InterleavedShardsExamplesIterable``), whenever a Parquet stream
    ends or is closed: "time to let PyArrow close threads gracefully" (apache/arrow#45214: a
    Parquet scan abandoned part-way can hang or abort the interpreter at exit). At a natural end
    every shard's scan has run to completion (datasets' own Parquet reader counts such a
    fragment as closed) and the interleaver's threads are already joined, so there is nothing to
    wait for; :class:`StreamingAudioDataset` enters this block only around its ``next()`` calls,
    so a stream closed early (a run stopped mid-epoch) still sleeps. An exception that leaves
    the block (a ``KeyboardInterrupt`` while the stream waits on a shard's reader thread, an
    error of a reader) can end the stream inside it, its other scans part-way: the block then
    sleeps the saved time itself before the exception goes on (without it, such an interrupt
    aborted the interpreter at exit, "terminate called without an active exception", in 5 of 20
    runs on a 4-file Parquet stream; 0 of 16 with the sleep). The constant is the process's:
    another datasets stream ending in another thread during such a call would skip it too
    (nothing in a run reads one so).
    """
    if not enabled:
        yield
        return
    from datasets import config

    saved = config.SLEEP_TIME_ON_THREADS_SHUTDOWN
    config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
    try:
        yield
    except BaseException:
        # not a natural end: let PyArrow's threads close as datasets would have
        config.SLEEP_TIME_ON_THREADS_SHUTDOWN = saved
        time.sleep(saved)
        raise
    finally:
        config.SLEEP_TIME_ON_THREADS_SHUTDOWN = saved


class StreamingAudioDataset(torch.utils.data.IterableDataset):
    """A streaming ``datasets`` split as cropped 16 kHz waveforms, sharded by rank.

    The stream is cast to ``Audio(decode=False)``, optionally shuffled with a buffer
    (``datasets``' shard-order plus buffer shuffle, reseeded by :meth:`set_epoch`), and split
    across ranks with ``datasets.distributed.split_dataset_by_node``; DataLoader workers then
    share this rank's shards (``datasets`` does that itself). Items that fail to decode or
    are shorter than ``min_length_s`` are skipped: the first few with a warning each, then
    counted in :attr:`skipped`. Without workers the process that reads them counts them; with
    workers :meth:`track` counts, from the positions of the batches consumed, the examples
    skipped before each worker's last consumed batch, and at the end of an epoch the ones after
    it (each worker leaves that count in shared memory when its stream ends). So the count is
    the skipped examples among those the run consumed, with or without workers (a worker's
    prefetched batches are not counted; a batch given again at a resume is counted once).
    :attr:`skipped_complete` is False after a resume from a state saved with workers before
    they were counted (2026-12-07): that count starts at the resumed position.

    ``index`` in each item is its position in this rank's (and worker's) stream for the epoch,
    skipped examples included; ``worker`` is the DataLoader worker that read it (0 without
    workers). The crop start comes from ``np.random.default_rng([seed, epoch, rank, worker,
    index])``.

    Exact resume, with or without a shuffle buffer and workers: the stream of an epoch is a
    function of (seed, epoch, rank, worker), so a resume replays it: each worker's stream is
    built again and the examples before its resume position are passed over undecoded (their
    bytes are still read: the cost of a resume grows with the position in the epoch). The
    position comes from the batches the training loop consumed, which it reports by iterating
    the loader through :meth:`track` (a worker's prefetched batches are not consumed). The
    DataLoader (``in_order``, torch's default) hands out whole batches in turn (worker 0, 1,
    ..., passing over a worker whose stream has ended); a resumed loader starts again at
    worker 0, so when the checkpoint fell inside a turn, the workers that had already given
    their batch of that turn give it again and :meth:`track` drops those batches (at most
    ``num_workers - 1``). A resume needs the same ``num_workers``. A loaded state applies to
    the next iteration only; :meth:`set_epoch` discards it.

    Args:
        dataset: a ``datasets.IterableDataset`` (see :func:`load_hf_split`).
        audio_column: the column holding the audio.
        max_length_s, min_length_s, seed, random_crop: as :class:`AudioFileDataset`.
        rank, world_size: this process and the number of processes.
        shuffle_buffer: shuffle buffer size in examples; 0: no buffer shuffle (``datasets``
            may still reorder whole shards from epoch 1 on, deterministically).
        num_workers: the DataLoader workers that read it (0: the main process); recorded by
            :meth:`state_dict` and checked on resume.
        stream_end_sleep: keep ``datasets``' 5 s sleep when the stream ends (False: skipped
            at a natural end; only ``datasets`` 5.x, see :func:`_no_sleep_at_stream_end`).

    Raises:
        ValueError: ``rank`` outside ``[0, world_size)``, ``min_length_s > max_length_s``, or
            a negative ``seed``, ``shuffle_buffer`` or ``num_workers``.
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
        num_workers: int = 0,
        stream_end_sleep: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world {world_size}")
        if max_length_s is not None and min_length_s > max_length_s:
            raise ValueError(f"min_length_s {min_length_s} > max_length_s {max_length_s}")
        if seed < 0 or shuffle_buffer < 0 or num_workers < 0:
            raise ValueError("seed, shuffle_buffer and num_workers must be >= 0, got "
                             f"{seed}, {shuffle_buffer}, {num_workers}")
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
        self.num_workers = int(num_workers)
        self.stream_end_sleep = bool(stream_end_sleep)
        self._max_samples = _to_samples(max_length_s)
        self._min_samples = _to_samples(min_length_s)
        self.epoch = 0
        self.skipped = 0
        self.skipped_complete = True  # False: resumed from a state without the workers' skips
        # per worker: the examples skipped after its last item, written when its stream ends
        self._trailing = torch.zeros(max(self.num_workers, 1), dtype=torch.long).share_memory_()
        #: per worker ``[batches, first index of its last batch, index after it]`` consumed
        #: this epoch (see :meth:`track`)
        self._consumed = self._nothing_consumed()
        self._replay: list[int] | None = None  # per worker: the index its next stream starts at
        self._drop = 0  # leading batches of the resumed loader that were consumed already

    def _nothing_consumed(self) -> list[list[int]]:
        return [[0, 0, 0] for _ in range(max(self.num_workers, 1))]

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: reseeds the shuffle and the crops, drops a loaded state."""
        self.epoch = int(epoch)
        self._consumed = self._nothing_consumed()
        self._replay, self._drop = None, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = torch.utils.data.get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker is not None else (0, 0)
        start = 0
        if self._replay is not None:  # a loaded state: this iteration continues its epoch
            if workers != self.num_workers:
                raise ValueError(
                    f"the resumed stream position was saved with {self.num_workers} DataLoader "
                    f"worker(s); this loader has {workers}: exact resume needs the same number")
            start, self._replay = self._replay[worker_id], None
        return self._items(worker_id, start)

    def _items(self, worker_id: int, start: int) -> Iterator[dict[str, Any]]:
        from datasets.distributed import split_dataset_by_node

        stream = split_dataset_by_node(self._base, rank=self.rank, world_size=self.world_size)
        stream.set_epoch(self.epoch)
        logged = trailing = 0  # trailing: skipped since the last item given
        # the examples before `start` were consumed before the checkpoint: passed over undecoded
        examples = islice(stream, start, None)
        skip_sleep = not self.stream_end_sleep and _datasets_sleep_skippable()
        for position in count(start):
            # datasets' sleep at the stream's end skipped there only, not at an early close
            with _no_sleep_at_stream_end(skip_sleep):
                example = next(examples, _END)
            if example is _END:
                break
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
                trailing += 1
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
            trailing = 0
            yield {"waveform": _crop(waveform, self._max_samples, rng), "index": position,
                   "worker": worker_id}
        if worker_id < len(self._trailing):  # for track(), at the end of the epoch (a loader
            self._trailing[worker_id] = trailing  # of more workers than given: not tracked)

    def track(self, loader: Iterable[dict]) -> Iterator[dict]:
        """Iterate ``loader`` (a DataLoader over this dataset, collated by
        :func:`collate_waveforms`) and record each batch taken from it as consumed, for
        :meth:`state_dict`; after :meth:`load_state_dict`, first drop the batches the resumed
        workers give again (see the class docstring).

        Raises:
            ValueError: a DataLoader with another ``num_workers`` than this dataset's, a batch
                without ``workers`` and ``indices``, or from a worker beyond ``num_workers``.
        """
        workers = getattr(loader, "num_workers", self.num_workers)
        if workers != self.num_workers:
            raise ValueError(f"the DataLoader has {workers} worker(s), the dataset was given "
                             f"num_workers={self.num_workers}: its resume state would be wrong")
        self._trailing.zero_()  # before iter(loader) starts the workers
        drop, batches = self._drop, iter(loader)  # the workers have their copies of the state
        self._replay, self._drop = None, 0
        for batch in batches:
            workers, indices = batch.get("workers"), batch.get("indices")
            if workers is None or indices is None or not len(workers):
                raise ValueError("track() needs batches of collate_waveforms (workers, indices)")
            worker = int(workers[0])
            if worker >= len(self._consumed):
                raise ValueError(f"a batch from DataLoader worker {worker}, but num_workers is "
                                 f"{self.num_workers}: give the dataset the loader's num_workers")
            if drop:
                drop -= 1
                continue
            done = self._consumed[worker]
            if self.num_workers:  # the examples this worker skipped up to this batch's last
                self.skipped += int(indices[-1]) + 1 - done[2] - len(indices)
            done[:] = [done[0] + 1, int(indices[0]), int(indices[-1]) + 1]
            yield batch
        if self.num_workers:  # every worker's stream ended: the examples after its last item
            self.skipped += int(self._trailing.sum())

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "num_workers", "skipped", "skipped_complete", "consumed"}``: what this
        rank consumed of its stream this epoch, per worker ``[batches, first index of the last
        batch, index after it]``, and the examples skipped among those consumed (JSON-ready)."""
        return {"epoch": self.epoch, "num_workers": self.num_workers, "skipped": self.skipped,
                "skipped_complete": self.skipped_complete,
                "consumed": [list(done) for done in self._consumed]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the next iteration continues that epoch.

        A state of the earlier format (``{"epoch", "position", "skipped", "stream"}``, which
        ``datasets`` resumed) continues at its ``position`` in worker 0's stream (exact for a
        run without workers; with workers that position was 0: the epoch restarts).

        Raises:
            ValueError: the state was saved with another ``num_workers``.
        """
        if "consumed" in state:
            saved = int(state["num_workers"])
            consumed = [[int(x) for x in done] for done in state["consumed"]]
        else:  # before exact replay: the main process's position in the epoch
            saved, position = self.num_workers, int(state["position"])
            consumed = self._nothing_consumed()
            consumed[0] = [int(position > 0), position, position]
            if self.num_workers:
                logger.warning("a stream position saved before exact resume, with DataLoader "
                               "workers: it holds none of the workers' progress, so epoch %d "
                               "restarts", int(state["epoch"]))
        if saved != self.num_workers:
            raise ValueError(f"the stream position was saved with {saved} DataLoader worker(s), "
                             f"this dataset is read by {self.num_workers}: exact resume needs "
                             "the same number")
        self.epoch, self.skipped = int(state["epoch"]), int(state["skipped"])
        # before 2026-12-07 a state saved with workers held none of their skips (always 0)
        self.skipped_complete = bool(state.get("skipped_complete", not self.num_workers))
        self._consumed = consumed
        # The loader deals batches in turns from worker 0. A checkpoint inside a turn (some
        # workers one batch further than others): the workers ahead give that batch again.
        turns = max(done[0] for done in consumed)
        ahead = [done[0] == turns for done in consumed]
        self._drop = 0 if all(ahead) else sum(ahead)
        self._replay = [done[1] if ahead[w] and self._drop else done[2]
                        for w, done in enumerate(consumed)]
