"""Writing a file so that no reader, and no kill, ever sees half of it.

Caches, logs of record and results are read by other processes (DataLoader workers, the other
ranks of a run, a resumed run) while they may be written: each is written to a temporary file in
the same folder, then renamed over the target with ``os.replace``, which is atomic on one file
system. A failed write removes its temporary file and leaves the target as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "file_blocking_folder"]


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on a normal exit of the ``with`` block it
    replaces ``path`` atomically, on an exception it is deleted and ``path`` is left as it was.

    Args:
        path: the file to (re)write; its folder is created.
        suffix: the temporary file's suffix (for writers that pick a format by extension,
            e.g. ``".tmp.npz"`` for ``numpy.savez``).

    Yields:
        The temporary path (a unique, hidden name in the same folder; the file exists, empty).

    The file gets the mode a plain write would give it: the target's, when it exists, else
    ``0o666`` less the umask (``mkstemp`` alone would leave it readable by its owner only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _mode_for(path: Path) -> int:
    """The permission bits a new write of ``path`` would have."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def file_blocking_folder(path: str | os.PathLike) -> Path | None:
    """The existing file that stops ``path`` from being (or being made) a folder: ``path``
    itself or the nearest of its existing parents when that is not a folder; None when
    ``mkdir(parents=True)`` could make it (or it already is a folder).

    Checked before long work starts, so that a folder given where a file stands is a one-line
    error rather than a ``FileExistsError`` traceback once the work writes there.
    """
    path = Path(path).expanduser()
    existing = next((q for q in (path, *path.parents) if q.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None
