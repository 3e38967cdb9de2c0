"""Diagnostics of a distilled student: hidden-state statistics and distances to the teacher.

Used by ``scripts/evidence_probe.py`` (``docs/evidence.md``) to follow a run over its
checkpoints: whether the student's hidden states lose their variation over time or across
utterances (a collapse) or merely match the teacher's scale, and how far the student's
predictions on corrupted audio are from the teacher's layers on the clean audio.

Tensor legend: ``B`` utterances, ``T`` frames (20 ms), ``D`` hidden width. Every function
takes only real frames into account (``frame_lengths`` / ``frame_mask``); padding is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

__all__ = ["HiddenStateStats", "PredictionDistance", "hidden_state_stats", "linear_cka",
           "prediction_distance"]


@dataclass(frozen=True)
class HiddenStateStats:
    """Statistics of one layer's hidden states over a set of utterances.

    Attributes:
        std_over_time: mean over utterances and features of the standard deviation over an
            utterance's frames: how much the representation moves within an utterance (near
            0: every frame looks the same, a collapse over time).
        utterance_mean_spread: mean over features of the standard deviation, across
            utterances, of each utterance's time-averaged vector: how different utterances
            look after mean pooling (near 0: every utterance pools to the same vector).
        rms: root mean square over all real frames and features (the overall scale; the two
            spreads above are in these units, so compare them relative to it).
        frames: real frames the statistics are over.
    """

    std_over_time: float
    utterance_mean_spread: float
    rms: float
    frames: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a plain ``{name: value}`` dict (e.g. for a JSON line)."""
        return asdict(self)


def _real_frames(hidden: torch.Tensor, frame_lengths: torch.Tensor) -> list[torch.Tensor]:
    if hidden.dim() != 3 or frame_lengths.shape != hidden.shape[:1]:
        raise ValueError(f"expected hidden (B, T, D) and frame_lengths (B,), got "
                         f"{tuple(hidden.shape)} and {tuple(frame_lengths.shape)}")
    return [hidden[i, : int(n)].double() for i, n in enumerate(frame_lengths.tolist())]


def hidden_state_stats(
    hidden_states: Sequence[torch.Tensor], frame_lengths: torch.Tensor | Sequence[int]
) -> list[HiddenStateStats]:
    """Per-layer :class:`HiddenStateStats`.

    Args:
        hidden_states: one ``(B, T, D)`` tensor per layer, all utterances of the set in it
            (zero-padded after ``frame_lengths``).
        frame_lengths: ``(B,)`` real frames per utterance (shared by the layers).

    Returns:
        One entry per layer, in order.

    Raises:
        ValueError: wrong shapes, an utterance with fewer than 2 real frames, or fewer than
            2 utterances (the spreads are undefined).
    """
    lengths = torch.as_tensor(frame_lengths)
    if lengths.numel() < 2:
        raise ValueError("hidden_state_stats needs at least 2 utterances")
    if int(lengths.min()) < 2:
        raise ValueError("every utterance needs at least 2 real frames")
    out = []
    for hidden in hidden_states:
        frames = _real_frames(hidden, lengths)
        std_time = torch.stack([f.std(dim=0, unbiased=False).mean() for f in frames]).mean()
        means = torch.stack([f.mean(dim=0) for f in frames])  # (B, D)
        spread = means.std(dim=0, unbiased=False).mean()
        everything = torch.cat(frames)
        out.append(HiddenStateStats(float(std_time), float(spread),
                                    float(everything.pow(2).mean().sqrt()),
                                    int(everything.shape[0])))
    return out


@dataclass(frozen=True)
class PredictionDistance:
    """Distance of predicted frames to target frames (the DistilHuBERT loss's two parts).

    Attributes:
        l1: mean over real frames of ``mean_d |P - H|`` (the target's units).
        cosine: mean over real frames of ``cos(P, H)`` (1: same direction).
        frames: real frames compared.
    """

    l1: float
    cosine: float
    frames: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a plain ``{name: value}`` dict (e.g. for a JSON line)."""
        return asdict(self)


def prediction_distance(prediction: torch.Tensor, target: torch.Tensor,
                        frame_mask: torch.Tensor) -> PredictionDistance:
    """L1 and cosine similarity of ``prediction`` to ``target`` over real frames.

    Args:
        prediction: ``(B, T, D)``.
        target: ``(B, T, D)`` (e.g. a teacher layer on the clean audio).
        frame_mask: ``(B, T)`` bool, True on frames to compare.

    Raises:
        ValueError: shapes differ or no frame is selected.
    """
    if prediction.shape != target.shape or frame_mask.shape != prediction.shape[:2]:
        raise ValueError(f"shapes differ: prediction {tuple(prediction.shape)}, target "
                         f"{tuple(target.shape)}, mask {tuple(frame_mask.shape)}")
    mask = frame_mask.bool()
    n = int(mask.sum())
    if n == 0:
        raise ValueError("no real frame to compare")
    p, t = prediction.double()[mask], target.double()[mask]
    return PredictionDistance(float((p - t).abs().mean(dim=-1).mean()),
                              float(F.cosine_similarity(p, t, dim=-1).mean()), n)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment between two sets of frames.

    Kornblith et al., "Similarity of Neural Network Representations Revisited"
    (arXiv 1905.00414): ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with
    column-centred ``X_c``, ``Y_c``. Invariant to rotations and isotropic scaling of either
    side, so it compares a student layer with a teacher layer without a learned head.

    Args:
        x: ``(N, D1)`` frames (e.g. the student's last layer on noisy audio).
        y: ``(N, D2)`` the same frames of another representation (e.g. a teacher layer on the
            clean audio).

    Returns:
        A value in ``[0, 1]``.

    Raises:
        ValueError: different numbers of frames, fewer than 2 frames, or a constant input.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected (N, D1) and (N, D2), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError("linear_cka needs at least 2 frames")
    xc, yc = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    xx, yy = torch.linalg.norm(xc.T @ xc), torch.linalg.norm(yc.T @ yc)
    if float(xx) == 0.0 or float(yy) == 0.0:
        raise ValueError("linear_cka of a constant representation is undefined")
    return float(torch.linalg.norm(yc.T @ xc) ** 2 / (xx * yy))
