"""The teacher's IG maps of the training crops outside training: ``train-speaker cache``
(:func:`fill_cache`: every map into ``ig.cache_dir`` once) and ``train-speaker gap``
(:func:`completeness_by_steps`: the completeness gap ``|delta| / |F(x) - F(baseline)|`` at
several ``n_steps``). The maps themselves are :mod:`.attribution`'s.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from .attribution import AttributionCache, IGSettings, attribute_segments, segment_bounds
from .config import SpeakerKDConfig
from .data import Crop, load_train_crops
from .ge2e import GE2E
from .inputs import load_teacher
from .targets import teacher_targets

__all__ = ["GAP_CROPS", "GAP_STEPS", "completeness_by_steps", "fill_cache", "load_ig_inputs",
           "parse_gap_steps"]

logger = logging.getLogger("robustdistill.speaker")


def load_ig_inputs(cfg: SpeakerKDConfig, crops_per_utterance: int | None = None
                   ) -> tuple[GE2E, list[Crop]]:
    """What ``cache`` and ``gap`` attribute: the teacher (its fingerprint computed once) and
    the training crops.

    Args:
        cfg: the recipe.
        crops_per_utterance: None: ``cfg.data.crops_per_utterance``.

    Raises:
        FileNotFoundError / TeacherLoadError / SpeakerDataError: as :func:`load_teacher` and
            :func:`~.data.load_train_crops`.
    """
    teacher = load_teacher(cfg.teacher)
    teacher.cached_fingerprint = teacher.fingerprint
    per_utterance = (cfg.data.crops_per_utterance if crops_per_utterance is None
                     else crops_per_utterance)
    crops = load_train_crops(cfg.data.train_dir, cfg.data.crop_seconds, per_utterance,
                             min_length_s=cfg.data.min_train_seconds,
                             min_key=cfg.data.min_train_key)
    return teacher, crops


def _attribution_targets(cfg: SpeakerKDConfig, teacher: GE2E, crops: list[Crop]
                         ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``(centroid of each crop's speaker, segment bounds)``: what the maps of ``crops``
    explain (the teacher runs on every crop)."""
    speakers = sorted({c.speaker for c in crops})
    labels = torch.tensor([speakers.index(c.speaker) for c in crops])
    targets = teacher_targets(teacher, crops, labels, len(speakers))
    return targets.centroids[labels], segment_bounds(len(crops[0].audio), cfg.ig.durations)


def fill_cache(cfg: SpeakerKDConfig, batch_size: int = 32,
               inputs: tuple[GE2E, list[Crop]] | None = None) -> dict[str, Any]:
    """Compute (or find) the teacher's map of every segment of every training crop.

    Args:
        inputs: ``(teacher, crops)`` already loaded (:func:`load_ig_inputs`), so that a caller
            can report input errors before any work; ``None`` loads them here.

    Returns:
        ``{"seconds", "hits", "misses", "maps", "relative_gap_mean", "relative_gap_max"}``;
        the relative gap is ``|delta| / |F(x) - F(baseline)|`` (completeness).

    Raises:
        FileNotFoundError / TeacherLoadError / SpeakerDataError: while loading ``inputs``.
    """
    teacher, crops = load_ig_inputs(cfg) if inputs is None else inputs
    centroids, bounds = _attribution_targets(cfg, teacher, crops)
    cache = AttributionCache(cfg.ig.cache_dir)
    gaps, t0 = [], time.perf_counter()
    for i in range(0, len(crops), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(crops)))
        maps = attribute_segments(teacher, [crops[j].audio for j in idx], centroids[idx],
                                  bounds, cfg.ig.settings(), cache)
        gaps += [abs(m.delta) / max(abs(m.score_gap), 1e-12) for row in maps for m in row]
        logger.info("maps of %d / %d crops, %.0f s", int(idx[-1]) + 1, len(crops),
                    time.perf_counter() - t0)
    return {"seconds": time.perf_counter() - t0, "hits": cache.hits, "misses": cache.misses,
            "maps": len(gaps), "relative_gap_mean": float(np.mean(gaps)),
            "relative_gap_max": float(np.max(gaps))}


GAP_STEPS = "4,8,16,32"  # ``gap --steps`` when not given
GAP_CROPS = 4  # ``gap --crops`` when not given


def parse_gap_steps(text: str) -> list[int]:
    """The ``n_steps`` values of ``gap --steps`` (``"4,8,16,32"``), sorted, each once.

    Raises:
        ValueError: no value, or one that is not an integer ``>= 2`` (captum's quadratures
            need two points); the message names ``--steps``.
    """
    try:
        steps = [int(x) for x in text.split(",")]
    except ValueError:
        steps = []
    if not steps or min(steps) < 2:
        raise ValueError(f"--steps must be comma-separated integers >= 2 (IG n_steps), got "
                         f"{text!r}")
    return sorted(set(steps))


def completeness_by_steps(cfg: SpeakerKDConfig, steps: list[int], num_crops: int,
                          inputs: tuple[GE2E, list[Crop]] | None = None
                          ) -> dict[int, dict[str, float]]:
    """Completeness gap ``|delta| / |F(x) - F(baseline)|`` of the maps of the first
    ``num_crops`` training crops (one per utterance; all of them when there are fewer) at each
    ``n_steps`` (no cache): mean and max over segments, and the mean L1 distance of the maps to
    those of the largest ``n_steps``.

    Args:
        steps: the ``n_steps`` values (each ``>= 2``).
        num_crops: how many crops (``>= 1``).
        inputs: ``(teacher, crops)`` already loaded (:func:`load_ig_inputs` with one crop per
            utterance); ``None`` loads them here.

    Raises:
        ValueError: no ``steps``, one below 2, or ``num_crops < 1`` (before any loading).
        FileNotFoundError / TeacherLoadError / SpeakerDataError: while loading ``inputs``.
    """
    if not steps or min(steps) < 2:
        raise ValueError(f"steps must be IG n_steps values >= 2, got {steps}")
    if num_crops < 1:
        raise ValueError(f"num_crops must be >= 1, got {num_crops}")
    teacher, crops = load_ig_inputs(cfg, 1) if inputs is None else inputs
    crops = crops[:num_crops]
    centroids, bounds = _attribution_targets(cfg, teacher, crops)
    maps, out = {}, {}
    for n in sorted(steps):
        settings = IGSettings(n, cfg.ig.baseline, cfg.ig.noise_dbfs, cfg.ig.method,
                              cfg.ig.internal_batch_size)
        t0 = time.perf_counter()
        rows = attribute_segments(teacher, [c.audio for c in crops], centroids, bounds,
                                  settings, AttributionCache(None))
        gaps = [abs(m.delta) / max(abs(m.score_gap), 1e-12) for row in rows for m in row]
        maps[n] = [m.map for row in rows for m in row]
        out[n] = {"relative_gap_mean": float(np.mean(gaps)),
                  "relative_gap_max": float(np.max(gaps)),
                  "seconds_per_crop": (time.perf_counter() - t0) / len(crops)}
    ref = maps[max(steps)]
    for n in out:
        out[n]["map_l1_to_max_steps"] = float(np.mean([np.abs(a - b).sum()
                                                       for a, b in zip(maps[n], ref, strict=True)]))
    return out
