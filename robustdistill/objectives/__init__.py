"""Distillation objectives, selectable by name (see ``OBJECTIVES``).

Importing this package registers every objective it ships.
"""

from .base import (
    OBJECTIVES,
    DistillationInputs,
    LossTerm,
    Objective,
    build_objective,
    register_objective,
)
from .cosine_alignment import (
    CosineAlignment,
    LinearInvertedBottleneck,
    cosine_alignment_loss,
    resample_frames,
)
from .enhancement import MaskEnhancement
from .layerwise import LayerwisePrediction
from .schedule import LossSchedule, ScheduleWeights, build_loss_schedule
from .similarity import GramKD, gram_kd_loss, gram_matrix
from .tfckd import TFCalibratedKD, calibrated_set_loss, residual_fusion, tfckd_loss

__all__ = [
    "OBJECTIVES",
    "CosineAlignment",
    "DistillationInputs",
    "GramKD",
    "LayerwisePrediction",
    "LinearInvertedBottleneck",
    "LossSchedule",
    "LossTerm",
    "MaskEnhancement",
    "Objective",
    "ScheduleWeights",
    "TFCalibratedKD",
    "build_loss_schedule",
    "build_objective",
    "calibrated_set_loss",
    "cosine_alignment_loss",
    "gram_kd_loss",
    "gram_matrix",
    "register_objective",
    "resample_frames",
    "residual_fusion",
    "tfckd_loss",
]
