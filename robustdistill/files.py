"""Writing a file so that no reader, and no kill, ever sees half of it; output folders that
hold nothing of an earlier write.

Caches, logs of record and results are read by other processes (DataLoader workers, the other
ranks of a run, a resumed run) while they may be written: each is written to a temporary file in
the same folder, then renamed over the target with ``os.replace``, which is atomic on one file
system. A failed write removes its temporary file and leaves the target as it was.

The commands that write a model folder (``create-student``, ``make-teacher``, ``export``)
check it with :func:`check_output_folder` before any work: a folder that already holds files is
refused unless they were asked to overwrite it, and then :func:`empty_folder` removes what was
there before the new model is written, so that no card, plot or head of other weights stays
beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputFolderError", "atomic_path", "atomic_write_text", "check_output_folder",
           "check_outside_run", "empty_folder", "file_blocking_folder", "folder_entries",
           "name_list", "unblocked_folder"]


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


class OutputFolderError(FileExistsError):
    """An output folder a command will not write into: a file stands where it would be, it
    already holds files and no overwrite was asked for, or overwriting it would delete one of
    the command's inputs (or the current folder)."""


def folder_entries(path: str | os.PathLike) -> list[str]:
    """The names in folder ``path``, sorted, folders with a trailing ``/``; ``[]`` when
    ``path`` does not exist or is not a folder. Links are listed as files, not followed."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return []
    return sorted(e.name + ("/" if e.is_dir() and not e.is_symlink() else "")
                  for e in path.iterdir())


def name_list(names: Iterable[str], limit: int = 6) -> str:
    """``"a, b, c"``, or the first ``limit`` names and ``"and N more"``."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def unblocked_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` (``~`` expanded) once no file stands where it or one of its parents goes
    (:func:`file_blocking_folder`); what it holds is not looked at.

    Raises:
        OutputFolderError: naming ``what`` (e.g. ``"--out"``) and the file in the way.
    """
    path = Path(path).expanduser()
    if (blocking := file_blocking_folder(path)) is not None:
        raise OutputFolderError(f"{what} {str(path)!r}: {str(blocking)!r} is an existing file, "
                                "not a folder; give a folder")
    return path


def check_output_folder(path: str | os.PathLike, what: str, *, overwrite: bool = False,
                        inputs: Iterable[str | os.PathLike] = (),
                        emptied_by: str = "--overwrite") -> Path:
    """Check, before any work, that folder ``path`` can take a command's output.

    Args:
        path: the folder to write (it may not exist yet).
        what: how the message names it, e.g. ``"--out"``.
        overwrite: whether the command will empty the folder (:func:`empty_folder`) first.
        inputs: paths the command reads; with ``overwrite`` the folder may be none of them and
            hold none of them (nor the current folder), since emptying it would delete them.
        emptied_by: what empties the folder, as the message names it (e.g. ``"--overwrite"``,
            or ``"the export"`` for a folder a command always writes again).

    Returns:
        ``path``, ``~`` expanded.

    Raises:
        OutputFolderError: ``path`` or one of its parents is an existing file; ``path`` holds
            files (named) and ``overwrite`` is false; or, with ``overwrite``, ``path`` is or
            holds one of ``inputs`` or the current folder.
    """
    path = unblocked_folder(path, what)
    entries = folder_entries(path)
    if not entries:
        return path
    if not overwrite:
        raise OutputFolderError(f"{what} {str(path)!r} is not empty ({name_list(entries)}); "
                                "give a new or empty folder, or --overwrite to replace what it "
                                "holds")
    resolved = path.resolve()
    kept = [(Path(p).expanduser().resolve(), f"{str(p)!r}, an input of this command")
            for p in inputs] + [(Path.cwd(), "the current folder")]
    for other, named in kept:
        if resolved == other or resolved in other.parents:
            raise OutputFolderError(f"{what} {str(path)!r} is or holds {named}, which "
                                    f"{emptied_by} would delete; give another folder")
    return path


def check_outside_run(path: str | os.PathLike, run_dir: str | os.PathLike, what: str, *,
                      allowed: Iterable[str] = ()) -> None:
    """Refuse an output folder among a run's own files: ``path`` inside ``run_dir`` (both
    resolved, so a link into the run counts) must be one of the run's subfolders named in
    ``allowed`` (e.g. ``"student"``, an exporter's own default) or lie under
    ``run_dir/exports/``. Elsewhere in the run, ``--overwrite`` (:func:`empty_folder`) would
    delete the trainer's files (``RUN/checkpoints/checkpoint_N``: that checkpoint), and a
    folder written among them is deleted by a later rotation or mistaken for a checkpoint.
    ``run_dir`` itself is left to :func:`check_output_folder` (it holds files, and is an input).

    Args:
        path: the output folder (it may not exist yet).
        run_dir: the run folder the command reads.
        what: how the message names ``path``, e.g. ``"--out"``.
        allowed: names of ``run_dir``'s subfolders the command may write.

    Raises:
        OutputFolderError: ``path`` is inside ``run_dir``, not one of ``allowed`` and not
            under ``run_dir/exports/`` (one line; a ``path`` that gets there through a link,
            e.g. ``RUN/student`` linked to ``RUN/checkpoints/checkpoint_1``, also names where
            the link leads, as ``RUN/...``).
    """
    resolved, run = Path(path).expanduser().resolve(), Path(run_dir).expanduser().resolve()
    if run not in resolved.parents or run / "exports" in resolved.parents:
        return
    allowed = list(allowed)
    if any(resolved == run / name for name in allowed):
        return
    places = "".join(f"RUN/{name}, " for name in allowed)
    # through a link (RUN/student -> checkpoints/checkpoint_1): say where it leads
    inside = resolved.relative_to(run)
    plain = Path(os.path.abspath(Path(path).expanduser()))
    plain_run = Path(os.path.abspath(Path(run_dir).expanduser()))
    via = ("" if plain.is_relative_to(plain_run) and plain.relative_to(plain_run) == inside
           else f" (through a link: RUN/{inside.as_posix()})")
    raise OutputFolderError(f"{what} {str(path)!r} is inside the run folder {run_dir}{via}, "
                            "whose files (checkpoints/, config.yaml, ...) are the trainer's: give "
                            f"{places}a folder under RUN/exports/ or "
                            f"{'one ' if allowed else ''}outside the run")


def empty_folder(path: str | os.PathLike) -> list[str]:
    """Remove everything inside folder ``path`` (the folder itself stays; a link inside is
    removed, not followed).

    Returns:
        What was removed, as :func:`folder_entries` names it (``[]`` for a missing folder).
    """
    path = Path(path).expanduser()
    removed = folder_entries(path)
    for entry in path.iterdir() if path.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return removed
