"""Encoding a run's examples once per (split, condition), kept in memory and on disk.

The upstream is frozen, so each (split, condition) is encoded once and its selected hidden
states are kept (and, with ``disk_cache``, saved under ``OUT/cache/`` under a key of the
upstream, task, split, condition, seed, layers, storage type, corruption folders, batch size
and the examples' keys and audio); training epochs never rerun the upstream.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from robustdistill.files import atomic_path
from robustdistill.messages import first_line
from robustdistill.upstream import Upstream

from .base import EncodedExample, encode_examples, padding_independent
from .conditions import Condition

logger = logging.getLogger(__name__)

__all__ = ["Encoder"]


class Encoder:
    """Makes the examples of a (split, condition) and encodes them once (memory / disk)."""

    def __init__(self, task, upstream, featurizer, corruptor, waveforms, out: Path, options):
        self.task = task
        self.upstream = upstream
        self.featurizer = featurizer
        self.corruptor = corruptor
        self.waveforms = waveforms
        self.cache_dir = out / "cache" if task.config.disk_cache else None
        self.options = options
        self.dtype = getattr(torch, task.config.cache_dtype)
        self.timing: dict[str, float] = {}
        self._upstream_id = _upstream_fingerprint(options.upstream, upstream)
        mode = task.config.encode_padding
        single = mode == "single" or (mode == "auto" and not padding_independent(upstream))
        self.batch_size = 1 if single else task.config.encode_batch_size
        if single and mode == "auto":
            logger.info("upstream features depend on padding (group-norm CNN or no attention "
                        "mask): encoding one utterance at a time")

    def get(self, split: str, condition: Condition) -> list[EncodedExample]:
        """The encoded examples of ``split`` under ``condition``: from ``OUT/cache/`` when a
        readable file of the same examples is there (an unreadable one is logged and written
        again), else encoded now (and saved there with ``disk_cache``)."""
        examples = [
            self.task.make_example(utt, wave, split, condition, self.corruptor)
            for utt, wave in self.waveforms[split]
        ]
        path = self._cache_path(split, condition, examples)
        if path is not None and path.is_file():
            try:
                hidden = torch.load(path, weights_only=True)
            except Exception as err:  # noqa: BLE001 - cut, not a zip, other bytes (KeyError)
                # a cut or damaged file (a copy stopped halfway, a crash before it reached the
                # disk): a cache, so encoded again and written anew, not a failed run
                logger.warning("cached hidden states %s are unreadable (%s: %s): encoding "
                               "again", path, type(err).__name__, first_line(err))
                hidden = []
            if len(hidden) == len(examples):
                logger.info("reusing cached hidden states %s", path)
                return [EncodedExample(e, h) for e, h in zip(examples, hidden, strict=True)]
        tic = time.perf_counter()
        encoded = encode_examples(
            self.upstream, self.featurizer, examples, self.batch_size,
            self.dtype, self.options.device, desc=f"encode {split}/{condition.name}",
        )
        seconds = time.perf_counter() - tic
        self.timing[f"encode_{split}_{condition.name}_s"] = seconds
        self.timing.setdefault("encode_s_per_utterance", seconds / max(1, len(examples)))
        if path is not None:  # atomic: another process may read the cache
            with atomic_path(path) as tmp:
                torch.save([e.hidden for e in encoded], tmp)
        return encoded

    def _cache_path(self, split, condition, examples) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha1()
        rirs = self.options.test_rir_dir
        if self.options.test_rir_channels != "mean":  # "mean" keeps the keys of earlier caches
            rirs = (rirs, self.options.test_rir_channels)
        for part in (
            self._upstream_id, self.task.name, split, condition.name, self.options.seed,
            self.featurizer.layers, self.task.config.cache_dtype,
            self.options.test_noise_dir, rirs, self.batch_size,
        ):
            digest.update(repr(part).encode())
        for e in examples:
            digest.update(e.key.encode())
            digest.update(hashlib.sha1(np.ascontiguousarray(e.waveform).tobytes()).digest())
        return self.cache_dir / f"{split}-{condition.name}-{digest.hexdigest()[:16]}.pt"


def _upstream_fingerprint(name: str, upstream: Upstream) -> str:
    """Identity of an upstream for the cache: its id, config and (for folders) weight files."""
    parts = [str(name), upstream.config.to_json_string()]
    path = Path(name)
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file():
                stat = f.stat()
                parts.append(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()
