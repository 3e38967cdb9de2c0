"""Writing and combining downstream results: results.json, results.md, robustness.png.

One run writes its own results; :func:`compare` merges the results.json of several runs of the
same task (one per upstream: teacher, distilled student, random student...) into one table and
one plot with a line per upstream.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["compare", "load_results", "plot_robustness", "results_table", "write_outputs"]

_REQUIRED = ("task", "upstream", "primary_metric", "higher_is_better", "conditions", "metrics")


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a results.json: one run's result, or a merged ``{"results": [...]}``.

    Returns:
        The list of results it holds.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or keys missing (named), or a listed condition without metrics.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    entries = results["results"] if isinstance(results, dict) and "results" in results else [results]
    for entry in entries:
        missing = [k for k in _REQUIRED if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"{path}: not a downstream results file (missing {missing})")
        absent = [c for c in entry["conditions"] if c not in entry["metrics"]]
        if absent:
            raise ValueError(f"{path}: no metrics for conditions {absent}")
    return entries


def _labels(results: Sequence[dict[str, Any]]) -> list[str]:
    """Short, unique upstream labels (folder name; the full id when names collide)."""
    short = [Path(str(r["upstream"]).rstrip("/")).name or str(r["upstream"]) for r in results]
    labels = [s if short.count(s) == 1 else str(r["upstream"]) for s, r in zip(short, results,
                                                                              strict=True)]
    return [lab if labels.count(lab) == 1 else f"{lab} #{i + 1}" for i, lab in enumerate(labels)]


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


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: one table per metric, a row per upstream, a column per condition.

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
    lines = [f"# {results[0]['task']}", ""]
    for r, label in zip(results, _labels(results), strict=True):
        items = r.get("num_items", {})
        lines.append(f"- **{label}**: `{r['upstream']}`, seed {r.get('seed')}, items "
                     + ", ".join(f"{k} {v}" for k, v in items.items())
                     + (f", total {r['timing']['total_s']:.0f} s" if "timing" in r else ""))
    if _different_test_sets(results):
        lines += ["", "**Warning: these upstreams were tested on different test sets (data config "
                  "or seed differ); their numbers are not directly comparable.**"]
    lines.append("")
    for metric in metric_names:
        note = f" ({direction})" if metric == primary else ""
        lines += [f"## {metric}{note}", "", "| upstream | " + " | ".join(conditions) + " |",
                  "|---|" + "---|" * len(conditions)]
        for r, label in zip(results, _labels(results), strict=True):
            cells = [_cell(r["metrics"].get(c, {}).get(metric)) for c in conditions]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    weights = [(label, r["featurizer"]["weights"]) for r, label in
               zip(results, _labels(results), strict=True) if "featurizer" in r]
    if weights:
        lines += ["## featurizer layer weights", ""]
        for label, w in weights:
            lines.append(f"- {label}: " + ", ".join(f"{k}: {v:.3f}" for k, v in w.items()))
        lines.append("")
    return "\n".join(lines)


def _different_test_sets(results: Sequence[dict[str, Any]]) -> bool:
    """True when two results record different test-set hashes (results without one, written
    before the hash existed, are not counted)."""
    return len({r["test_set_sha1"] for r in results if r.get("test_set_sha1")}) > 1


def _check_same_task(results: Sequence[dict[str, Any]]) -> None:
    if not results:
        raise ValueError("no results given")
    tasks = {(r["task"], r["primary_metric"]) for r in results}
    if len(tasks) > 1:
        raise ValueError(f"cannot combine results of different tasks: {sorted(tasks)}")


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
    for r, label in zip(results, _labels(results), strict=True):
        def value(c, _r=r):
            return _r["metrics"].get(c, {}).get(primary, float("nan"))
        xs = [axis.index(c) for c in line]
        (handle,) = ax.plot(xs, [value(c) for c in line], marker="o", label=label)
        if others:
            ax.plot([axis.index(c) for c in others], [value(c) for c in others], linestyle="none",
                    marker="s", color=handle.get_color())
    ax.set_xticks(range(len(axis)), [c.replace("snr", "SNR ") + (" dB" if c.startswith("snr")
                                                                  else "") for c in axis])
    ax.set_xlabel("test condition")
    ax.set_ylabel(primary + (" (higher is better)" if results[0]["higher_is_better"]
                             else " (lower is better)"))
    ax.set_title(f"{results[0]['task']}: robustness")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: Sequence[dict[str, Any]], out: str | Path) -> None:
    """Write ``results.json`` (the single result, or ``{"results": [...]}`` for several),
    ``results.md`` and ``robustness.png`` into ``out`` (created)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = results[0] if len(results) == 1 else {"results": list(results)}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    (out / "results.md").write_text(results_table(results))
    plot_robustness(results, out / "robustness.png")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def compare(paths: Sequence[str | Path], out: str | Path) -> list[dict[str, Any]]:
    """Merge several results.json (same task, one per upstream) into ``out``.

    Raises:
        FileNotFoundError / ValueError: as :func:`load_results`; results of different tasks.
    """
    results = [r for p in paths for r in load_results(p)]
    _check_same_task(results)
    if _different_test_sets(results):
        logger.warning("the results were tested on different test sets; not directly comparable")
    write_outputs(results, out)
    return results
