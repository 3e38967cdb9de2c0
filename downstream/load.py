"""Reading and checking results.json files.

A results.json holds one run's result (``evaluate``, ``aggregate``) or ``{"results": [...]}``
(``compare``); :func:`load_results` returns the results either way, checked (required keys, a
number or ``null`` per metric), each with ``source_dir`` (the folder its per-item files are
under) and ``null`` numbers read back as NaN (:mod:`downstream.strict_json`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .strict_json import nan_for_null

__all__ = ["check_entries", "load_results", "load_results_file", "read_json"]


_NUMERIC_KEYS = ("metrics", "metrics_std", "intervals", "per_seed")
"""Keys of a result whose leaves are numbers: an undefined value (NaN) is stored as ``null``
and read back as NaN (so are the featurizer's layer weights; ``featurizer.layers`` may be a
real ``null``)."""


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
    payload = read_json(path)
    return payload, check_entries(payload, path, required)


def read_json(path: Path) -> Any:
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


def check_entries(payload: Any, path: Path, required: Sequence[str] = _REQUIRED
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
                entry[key] = nan_for_null(entry[key])
        featurizer = entry.get("featurizer")
        if isinstance(featurizer, dict) and isinstance(featurizer.get("weights"), dict):
            entry["featurizer"] = {**featurizer, "weights": nan_for_null(featurizer["weights"])}
    return entries
