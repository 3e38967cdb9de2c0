"""``metrics.jsonl``, a run's JSON-lines log, on disk: its size (saved with every checkpoint,
so a resume cuts what was logged after it: :func:`~robustdistill.checkpoints.truncate_log`)
and the removal of records of steps a killed start logged past the checkpoint it started from.
The records themselves are written by the trainer's ``log``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["drop_steps_after", "file_size"]


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
        logger.info("%s: removed %d line(s) of steps after %d, logged by a start killed before "
                    "its first checkpoint", path, dropped, step)
    return dropped


def file_size(path: Path) -> int:
    """Bytes of ``path``; 0 when it does not exist."""
    return path.stat().st_size if path.is_file() else 0
