"""IML-KD losses and the baselines' distillation terms.

"Integrated Multi-Level Knowledge Distillation for Enhanced Speaker Verification"
(arXiv:2409.09389), as specified in ``../shared/docs/objectives.md`` section 6:

* integrated input (:func:`map_kl`): the student predicts the teacher's Integrated-Gradients
  frame maps; ``KL(p_teacher || p_student)`` per segment, averaged over segments.
* instance level (:func:`instance_loss`): ``1 - cos(e_s, e_t)``, batch mean.
* class level (:func:`class_loss`): ``tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau))``,
  batch mean (Hinton et al., arXiv:1503.02531: vanilla logit KD is this term alone).
* batch level (:func:`batch_loss`): ``|| norm(E_s E_s^T) - norm(E_t E_t^T) ||_F^2 / B^2`` with
  ``norm`` the row-wise L2 normalisation of the Gram matrix ("Similarity-Preserving Knowledge
  Distillation", Tung & Mori, arXiv:1907.09682).

Legend: ``B`` batch, ``E`` embedding width, ``K`` classes, ``S`` segments, ``T`` frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["batch_loss", "class_loss", "instance_loss", "map_kl"]


def _check_batch(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: student {tuple(a.shape)} and teacher {tuple(b.shape)} differ")


def instance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean_b (1 - cos(e_s[b], e_t[b]))`` for ``(B, E)`` embeddings (same ``E``).

    Raises:
        ValueError: shapes differ.
    """
    _check_batch(student, teacher, "instance loss")
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def class_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0
               ) -> torch.Tensor:
    """``tau^2 mean_b KL(softmax(z_t / tau) || softmax(z_s / tau))`` for ``(B, K)`` logits.

    Raises:
        ValueError: shapes differ or ``tau`` is not a number above 0 (NaN included).
    """
    _check_batch(student_logits, teacher_logits, "class loss")
    if not tau > 0:  # also refuses NaN
        raise ValueError(f"temperature tau must be positive, got {tau}")
    log_p_t = F.log_softmax(teacher_logits / tau, dim=-1)
    log_p_s = F.log_softmax(student_logits / tau, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return tau**2 * kl.mean()


def batch_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``|| norm(E_s E_s^T) - norm(E_t E_t^T) ||_F^2 / B^2`` for ``(B, E_s)``, ``(B, E_t)``
    embeddings (widths may differ: only the ``B x B`` Gram matrices are compared).

    Raises:
        ValueError: an input that is not ``(B, E)`` (e.g. one ``(E,)`` embedding or
            ``(B, T, E)`` frame features), or different batch sizes.
    """
    for name, x in (("student", student), ("teacher", teacher)):
        if x.dim() != 2:
            raise ValueError(f"batch loss: {name} embeddings must be (B, E), got "
                             f"{tuple(x.shape)}")
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"batch loss: {student.shape[0]} student and {teacher.shape[0]} "
                         "teacher embeddings")
    b = student.shape[0]
    g_s = F.normalize(student @ student.T, dim=1)
    g_t = F.normalize(teacher @ teacher.T, dim=1)
    return (g_s - g_t).pow(2).sum() / b**2


def map_kl(student_logits: torch.Tensor, teacher_maps: torch.Tensor) -> torch.Tensor:
    """``mean_s KL(p_t[s] || softmax(l_s[s]))`` between teacher maps and predicted frame logits.

    Args:
        student_logits: ``(S, T)`` the student's frame logits over each segment's frames.
        teacher_maps: ``(S, T)`` non-negative, each row summing to one (zero entries add 0).

    Raises:
        ValueError: shapes differ, a negative teacher entry, or a teacher row that does not
            sum to one (tolerance 1e-3).
    """
    _check_batch(student_logits, teacher_maps, "map KL")
    if bool((teacher_maps < 0).any()):
        raise ValueError("teacher maps must be non-negative (a distribution per segment)")
    sums = teacher_maps.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise ValueError(f"teacher maps must sum to one per segment, got sums {sums.tolist()}")
    log_q = F.log_softmax(student_logits, dim=-1)
    p = teacher_maps
    terms = torch.where(p > 0, p * (torch.log(p.clamp_min(1e-30)) - log_q), torch.zeros_like(p))
    return terms.sum(-1).mean()
