"""results.md: the Markdown tables of one or several results, and their cells.

One table per metric (a row per upstream, named by :func:`downstream.entries.upstream_labels`, a
column per condition; each cell the value with its interval, ``± std`` over seeds and
``(n unscored)``), then the paired comparisons (:mod:`downstream.paired`) when given, then the
featurizer's layer weights. :func:`interval_cell` and :func:`unscored_note` are shared with
``downstream.report`` and the model cards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .entries import (
    check_same_task,
    different_test_sets,
    ordered_conditions,
    task_label,
    upstream_labels,
)

__all__ = ["interval_cell", "results_table", "unscored_count", "unscored_note"]


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
    check_same_task(results)
    conditions = ordered_conditions(results)
    metric_names: list[str] = []
    for r in results:
        for cond in r["conditions"]:
            metric_names += [m for m in r["metrics"][cond] if m not in metric_names]
    primary = results[0]["primary_metric"]
    metric_names.sort(key=lambda m: m != primary)  # primary metric first
    direction = "higher is better" if results[0]["higher_is_better"] else "lower is better"
    label = task_label(results[0])
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
    if different_test_sets(results):
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
