"""Multi-seed aggregation: one upstream's runs with several seeds merged into one result.

The mean over seeds, the sample standard deviation, intervals from a bootstrap stratified by
seed (:mod:`downstream.intervals`), each seed's own metrics and test-set hash, and the
``unscored`` counts summed over seeds (recounted from the per-item files,
:mod:`downstream.items`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .intervals import interval_method, item_intervals, task_class_of
from .items import read_items, unscored_counts

__all__ = ["aggregate_seeds"]


def aggregate_seeds(runs: Sequence[dict[str, Any]], dirs: Sequence[str | Path],
                    resamples: int = 1000) -> dict[str, Any]:
    """Merge the results of one task and upstream run with several seeds.

    ``metrics`` become the mean over seeds, ``metrics_std`` the sample standard deviation
    (ddof 1; 0 for one seed), ``intervals`` a bootstrap of the mean resampling the test items
    within each seed, ``per_seed`` the seeds' own metrics. ``unscored`` (``{condition:
    {metric: count}}``, :func:`unscored_counts`) is **summed over seeds**: the number of
    (seed, test item) scores left out of the seeds' means; it is recounted from the per-item
    files, so runs written before ``unscored`` existed get it too.

    ``resamples`` 0 gives no intervals (``interval_method`` None).

    Raises:
        ValueError: runs of different tasks / upstreams / conditions, duplicate seeds, or
            ``resamples < 0``.
    """
    if resamples < 0:
        raise ValueError(f"--bootstrap-resamples must be >= 0 (0: no intervals), got {resamples}")
    if not runs or len(runs) != len(dirs):
        raise ValueError("aggregate_seeds needs one folder per run")
    first = runs[0]
    for r in runs[1:]:
        for key in ("task", "upstream", "label", "conditions"):
            if r.get(key) != first.get(key):
                raise ValueError(f"cannot aggregate runs with different {key}: "
                                 f"{first.get(key)!r} vs {r.get(key)!r}")
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"duplicate seeds {seeds}")
    dirs = [Path(d).resolve() for d in dirs]
    common = Path(os.path.commonpath([str(d) for d in dirs]))
    task_class = task_class_of(first)
    metrics, std, intervals, unscored = {}, {}, {}, {}
    for cond in first["conditions"]:
        names = list(first["metrics"][cond])
        values = {m: np.array([r["metrics"][cond][m] for r in runs], dtype=np.float64)
                  for m in names}
        metrics[cond] = {m: float(np.mean(v)) for m, v in values.items()}
        std[cond] = {m: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
                     for m, v in values.items()}
        groups = [read_items(d / r.get("items_dir", "items") / f"{cond}.jsonl")
                  for d, r in zip(dirs, runs, strict=True)]
        intervals[cond] = item_intervals(task_class, groups, metrics[cond], resamples, 0)
        per_seed = [unscored_counts(g, names) for g in groups]
        unscored[cond] = {m: n for m in names if (n := sum(c.get(m, 0) for c in per_seed))}
    merged = {k: v for k, v in first.items() if k not in
              ("metrics", "intervals", "seed", "dev", "timing", "featurizer", "source_dir")}
    merged.update({
        "seed": seeds,
        "seeds": seeds,
        "seed_dirs": [str(d.relative_to(common)) for d in dirs],
        "source_dir": str(common),
        "metrics": metrics,
        "metrics_std": std,
        "intervals": intervals,
        "unscored": unscored,
        "interval_method": interval_method(task_class, resamples, len(seeds)),
        "resample_unit": task_class.resample_unit,
        "per_seed": {str(r["seed"]): r["metrics"] for r in runs},
        "per_seed_test_set_sha1": {str(r["seed"]): r.get("test_set_sha1") for r in runs},
        "test_set_sha1": hashlib.sha1("\n".join(r.get("test_set_sha1") or ""
                                                for r in runs).encode()).hexdigest(),
        "featurizer": {"weights": {k: float(np.mean([r["featurizer"]["weights"][k]
                                                     for r in runs]))
                                   for k in first["featurizer"]["weights"]}},
        "timing": {"total_s": float(sum(r["timing"]["total_s"] for r in runs))},
    })
    return merged
