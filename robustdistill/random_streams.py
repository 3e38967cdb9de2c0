"""The seeded random streams of a ``distill`` run: which numpy generator corrupts which audio.

A training micro-batch's corruption comes from ``keyed_rng(seed, step, rank, micro_batch)``
(with ``augmentation.in_loader`` the loader draws it per item instead:
:class:`~robustdistill.augment.LoaderCorruption`), a validation item's from
``keyed_rng(seed, VALIDATION_STREAM, index)``; ``train-se``'s validation set
(:mod:`robustdistill.se.validation`) uses the same key. No other state feeds them, which is
what makes a resumed run replay an uninterrupted one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["VALIDATION_STREAM", "keyed_rng"]


def keyed_rng(seed: int, *keys: int) -> np.random.Generator:
    """``numpy.random.default_rng([seed, *keys])``: one independent stream per key tuple
    (integers >= 0; trailing zero keys do not change the stream)."""
    return np.random.default_rng([seed, *keys])


#: Key of the validation corruption streams, ``keyed_rng(seed, VALIDATION_STREAM, index)`` per
#: validation item: a step no run reaches, so never a training key ``(seed, step, rank,
#: micro-batch)`` (numpy's seeding ignores trailing zero keys), nor an epoch of a crop key.
VALIDATION_STREAM = 2**31 - 1
