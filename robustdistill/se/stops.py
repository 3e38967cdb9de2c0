"""How a ``train-se`` run stops before its last step: steps with a NaN/Inf loss or gradient norm
(:func:`nonfinite_step`: the same answer on every process; skipped and counted,
:class:`NonFiniteCounts`; ``training.max_nonfinite_in_a_row`` of them in a row stop the run,
:func:`stop_after_nonfinite`), and a SIGTERM (the step under way finished, saved and the run
stopped with exit status 143: :func:`stop_for_sigterm`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch

from ..interrupts import stop_terminated
from ..nonfinite import any_process_each, stop_nonfinite
from ..processes import finish_processes

__all__ = ["NonFiniteCounts", "nonfinite_step", "stop_after_nonfinite", "stop_for_sigterm"]

logger = logging.getLogger("robustdistill.se.train")  # train-se's: its log lines keep their name


@dataclass
class NonFiniteCounts:
    """Steps whose update was skipped (saved in every checkpoint's ``training_state.json``).

    Attributes:
        skipped_updates: steps with a NaN/Inf loss (on any process) or gradient norm, whose
            update was skipped.
        nonfinite_losses: those of them whose loss was NaN/Inf (on any process).
        nonfinite_in_a_row: consecutive skipped steps up to now (reset by a finite one).
    """

    skipped_updates: int = 0
    nonfinite_losses: int = 0
    nonfinite_in_a_row: int = 0

    @classmethod
    def from_state(cls, state: dict) -> NonFiniteCounts:
        """The counters of a checkpoint's training state (0 where it has none)."""
        return cls(**{f.name: int(state.get(f.name, 0)) for f in dataclasses.fields(cls)})

    def record(self, step: int, bad_loss: bool, bad_step: bool, grad_norm: float) -> None:
        """Count step ``step`` (0-based): a skipped one is counted and logged as a warning,
        a finite one resets :attr:`nonfinite_in_a_row`."""
        if not bad_step:
            self.nonfinite_in_a_row = 0
            return
        self.skipped_updates += 1
        self.nonfinite_losses += bad_loss
        self.nonfinite_in_a_row += 1
        logger.warning("step %d: non-finite %s (grad norm %s); update skipped (%d in a row, %d "
                       "in all)", step, "loss" if bad_loss else "gradient", grad_norm,
                       self.nonfinite_in_a_row, self.skipped_updates)


def nonfinite_step(acc, total: torch.Tensor, grad_norm: torch.Tensor | float,
                   sigterm: bool = False) -> tuple[bool, bool, bool]:
    """Whether this step's update must be skipped, and whether the run stops after it, the same
    answers on every process.

    The gradient norm (after DDP's all-reduce) is the same on every process, but a loss can be
    NaN/Inf on one process only with finite gradients (a term without a gradient path), so
    the loss flag is summed over the processes; this process's held SIGTERM rides on the same
    all-reduce (two numbers instead of one: no collective of its own).

    Args:
        acc: the run's ``Accelerator``.
        total: this process's scalar loss.
        grad_norm: the clipped gradients' total norm (before clipping), from
            ``clip_grad_norm_``.
        sigterm: this process holds a SIGTERM (:func:`robustdistill.interrupts.
            sigterm_pending`).

    Returns:
        ``(bad_loss, bad_step, stop)``: the loss is NaN/Inf on some process; the update must
        be skipped (``bad_loss`` or a NaN/Inf gradient norm); some process holds a SIGTERM.
    """
    bad_loss, stop = any_process_each(acc, not bool(torch.isfinite(total.detach()).all()),
                                      sigterm)
    return bad_loss, bad_loss or not math.isfinite(float(grad_norm)), stop


def stop_after_nonfinite(acc, out: Path, step: int, counts: NonFiniteCounts, limit: int,
                         save: Callable[[int], Path], bar) -> NoReturn:
    """Stop a run whose last ``limit`` steps up to ``step`` (done) were all skipped: save a
    checkpoint of ``step`` (the last finite weights), write ``stopped.json`` (every process
    stops here: the decision is the same on all).

    Raises:
        NonFiniteTrainingError: always (:func:`robustdistill.nonfinite.stop_nonfinite`).
    """
    bar.close()
    checkpoint = save(step)
    finish_processes(acc)  # every rank stops here (the decision is the same on all)
    stop_nonfinite(out, step, in_a_row=counts.nonfinite_in_a_row,
                   skipped_updates=counts.skipped_updates,
                   nonfinite_losses=counts.nonfinite_losses,
                   limit=limit, checkpoint=checkpoint,
                   main_process=acc.is_main_process)


def stop_for_sigterm(acc, step: int, validation_due: bool, save: Callable[[int, bool], Path],
                     bar, sigterm_saved: list[tuple[Path, float]]) -> NoReturn:
    """Save a checkpoint of ``step`` (every process), say how long it took, and stop.

    Args:
        save: saves the checkpoint of a step (``validation_due``: the validation due at that
            step, skipped here, is done first by the resumed run); returns its folder.
        sigterm_saved: set to ``[(folder, seconds)]``, for the line of the interrupt.

    Raises:
        Terminated: always (the line names the checkpoint; exit status 143).
    """
    bar.close()
    started = time.perf_counter()
    folder = save(step, validation_due)
    took = time.perf_counter() - started
    sigterm_saved[:] = [(folder, took)]
    if acc.is_main_process:
        logger.warning("SIGTERM: checkpoint %s of step %d saved in %.2f s (the grace period "
                       "before SIGKILL must exceed one step plus this)", folder, step, took)
    finish_processes(acc)
    stop_terminated()
