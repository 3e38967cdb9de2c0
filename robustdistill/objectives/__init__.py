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
from .enhancement import MaskEnhancement
from .layerwise import LayerwisePrediction

__all__ = [
    "OBJECTIVES",
    "DistillationInputs",
    "LayerwisePrediction",
    "LossTerm",
    "MaskEnhancement",
    "Objective",
    "build_objective",
    "register_objective",
]
