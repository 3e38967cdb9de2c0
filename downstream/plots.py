"""robustness.png: the primary metric under each test condition, a line per upstream."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .entries import check_same_task, ordered_conditions, task_label, upstream_labels

__all__ = ["plot_robustness"]


def plot_robustness(results: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Primary metric vs condition, one line per upstream (matplotlib, Agg backend).

    The x axis holds the noise conditions in increasing SNR, then ``clean``; the other
    conditions (``reverb``, ``reverb+snr*``) are separate, unconnected markers at the right.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_same_task(results)
    conditions = ordered_conditions(results)
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
    ax.set_title(f"{task_label(results[0])}: robustness (bars: 95 % intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
