"""What tells results apart and what they share: the questions asked of results.json entries.

An entry is one run's result (one upstream, one task, one or several seeds), as
:func:`downstream.load.load_results` returns it. This module reads no file: it gives an entry's
task label and seeds, the row label of each upstream among several (:func:`upstream_labels`,
used by results.md, the plot, the paired comparisons, ``downstream.report`` and model cards),
the conditions of several results in one order, whether results may share a table
(:func:`check_same_task`) and whether they were tested on the same audio (per-seed
``test_set_sha1``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["check_same_task", "different_test_sets", "ordered_conditions", "result_seeds",
           "same_test_set", "seed_test_sets", "task_label", "upstream_labels"]


def result_seeds(result: dict[str, Any]) -> list[int]:
    """The seeds of a result, in the order of its ``seed_dirs`` (one seed for a single run)."""
    seeds = result.get("seeds")
    return [int(s) for s in seeds] if seeds else [int(result["seed"])]


def seed_test_sets(result: dict[str, Any]) -> dict[int, str] | None:
    """``{seed: test_set_sha1}`` of each seed's test set, or None when unknown (a multi-seed
    result written before ``per_seed_test_set_sha1`` existed, or a run without a hash)."""
    if "per_seed_test_set_sha1" in result:
        return {int(s): h for s, h in result["per_seed_test_set_sha1"].items() if h}
    if "seed_dirs" not in result and isinstance(result.get("seed"), int) \
            and result.get("test_set_sha1"):
        return {result["seed"]: result["test_set_sha1"]}
    return None


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


def ordered_conditions(results: Sequence[dict[str, Any]]) -> list[str]:
    """The conditions of several results, each once, in the order they first appear (the first
    result's, then any other's new ones): the columns of the tables and the plot's axis."""
    seen: list[str] = []
    for r in results:
        seen += [c for c in r["conditions"] if c not in seen]
    return seen


def same_test_set(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two results were tested on the same test audio: equal ``test_set_sha1``, or
    every seed of both has a recorded hash and those agree seed by seed (the same seeds
    aggregated in another order, or one seed aggregated beside its plain run)."""
    if a.get("test_set_sha1") == b.get("test_set_sha1"):
        return True
    ha, hb = seed_test_sets(a), seed_test_sets(b)
    return bool(ha) and ha == hb and set(ha) == set(result_seeds(a)) == set(result_seeds(b))


def different_test_sets(results: Sequence[dict[str, Any]]) -> bool:
    """True when two results were tested on different test audio (:func:`same_test_set`;
    results without a hash, written before the hash existed, are not counted)."""
    hashed = [r for r in results if r.get("test_set_sha1")]
    return any(not same_test_set(a, b) for a, b in itertools.combinations(hashed, 2))


def task_label(result: dict[str, Any]) -> str:
    """The task label (``ks``, ``sid``...; results written before labels: the task folder)."""
    return str(result.get("label") or result["task"])


def check_same_task(results: Sequence[dict[str, Any]]) -> None:
    """Refuse to put different tasks in one table, including two tasks that share a folder and
    a metric (keyword spotting and speaker identification are both accuracy).

    Raises:
        ValueError: no results, or different (task, label, primary metric).
    """
    if not results:
        raise ValueError("no results given")
    tasks = {(r["task"], task_label(r), r["primary_metric"]) for r in results}
    if len(tasks) > 1:
        raise ValueError(f"cannot combine results of different tasks: {sorted(tasks)}")
