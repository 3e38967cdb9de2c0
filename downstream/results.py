"""Writing downstream results: results.json, results.md, robustness.png.

:func:`write_outputs` writes what one run (``evaluate``), one multi-seed aggregate
(:mod:`downstream.seeds`) or one comparison (:mod:`downstream.compare`) produced: the strict-JSON
``results.json`` (:mod:`downstream.strict_json`), the tables (:mod:`downstream.table`) and the plot
(:mod:`downstream.plots`); a run's per-item files are written by :mod:`downstream.items`.

The package's results modules, each with one job, import one way: each imports only modules
listed before it here, so there is no cycle: ``strict_json``, ``items`` (per-item records),
``entries`` (labels, seeds, test sets of results), ``load`` (reading results.json),
``intervals`` (bootstrap intervals from the records), ``folders`` (``--out`` checks), ``table``,
``plots``, ``results`` (this module), ``seeds`` (multi-seed aggregation), ``paired`` (paired
tests), ``compare`` (the command).

:func:`~downstream.load.load_results` and :func:`~downstream.items.read_items`, the documented
readers of these files, stay importable from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustdistill.files import atomic_write_text

from .items import read_items
from .load import load_results
from .plots import plot_robustness
from .strict_json import jsonable, null_for_nonfinite
from .table import results_table

__all__ = ["load_results", "read_items", "write_outputs"]


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
                      json.dumps(null_for_nonfinite(payload), indent=2, default=jsonable,
                                 allow_nan=False) + "\n")
    atomic_write_text(out / "results.md", results_table(results, comparisons))
    plot_robustness(results, out / "robustness.png")
