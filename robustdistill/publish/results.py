"""Reading downstream ``results.json`` files for a model card, in every form they take.

A results file holds one run (``{"task": ..., "metrics": {condition: {metric: value}}}``) or
several (``{"results": [...]}``, written by ``robustdistill compare``). Newer files may give a
metric as ``{"value": v, "ci": [low, high]}`` (or ``mean``/``estimate`` and
``low``/``high``/``ci_low``/``ci_high``/``interval``), intervals in a separate
``"intervals": {condition: {metric: [low, high]}}`` mapping, and a task ``label``; all of these
are read, and anything else (per-item outputs, histories) is ignored.

Where a file gives no interval for an accuracy-like metric (a proportion of ``n`` test items),
a Wilson score 95 % interval is computed from the value and ``n`` (``num_items["test"]``):
E. B. Wilson, "Probable inference, the law of succession, and statistical inference", JASA
1927. Other metrics without an interval are shown without one.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MetricValue", "TaskResult", "load_task_results", "wilson_interval"]

_REQUIRED = ("task", "upstream", "primary_metric", "conditions", "metrics")
_PROPORTIONS = ("accuracy", "macro_accuracy", "acc", "top1", "top1_accuracy")
_VALUE_KEYS = ("value", "mean", "estimate", "point")
_INTERVAL_KEYS = ("ci", "interval", "ci95", "confidence_interval")


def wilson_interval(proportion: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``.

    Args:
        proportion: observed proportion in [0, 1].
        n: number of trials (test items), > 0.
        z: normal quantile (1.96 for 95 %).

    Returns:
        ``(low, high)`` in [0, 1].

    Raises:
        ValueError: ``n <= 0`` or a proportion outside [0, 1].
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0, got {n}")
    if not 0.0 <= proportion <= 1.0 + 1e-9:
        raise ValueError(f"wilson_interval needs a proportion in [0, 1], got {proportion}")
    p = min(proportion, 1.0)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class MetricValue:
    """One metric of one condition.

    Attributes:
        value: the point estimate.
        interval: ``(low, high)`` or None.
        interval_source: where the interval comes from (``"results file: <the file's
            interval_method>"`` or ``"Wilson 95 %, n = 50"``), or None.
    """

    value: float
    interval: tuple[float, float] | None = None
    interval_source: str | None = None

    def text(self, digits: int = 4) -> str:
        """``"0.8400 [0.7138, 0.9166]"`` (or just the value)."""
        out = f"{self.value:.{digits}f}"
        if self.interval is not None:
            out += f" [{self.interval[0]:.{digits}f}, {self.interval[1]:.{digits}f}]"
        return out


@dataclass
class TaskResult:
    """One downstream run of one upstream, normalised.

    Attributes:
        task: task name (``utterance_classification``, ``speaker_verification``, ``asr``...).
        label: short name for the card (the file's ``label``/``task_label``, else the
            config's file stem, else ``task``).
        upstream: the evaluated model (path or hub id) as written in the file.
        primary_metric, higher_is_better: the task's headline metric and its direction.
        conditions: test conditions in file order (``clean``, ``snr<dB>``, ``reverb``...).
        metrics: condition -> metric -> :class:`MetricValue` (numeric metrics only).
        dataset: the test data's name (root folder of the data source, or the ``datasets``
            id), for the card's ``model-index``.
        num_items: items per split, e.g. ``{"train": 100, "dev": 50, "test": 50}``.
        seed, test_set_sha1, source: provenance; ``source`` is the results file.
        unscored: condition -> metric -> number of test items (utterances; summed over seeds
            for a multi-seed result) the metric could not score and its value leaves out
            (the file's ``unscored``; only counts above 0; empty for files without it).
        raw: the entry as read.
    """

    task: str
    label: str
    upstream: str
    primary_metric: str
    higher_is_better: bool
    conditions: list[str]
    metrics: dict[str, dict[str, MetricValue]]
    dataset: str
    num_items: dict[str, int] = field(default_factory=dict)
    seed: int | None = None
    test_set_sha1: str | None = None
    source: str = ""
    unscored: dict[str, dict[str, int]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def metric_names(self) -> list[str]:
        """Every metric present, primary first."""
        names: list[str] = []
        for cond in self.conditions:
            names += [m for m in self.metrics.get(cond, {}) if m not in names]
        names.sort(key=lambda m: m != self.primary_metric)
        return names


logger = logging.getLogger(__name__)


def _is_nan(value: Any) -> bool:
    """A NaN number or ``null`` (how downstream writes NaN in strict JSON), or a dict whose
    value (``_VALUE_KEYS``) is one."""
    if isinstance(value, dict):
        return any(_is_nan(value[k]) for k in _VALUE_KEYS if k in value)
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, dict):
        low = _number(value.get("low", value.get("lower", value.get("ci_low"))))
        high = _number(value.get("high", value.get("upper", value.get("ci_high"))))
        return (low, high) if low is not None and high is not None else None
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = _number(value[0]), _number(value[1])
        return (low, high) if low is not None and high is not None else None
    return None


def _metric(value: Any, separate: Any, method: str) -> MetricValue | None:
    """A metric given as a number or as a dict with a value and maybe an interval;
    ``method`` names how the file's intervals were made."""
    interval = _pair(separate)
    number = _number(value)
    if number is None and isinstance(value, dict):
        number = next((_number(value[k]) for k in _VALUE_KEYS if k in value), None)
        for key in _INTERVAL_KEYS:
            if key in value and _pair(value[key]) is not None:
                interval = _pair(value[key])
        if interval is None:
            interval = _pair(value)  # {"value", "low", "high"} / {"ci_low", "ci_high"}
    if number is None:
        return None
    return MetricValue(number, interval, f"results file: {method}" if interval else None)


def _dataset_name(entry: dict[str, Any]) -> str:
    for key in ("dataset", "test_dataset"):
        if isinstance(entry.get(key), str):
            return entry[key]
    source = (entry.get("config") or {}).get("data", {}).get("source", {})
    if isinstance(source, dict):
        for key in ("dataset", "name", "path"):
            if isinstance(source.get(key), str):
                return source[key]
        if isinstance(source.get("root"), str):
            return Path(source["root"].rstrip("/")).name
        if isinstance(source.get("manifest"), str):
            return Path(source["manifest"]).stem
    return "unknown"


def _label(entry: dict[str, Any]) -> str:
    for key in ("label", "task_label"):
        if isinstance(entry.get(key), str) and entry[key]:
            return entry[key]
    if isinstance(entry.get("config_path"), str):
        return Path(entry["config_path"]).stem
    return str(entry["task"])


def _normalise(entry: dict[str, Any], source: Path) -> TaskResult:
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise ValueError(f"{source}: not a downstream results file (missing {missing})")
    separate = entry.get("intervals") or entry.get("confidence_intervals") or {}
    method = str(entry.get("interval_method") or "method not stated")
    items = {k: int(v) for k, v in (entry.get("num_items") or {}).items()
             if isinstance(v, int | float)}
    n_test = items.get("test")
    metrics: dict[str, dict[str, MetricValue]] = {}
    for cond in entry["conditions"]:
        if cond not in entry["metrics"]:
            raise ValueError(f"{source}: condition {cond!r} is listed but has no metrics")
        per = {}
        for name, value in entry["metrics"][cond].items():
            mv = _metric(value, (separate.get(cond) or {}).get(name), method)
            if mv is None:
                if _is_nan(value):  # e.g. PESQ failed on every utterance
                    logger.warning("%s: %s under %s is NaN (undefined): the card shows it as '-' and its "
                                   "model-index leaves it out", source, name, cond)
                else:  # e.g. a hand-edited "0.3": not silently shown as '-'
                    logger.warning("%s: %s under %s is not a number (%r): the card shows it as "
                                   "'-' and its model-index leaves it out", source, name, cond,
                                   value)
                continue
            if (mv.interval is None and name in _PROPORTIONS and n_test
                    and 0.0 <= mv.value <= 1.0):
                mv.interval = wilson_interval(mv.value, n_test)
                mv.interval_source = f"Wilson 95 %, n = {n_test}"
            per[name] = mv
        metrics[cond] = per
    unscored = _unscored(entry, source)
    primary = entry["primary_metric"]
    if not any(primary in m for m in metrics.values()):
        raise ValueError(f"{source}: primary metric {primary!r} has no numeric value")
    return TaskResult(task=str(entry["task"]), label=_label(entry),
                      upstream=str(entry["upstream"]), primary_metric=primary,
                      higher_is_better=bool(entry.get("higher_is_better", True)),
                      conditions=list(entry["conditions"]), metrics=metrics,
                      dataset=_dataset_name(entry), num_items=items, seed=entry.get("seed"),
                      test_set_sha1=entry.get("test_set_sha1"), source=str(source),
                      unscored=unscored, raw=entry)


def _unscored(entry: dict[str, Any], source: Path) -> dict[str, dict[str, int]]:
    """The entry's ``unscored`` counts (``{condition: {metric: count > 0}}``; malformed parts
    are ignored), each logged as a warning naming condition, metric and count."""
    raw = entry.get("unscored")
    unit = str(entry.get("item_unit") or "item")
    out: dict[str, dict[str, int]] = {}
    for cond in entry["conditions"]:
        per = raw.get(cond) if isinstance(raw, dict) else None
        if not isinstance(per, dict):
            continue
        counts = {m: int(n) for m, n in per.items()
                  if isinstance(n, int) and not isinstance(n, bool) and n > 0}
        for metric, count in counts.items():
            logger.warning("%s: %s under %s could not be scored on %d test %s(s): its value "
                           "leaves them out", source, metric, cond, count, unit)
        if counts:
            out[cond] = counts
    return out


def load_task_results(path: str | Path) -> list[TaskResult]:
    """Read a ``results.json`` (one run or ``{"results": [...]}``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or not a downstream results file (the missing keys are named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    entries = data["results"] if isinstance(data, dict) and "results" in data else [data]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: expected a results object or {{'results': [...]}}")
    return [_normalise(e, path) for e in entries]
