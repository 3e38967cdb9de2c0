"""Layer-wise prediction of teacher hidden states (DistilHuBERT).

"DistilHuBERT: Speech Representation Learning by Layer-wise Distillation of Hidden-unit BERT",
Chang, Yang and Lee, arXiv 2110.01900. Specification: ``objectives.md`` section 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillationInputs, LossTerm, Objective, register_objective

__all__ = ["LayerwisePrediction", "layerwise_frame_losses"]


def layerwise_frame_losses(
    prediction: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame DistilHuBERT losses.

    Args:
        prediction: ``(B, T, D_t)`` predicted teacher layer.
        target: ``(B, T, D_t)`` teacher layer.

    Returns:
        ``(l1, cos)``, each ``(B, T)``: ``mean_d |P - H|`` and ``-log sigmoid(cos(P, H))``
        (cosine over the feature axis).
    """
    l1 = (prediction - target).abs().mean(dim=-1)
    cos = -F.logsigmoid(F.cosine_similarity(prediction, target, dim=-1))
    return l1, cos


@register_objective("layerwise")
class LayerwisePrediction(Objective):
    """Predict chosen teacher layers from the student's last layer.

    One linear head ``D_s -> D_t`` per target layer ``l``; for prediction ``P_l``:
    ``L_l = mean |P_l - H_t[l]| + lambda_cos * mean(-log sigmoid(cos(P_l, H_t[l])))``, means
    over real frames only. Terms ``layer{l}_l1`` and ``layer{l}_cos`` are logged separately;
    the total is their (weighted) sum over targets.

    Args:
        teacher_layers: teacher ``hidden_states`` indices to predict (0 = before the first
            transformer layer); default ``[4, 8, 12]`` scaled to the teacher's depth
            (``round(L/3), round(2L/3), L``; ``[1, 3, 4]`` for a 4-layer teacher).
        lambda_cos: weight of the cosine term (default 1).
        student_layer: student ``hidden_states`` index feeding the heads (default -1: last).

    Raises:
        ValueError: a target layer outside ``[0, L_t]``, or an empty target list.
    """

    def __init__(self, *, teacher_hidden_size: int, teacher_num_layers: int,
                 student_hidden_size: int, student_conv_dim: int | None = None,
                 teacher_layers: list[int] | None = None, lambda_cos: float = 1.0,
                 student_layer: int = -1) -> None:
        super().__init__()
        if teacher_layers is None:
            teacher_layers = sorted({max(1, round(k * teacher_num_layers / 3)) for k in (1, 2, 3)})
        if not teacher_layers:
            raise ValueError("layerwise.teacher_layers must name at least one layer")
        bad = [layer for layer in teacher_layers if not 0 <= layer <= teacher_num_layers]
        if bad:
            raise ValueError(f"layerwise.teacher_layers {bad} outside [0, {teacher_num_layers}]")
        self.teacher_layers = list(teacher_layers)
        self.lambda_cos = float(lambda_cos)
        self.student_layer = int(student_layer)
        self.heads = nn.ModuleList(
            nn.Linear(student_hidden_size, teacher_hidden_size) for _ in self.teacher_layers
        )
        self._dims = (student_hidden_size, teacher_hidden_size)

    def head_config(self) -> dict:
        return {"teacher_layers": self.teacher_layers, "student_layer": self.student_layer,
                "student_hidden_size": self._dims[0], "teacher_hidden_size": self._dims[1]}

    def forward(self, inputs: DistillationInputs) -> dict[str, LossTerm]:
        """Loss terms, each summed over real frames (see class docstring)."""
        frames = inputs.num_frames
        mask = inputs.frame_mask.to(inputs.student.hidden_states[-1].dtype)
        source = inputs.student.hidden_states[self.student_layer][:, :frames]
        terms = {}
        for layer, head in zip(self.teacher_layers, self.heads, strict=True):
            target = inputs.teacher.hidden_states[layer][:, :frames].to(source.dtype)
            l1, cos = layerwise_frame_losses(head(source), target)
            terms[f"layer{layer}_l1"] = LossTerm((l1 * mask).sum(), "frames")
            terms[f"layer{layer}_cos"] = LossTerm((cos * mask).sum(), "frames", self.lambda_cos)
        return terms
