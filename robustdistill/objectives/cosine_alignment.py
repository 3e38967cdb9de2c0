"""Cosine-distance latent alignment through a linear inverted bottleneck.

"Knowledge Distillation for Speech Denoising by Latent Representation Alignment with Cosine
Distance", Luong, Heikkinen, Drossos and Virtanen, arXiv 2505.03442. Specification:
``objectives.md`` section 4.

Denoising-autoencoder framing: the teacher encodes the clean signal, the student the noisy
one; the student's latent ``z_s`` is mapped by a *linear* map with no activation that expands
it to the teacher's width (the inverted bottleneck) and aligned with cosine distance,
``L = mean over real frames of (1 - cos(W z_s, z_t))``. Cosine distance ignores scale, and the
projection frees the student's dimensionality and feature order.

Tensor legend: ``B`` batch, ``T`` frames, ``D_s`` / ``D_t`` student / teacher width;
``(B, C, T, F)`` activations are compared per frame over their flattened ``C * F`` features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    DistillationInputs,
    LossTerm,
    Objective,
    check_binary_mask,
    check_no_repeats,
    register_objective,
)

__all__ = ["CosineAlignment", "LinearInvertedBottleneck", "cosine_alignment_loss",
           "cosine_distance_per_frame", "frames_last", "resample_frames"]


def frames_last(activation: torch.Tensor) -> torch.Tensor:
    """``(B, T, D)`` unchanged; ``(B, C, T, F)`` -> ``(B, T, C * F)`` (features per frame).

    Raises:
        ValueError: any other rank.
    """
    if activation.dim() == 3:
        return activation
    if activation.dim() == 4:
        b, c, t, f = activation.shape
        return activation.permute(0, 2, 1, 3).reshape(b, t, c * f)
    raise ValueError(f"expected (B, T, D) or (B, C, T, F), got shape {tuple(activation.shape)}")


class LinearInvertedBottleneck(nn.Module):
    """Linear map ``D_s -> D_t`` (optionally ``D_s -> D_expanded -> D_t``), no activation.

    Default (``expanded_size=None``): one ``Linear(D_s, D_t)``, the expansion of
    ``objectives.md`` section 4. With ``expanded_size`` (the issue's
    ``D_s -> D_expanded -> D_t``): two stacked linear layers with nothing between them (the
    same function class as one linear map, a different parametrisation for optimisation).

    Args:
        student_size: ``D_s``.
        teacher_size: ``D_t``; must be ``>= D_s`` unless ``allow_compression``.
        expanded_size: ``D_expanded`` (``>= max(D_s, D_t)``) or None for one layer.
        bias: linear layers with bias (default True).
        allow_compression: accept ``D_t < D_s`` (then it is not an inverted bottleneck).

    Raises:
        ValueError: a width below 1, ``D_t < D_s`` without ``allow_compression``, or an
            ``expanded_size`` smaller than both ends.

    Shapes: ``forward((..., D_s)) -> (..., D_t)``.
    """

    def __init__(self, student_size: int, teacher_size: int, expanded_size: int | None = None,
                 bias: bool = True, allow_compression: bool = False) -> None:
        super().__init__()
        if student_size < 1 or teacher_size < 1:
            raise ValueError(f"widths must be >= 1, got D_s={student_size}, D_t={teacher_size}")
        if teacher_size < student_size and not allow_compression:
            raise ValueError(f"an inverted bottleneck expands: D_t={teacher_size} < "
                             f"D_s={student_size} (set allow_compression to accept it)")
        if expanded_size is None:
            self.layers = nn.Sequential(nn.Linear(student_size, teacher_size, bias=bias))
        else:
            if expanded_size < max(student_size, teacher_size):
                raise ValueError(f"expanded_size {expanded_size} must be >= max(D_s, D_t) = "
                                 f"{max(student_size, teacher_size)}")
            self.layers = nn.Sequential(nn.Linear(student_size, expanded_size, bias=bias),
                                        nn.Linear(expanded_size, teacher_size, bias=bias))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., D_s) -> (..., D_t)``."""
        return self.layers(z)


def resample_frames(x: torch.Tensor, lengths: torch.Tensor, target_lengths: torch.Tensor,
                    num_frames: int | None = None) -> torch.Tensor:
    """Linearly interpolate each utterance's real frames to a new frame count.

    Utterance ``b``'s first ``lengths[b]`` frames are resampled to ``target_lengths[b]``
    frames (``F.interpolate``, ``mode="linear"``, ``align_corners=False``: frame centres map
    proportionally); padding is never read. Utterances whose counts already agree are copied.

    Args:
        x: ``(B, T, D)``.
        lengths: ``(B,)`` real frames of ``x`` (each ``>= 1``).
        target_lengths: ``(B,)`` wanted real frames (each ``>= 1``).
        num_frames: frames of the output (default ``max(target_lengths)``); zero padded.

    Returns:
        ``(B, num_frames, D)``, differentiable with respect to ``x``.

    Raises:
        ValueError: ``x`` not 3-D, ``lengths`` or ``target_lengths`` not ``(B,)`` integer
            tensors, a length below 1 or above the available / requested frames.
    """
    if x.dim() != 3:
        raise ValueError(f"resample_frames: x must be (B, T, D), got {tuple(x.shape)}")
    for name, value in (("lengths", lengths), ("target_lengths", target_lengths)):
        if tuple(value.shape) != (x.shape[0],):
            raise ValueError(f"resample_frames: {name} must be (B,) = ({x.shape[0]},), got "
                             f"{tuple(value.shape)}")
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"resample_frames: {name} must be integer frame counts, got "
                             f"{value.dtype}")
    lengths, target_lengths = lengths.long().cpu(), target_lengths.long().cpu()
    if num_frames is None:
        num_frames = int(target_lengths.max())
    if bool((lengths < 1).any()) or bool((target_lengths < 1).any()):
        raise ValueError("resample_frames: every length must be >= 1")
    if int(lengths.max()) > x.shape[1] or int(target_lengths.max()) > num_frames:
        raise ValueError("resample_frames: a length exceeds the frames available or requested")
    rows = []
    for b in range(x.shape[0]):
        n, m = int(lengths[b]), int(target_lengths[b])
        real = x[b, :n]
        if n != m:
            real = F.interpolate(real.T.unsqueeze(0), size=m, mode="linear",
                                 align_corners=False)[0].T
        rows.append(F.pad(real, (0, 0, 0, num_frames - m)))
    return torch.stack(rows)


def cosine_distance_per_frame(student: torch.Tensor, teacher: torch.Tensor,
                              eps: float = 1e-8) -> torch.Tensor:
    """``1 - cos(student, teacher)`` per frame.

    Args:
        student: ``(B, T, D)`` (already projected to the teacher's width) or ``(B, C, T, F)``.
        teacher: same shape; detached.
        eps: floor of the norms (``F.cosine_similarity``).

    Returns:
        ``(B, T)`` float32 in ``[0, 2]``.

    Raises:
        ValueError: shapes that differ, or a rank other than 3 or 4.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         "must have the same shape (project and resample the student first)")
    s, t = frames_last(student).float(), frames_last(teacher.detach()).float()
    return 1.0 - F.cosine_similarity(s, t, dim=-1, eps=eps)


def cosine_alignment_loss(student: torch.Tensor, teacher: torch.Tensor,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean over real frames of (1 - cos(student, teacher))`` (the paper's KD loss).

    Args:
        student: ``(B, T, D_t)`` projected student latent (e.g. the output of
            :class:`LinearInvertedBottleneck`) or ``(B, C, T, F)``; gradients flow into it.
        teacher: same shape, the teacher's latent on the clean input; detached.
        mask: ``(B, T)``, True on real frames; None means every frame is real.

    Returns:
        Scalar float32: the mean over all real frames of the batch.

    Raises:
        ValueError: shapes that differ, a rank other than 3 or 4, a mask of the wrong shape,
            or no real frame (also without a mask: ``B = 0`` or ``T = 0``, whose mean would
            be NaN).
    """
    dist = cosine_distance_per_frame(student, teacher)
    if mask is None:
        if dist.numel() == 0:
            raise ValueError(f"no frame to align: student and teacher are "
                             f"{tuple(student.shape)} (B = 0 or T = 0)")
        return dist.mean()
    if tuple(mask.shape) != tuple(dist.shape):
        raise ValueError(f"mask must be (B, T) = {tuple(dist.shape)}, got {tuple(mask.shape)}")
    check_binary_mask(mask, "mask")
    m = mask.to(dist.dtype)
    if float(m.sum()) == 0:
        raise ValueError("mask has no real frame")
    return (dist * m).sum() / m.sum()


@register_objective("cosine_alignment")
class CosineAlignment(Objective):
    """Align chosen teacher layers with a student layer by cosine distance, through a linear
    inverted bottleneck per target (arXiv 2505.03442).

    Paper: "Knowledge Distillation for Speech Denoising by Latent Representation Alignment
    with Cosine Distance" (arXiv 2505.03442).

    For target ``l`` with bottleneck ``W_l``: the student's real frames of ``H_s[k]`` are
    resampled to the teacher's real frame count when the two differ (linear interpolation,
    :func:`resample_frames`), then
    ``L_l = mean over real teacher frames of (1 - cos(W_l H_s[k], H_t[l]))``.
    Term ``layer{l}`` (unit ``"frames"``): each utterance's frame sum is scaled by
    ``n_common / n_teacher`` so the trainer's division by the common real frames gives the
    frame-weighted mean (exact when the counts agree, as for a same-rate teacher and student).

    Args:
        teacher_layers: teacher ``hidden_states`` indices (default ``[L_t]``, the last).
        student_layer: student ``hidden_states`` index (default -1, the last).
        expanded_size: ``D_expanded`` for the two-layer form, None for ``Linear(D_s, D_t)``.
        allow_compression: accept ``D_t < D_s``.
        weight: factor on every term (default 1).

    Raises:
        ValueError: a target layer outside ``[0, L_t]``, an empty list, a layer listed twice,
            or a bottleneck that cannot be built (see :class:`LinearInvertedBottleneck`).
    """

    def __init__(self, *, teacher_hidden_size: int, teacher_num_layers: int,
                 student_hidden_size: int, student_conv_dim: int | None = None,
                 teacher_layers: list[int] | None = None, student_layer: int = -1,
                 expanded_size: int | None = None, allow_compression: bool = False,
                 weight: float = 1.0) -> None:
        super().__init__()
        layers = list(teacher_layers) if teacher_layers is not None else [teacher_num_layers]
        if not layers:
            raise ValueError("cosine_alignment.teacher_layers must name at least one layer")
        bad = [layer for layer in layers if not 0 <= layer <= teacher_num_layers]
        if bad:
            raise ValueError(f"cosine_alignment.teacher_layers {bad} outside "
                             f"[0, {teacher_num_layers}]")
        check_no_repeats(layers, "cosine_alignment.teacher_layers")
        self.teacher_layers = layers
        self.student_layer = int(student_layer)
        self.weight = float(weight)
        self.bottlenecks = nn.ModuleList(
            LinearInvertedBottleneck(student_hidden_size, teacher_hidden_size, expanded_size,
                                     allow_compression=allow_compression)
            for _ in layers)
        self._config = {"teacher_layers": layers, "student_layer": self.student_layer,
                        "expanded_size": expanded_size,
                        "student_hidden_size": student_hidden_size,
                        "teacher_hidden_size": teacher_hidden_size}

    def head_config(self) -> dict:
        """The bottlenecks' layout: target layers, student layer, ``expanded_size``, widths."""
        return dict(self._config)

    def forward(self, inputs: DistillationInputs) -> dict[str, LossTerm]:
        """One term per teacher layer, frame sums (see the class docstring)."""
        teacher_len = inputs.teacher.frame_lengths.long()
        student_len = inputs.student.frame_lengths.long()
        common = inputs.frame_mask.sum(dim=1)
        teacher_frames = int(teacher_len.max())
        mask = (torch.arange(teacher_frames, device=teacher_len.device)[None, :]
                < teacher_len[:, None])
        source = inputs.student.hidden_states[self.student_layer]
        if torch.equal(student_len, teacher_len):
            aligned = source[:, :teacher_frames]
        else:
            aligned = resample_frames(source, student_len, teacher_len, teacher_frames)
        scale = (common.to(torch.float32) / teacher_len.clamp(min=1).to(torch.float32))
        terms = {}
        for layer, bottleneck in zip(self.teacher_layers, self.bottlenecks, strict=True):
            target = inputs.teacher.hidden_states[layer][:, :teacher_frames]
            dist = cosine_distance_per_frame(bottleneck(aligned), target.to(aligned.dtype))
            per_utt = (dist * mask.to(dist.dtype)).sum(dim=1) * scale.to(dist.device)
            terms[f"layer{layer}"] = LossTerm(per_utt.sum(), "frames", self.weight)
        return terms
