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

__all__ = ["MAP_FRAMES_RULE", "TeacherTargets", "floor_rule_targets_differ", "map_targets",
           "student_map_loss", "teacher_targets"]

#: The rule :func:`map_targets` moves the teacher's maps with, stored with every IML-KD
#: checkpoint's settings (``ig.map_frames``) and ``result.json`` (``map_frames``). Runs before
#: 2026-12-07 have none: each teacher frame went whole to student frame ``floor(centre / hop)``
#: (:func:`floor_rule_targets_differ` says when that gave other targets).
MAP_FRAMES_RULE = "nearest_centre_sample_share"


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


def map_targets(bounds: list[tuple[int, int]], num_student_frames: int, student_hop: int,
                student_centre: int) -> list[torch.Tensor]:
    """For each segment, the ``(T_seg, T_student)`` matrix moving a teacher frame map onto the
    student's frames by the samples they share.

    Every sample goes to the teacher frame and to the student frame whose centre is nearest
    (ties to the later frame): teacher frame ``i`` of segment ``[a, b)`` is centred at sample
    ``a + 160 i`` (the GE2E mel frames, a centred STFT) and holds the segment's samples
    ``[a + 160 i - 80, a + 160 i + 80)`` (the last one up to ``b``); student frame ``k`` is
    centred at ``student_centre + student_hop * k`` and holds ``student_hop`` samples around
    it (the first from the crop's start, the last to its end: samples the student's CNN drops
    past its last frame go to that frame). Entry ``[i, k]`` is the fraction of teacher frame
    ``i``'s samples that student frame ``k`` holds: each row sums to one, so a teacher map
    times the matrix keeps its sum (its mass spread evenly over each teacher frame's samples).

    Example, the wav2vec 2.0 CNN (hop 320, frame ``k`` reads samples ``[320 k, 320 k + 400)``,
    centre ``320 k + 200``): student frame ``k`` holds ``[320 k + 40, 320 k + 360)``, so it
    receives a quarter of teacher frame ``2 k``, all of ``2 k + 1`` and three quarters of
    ``2 k + 2``. With the teacher's grid (hop 160, centre 0; segments starting on a multiple
    of 160 samples) the matrix is a shifted 0/1 identity.

    Args:
        bounds: the segments' ``(start, stop)`` sample ranges in the crop
            (:func:`~robustdistill.speaker.attribution.segment_bounds`).
        num_student_frames: ``T_student``, the student's frames of the whole crop (from its
            own convolution arithmetic, e.g. ``(N - 400) // 320 + 1``).
        student_hop: samples between student frames (160 or 320).
        student_centre: the sample at which student frame 0 is centred (0 for the log-mel
            LSTM, 200 for the wav2vec 2.0 CNN).

    Returns:
        one float32 ``(1 + (stop - start) // 160, T_student)`` matrix per segment.

    Raises:
        ValueError: ``num_student_frames`` or ``student_hop`` below 1, or an empty or
            negative segment range.
    """
    if num_student_frames < 1 or student_hop < 1:
        raise ValueError(f"need at least one student frame and a hop of at least one sample, "
                         f"got {num_student_frames} frames of hop {student_hop}")
    # student cells [lo, hi): the nearest-centre samples, the outer two open-ended
    lo_s = student_centre - student_hop // 2 + student_hop * torch.arange(num_student_frames)
    hi_s = lo_s + student_hop
    far = torch.iinfo(torch.int64).max // 4
    lo_s[0], hi_s[-1] = -far, far
    out = []
    for a, b in bounds:
        if not 0 <= a < b:
            raise ValueError(f"segment ({a}, {b}) is not a sample range of a crop")
        centre = a + HOP * torch.arange(1 + (b - a) // HOP)
        lo = (centre - HOP // 2).clamp(min=a)
        hi = (centre + HOP // 2).clamp(max=b)
        hi[-1] = b
        shared = (torch.minimum(hi[:, None], hi_s[None]) - torch.maximum(lo[:, None], lo_s[None]))
        out.append(shared.clamp(min=0).float() / (hi - lo)[:, None].float())
    return out


def floor_rule_targets_differ(student_kind: str, num_samples: int,
                              durations: list[float | None]) -> bool:
    """Whether the rule before 2026-12-07 (teacher frame ``i`` of ``[a, b)`` whole to student
    frame ``floor((a + 160 i) / hop)``, clamped to the last) gave other map targets than
    :func:`map_targets` for a run's crops: always for an upstream student (``student_kind``
    not ``"lstm"``: it put every even teacher frame on the farther of its two neighbouring
    CNN frames), for the log-mel LSTM (hop 160, centre 0) only when a segment does not start
    and end on its 10 ms grid (both rules then give the same 0/1 matrices).

    Args:
        student_kind: ``student.kind`` (``"lstm"`` or ``"upstream"``).
        num_samples: the training crops' length ``N``.
        durations: ``ig.durations`` (seconds; None: the whole crop).
    """
    if student_kind != "lstm":
        return True
    from .attribution import segment_bounds

    bounds = segment_bounds(num_samples, durations)
    frames = 1 + num_samples // HOP
    for (a, b), matrix in zip(bounds, map_targets(bounds, frames, HOP, 0), strict=True):
        old = torch.clamp(torch.div(a + HOP * torch.arange(1 + (b - a) // HOP), HOP,
                                    rounding_mode="floor"), max=frames - 1)
        if not torch.equal(matrix, F.one_hot(old, frames).float()):
            return True
    return False


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
