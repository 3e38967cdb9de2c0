"""The end of a ``train-se`` run: the student saved in ``output_dir/student/``
(``save_pretrained``) and ``final_state.json`` (its size, a SHA-256 of its parameters on every
process, the skipped updates, the dropped speech files, the best validation), written by
:func:`save_final_student` on the main process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import IO

import torch

from ..outcome import FINAL_STATE, write_outcome
from .students import count_parameters

__all__ = ["parameter_hash", "save_final_student"]

logger = logging.getLogger("robustdistill.se.train")  # train-se's: its log lines keep their name


def parameter_hash(model: torch.nn.Module) -> str:
    """SHA-256 over the model's parameters (names and float32 bytes, in order)."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_final_student(acc, out: Path, student, loss_fn, *, max_steps: int, counts, maker,
                       best, metrics: IO[str] | None) -> None:
    """Save ``out/student/`` and ``out/final_state.json`` (the main process), after every
    process has finished its steps; close ``metrics``.

    Args:
        acc: the run's ``Accelerator``; ``student``, ``loss_fn``: the trained (prepared)
            student and loss heads (every process hashes its own copies:
            ``parameter_sha256_per_rank``, ``ranks_identical``).
        counts: the run's :class:`~robustdistill.se.stops.NonFiniteCounts`.
        maker: the run's :class:`~robustdistill.se.data.PairMaker` (its dropped speech files).
        best: the run's :class:`~robustdistill.se.validation.BestValidation` or None.
        metrics: the open ``metrics.jsonl`` (main process) or None.
    """
    from accelerate.utils import gather_object

    acc.wait_for_everyone()
    model = acc.unwrap_model(student)
    per_rank = gather_object([parameter_hash(model) + "/"
                              + parameter_hash(acc.unwrap_model(loss_fn))])
    if acc.is_main_process:
        if best is not None and best.end_note() is not None:
            logger.warning("validation: %s", best.end_note())
        model.save_pretrained(out / "student")
        write_outcome(out, FINAL_STATE, {
            "step": max_steps, "parameters": count_parameters(model),
            "compression_vs_nsnet2": model.compression(), "latency_ms": model.latency_ms,
            "parameter_sha256": parameter_hash(model), "num_processes": acc.num_processes,
            "parameter_sha256_per_rank": per_rank,
            "ranks_identical": len(set(per_rank)) == 1, **dataclasses.asdict(counts),
            "skipped_speech_files": maker.speech.skipped,
            "best_validation": best.state if best is not None else None})
        metrics.close()
        # as `distill`'s "done: RUN/student": the command otherwise ends on a progress bar
        logger.info("done: %s (%s beside it)", out / "student", FINAL_STATE)
