"""How a training run ended, in one file of its folder: ``final_state.json`` (it reached its
last step) or ``stopped.json`` (it stopped early: non-finite steps, unreadable audio, a teacher
cache miss), never both.

A run resumed after a stop that then finishes, or a finished run resumed with more steps that
then stops, would otherwise keep the earlier segment's file beside the new one (a
``stopped.json`` saying "stopped at step 3" beside a ``final_state.json`` at step 4).

``train-speaker`` writes ``stopped.json`` (its non-finite stop) but no ``final_state.json``
(its end is ``result.json`` and ``student/``): a later run in the folder removes an earlier
segment's ``stopped.json`` (:func:`remove_stopped`) once past it (at a fresh start in the folder
of a run stopped before its first checkpoint, at each epoch's end, and at a SIGTERM's mid-epoch
checkpoint that holds the stop's batch: :func:`robustdistill.speaker.train._remove_passed_stop`),
so it does not keep it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .files import atomic_write_text
from .strict_json import strict_dumps

__all__ = ["FINAL_STATE", "STOPPED", "remove_stopped", "write_outcome"]

FINAL_STATE = "final_state.json"
STOPPED = "stopped.json"


def write_outcome(output_dir: str | Path, name: str, record: dict[str, Any]) -> Path:
    """Write ``record`` as ``output_dir/name`` (indented JSON, atomically) and remove the other
    outcome file of an earlier segment of the run, if any. Main process only.

    Args:
        output_dir: the run's folder.
        name: :data:`FINAL_STATE` or :data:`STOPPED`.
        record: JSON-serialisable; written as strict JSON, a non-finite number as ``null``
            (:mod:`robustdistill.strict_json`).

    Returns:
        The file written.

    Raises:
        ValueError: ``name`` is not an outcome file.
    """
    if name not in (FINAL_STATE, STOPPED):
        raise ValueError(f"an outcome file is {FINAL_STATE} or {STOPPED}, got {name!r}")
    path = Path(output_dir) / name
    atomic_write_text(path, strict_dumps(record, indent=2) + "\n")
    (Path(output_dir) / (STOPPED if name == FINAL_STATE else FINAL_STATE)).unlink(missing_ok=True)
    return path


def remove_stopped(output_dir: str | Path) -> bool:
    """Remove ``output_dir/stopped.json`` of an earlier segment of the run, for a trainer that
    writes no ``final_state.json`` (``train-speaker``), once the run is past that stop. Main
    process only.

    Returns:
        Whether there was one.
    """
    path = Path(output_dir) / STOPPED
    existed = path.is_file()
    path.unlink(missing_ok=True)
    return existed
