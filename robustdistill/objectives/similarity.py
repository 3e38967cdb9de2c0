"""Fine-grained similarity-preserving knowledge distillation (intra-activation Gram matrices).

"Two-Step Knowledge Distillation for Tiny Speech Enhancement", Daod Nathoo, Kegler and
Stamenovic, arXiv 2309.08144 (building on "Similarity-Preserving Knowledge Distillation",
Tung and Mori, arXiv 1907.09682). Specification: ``objectives.md`` section 3.

Two layers of API:

- :func:`gram_kd_loss` and :func:`gram_matrix`: pure functions on activations, for SSL hidden
  states ``(B, T, D)`` and for task-model activations ``(B, C, T, F)`` (e.g. a speech
  enhancement network's convolutional feature maps);
- :class:`GramKD`: the registry objective ``"gram_kd"`` on teacher/student hidden states.

Tensor legend: ``B`` batch, ``T`` frames, ``D`` features, ``C`` channels, ``F`` frequency bins;
a mask ``(B, T)`` is True (or 1) on real frames and False (0) on padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import (
    DistillationInputs,
    LossTerm,
    Objective,
    check_binary_mask,
    check_no_repeats,
    register_objective,
)

__all__ = ["GRAM_AXES", "GramKD", "gram_kd_loss", "gram_kd_per_utterance", "gram_matrix"]

#: Axes a Gram matrix can be taken along. ``"feature"`` is the last axis of ``(B, T, D)``
#: and ``"frequency"`` the last axis of ``(B, C, T, F)``: the two names are aliases.
GRAM_AXES = ("time", "frequency", "feature", "channel")


def _as_bctf(x: torch.Tensor, name: str) -> torch.Tensor:
    """``(B, T, D)`` -> ``(B, 1, T, D)``; ``(B, C, T, F)`` unchanged; anything else an error."""
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4:
        return x
    raise ValueError(f"{name} must be (B, T, D) or (B, C, T, F), got shape {tuple(x.shape)}")


def _check_mask(mask: torch.Tensor | None, batch: int, frames: int,
                device: torch.device) -> torch.Tensor:
    """The ``(B, T)`` float mask (all ones when ``mask`` is None); validated."""
    if mask is None:
        return torch.ones(batch, frames, device=device)
    if tuple(mask.shape) != (batch, frames):
        raise ValueError(f"mask must be (B, T) = {(batch, frames)}, got {tuple(mask.shape)}")
    check_binary_mask(mask, "mask")
    mask = mask.to(device=device, dtype=torch.float32)
    if bool((mask.sum(dim=1) == 0).any()):
        raise ValueError("mask has an utterance with no real frame; its Gram loss is undefined")
    return mask


def gram_matrix(activation: torch.Tensor, axis: str = "time",
                mask: torch.Tensor | None = None, eps: float = 1e-12,
                center: bool = False) -> torch.Tensor:
    """Row-normalised intra-activation Gram matrix of every sample.

    For axis ``a`` the activation of sample ``b`` is unfolded to ``A`` of shape
    ``(N_a, rest)`` (``N_a`` the length of axis ``a``, ``rest`` the product of the other
    non-batch axes), ``G = A A^T`` of shape ``(N_a, N_a)``, and each row of ``G`` is divided
    by its L2 norm (Tung and Mori's row normalisation; a zero row stays zero). Padded frames
    are zeroed first, so they add nothing to any inner product, and along time their rows
    and columns of ``G`` are zero.

    Args:
        activation: ``(B, T, D)`` or ``(B, C, T, F)``, any float dtype (computed in fp32,
            also under autocast).
        axis: ``"time"`` (``G`` is ``T x T``), ``"feature"`` / ``"frequency"`` (last axis,
            ``D x D`` or ``F x F``) or ``"channel"`` (``C x C``, 4-D activations only).
        mask: ``(B, T)``, True on real frames; None means every frame is real.
        eps: floor of the row norm.
        center: subtract each sample's mean over its real frames first (our option, off by
            default as in the paper): transformer hidden states share a large offset, which
            makes every row of an uncentred time Gram matrix nearly the same.

    Returns:
        ``(B, N_a, N_a)`` float32.

    Raises:
        ValueError: an unknown axis, ``"channel"`` on a 3-D activation, a bad shape or mask.
    """
    if axis not in GRAM_AXES:
        raise ValueError(f"Gram axis must be one of {GRAM_AXES}, got {axis!r}")
    if axis == "channel" and activation.dim() != 4:
        raise ValueError("a channel Gram matrix needs a (B, C, T, F) activation, got "
                         f"shape {tuple(activation.shape)}")
    x = _as_bctf(activation, "activation").float()
    batch, channels, frames, bins = x.shape
    m = _check_mask(mask, batch, frames, x.device)
    x = x * m[:, None, :, None]
    if center:
        mean = x.sum(dim=2, keepdim=True) / m.sum(dim=1)[:, None, None, None]
        x = (x - mean) * m[:, None, :, None]
    if axis == "time":
        unfolded = x.permute(0, 2, 1, 3).reshape(batch, frames, channels * bins)
    elif axis in ("frequency", "feature"):
        unfolded = x.permute(0, 3, 1, 2).reshape(batch, bins, channels * frames)
    else:
        unfolded = x.reshape(batch, channels, frames * bins)
    # float32 also under autocast, which would run the product in bf16 / fp16: rows of an
    # uncentred Gram matrix differ by less than bf16's precision, and A A^T can exceed fp16's
    # range (65504)
    with torch.autocast(x.device.type, enabled=False):
        gram = unfolded @ unfolded.transpose(1, 2)
        return F.normalize(gram, p=2.0, dim=-1, eps=eps)


def _axis_size(x: torch.Tensor, axis: str) -> int:
    if axis == "time":
        return x.shape[2]
    if axis == "channel":
        return x.shape[1]
    return x.shape[3]


def gram_kd_per_utterance(student: torch.Tensor, teacher: torch.Tensor,
                          mask: torch.Tensor | None = None,
                          axes: Sequence[str] = ("time",), center: bool = False) -> torch.Tensor:
    """Fine-grained similarity-preserving KD loss of each utterance.

    ``L_b = sum_{a in axes} || G_a(S_b) - G_a(T_b) ||_F^2 / N_{a,b}^2`` with ``G_a`` the
    row-normalised Gram matrix of :func:`gram_matrix`, ``N_{time,b}`` the real frames of
    utterance ``b`` (so padding changes nothing) and ``N_a`` the axis length otherwise.

    Widths may differ along the axes the Gram matrix does not keep: along time, teacher and
    student need the same ``T`` but not the same ``D`` (or ``C``, ``F``).

    Args:
        student: ``(B, T, D_s)`` or ``(B, C_s, T, F_s)``; gradients flow into it.
        teacher: same rank as ``student``, ``(B, T, D_t)`` or ``(B, C_t, T, F_t)``; it is
            detached (a target, never trained).
        mask: ``(B, T)``, True on real frames; None means every frame is real.
        axes: non-empty subset of ``GRAM_AXES``; each axis's term is summed.
        center: centre both activations over their real frames first (see
            :func:`gram_matrix`; default False, as in the paper).

    Returns:
        ``(B,)`` float32 losses.

    Raises:
        ValueError: empty or unknown axes; ranks, batch sizes or frame counts that differ; an
            axis whose length differs between teacher and student (e.g. ``"feature"`` with
            ``D_s != D_t``); a mask of the wrong shape or with an utterance of no real frame.
    """
    if isinstance(axes, str):  # "time" would be read as the axes "t", "i", "m", "e"
        raise ValueError(f"axes must be a sequence of axis names, e.g. ({axes!r},), not a string")
    if not axes:
        raise ValueError("gram_kd needs at least one axis")
    if student.dim() != teacher.dim():
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         "must have the same rank")
    s, t = _as_bctf(student, "student"), _as_bctf(teacher.detach(), "teacher")
    if s.shape[0] != t.shape[0] or s.shape[2] != t.shape[2]:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         "must share the batch and frame (T) axes")
    m = _check_mask(mask, s.shape[0], s.shape[2], s.device)
    real = m.sum(dim=1)
    total = torch.zeros(s.shape[0], device=s.device)
    for axis in axes:
        if axis not in GRAM_AXES:
            raise ValueError(f"Gram axis must be one of {GRAM_AXES}, got {axis!r}")
        size_s, size_t = _axis_size(s, axis), _axis_size(t, axis)
        if size_s != size_t:
            raise ValueError(f"Gram axis {axis!r}: student length {size_s} != teacher length "
                             f"{size_t}; only the time axis allows different widths")
        diff = (gram_matrix(student, axis, m, center=center)
                - gram_matrix(teacher.detach(), axis, m, center=center))
        norm = real**2 if axis == "time" else torch.full_like(real, float(size_s) ** 2)
        total = total + diff.pow(2).sum(dim=(1, 2)) / norm
    return total


def gram_kd_loss(student: torch.Tensor, teacher: torch.Tensor,
                 mask: torch.Tensor | None = None,
                 axes: Sequence[str] = ("time",), center: bool = False) -> torch.Tensor:
    """Batch mean of :func:`gram_kd_per_utterance` (the paper's loss for one layer pair).

    Args: see :func:`gram_kd_per_utterance`.

    Returns:
        Scalar float32 tensor.

    Raises:
        ValueError: an empty batch (``B = 0``: its mean would be NaN), or see
            :func:`gram_kd_per_utterance`.

    Example (an NSNet2-like teacher and a narrower student)::

        loss = gram_kd_loss(student_act, teacher_act, mask, axes=("time", "frequency"))
    """
    losses = gram_kd_per_utterance(student, teacher, mask, axes, center)
    if losses.numel() == 0:
        raise ValueError(f"gram_kd_loss of an empty batch: student {tuple(student.shape)} "
                         f"and teacher {tuple(teacher.shape)} have B = 0")
    return losses.mean()


def _pairs(layer_pairs, teacher_num_layers: int) -> list[tuple[int, int]]:
    if layer_pairs is None:
        return [(teacher_num_layers, -1)]
    pairs = []
    for pair in layer_pairs:
        if len(pair) != 2:
            raise ValueError(f"gram_kd.layer_pairs items are [teacher_layer, student_layer], "
                             f"got {pair!r}")
        teacher_layer, student_layer = int(pair[0]), int(pair[1])
        if not 0 <= teacher_layer <= teacher_num_layers:
            raise ValueError(f"gram_kd.layer_pairs: teacher layer {teacher_layer} outside "
                             f"[0, {teacher_num_layers}]")
        pairs.append((teacher_layer, student_layer))
    if not pairs:
        raise ValueError("gram_kd.layer_pairs must name at least one pair")
    check_no_repeats([list(pair) for pair in pairs], "gram_kd.layer_pairs")
    return pairs


@register_objective("gram_kd")
class GramKD(Objective):
    """Fine-grained similarity-preserving KD between teacher and student hidden states.

    Paper: "Two-Step Knowledge Distillation for Tiny Speech Enhancement" (arXiv 2309.08144),
    building on "Similarity-Preserving Knowledge Distillation" (arXiv 1907.09682).

    For each configured pair ``(l, k)`` and each utterance ``b``:
    ``L_{l,k,b} = sum_a || G_a(H_s[k][b]) - G_a(H_t[l][b]) ||_F^2 / N_a^2`` (see
    :func:`gram_kd_per_utterance`) over the common real frames of teacher and student. Each
    pair is one term ``pair{l}_{k}``, summed over utterances (unit ``"utterances"``), so the
    trainer logs its batch mean; the total is the (weighted) sum over pairs, as in the paper's
    sum over distilled layers. No trainable parameter: the ``T x T`` Gram matrices need no
    projection even when ``D_s != D_t``.

    Args:
        layer_pairs: ``[[teacher_layer, student_layer], ...]`` ``hidden_states`` indices
            (student indices may be negative); default ``[[L_t, -1]]``, last to last.
        axes: Gram axes, default ``["time"]``; ``["time", "feature"]`` adds the ``D x D``
            matrix (only when ``D_s == D_t``).
        center: centre hidden states over real frames before the Gram matrices (default
            False, as in the paper; see :func:`gram_matrix`).
        weight: factor on every term (default 1).

    Raises:
        ValueError: a teacher layer outside ``[0, L_t]``, an empty ``layer_pairs`` or
            ``axes``, a pair that is not ``[teacher_layer, student_layer]`` or is listed twice,
            an unknown axis,
            or ``"feature"`` with ``D_s != D_t`` or ``"channel"`` (hidden states have no
            channel axis).
    """

    def __init__(self, *, teacher_hidden_size: int, teacher_num_layers: int,
                 student_hidden_size: int, student_conv_dim: int | None = None,
                 layer_pairs: list[list[int]] | None = None,
                 axes: list[str] | None = None, center: bool = False,
                 weight: float = 1.0) -> None:
        super().__init__()
        self.layer_pairs = _pairs(layer_pairs, teacher_num_layers)
        #: Teacher layers read (what a teacher cache stores).
        self.teacher_layers = sorted({layer for layer, _ in self.layer_pairs})
        if isinstance(axes, str):
            raise ValueError(f"gram_kd.axes must be a list of axis names, e.g. [{axes}]")
        self.axes = list(axes) if axes is not None else ["time"]
        if not self.axes:
            raise ValueError("gram_kd.axes must name at least one axis")
        for axis in self.axes:
            if axis not in ("time", "feature", "frequency"):
                raise ValueError(f"gram_kd.axes: {axis!r} is not an axis of (B, T, D) hidden "
                                 "states; use time or feature")
            if axis != "time" and student_hidden_size != teacher_hidden_size:
                raise ValueError(f"gram_kd.axes: a {axis!r} Gram matrix needs equal widths, got "
                                 f"D_s={student_hidden_size}, D_t={teacher_hidden_size}")
        self.weight = float(weight)
        self.center = bool(center)

    def student_layers_read(self) -> list[int]:
        """The student layer of each pair, in ``layer_pairs`` order (repeats kept)."""
        return [student for _, student in self.layer_pairs]

    def forward(self, inputs: DistillationInputs) -> dict[str, LossTerm]:
        """One term per layer pair, summed over utterances."""
        frames = inputs.num_frames
        terms = {}
        for teacher_layer, student_layer in self.layer_pairs:
            student = inputs.student.hidden_states[student_layer][:, :frames]
            teacher = inputs.teacher.hidden_states[teacher_layer][:, :frames]
            per_utt = gram_kd_per_utterance(student, teacher, inputs.frame_mask, self.axes,
                                            self.center)
            terms[f"pair{teacher_layer}_{student_layer}"] = LossTerm(
                per_utt.sum(), "utterances", self.weight)
        return terms
