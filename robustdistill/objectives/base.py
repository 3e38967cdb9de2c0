"""What every distillation objective shares: its inputs, its loss terms and the registry.

An objective is an ``nn.Module`` that owns its trainable heads (prediction heads, an
enhancement head) and turns teacher and student outputs into *loss terms*. Each term is a
**sum over real units** (frames, STFT frames, utterances) plus the name of that unit; the
trainer divides each sum by the number of real units in the whole optimizer step (all
micro-batches of gradient accumulation, all ranks), so a loss is a true mean over real
frames whatever the padding, the micro-batch split or the number of processes.

Tensor legend: ``B`` batch, ``S`` samples (16 kHz), ``T`` frames common to teacher and
student (50 per second), ``D_t`` / ``D_s`` teacher / student hidden width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..upstream import UpstreamOutput

__all__ = [
    "DistillationInputs",
    "LossTerm",
    "Objective",
    "OBJECTIVES",
    "build_objective",
    "check_binary_mask",
    "check_no_repeats",
    "register_objective",
]


def check_binary_mask(mask: torch.Tensor, name: str = "frame_mask") -> None:
    """Refuse a mask whose values are not 0/1 (bool masks pass without a device sync).

    A fractional mask would weight frames instead of selecting them.

    Raises:
        ValueError: a value other than 0 and 1.
    """
    if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"{name} must be bool (or 0/1): True on real frames")


def check_no_repeats(items: list, name: str) -> None:
    """Refuse a list that names an item twice (e.g. ``layerwise.teacher_layers: [4, 4]``).

    Each item gets its own head and its own term, named after the item: a repeat would make
    two terms of one name, the second overwriting the first, so one head would never train
    and a ``mean`` over targets would divide by one target too many.

    Raises:
        ValueError: an item that occurs more than once (the message lists them).
    """
    seen, repeated = set(), []
    for item in items:
        key = tuple(item) if isinstance(item, list) else item
        if key in seen and item not in repeated:
            repeated.append(item)
        seen.add(key)
    if repeated:
        raise ValueError(f"{name} names {repeated} twice; list each once")


@dataclass
class DistillationInputs:
    """One micro-batch, after the teacher and the student have run.

    Attributes:
        teacher: teacher output on the clean waveforms.
        student: student output on the corrupted waveforms (with ``extract_features``).
        frame_mask: ``(B, T)`` bool, True on frames real for both models; ``T`` is the
            smaller of the two models' frame counts (they differ by at most one frame when
            the families differ, e.g. a Whisper teacher and a HuBERT student).
        clean: ``(B, S)`` clean waveforms (what the teacher saw), zero-padded.
        noisy: ``(B, S)`` corrupted waveforms (what the student saw), zero-padded.
        lengths: ``(B,)`` real samples per utterance.

    Raises:
        ValueError: (on construction) shapes that do not agree: a ``frame_mask`` that is not
            ``(B, T)`` bool (or 0/1) with ``T`` at most both models' frames, ``clean`` and
            ``noisy`` not the same ``(B, S)``, ``lengths`` not ``(B,)``, or teacher / student
            outputs of another batch size. (Objectives would otherwise broadcast a
            ``(1, T)`` mask over the batch or weight frames by a fractional mask.)
    """

    teacher: UpstreamOutput
    student: UpstreamOutput
    frame_mask: torch.Tensor
    clean: torch.Tensor
    noisy: torch.Tensor
    lengths: torch.Tensor

    def __post_init__(self) -> None:
        if self.clean.dim() != 2 or self.clean.shape != self.noisy.shape:
            raise ValueError(f"clean {tuple(self.clean.shape)} and noisy "
                             f"{tuple(self.noisy.shape)} must be the same (B, S)")
        batch = self.clean.shape[0]
        if tuple(self.lengths.shape) != (batch,):
            raise ValueError(f"lengths must be ({batch},), got {tuple(self.lengths.shape)}")
        mask = self.frame_mask
        if mask.dim() != 2 or mask.shape[0] != batch:
            raise ValueError(f"frame_mask must be ({batch}, T), got {tuple(mask.shape)}")
        for who, out in (("teacher", self.teacher), ("student", self.student)):
            if out.frame_lengths.shape[0] != batch:
                raise ValueError(f"{who} output has batch {out.frame_lengths.shape[0]}, "
                                 f"the waveforms {batch}")
            if mask.shape[1] > out.frame_mask.shape[1]:
                raise ValueError(f"frame_mask has {mask.shape[1]} frames, the {who} only "
                                 f"{out.frame_mask.shape[1]}")
        check_binary_mask(mask)

    @property
    def num_frames(self) -> int:
        """``T``, the common frame axis length."""
        return self.frame_mask.shape[1]


@dataclass
class LossTerm:
    """One part of an objective's loss.

    Attributes:
        total: scalar tensor, the loss summed over the real ``unit`` s of the micro-batch.
        unit: what ``total`` is summed over: ``"frames"``, ``"stft_frames"`` or
            ``"utterances"``; the trainer divides by the step's count of that unit.
        weight: factor applied in the training loss (the logged value is unweighted).
    """

    total: torch.Tensor
    unit: str
    weight: float = 1.0


class Objective(nn.Module):
    """Base class: subclasses set ``name`` and implement :meth:`forward`.

    ``forward(inputs: DistillationInputs) -> dict[str, LossTerm]``; term names are logged
    as ``<objective>/<term>``.
    """

    name: str = ""
    #: Whether :meth:`forward` reads ``inputs.student.extract_features`` (CNN features).
    needs_extract_features: bool = False

    def forward(self, inputs: DistillationInputs) -> dict[str, LossTerm]:  # pragma: no cover
        """The objective's loss terms on one micro-batch.

        Args:
            inputs: teacher and student outputs, the ``(B, T)`` frame mask and the ``(B, S)``
                clean / noisy waveforms (16 kHz samples) with their ``(B,)`` lengths.

        Returns:
            ``{term: LossTerm}``; each ``total`` is a scalar summed over the real units named
            by its ``unit``.

        Raises:
            NotImplementedError: always, on the base class (subclasses implement it).
        """
        raise NotImplementedError

    def student_layers_read(self) -> list[int]:
        """Indices into the student's ``hidden_states`` that :meth:`forward` reads (its
        ``student_layer`` option by default; none when it has no such option)."""
        layer = getattr(self, "student_layer", None)
        return [] if layer is None else [int(layer)]

    def head_config(self) -> dict:
        """Constructor arguments needed to rebuild the heads (saved beside their weights)."""
        return {}

    def count_units(self, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """Real units of a micro-batch beyond ``frames`` and ``utterances`` (which the
        trainer always counts), e.g. STFT frames. ``lengths``: ``(B,)`` samples."""
        return {}


#: Objective classes by name, filled by :func:`register_objective`.
OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str) -> Callable[[type[Objective]], type[Objective]]:
    """Class decorator: make an objective selectable from a config by ``name``.

    Sets the class's ``name`` and adds it to :data:`OBJECTIVES`.

    Raises:
        ValueError: (when the decorator is applied) ``name`` is already registered.
    """

    def wrap(cls: type[Objective]) -> type[Objective]:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is registered twice")
        cls.name = name
        OBJECTIVES[name] = cls
        return cls

    return wrap


def build_objective(name: str, *, teacher_hidden_size: int, teacher_num_layers: int,
                    student_hidden_size: int, student_conv_dim: int | None,
                    student_num_layers: int | None = None, **options) -> Objective:
    """Instantiate a registered objective.

    Args:
        name: registry key (``"layerwise"``, ``"enhancement"``, ...).
        teacher_hidden_size, teacher_num_layers, student_hidden_size, student_conv_dim:
            the model facts every objective may need.
        student_num_layers: the student's transformer layers ``L_s``; when given, every
            student layer the objective reads must index its ``L_s + 1`` hidden states.
        **options: the objective's own keyword arguments (from the config).

    Raises:
        KeyError: unknown name (the message lists the known ones).
        TypeError: an option the objective does not take (a config typo).
        ValueError: a student layer outside ``[-(L_s + 1), L_s]``.
    """
    if name not in OBJECTIVES:
        raise KeyError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    try:
        objective = cls(teacher_hidden_size=teacher_hidden_size,
                        teacher_num_layers=teacher_num_layers,
                        student_hidden_size=student_hidden_size,
                        student_conv_dim=student_conv_dim, **options)
    except TypeError as err:
        raise TypeError(f"objective {name!r}: {err}") from err
    if student_num_layers is not None:
        bad = [x for x in objective.student_layers_read()
               if not -(student_num_layers + 1) <= x <= student_num_layers]
        if bad:
            raise ValueError(f"objective {name!r}: student layers {bad} outside the student's "
                             f"hidden states [0, {student_num_layers}] (or negative from the "
                             "end)")
    return objective
