"""The teacher cache a run uses (:class:`TeacherFeatureCache`): opens or creates one spec's
folder (:mod:`~robustdistill.teacher_cache.folder`), computes missing entries with the teacher and
writes them (:mod:`~robustdistill.teacher_cache.store`), and looks a batch's targets up
(:class:`CachedLayers`), or refuses a miss with ``missing: error`` (:class:`MissingEntryError`).

Part of :mod:`robustdistill.teacher_cache`, whose docstring describes the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..audio import SAMPLE_RATE
from ..memory import HeapTrimmer
from ..upstream import Upstream, UpstreamOutput, lengths_to_mask
from .folder import open_spec_folder
from .keys import FORMAT_VERSION, cached_layers_of, entry_file, teacher_fingerprint
from .reader import CacheReader
from .settings import DTYPES, TeacherCacheConfig
from .store import KnownWholeEntries, UnreadableEntryError, entry_readable, read_frames, write_entry

logger = logging.getLogger(__package__)  # the package's logger: log lines keep their name

#: Growth of the anonymous resident memory since the last trim from which a ``targets`` call
#: that computed a miss trims the C heap (:class:`robustdistill.memory.HeapTrimmer`). A trim
#: costs 0.1 ms per MB it gives back, and the next step, faulting as much in again, 0.6 ms
#: per MB more (2026-12-08, one thread): with the teacher on the CPU a filling step grows
#: the resident set by 200-730 MB and is trimmed (docs/performance.md); the host side of a
#: teacher on a GPU (its float16 targets, the entry written and read) grows it little, and
#: trimming it at every step slowed that side (simulated on 2 shared cores, 8 utterances a
#: step, 3 layers of 768: median step 185-213 ms without, 204-282 ms with, 161-223 ms with
#: this threshold, three runs each) for 8-46 MB less resident (docs/performance.md).
_TRIM_AFTER_GROWTH = 128 << 20


class MissingEntryError(FileNotFoundError):
    """With ``missing: "error"``, an entry a lookup needs is missing or unreadable; the message
    names the entry, and the command that builds it."""


class CachedLayers(Sequence):
    """``hidden_states`` of a cached teacher: ``L + 1`` slots, only the cached ones filled.

    Indexing a cached layer (also negatively) returns its ``(B, T, D)`` tensor; any other
    layer raises ``KeyError`` naming the cached ones, never a wrong tensor.
    """

    def __init__(self, num_slots: int, layers: dict[int, torch.Tensor]) -> None:
        self._num_slots = num_slots
        self._layers = layers

    def __len__(self) -> int:
        return self._num_slots

    def __getitem__(self, index):
        if isinstance(index, slice):
            raise TypeError("cached teacher layers cannot be sliced; index single layers")
        layer = index + self._num_slots if index < 0 else index
        if layer not in self._layers:
            raise KeyError(f"teacher layer {index} is not in the teacher cache (cached: "
                           f"{sorted(self._layers)}); add it to teacher_cache.layers")
        return self._layers[layer]


class TeacherFeatureCache:
    """Read, compute and write cached teacher targets (see the package docstring).

    Args:
        root: cache root folder (created if needed).
        teacher: the frozen teacher upstream (computes misses; gives frame arithmetic).
        layers: teacher ``hidden_states`` indices stored, each in ``[0, L]``.
        context: ``"utterance"`` or ``"crop"``.
        dtype: storage dtype name (a key of :data:`DTYPES`).
        missing: ``"compute"`` or ``"error"``.
        crop_starts: ``"frames"`` or ``"chunks"`` (see the package docstring).
        max_utterance_s: context ``"utterance"``: the longest utterance, in seconds, the
            teacher encodes whole (> 0).

    Raises:
        ValueError: a bad ``context``, ``dtype``, ``missing``, ``crop_starts`` or
            ``max_utterance_s``, no layer or a layer outside ``[0, L]``, a Whisper teacher with
            context ``"utterance"`` (its absolute position embedding: package docstring), a
            folder whose manifest disagrees with this spec, a ``root`` that is itself one
            spec's folder (the ``path`` that ``cache-teacher`` prints), or
            ``missing: "error"`` with no folder of this spec under ``root`` (the message says
            what the folders there differ in: another teacher, layers, context or dtype).
    """

    def __init__(self, root: str | Path, teacher: Upstream, layers: Sequence[int], *,
                 context: str = "utterance", dtype: str = "float16",
                 missing: str = "compute", crop_starts: str = "frames",
                 max_utterance_s: float = 120.0) -> None:
        TeacherCacheConfig(dir=str(root), context=context, dtype=dtype, layers=list(layers),
                           missing=missing, crop_starts=crop_starts,
                           max_utterance_s=max_utterance_s)  # validates
        if context == "utterance" and getattr(teacher, "is_whisper", False):
            raise ValueError(
                "teacher_cache.context utterance cannot be used with a Whisper teacher: its "
                "absolute position embedding makes a crop's targets depend on where the crop "
                "sits in the utterance, which the student cannot see; use context crop with "
                "crop_starts chunks (the teacher sees exactly the crop, entries recur every "
                "epoch and cache-teacher prebuilds them)")
        bad = [x for x in layers if not 0 <= x <= teacher.num_layers]
        if bad:
            raise ValueError(f"teacher_cache.layers {bad} outside [0, {teacher.num_layers}]")
        self.teacher = teacher
        self.layers = sorted({int(x) for x in layers})
        self.context = context
        self.dtype = DTYPES[dtype]
        self.missing = missing
        self.crop_starts = crop_starts
        self.max_utterance_s = float(max_utterance_s)
        self.grid = teacher.samples_per_frame
        self.spec = {"format": FORMAT_VERSION, "teacher": teacher_fingerprint(teacher),
                     "layers": self.layers, "context": context, "dtype": dtype,
                     "samples_per_frame": self.grid}
        if teacher.is_whisper:  # "native" and "ssl" place the same frames 200 samples apart
            self.spec["whisper_frames"] = teacher.whisper_frames
        self.path = open_spec_folder(root, self.spec, missing)
        self.hits = 0
        self.loader_hits = 0  # of the hits, rows a CacheReader read in the loader
        self.misses = 0
        self._heap = HeapTrimmer(_TRIM_AFTER_GROWTH)  # trims after a fill's teacher passes
        #: entries :meth:`check_entries` found whole (their headers are not read again)
        self._known_whole = KnownWholeEntries()

    @classmethod
    def from_config(cls, cfg: TeacherCacheConfig, teacher: Upstream,
                    objectives: Iterable) -> TeacherFeatureCache:
        """The cache of a run: ``cfg.layers`` or the objectives' teacher layers.

        Raises:
            ValueError: ``cfg.dir`` unset, ``cfg.layers`` without a layer an objective reads
                (found here, not as a ``KeyError`` at the first step), or see the class.
        """
        if not cfg.dir:
            raise ValueError("teacher_cache.dir is not set")
        objectives = list(objectives)
        slots = teacher.num_layers + 1  # hidden_states: negative indices count from the end
        read = sorted({int(x) % slots for o in objectives
                       for x in (getattr(o, "teacher_layers", None) or [])})
        layers = cfg.layers if cfg.layers is not None else cached_layers_of(objectives)
        absent = [x for x in read if x not in {int(y) for y in layers}]
        if absent:
            raise ValueError(f"layers {list(layers)} leave out teacher layers {absent} that the "
                             f"objectives read (they read {read}): add them, or leave "
                             "teacher_cache.layers null (the objectives' layers)")
        return cls(cfg.dir, teacher, layers, context=cfg.context, dtype=cfg.dtype,
                   missing=cfg.missing, crop_starts=cfg.crop_starts,
                   max_utterance_s=cfg.max_utterance_s)

    # ------------------------------------------------------------------ datasets
    def prepare_dataset(self, dataset) -> None:
        """Make a map-style dataset emit what lookups need: crop starts on the teacher's
        frame grid (or, with ``crop_starts: chunks``, at multiples of the crop length) and
        content keys (``"offset"``, ``"key"`` in every item).

        Raises:
            TypeError: a dataset without these options (a streaming dataset).
            ValueError: ``crop_starts: chunks`` without a crop length (``data.max_length_s``)
                or with one that is not a whole number of teacher frames; see
                :meth:`check_utterance_lengths`.
        """
        if not hasattr(dataset, "content_keys") or not hasattr(dataset, "crop_grid"):
            raise TypeError(f"{type(dataset).__name__} cannot be used with the teacher cache "
                            "(it has no content keys or crop grid); use a map-style dataset "
                            "(data.streaming false) or turn teacher_cache off")
        self.check_utterance_lengths(dataset)
        dataset.crop_grid = self.chunk_samples(dataset) or self.grid
        dataset.content_keys = True

    def check_utterance_lengths(self, dataset) -> None:
        """With context ``"utterance"``, refuse a dataset whose longest utterance (its
        ``lengths``, samples at 16 kHz) exceeds ``max_utterance_s``.

        Raises:
            ValueError: names how many utterances are too long and the longest.
        """
        lengths = getattr(dataset, "lengths", None)
        if self.context != "utterance" or lengths is None or not len(lengths):
            return
        limit = self.max_utterance_s * SAMPLE_RATE
        too_long = int(np.sum(np.asarray(lengths) > limit))
        if too_long:
            raise ValueError(
                f"teacher_cache.context utterance: {too_long} utterances are longer than "
                f"teacher_cache.max_utterance_s {self.max_utterance_s:g} s (longest "
                f"{float(np.max(lengths)) / SAMPLE_RATE:.1f} s); the teacher would encode each "
                "whole: use context crop with crop_starts chunks, or raise the limit")

    def chunk_samples(self, dataset) -> int | None:
        """The crop length in samples with ``crop_starts: chunks``, else None.

        Raises:
            ValueError: see :meth:`prepare_dataset`.
        """
        if self.crop_starts != "chunks":
            return None
        crop = getattr(dataset, "_max_samples", None)
        if not crop:
            raise ValueError("teacher_cache.crop_starts chunks needs a crop length "
                             "(data.max_length_s)")
        if crop % self.grid:
            raise ValueError(f"teacher_cache.crop_starts chunks: the crop length ({crop} "
                             f"samples) must be a multiple of the teacher's {self.grid}-sample "
                             "frame")
        return int(crop)

    # ------------------------------------------------------------------ entries
    def entry_path(self, key: str, start: int = 0, length: int | None = None) -> Path:
        """File of one entry: the utterance ``key`` (context utterance) or its crop
        ``[start, start + length)`` in samples (context crop)."""
        return entry_file(self.path, self.context, key, start, length)

    def reader(self, max_samples: int, dtype: torch.dtype = torch.float32) -> CacheReader:
        """A :class:`CacheReader` for crops of up to ``max_samples`` samples, delivering
        ``dtype`` (see :attr:`TeacherCacheConfig.read_in_workers`).

        Raises:
            ValueError: ``max_samples`` < 1.
        """
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        table = self.teacher.frame_lengths(torch.arange(max_samples + 1)).long().clamp(min=0)
        return CacheReader(self.path, self.context, self.grid, len(self.layers),
                           self.teacher.hidden_size, table.cpu(), dtype)

    def compute(self, waveform: torch.Tensor) -> torch.Tensor:
        """Teacher targets of one unpadded waveform ``(S,)`` -> ``(K, T, D)`` in storage dtype
        (CPU).

        Raises:
            ValueError: a finite target that the storage dtype cannot hold (beyond float16's
                65504): stored as inf, it would make every step that reads it non-finite.
        """
        device = next(self.teacher.parameters()).device
        wave = waveform.detach().to(device=device, dtype=torch.float32).reshape(1, -1)
        out = self.teacher(wave, torch.tensor([wave.shape[1]], device=device))
        frames = int(out.frame_lengths[0])
        layers = torch.stack([out.hidden_states[x][0, :frames] for x in self.layers])
        stored = layers.to(device="cpu", dtype=self.dtype).contiguous()
        overflow = torch.isfinite(layers).cpu() & ~torch.isfinite(stored)
        if overflow.any():
            bad = [x for x, o in zip(self.layers, overflow.flatten(1).any(1).tolist(), strict=True)
                   if o]
            raise ValueError(
                f"teacher layers {bad} reach |h| = {float(layers.abs().max()):.3g}, beyond "
                f"teacher_cache.dtype {self.spec['dtype']}: set teacher_cache.dtype bfloat16 "
                "or float32")
        return stored

    def write(self, path: Path, layers: torch.Tensor) -> None:
        """Write an entry atomically: :func:`~robustdistill.teacher_cache.store.write_entry`.

        Args:
            path: the entry's file (parent folders created).
            layers: ``(K, T, D)`` targets in storage dtype, as :meth:`compute` returns.
        """
        write_entry(path, layers)

    def ensure(self, key: str, waveform: Callable[[], np.ndarray | torch.Tensor]) -> bool:
        """Build the utterance entry ``key`` unless present (context utterance).

        Args:
            key: content key of the utterance.
            waveform: returns the whole utterance ``(S,)`` (called only on a miss).

        Returns:
            True when the entry was computed now (missing or unreadable), False when it
            existed whole.
        """
        path = self.entry_path(key)
        if self._present(path):
            return False
        self.write(path, self.compute(torch.as_tensor(waveform())))
        return True

    def _present(self, path: Path) -> bool:
        """True when the entry ``path`` is there and whole; an unreadable one (truncated,
        corrupt) is logged, to be written again."""
        if not path.exists():
            return False
        if entry_readable(path):
            return True
        logger.warning("teacher cache entry %s is unreadable (truncated or corrupt): "
                       "computing it again", path)
        return False

    def ensure_chunks(self, key: str, waveform: np.ndarray | torch.Tensor,
                      chunk: int) -> tuple[int, int]:
        """Build the crop entries of every chunk of one utterance (context crop, crop_starts
        chunks): starts ``0, chunk, 2 chunk, ...`` while a whole chunk fits, or one entry of
        the whole utterance when it is shorter than ``chunk`` (what training crops can be).

        Returns:
            ``(computed, chunks)``: entries computed now (existing ones are skipped) and the
            utterance's number of chunks.
        """
        waveform = torch.as_tensor(waveform)
        entries = self.chunk_entries(key, int(waveform.shape[0]), chunk)
        computed = 0
        for start, n, path in entries:
            if not self._present(path):
                self.write(path, self.compute(waveform[start : start + n]))
                computed += 1
        return computed, len(entries)

    def chunk_entries(self, key: str, samples: int, chunk: int) -> list[tuple[int, int, Path]]:
        """``(start, length, path)`` of each chunk entry of an utterance of ``samples``
        samples (see :meth:`ensure_chunks`)."""
        n = min(chunk, samples)
        return [(start, n, self.entry_path(key, start, n))
                for start in range(0, max(samples - chunk, 0) + 1, chunk)]

    # ------------------------------------------------------------------ lookups
    def targets(self, batch: dict, full_waveform: Callable[[int], np.ndarray] | None = None,
                device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> UpstreamOutput:
        """The teacher output of a batch of clean crops, from the cache.

        A call that computed a miss (``missing: "compute"``) then gives the C heap's free
        pages back to the system once the resident memory grew by :data:`_TRIM_AFTER_GROWTH`
        since the last such trim (:class:`robustdistill.memory.HeapTrimmer`): the teacher's
        passes over whole utterances of every length, freed, otherwise stay resident.

        Args:
            batch: a collated batch with ``waveforms (B, S_max)``, ``lengths (B,)``,
                ``offsets (B,)`` (crop starts in samples), ``keys`` (B content keys) and
                ``indices (B,)`` (dataset positions).
            full_waveform: ``position -> (S,)`` whole utterance, to fill an utterance-context
                miss (the dataset's ``full_waveform``); unused for context crop.
            device, dtype: of the returned hidden states.

        Returns:
            :class:`~robustdistill.upstream.UpstreamOutput` whose ``hidden_states`` is a
            :class:`CachedLayers` of ``(B, T, D)`` tensors, zero past ``frame_lengths``.

        Raises:
            KeyError: the batch has no ``keys``/``offsets`` (dataset not prepared).
            ValueError: a crop start off the frame grid, or a cached entry shorter than the
                crop (audio and key disagree).
            MissingEntryError: a miss, or an unreadable (truncated, corrupt) entry, with
                ``missing: error`` (a ``FileNotFoundError``); with ``missing: compute`` such an
                entry is computed again and replaces the bad file, with a warning naming it.
        """
        if "keys" not in batch or "offsets" not in batch:
            raise KeyError("batch has no 'keys'/'offsets': call TeacherFeatureCache."
                           "prepare_dataset on its dataset first")
        lengths = batch["lengths"].cpu()
        frame_lengths = self.teacher.frame_lengths(lengths).cpu().long()
        max_frames = int(frame_lengths.max())
        read = batch.get("cached_rows")
        shape = (len(self.layers), len(lengths), max_frames, self.teacher.hidden_size)
        if read is not None and tuple(batch["cached_targets"].shape) != shape:
            read = None  # not this cache's reading: read again below
        if read is not None and bool(read.all()):  # every row read in the loader
            self.hits += len(lengths)
            self.loader_hits += len(lengths)
            out = batch["cached_targets"].to(device, non_blocking=True).to(dtype)
        else:
            misses = self.misses
            out = self._read_rows(batch, frame_lengths, read, shape, full_waveform, dtype)
            out = out.to(device)
            if self.misses != misses:
                # the teacher's passes over whole utterances of every length, freed: glibc
                # kept their pages (48 distill steps on 126 LibriSpeech files: 1,863 MB
                # in the epoch after the fill, 1,048 MB with this; docs/performance.md); only
                # once grown by _TRIM_AFTER_GROWTH: a teacher on a GPU leaves little there,
                # and a trim makes the next step fault its pages in again
                self._heap.release()
        frame_lengths = frame_lengths.to(device)
        hidden = CachedLayers(self.teacher.num_layers + 1,
                              {layer: out[i] for i, layer in enumerate(self.layers)})
        return UpstreamOutput(hidden, frame_lengths, lengths_to_mask(frame_lengths, max_frames))

    def check_entries(self, batch: dict, name: Callable[[int], str] | None = None) -> None:
        """With ``missing: "error"``, refuse a batch that needs an entry that is missing or
        unreadable, before any lookup (nothing is checked with ``missing: "compute"``).

        A multi-process run checks each process's batches this way before the step's first
        collective, so every process stops together (with a checkpoint) instead of one
        process raising in its forward pass while the others wait for it. Rows read in the
        loader (``cached_rows``) are whole; each other row's entry has its header opened, which
        also checks that the file holds all the data the header describes (safetensors refuses
        a file shorter or longer than that), once per file: see :class:`~robustdistill.teacher_cache.store.KnownWholeEntries`.

        Args:
            batch: a collated batch with ``keys``, ``offsets`` and ``lengths`` (samples) and
                ``indices`` (dataset positions); an unprepared batch is left to
                :meth:`targets`.
            name: ``dataset position -> audio name`` (the dataset's file), for the message.

        Raises:
            MissingEntryError: naming the first such entry, its audio and the command that
                builds it.
        """
        if self.missing != "error" or "keys" not in batch or "offsets" not in batch:
            return
        read = batch.get("cached_rows")
        for b, (key, start, n) in enumerate(zip(batch["keys"], batch["offsets"].tolist(),
                                               batch["lengths"].tolist(), strict=True)):
            if read is not None and bool(read[b]):
                continue
            path = self.entry_path(key) if self.context == "utterance" else self.entry_path(
                key, start, n)
            if self._known_whole.is_whole(path):
                continue
            position = int(batch["indices"][b])
            audio = name(position) if name is not None else f"dataset item {position}"
            what = "is unreadable (truncated or corrupt)" if path.exists() else "is missing"
            raise MissingEntryError(
                f"teacher cache entry {path} of {audio} {what} (missing: error); build it with "
                "`robustdistill cache-teacher` and this run's config and overrides")

    def _read_rows(self, batch, frame_lengths, read, shape, full_waveform, dtype):
        """The rows the loader did not read, from disk (computing misses); ``(K, B, T, D)``."""
        out = torch.zeros(shape, dtype=dtype)
        for b, (key, start, n) in enumerate(zip(batch["keys"], batch["offsets"].tolist(),
                                               batch["lengths"].tolist(), strict=True)):
            frames = int(frame_lengths[b])
            if read is not None and read[b]:
                self.hits += 1
                self.loader_hits += 1
                out[:, b, :frames] = batch["cached_targets"][:, b, :frames].to(dtype)
                continue
            if self.context == "utterance":
                if start % self.grid:
                    raise ValueError(f"crop start {start} is not on the teacher's {self.grid}-"
                                     "sample frame grid (dataset not prepared for the cache?)")
                path, first = self.entry_path(key), start // self.grid
            else:
                path, first = self.entry_path(key, start, n), 0
            part = None
            if path.exists():
                try:
                    part = read_frames(path, first, frames)
                except UnreadableEntryError as err:
                    if self.missing == "error":
                        raise MissingEntryError(
                            f"teacher cache entry {path} is unreadable (truncated or corrupt: "
                            f"{err.__cause__ or err}); run `robustdistill cache-teacher` again "
                            "(it rebuilds unreadable entries)") from err
                    logger.warning("teacher cache entry %s is unreadable (truncated or "
                                   "corrupt): computing it again", path)
            if part is not None:
                self.hits += 1
            else:
                self.misses += 1
                if self.missing == "error":
                    raise MissingEntryError(f"teacher cache miss {path} (missing: error); "
                                            "build it with `robustdistill cache-teacher`")
                if self.context == "crop":
                    self.write(path, self.compute(batch["waveforms"][b, :n]))
                else:
                    if full_waveform is None:
                        raise FileNotFoundError(f"teacher cache miss {path} and no way to read "
                                                "the whole utterance")
                    whole = full_waveform(int(batch["indices"][b]))
                    self.write(path, self.compute(torch.as_tensor(whole)))
                part = read_frames(path, first, frames)
            out[:, b, :frames] = part.to(dtype)
        return out

    def lookups(self) -> dict:
        """``{"hits", "hits_read_in_loader", "misses"}``: this process's lookups so far."""
        return {"hits": self.hits, "hits_read_in_loader": self.loader_hits,
                "misses": self.misses}

    def restore_lookups(self, counts: dict) -> None:
        """Start counting from ``counts`` (a :meth:`lookups` dict saved with a checkpoint), so
        a resumed run's totals are the whole run's, not those since its last start."""
        self.hits = int(counts.get("hits", 0))
        self.loader_hits = int(counts.get("hits_read_in_loader", 0))
        self.misses = int(counts.get("misses", 0))

    def folder_stats(self) -> dict:
        """``{"entries", "bytes"}``: what the cache folder holds (all processes' entries)."""
        files = list(self.path.glob("*/*.safetensors"))
        return {"entries": len(files), "bytes": sum(f.stat().st_size for f in files)}

    def stats(self) -> dict:
        """``{"hits", "hits_read_in_loader", "misses", "entries", "bytes"}`` of this process
        and folder."""
        return {**self.lookups(), **self.folder_stats()}
