"""Intra/inter-set KD with time-frequency calibration (I2RF-TFCKD).

"I2RF-TFCKD: Intra-Inter Representation Fusion with Time-Frequency Calibration Knowledge
Distillation for Speech Enhancement", Cheng, Liang, Ni, Xu, Li, Zhou, Liu, Schuller and Hao,
arXiv 2506.13127. Specification: ``objectives.md`` section 5.

- Correlated sets: teacher layers and student layers are grouped into the same number of
  ordered sets (default: contiguous, early/middle/late).
- Intra-set: every teacher layer of a set is paired with every student layer of the set
  (student features first projected to the teacher's width). For each pair, a *time profile*
  (features averaged over every non-time axis, length ``T``) and a *frequency profile*
  (averaged over real frames, and channels, length ``D`` or ``F``) of both models give
  ``d_time`` and ``d_freq`` (mean squared difference of the profiles by default) and the
  similarities ``s_time``, ``s_freq`` (cosine of the profiles). Calibration weights are a
  softmax over the set's pairs, ``w_time = softmax(s_time / tau)``,
  ``w_freq = softmax(s_freq / tau)``, and they cross-weight:
  ``L_set = sum_pairs (w_freq * d_time + w_time * d_freq)``.
- Inter-set: each set is fused into one representative feature by residual fusion (the set's
  last layer plus the mean of its earlier, projected, layers); the fused student features and
  the fused teacher features form one more set, scored with the same calibrated loss.
- Total: ``intra_weight * sum_sets L_set + inter_weight * L_fused``.

Choices the paper leaves open (documented options): the distance (``"mse"``, option
``"l1"``), the softmax temperature (1), and the calibration weights are treated as constants
(``detach_weights=True``: the student cannot lower the loss by moving the weights).

Tensor legend: ``B`` batch, ``T`` frames, ``D`` width, ``C`` channels, ``F`` frequency bins;
every feature of one set loss has the same shape, ``(B, T, D)`` or ``(B, C, T, F)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    DistillationInputs,
    LossTerm,
    Objective,
    check_binary_mask,
    register_objective,
)

__all__ = ["TFCalibratedKD", "calibrated_set_loss", "contiguous_sets", "frequency_profile",
           "residual_fusion", "tfckd_loss", "time_profile"]


def _mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Float ``(B, T)`` mask for ``x`` of shape ``(B, T, D)`` or ``(B, C, T, F)``."""
    if x.dim() not in (3, 4):
        raise ValueError(f"features must be (B, T, D) or (B, C, T, F), got {tuple(x.shape)}")
    batch, frames = x.shape[0], x.shape[-2]
    if mask is None:
        return torch.ones(batch, frames, device=x.device)
    if tuple(mask.shape) != (batch, frames):
        raise ValueError(f"mask must be (B, T) = {(batch, frames)}, got {tuple(mask.shape)}")
    check_binary_mask(mask, "mask")
    mask = mask.to(device=x.device, dtype=torch.float32)
    if bool((mask.sum(dim=1) == 0).any()):
        raise ValueError("mask has an utterance with no real frame")
    return mask


def time_profile(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over every axis but batch and time; padded frames set to 0.

    Args:
        x: ``(B, T, D)`` or ``(B, C, T, F)``.
        mask: ``(B, T)``, True on real frames (None: all real).

    Returns:
        ``(B, T)`` float32.
    """
    m = _mask(mask, x)
    x = x.float()
    profile = x.mean(dim=-1) if x.dim() == 3 else x.mean(dim=(1, 3))
    return profile * m


def frequency_profile(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over real frames (and channels): the feature / frequency profile.

    Args:
        x: ``(B, T, D)`` or ``(B, C, T, F)``.
        mask: ``(B, T)``, True on real frames (None: all real).

    Returns:
        ``(B, D)`` or ``(B, F)`` float32.
    """
    m = _mask(mask, x)
    x = x.float()
    if x.dim() == 4:
        x = x.mean(dim=1)
    return (x * m[:, :, None]).sum(dim=1) / m.sum(dim=1, keepdim=True)


def _distance(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None,
              kind: str) -> torch.Tensor:
    """Mean over the last axis (only where ``weights`` is 1) of the squared / absolute gap."""
    gap = (a - b).pow(2) if kind == "mse" else (a - b).abs()
    if weights is None:
        return gap.mean(dim=-1)
    return (gap * weights).sum(dim=-1) / weights.sum(dim=-1)


def calibrated_set_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor],
                        mask: torch.Tensor | None = None, *, distance: str = "mse",
                        temperature: float = 1.0, detach_weights: bool = True,
                        return_weights: bool = False):
    """Time-frequency cross-calibrated loss of one correlated set, per utterance.

    Pairs: every ``(teacher i, student j)``, ``P = len(teachers) * len(students)``, ordered
    teacher-major. For pair ``p`` of utterance ``b``:
    ``d_time = dist(tp(S_j), tp(T_i))`` over real frames, ``d_freq = dist(fp(S_j), fp(T_i))``,
    ``s_time = cos(tp(S_j), tp(T_i))``, ``s_freq = cos(fp(S_j), fp(T_i))`` (``tp``, ``fp`` the
    time and frequency profiles); ``w_time = softmax_p(s_time / tau)``,
    ``w_freq = softmax_p(s_freq / tau)``; ``L_b = sum_p (w_freq d_time + w_time d_freq)``.

    Args:
        students: student features, each the same shape as every teacher feature
            (``(B, T, D)`` or ``(B, C, T, F)``; project first when widths differ).
        teachers: teacher features (detached).
        mask: ``(B, T)``, True on real frames; None means all real.
        distance: ``"mse"`` (default) or ``"l1"``, a mean over the profile's real entries.
        temperature: softmax temperature ``tau > 0`` (default 1).
        detach_weights: treat the calibration weights as constants (default True).
        return_weights: also return ``(w_time, w_freq)``, each ``(B, P)``.

    Returns:
        ``(B,)`` float32 losses (and the weights when asked).

    Raises:
        ValueError: an empty side, features of different shapes, an unknown distance, a
            temperature <= 0, or a bad mask.
    """
    if not students or not teachers:
        raise ValueError("a correlated set needs at least one teacher and one student feature")
    if distance not in ("mse", "l1"):
        raise ValueError(f"distance must be 'mse' or 'l1', got {distance!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    shape = teachers[0].shape
    for x in (*students, *teachers):
        if x.shape != shape:
            raise ValueError(f"every feature of a set must have shape {tuple(shape)}, got "
                             f"{tuple(x.shape)} (project the student to the teacher's width)")
    m = _mask(mask, teachers[0])
    s_prof = [(time_profile(s, m), frequency_profile(s, m)) for s in students]
    t_prof = [(time_profile(t.detach(), m), frequency_profile(t.detach(), m)) for t in teachers]
    d_time, d_freq, s_time, s_freq = [], [], [], []
    for t_time, t_freq in t_prof:
        for st_time, st_freq in s_prof:
            d_time.append(_distance(st_time, t_time, m, distance))
            d_freq.append(_distance(st_freq, t_freq, None, distance))
            s_time.append(F.cosine_similarity(st_time, t_time, dim=-1, eps=1e-8))
            s_freq.append(F.cosine_similarity(st_freq, t_freq, dim=-1, eps=1e-8))
    d_time, d_freq = torch.stack(d_time, dim=1), torch.stack(d_freq, dim=1)
    s_time, s_freq = torch.stack(s_time, dim=1), torch.stack(s_freq, dim=1)
    if detach_weights:
        s_time, s_freq = s_time.detach(), s_freq.detach()
    w_time = torch.softmax(s_time / temperature, dim=1)
    w_freq = torch.softmax(s_freq / temperature, dim=1)
    loss = (w_freq * d_time + w_time * d_freq).sum(dim=1)
    return (loss, (w_time, w_freq)) if return_weights else loss


def residual_fusion(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """One representative feature of a set: ``last + mean(earlier)`` (``last`` alone when the
    set has one feature).

    Args:
        features: the set's features in order, all the same shape.

    Returns:
        A tensor of that shape.

    Raises:
        ValueError: an empty set or shapes that differ.
    """
    if not features:
        raise ValueError("residual_fusion needs at least one feature")
    if any(x.shape != features[0].shape for x in features):
        raise ValueError("residual_fusion: every feature of a set must have the same shape")
    if len(features) == 1:
        return features[0]
    return features[-1] + torch.stack(list(features[:-1])).mean(dim=0)


def tfckd_loss(student_sets: Sequence[Sequence[torch.Tensor]],
               teacher_sets: Sequence[Sequence[torch.Tensor]],
               mask: torch.Tensor | None = None, *, intra_weight: float = 1.0,
               inter_weight: float = 1.0, **options) -> torch.Tensor:
    """I2RF-TFCKD total: ``intra_weight * sum_k L(S_k, T_k) + inter_weight * L(fused S, fused T)``,
    batch mean.

    Args:
        student_sets: ``K`` lists of student features (projected to the teacher's shape).
        teacher_sets: ``K`` lists of teacher features.
        mask: ``(B, T)``, True on real frames.
        intra_weight, inter_weight: term weights (default 1 each).
        **options: ``distance``, ``temperature``, ``detach_weights`` of
            :func:`calibrated_set_loss`.

    Returns:
        Scalar float32.

    Raises:
        ValueError: different numbers of sets, a set that is a tensor rather than a list of
            tensors (e.g. a flat list of features instead of a list of sets: wrap it,
            ``[features]``, for one set), or see :func:`calibrated_set_loss`.

    Example (speech-enhancement activations ``(B, C, T, F)``, one 1x1 conv per student
    layer mapping its channels to the teacher's)::

        loss = tfckd_loss([[p1(s1), p2(s2)], [p3(s3)]], [[t1, t2], [t3, t4]], mask)
    """
    if len(student_sets) != len(teacher_sets) or not student_sets:
        raise ValueError(f"need the same non-zero number of student and teacher sets, got "
                         f"{len(student_sets)} and {len(teacher_sets)}")
    for side, sets in (("student_sets", student_sets), ("teacher_sets", teacher_sets)):
        if isinstance(sets, torch.Tensor) or any(isinstance(x, torch.Tensor) for x in sets):
            raise ValueError(f"{side} must be a list of sets, each a list of tensors, got a "
                             f"tensor where a set belongs (for one set pass [features])")
    intra = sum(calibrated_set_loss(s, t, mask, **options)
                for s, t in zip(student_sets, teacher_sets, strict=True))
    fused_s = [residual_fusion(s) for s in student_sets]
    fused_t = [residual_fusion([t.detach() for t in ts]) for ts in teacher_sets]
    inter = calibrated_set_loss(fused_s, fused_t, mask, **options)
    return (intra_weight * intra + inter_weight * inter).mean()


def contiguous_sets(layers: Sequence[int], num_sets: int) -> list[list[int]]:
    """Split ``layers`` in order into ``num_sets`` contiguous sets, sizes differing by at most
    one (earlier sets take the extra layers): ``[1, 2, 3, 4], 3 -> [[1, 2], [3], [4]]``.

    Raises:
        ValueError: ``num_sets`` below 1 or above ``len(layers)``.
    """
    if not 1 <= num_sets <= len(layers):
        raise ValueError(f"num_sets must lie in [1, {len(layers)}], got {num_sets}")
    size, extra = divmod(len(layers), num_sets)
    sets, start = [], 0
    for k in range(num_sets):
        stop = start + size + (1 if k < extra else 0)
        sets.append(list(layers[start:stop]))
        start = stop
    return sets


@register_objective("tfckd")
class TFCalibratedKD(Objective):
    """I2RF-TFCKD on SSL hidden states ``(B, T, D)`` (arXiv 2506.13127).

    Paper: "I2RF-TFCKD: Intra-Inter Representation Fusion with Time-Frequency Calibration
    Knowledge Distillation for Speech Enhancement" (arXiv 2506.13127).

    Each selected student layer has its own ``Linear(D_s, D_t)`` projection; teacher and
    student layers are split into ``num_sets`` contiguous sets (:func:`contiguous_sets`), or
    given explicitly. Terms, summed over utterances (unit ``"utterances"``): ``set{k}`` for
    each set's calibrated loss (weight ``intra_weight``) and ``inter`` for the fused set
    (weight ``inter_weight``); see the module docstring for the formulas. Frames are the
    common real frames of teacher and student.

    Args:
        teacher_layers: teacher ``hidden_states`` indices (default ``1 .. L_t``).
        student_layers: student ``hidden_states`` indices (default ``[-2, -1]``).
        num_sets: number of contiguous sets (default ``min(3, len(teacher_layers),
            len(student_layers))``); ignored when ``teacher_sets`` / ``student_sets`` are given.
        teacher_sets, student_sets: explicit sets (lists of layer indices), both or neither.
        intra_weight, inter_weight: default 1.
        distance, temperature, detach_weights: see :func:`calibrated_set_loss`.

    Raises:
        ValueError: a teacher layer outside ``[0, L_t]``, one of the explicit sets given
            without the other, an empty ``teacher_layers`` or ``student_layers``, different
            numbers of sets, an empty set, ``num_sets`` outside
            ``[1, min(len(teacher_layers), len(student_layers))]``, or a bad option.
    """

    def __init__(self, *, teacher_hidden_size: int, teacher_num_layers: int,
                 student_hidden_size: int, student_conv_dim: int | None = None,
                 teacher_layers: list[int] | None = None,
                 student_layers: list[int] | None = None, num_sets: int | None = None,
                 teacher_sets: list[list[int]] | None = None,
                 student_sets: list[list[int]] | None = None, intra_weight: float = 1.0,
                 inter_weight: float = 1.0, distance: str = "mse", temperature: float = 1.0,
                 detach_weights: bool = True) -> None:
        super().__init__()
        if (teacher_sets is None) != (student_sets is None):
            raise ValueError("tfckd: give both teacher_sets and student_sets, or neither")
        for name, given in (("teacher_layers", teacher_layers),
                            ("student_layers", student_layers)):
            if given is not None and len(given) == 0:
                raise ValueError(f"tfckd: {name} is empty; leave it out for the default")
        if teacher_sets is None:
            t_layers = list(teacher_layers or range(1, teacher_num_layers + 1))
            s_layers = list(student_layers or [-2, -1])
            k = num_sets if num_sets is not None else min(3, len(t_layers), len(s_layers))
            teacher_sets = contiguous_sets(t_layers, k)
            student_sets = contiguous_sets(s_layers, k)
        teacher_sets = [list(map(int, s)) for s in teacher_sets]
        student_sets = [list(map(int, s)) for s in student_sets]
        if len(teacher_sets) != len(student_sets) or not teacher_sets:
            raise ValueError(f"tfckd: {len(teacher_sets)} teacher sets but {len(student_sets)} "
                             "student sets")
        if any(not s for s in (*teacher_sets, *student_sets)):
            raise ValueError("tfckd: every set needs at least one layer")
        bad = [x for s in teacher_sets for x in s if not 0 <= x <= teacher_num_layers]
        if bad:
            raise ValueError(f"tfckd: teacher layers {bad} outside [0, {teacher_num_layers}]")
        if distance not in ("mse", "l1") or temperature <= 0:
            raise ValueError(f"tfckd: distance must be mse or l1 and temperature > 0, got "
                             f"{distance!r}, {temperature}")
        self.teacher_sets, self.student_sets = teacher_sets, student_sets
        #: Teacher layers read (what a teacher cache stores).
        self.teacher_layers = sorted({x for s in teacher_sets for x in s})
        self.student_layers = sorted({x for s in student_sets for x in s})
        self.projections = nn.ModuleDict({
            str(layer): nn.Linear(student_hidden_size, teacher_hidden_size)
            for layer in self.student_layers})
        self.intra_weight, self.inter_weight = float(intra_weight), float(inter_weight)
        self.options = {"distance": distance, "temperature": float(temperature),
                        "detach_weights": bool(detach_weights)}
        self._dims = (student_hidden_size, teacher_hidden_size)

    def head_config(self) -> dict:
        """The projections' layout: teacher and student sets, ``D_s`` and ``D_t``."""
        return {"teacher_sets": self.teacher_sets, "student_sets": self.student_sets,
                "student_hidden_size": self._dims[0], "teacher_hidden_size": self._dims[1]}

    def student_layers_read(self) -> list[int]:
        """Every student layer of the sets, sorted, each once."""
        return list(self.student_layers)

    def forward(self, inputs: DistillationInputs) -> dict[str, LossTerm]:
        """``set{k}`` and ``inter`` terms, summed over utterances."""
        frames = inputs.num_frames
        mask = inputs.frame_mask
        proj = {layer: self.projections[str(layer)](
            inputs.student.hidden_states[layer][:, :frames]) for layer in self.student_layers}
        s_sets = [[proj[x] for x in s] for s in self.student_sets]
        t_sets = [[inputs.teacher.hidden_states[x][:, :frames].detach() for x in s]
                  for s in self.teacher_sets]
        terms = {}
        for k, (s, t) in enumerate(zip(s_sets, t_sets, strict=True)):
            per_utt = calibrated_set_loss(s, [x.to(s[0].dtype) for x in t], mask, **self.options)
            terms[f"set{k}"] = LossTerm(per_utt.sum(), "utterances", self.intra_weight)
        fused_s = [residual_fusion(s) for s in s_sets]
        fused_t = [residual_fusion(t).to(fused_s[0].dtype) for t in t_sets]
        inter = calibrated_set_loss(fused_s, fused_t, mask, **self.options)
        terms["inter"] = LossTerm(inter.sum(), "utterances", self.inter_weight)
        return terms
