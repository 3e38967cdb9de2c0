"""What identifies cached teacher targets: the teacher's fingerprint, the cached layers and the
entry format version (with the context and dtype they make up a cache spec, whose hash names its
folder), and an entry's file from its utterance's content key (and crop, with context
``"crop"``).

Part of :mod:`robustdistill.teacher_cache`, whose docstring describes the layout on disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch

from ..upstream import Upstream

#: Bumped when the entry format changes (part of the spec hash).
FORMAT_VERSION = 1


def entry_file(root: Path, context: str, key: str, start: int = 0,
               length: int | None = None) -> Path:
    """The file of one entry under a spec folder ``root``: ``<kk>/<key>.safetensors`` with
    context ``"utterance"``, ``<kk>/<key>_<start>_<length>.safetensors`` with context ``"crop"``
    (``<kk>``: the content key's first two characters; ``start`` and ``length`` in samples)."""
    name = key if context == "utterance" else f"{key}_{start}_{length}"
    return root / key[:2] / f"{name}.safetensors"


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
