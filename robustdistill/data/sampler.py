"""The exactly resumable, rank-sharded sampler of map-style datasets."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


class ShardedRandomSampler(Sampler):
    """Shuffled ``(index, epoch)`` keys for one rank, exactly resumable.

    Each epoch draws a permutation of ``range(num_samples)`` from
    ``np.random.default_rng([seed, epoch])`` (identity when ``shuffle=False``), truncates it to
    ``world_size * (num_samples // world_size)`` so every rank gets the same number of samples
    (the remainder, different every epoch when shuffled, is dropped), and rank ``r`` takes
    positions ``r, r + world_size, ...``. The ranks' samples are disjoint. With
    ``drop_last=False`` nothing is dropped: the ranks' samples cover every index once, and the
    first ``num_samples % world_size`` ranks get one sample more than the others (validation,
    which evaluates every item; ranks may then run different numbers of batches).

    Resume: after ``set_epoch(e)``, ``set_start(k)`` skips the first ``k`` samples of this rank's
    epoch (``k = batches consumed * batch size``); ``set_epoch`` resets the start to 0, so call
    it first.

    Args:
        num_samples: dataset length.
        seed: permutation seed (>= 0).
        shuffle: False yields ``0, 1, 2, ...`` (validation).
        rank, world_size: this process and the number of processes.
        drop_last: True (default) cuts the order to a multiple of ``world_size``.

    Raises:
        ValueError: ``num_samples < world_size`` with ``drop_last`` (a rank would get
            nothing), bad rank.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world {world_size}")
        if num_samples < world_size and drop_last:
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
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.start = 0

    @property
    def samples_per_rank(self) -> int:
        """Samples this rank gets per epoch (before :meth:`set_start`)."""
        if self.drop_last:
            return self.num_samples // self.world_size
        return len(range(self.rank, self.num_samples, self.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation and reset the start to 0.

        Raises:
            ValueError: ``epoch`` is negative.
        """
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
        total = self.num_samples // self.world_size * self.world_size
        return order[: total if self.drop_last else None][self.rank :: self.world_size]

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
