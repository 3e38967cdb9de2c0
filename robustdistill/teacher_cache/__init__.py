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

The package, one job per module; imports flow down this list, never up:

* :mod:`~robustdistill.teacher_cache.settings`: the ``teacher_cache`` config section
  (:class:`TeacherCacheConfig`) and the values its options may take.
* :mod:`~robustdistill.teacher_cache.keys`: what identifies targets: the teacher's
  fingerprint, the cached layers, the format version; an entry's file from its content key.
* :mod:`~robustdistill.teacher_cache.folder`: one spec's folder under the cache root: its
  name (the spec's hash) and manifest, and the refusal of a root that is not a cache root or
  (``missing: error``) holds no folder of this spec.
* :mod:`~robustdistill.teacher_cache.store`: entry files: writing one atomically, reading a
  span of frames, telling a whole entry from a truncated or corrupt one.
* :mod:`~robustdistill.teacher_cache.reader`: :class:`CacheReader`, a batch's targets read in
  the ``DataLoader`` workers.
* :mod:`~robustdistill.teacher_cache.cache`: :class:`TeacherFeatureCache`, the cache a run
  uses: lookups, lazy fill, misses.
* :mod:`~robustdistill.teacher_cache.build`: the ``cache-teacher`` command
  (:func:`build_cache`, :func:`main`).
"""

from __future__ import annotations

from .build import build_cache, main
from .cache import CachedLayers, MissingEntryError, TeacherFeatureCache
from .keys import cached_layers_of, teacher_fingerprint
from .reader import CacheReader
from .settings import TeacherCacheConfig
from .store import UnreadableEntryError

__all__ = ["CacheReader", "CachedLayers", "MissingEntryError", "TeacherCacheConfig",
           "TeacherFeatureCache", "UnreadableEntryError", "build_cache", "cached_layers_of",
           "main", "teacher_fingerprint"]
