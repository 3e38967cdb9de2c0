"""SE teachers: NSNet2 and DTLN from the registry packages' ONNX weights, or any torch model.

``load_teacher("nsnet2" | "dtln")`` returns a frozen
:class:`~robustdistill.se.teachers.base.FrameModel`; see :class:`.base.HookedTeacher` for a
user's own torch model.
"""

from __future__ import annotations

from .base import FrameModel, HookedTeacher, SEOutput
from .onnx_weights import TeacherUnavailable

__all__ = ["FrameModel", "HookedTeacher", "SEOutput", "TeacherUnavailable", "load_teacher",
           "TEACHERS"]

TEACHERS = ("nsnet2", "dtln")


def load_teacher(name: str) -> FrameModel:
    """A frozen (``eval``, no gradients) pretrained teacher by name.

    Raises:
        ValueError: unknown name.
        TeacherUnavailable: its package is not installed.
    """
    if name == "nsnet2":
        from .nsnet2 import NSNet2

        model = NSNet2.from_onnx()
    elif name == "dtln":
        from .dtln import DTLN

        model = DTLN.from_onnx()
    else:
        raise ValueError(f"unknown SE teacher {name!r}; known: {', '.join(TEACHERS)}")
    return model.eval().requires_grad_(False)
