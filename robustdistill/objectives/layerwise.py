"""Layer-wise prediction of teacher hidden states (DistilHuBERT).

"DistilHuBERT: Speech Representation Learning by Layer-wise Distillation of Hidden-unit BERT",
Chang, Yang and Lee, arXiv 2110.01900. Specification: ``objectives.md`` section 1. Reference
code: s3prl ``upstream/distiller/model.py`` (prediction heads, ``out_layer_type:
expand-last``) and ``pretrain/distiller/pretrain_expert.py`` (``compute_loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    DistillationInputs,
    LossTerm,
    Objective,
    check_no_repeats,
    register_objective,
)

__all__ = ["HEAD_TYPES", "REDUCTIONS", "LayerwisePrediction", "layerwise_frame_losses"]

#: Prediction head layouts: one linear map per target, or DistilHuBERT's shared MLP.
HEAD_TYPES = ("linear", "mlp")
#: How the per-target losses combine: averaged (both reference codes) or summed.
REDUCTIONS = ("mean", "sum")


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

    Raises:
        ValueError: shapes that differ (no broadcasting of ``(B, 1, D)`` or ``(T, D)``).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target "
                         f"{tuple(target.shape)} must have the same (B, T, D_t) shape")
    l1 = (prediction - target).abs().mean(dim=-1)
    cos = -F.logsigmoid(F.cosine_similarity(prediction, target, dim=-1))
    return l1, cos


@register_objective("layerwise")
class LayerwisePrediction(Objective):
    """Predict chosen teacher layers from one student layer (DistilHuBERT, arXiv 2110.01900).

    Paper: "DistilHuBERT: Speech Representation Learning by Layer-wise Distillation of
    Hidden-unit BERT" (arXiv 2110.01900).

    Heads (``head``):

    * ``"linear"``: one ``Linear(D_s, D_t)`` per target layer.
    * ``"mlp"``: DistilHuBERT's layout (s3prl ``out_layer_type: expand-last``):
      ``Linear(D_s, N * D_s) -> GELU``, then the ``N`` chunks of width ``D_s`` each go through
      their own ``Linear(D_s, D_t)`` (s3prl's ``SplitLinear``). ``N`` = number of targets.

    Loss for target ``l`` with prediction ``P_l``:
    ``L_l = mean |P_l - H_t[l]| + lambda_cos * mean(-log sigmoid(cos(P_l, H_t[l])))``, means
    over real frames only (and over the feature axis for the L1). Terms ``layer{l}_l1`` and
    ``layer{l}_cos`` are logged separately (unweighted, each a per-frame mean). The total is
    (``reduction``):

    * ``"mean"``: ``(1/N) sum_l L_l``, what both references compute (``rec_loss.mean()`` over
      ``B x N x T x D`` and ``sim_loss.mean()`` over ``B x N x T``); each term carries weight
      ``1/N`` (``lambda_cos/N`` for the cosine terms).
    * ``"sum"``: ``sum_l L_l`` (``N`` times larger; this project's behaviour before issue 6).

    Args:
        teacher_layers: teacher ``hidden_states`` indices to predict (0 = before the first
            transformer layer); default ``[4, 8, 12]`` scaled to the teacher's depth
            (``round(L/3), round(2L/3), L``; ``[1, 3, 4]`` for a 4-layer teacher).
        lambda_cos: weight of the cosine term (default 1).
        student_layer: student ``hidden_states`` index feeding the heads (default -1: last).
        head: ``"mlp"`` (default; DistilHuBERT's reference layout) or ``"linear"`` (one
            ``Linear(D_s, D_t)`` per target).
        reduction: ``"mean"`` (default; what both references compute) or ``"sum"``.

    Raises:
        ValueError: a target layer outside ``[0, L_t]``, an empty target list, a layer listed
            twice, an unknown ``head`` or ``reduction``.
    """

    def __init__(self, *, teacher_hidden_size: int, teacher_num_layers: int,
                 student_hidden_size: int, student_conv_dim: int | None = None,
                 teacher_layers: list[int] | None = None, lambda_cos: float = 1.0,
                 student_layer: int = -1, head: str = "mlp",
                 reduction: str = "mean") -> None:
        super().__init__()
        if teacher_layers is None:
            teacher_layers = sorted({max(1, round(k * teacher_num_layers / 3)) for k in (1, 2, 3)})
        if not teacher_layers:
            raise ValueError("layerwise.teacher_layers must name at least one layer")
        bad = [layer for layer in teacher_layers if not 0 <= layer <= teacher_num_layers]
        if bad:
            raise ValueError(f"layerwise.teacher_layers {bad} outside [0, {teacher_num_layers}]")
        check_no_repeats(list(teacher_layers), "layerwise.teacher_layers")
        if head not in HEAD_TYPES:
            raise ValueError(f"layerwise.head must be one of {HEAD_TYPES}, got {head!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"layerwise.reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.teacher_layers = list(teacher_layers)
        self.lambda_cos = float(lambda_cos)
        self.student_layer = int(student_layer)
        self.head = head
        self.reduction = reduction
        n = len(self.teacher_layers)
        # The MLP's inner width is the student's (s3prl: out_layer_inter_dim <= 0 -> D_s).
        self.expand = nn.Linear(student_hidden_size, n * student_hidden_size) if head == "mlp" else None
        self.heads = nn.ModuleList(
            nn.Linear(student_hidden_size, teacher_hidden_size) for _ in self.teacher_layers
        )
        self._dims = (student_hidden_size, teacher_hidden_size)

    def head_config(self) -> dict:
        """The heads' layout: target layers, student layer, ``D_s``, ``D_t`` and ``head``."""
        return {"teacher_layers": self.teacher_layers, "student_layer": self.student_layer,
                "student_hidden_size": self._dims[0], "teacher_hidden_size": self._dims[1],
                "head": self.head}

    def predict(self, source: torch.Tensor) -> list[torch.Tensor]:
        """Predictions of every target layer.

        Args:
            source: ``(B, T, D_s)`` student hidden states.

        Returns:
            One ``(B, T, D_t)`` tensor per entry of ``teacher_layers``, in that order.
        """
        if self.expand is None:
            return [head(source) for head in self.heads]
        inner = F.gelu(self.expand(source)).chunk(len(self.heads), dim=-1)
        return [head(part) for head, part in zip(self.heads, inner, strict=True)]

    @torch.no_grad()
    def s3prl_heads(self) -> dict:
        """The ``mlp`` heads in s3prl's distiller ``output_layer`` layout.

        For :func:`robustdistill.s3prl_export.export_s3prl_distiller` (``heads=``): ``0`` is
        the expanding ``Linear``, ``2`` the ``SplitLinear`` (``weight (N, D_s, D_t)``,
        ``bias (1, 1, N, D_t)``; with one target, ``2.layer`` a plain ``Linear``).

        Returns:
            ``{"pred_layer_id": teacher_layers, "state_dict": {name: tensor}}`` (copies).

        Raises:
            ValueError: ``head`` is not ``"mlp"`` (s3prl has no per-target linear layout) or
                the heads read a student layer other than the last (s3prl's read the last).
        """
        if self.expand is None:
            raise ValueError("only head='mlp' has s3prl's output_layer layout")
        if self.student_layer != -1:
            raise ValueError("s3prl's heads read the last layer; student_layer is "
                             f"{self.student_layer}")
        state = {"0.weight": self.expand.weight.clone(), "0.bias": self.expand.bias.clone()}
        if len(self.heads) == 1:
            state["2.layer.weight"] = self.heads[0].weight.clone()
            state["2.layer.bias"] = self.heads[0].bias.clone()
        else:
            state["2.weight"] = torch.stack([h.weight.T for h in self.heads]).contiguous()
            state["2.bias"] = torch.stack([h.bias for h in self.heads])[None, None].clone()
        return {"pred_layer_id": list(self.teacher_layers), "state_dict": state}

    def forward(self, inputs: DistillationInputs) -> dict[str, LossTerm]:
        """Loss terms, each summed over real frames (see class docstring)."""
        frames = inputs.num_frames
        mask = inputs.frame_mask.float()
        source = inputs.student.hidden_states[self.student_layer][:, :frames]
        scale = 1.0 / len(self.teacher_layers) if self.reduction == "mean" else 1.0
        terms = {}
        for layer, prediction in zip(self.teacher_layers, self.predict(source), strict=True):
            # In float32 even under autocast, as the references' L1Loss and cosine (which
            # autocast runs in float32) against the teacher's float32 targets.
            target = inputs.teacher.hidden_states[layer][:, :frames].detach().float()
            l1, cos = layerwise_frame_losses(prediction.float(), target)
            terms[f"layer{layer}_l1"] = LossTerm((l1 * mask).sum(), "frames", scale)
            terms[f"layer{layer}_cos"] = LossTerm((cos * mask).sum(), "frames",
                                                  self.lambda_cos * scale)
            # L_l itself, logged only (weight 0): its two parts above carry the loss
            terms[f"layer{layer}"] = LossTerm(((l1 + self.lambda_cos * cos) * mask).sum(),
                                              "frames", 0.0)
        return terms
