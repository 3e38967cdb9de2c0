"""The ``compare`` command: several upstreams of one task in one table, tested pair by pair.

:func:`compare` merges the results.json of several runs of the same task (one per upstream:
teacher, distilled student, random student...), each run once (an evaluation's file and another
comparison holding it give the same run), refreshes older speaker verification intervals
(:func:`downstream.intervals.current_intervals`), tests every pair on the same items
(:mod:`downstream.paired`) and writes one results.json, results.md and robustness.png
(:mod:`downstream.results`) into a folder of its own (:mod:`downstream.folders`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .entries import check_same_task, different_test_sets, task_label
from .folders import held_results
from .intervals import current_intervals
from .load import load_results_file
from .paired import paired_comparisons
from .results import write_outputs
from .strict_json import null_for_nonfinite

logger = logging.getLogger(__name__)

__all__ = ["compare"]


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
            differ = null_for_nonfinite(result["metrics"]) != \
                null_for_nonfinite(loaded[k][2][m]["metrics"])
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
    out, kind, held = held_results(out, "compare")
    if kind == "evaluation":
        suggestion = out.parent / f"{task_label(held[0])}_compare"
        raise ValueError(f"--out {str(out)!r} holds the evaluation of {held[0]['upstream']!r} "
                         f"({task_label(held[0])}): compare would replace its results.json; "
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
    check_same_task(results)
    if different_test_sets(results):
        logger.warning("the results were tested on different test sets; not directly comparable")
    comparisons = paired_comparisons(results, resamples) if len(results) > 1 else None
    write_outputs(results, out, comparisons, merged=True)
    return results
