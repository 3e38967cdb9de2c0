"""Entry files: reading a span of frames from one safetensors entry (memory-mapped: only those
bytes are read) and telling a whole entry from a truncated or corrupt one by its header.

Entries are written by :meth:`~robustdistill.teacher_cache.cache.TeacherFeatureCache.write`.
Part of :mod:`robustdistill.teacher_cache`, whose docstring describes the entry format.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


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


def entry_readable(path: Path) -> bool:
    """True when ``path`` exists and is a whole entry (its header opens and covers the file,
    with a ``"layers"`` tensor); reads only the header."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            _open_layers(handle, path)
    except (SafetensorError, OSError, UnreadableEntryError):
        return False
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
