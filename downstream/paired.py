"""Paired comparisons of upstreams on the same test items.

Each pair of upstreams is tested on the primary metric, condition by condition, **on the same
items**: a paired bootstrap interval of the difference and its p-value (resampling the task's
``resample_unit``: the items, or for speaker verification the same speakers and utterances for
both), plus the exact McNemar test for accuracy (:mod:`downstream.stats`). An item that either
upstream could not score is left out of that pair's comparison on both sides
(:func:`jointly_scored`; counted as ``excluded_items``). Results with different seed sets are
compared on the seeds both ran on the same test set.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from .entries import (
    ordered_conditions,
    result_seeds,
    same_test_set,
    seed_test_sets,
    upstream_labels,
)
from .intervals import group_stat, item_groups, resample_sizes, task_class_of
from .items import is_unscored
from .stats import mcnemar, paired_bootstrap

__all__ = ["TestSetMismatch", "jointly_scored", "paired_comparisons"]


class TestSetMismatch(ValueError):
    """Results that cannot be compared item by item (different test sets or items)."""

    __test__ = False


def _shared_seeds(a: dict[str, Any], b: dict[str, Any]) -> list[int]:
    """The seeds two results both ran on the same test set (by per-seed hash), in ``a``'s
    order; empty when either result's per-seed hashes are unknown."""
    ha, hb = seed_test_sets(a), seed_test_sets(b)
    if not ha or not hb:
        return []
    return [s for s in result_seeds(a) if s in hb and ha.get(s) == hb[s]]


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
                if not any(metric in r and is_unscored(r[metric]) for r in (ra, rb))]
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
    task_class = task_class_of(results[0])
    metric = results[0]["primary_metric"]
    unit = results[0].get("item_unit", "item")
    conditions = ordered_conditions(results)
    for (ia, a), (ib, b) in itertools.combinations(enumerate(results), 2):
        pair = f"{labels[ia]} vs {labels[ib]}"
        seeds = None  # all, in each result's own order, when the test sets agree
        if a.get("test_set_sha1") != b.get("test_set_sha1"):
            seeds = _shared_seeds(a, b)
            if not seeds:
                notes.append(f"{pair}: different test sets (test_set_sha1), no paired test")
                continue
            if not same_test_set(a, b):  # not merely the same seeds in another order
                notes.append(f"{pair}: compared on seed{'s' if len(seeds) > 1 else ''} "
                             f"{', '.join(map(str, seeds))} only, the seeds both ran "
                             f"({labels[ia]}: {', '.join(map(str, result_seeds(a)))}; "
                             f"{labels[ib]}: {', '.join(map(str, result_seeds(b)))})")
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
            sa, sb = group_stat(task_class, ga, metric), group_stat(task_class, gb, metric)
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
