"""When the KD losses and the supervised task losses count: the two-step schedule of
"Two-Step Knowledge Distillation for Tiny Speech Enhancement" (Daod Nathoo, Kegler and
Stamenovic, arXiv 2309.08144) and the weighted-mixture baseline it is compared against.
Specification: ``objectives.md`` section 3.

A schedule is a pure function of the optimizer step (0-based, the step about to be taken),
so a resumed run, which restores the step, gets exactly the weights of an uninterrupted one.

- ``"sum"``: every loss counts with weight 1 (no schedule; the library's default).
- ``"two_step"``: phase 1 (steps ``0 .. kd_steps - 1``) trains on the KD losses only,
  phase 2 (from step ``kd_steps``) on the task losses only.
- ``"mixture"``: ``alpha * KD + (1 - alpha) * task`` for the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LOSS_SCHEDULES", "LossSchedule", "ScheduleWeights", "build_loss_schedule"]

LOSS_SCHEDULES = ("sum", "two_step", "mixture")


@dataclass(frozen=True)
class ScheduleWeights:
    """The factors of one step.

    Attributes:
        kd: factor on every KD loss term.
        task: factor on every supervised task loss term.
        phase: 1 or 2 for ``"two_step"`` (which phase the step is in), 0 otherwise.
    """

    kd: float
    task: float
    phase: int


@dataclass(frozen=True)
class LossSchedule:
    """Per-step weights of the KD and task losses.

    ``"two_step"`` is the schedule of "Two-Step Knowledge Distillation for Tiny Speech
    Enhancement" (arXiv 2309.08144); ``"mixture"`` is the baseline it is compared against.

    Args:
        kind: ``"sum"``, ``"two_step"`` or ``"mixture"`` (module docstring).
        kd_steps: steps of phase 1 for ``"two_step"`` (``>= 1``).
        alpha: KD share for ``"mixture"``, in ``[0, 1]``.

    Raises:
        ValueError: an unknown kind, ``kd_steps < 1`` for ``"two_step"``, ``alpha`` outside
            ``[0, 1]``.

    Example::

        schedule = LossSchedule("two_step", kd_steps=1000)
        w = schedule.weights(step)
        loss = w.kd * kd_loss + w.task * task_loss
    """

    kind: str = "sum"
    kd_steps: int = 0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in LOSS_SCHEDULES:
            raise ValueError(f"loss schedule must be one of {LOSS_SCHEDULES}, got {self.kind!r}")
        if self.kind == "two_step" and self.kd_steps < 1:
            raise ValueError(f"two_step needs kd_steps >= 1, got {self.kd_steps}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"mixture alpha must lie in [0, 1], got {self.alpha}")

    def weights(self, step: int) -> ScheduleWeights:
        """Weights for the 0-based optimizer ``step``.

        Raises:
            ValueError: a negative step.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.kind == "two_step":
            if step < self.kd_steps:
                return ScheduleWeights(1.0, 0.0, 1)
            return ScheduleWeights(0.0, 1.0, 2)
        if self.kind == "mixture":
            return ScheduleWeights(self.alpha, 1.0 - self.alpha, 0)
        return ScheduleWeights(1.0, 1.0, 0)

    def single_phase_note(self, max_steps: int) -> str | None:
        """A warning for a ``"two_step"`` run of ``max_steps`` that never reaches phase 2
        (``kd_steps >= max_steps``: its task losses have factor 0 throughout, which
        suits only a KD-only run to be resumed with more steps), else None."""
        if self.kind != "two_step" or self.kd_steps < max_steps:
            return None
        return (f"two_step: kd_steps ({self.kd_steps}) >= max_steps ({max_steps}), so this run "
                "never reaches phase 2 and its task losses never train (resume with more "
                "steps to train them)")

    def switches_at(self, step: int) -> bool:
        """True for the first step of phase 2 (``step == kd_steps`` of ``"two_step"``)."""
        return self.kind == "two_step" and step == self.kd_steps


def build_loss_schedule(kind: str = "sum", kd_steps: int = 0,
                        alpha: float = 0.5) -> LossSchedule:
    """:class:`LossSchedule` from config values (errors as its constructor)."""
    return LossSchedule(kind, int(kd_steps), float(alpha))
