"""Pooling over the real frames of padded feature sequences.

Legend: ``B`` batch, ``T`` frames, ``D`` feature width.
"""

from __future__ import annotations

import torch

__all__ = ["frame_mask", "masked_mean", "masked_mean_std"]


def frame_mask(frame_lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, max_frames)`` bool, True on real frames.

    Raises:
        ValueError: lengths that are not a 1-D integer tensor, a length below 1 (nothing to
            pool) or above ``max_frames`` (a mask that does not match the features).
    """
    if frame_lengths.dim() != 1 or frame_lengths.is_floating_point():
        raise ValueError(f"frame lengths must be a (B,) integer tensor, got shape "
                         f"{tuple(frame_lengths.shape)} {frame_lengths.dtype}")
    if int(frame_lengths.min()) < 1:
        raise ValueError(f"every utterance needs at least one frame, got {frame_lengths.tolist()}")
    if int(frame_lengths.max()) > max_frames:
        raise ValueError(f"frame lengths {frame_lengths.tolist()} exceed the {max_frames} "
                         "frames of the features")
    positions = torch.arange(max_frames, device=frame_lengths.device)
    return positions.unsqueeze(0) < frame_lengths.unsqueeze(1)


def _check_features(features: torch.Tensor, frame_lengths: torch.Tensor) -> None:
    if features.dim() != 3 or tuple(frame_lengths.shape) != (features.shape[0],):
        raise ValueError(f"expected (B, T, D) features and (B,) frame lengths, got "
                         f"{tuple(features.shape)} and {tuple(frame_lengths.shape)}")


def masked_mean(features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """Mean over real frames: ``(B, T, D)`` -> ``(B, D)`` (padding never counts).

    Raises:
        ValueError: shapes that do not match, or bad lengths (see :func:`frame_mask`).
    """
    _check_features(features, frame_lengths)
    mask = frame_mask(frame_lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)
    return (features * mask).sum(dim=1) / mask.sum(dim=1)


def masked_mean_std(
    features: torch.Tensor, frame_lengths: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Statistics pooling (x-vectors, Snyder et al. 2018): mean and standard deviation over
    real frames, concatenated: ``(B, T, D)`` -> ``(B, 2 D)``. ``eps`` keeps the square root's
    gradient finite for constant features.

    Raises:
        ValueError: as :func:`masked_mean`.
    """
    _check_features(features, frame_lengths)
    mask = frame_mask(frame_lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)
    count = mask.sum(dim=1)
    mean = (features * mask).sum(dim=1) / count
    var = (((features - mean.unsqueeze(1)) ** 2) * mask).sum(dim=1) / count
    return torch.cat([mean, torch.sqrt(var + eps)], dim=-1)
