"""Output folders: what an ``--out`` folder holds, and refusing to write over other results.

``evaluate`` and ``aggregate`` write one upstream's results into a folder
(:func:`check_evaluation_folder` refuses one holding another upstream's, task's or label's
results, or a comparison); ``compare`` writes a comparison (:func:`held_results` says what its
``--out`` holds; :mod:`downstream.compare` refuses an evaluation). :func:`aggregate_listing` finds
the multi-seed results.json that a re-run seed folder makes stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robustdistill.files import OutputFolderError, unblocked_folder

from .entries import task_label
from .load import check_entries, read_json

__all__ = ["aggregate_listing", "check_evaluation_folder", "check_output_folder",
           "folder_results", "held_results"]


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
    payload = read_json(path)
    merged = isinstance(payload, dict) and "results" in payload
    if not merged and isinstance(payload, dict) and payload.get("source_dir") \
            and "seed_dirs" not in payload:
        merged = Path(payload["source_dir"]).resolve() != path.parent.resolve()
    return ("comparison" if merged else "evaluation"), check_entries(payload, path)


def _same_upstream(a: Any, b: Any) -> bool:
    """Whether two ``upstream`` values name the same model: equal ids, or paths of the same
    existing folder (``runs/x/student`` and ``./runs/x/student/``)."""
    if str(a) == str(b):
        return True
    pa, pb = Path(str(a)).expanduser(), Path(str(b)).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def held_results(out: str | Path, writer: str) -> tuple[Path, str | None, list]:
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
    out, kind, held = held_results(out, "this run")
    if kind == "comparison":
        raise ValueError(f"--out {str(out)!r} holds a comparison of {len(held)} result(s) "
                         "(robustdistill compare); give the evaluation a folder of its own")
    if kind == "evaluation":
        old = held[0]
        if old["task"] != task or task_label(old) != label \
                or not _same_upstream(old["upstream"], upstream):
            raise ValueError(
                f"--out {str(out)!r} holds the results of upstream {old['upstream']!r} on task "
                f"{task_label(old)!r}, not of {upstream!r} on {label!r}; give this run a folder "
                "of its own (or remove that one to replace it)")
    return out
