"""``metrics.jsonl``, a run's JSON-lines log, on disk: its size (saved with every checkpoint,
so a resume cuts what was logged after it: :func:`~robustdistill.checkpoints.truncate_log`)
and the removal of records of steps a killed start logged past the checkpoint it started from;
:func:`read_records` reads it back.

The records themselves are written by the trainers (``distill``'s ``log``, ``train-se``,
``train-speaker``), one strict JSON object per line (:mod:`robustdistill.strict_json`): a
non-finite value (the loss of a skipped NaN step, an undefined validation score) is ``null``,
under its own key. :func:`read_records` gives it back as NaN, as a log written before that rule
(bare ``NaN`` / ``Infinity``, still read) gives it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .strict_json import nan_for_null

logger = logging.getLogger(__name__)

__all__ = ["drop_steps_after", "file_size", "read_records"]


def drop_steps_after(path: Path, step: int) -> int:
    """Rewrite the JSON-lines log ``path`` without its records of a ``"step"`` above ``step``
    (other lines, another tool's notes or an unreadable line, are kept as they are).

    Returns:
        The number of lines removed (0 when ``path`` does not exist).
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        logged = record.get("step") if isinstance(record, dict) else None
        if isinstance(logged, int) and not isinstance(logged, bool) and logged > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        path.write_text("".join(kept))
        logger.info("%s: removed %d line(s) of %s, logged by a start killed before its first "
                    "checkpoint", path, dropped,
                    f"steps after {step}" if step >= 0 else "every step")
    return dropped


def file_size(path: Path) -> int:
    """Bytes of ``path``; 0 when it does not exist."""
    return path.stat().st_size if path.is_file() else 0


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of the JSON-lines log ``path``, in order, each with its ``null`` values as
    NaN (:func:`~robustdistill.strict_json.nan_for_null`: a ``metrics.jsonl`` record holds
    numbers, and ``null`` is how a non-finite one is written). Blank lines are left out.

    Raises:
        OSError: ``path`` cannot be read (FileNotFoundError when it does not exist).
        ValueError: a line is not a JSON object (the file and the line number named).
    """
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{path}: line {number} is not JSON ({err})") from err
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is not a JSON object")
        records.append(nan_for_null(record))
    return records
