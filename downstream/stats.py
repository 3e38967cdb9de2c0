"""Intervals and paired tests from per-item results.

A downstream metric is a function of the test items (utterances, or trials for speaker
verification): accuracy is the mean of 0/1 correctness, WER the errors summed over utterances
divided by their words, EER a function of the trial scores. The test sets here are small, so a
bare number hides how much of it is sampling noise. This module resamples the independent
units of the test set: the items themselves for most tasks; for speaker verification, whose
trials share utterances and speakers and so are not independent, the test speakers and then the
utterances within each drawn speaker (a two-stage draw; the task's ``resample_unit`` and
``resample_units``; since 2026-12-07, trials before):

* :func:`bootstrap_interval`: percentile bootstrap 95 % interval of one run's metric (resample
  the items with replacement, recompute the metric; Efron & Tibshirani, "An Introduction to the
  Bootstrap", 1993, ch. 13);
* :func:`paired_bootstrap`: the same resample applied to two upstreams evaluated **on the same
  items** (same keys, same corrupted audio): an interval for the difference of their metrics
  and a two-sided bootstrap p-value (Koehn, "Statistical Significance Tests for Machine
  Translation Evaluation", EMNLP 2004, the paired form);
* :func:`mcnemar`: the exact McNemar test on paired 0/1 outcomes (accuracy tasks).

Several seeds: a run with seeds ``0 1 2`` has one item set per seed (each seed has its own split,
noise draws and head). Its metric is the mean over seeds of the per-seed metric, and a resample
draws items with replacement **within** each seed (a stratified bootstrap), so the interval
covers test-item sampling; the spread over seeds is reported separately as a standard deviation.

A statistic is given as ``stat(indices) -> float``: the metric over the items at those indices
(with repeats). For several seeds it is ``stat(list_of_index_arrays)``. A group's size is its
item count ``n``; or, for a two-stage draw, a tuple of cluster sizes ``(n_1, ..., n_S)``
(members numbered cluster by cluster), whose index array is ``(M, 2)``: one row ``(copy,
member)`` per drawn member, ``copy`` the position of its cluster's draw (two draws of one
cluster are two copies) (:func:`resample_indices`, :func:`full_indices`). Resamples whose
metric is undefined (NaN, e.g. an EER resample without a target trial) are dropped from the
percentiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import binomtest

__all__ = ["bootstrap_interval", "full_indices", "mcnemar", "paired_bootstrap",
           "resample_indices"]

Stat = Callable[[list[np.ndarray]], float]


Size = int | tuple[int, ...]


def _check_sizes(sizes: Sequence[Size]) -> None:
    for n in sizes:
        if (min(n, default=0) if isinstance(n, tuple) else n) < 1:
            raise ValueError(f"every group (and cluster) needs at least one item, got sizes "
                             f"{list(sizes)}")


def resample_indices(sizes: Sequence[Size], rng: np.random.Generator) -> list[np.ndarray]:
    """One stratified bootstrap draw, per group: for ``n`` items, ``n`` indices in ``[0, n)``
    with replacement; for clusters ``(n_1, ..., n_S)`` (two-stage), ``S`` clusters with
    replacement, then ``n_c`` members of each drawn cluster ``c`` from its own with
    replacement, as ``(sum of the drawn n_c, 2)`` rows ``(copy, member)`` (members numbered
    cluster by cluster: cluster ``c``'s are ``n_1 + ... + n_(c-1)`` onwards).

    Raises:
        ValueError: an empty group or cluster.
    """
    _check_sizes(sizes)  # groups in order: one generator, drawn group after group
    return [_draw_clusters(n, rng) if isinstance(n, tuple) else rng.integers(0, n, size=n)
            for n in sizes]


def _draw_clusters(sizes: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """``(copy, member)`` rows of one two-stage draw of clusters of ``sizes`` members."""
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    rows = []
    for copy, c in enumerate(rng.integers(0, len(sizes), size=len(sizes))):
        members = offsets[c] + rng.integers(0, sizes[c], size=sizes[c])
        rows.append(np.stack([np.full(sizes[c], copy), members], axis=1))
    return np.concatenate(rows)


def full_indices(sizes: Sequence[Size]) -> list[np.ndarray]:
    """The draw that is the sample itself: ``arange(n)`` for a group of ``n`` items; every
    cluster once with each of its members once (``(copy, member)`` rows, copy = cluster) for
    a group of clusters.

    Raises:
        ValueError: an empty group or cluster.
    """
    _check_sizes(sizes)
    return [np.stack([np.repeat(np.arange(len(n)), n), np.arange(sum(n))], axis=1)
            if isinstance(n, tuple) else np.arange(n) for n in sizes]


def _draws(stat_fns: Sequence[Stat], sizes: Sequence[Size], resamples: int, seed: int
           ) -> np.ndarray:
    """``(resamples, len(stat_fns))``: every statistic on the same resamples."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, len(stat_fns)))
    for r in range(resamples):
        idx = resample_indices(sizes, rng)
        out[r] = [float(f(idx)) for f in stat_fns]
    return out


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_interval(stat: Stat, sizes: Sequence[Size], resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over items.

    Args:
        stat: ``stat(list of index arrays, one per group) -> metric``.
        sizes: items per group (one group per seed), or its cluster sizes (two-stage;
            :func:`resample_indices`).
        resamples: bootstrap resamples.
        seed: seeds the resampling (the interval is reproducible).
        level: coverage (0.95: the 2.5 and 97.5 percentiles).

    Returns:
        ``(low, high)``; NaNs when no resample gives a finite metric.

    Raises:
        ValueError: ``resamples < 1``, an empty group or cluster, ``level`` outside (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return _percentiles(_draws([stat], sizes, resamples, seed)[:, 0], level)


def paired_bootstrap(stat_a: Stat, stat_b: Stat, sizes: Sequence[Size], resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Paired bootstrap of ``metric(A) - metric(B)`` on the same items.

    Both statistics index the same items (item ``i`` of group ``g`` is the same utterance or
    trial for A and B), so every resample is applied to both. For the difference to be paired,
    each statistic must also **use** the same items: a statistic that skips the items its own
    upstream could not score (a mean over finite PESQ values) needs the items either upstream
    could not score removed from both beforehand (:func:`downstream.paired.jointly_scored`).

    Args:
        stat_a / stat_b: ``stat(list of index arrays, one per group) -> metric`` of A / B.
        sizes: items (or cluster sizes) per group (one group per seed), the same for A and B.
        resamples: bootstrap resamples.
        seed: seeds the resampling.
        level: coverage of the interval.

    Returns:
        ``{"difference", "low", "high", "p_value", "resamples"}``: the observed difference, its
        percentile interval, and the two-sided p-value ``min(1, 2 * min(P(d <= 0), P(d >= 0)))``
        over the resampled differences ``d`` (0 is the smallest value it can report:
        ``1 / resamples`` is its resolution); ``resamples`` counts the resamples with a
        finite difference (those the interval and p-value use).

    Raises:
        ValueError: as :func:`bootstrap_interval`.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    full = full_indices(sizes)
    observed = float(stat_a(full)) - float(stat_b(full))
    draws = _draws([stat_a, stat_b], sizes, resamples, seed)
    diff = draws[:, 0] - draws[:, 1]
    low, high = _percentiles(diff, level)
    finite = diff[np.isfinite(diff)]
    p = float("nan")
    if finite.size:
        p = float(min(1.0, 2.0 * min(np.mean(finite <= 0), np.mean(finite >= 0))))
    return {"difference": observed, "low": low, "high": high, "p_value": p,
            "resamples": int(finite.size)}


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, float]:
    """Exact McNemar test on paired 0/1 outcomes (two-sided binomial test on the discordant
    pairs; McNemar, Psychometrika 1947).

    Args:
        correct_a / correct_b: ``(n,)`` whether each upstream got item ``i`` right.

    Returns:
        ``{"a_only": b, "b_only": c, "p_value"}`` with ``b`` items right only for A, ``c`` only
        for B; ``p_value`` 1.0 when there is no discordant pair.

    Raises:
        ValueError: different lengths.
    """
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"McNemar needs paired outcomes: {a.size} vs {b.size}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"a_only": only_a, "b_only": only_b, "p_value": p}
