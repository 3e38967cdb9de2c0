"""Per-item records: the ``OUT/items/<condition>.jsonl`` files, and the items a metric left out.

A run writes one JSON record per test utterance (prediction, per-utterance scores, errors) or
per trial (speaker verification scores), as s3prl writes its predict / score files, in strict
JSON (:mod:`downstream.strict_json`: an undefined score is ``null``). They also count, per
condition and metric, the items a metric could not score (``unscored``, e.g. a failed PESQ),
which its mean leaves out. The intervals (:mod:`downstream.intervals`), the multi-seed
aggregate (:mod:`downstream.seeds`) and the paired comparisons (:mod:`downstream.paired`) are
computed from these records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .strict_json import jsonable, nan_for_null, null_for_nonfinite

__all__ = ["is_unscored", "read_items", "unscored_counts", "write_items"]


def write_items(path: str | Path, items: Sequence[dict[str, Any]]) -> None:
    """Write per-item records as JSON lines (``path``'s folder must exist).

    Every line is strict JSON: a non-finite float (NaN, e.g. a failed PESQ or an undefined
    SI-SDR; +-inf), at any depth of a record, is written as ``null``, which :func:`read_items`
    reads back as NaN (``jq`` and JavaScript refuse the bare ``NaN`` token). A record should
    therefore not hold a real ``None``: it would read back as NaN too (no task writes one).

    Raises:
        TypeError: a value JSON cannot hold (numpy arrays and paths are converted).
    """
    with open(path, "w") as f:
        for record in items:
            f.write(json.dumps(null_for_nonfinite(record), default=jsonable,
                               allow_nan=False) + "\n")


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """Read a :func:`write_items` file: one record per non-empty line, in file order, with
    every ``null`` leaf read back as NaN (so a consumer sees the NaN the task recorded; an
    infinity, written as ``null`` too, reads back as NaN). Files written before ``null``, with
    bare ``NaN`` / ``Infinity`` tokens, still read (as NaN / inf).

    Raises:
        FileNotFoundError: no such file (the run predates per-item results, or was moved
            without its ``items/`` folder).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"per-item results not found: {path}")
    return [nan_for_null(json.loads(line)) for line in path.read_text().splitlines()
            if line.strip()]


def is_unscored(value: Any) -> bool:
    """A score the task could not compute: a non-finite number, or ``None`` (``null``)."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return False
    return not math.isfinite(float(value))


def unscored_counts(items: Sequence[dict[str, Any]], metrics: Iterable[str]
                    ) -> dict[str, int]:
    """How many per-item records could not score each metric.

    Generic over tasks whose records carry the metric names as keys (speech enhancement:
    ``pesq``, ``si_sdr``...): a record counts for ``metric`` when it holds that key with a
    non-finite value (NaN, +-inf, or ``null`` / None). Such items are left out of the
    metric's mean (e.g. :meth:`SpeechEnhancementTask.item_statistic
    <downstream.tasks.speech_enhancement.task.SpeechEnhancementTask.item_statistic>`), so the
    count says how much of the test set the mean does not cover.

    Args:
        items: the per-item records of one condition (:meth:`Task.items
            <downstream.base.Task.items>` or :func:`read_items`).
        metrics: metric names, e.g. the condition's reported metrics.

    Returns:
        ``{metric: count}`` with only the metrics whose count is above 0, in ``metrics``
        order (``{}`` when every item scored every metric, or the records hold no metric
        keys, as for accuracy, EER or WER records).
    """
    out = {}
    for metric in metrics:
        count = sum(1 for r in items if metric in r and is_unscored(r[metric]))
        if count:
            out[metric] = count
    return out
