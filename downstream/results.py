"""Writing and combining downstream results: results.json, results.md, robustness.png.

One run writes its own results; :func:`compare` merges the results.json of several runs of the
same task (one per upstream: teacher, distilled student, random student...) into one table and
one plot with a line per upstream.

Per-item results: a run writes ``OUT/items/<condition>.jsonl``, one JSON record per test
utterance (prediction, per-utterance scores, errors) or per trial (speaker verification scores),
as s3prl writes its predict / score files (strict JSON: an undefined score is ``null``). They
also count, per condition and metric, the items a metric could not score (``unscored``, e.g. a
failed PESQ), which its mean leaves out. From them every metric the task can recompute gets a
bootstrap 95 % interval (:mod:`downstream.stats`; resampling the task's ``resample_unit``: the
items, or for speaker verification the test speakers and then utterances within each drawn
speaker, each trial weighted by the draws of its two utterances, since 2026-12-07), and
:func:`compare` tests each pair of
upstreams **on the same items**: paired bootstrap interval of the difference and its p-value, plus
the exact McNemar test for accuracy. An item that either upstream could not score is left out of
that pair's comparison on both sides (:func:`jointly_scored`; counted as ``excluded_items``). A multi-seed run (:func:`aggregate_seeds`) reports the mean
over seeds with a standard deviation and an interval from a bootstrap stratified by seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robustdistill.files import OutputFolderError, atomic_write_text, unblocked_folder

from .stats import bootstrap_interval, full_indices, mcnemar, paired_bootstrap

logger = logging.getLogger(__name__)

__all__ = ["TestSetMismatch", "aggregate_listing", "aggregate_seeds", "check_evaluation_folder",
           "check_output_folder", "compare", "current_intervals", "folder_results",
           "interval_cell", "interval_method", "item_groups", "item_intervals", "jointly_scored",
           "load_results", "load_results_file", "paired_comparisons", "plot_robustness",
           "read_items", "resample_sizes", "results_table", "unscored_count", "unscored_counts",
           "unscored_note", "upstream_labels", "write_items", "write_outputs"]


class TestSetMismatch(ValueError):
    """Results that cannot be compared item by item (different test sets or items)."""

    __test__ = False


# ---------------------------------------------------------------------------- per-item records
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
            f.write(json.dumps(_null_for_nonfinite(record), default=_jsonable,
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
    return [_nan_for_null(json.loads(line)) for line in path.read_text().splitlines()
            if line.strip()]


def _is_unscored(value: Any) -> bool:
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
        count = sum(1 for r in items if metric in r and _is_unscored(r[metric]))
        if count:
            out[metric] = count
    return out


def _task_class(result: dict[str, Any]):
    from .base import get_task

    return get_task(result["task"])


def _group_stat(task_class, groups: Sequence[Sequence[dict]], metric: str):
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
        stat = _group_stat(task_class, groups, metric)
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


def _result_seeds(result: dict[str, Any]) -> list[int]:
    """The seeds of a result, in the order of its ``seed_dirs`` (one seed for a single run)."""
    seeds = result.get("seeds")
    return [int(s) for s in seeds] if seeds else [int(result["seed"])]


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
        index = {s: i for i, s in enumerate(_result_seeds(result))}
        dirs = [dirs[index[s]] for s in seeds]
    return [read_items(d / result.get("items_dir", "items") / f"{condition}.jsonl")
            for d in dirs]


def _seed_test_sets(result: dict[str, Any]) -> dict[int, str] | None:
    """``{seed: test_set_sha1}`` of each seed's test set, or None when unknown (a multi-seed
    result written before ``per_seed_test_set_sha1`` existed, or a run without a hash)."""
    if "per_seed_test_set_sha1" in result:
        return {int(s): h for s, h in result["per_seed_test_set_sha1"].items() if h}
    if "seed_dirs" not in result and isinstance(result.get("seed"), int) \
            and result.get("test_set_sha1"):
        return {result["seed"]: result["test_set_sha1"]}
    return None


def _shared_seeds(a: dict[str, Any], b: dict[str, Any]) -> list[int]:
    """The seeds two results both ran on the same test set (by per-seed hash), in ``a``'s
    order; empty when either result's per-seed hashes are unknown."""
    ha, hb = _seed_test_sets(a), _seed_test_sets(b)
    if not ha or not hb:
        return []
    return [s for s in _result_seeds(a) if s in hb and ha.get(s) == hb[s]]


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
    task_class = _task_class(first)
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


_NUMERIC_KEYS = ("metrics", "metrics_std", "intervals", "per_seed")
"""Keys of a result whose leaves are numbers: an undefined value (NaN) is stored as ``null``
and read back as NaN (so are the featurizer's layer weights; ``featurizer.layers`` may be a
real ``null``)."""


def _null_for_nonfinite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by ``None``, so that the file
    is strict JSON (``NaN`` is not JSON; ``jq`` and JavaScript refuse it)."""
    if isinstance(value, dict):
        return {k: _null_for_nonfinite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_null_for_nonfinite(v) for v in value]
    if hasattr(value, "tolist"):
        return _null_for_nonfinite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _nan_for_null(value: Any) -> Any:
    """Inverse of :func:`_null_for_nonfinite` on a numeric subtree: ``None`` leaves become NaN."""
    if isinstance(value, dict):
        return {k: _nan_for_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_for_null(v) for v in value]
    return float("nan") if value is None else value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

_REQUIRED = ("task", "upstream", "primary_metric", "higher_is_better", "conditions", "metrics")


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a results.json: one run's result, or a merged ``{"results": [...]}``.

    Returns:
        The list of results it holds.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or keys missing (named), or a listed condition without metrics,
            or a metric of a listed condition that is not a number or ``null`` (named).
    """
    return load_results_file(path)[1]


def load_results_file(path: str | Path, required: Sequence[str] = _REQUIRED
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`load_results`, also returning the whole file: ``(payload, results)``, the
    payload holding a compare output's ``comparisons`` and ``comparison_notes``.

    Args:
        required: the keys every result must have (default: those :func:`compare` needs;
            a reader that uses fewer may ask for fewer).

    Raises:
        FileNotFoundError / ValueError: as :func:`load_results` (one line, naming the file).
    """
    path = Path(path)
    payload = _read_json(path)
    return payload, _check_entries(payload, path, required)


def _read_json(path: Path) -> Any:
    """The JSON content of a results file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not UTF-8 JSON (the file and the decoder's message named).
    """
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _check_entries(payload: Any, path: Path, required: Sequence[str] = _REQUIRED
                   ) -> list[dict[str, Any]]:
    """The results a results.json ``payload`` holds, checked, with ``source_dir`` set (the
    file's folder, when absent) and ``null`` numbers read back as NaN (in place)."""
    entries = payload["results"] if isinstance(payload, dict) and "results" in payload \
        else [payload]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: not a downstream results file ('results' is not a "
                         "non-empty list)")
    for entry in entries:
        missing = [k for k in required if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"{path}: not a downstream results file (missing {missing})")
        absent = [c for c in entry["conditions"] if c not in entry["metrics"]]
        if absent:
            raise ValueError(f"{path}: no metrics for conditions {absent}")
        for cond in entry["conditions"]:  # a hand-edited "0.3" would fail only in the plot
            metrics = entry["metrics"][cond]
            if not isinstance(metrics, dict):
                raise ValueError(f"{path}: metrics of {cond!r} are not a mapping of metric "
                                 f"to number, got {type(metrics).__name__}")
            for name, value in metrics.items():
                if value is not None and (isinstance(value, bool)
                                          or not isinstance(value, int | float)):
                    raise ValueError(f"{path}: metric {name!r} under {cond!r} is not a "
                                     f"number or null, got {value!r}")
        entry.setdefault("source_dir", str(path.parent.resolve()))
        for key in _NUMERIC_KEYS:
            if isinstance(entry.get(key), dict):
                entry[key] = _nan_for_null(entry[key])
        featurizer = entry.get("featurizer")
        if isinstance(featurizer, dict) and isinstance(featurizer.get("weights"), dict):
            entry["featurizer"] = {**featurizer, "weights": _nan_for_null(featurizer["weights"])}
    return entries


# ---------------------------------------------------------------------------- output folders
def check_output_folder(out: str | Path) -> Path:
    """``out`` as a path, once it is known that it is (or can be made) a folder.

    Raises:
        ValueError: ``out``, or one of its parents, is an existing file
            (:func:`robustdistill.files.unblocked_folder`).
    """
    try:
        return unblocked_folder(out, "--out")
    except OutputFolderError as err:  # the downstream commands report ValueErrors in one line
        raise ValueError(str(err)) from err


def folder_results(folder: str | Path) -> tuple[str | None, list[dict[str, Any]]]:
    """What ``folder/results.json`` holds, for commands about to write there.

    Returns:
        ``(None, [])`` without a results.json; ``("evaluation", [result])`` for the result of
        an ``evaluate`` run written into this folder (one run, or the ``--seeds`` / aggregate
        result of one upstream); ``("comparison", results)`` for a ``compare`` output (a
        ``{"results": [...]}`` file, or, as compare wrote one result before, a single result
        read from another folder: its ``source_dir`` is elsewhere and it has no seeds).

    Raises:
        ValueError: a results.json that is not a downstream results file (named).
    """
    path = Path(folder).expanduser() / "results.json"
    if not path.is_file():
        return None, []
    payload = _read_json(path)
    merged = isinstance(payload, dict) and "results" in payload
    if not merged and isinstance(payload, dict) and payload.get("source_dir") \
            and "seed_dirs" not in payload:
        merged = Path(payload["source_dir"]).resolve() != path.parent.resolve()
    return ("comparison" if merged else "evaluation"), _check_entries(payload, path)


def _same_upstream(a: Any, b: Any) -> bool:
    """Whether two ``upstream`` values name the same model: equal ids, or paths of the same
    existing folder (``runs/x/student`` and ``./runs/x/student/``)."""
    if str(a) == str(b):
        return True
    pa, pb = Path(str(a)).expanduser(), Path(str(b)).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _held_results(out: str | Path, writer: str) -> tuple[Path, str | None, list]:
    """``out`` (:func:`check_output_folder`) and what it holds (:func:`folder_results`).

    Raises:
        ValueError: as :func:`check_output_folder`; a results.json in ``out`` that ``writer``
            (``"compare"``, ``"this run"``) would replace is not a downstream results file.
    """
    out = check_output_folder(out)
    try:
        kind, held = folder_results(out)
    except ValueError as err:
        raise ValueError(f"--out {str(out)!r} holds a results.json {writer} would replace, but "
                         f"{err}; remove it or give another folder") from None
    return out, kind, held


def aggregate_listing(folder: str | Path) -> Path | None:
    """The multi-seed ``results.json`` in ``folder``'s parent that lists ``folder`` among its
    seed folders (``seed_dirs``), or None: after a new run into ``folder`` (one seed run again)
    that aggregate holds the earlier run's figures and names per-item files the new run may
    have removed, until it is aggregated again."""
    folder = Path(folder).expanduser().resolve()
    path = folder.parent / "results.json"
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entries = payload.get("results", [payload]) if isinstance(payload, dict) else []
    for entry in entries:
        seed_dirs = entry.get("seed_dirs") if isinstance(entry, dict) else None
        if isinstance(seed_dirs, list) and any(
                (folder.parent / str(d)).resolve() == folder for d in seed_dirs):
            return path
    return None


def check_evaluation_folder(out: str | Path, task: str, label: str, upstream: str) -> Path:
    """Refuse to write one upstream's results over a folder that holds something else.

    ``evaluate`` (and ``aggregate``) may replace an earlier result of the same task, label
    and upstream in ``out`` (a re-run); they refuse a folder whose results.json holds another
    upstream's, task's or label's result, or a ``compare`` output, so that no results.json
    and head.pt of one upstream stand beside another's per-item files.

    Returns:
        ``out`` as a path.

    Raises:
        ValueError: as :func:`check_output_folder`; ``out`` holds a comparison, another
            evaluation, or a results.json that is not a downstream results file.
    """
    out, kind, held = _held_results(out, "this run")
    if kind == "comparison":
        raise ValueError(f"--out {str(out)!r} holds a comparison of {len(held)} result(s) "
                         "(robustdistill compare); give the evaluation a folder of its own")
    if kind == "evaluation":
        old = held[0]
        if old["task"] != task or _task_label(old) != label \
                or not _same_upstream(old["upstream"], upstream):
            raise ValueError(
                f"--out {str(out)!r} holds the results of upstream {old['upstream']!r} on task "
                f"{_task_label(old)!r}, not of {upstream!r} on {label!r}; give this run a folder "
                "of its own (or remove that one to replace it)")
    return out


def _short_label(result: dict[str, Any]) -> str:
    """The upstream's folder name (last path component), or the whole id when it has none."""
    return Path(str(result["upstream"]).rstrip("/")).name or str(result["upstream"])


def upstream_labels(results: Sequence[dict[str, Any]], names: dict[str, str] | None = None
                    ) -> list[str]:
    """Short, unique row labels of the upstreams, as :func:`results_table`, the paired
    comparisons' ``a`` / ``b`` and :func:`downstream.report.report` name them.

    The label is the upstream's folder name (``runs/x/student`` -> ``student``); where two
    results share it (``runs/a/student`` and ``runs/b/student``), their full ``upstream`` ids;
    where those are equal too (two ``fbank`` runs), the id followed by a space and ``#i``,
    ``i`` the 1-based position in ``results`` (``fbank #1``).

    Args:
        results: one entry per upstream (each needs ``upstream``).
        names: optional renaming ``{key: name}``; a result's key is, in this order of
            precedence, its label, its full ``upstream`` id, or its folder name when no other
            result shares that folder name (so names given as folder names keep working).
            A folder-name key that several results share renames none of them (with a logged
            warning): give their labels instead. A key that matches no result is logged too.

    Returns:
        One label (or its new name) per result, in ``results`` order.
    """
    short = [_short_label(r) for r in results]
    labels = [s if short.count(s) == 1 else str(r["upstream"]) for s, r in zip(short, results,
                                                                              strict=True)]
    labels = [lab if labels.count(lab) == 1 else f"{lab} #{i + 1}"
              for i, lab in enumerate(labels)]
    if not names:
        return labels
    out, warned, used = [], set(), set()
    for r, s, lab in zip(results, short, labels, strict=True):
        keys = [lab, str(r["upstream"])] + ([s] if short.count(s) == 1 else [])
        key = next((k for k in keys if k in names), None)
        if key is None and s in names and s not in warned:
            warned.add(s)
            logger.warning("name %r=%r not used: %d upstreams have the folder name %r; name "
                           "them by their labels (%s)", s, names[s], short.count(s), s,
                           ", ".join(repr(x) for x, y in zip(labels, short, strict=True)
                                     if y == s))
        used.update(k for k in keys if k in names)  # a lower-priority key matched a row too
        out.append(names[key] if key is not None else lab)
    if unknown := [k for k in names if k not in used and k not in warned]:
        logger.warning("names %s match no upstream (labels: %s)", unknown,
                       ", ".join(map(repr, labels)))
    return out


def _ordered_conditions(results: Sequence[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in results:
        seen += [c for c in r["conditions"] if c not in seen]
    return seen


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def unscored_count(result: dict[str, Any], cond: str, metric: str) -> int:
    """The result's ``unscored`` count of ``metric`` under ``cond`` (0 when none is recorded,
    as in results written before the count existed)."""
    per = result.get("unscored")
    per = per.get(cond) if isinstance(per, dict) else None
    count = per.get(metric) if isinstance(per, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def interval_cell(result: dict[str, Any], cond: str, metric: str,
                  number: Callable[[Any], str] = _cell) -> str:
    """One table cell: ``value [low, high]`` (``mean ± std [low, high]`` for several seeds),
    followed by ``(n unscored)`` when ``n`` test items could not be scored (left out of the
    value); an undefined value is ``-``, without its spread.

    Args:
        number: formats each number (default 4 decimals; ``-`` for None / NaN).
    """
    value = result["metrics"].get(cond, {}).get(metric)
    text = number(value)
    if text != "-":
        std = result.get("metrics_std", {}).get(cond, {}).get(metric)
        if std is not None and len(result.get("seeds", [])) > 1:
            text += f" ± {number(std)}"
        interval = result.get("intervals", {}).get(cond, {}).get(metric)
        if interval:
            text += f" [{number(interval[0])}, {number(interval[1])}]"
    if count := unscored_count(result, cond, metric):
        text += f" ({count} unscored)"
    return text


def unscored_note(results: Sequence[dict[str, Any]], metric: str | None = None) -> str | None:
    """One sentence explaining the ``(n unscored)`` marks of :func:`results_table` (every
    metric) and :func:`downstream.report.report` (``metric``, the primary one, alone), or None
    when no result records an unscored item (of ``metric``, when given)."""
    counted = [r for r in results if isinstance(r.get("unscored"), dict)
               and any(unscored_count(r, cond, m) for cond, per in r["unscored"].items()
                       if isinstance(per, dict) for m in per if metric in (None, m))]
    if not counted:
        return None
    unit = "/".join(sorted({str(r.get("item_unit", "item")) for r in counted}))
    seeds = any(len(r.get("seeds", [])) > 1 for r in counted)
    return (f'"(n unscored)" counts the test {unit}s of that condition on which the metric '
            "could not be computed (e.g. PESQ failed, or SI-SDR is undefined for a silent "
            "output)" + (", summed over seeds" if seeds else "") + "; the value leaves them "
            "out, which favours a model that fails on them.")


def results_table(results: Sequence[dict[str, Any]],
                  comparisons: tuple[list[dict[str, Any]], list[str]] | None = None) -> str:
    """Markdown: one table per metric, a row per upstream, a column per condition; each cell
    the value with its bootstrap 95 % interval (and ± the standard deviation over seeds for
    multi-seed runs) and ``(n unscored)`` when a result's ``unscored`` counts test items the
    metric could not score (explained by a warning line under the header); then the paired
    comparisons when given (:func:`paired_comparisons`), with an ``items left out`` column and
    a line explaining it when a pair left out items that one of its upstreams could not score
    (``excluded_items``). Rows are named by :func:`upstream_labels`. The cells' intervals are
    each evaluation's own (its ``interval_method``, e.g. 1000 resamples), the paired header
    gives the comparison's own resamples (``compare --bootstrap-resamples``), and a line names
    any row where fewer of them gave a finite difference.

    Raises:
        ValueError: results of different tasks.
    """
    _check_same_task(results)
    conditions = _ordered_conditions(results)
    metric_names: list[str] = []
    for r in results:
        for cond in r["conditions"]:
            metric_names += [m for m in r["metrics"][cond] if m not in metric_names]
    primary = results[0]["primary_metric"]
    metric_names.sort(key=lambda m: m != primary)  # primary metric first
    direction = "higher is better" if results[0]["higher_is_better"] else "lower is better"
    label = _task_label(results[0])
    title = label if label == results[0]["task"] else f"{label} ({results[0]['task']})"
    lines = [f"# {title}", ""]
    for r, name in zip(results, upstream_labels(results), strict=True):
        items = r.get("num_items", {})
        lines.append(f"- **{name}**: `{r['upstream']}`, seed {r.get('seed')}, items "
                     + ", ".join(f"{k} {v}" for k, v in items.items())
                     + (f", total {r['timing']['total_s']:.0f} s" if "timing" in r else ""))
    methods = sorted({r["interval_method"] for r in results if r.get("interval_method")})
    if methods:
        lines += ["", "Cells: value [95 % interval, each evaluation's own: " + "; ".join(methods)
                  + "]"
                  + (" ; ± standard deviation over seeds" if any(len(r.get("seeds", [])) > 1
                                                                  for r in results) else "")]
    if note := unscored_note(results):
        lines += ["", f"**Warning: {note}**"]
    if _different_test_sets(results):
        lines += ["", "**Warning: these upstreams were tested on different test sets (data, seed, "
                  "conditions or noise/RIR files differ); their numbers are not directly "
                  "comparable.**"]
    lines.append("")
    for metric in metric_names:
        note = f" ({direction})" if metric == primary else ""
        lines += [f"## {metric}{note}", "", "| upstream | " + " | ".join(conditions) + " |",
                  "|---|" + "---|" * len(conditions)]
        for r, name in zip(results, upstream_labels(results), strict=True):
            cells = [interval_cell(r, c, metric) for c in conditions]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if comparisons is not None:
        rows, notes = comparisons
        units = sorted({row.get("resample_unit") for row in rows} - {None, "utterance"})
        lines += [f"## paired comparisons ({primary}: a minus b, same test items"
                  + "".join(f"; the bootstrap resamples test {u}s"
                            + (" and their utterances" if u == "speaker" else "")
                            for u in units) + _paired_resamples_note(rows) + ")", ""]
        if rows:
            has_mc = any("mcnemar_p" in row for row in rows)
            has_ex = any(row.get("excluded_items") for row in rows)
            lines += ["| a | b | condition | difference [95 % interval] | bootstrap p |"
                      + (" McNemar p (a only / b only) |" if has_mc else "")
                      + (" items left out |" if has_ex else "") + " significant |",
                      "|---|---|---|---|---|" + ("---|" if has_mc else "")
                      + ("---|" if has_ex else "") + "---|"]
            for row in rows:
                mc = (f" {row['mcnemar_p']:.3g} ({row['a_only']} / {row['b_only']}) |"
                      if "mcnemar_p" in row else (" - |" if has_mc else ""))
                ex = f" {row.get('excluded_items') or 0} |" if has_ex else ""
                lines.append(
                    f"| {row['a']} | {row['b']} | {row['condition']} | {row['difference']:+.4f} "
                    f"[{row['low']:+.4f}, {row['high']:+.4f}] | {row['p_value']:.3g} |{mc}{ex} "
                    f"{'yes' if row['significant'] else 'no'} |")
            if has_ex:
                lines += ["", '**"items left out": test items on which either upstream '
                          f"could not score {primary} (e.g. a failed PESQ); the difference and "
                          "its interval are over the items both scored.**", ""]
        lines += [f"- {n}" for n in notes]
        lines += [f"- {row['a']} vs {row['b']} {row['condition']}: {row['resamples']} of "
                  f"{row['bootstrap_resamples']} resamples gave a finite difference"
                  for row in rows
                  if 0 < row.get("resamples", 0) < row.get("bootstrap_resamples", 0)]
        lines.append("")
    weights = [(name, r["featurizer"]["weights"]) for r, name in
               zip(results, upstream_labels(results), strict=True) if "featurizer" in r]
    if weights:
        lines += ["## featurizer layer weights", ""]
        for name, w in weights:
            lines.append(f"- {name}: " + ", ".join(f"{k}: {v:.3f}" for k, v in w.items()))
        lines.append("")
    return "\n".join(lines)


def _paired_resamples_note(rows: Sequence[dict[str, Any]]) -> str:
    """``"; paired bootstrap: N resamples"`` for the header of :func:`results_table`'s paired
    comparisons: the ``--bootstrap-resamples`` of ``compare`` (each row's
    ``bootstrap_resamples``), which may differ from the resamples of the evaluations' own
    intervals (their ``interval_method``). Rows written before 2026-12-07 lack the key: their
    largest finite count (``resamples``) stands in. Empty when no row has any."""
    counts = sorted({int(row.get("bootstrap_resamples", row.get("resamples") or 0))
                     for row in rows} - {0})
    if not counts:
        return ""
    return "; paired bootstrap: " + ", ".join(map(str, counts)) + " resamples"


def _same_test_set(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two results were tested on the same test audio: equal ``test_set_sha1``, or
    every seed of both has a recorded hash and those agree seed by seed (the same seeds
    aggregated in another order, or one seed aggregated beside its plain run)."""
    if a.get("test_set_sha1") == b.get("test_set_sha1"):
        return True
    ha, hb = _seed_test_sets(a), _seed_test_sets(b)
    return bool(ha) and ha == hb and set(ha) == set(_result_seeds(a)) == set(_result_seeds(b))


def _different_test_sets(results: Sequence[dict[str, Any]]) -> bool:
    """True when two results were tested on different test audio (:func:`_same_test_set`;
    results without a hash, written before the hash existed, are not counted)."""
    hashed = [r for r in results if r.get("test_set_sha1")]
    return any(not _same_test_set(a, b) for a, b in itertools.combinations(hashed, 2))


def _task_label(result: dict[str, Any]) -> str:
    """The task label (``ks``, ``sid``...; results written before labels: the task folder)."""
    return str(result.get("label") or result["task"])


def _check_same_task(results: Sequence[dict[str, Any]]) -> None:
    """Refuse to put different tasks in one table, including two tasks that share a folder and
    a metric (keyword spotting and speaker identification are both accuracy).

    Raises:
        ValueError: no results, or different (task, label, primary metric).
    """
    if not results:
        raise ValueError("no results given")
    tasks = {(r["task"], _task_label(r), r["primary_metric"]) for r in results}
    if len(tasks) > 1:
        raise ValueError(f"cannot combine results of different tasks: {sorted(tasks)}")


def jointly_scored(ga: Sequence[Sequence[dict[str, Any]]], gb: Sequence[Sequence[dict[str, Any]]],
                   metric: str) -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]],
                                         int]:
    """Restrict two upstreams' paired per-item records to the items **both** scored.

    Generic over tasks whose records carry the metric's per-item value under its name (speech
    enhancement: ``pesq``, ``si_sdr``...): item ``i`` of a seed is kept only when neither
    ``ga[seed][i]`` nor ``gb[seed][i]`` holds ``metric`` as an unscored value (NaN, +-inf,
    ``null`` / None; :func:`unscored_counts`). A statistic that averages the finite values
    (:meth:`SpeechEnhancementTask.item_statistic
    <downstream.tasks.speech_enhancement.task.SpeechEnhancementTask.item_statistic>`) would
    otherwise average A and B over different items. Records without a ``metric`` key
    (accuracy from ``correct``, EER from trial scores, WER from error counts) are all kept.

    Args:
        ga / gb: per seed, the records of A and of B, already paired item by item (same
            length and keys, as :func:`paired_comparisons` checks).
        metric: the compared metric.

    Returns:
        ``(ga', gb', excluded)``: the kept records of each seed, in their order, and the
        number of (seed, item) records left out (0: ``ga`` and ``gb`` unchanged). A seed may
        be left with no item.

    Raises:
        ValueError: a seed's two record lists differ in length.
    """
    out_a: list[list[dict[str, Any]]] = []
    out_b: list[list[dict[str, Any]]] = []
    excluded = 0
    for a, b in zip(ga, gb, strict=True):
        if len(a) != len(b):
            raise ValueError(f"unpaired records: {len(a)} vs {len(b)} items")
        keep = [i for i, (ra, rb) in enumerate(zip(a, b, strict=True))
                if not any(metric in r and _is_unscored(r[metric]) for r in (ra, rb))]
        excluded += len(a) - len(keep)
        out_a.append([a[i] for i in keep])
        out_b.append([b[i] for i in keep])
    return out_a, out_b, excluded


def paired_comparisons(results: Sequence[dict[str, Any]], resamples: int = 1000, seed: int = 0
                       ) -> tuple[list[dict[str, Any]], list[str]]:
    """Every pair of upstreams, every condition, the primary metric: paired bootstrap of the
    difference on the same items (and McNemar for accuracy-type records with ``correct``).

    Only the items **both** upstreams scored are compared (:func:`jointly_scored`): where A's
    PESQ failed on an utterance (NaN) and B's did not, that utterance is left out of both
    sides, of the observed difference and of every resample, so the difference is the mean
    over the jointly scored items of ``a - b`` for a mean metric. The row's
    ``excluded_items`` counts them (summed over seeds) and a note per pair names the
    conditions; the per-upstream values of the results table still average each upstream
    over all the items it scored. Metrics not held per item (accuracy, EER, WER) leave out
    nothing.

    Two multi-seed results with different seed sets (e.g. a one-seed teacher beside
    three-seed students) are compared on the seeds both ran with the same test set (per-seed
    ``test_set_sha1``), with a note naming them; the rows' ``seeds`` say which. Pairs that share
    no such seed, or whose item keys differ, are skipped with a note. Where a seed has no item
    both scored (e.g. PESQ failed on every utterance), the row's difference, interval and
    p-value are NaN.

    Returns:
        ``(rows, notes)``: rows ``{"a", "b", "condition", "metric", "difference", "low",
        "high", "p_value", "resamples", "bootstrap_resamples", "significant", "seeds",
        "excluded_items", "resample_unit"[, "mcnemar_p", "a_only", "b_only"]}`` with
        ``difference = metric(a) - metric(b)`` over ``seeds`` and the jointly scored items (for
        a multi-seed pair, the difference of the means over those seeds), ``bootstrap_resamples``
        the resamples drawn (the argument ``resamples``) and ``resamples`` those with a finite
        difference (:func:`~downstream.stats.paired_bootstrap`), ``significant`` when the 95 %
        interval excludes 0, ``excluded_items`` the (seed, item) records left out (0 when
        none), ``resample_unit`` what the bootstrap drew (the task's; ``"speaker"`` for speaker
        verification: the same speakers and utterances for A and B in every resample, each
        trial weighted by its utterances' draws); ``a`` / ``b`` are :func:`upstream_labels`.
        Notes are
        human-readable reasons for skipped or restricted pairs.
    """
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    labels = upstream_labels(results)
    task_class = _task_class(results[0])
    metric = results[0]["primary_metric"]
    unit = results[0].get("item_unit", "item")
    conditions = _ordered_conditions(results)
    for (ia, a), (ib, b) in itertools.combinations(enumerate(results), 2):
        pair = f"{labels[ia]} vs {labels[ib]}"
        seeds = None  # all, in each result's own order, when the test sets agree
        if a.get("test_set_sha1") != b.get("test_set_sha1"):
            seeds = _shared_seeds(a, b)
            if not seeds:
                notes.append(f"{pair}: different test sets (test_set_sha1), no paired test")
                continue
            if not _same_test_set(a, b):  # not merely the same seeds in another order
                notes.append(f"{pair}: compared on seed{'s' if len(seeds) > 1 else ''} "
                             f"{', '.join(map(str, seeds))} only, the seeds both ran "
                             f"({labels[ia]}: {', '.join(map(str, _result_seeds(a)))}; "
                             f"{labels[ib]}: {', '.join(map(str, _result_seeds(b)))})")
        left_out = []
        for cond in conditions:
            if cond not in a["metrics"] or cond not in b["metrics"]:
                continue
            try:
                ga, gb = item_groups(a, cond, seeds), item_groups(b, cond, seeds)
                _check_paired(ga, gb, task_class)
            except (FileNotFoundError, TestSetMismatch) as err:
                notes.append(f"{pair} {cond}: {err}")
                continue
            total = sum(len(g) for g in ga)
            ga, gb, excluded = jointly_scored(ga, gb, metric)
            if excluded:
                left_out.append(f"{cond} {excluded} of {total}")
            sa, sb = _group_stat(task_class, ga, metric), _group_stat(task_class, gb, metric)
            if sa is None or sb is None:
                notes.append(f"{pair}: {metric} cannot be recomputed from the items")
                break
            if all(ga):  # one resample of the units (SV: speakers) for A and B alike
                test = paired_bootstrap(sa, sb, resample_sizes(task_class, ga), resamples, seed)
            else:  # a seed without a jointly scored item: its metric, so the mean, undefined
                test = {"difference": float("nan"), "low": float("nan"), "high": float("nan"),
                        "p_value": float("nan"), "resamples": 0}
            row = {"a": labels[ia], "b": labels[ib], "condition": cond, "metric": metric, **test,
                   "bootstrap_resamples": resamples,
                   "significant": bool(test["low"] > 0 or test["high"] < 0),
                   "seeds": seeds if seeds is not None else a.get("seeds", [a.get("seed")]),
                   "excluded_items": excluded, "resample_unit": task_class.resample_unit}
            if all(ga) and all("correct" in r for g in ga + gb for r in g):
                mc = mcnemar([r["correct"] for g in ga for r in g],
                             [r["correct"] for g in gb for r in g])
                row.update({"mcnemar_p": mc["p_value"], "a_only": mc["a_only"],
                            "b_only": mc["b_only"]})
            rows.append(row)
        if left_out:
            several = len(seeds if seeds is not None else a.get("seeds") or [0]) > 1
            notes.append(f"{pair}: {metric} compared on the test {unit}s both scored only; left "
                         "out, as one or both could not score them: " + ", ".join(left_out)
                         + (" (seed x item records, summed over seeds)" if several else ""))
    return rows, notes


def _item_id(record: dict[str, Any]) -> str:
    return str(record.get("key", (record.get("enroll"), record.get("test"))))


def _check_paired(ga: Sequence[Sequence[dict]], gb: Sequence[Sequence[dict]],
                  task_class=None) -> None:
    """Refuse records that are not the same items in the same order, or (``task_class``
    given) whose resample units differ (SV: the speakers the target trials define, with their
    utterances), since a paired resample must draw the same units for both.

    Raises:
        TestSetMismatch: as above (one line).
    """
    if len(ga) != len(gb):
        raise TestSetMismatch(f"{len(ga)} vs {len(gb)} seeds")
    for a, b in zip(ga, gb, strict=True):
        if [_item_id(r) for r in a] != [_item_id(r) for r in b]:
            raise TestSetMismatch("the per-item records hold different items")
        if task_class is not None \
                and task_class.resample_units(a) != task_class.resample_units(b):
            raise TestSetMismatch(f"the per-item records group their items into different "
                                  f"{task_class.resample_unit}s")


def plot_robustness(results: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Primary metric vs condition, one line per upstream (matplotlib, Agg backend).

    The x axis holds the noise conditions in increasing SNR, then ``clean``; the other
    conditions (``reverb``, ``reverb+snr*``) are separate, unconnected markers at the right.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _check_same_task(results)
    conditions = _ordered_conditions(results)
    snr = sorted((c for c in conditions if c.startswith("snr")), key=lambda c: float(c[3:]))
    line = snr + (["clean"] if "clean" in conditions else [])
    others = [c for c in conditions if c not in line]
    axis = line + others
    primary = results[0]["primary_metric"]
    fig, ax = plt.subplots(figsize=(1.2 * len(axis) + 3, 4))
    for r, label in zip(results, upstream_labels(results), strict=True):
        def value(c, _r=r):
            return _r["metrics"].get(c, {}).get(primary, float("nan"))
        def bars(cs, _r=r):
            """(2, n) distances to the interval ends (0 where there is no interval)."""
            out = np.zeros((2, len(cs)))
            for k, c in enumerate(cs):
                iv = _r.get("intervals", {}).get(c, {}).get(primary)
                v = value(c)
                if iv and np.isfinite(v) and all(np.isfinite(iv)):
                    out[:, k] = [max(0.0, v - iv[0]), max(0.0, iv[1] - v)]
            return out

        xs = [axis.index(c) for c in line]
        handle = ax.errorbar(xs, [value(c) for c in line], yerr=bars(line), marker="o",
                             capsize=3, label=label).lines[0]
        if others:
            ax.errorbar([axis.index(c) for c in others], [value(c) for c in others],
                        yerr=bars(others), linestyle="none", marker="s", capsize=3,
                        color=handle.get_color())
    ax.set_xticks(range(len(axis)), [c.replace("snr", "SNR ") + (" dB" if c.startswith("snr")
                                                                  else "") for c in axis])
    ax.set_xlabel("test condition")
    ax.set_ylabel(primary + (" (higher is better)" if results[0]["higher_is_better"]
                             else " (lower is better)"))
    ax.set_title(f"{_task_label(results[0])}: robustness (bars: 95 % intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: Sequence[dict[str, Any]], out: str | Path,
                  comparisons: tuple[list[dict[str, Any]], list[str]] | None = None,
                  merged: bool = False) -> None:
    """Write ``results.json`` (the single result, or ``{"results": [...], "comparisons":
    [...]}`` for several), ``results.md`` and ``robustness.png`` into ``out`` (created).

    ``results.json`` is strict JSON: an undefined value (NaN, e.g. an EER without impostor
    trials or a p-value without finite resamples) is written as ``null``, and
    :func:`load_results` reads a metric or interval stored so back as NaN.

    Args:
        merged: write the ``{"results": [...]}`` form even for one result (``compare``'s
            output, which :func:`folder_results` tells from an evaluation by it).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = (results[0] if len(results) == 1 and not merged
                               else {"results": list(results)})
    if comparisons is not None:
        payload = {**payload, "comparisons": comparisons[0], "comparison_notes": comparisons[1]}
    atomic_write_text(out / "results.json",
                      json.dumps(_null_for_nonfinite(payload), indent=2, default=_jsonable,
                                 allow_nan=False) + "\n")
    atomic_write_text(out / "results.md", results_table(results, comparisons))
    plot_robustness(results, out / "robustness.png")



def current_intervals(result: dict[str, Any], resamples: int = 1000) -> dict[str, Any]:
    """``result`` with intervals of the task's current ``resample_unit``.

    A speaker verification result written before 2026-12-07 (no ``resample_unit`` key) holds
    intervals that resampled trials; they are recomputed from its per-item files, resampling
    test speakers and their utterances (:func:`item_intervals`, stratified by seed for a
    multi-seed result), with
    ``interval_method`` and ``resample_unit`` to match. Other results, and results whose
    items files are missing (logged), are returned unchanged.
    """
    task_class = _task_class(result)
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
                interval_method(task_class, resamples, len(_result_seeds(result))),
                result.get("item_unit"))
    return {**result, "intervals": intervals, "resample_unit": task_class.resample_unit,
            "interval_method": interval_method(task_class, resamples,
                                               len(_result_seeds(result)))}


def _run_key(result: dict[str, Any]) -> tuple[str, tuple[str, ...], str]:
    """What names one run's result: its upstream, its seeds and the folder of the run
    (``source_dir``, which a comparison keeps for every result it holds)."""
    seeds = result.get("seeds") or [result.get("seed")]
    return (str(result["upstream"]), tuple(str(s) for s in seeds),
            str(Path(str(result["source_dir"])).expanduser().resolve()))


def _distinct_runs(loaded: Sequence[tuple[str | Path, Any, list[dict[str, Any]]]]
                  ) -> list[dict[str, Any]]:
    """The results of several results.json files, each run once, in the files' order.

    A run (same upstream, seeds and run folder: :func:`_run_key`) given by several files, e.g. an
    evaluation's results.json and an earlier comparison holding it (``compare
    runs/kws_*/results.json --out elsewhere`` once ``runs/kws_compare`` exists), is kept from an
    evaluation's file rather than a comparison's (whose copy may predate a re-run of the
    evaluation), else from the first file. Every copy left out is named in a warning (saying
    when its figures differ from the kept one's); a file none of whose results is kept is named
    once, as left out.

    Args:
        loaded: ``(path, payload, results)`` per file, as :func:`load_results_file` returns
            them (``source_dir`` set).
    """
    def merged(payload: Any) -> bool:
        return isinstance(payload, dict) and "results" in payload

    keeper: dict[tuple, tuple[int, int]] = {}  # run -> (file index, result index)
    for i in sorted(range(len(loaded)), key=lambda i: merged(loaded[i][1])):  # stable
        for j, result in enumerate(loaded[i][2]):
            keeper.setdefault(_run_key(result), (i, j))
    kept: list[dict[str, Any]] = []
    for i, (path, _, results) in enumerate(loaded):
        dropped = [(j, r) for j, r in enumerate(results) if keeper[_run_key(r)] != (i, j)]
        kept += [r for j, r in enumerate(results) if keeper[_run_key(r)] == (i, j)]
        if dropped and len(dropped) == len(results):
            given_by = sorted({str(loaded[keeper[_run_key(r)][0]][0]) for _, r in dropped})
            logger.warning("leaving out %s: every result in it is given by %s", path,
                           ", ".join(given_by))
            continue
        for _, result in dropped:
            k, m = keeper[_run_key(result)]
            differ = _null_for_nonfinite(result["metrics"]) != \
                _null_for_nonfinite(loaded[k][2][m]["metrics"])
            logger.warning("leaving out the result of %r (seed %s, run %s) in %s: given by %s%s",
                           result["upstream"], result.get("seeds") or result.get("seed"),
                           result["source_dir"], path, loaded[k][0],
                           " (its figures differ: an older copy)" if differ else "")
    return kept


def compare(paths: Sequence[str | Path], out: str | Path, resamples: int = 1000
            ) -> list[dict[str, Any]]:
    """Merge several results.json (same task and label, one per upstream) into ``out``, with
    paired comparisons of every pair of upstreams on the same test items
    (:func:`paired_comparisons`). The output's results.json is always a ``{"results": [...]}``
    file, even for one input.

    Speaker verification results written before 2026-12-07 get intervals resampling test
    speakers, as new ones (:func:`current_intervals`).

    ``out`` may hold an earlier comparison, which is replaced; it may not hold an evaluation
    (:func:`folder_results`): its results.json and results.md would be replaced by the
    comparison's while its ``items/`` and ``head.pt`` stayed. An earlier comparison's own
    ``results.json`` among ``paths`` (a glob such as ``runs/kws_*/results.json`` with
    ``--out runs/kws_compare`` matches it) is left out with a warning: read back, every upstream
    would appear twice and be compared with itself. A file given twice is compared once (with a
    warning), and so is a run's result given by several files, such as an evaluation's and
    another comparison's that holds it (:func:`_distinct_runs`).

    Raises:
        FileNotFoundError / ValueError: as :func:`load_results`; ``out`` is a file or holds an
            evaluation, or a results.json that is not a results file; results of different
            tasks or labels (e.g. KWS and SID, both accuracy); no input left but ``out``'s own;
            ``resamples < 1``.
    """
    if resamples < 1:
        raise ValueError(f"--bootstrap-resamples must be >= 1, got {resamples}")
    out, kind, held = _held_results(out, "compare")
    if kind == "evaluation":
        suggestion = out.parent / f"{_task_label(held[0])}_compare"
        raise ValueError(f"--out {str(out)!r} holds the evaluation of {held[0]['upstream']!r} "
                         f"({_task_label(held[0])}): compare would replace its results.json; "
                         f"give the comparison a folder of its own (e.g. {str(suggestion)!r})")
    unique: dict[Path, str | Path] = {}
    for p in paths:
        if Path(p).resolve() in unique:
            logger.warning("%s is given twice: compared once", p)
        unique.setdefault(Path(p).resolve(), p)
    own = (out / "results.json").resolve()
    if own in unique:
        logger.warning("leaving out %s: it is this comparison's own output (an earlier run)", own)
        del unique[own]
        if not unique:
            raise ValueError(f"no results to compare besides the output's own {own}")
    loaded = [(p, *load_results_file(p)) for p in unique.values()]
    results = [current_intervals(r, resamples) for r in _distinct_runs(loaded)]
    _check_same_task(results)
    if _different_test_sets(results):
        logger.warning("the results were tested on different test sets; not directly comparable")
    comparisons = paired_comparisons(results, resamples) if len(results) > 1 else None
    write_outputs(results, out, comparisons, merged=True)
    return results
