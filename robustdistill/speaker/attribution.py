"""Integrated-Gradients input-sensitivity maps of a frozen speaker teacher, with a disk cache.

IML-KD ("Integrated Multi-Level Knowledge Distillation for Enhanced Speaker Verification",
arXiv:2409.09389; ``../shared/docs/objectives.md`` section 6): for segments of several durations
(default 1 s, 2 s and the whole crop) the teacher's target-speaker score is attributed to its
input frames with Integrated Gradients ("Axiomatic Attribution for Deep Networks", Sundararajan
et al., arXiv:1703.01365), computed by ``captum.attr.IntegratedGradients`` (Gauss-Legendre
steps, captum's default). For GE2E the input is the mel power spectrogram and the score is the
cosine between the segment's embedding and the target speaker's centroid. The attributions are
pooled to a frame-level map: absolute value, summed over mel bands, normalised to sum to one per
segment.

Completeness (IG's axiom): ``sum(attributions) = F(x) - F(baseline)``; captum's convergence
delta is the gap, reported per map so ``n_steps`` can be checked (it shrinks as ``n_steps``
grows).

The teacher is frozen, so a map depends only on (segment audio, teacher weights, IG settings):
:class:`AttributionCache` stores each map once on disk under a SHA-256 of exactly those, and
counts hits and misses.

Legend: ``S`` segments, ``T`` teacher frames of a segment, ``F`` mel bands, ``E`` embedding width.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..files import atomic_path

logger = logging.getLogger("robustdistill.speaker")

__all__ = [
    "IG_METHODS",
    "AttributionCache",
    "IGSettings",
    "SegmentMap",
    "attribute_segments",
    "frame_map",
    "integrated_gradients",
    "segment_bounds",
]


#: captum's Integrated-Gradients quadratures (``captum.attr.IntegratedGradients``'s ``method``).
IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
              "riemann_trapezoid")


@dataclass(frozen=True)
class IGSettings:
    """Integrated-Gradients settings (part of every cache key).

    Attributes:
        n_steps: integration steps (the paper's default 32).
        baseline: ``"zero"`` (all-zero input) or ``"noise"`` (the mel spectrogram of seeded
            white noise at ``noise_dbfs``; the seed comes from the segment's audio, so a map is
            reproducible).
        noise_dbfs: level of the noise baseline, dB full scale.
        method: captum's quadrature (``"gausslegendre"``, ``"riemann_trapezoid"``, ...).
        internal_batch_size: captum's chunking of the ``n_steps x S`` forward passes (memory).

    Raises:
        ValueError: (on construction) ``n_steps`` below 2, an unknown ``baseline`` or a
            ``method`` not in :data:`IG_METHODS`.
    """

    n_steps: int = 32
    baseline: str = "zero"
    noise_dbfs: float = -60.0
    method: str = "gausslegendre"
    internal_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.n_steps < 2:
            raise ValueError(f"n_steps must be >= 2 (captum's quadratures), got {self.n_steps}")
        if self.baseline not in ("zero", "noise"):
            raise ValueError(f"baseline must be 'zero' or 'noise', got {self.baseline!r}")
        if self.method not in IG_METHODS:  # captum would only assert at the first map
            raise ValueError(f"method must be one of {IG_METHODS} (captum's quadratures), got "
                             f"{self.method!r}")

    def key(self) -> dict:
        """The settings that change a map (``internal_batch_size`` does not)."""
        out = {"n_steps": self.n_steps, "baseline": self.baseline, "method": self.method}
        if self.baseline == "noise":
            # "per_segment": each segment's noise seeded from its own key (maps cached before
            # that, seeded per captum call, get other keys and are not served)
            out.update(noise_dbfs=self.noise_dbfs, noise_seed="per_segment")
        return out


def segment_bounds(num_samples: int, durations: Sequence[float | None], sample_rate: int = 16_000
                   ) -> list[tuple[int, int]]:
    """Consecutive non-overlapping segments of each duration tiling a crop.

    Args:
        num_samples: the crop's length ``N``.
        durations: seconds; ``None`` is the whole crop. A duration longer than the crop gives
            the whole crop; a remainder shorter than a duration is dropped (except for the
            first segment).
        sample_rate: Hz.

    Returns:
        distinct ``(start, stop)`` sample ranges, in the order of ``durations`` (duplicates,
        e.g. a 2 s segment of a 2 s crop and the whole crop, appear once).

    Raises:
        ValueError: empty crop, a non-positive duration, or one shorter than half a sample
            (it rounds to 0 samples at ``sample_rate``).
    """
    if num_samples < 1:
        raise ValueError(f"a crop needs samples, got {num_samples}")
    out: list[tuple[int, int]] = []
    for d in durations:
        if d is not None and not d > 0:  # also refuses NaN
            raise ValueError(f"segment durations must be positive seconds, got {d}")
        length = num_samples if d is None else min(num_samples, int(round(d * sample_rate)))
        if length < 1:
            raise ValueError(f"a segment of {d} s is shorter than one sample at "
                             f"{sample_rate} Hz (rounds to 0 samples)")
        for start in range(0, num_samples - length + 1, length):
            if (start, start + length) not in out:
                out.append((start, start + length))
    return out


def frame_map(attributions: torch.Tensor) -> torch.Tensor:
    """Pool attributions to a frame-level map: ``|a|`` summed over features, normalised.

    Args:
        attributions: ``(S, T, F)``.

    Returns:
        ``(S, T)``, non-negative, each row summing to one (uniform for an all-zero row).

    Raises:
        ValueError: ``attributions`` not 3-D, or no frame (``T = 0``: no map to normalise).
    """
    if attributions.dim() != 3:
        raise ValueError(f"attributions must be (S, T, F), got {tuple(attributions.shape)}")
    if attributions.shape[1] == 0:
        raise ValueError(f"attributions {tuple(attributions.shape)} have no frame (T = 0)")
    mass = attributions.abs().sum(dim=-1)
    total = mass.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(mass, 1.0 / mass.shape[-1])
    return torch.where(total > 0, mass / total.clamp_min(1e-30), uniform)


def integrated_gradients(forward: Callable[..., torch.Tensor], inputs: torch.Tensor,
                         baselines: torch.Tensor, settings: IGSettings, *extra: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """captum Integrated Gradients of a scalar-per-example function.

    Args:
        forward: ``(S, ...), *extra -> (S,)`` scores.
        inputs / baselines: ``(S, ...)`` of the same shape.
        settings: ``n_steps``, ``method`` and ``internal_batch_size`` are used (the
            baseline is the caller's ``baselines``).
        extra: per-example tensors ``(S, ...)`` passed to ``forward`` unchanged (captum's
            ``additional_forward_args``, repeated along the integration steps).

    Returns:
        ``(attributions (S, ...), delta (S,))``: ``delta = sum(attr) - (F(x) - F(baseline))``,
        the completeness gap.

    Raises:
        ValueError: ``inputs`` and ``baselines`` differ in shape.
    """
    from captum.attr import IntegratedGradients

    if inputs.shape != baselines.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and baselines {tuple(baselines.shape)} "
                         "differ in shape")
    ig = IntegratedGradients(forward)
    with torch.enable_grad():
        attr, delta = ig.attribute(inputs, baselines=baselines, n_steps=settings.n_steps,
                                   additional_forward_args=extra or None,
                                   method=settings.method,
                                   internal_batch_size=settings.internal_batch_size,
                                   return_convergence_delta=True)
    return attr.detach(), delta.detach()


@dataclass
class SegmentMap:
    """One segment's map.

    Attributes:
        start / stop: sample range in the crop.
        map: ``(T,)`` float32 frame map summing to one.
        delta: completeness gap ``sum(attr) - (F(x) - F(baseline))``.
        score_gap: ``F(x) - F(baseline)`` (to judge ``delta`` relative to it).
    """

    start: int
    stop: int
    map: np.ndarray
    delta: float
    score_gap: float


class AttributionCache:
    """Maps on disk, one ``.npz`` per (segment audio, teacher, IG settings).

    Args:
        root: folder (created); None disables the cache (every lookup misses, nothing stored).

    Attributes:
        hits / misses: lookups served from disk / computed.
    """

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(audio: np.ndarray, start: int, stop: int, teacher: str, settings: IGSettings,
            target: np.ndarray | None = None) -> str:
        """SHA-256 of the segment's samples (float32 bytes), its range, the teacher's
        fingerprint, the IG settings and the scored target (the speaker centroid, float32).

        Args:
            audio: ``(N,)`` the whole crop (16 kHz samples); only ``audio[start:stop]`` is
                hashed.
            start, stop: the segment's sample range.
            teacher: the teacher's fingerprint.
            settings: the IG settings (:meth:`IGSettings.key`).
            target: ``(E,)`` the scored speaker centroid, or None.

        Returns:
            64 hex digits.
        """
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(audio[start:stop], dtype=np.float32).tobytes())
        if target is not None:
            h.update(b"target")
            h.update(np.ascontiguousarray(target, dtype=np.float32).tobytes())
        h.update(json.dumps({"start": start, "stop": stop, "teacher": teacher,
                             **settings.key()}, sort_keys=True).encode())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> SegmentMap | None:
        """The stored map, or None (counted as a miss). An entry that cannot be read (cut
        short, not an ``.npz``, a field missing) is logged with its path and counted as a
        miss: the caller recomputes the map and :meth:`put` replaces the entry."""
        path = self._path(key) if self.root is not None else None
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    item = SegmentMap(int(z["start"]), int(z["stop"]), z["map"].copy(),
                                      float(z["delta"]), float(z["score_gap"]))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                logger.warning("map cache entry %s cannot be read (%s: %s); recomputed",
                               path, type(err).__name__, err)
            else:
                self.hits += 1
                return item
        self.misses += 1
        return None

    def put(self, key: str, item: SegmentMap) -> None:
        """Store atomically (write to a temporary file, then rename)."""
        if self.root is None:
            return
        with atomic_path(self._path(key), suffix=".tmp.npz") as tmp:
            np.savez(tmp, start=item.start, stop=item.stop, map=item.map.astype(np.float32),
                     delta=item.delta, score_gap=item.score_gap)

    @property
    def hit_rate(self) -> float:
        """``hits / (hits + misses)`` (0 before any lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def _noise_baseline(teacher, num_samples: int, seed_keys: Sequence[str], dbfs: float,
                    device: torch.device) -> torch.Tensor:
    """Log-mel frames of white noise at ``dbfs``, one draw per segment.

    Each segment's noise is seeded from that segment's own cache key, so its baseline (and
    hence its map) does not depend on which other segments share the captum call.

    Returns:
        ``(S, ...)`` the teacher's mel frames of ``S = len(seed_keys)`` noises of
        ``num_samples`` samples.
    """
    noise = torch.stack([torch.randn(num_samples,
                                     generator=torch.Generator().manual_seed(int(k[:8], 16)))
                         for k in seed_keys])
    noise = noise / noise.pow(2).mean(-1, keepdim=True).sqrt() * 10.0 ** (dbfs / 20.0)
    return teacher.mel(noise.to(device))


def attribute_segments(teacher, crops: Sequence[np.ndarray], centroids: torch.Tensor,
                       bounds: Sequence[tuple[int, int]], settings: IGSettings,
                       cache: AttributionCache) -> list[list[SegmentMap]]:
    """Frame maps of the teacher's target-speaker score for segments of several crops.

    Args:
        teacher: a frozen :class:`~robustdistill.speaker.ge2e.GE2E` (``mel``, ``embed_mels``,
            ``fingerprint``).
        crops: ``C`` float32 16 kHz crops ``(N_c,)``, as the teacher sees them.
        centroids: ``(C, E)`` each crop's target-speaker centroid; the score of a segment is
            ``cos(e(segment), centroid)``.
        bounds: sample ranges (:func:`segment_bounds`), the same for every crop; each must lie
            inside every crop.
        settings: IG settings.
        cache: looked up first; misses are computed (all segments of equal length in one captum
            call) and stored.

    Returns:
        ``C`` lists of one :class:`SegmentMap` per range, in order.

    Raises:
        ValueError: a range outside a crop, or ``centroids`` not ``(C, E)``.
    """
    if centroids.dim() != 2 or centroids.shape[0] != len(crops):
        raise ValueError(f"need one centroid per crop: {len(crops)} crops, centroids "
                         f"{tuple(centroids.shape)}")
    for audio in crops:
        if any(a < 0 or b > len(audio) or b <= a for a, b in bounds):
            raise ValueError(f"segments {list(bounds)} do not fit a crop of {len(audio)} samples")
    fingerprint = getattr(teacher, "cached_fingerprint", None) or teacher.fingerprint
    targets = F.normalize(centroids.detach().float().cpu(), dim=-1)
    keys = [[cache.key(audio, a, b, fingerprint, settings, targets[c].numpy()) for a, b in bounds]
            for c, audio in enumerate(crops)]
    out = [[cache.get(k) for k in row] for row in keys]
    todo: dict[int, list[tuple[int, int]]] = {}
    for c, row in enumerate(out):
        for i, item in enumerate(row):
            if item is None:
                todo.setdefault(bounds[i][1] - bounds[i][0], []).append((c, i))

    for length, idx in todo.items():
        wav = torch.stack([torch.from_numpy(np.ascontiguousarray(
            crops[c][bounds[i][0]:bounds[i][1]], dtype=np.float32)) for c, i in idx])
        target = targets[[c for c, _ in idx]]

        def score(mels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return (F.normalize(teacher.embed_mels(mels), dim=-1) * target).sum(-1)

        with torch.no_grad():
            mels = teacher.mel(wav)
        if settings.baseline == "zero":
            base = torch.zeros_like(mels)
        else:
            base = _noise_baseline(teacher, length, [keys[c][i] for c, i in idx],
                                   settings.noise_dbfs, mels.device)
        attr, delta = integrated_gradients(score, mels, base, settings, target)
        with torch.no_grad():
            gap = score(mels, target) - score(base, target)
        maps = frame_map(attr)
        for j, (c, i) in enumerate(idx):
            item = SegmentMap(bounds[i][0], bounds[i][1], maps[j].numpy().astype(np.float32),
                              float(delta[j]), float(gap[j]))
            cache.put(keys[c][i], item)
            out[c][i] = item
    return out  # type: ignore[return-value]
