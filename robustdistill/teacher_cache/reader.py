"""Reading a collated batch's cached targets without the teacher, in the ``DataLoader``
workers (:class:`CacheReader`: the loaders' collate function with
``teacher_cache.read_in_workers``).

Part of :mod:`robustdistill.teacher_cache`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.batching import collate_waveforms
from .keys import entry_file
from .store import UnreadableEntryError, read_frames


@dataclass(frozen=True)
class CacheReader:
    """Reads a collated batch's cached targets without the teacher: what a ``DataLoader``
    worker needs (picklable; made by :meth:`TeacherFeatureCache.reader`).

    Used as the loader's ``collate_fn``: :func:`~robustdistill.data.collate_waveforms`, then
    ``"cached_targets"`` ``(K, B, T, D)`` (zero past each row's frames) and ``"cached_rows"``
    ``(B,)`` bool (rows read). A row is left to :meth:`TeacherFeatureCache.targets` in the
    step, which computes, reports or refuses it exactly as without this reader, when its
    entry is missing or unreadable, its crop start is off the frame grid or its length is beyond
    ``frame_table``.

    Attributes:
        root: the cache's spec folder.
        context: ``"utterance"`` or ``"crop"``.
        grid: teacher samples per frame (320).
        num_layers: ``K`` cached layers; hidden_size: ``D``.
        frame_table: ``(N,)`` int64, the teacher's frame count of a crop of ``n < N`` samples
            (its own ``frame_lengths``, tabulated so no teacher is needed here).
        dtype: of ``"cached_targets"`` (the storage dtype for a GPU, whose step converts on
            the device; float32 for CPU training, so the conversion happens in the worker).
    """

    root: Path
    context: str
    grid: int
    num_layers: int
    hidden_size: int
    frame_table: torch.Tensor
    dtype: torch.dtype

    def __call__(self, items) -> dict:
        batch = collate_waveforms(items)
        if "keys" in batch:
            batch.update(self.read(batch))
        return batch

    def read(self, batch: dict) -> dict[str, torch.Tensor]:
        """``{"cached_targets": (K, B, T, D), "cached_rows": (B,) bool}`` of a batch with
        ``lengths`` (samples), ``offsets`` (crop starts, samples) and ``keys``; ``T`` is the
        batch's largest frame count (20 ms frames).

        Raises:
            ValueError: an entry with fewer frames than its row needs (audio and key disagree).
        """
        lengths = batch["lengths"]
        known = lengths < len(self.frame_table)
        frames = torch.where(known, self.frame_table[lengths.clamp(max=len(self.frame_table) - 1)],
                             torch.zeros_like(lengths))
        rows = torch.zeros(len(lengths), dtype=torch.bool)
        out = torch.zeros(self.num_layers, len(lengths), max(int(frames.max()), 1),
                          self.hidden_size, dtype=self.dtype)
        for b, (key, start, n) in enumerate(zip(batch["keys"], batch["offsets"].tolist(),
                                               lengths.tolist(), strict=True)):
            if not known[b] or (self.context == "utterance" and start % self.grid):
                continue
            path = entry_file(self.root, self.context, key, start, n)
            if not path.exists():
                continue
            first = start // self.grid if self.context == "utterance" else 0
            try:
                part = read_frames(path, first, int(frames[b]))
            except (UnreadableEntryError, FileNotFoundError):
                continue  # the step rebuilds it (missing: compute) or names it (error)
            out[:, b, : int(frames[b])] = part.to(self.dtype)
            rows[b] = True
        return {"cached_targets": out, "cached_rows": rows}
