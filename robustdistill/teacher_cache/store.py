"""Entry files: writing one atomically, reading a span of frames from one safetensors entry
(memory-mapped: only those bytes are read), and telling a whole entry from a truncated or
corrupt one by its header (:func:`entry_readable`; :class:`KnownWholeEntries` reads each
whole file's header once).

Part of :mod:`robustdistill.teacher_cache`, whose docstring describes the entry format.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..files import atomic_path

#: How many entries a :class:`KnownWholeEntries` remembers as whole (about 70 bytes each,
#: 70 MB in all); past it, it forgets them all and reads their headers again.
_KNOWN_WHOLE_LIMIT = 2**20


class UnreadableEntryError(ValueError):
    """A cache entry that exists but cannot be read: truncated (a partial copy, a file system
    that lost the end of a write) or otherwise not a safetensors file with ``"layers"``."""


def _open_layers(handle, path: Path):
    """The ``"layers"`` slice of an open entry.

    Raises:
        UnreadableEntryError: there is no such tensor.
    """
    try:
        return handle.get_slice("layers")
    except (SafetensorError, KeyError) as err:
        raise UnreadableEntryError(f"{path}: {err}") from err


def write_entry(path: Path, layers: torch.Tensor) -> None:
    """Write an entry atomically (a temporary file renamed into place), so a killed
    build never leaves a truncated entry and concurrent writers cannot corrupt one.

    Args:
        path: the entry's file (parent folders created).
        layers: ``(K, T, D)`` targets in storage dtype, as
            :meth:`~robustdistill.teacher_cache.cache.TeacherFeatureCache.compute` returns.
    """
    with atomic_path(path) as tmp:
        save_file({"layers": layers}, str(tmp))


def entry_readable(path: Path) -> bool:
    """True when ``path`` exists and is a whole entry (its header opens and covers the file,
    with a ``"layers"`` tensor); reads only the header."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            _open_layers(handle, path)
    except (SafetensorError, OSError, UnreadableEntryError):
        return False
    return True


class KnownWholeEntries:
    """The entries found whole, each remembered as the hash of its path and what ``os.stat``
    said of it then, so that checking one again is one ``os.stat`` (what
    :meth:`~robustdistill.teacher_cache.cache.TeacherFeatureCache.check_entries` asks of
    every row it checks)."""

    def __init__(self) -> None:
        self._whole: set[int] = set()

    def is_whole(self, path: Path) -> bool:
        """Whether the entry ``path`` is there and whole (:func:`entry_readable`), reading its
        header only the first time this file is seen: then one ``os.stat`` per call.

        Entries are written once, atomically (a new file renamed into place, so another
        inode), and again only where missing or unreadable (``cache-teacher``, ``missing:
        compute``); a run that checks (``missing: error``) writes none. A whole entry thus
        stays whole unless something else deletes, replaces or rewrites it, which changes
        what ``stat`` returns (inode, size, modification time), and the header is read again.
        At most :data:`_KNOWN_WHOLE_LIMIT` files are remembered.
        """
        try:
            found = os.stat(path)
        except OSError:  # missing (or not reachable): the caller names it
            return False
        seen = hash((str(path), found.st_ino, found.st_size, found.st_mtime_ns))
        if seen in self._whole:
            return True
        if not entry_readable(path):
            return False
        if len(self._whole) >= _KNOWN_WHOLE_LIMIT:
            self._whole.clear()
        self._whole.add(seen)
        return True


def read_frames(path: Path, first: int, frames: int) -> torch.Tensor:
    """Frames ``[first, first + frames)`` of an entry, ``(K, frames, D)`` in storage dtype;
    only those bytes are read (safetensors slices the memory-mapped file).

    Raises:
        UnreadableEntryError: the file is truncated or not an entry.
        ValueError: the entry has fewer frames (the audio does not match its key).
    """
    try:
        handle = safe_open(str(path), framework="pt")
    except SafetensorError as err:  # e.g. "incomplete metadata, file not fully covered"
        raise UnreadableEntryError(f"{path}: {err}") from err
    with handle:
        part = _open_layers(handle, path)
        total = part.get_shape()[1]
        if first + frames > total:
            raise ValueError(f"{path}: frames [{first}, {first + frames}) asked of a "
                             f"{total}-frame entry (the audio does not match its key?)")
        return part[:, first : first + frames]
