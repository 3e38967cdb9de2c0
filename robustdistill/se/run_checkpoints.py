"""A ``train-se`` run's checkpoints, ``checkpoints/checkpoint_N`` (N the step): saving one with the
trainer's state (:func:`save_run_checkpoint`, through
:func:`robustdistill.checkpoints.save_checkpoint`: a kill while saving never leaves a
half-written folder) and finding the newest complete one to resume from (:func:`_newest_checkpoint`;
a damaged one is refused by name: :class:`DamagedCheckpointError`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import IO

import yaml

from ..checkpoints import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    remove_incomplete,
    save_checkpoint,
    tracker_resume_kwargs,
    truncate_log,
    verify_checkpoint,
)
from ..environment import record_environment
from ..files import atomic_path, atomic_write_text
from .config import SETrainConfig
from .stops import NonFiniteCounts

__all__ = ["DamagedCheckpointError", "resume_or_start", "save_run_checkpoint"]

logger = logging.getLogger("robustdistill.se.train")  # train-se's: its log lines keep their name

#: The trainer's state in every checkpoint: ``{"step", "metrics_bytes", "skipped_updates",
#: "nonfinite_losses", "nonfinite_in_a_row"}`` (older checkpoints lack the counters: 0); the
#: checkpoint of a run's last step also ``"last_step_rows"``: ``{split: [start, end]}``, the
#: bytes of ``metrics.jsonl`` holding that step's ``train`` and ``validation`` lines (logged at
#: the last step whatever ``training.log_every`` and ``training.eval_every`` say).
_STATE = "training_state.json"


def _newest_checkpoint(folder: Path) -> tuple[Path, dict] | None:
    """The newest complete checkpoint and its training state (``{"step", "metrics_bytes"}``),
    or None.

    Checkpoints with a manifest first (:func:`robustdistill.checkpoints.save_checkpoint`);
    else the newest ``checkpoint_N`` holding a ``step.json``, as runs before the manifest wrote
    them (its ``step.json`` was written after ``save_state``: its presence marks it complete).

    Raises:
        DamagedCheckpointError: (a ``CheckpointError``) the newest checkpoint with a manifest
            is altered (a file missing or resized: a truncated ``model.safetensors``); it is
            refused by name, not replaced by an older one without a word.
    """
    path = latest_checkpoint(folder)
    if path is not None:
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            raise DamagedCheckpointError(
                f"{err}: refusing to resume from it (allowed: remove that folder to resume "
                "from the checkpoint before it, or give another output_dir)") from err
        return path, json.loads((path / _STATE).read_text())
    legacy = [p for p in list_checkpoints(folder, require_manifest=False)
              if (p / "step.json").is_file()]
    return (legacy[-1], json.loads((legacy[-1] / "step.json").read_text())) if legacy else None


class DamagedCheckpointError(CheckpointError):
    """The newest checkpoint of ``output_dir`` does not match its manifest (found at start-up,
    before any work; ``train-se`` says it in one line)."""


def save_run_checkpoint(acc, folder: Path, step: int, *, metrics: IO[str] | None, counts,
                        best, keep: int, validation_due: bool = False,
                        last_step_rows: dict[str, list[int]] | None = None) -> Path:
    """Save ``folder/checkpoint_<step>`` (every process; the newest ``keep`` complete ones kept).

    Args:
        acc: the run's ``Accelerator`` (``save_state``: the student's and loss heads' weights,
            the optimizer state).
        metrics: the open ``metrics.jsonl`` (the main process; flushed after every line: its
            size is saved, so a resume cuts what was logged after this step) or None (the
            other processes, which write no state file).
        counts: the run's :class:`~robustdistill.se.stops.NonFiniteCounts`.
        best: the run's :class:`~robustdistill.se.validation.BestValidation` (its files go
            with the checkpoint) or None.
        validation_due: the validation due at ``step`` was skipped for a SIGTERM: the resumed
            run does it first.
        last_step_rows: ``step`` is the run's last (``training.max_steps``): the byte ranges
            ``[start, end)`` of ``metrics`` holding its ``train`` and ``validation`` lines, by
            split (a run extended past ``step`` drops those off its own schedule,
            :func:`resume_or_start`).

    Returns:
        The published checkpoint folder.
    """
    state = None
    if metrics:  # flushed after every line
        state = {_STATE: {"step": step, "metrics_bytes": os.fstat(metrics.fileno()).st_size,
                          "num_processes": acc.num_processes,
                          **dataclasses.asdict(counts)}}
        if best is not None:
            state.update(best.checkpoint_files())
        if validation_due:  # skipped for a SIGTERM: the resumed run validates this step
            state[_STATE]["validation_due"] = True
        if last_step_rows:
            state[_STATE]["last_step_rows"] = last_step_rows
    return save_checkpoint(acc, folder, step, step, state=state, keep=keep, replace=True)


def _drop_last_step_rows(path: Path, newest: tuple[Path, dict], t) -> list[str]:
    """In a run extended past its old last step (``newest``: the checkpoint of that step and
    its training state, with ``last_step_rows``; ``t``: the ``training`` section, ``max_steps``
    now larger), remove from ``metrics.jsonl`` (``path``, already cut back to the checkpoint)
    that step's lines that the new schedule does not log: ``train`` off ``t.log_every``,
    ``validation`` off ``t.eval_every``. Returns the splits removed ([]: nothing to do, or a
    range that is not whole lines of the file, with a warning)."""
    step, rows = newest[1]["step"], newest[1].get("last_step_rows") or {}
    if step >= t.max_steps or not path.is_file():
        return []
    every = {"train": t.log_every, "validation": t.eval_every}
    drop = {split: span for split, span in rows.items() if step % every[split]}
    if not drop:
        return []
    data = path.read_bytes()
    for split, (a, b) in drop.items():
        if not _is_line_of(data, a, b, step, split):
            logger.warning("%s: the %s line of step %d (the end of the run extended here) is not "
                           "at bytes %d-%d: kept (the log keeps lines an uninterrupted run has "
                           "not)", path, split, step, a, b)
            return []
    for a, b in sorted(drop.values(), reverse=True):
        data = data[:a] + data[b:]
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    logger.info("%s: removed the %s line(s) of step %d, logged because it was the last step of "
                "the run now extended to %d steps (training.eval_every %d, log_every %d "
                "skip it), so the log is an uninterrupted run's%s", path, " and ".join(drop),
                step, t.max_steps, t.eval_every, t.log_every,
                "; the best validation is chosen without it" if "validation" in drop else "")
    return list(drop)


def _is_line_of(data: bytes, a: int, b: int, step: int, split: str) -> bool:
    """Whether ``data[a:b]`` is one whole JSON line of ``metrics.jsonl`` with this ``step``
    and ``split``."""
    if not (0 <= a < b <= len(data) and data[b - 1:b] == b"\n"
            and (a == 0 or data[a - 1:a] == b"\n") and b"\n" not in data[a:b - 1]):
        return False
    try:
        row = json.loads(data[a:b])
    except ValueError:
        return False
    return isinstance(row, dict) and row.get("step") == step and row.get("split") == split


def resume_or_start(acc, cfg: SETrainConfig, changes: list[str], best
                    ) -> tuple[int, NonFiniteCounts, tuple[Path, dict] | None, IO[str] | None]:
    """Resume the run of ``cfg.output_dir`` from its newest complete checkpoint (the weights
    and optimizer state loaded, ``metrics.jsonl`` cut back to it, ``best`` and
    ``best_student/`` put back as they were then), or start it afresh (a ``metrics.jsonl`` left
    by a run killed before its first checkpoint emptied, its TensorBoard points hidden); then
    write ``config.yaml`` and ``environment.json`` (with ``changes``, a resume's settings other
    than the run's) and start the trackers. Incomplete checkpoints a kill left are removed first.

    A run extended past its old last step (the checkpoint of that step, ``training.max_steps``
    now larger) logs what an uninterrupted run to the new ``max_steps`` logs: that step's
    ``train`` line, when the step is off ``training.log_every``, and its ``validation`` line,
    when off ``training.eval_every``, made only because it was the last step, are removed
    from ``metrics.jsonl``, and with the validation line goes its part in the best
    validation (``best`` takes the best before it, :meth:`BestValidation.resume`). Said in an
    info line. (TensorBoard keeps their points: its resume hides only later steps.)

    Args:
        acc: the run's ``Accelerator`` (the student, loss heads and optimizer prepared).
        changes: :func:`~robustdistill.se.resume_settings._resume_changes`.
        best: the run's :class:`~robustdistill.se.validation.BestValidation` or None.

    Returns:
        ``(start, counts, newest, metrics)``: the step the run goes on from (0 for a fresh
        start), the skipped-step counters, the checkpoint resumed from and its training state
        (None for a fresh start), and ``metrics.jsonl`` open for appending (the main process;
        None on the others).

    Raises:
        DamagedCheckpointError: the newest checkpoint does not match its manifest.
    """
    t = cfg.training
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    if acc.is_main_process:
        remove_incomplete(ckpt_dir)  # what a kill while saving left
    start, counts = 0, NonFiniteCounts()
    newest = _newest_checkpoint(ckpt_dir)
    if newest is not None:
        acc.load_state(str(newest[0]))
        start, counts = newest[1]["step"], NonFiniteCounts.from_state(newest[1])
        if acc.is_main_process:  # what a killed run logged after this checkpoint
            truncate_log(out / "metrics.jsonl", newest[1].get("metrics_bytes"))
        logger.info("resumed from %s (step %d)", newest[0], start)
        if changes and acc.is_main_process:
            logger.warning("resumed with settings other than the run's config.yaml: %s (the "
                           "steps before %d used the old ones; environment.json keeps this "
                           "list)", "; ".join(changes), start)
    elif acc.is_main_process:  # a log left by a run killed before its first checkpoint
        truncate_log(out / "metrics.jsonl", 0)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml",  # whole, even if interrupted
                          yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        record_environment(out, start, config_changes=changes if newest is not None else None)
        dropped = _drop_last_step_rows(out / "metrics.jsonl", newest, t) if newest else []
        if best is not None:  # the checkpoint's best validation, and best_student/ put right
            best.resume(newest[0] if newest is not None else None,
                        before_last="validation" in dropped)
    # a fresh start hides what a run killed before its first checkpoint logged (steps >= 0:
    # the step-0 validation too)
    acc.init_trackers("se", config={"seed": cfg.seed, "max_steps": t.max_steps},
                      init_kwargs=tracker_resume_kwargs(start) if newest is not None
                      else {"tensorboard": {"purge_step": 0}})
    metrics = (out / "metrics.jsonl").open("a") if acc.is_main_process else None
    return start, counts, newest, metrics
