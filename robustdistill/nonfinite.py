"""Steps with a NaN/Inf loss or gradient: agreeing on them across processes, and stopping a
run that keeps producing them. Shared by ``distill`` (:mod:`robustdistill.trainer`) and
``train-se`` (:mod:`robustdistill.se.train`); ``train-speaker`` (:mod:`robustdistill.speaker.
train`), which stops at its first such step, writes its stop through :func:`stop_with_record`
too.

A skipped step changes no weight, so the checkpoint a stopped run saves holds the weights of
its last finite step, and the run can be resumed from it with other settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NoReturn

import torch
from accelerate import Accelerator

from .outcome import STOPPED, write_outcome
from .processes import STOP_RECORD

__all__ = ["NonFiniteTrainingError", "any_process", "any_process_each",
           "largest_adam_learning_rate", "stop_nonfinite", "stop_with_record"]

logger = logging.getLogger(__name__)


class NonFiniteTrainingError(RuntimeError):
    """Too many optimizer steps in a row had a NaN/Inf loss or gradient
    (``training.max_nonfinite_in_a_row``); a checkpoint of the last good weights was saved."""


def largest_adam_learning_rate(beta1: float) -> float:
    """The largest learning rate torch's Adam / AdamW can apply to float32 weights, for the
    first moment's decay ``beta1`` (in ``[0, 1)``).

    Their first step's size is ``lr / (1 - beta1)`` (step 1's bias correction; later steps'
    are smaller, a warm-up's too), passed to ``addcdiv_`` as a float32 scalar: above
    float32's largest number (3.4e38) the step raises "value cannot be converted to type float
    without overflow", a traceback at the first step. A rate just below it moves every weight
    by about ``lr`` and the next step's loss is Inf or NaN: the non-finite stop.

    Returns:
        ``3.4028e38 * (1 - beta1)``: 3.4e37 for torch's default ``beta1`` 0.9.
    """
    return float(torch.finfo(torch.float32).max) * (1.0 - beta1)


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True when ``flag`` is True on any process: the same answer on every process (a
    collective: every process must call it at the same point)."""
    local = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(local, reduction="sum").item() > 0)


def any_process_each(accelerator: Accelerator, *flags: bool) -> tuple[bool, ...]:
    """For each flag, True when it is True on any process: the same answers on every process,
    from one all-reduce of ``len(flags)`` numbers (a collective: every process must call it at
    the same point with as many flags). Used to carry a held SIGTERM
    (:func:`robustdistill.interrupts.sigterm_pending`) on a per-step agreement the trainer
    makes anyway, at the cost of one more number in it."""
    local = torch.tensor([float(f) for f in flags], device=accelerator.device)
    return tuple(bool(v > 0) for v in accelerator.reduce(local, reduction="sum").tolist())


def stop_nonfinite(output_dir: str | Path, step: int, *, in_a_row: int, skipped_updates: int,
                   nonfinite_losses: int, limit: int, checkpoint: str | Path,
                   main_process: bool) -> NoReturn:
    """Write ``OUTPUT_DIR/stopped.json`` (main process only; an earlier segment's
    ``final_state.json`` is removed: :func:`~robustdistill.outcome.write_outcome`) and raise.

    Args:
        output_dir: the run's folder.
        step: the optimizer step the run stopped at.
        in_a_row: skipped steps in a row (at least ``limit``).
        skipped_updates, nonfinite_losses: the run's totals.
        limit: ``training.max_nonfinite_in_a_row``.
        checkpoint: the checkpoint just saved (the last finite weights).
        main_process: whether this process writes ``stopped.json``.

    Raises:
        NonFiniteTrainingError: always, with one line naming the step, the limit and the
            checkpoint to resume from.
    """
    message = (f"stopped at step {step}: {in_a_row} optimizer steps in a row had a NaN/Inf "
               f"loss or gradient (training.max_nonfinite_in_a_row={limit}; {skipped_updates} "
               f"skipped in all). The weights in {checkpoint} are those of the last finite "
               f"step: lower training.learning_rate, set training.max_grad_norm, or check the "
               f"data, then resume from it")
    stop_with_record(output_dir, {"step": step, "reason": "non-finite", "message": message,
                                  "checkpoint": str(checkpoint),
                                  "skipped_updates": skipped_updates,
                                  "nonfinite_losses": nonfinite_losses,
                                  "nonfinite_in_a_row": in_a_row},
                     main_process=main_process)


def stop_with_record(output_dir: str | Path, record: dict[str, Any], *, main_process: bool,
                     error: type[NonFiniteTrainingError] = NonFiniteTrainingError) -> NoReturn:
    """Stop a run for non-finite steps: write ``record`` as ``OUTPUT_DIR/stopped.json`` (main
    process only; an earlier segment's ``final_state.json`` is removed:
    :func:`~robustdistill.outcome.write_outcome`), log its ``message`` as a stop
    (:data:`~robustdistill.processes.STOP_RECORD`: a command prints it in one line,
    :func:`robustdistill.processes.print_stop`) and raise ``error`` with it.

    Args:
        output_dir: the run's folder.
        record: what the readers of ``stopped.json`` need (the card,
            :mod:`robustdistill.publish.provenance`): ``step`` (int), ``reason``
            (``"non-finite"``), ``message`` (the line, str) and ``checkpoint`` (the folder
            holding the weights to go on from, or None when none was saved), plus the
            trainer's own fields.
        main_process: whether this process writes ``stopped.json``.
        error: the exception raised (``train-speaker``'s
            :class:`~robustdistill.speaker.train.NonFiniteLossError`).

    Raises:
        ValueError: ``record`` lacks ``step``, ``reason``, ``message`` or ``checkpoint``.
        NonFiniteTrainingError: otherwise always (``error``), with ``record["message"]``.
    """
    if missing := [k for k in ("step", "reason", "message", "checkpoint") if k not in record]:
        raise ValueError(f"a stop record needs {', '.join(missing)}: {sorted(record)}")
    if main_process:
        write_outcome(output_dir, STOPPED, record)
    logger.error(record["message"], extra=STOP_RECORD)  # a command prints it (print_stop)
    raise error(record["message"])
