"""Bootstrap 95 % intervals of a result's metrics, recomputed from its per-item records.

Every metric the task can recompute from the records (:meth:`Task.item_statistic
<downstream.base.Task.item_statistic>`) gets a percentile bootstrap interval
(:mod:`downstream.stats`), resampling the task's ``resample_unit``: the items, or for speaker
verification the test speakers and then utterances within each drawn speaker, each trial weighted
by the draws of its two utterances (since 2026-12-07), stratified by seed for several seeds.
:func:`item_groups` reads a result's records (:mod:`downstream.items`) one list per seed;
:func:`current_intervals` recomputes the trial-level intervals of older speaker verification
results.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .entries import result_seeds
from .items import read_items
from .stats import bootstrap_interval, full_indices

logger = logging.getLogger(__name__)

__all__ = ["current_intervals", "group_stat", "interval_method", "item_groups",
           "item_intervals", "resample_sizes", "task_class_of"]


def task_class_of(result: dict[str, Any]):
    """The task class of a result (``result["task"]``, :func:`downstream.base.get_task`), whose
    ``item_statistic``, ``resample_units`` and ``resample_unit`` recompute its metrics.

    Raises:
        ValueError: an unknown task (as :func:`~downstream.base.get_task`).
    """
    from .base import get_task

    return get_task(result["task"])


def group_stat(task_class, groups: Sequence[Sequence[dict]], metric: str):
    """``stat(list of index arrays) -> mean over groups of the metric``, or None."""
    fns = [task_class.item_statistic(g, metric) for g in groups]
    if any(f is None for f in fns):
        return None
    return lambda idx: float(np.mean([f(i) for f, i in zip(fns, idx, strict=True)]))


def resample_sizes(task_class, groups: Sequence[Sequence[dict]]) -> list[int | tuple[int, ...]]:
    """What the bootstrap draws from in each group (:func:`downstream.stats.resample_indices`):
    its item count, or, where :meth:`Task.resample_units
    <downstream.base.Task.resample_units>` gives clusters (speaker verification: test
    speakers, each a tuple of its utterances), the cluster sizes (a two-stage draw)."""
    out: list[int | tuple[int, ...]] = []
    for g in groups:
        units = task_class.resample_units(g)
        out.append(len(g) if units is None else tuple(len(u) for u in units))
    return out


def interval_method(task_class, resamples: int, seeds: int = 1) -> str | None:
    """The ``interval_method`` of results.json: what the bootstrap resamples (the task's
    ``resample_unit``), the seeds it is stratified by and the resamples; None for
    ``resamples < 1`` (no intervals)."""
    if resamples < 1:
        return None
    unit = f"test {task_class.resample_unit}s"
    if task_class.resample_unit == "speaker":
        unit = ("test speakers, then utterances within each drawn speaker (two-stage; each "
                "trial counted as often as its pair of utterances is drawn; since 2026-12-07)")
    if seeds > 1:
        return (f"bootstrap over {unit} stratified by seed (mean over {seeds} seeds), 95 %, "
                f"{resamples} resamples")
    return f"percentile bootstrap over {unit}, 95 %, {resamples} resamples"


def item_intervals(task_class, groups: Sequence[Sequence[dict]], metrics: dict[str, float],
                   resamples: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Bootstrap 95 % intervals ``{metric: [low, high]}`` of every metric in ``metrics`` that
    ``task_class.item_statistic`` can recompute from the records (one group per seed),
    resampling ``task_class.resample_unit`` (:func:`resample_sizes`; the items, or for speaker
    verification test speakers and then utterances within each drawn speaker).

    A metric whose recomputation from the records differs from the reported value (e.g.
    torchmetrics' macro average over classes absent from the test items) gets no interval, with
    a logged warning naming both values.
    """
    if resamples < 1 or not groups or not all(groups):
        return {}
    out = {}
    sizes = resample_sizes(task_class, groups)
    for metric in metrics:
        stat = group_stat(task_class, groups, metric)
        if stat is None:
            continue
        full = stat(full_indices(sizes))
        reported = metrics[metric]
        if not (math.isclose(full, reported, rel_tol=1e-6, abs_tol=1e-9)
                or (math.isnan(full) and math.isnan(reported))):
            logger.warning("%s: per-item records give %s, the run reported %s; no interval",
                           metric, full, reported)
            continue
        out[metric] = list(bootstrap_interval(stat, sizes, resamples, seed))
    return out


def _source_dirs(result: dict[str, Any]) -> list[Path]:
    base = Path(result.get("source_dir", "."))
    return [base / d for d in result.get("seed_dirs", ["."])]


def item_groups(result: dict[str, Any], condition: str, seeds: Sequence[int] | None = None
                ) -> list[list[dict[str, Any]]]:
    """The per-item records of one condition of a result, one list per seed.

    Args:
        seeds: only these seeds' records, in this order (default: all, in the result's order).

    Raises:
        FileNotFoundError: the ``items/`` files are missing.
        KeyError: a seed the result did not run.
    """
    dirs = _source_dirs(result)
    if seeds is not None:
        index = {s: i for i, s in enumerate(result_seeds(result))}
        dirs = [dirs[index[s]] for s in seeds]
    return [read_items(d / result.get("items_dir", "items") / f"{condition}.jsonl")
            for d in dirs]


def current_intervals(result: dict[str, Any], resamples: int = 1000) -> dict[str, Any]:
    """``result`` with intervals of the task's current ``resample_unit``.

    A speaker verification result written before 2026-12-07 (no ``resample_unit`` key) holds
    intervals that resampled trials; they are recomputed from its per-item files, resampling
    test speakers and their utterances (:func:`item_intervals`, stratified by seed for a
    multi-seed result), with
    ``interval_method`` and ``resample_unit`` to match. Other results, and results whose
    items files are missing (logged), are returned unchanged.
    """
    task_class = task_class_of(result)
    if task_class.resample_unit == task_class.item_unit \
            or result.get("resample_unit") == task_class.resample_unit \
            or not result.get("intervals"):
        return result
    seed = result.get("seed") if isinstance(result.get("seed"), int) else 0
    try:
        intervals = {cond: item_intervals(task_class, item_groups(result, cond),
                                          result["metrics"][cond], resamples, seed)
                     for cond in result["conditions"]}
    except FileNotFoundError as err:
        logger.warning("%s: its intervals resampled %ss, not %ss, and cannot be recomputed (%s)",
                       result["upstream"], result.get("item_unit"), task_class.resample_unit,
                       err)
        return result
    logger.info("%s: intervals recomputed as %s (the file's resampled %ss)", result["upstream"],
                interval_method(task_class, resamples, len(result_seeds(result))),
                result.get("item_unit"))
    return {**result, "intervals": intervals, "resample_unit": task_class.resample_unit,
            "interval_method": interval_method(task_class, resamples,
                                               len(result_seeds(result)))}
