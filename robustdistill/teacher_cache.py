"""Teacher feature cache: the frozen teacher's target layers computed once per utterance.

The teacher of layer-wise distillation (DistilHuBERT, "DistilHuBERT: Speech Representation
Learning by Layer-wise Distillation of Hidden-unit BERT", arXiv 2110.01900; RobustDistiller,
"RobustDistiller: Compressing Universal Speech Representations for Enhanced Environment
Robustness", arXiv 2302.09437) is frozen and sees clean audio, so its targets are a pure
function of (teacher weights, clean audio, the audio the teacher sees). The reference code
(s3prl's ``pretrain/distiller``) runs the teacher on every step; this module pays that cost
once and reads the targets back, memory-mapped, on every later use.

Layout on disk (``TeacherCacheConfig.dir``)::

    DIR/<spec hash>/manifest.json            # teacher fingerprint, layers, context, dtype
    DIR/<spec hash>/<kk>/<key>.safetensors   # context "utterance": one utterance
    DIR/<spec hash>/<kk>/<key>_<start>_<n>.safetensors   # context "crop": one crop

Each entry holds one tensor ``"layers"`` of shape ``(K, T, D)`` (``K`` cached layers in the
manifest's order, ``T`` frames, ``D`` teacher width) in fp16 by default. ``<key>`` is the
SHA-256 of the utterance's decoded 16 kHz float32 samples
(:func:`robustdistill.data.cropped.content_key`), so renaming or moving files keeps the cache
valid, and the spec hash changes whenever the teacher's weights or config, the layer list,
the context or the storage dtype change: such a cache is never read for another spec
(invalidation is a new folder; delete old folders to reclaim the space).

Which audio the teacher sees (``context``):

* ``"utterance"`` (default): the whole utterance, once. Training crops start on the
  teacher's frame grid (320 samples = 20 ms), so crop frame ``i`` is utterance frame
  ``start / 320 + i`` and the targets are a slice of the cached utterance. Deviation from the
  reference code, where the teacher sees the crop: frames near a crop's edges carry teacher
  context from outside the crop (for WavLM/HuBERT the transformer attends over the whole
  utterance; for Whisper the utterance is padded to 30 s once instead of each crop). An entry
  takes ``K x D x 2`` bytes per 20 ms frame (fp16): 0.83 GB per hour of audio for WavLM Base+
  with K=3 layers, about 800 GB for LibriSpeech 960 h.
* ``"crop"``: the teacher sees exactly the crop, as in the reference code; an entry is keyed by
  (utterance, crop start, crop length) and is filled on first use, so it saves time only when
  the same crop recurs (validation crops, utterances shorter than the crop length, fixed
  crops); random crops of long utterances almost never recur, unless ``crop_starts`` is
  ``"chunks"``.

Where crops may start (``crop_starts``):

* ``"frames"`` (default): anywhere on the teacher's 320-sample frame grid.
* ``"chunks"``: only at multiples of the crop length, i.e. every utterance is cut into fixed
  non-overlapping chunks and a training crop is one of them. With context ``"crop"`` the
  entries recur every epoch and ``cache-teacher`` can prebuild them: the teacher sees exactly
  the crop (the references' targets) and is still paid once. Deviation (named option): fewer
  distinct crops (the offsets within an utterance are fixed).

Whisper teachers need ``context: crop``: Whisper adds an absolute (sinusoidal) position
embedding to its input, so the targets of a crop taken from the middle of a whole-utterance
encoding carry that crop's position in the utterance, which the student (shown only the crop)
cannot know. Measured on whisper-tiny.en, test-other, 2 s crops starting at 2 s or 6 s: the
frame cosine between the two encodings of the same audio is about 0.86 (layer 1) and 0.64-0.73
(layer 4). ``TeacherFeatureCache`` refuses a Whisper teacher with context ``"utterance"``.

Each utterance is encoded alone (batch of one, no padding). Teacher-every-step encodes padded
batches; for teachers without an attention mask (``feat_extract_norm == "group"``, e.g. HuBERT
and the random WavLM Base+ shape of ``make-teacher``) the padded outputs differ slightly from
the unpadded ones, so cached targets are the padding-free values. With equal-length crops
(no padding) and ``dtype: float32`` the cached targets equal teacher-every-step exactly
(``tests/test_teacher_cache.py``).

Build it ahead with ``robustdistill cache-teacher --config RECIPE`` (multi-process with
``accelerate launch``, resumable, progress bar) or lazily: a miss is computed and written on
first use (``missing: compute``), or is an error (``missing: error``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .audio import SAMPLE_RATE, AudioError
from .data.batching import collate_waveforms
from .data.cropped import content_key
from .files import atomic_path, atomic_write_text, file_blocking_folder
from .processes import finish_processes
from .upstream import Upstream, UpstreamOutput, lengths_to_mask

logger = logging.getLogger(__name__)

__all__ = ["CacheReader", "CachedLayers", "MissingEntryError", "TeacherCacheConfig",
           "TeacherFeatureCache", "UnreadableEntryError", "build_cache", "cached_layers_of",
           "main", "teacher_fingerprint"]

#: Bumped when the entry format changes (part of the spec hash).
FORMAT_VERSION = 1
CONTEXTS = ("utterance", "crop")
CROP_STARTS = ("frames", "chunks")
DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
#: How many entries :meth:`TeacherFeatureCache.check_entries` remembers as whole (about 70
#: bytes each, 70 MB in all); past it, it forgets them all and reads their headers again.
_KNOWN_WHOLE_LIMIT = 2**20


@dataclass
class TeacherCacheConfig:
    """The ``teacher_cache`` section of a distillation config (off unless ``dir`` is set).

    Attributes:
        dir: cache root folder; None disables the cache (teacher on every step).
        context: ``"utterance"`` (the teacher sees whole utterances; crops on its frame grid)
            or ``"crop"`` (the teacher sees exactly the crop; entries per crop).
        dtype: storage dtype of the targets: ``float16`` (default), ``bfloat16`` or
            ``float32``.
        layers: teacher ``hidden_states`` indices to store; default the union of the
            objectives' ``teacher_layers``.
        missing: ``"compute"`` (a miss is computed by the teacher and written) or ``"error"``
            (every entry must have been built by ``robustdistill cache-teacher``).
        crop_starts: ``"frames"`` or ``"chunks"`` (module docstring).
        max_utterance_s: with context ``"utterance"``, the longest utterance (seconds) the
            teacher encodes whole; a dataset with a longer one is refused at start-up (a miss
            would run the teacher's attention over all its frames at once).
        read_in_workers: read each training batch's targets in the collate function, i.e. in
            the ``DataLoader`` workers when ``data.num_workers > 0``, so the step only moves
            them to the device (:class:`CacheReader`); the values are the same bytes either
            way. Each batch then carries ``K x B x T x D`` targets through the workers' shared
            memory (86 MB in fp16 for 24 x 15.6 s crops and 3 WavLM Base+ layers): a container
            with a small ``/dev/shm`` needs it raised, or this option off.

    Raises:
        ValueError: in ``__post_init__``, an unknown context, dtype or ``missing`` mode, or a
            ``dir`` where a file stands (itself or one of its parents).
    """

    dir: str | None = field(default=None, metadata={"help": "cache root; null: teacher on every step"})
    context: str = field(default="utterance", metadata={"help": "utterance (whole utterance, crops on the frame grid) or crop (teacher sees the crop)"})
    dtype: str = field(default="float16", metadata={"help": "storage dtype: float16, bfloat16 or float32"})
    layers: list[int] | None = field(default=None, metadata={"help": "teacher layers to store; default: the objectives' teacher_layers"})
    missing: str = field(default="compute", metadata={"help": "compute (lazy fill) or error (prebuilt only)"})
    crop_starts: str = field(default="frames", metadata={"help": "frames (a crop starts on any teacher frame) or chunks (only at multiples of the crop length: fixed chunks that recur, so context crop can be prebuilt)"})
    max_utterance_s: float = field(default=120.0, metadata={"help": "context utterance: the longest utterance the teacher encodes whole, in seconds (its attention grows with the square of the length); a longer one is an error at start-up: use context crop with crop_starts chunks"})
    read_in_workers: bool = field(default=True, metadata={"help": "read a batch's cached targets in the DataLoader workers (collate), off the step's critical path; false: in the step"})

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"teacher_cache.context must be one of {CONTEXTS}, got {self.context!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"teacher_cache.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.missing not in ("compute", "error"):
            raise ValueError(f"teacher_cache.missing must be compute or error, got {self.missing!r}")
        if self.crop_starts not in CROP_STARTS:
            raise ValueError(f"teacher_cache.crop_starts must be one of {CROP_STARTS}, got "
                             f"{self.crop_starts!r}")
        if self.layers is not None and not self.layers:
            raise ValueError("teacher_cache.layers must name at least one layer (or be null)")
        if not self.max_utterance_s > 0:
            raise ValueError(f"teacher_cache.max_utterance_s must be > 0, got "
                             f"{self.max_utterance_s}")
        if self.dir and (blocking := file_blocking_folder(self.dir)) is not None:
            # found when the config is read, not as a NotADirectoryError once the teacher and
            # the data are loaded
            raise ValueError(f"teacher_cache.dir {self.dir!r}: {str(blocking)!r} is a file, "
                             "not a folder")


def _entry_path(root: Path, context: str, key: str, start: int = 0,
                length: int | None = None) -> Path:
    name = key if context == "utterance" else f"{key}_{start}_{length}"
    return root / key[:2] / f"{name}.safetensors"


class UnreadableEntryError(ValueError):
    """A cache entry that exists but cannot be read: truncated (a partial copy, a file system
    that lost the end of a write) or otherwise not a safetensors file with ``"layers"``."""


class MissingEntryError(FileNotFoundError):
    """With ``missing: "error"``, an entry a lookup needs is missing or unreadable; the message
    names the entry, and the command that builds it."""


def _open_layers(handle, path: Path):
    """The ``"layers"`` slice of an open entry.

    Raises:
        UnreadableEntryError: there is no such tensor.
    """
    try:
        return handle.get_slice("layers")
    except (SafetensorError, KeyError) as err:
        raise UnreadableEntryError(f"{path}: {err}") from err


def _entry_readable(path: Path) -> bool:
    """True when ``path`` exists and is a whole entry (its header opens and covers the file,
    with a ``"layers"`` tensor); reads only the header."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            _open_layers(handle, path)
    except (SafetensorError, OSError, UnreadableEntryError):
        return False
    return True


def _read_frames(path: Path, first: int, frames: int) -> torch.Tensor:
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
            path = _entry_path(self.root, self.context, key, start, n)
            if not path.exists():
                continue
            first = start // self.grid if self.context == "utterance" else 0
            try:
                part = _read_frames(path, first, int(frames[b]))
            except (UnreadableEntryError, FileNotFoundError):
                continue  # the step rebuilds it (missing: compute) or names it (error)
            out[:, b, : int(frames[b])] = part.to(self.dtype)
            rows[b] = True
        return {"cached_targets": out, "cached_rows": rows}


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


def cached_layers_of(objectives: Iterable) -> list[int]:
    """Sorted union of the ``teacher_layers`` attributes of the objectives.

    Raises:
        ValueError: no objective names teacher layers (nothing to cache).
    """
    layers = sorted({int(x) for o in objectives for x in (getattr(o, "teacher_layers", None) or [])})
    if not layers:
        raise ValueError("no objective reads teacher layers (teacher_layers): the teacher "
                         "cache would hold nothing; set teacher_cache.layers or turn it off")
    return layers


#: Config entries that name where and with what a teacher was loaded, not what it computes:
#: the same weights by hub id, snapshot or moved folder, or under another ``transformers``,
#: keep their cache.
_NOT_IN_FINGERPRINT = ("_name_or_path", "transformers_version")


def teacher_fingerprint(teacher: Upstream) -> str:
    """SHA-256 of the teacher's config, preprocessing and every parameter and buffer.

    Any change of weights, architecture, normalisation, attention-mask use or (Whisper)
    feature extractor gives another fingerprint; the path it was loaded from and the
    ``transformers`` version do not (:data:`_NOT_IN_FINGERPRINT`).
    """
    digest = hashlib.sha256()
    config = teacher.config.to_dict()
    for name in _NOT_IN_FINGERPRINT:
        config.pop(name, None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(json.dumps({"normalize": bool(teacher.normalize),
                              "attention_mask": bool(teacher.use_attention_mask)}).encode())
    if teacher.feature_extractor is not None:
        digest.update(teacher.feature_extractor.to_json_string().encode())
    for name, tensor in teacher.model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class TeacherFeatureCache:
    """Read, compute and write cached teacher targets (see the module docstring).

    Args:
        root: cache root folder (created if needed).
        teacher: the frozen teacher upstream (computes misses; gives frame arithmetic).
        layers: teacher ``hidden_states`` indices stored, each in ``[0, L]``.
        context: ``"utterance"`` or ``"crop"``.
        dtype: storage dtype name (a key of :data:`DTYPES`).
        missing: ``"compute"`` or ``"error"``.
        crop_starts: ``"frames"`` or ``"chunks"`` (see the module docstring).
        max_utterance_s: context ``"utterance"``: the longest utterance, in seconds, the
            teacher encodes whole (> 0).

    Raises:
        ValueError: a bad ``context``, ``dtype``, ``missing``, ``crop_starts`` or
            ``max_utterance_s``, no layer or a layer outside ``[0, L]``, a Whisper teacher with
            context ``"utterance"`` (its absolute position embedding: module docstring), a
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
        spec_hash = hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()
        if (Path(root) / "manifest.json").exists():  # the "path" cache-teacher prints
            raise ValueError(f"{root} is the folder of one cache spec (it holds manifest.json), "
                             f"not a cache root: give its parent {Path(root).parent} as "
                             "teacher_cache.dir (a cache inside it would be built anew)")
        self.path = Path(root) / spec_hash[:16]
        manifest = self.path / "manifest.json"
        if missing == "error" and not manifest.exists():
            raise ValueError(self._no_such_cache(Path(root)))
        self.path.mkdir(parents=True, exist_ok=True)
        if manifest.exists():
            found = json.loads(manifest.read_text())
            if found != self.spec:
                raise ValueError(f"{manifest} describes another cache ({found}); expected "
                                 f"{self.spec}: remove the folder")
        else:
            atomic_write_text(manifest, json.dumps(self.spec, indent=2, sort_keys=True))
        self.hits = 0
        self.loader_hits = 0  # of the hits, rows a CacheReader read in the loader
        self.misses = 0
        #: entries :meth:`check_entries` found whole, each as the hash of its path and what
        #: ``os.stat`` said of it then (:meth:`_known_whole`)
        self._whole: set[int] = set()

    def _no_such_cache(self, root: Path) -> str:
        """The message for ``missing: error`` when ``root`` holds no folder of this spec:
        what differs in each folder it does hold (another teacher, layers, ...)."""
        others = []
        for found in sorted(root.glob("*/manifest.json")):
            try:
                spec = json.loads(found.read_text())
            except (OSError, ValueError):
                continue
            differ = [key for key in sorted({*spec, *self.spec})
                      if spec.get(key) != self.spec.get(key)]
            others.append(f"{found.parent.name} (other {', '.join(differ)})")
        held = f"it holds {'; '.join(others)}" if others else "it holds no cache"
        return (f"{root} has no cache for this teacher, layers {self.layers}, context "
                f"{self.context} and dtype {self.spec['dtype']} (missing: error, so every "
                f"lookup would miss); {held}: build it with `robustdistill cache-teacher` and "
                "the run's settings, or set teacher_cache.missing compute")

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
        return _entry_path(self.path, self.context, key, start, length)

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
        """Write an entry atomically (a temporary file renamed into place), so a killed
        build never leaves a truncated entry and concurrent writers cannot corrupt one.

        Args:
            path: the entry's file (parent folders created).
            layers: ``(K, T, D)`` targets in storage dtype, as :meth:`compute` returns.
        """
        with atomic_path(path) as tmp:
            save_file({"layers": layers}, str(tmp))

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
        if _entry_readable(path):
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
            out = self._read_rows(batch, frame_lengths, read, shape, full_waveform, dtype)
            out = out.to(device)
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
        a file shorter or longer than that), once per file: see :meth:`_known_whole`.

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
            if self._known_whole(path):
                continue
            position = int(batch["indices"][b])
            audio = name(position) if name is not None else f"dataset item {position}"
            what = "is unreadable (truncated or corrupt)" if path.exists() else "is missing"
            raise MissingEntryError(
                f"teacher cache entry {path} of {audio} {what} (missing: error); build it with "
                "`robustdistill cache-teacher` and this run's config and overrides")

    def _known_whole(self, path: Path) -> bool:
        """Whether the entry ``path`` is there and whole (:func:`_entry_readable`), reading its
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
        if not _entry_readable(path):
            return False
        if len(self._whole) >= _KNOWN_WHOLE_LIMIT:
            self._whole.clear()
        self._whole.add(seen)
        return True

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
                    part = _read_frames(path, first, frames)
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
                part = _read_frames(path, first, frames)
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


# ---------------------------------------------------------------------- building
def _whole_utterance(dataset, position: int) -> np.ndarray | None:
    """The whole utterance at ``position`` (``(samples,)`` float32, 16 kHz), or None for unusable
    audio (NaN/Inf, silent, truncated), skipped through the dataset (logged once, named in its
    ``skipped``)."""
    try:
        return dataset.full_waveform(position)
    except AudioError as err:
        dataset._skip(dataset._name(dataset._sources[position]), err.reason, err)
        return None


def _left_to_build(cache: TeacherFeatureCache, dataset, share: Sequence[int],
                   chunk: int | None, acc) -> tuple[list[int], int, int]:
    """The first pass of a resumed multi-process :func:`build_cache` over one split: which of
    this process's ``share`` (dataset positions) lack an entry (whole: only headers are read;
    an unreadable one is built again), then every process's such positions shared out again,
    ``r, r + N, ...`` of them (by position alone, a build stopped after process 0 had finished
    its share would leave all the rest to process 1). A collective.

    Returns:
        ``(positions this process builds, entries found built, unusable audio items)``.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    left, found, bad = [], 0, 0
    for position in tqdm(share, desc="cache-teacher (what is built)",
                         disable=not acc.is_main_process):
        if (waveform := _whole_utterance(dataset, position)) is None:
            bad += 1
            continue
        key = content_key(waveform)
        paths = ([path for *_, path in cache.chunk_entries(key, len(waveform), chunk)]
                 if chunk else [cache.entry_path(key)])
        if all(_entry_readable(path) for path in paths):
            found += len(paths)
        else:
            left.append(position)
    left = sorted(gather_object(left))
    return left[acc.process_index :: acc.num_processes], found, bad


def build_cache(cfg, *, splits: Sequence[str] = ("train", "validation"),
                limit: int | None = None) -> dict:
    """Fill the cache of a distillation config ahead of training (context utterance, or
    context crop with ``crop_starts: chunks``: every chunk of every utterance).

    Runs under ``accelerate``: process ``r`` of ``N`` builds items ``r, r + N, ...`` of each
    split; existing entries are skipped and an unreadable one (truncated, corrupt) is built
    again, so an interrupted build resumes where it stopped. A resumed build on several
    processes first finds what is left and shares that out evenly (:func:`_left_to_build`;
    by position alone, one process could be left with all of it); one process, or an empty
    cache, skips that pass (it would decode every item twice). On several processes it ends
    by destroying the process group (:func:`~robustdistill.processes.finish_processes`).

    Args:
        cfg: a :class:`~robustdistill.config.DistillConfig` with ``teacher_cache.dir`` set.
        splits: which datasets to cache.
        limit: at most this many items per split (for smoke tests).

    Returns:
        ``{"computed": int, "skipped": int (already cached), "unusable": int (audio that
        failed to decode: NaN/Inf, silent, truncated; each logged once), "path": str,
        "num_processes": int, "per_process": [{"computed", "skipped", "unusable"}, ...]}``:
        the counts summed over every process, and each process's own.

    Raises:
        ValueError: no cache dir, or context ``crop`` with ``crop_starts: frames`` (its
            entries depend on the random crops of training, so it can only be filled lazily).
        TypeError: a split whose dataset has no ``full_waveform`` (a streaming dataset).
    """
    from .interrupts import note

    counts: dict[str, int] = {}  # this process's, for the line of an interrupt
    with note(lambda: _interrupt_note(cfg, counts)):
        return _build_cache(cfg, splits, limit, counts)


def _interrupt_note(cfg, counts: dict[str, int]) -> str:
    """What an interrupted ``cache-teacher`` says (:func:`robustdistill.interrupts.note`): the
    entries this process wrote, and that the same command builds only the rest."""
    from .processes import launched_processes

    whose = " by process 0" if launched_processes() > 1 else ""  # the one that prints
    written = (f"after {counts['computed']} new entries{whose} ({counts['skipped']} were "
               "there)" if counts else "while starting")
    return (f"{written}; every entry complete in {cfg.teacher_cache.dir} stays (each is "
            "written whole): the same command builds the rest")


def _build_cache(cfg, splits: Sequence[str], limit: int | None,
                 counts: dict[str, int]) -> dict:
    """:func:`build_cache`; ``counts`` holds this process's entries computed and skipped so
    far."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from .data import build_datasets
    from .nonfinite import any_process
    from .objectives import build_objective
    from .teachers import load_teacher, prepare_teacher

    tc = cfg.teacher_cache
    if not tc.dir:
        raise ValueError("teacher_cache.dir is not set: nowhere to build the cache")
    if tc.context == "crop" and tc.crop_starts != "chunks":
        raise ValueError("teacher_cache.context crop with crop_starts frames is filled lazily "
                         "during training (its entries are random crops); prebuild context "
                         "utterance, or context crop with crop_starts chunks")
    # the run's own precision: one process may build the cache, then train (accelerate keeps
    # one state per process and refuses a second Accelerator with other settings)
    acc = Accelerator(cpu=cfg.training.cpu, mixed_precision=cfg.training.mixed_precision)
    with acc.main_process_first():  # make_teacher writes it, as distill does, on rank 0 first
        prepare_teacher(cfg.teacher, cfg.make_teacher)
    teacher = load_teacher(cfg)  # the run's teacher, Whisper frame placement included
    teacher.to(acc.device)
    layers = tc.layers
    if layers is None:
        # Only the teacher layers they read matter here; student widths are placeholders.
        objectives = [build_objective(name, teacher_hidden_size=teacher.hidden_size,
                                      teacher_num_layers=teacher.num_layers,
                                      student_hidden_size=teacher.hidden_size,
                                      student_conv_dim=teacher.conv_dim or 512, **options)
                      for name, options in cfg.objectives.items()]
        layers = cached_layers_of(objectives)
    cache = TeacherFeatureCache(tc.dir, teacher, layers, context=tc.context, dtype=tc.dtype,
                                missing="compute", crop_starts=tc.crop_starts,
                                max_utterance_s=tc.max_utterance_s)
    train_set, valid_set = build_datasets(cfg.data, cfg.seed)
    datasets = {"train": train_set, "validation": valid_set}
    computed = skipped = unusable = 0
    # A resumed build on several processes finds what is left first (a decode per item); one
    # process, or an empty cache, has an even share by position already. Agreed before any
    # process writes an entry (a collective: the first pass gathers).
    counts.update(computed=0, skipped=0)  # started: the teacher is loaded
    resumed = acc.num_processes > 1 and any_process(
        acc, next(cache.path.glob("*/*.safetensors"), None) is not None)
    for split in splits:
        dataset = datasets[split]
        if not hasattr(dataset, "full_waveform"):
            raise TypeError(f"{split}: {type(dataset).__name__} cannot be cached ahead "
                            "(no full_waveform: a streaming dataset?)")
        cache.check_utterance_lengths(dataset)
        count = len(dataset) if limit is None else min(limit, len(dataset))
        chunk = cache.chunk_samples(dataset) if tc.context == "crop" else None
        mine = range(acc.process_index, count, acc.num_processes)
        if resumed:
            mine, found, bad = _left_to_build(cache, dataset, mine, chunk, acc)
            skipped, unusable = skipped + found, unusable + bad
        bar = tqdm(mine, desc=f"cache-teacher {split}", disable=not acc.is_main_process)
        for position in bar:
            if (waveform := _whole_utterance(dataset, position)) is None:
                unusable += 1
                continue
            if tc.context == "crop":  # every chunk a training or validation crop can be
                made, total = cache.ensure_chunks(content_key(waveform), waveform, chunk)
                computed, skipped = computed + made, skipped + total - made
            elif cache.ensure(content_key(waveform), lambda w=waveform: w):
                computed += 1
            else:
                skipped += 1
            bar.set_postfix(computed=computed, skipped=skipped)
            counts.update(computed=computed, skipped=skipped)
    acc.wait_for_everyone()
    per_process = gather_object([{"computed": computed, "skipped": skipped,
                                  "unusable": unusable}])
    totals = {key: sum(p[key] for p in per_process) for key in per_process[0]}
    if acc.is_main_process:
        logger.info("teacher cache %s: %d computed, %d already there, %d unusable audio "
                    "(%d process(es))", cache.path, totals["computed"], totals["skipped"],
                    totals["unusable"], acc.num_processes)
    if acc.num_processes > 1:  # a rank exiting with its gloo process group alive can abort
        finish_processes(acc)  # ("terminate called without an active exception", CI 12-07)
    return {**totals, "path": str(cache.path), "num_processes": acc.num_processes,
            "per_process": per_process}


def main(argv: list[str]) -> int:
    """``robustdistill cache-teacher --config RECIPE [--section.key value ...]``.

    Fills ``teacher_cache.dir`` for the recipe's teacher, layers and data (both splits by
    default). Several processes: ``accelerate launch -m robustdistill.cli cache-teacher ...``.
    """
    from .config import ConfigError, DistillConfig, load_config
    from .config_reference import config_reference

    parser = argparse.ArgumentParser(
        prog="robustdistill cache-teacher", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Precompute the teacher's target layers into teacher_cache.dir (give it as "
                    "--teacher_cache.dir DIR). Every key of the distillation recipe can be "
                    "overridden as --section.key value; the keys, their types and defaults:",
        epilog=config_reference(DistillConfig))
    parser.add_argument("--config", help="distillation YAML recipe (teacher, data, objectives)")
    parser.add_argument("--splits", nargs="+", default=["train", "validation"],
                        choices=["train", "validation"],
                        help="which splits to cache (default: both)")
    parser.add_argument("--limit", type=int, default=None, help="at most N items per split")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
        result = build_cache(cfg, splits=args.splits, limit=args.limit)
    except (ConfigError, FileNotFoundError, ValueError, TypeError) as err:
        parser.error(str(err))
    if int(os.environ.get("RANK", "0")) == 0:  # one summary, the counts of every process
        print(json.dumps(result))
    return 0
