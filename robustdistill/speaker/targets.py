"""What the frozen GE2E teacher gives a student to match: each training crop's embedding, the
speaker centroids and the logits against them (:func:`teacher_targets`), and the teacher's IG
frame maps moved onto the student's frames (:func:`map_targets`) for the map loss
(:func:`student_map_loss`).

Legend: ``M`` training crops, ``B`` batch, ``K`` training speakers, ``E_t`` the teacher's
embedding width, ``T_seg`` teacher frames of a segment, ``T_student`` student frames of a crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data import Crop
from .ge2e import GE2E, HOP
from .losses import map_kl

__all__ = ["TeacherTargets", "map_targets", "student_map_loss", "teacher_targets"]


@dataclass
class TeacherTargets:
    """Frozen teacher outputs for the training crops.

    Attributes:
        embeddings: ``(M, E_t)`` normalised GE2E embeddings of the crops.
        centroids: ``(K, E_t)`` normalised speaker centroids.
        logits: ``(M, K)`` GE2E similarity logits.
    """

    embeddings: torch.Tensor
    centroids: torch.Tensor
    logits: torch.Tensor


@torch.no_grad()
def teacher_targets(teacher: GE2E, crops: list[Crop], labels: torch.Tensor, num_speakers: int,
                    batch_size: int = 64) -> TeacherTargets:
    """Embeddings of every crop, speaker centroids and the logits against them.

    Args:
        teacher: frozen GE2E.
        crops: ``M`` training crops of one length (16 kHz samples).
        labels: ``(M,)`` long speaker index of each crop, in ``[0, num_speakers)``.
        num_speakers: ``K``.
        batch_size: crops per teacher forward pass.

    Returns:
        :class:`TeacherTargets`: ``(M, E_t)`` embeddings, ``(K, E_t)`` centroids (normalised
        sum of each speaker's crop embeddings) and ``(M, K)`` logits.
    """
    emb = torch.cat([teacher(torch.from_numpy(np.stack([c.audio for c in crops[i:i + batch_size]])))
                     for i in range(0, len(crops), batch_size)])
    centroids = torch.zeros(num_speakers, emb.shape[1]).index_add_(0, labels, emb)
    centroids = F.normalize(centroids, dim=-1)
    return TeacherTargets(emb, centroids, teacher.scores(emb, centroids))


def map_targets(bounds: list[tuple[int, int]], num_student_frames: int,
                student_hop: int) -> list[torch.Tensor]:
    """For each segment, the ``(T_seg, T_student)`` 0/1 matrix sending teacher frame ``i``
    (centre at sample ``start + 160 i``) to the student frame holding that sample (the last
    frame for samples past the end). Multiplying a teacher map by it keeps its sum; for a
    student with the teacher's 10 ms hop it is a shifted identity."""
    out = []
    for a, b in bounds:
        t = 1 + (b - a) // HOP
        centre = a + HOP * torch.arange(t)
        j = torch.clamp(torch.div(centre, student_hop, rounding_mode="floor"), max=num_student_frames - 1)
        out.append(F.one_hot(j, num_student_frames).float())
    return out


def student_map_loss(map_logits: torch.Tensor, teacher_maps: list[torch.Tensor],
                      assign: list[torch.Tensor]) -> torch.Tensor:
    """Per segment: teacher map moved to student frames, student logits restricted to the
    segment's student frames; KL averaged over segments and crops."""
    losses = []
    for maps, matrix in zip(teacher_maps, assign, strict=True):
        matrix = matrix.to(map_logits.device)
        target = maps.to(map_logits.device) @ matrix  # (B, T_student)
        frames = matrix.sum(0) > 0
        losses.append(map_kl(map_logits[:, frames], target[:, frames]))
    return torch.stack(losses).mean()
