"""Supervised SE losses and the KD recipes of the three SE distillation papers.

The KD losses themselves live in :mod:`robustdistill.objectives` (one implementation each);
this module picks activation pairs of an SE teacher and student and combines the terms:

- task: negative SI-SDR of the enhanced signal against the clean target (dB; Le Roux et al.,
  arXiv 1811.02508), optionally plus an L1 magnitude-spectrum loss (``spectral_weight``).
- ``output_kd``: negative SI-SDR of the student's output against the teacher's output (same
  units as the task loss, so a weighted mixture of the two is meaningful; our choice).
- ``gram``: fine-grained similarity-preserving KD on intra-activation Gram matrices
  (:func:`robustdistill.objectives.similarity.gram_kd_loss`; "Two-step knowledge distillation
  for tiny speech enhancement", arXiv 2309.08144) for each ``(student, teacher)`` layer pair.
- ``cosine``: ``1 - cos`` between a linear inverted bottleneck of a student latent and the
  teacher's latent on the **clean** input (``teacher_input: clean``;
  :mod:`robustdistill.objectives.cosine_alignment`, arXiv 2505.03442).
- ``tfckd``: intra/inter-set KD with time-frequency calibration on correlated sets of layers,
  each student layer linearly projected to the teacher's width
  (:func:`robustdistill.objectives.tfckd.tfckd_loss`, arXiv 2506.13127).

The KD terms (each times its weight) are summed into ``KD``; the schedule
(:class:`robustdistill.objectives.schedule.LossSchedule`) gives the total
``w.kd * KD + w.task * task``: ``"sum"``, ``"mixture"`` (``alpha * KD + (1 - alpha) * task``,
the usual baseline) or ``"two_step"`` (KD only for ``kd_steps`` steps, then task only).
The teacher activations a config distils (:func:`teacher_layers`) and the activation widths its
heads are built for (:func:`_widths`) are the trainer's and the resume check's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

from ..objectives.cosine_alignment import LinearInvertedBottleneck, cosine_alignment_loss
from ..objectives.schedule import LossSchedule
from ..objectives.similarity import gram_kd_loss
from ..objectives.tfckd import tfckd_loss
from .teachers import TEACHERS
from .teachers.nsnet2 import NSNet2

if TYPE_CHECKING:
    from .students import StudentConfig

__all__ = ["LossConfig", "SELoss", "neg_si_sdr", "METHODS", "teacher_layers"]

#: The methods compared in ``docs/se.md`` (a recipe each in ``configs/se_*.yaml``).
METHODS = ("supervised", "mixture", "two_step_gram", "cosine_ib", "tfckd")


def neg_si_sdr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``-SI-SDR`` in dB (zero-mean signals, arXiv 1811.02508; torchmetrics,
    the definition of :func:`robustdistill.metrics.enhancement.si_sdr`, differentiable).

    Args:
        estimate, reference: ``(B, N)``; ``reference`` is detached.

    Raises:
        ValueError: shapes differ.
    """
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and reference "
                         f"{tuple(reference.shape)} differ")
    return -scale_invariant_signal_distortion_ratio(estimate, reference.detach(),
                                                     zero_mean=True).mean()


@dataclass
class LossConfig:
    """The loss of one recipe (see the module docstring).

    Attributes:
        schedule: ``"sum"``, ``"mixture"`` or ``"two_step"``.
        kd_steps: phase-1 steps of ``"two_step"``.
        alpha: KD share of ``"mixture"``.
        spectral_weight: weight of an extra L1 magnitude loss in the task loss (0: SI-SDR only).
        teacher: ``"nsnet2"`` (frame-aligned with the students) or None for no teacher;
            ``"dtln"`` (8 ms frames) only for ``output_kd``.
        teacher_input: ``"noisy"`` (what the student sees) or ``"clean"`` (arXiv 2505.03442).
        output_kd_weight: weight of the output KD term (0: off).
        gram_weight: weight of the Gram KD term (0: off).
        gram_pairs: ``[[student_layer, teacher_layer], ...]`` activation names (note the
            order: the registry's ``gram_kd.layer_pairs`` is ``[teacher, student]``); the
            term is the sum over pairs, as the paper's sum over distilled layers.
        gram_axes: Gram axes (``"time"``; ``"feature"`` needs equal widths).
        cosine_weight: weight of the cosine-alignment term (0: off).
        cosine_pairs: ``[[student_layer, teacher_layer], ...]``; the term is the mean over
            pairs.
        tfckd_weight: weight of the I2RF-TFCKD term (0: off).
        tfckd_student_sets, tfckd_teacher_sets: correlated sets of layer names (same count).

    Raises:
        ValueError: (on construction) a schedule :class:`LossSchedule` rejects, an unknown
            ``teacher_input``, a KD weight > 0 without ``teacher``, ``output_kd`` with
            ``teacher_input: clean``, student and teacher sets of different counts, or
            ``gram_axes`` that is not a non-empty list (a bare string would be read letter by
            letter), an unknown ``teacher``, a Gram / cosine / TFCKD term with a teacher other
            than NSNet2, or a teacher layer that is not an NSNet2 activation (student layers:
            :class:`~robustdistill.se.train.SETrainConfig`, which knows the student's depth).
    """

    schedule: str = "sum"
    kd_steps: int = 0
    alpha: float = 0.5
    spectral_weight: float = 0.0
    teacher: str | None = None
    teacher_input: str = "noisy"
    output_kd_weight: float = 0.0
    gram_weight: float = 0.0
    gram_pairs: list = field(default_factory=lambda: [["gru1", "gru1"], ["gru2", "gru2"]])
    gram_axes: list = field(default_factory=lambda: ["time"])
    cosine_weight: float = 0.0
    cosine_pairs: list = field(default_factory=lambda: [["gru2", "gru2"]])
    tfckd_weight: float = 0.0
    tfckd_student_sets: list = field(default_factory=lambda: [["fc_in", "gru1"], ["gru2"]])
    tfckd_teacher_sets: list = field(default_factory=lambda: [["fc_in", "gru1"], ["gru2"]])

    def __post_init__(self) -> None:
        self.schedule_obj = LossSchedule(self.schedule, int(self.kd_steps), float(self.alpha))
        if self.teacher_input not in ("noisy", "clean"):
            raise ValueError(f"teacher_input must be 'noisy' or 'clean', got "
                             f"{self.teacher_input!r}")
        if self.uses_teacher and self.teacher is None:
            raise ValueError("a KD weight is > 0 but no teacher is set (loss.teacher)")
        if self.output_kd_weight > 0 and self.teacher_input != "noisy":
            raise ValueError("output_kd compares outputs on the same input: needs "
                             "teacher_input 'noisy'")
        if len(self.tfckd_student_sets) != len(self.tfckd_teacher_sets):
            raise ValueError("tfckd_student_sets and tfckd_teacher_sets need the same length")
        if not isinstance(self.gram_axes, list | tuple) or not self.gram_axes:
            raise ValueError(f"gram_axes must be a non-empty list of axis names, e.g. [time], "
                             f"got {self.gram_axes!r}")
        if self.teacher is not None and self.teacher not in TEACHERS:
            raise ValueError(f"unknown SE teacher {self.teacher!r}; known: "
                             f"{', '.join(TEACHERS)}")
        feature_kd = [name for name in ("gram", "cosine", "tfckd")
                      if getattr(self, f"{name}_weight") > 0]
        if feature_kd and self.teacher != "nsnet2":
            raise ValueError(f"{' / '.join(feature_kd)} KD needs loss.teacher 'nsnet2' (its "
                             f"10 ms frames are the students'; {self.teacher!r} distils through "
                             "output_kd only)")
        unknown = sorted(set(self.layers("teacher")) - set(NSNet2.activation_names))
        if unknown:
            raise ValueError(f"teacher layer(s) {unknown} are not NSNet2 activations "
                             f"{list(NSNet2.activation_names)}")

    def layers(self, who: str) -> tuple[str, ...]:
        """The ``"student"`` or ``"teacher"`` activation names the KD terms that are on read
        (config order, each once)."""
        side = 0 if who == "student" else 1
        names = []
        if self.gram_weight > 0:
            names += [pair[side] for pair in self.gram_pairs]
        if self.cosine_weight > 0:
            names += [pair[side] for pair in self.cosine_pairs]
        if self.tfckd_weight > 0:
            sets = self.tfckd_student_sets if who == "student" else self.tfckd_teacher_sets
            names += [name for names_ in sets for name in names_]
        return tuple(dict.fromkeys(names))

    @property
    def uses_teacher(self) -> bool:
        """Whether any KD term is on."""
        return any(w > 0 for w in (self.output_kd_weight, self.gram_weight, self.cosine_weight,
                                   self.tfckd_weight))


def _act(acts: dict, name: str, who: str) -> torch.Tensor:
    if name not in acts:
        raise KeyError(f"{who} has no activation {name!r}; it has {sorted(acts)}")
    return acts[name]


class SELoss(nn.Module):
    """Task + KD loss with the trainable projections the KD terms need.

    Args:
        config: :class:`LossConfig`.
        student_widths, teacher_widths: activation name -> width ``D``.

    Raises:
        ValueError: the ``tfckd`` teacher layers do not share one width.

    Call: ``loss(step, student_out, clean, teacher_out) -> (total, parts)`` where the outputs
    are :class:`~robustdistill.se.teachers.base.SEOutput` with activations ``(B, K, D)``
    (teacher and student on the same frame grid), ``clean`` is ``(B, N)``, ``parts`` maps
    each term's name to its (unweighted) value for logging.
    """

    def __init__(self, config: LossConfig, student_widths: dict[str, int],
                 teacher_widths: dict[str, int] | None = None):
        super().__init__()
        self.config = config
        tw = teacher_widths or {}
        self.bottlenecks = nn.ModuleDict()
        if config.cosine_weight > 0:
            for s, t in config.cosine_pairs:
                self.bottlenecks[f"{s}__{t}"] = LinearInvertedBottleneck(student_widths[s], tw[t])
        self.projections = nn.ModuleDict()
        if config.tfckd_weight > 0:
            widths = {tw[t] for ts in config.tfckd_teacher_sets for t in ts}
            if len(widths) != 1:
                raise ValueError(f"tfckd teacher layers must share one width, got {widths}")
            width = widths.pop()
            # config order, not a set's: a set of strings is ordered by the process's hash
            # seed, and parameter order must agree across processes and resumed runs
            for s in dict.fromkeys(s for ss in config.tfckd_student_sets for s in ss):
                self.projections[s] = nn.Linear(student_widths[s], width)

    def task_loss(self, enhanced: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """``-SI-SDR`` in dB (+ ``spectral_weight`` * L1 of 512-point magnitude spectra,
        hop 128, Hann window), batch mean.

        Args:
            enhanced, clean: ``(B, N)`` waveforms (samples).

        Returns:
            Scalar tensor.

        Raises:
            ValueError: shapes differ.
        """
        loss = neg_si_sdr(enhanced, clean)
        if self.config.spectral_weight > 0:
            win = torch.hann_window(512, device=enhanced.device)
            mag = [torch.stft(x, 512, 128, window=win, return_complex=True).abs()
                   for x in (enhanced, clean)]
            loss = loss + self.config.spectral_weight * (mag[0] - mag[1]).abs().mean()
        return loss

    def kd_terms(self, student_out, teacher_out) -> dict[str, torch.Tensor]:
        """Each KD term (unweighted), only those with a weight > 0."""
        c, sa, ta = self.config, student_out.activations, teacher_out.activations
        terms = {}
        if c.output_kd_weight > 0:
            terms["output_kd"] = neg_si_sdr(student_out.enhanced, teacher_out.enhanced)
        if c.gram_weight > 0:
            terms["gram"] = sum(gram_kd_loss(_act(sa, s, "student"), _act(ta, t, "teacher"),
                                             axes=tuple(c.gram_axes)) for s, t in c.gram_pairs)
        if c.cosine_weight > 0:
            terms["cosine"] = sum(cosine_alignment_loss(
                self.bottlenecks[f"{s}__{t}"](_act(sa, s, "student")), _act(ta, t, "teacher"))
                for s, t in c.cosine_pairs) / len(c.cosine_pairs)
        if c.tfckd_weight > 0:
            s_sets = [[self.projections[s](_act(sa, s, "student")) for s in ss]
                      for ss in c.tfckd_student_sets]
            t_sets = [[_act(ta, t, "teacher") for t in ts] for ts in c.tfckd_teacher_sets]
            terms["tfckd"] = tfckd_loss(s_sets, t_sets)
        return terms

    def forward(self, step: int, student_out, clean: torch.Tensor, teacher_out=None):
        """The scheduled total loss of optimizer step ``step``.

        Args:
            step: optimizer step (picks the schedule's KD / task weights).
            student_out: the student's :class:`~robustdistill.se.teachers.base.SEOutput`:
                ``enhanced`` ``(B, N)`` samples, activations ``(B, K, D)``.
            clean: ``(B, N)`` clean target waveform (samples).
            teacher_out: the teacher's ``SEOutput`` on the same frame grid; may be None when
                :meth:`needs_teacher` is False for ``step``.

        Returns:
            ``(total, parts)``: the scalar loss to minimise and ``{term: scalar}`` with the
            unweighted task loss (``"task"``, negative SI-SDR in dB, when its weight is > 0
            or no KD term is on) and each KD term that is on.

        Raises:
            ValueError: a KD term is on at ``step`` but ``teacher_out`` is None, or
                ``enhanced`` and ``clean`` differ in shape.
            KeyError: a configured layer is not among the student's or teacher's activations.
        """
        c = self.config
        w = c.schedule_obj.weights(step)
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=clean.device)
        if w.task > 0 or not c.uses_teacher:
            parts["task"] = self.task_loss(student_out.enhanced, clean)
            total = total + (w.task if c.uses_teacher else 1.0) * parts["task"]
        if c.uses_teacher and w.kd > 0:
            if teacher_out is None:
                raise ValueError("this recipe needs the teacher's output")
            weights = {"output_kd": c.output_kd_weight, "gram": c.gram_weight,
                       "cosine": c.cosine_weight, "tfckd": c.tfckd_weight}
            for name, value in self.kd_terms(student_out, teacher_out).items():
                parts[name] = value
                total = total + w.kd * weights[name] * value
        return total, parts

    def student_needs(self, step: int) -> tuple[bool, tuple[str, ...]]:
        """What the loss of step ``step`` reads of the student: ``(enhanced output?, activation
        names)``. The task loss and output KD read the output; the feature KD terms read their
        student layers, and only while the schedule's KD weight is above 0."""
        c = self.config
        w = c.schedule_obj.weights(step)
        kd = c.uses_teacher and w.kd > 0
        output = w.task > 0 or not c.uses_teacher or (kd and c.output_kd_weight > 0)
        layers: list[str] = []
        if kd:
            if c.gram_weight > 0:
                layers += [s for s, _ in c.gram_pairs]
            if c.cosine_weight > 0:
                layers += [s for s, _ in c.cosine_pairs]
            if c.tfckd_weight > 0:
                layers += [s for ss in c.tfckd_student_sets for s in ss]
        return output, tuple(dict.fromkeys(layers))

    def needs_teacher(self, step: int) -> bool:
        """Whether step ``step`` uses the teacher (two-step phase 2 does not)."""
        return self.config.uses_teacher and self.config.schedule_obj.weights(step).kd > 0


def teacher_layers(loss: LossConfig) -> tuple[str, ...]:
    """The teacher activations a loss config distils."""
    names: set[str] = set()
    if loss.gram_weight > 0:
        names |= {t for _, t in loss.gram_pairs}
    if loss.cosine_weight > 0:
        names |= {t for _, t in loss.cosine_pairs}
    if loss.tfckd_weight > 0:
        names |= {t for ts in loss.tfckd_teacher_sets for t in ts}
    return tuple(sorted(names))


def _widths(student: StudentConfig, teacher: str | None
            ) -> tuple[dict[str, int], dict[str, int]]:
    """The student's and the teacher's activation widths (name -> ``D``) that the loss heads
    are built for (the teacher's: NSNet2's layers; ``{}`` for no teacher)."""
    s_widths = {"fc_in": student.hidden_size, "fc_hidden": student.hidden_size,
                **{f"gru{i + 1}": student.hidden_size for i in range(student.num_layers)}}
    t_widths = ({"fc_in": 400, "gru1": 400, "gru2": 400, "fc_out1": 600, "fc_out2": 600,
                 "mask": 161} if teacher == "nsnet2" else {})
    return s_widths, t_widths
