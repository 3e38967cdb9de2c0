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
#: checkpoint of a run's last step also ``"last_step_lines"``: ``[[split, line], ...]``, that
#: step's ``train`` and ``validation`` lines as written, the last ones of ``metrics.jsonl``
#: before ``metrics_bytes`` (logged at the last step whatever ``training.log_every`` and
#: ``training.eval_every`` say; :func:`_cut_back_log`).
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
                        last_step_lines: list[list[str]] | None = None) -> Path:
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
        last_step_lines: ``step`` is the run's last (``training.max_steps``): its ``train``
            and ``validation`` lines as written to ``metrics``, ``[split, line]`` in their
            order, the last ones before the checkpoint (a run extended past ``step`` leaves
            out those off its own schedule, :func:`resume_or_start`).

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
        if last_step_lines:
            state[_STATE]["last_step_lines"] = last_step_lines
    return save_checkpoint(acc, folder, step, step, state=state, keep=keep, replace=True)


def _cut_back_log(path: Path, state: dict, t) -> list[str] | None:
    """Cut ``metrics.jsonl`` (``path``) back to a checkpoint of a run's last step N (``state``:
    its training state, with ``last_step_lines``) for a run to ``t.max_steps`` (``t``: the
    ``training`` section): the file up to N's lines, then those of N's lines that this run
    logs (all when ``t.max_steps`` is N; in a run extended past N, ``train`` only on
    ``t.log_every`` and ``validation`` only on ``t.eval_every``, as an uninterrupted run).

    The result depends only on the checkpoint and ``t``, not on what an earlier start from the
    same checkpoint did: an extended run killed before its next checkpoint, whose log has
    lost N's lines and gained later ones, is cut back to the same bytes (:func:`truncate_log`
    to the checkpoint's ``metrics_bytes`` would not: those bytes now end elsewhere).

    Returns:
        The splits of N's lines left out (``[]``: none), or None when the checkpoint records
        no lines (not a last step's, or older than this record) or the file does not hold
        them where recorded (edited by hand; said in a warning): then cut back as any other
        checkpoint (:func:`truncate_log`).
    """
    step, size, lines = state["step"], state.get("metrics_bytes"), state.get("last_step_lines")
    if not lines or size is None or not path.is_file():
        return None
    every = {"train": t.log_every, "validation": t.eval_every}
    extended = t.max_steps > step
    block = [(split, line.encode()) for split, line in lines]
    begin = size - sum(len(line) for _, line in block)
    data = path.read_bytes()
    if not _holds_lines_of(data, begin, step, [line for _, line in block]):
        logger.warning("%s: the lines of step %d, the last step of the run that saved its "
                       "checkpoint, are not where it recorded them (from byte %d): cut back "
                       "to its %d bytes, those lines kept (an extended run logs them where an "
                       "uninterrupted run has none)", path, step, begin, size)
        return None
    dropped = [split for split, _ in block if extended and step % every[split]]
    keep = b"".join(line for split, line in block if split not in dropped)
    if data != data[:begin] + keep:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data[:begin] + keep)
        logger.info("%s: cut back to checkpoint_%d (%d bytes)", path, step, begin + len(keep))
    if dropped:
        logger.info("%s: left out the %s line(s) of step %d, logged because it was the last "
                    "step of the run now extended to %d steps (training.eval_every %d, "
                    "log_every %d skip it), so the log is an uninterrupted run's%s", path,
                    " and ".join(dropped), step, t.max_steps, t.eval_every, t.log_every,
                    "; the best validation is chosen without it"
                    if "validation" in dropped else "")
    return dropped


def _holds_lines_of(data: bytes, begin: int, step: int, lines: list[bytes]) -> bool:
    """Whether ``data`` (``metrics.jsonl``) holds, from byte ``begin`` (a line's start), some
    of ``lines`` (step ``step``'s, in their order: all, as written, or those a start extended
    past ``step`` kept), then nothing or what a run resumed from there logged: a line of a
    later step, or of ``step`` in a split ``lines`` lack (a validation a SIGTERM put off)."""
    if not (0 <= begin <= len(data) and (begin == 0 or data[begin - 1:begin] == b"\n")):
        return False
    rest = data[begin:].splitlines(keepends=True)
    i = 0
    for line in lines:
        if i < len(rest) and rest[i] == line:
            i += 1
    if i == len(rest):
        return True
    try:
        row = json.loads(rest[i])
        splits = {json.loads(line)["split"] for line in lines}
    except (ValueError, KeyError, TypeError):
        return False
    return (isinstance(row, dict) and isinstance(row.get("step"), int)
            and (row["step"] > step or row["step"] == step and row.get("split") not in splits))


def _note_unrecorded_last_step(path: Path, step: int, t) -> None:
    """Warn when ``metrics.jsonl`` (``path``, cut back to a checkpoint of ``step`` that records
    no ``last_step_lines``: written before that record) ends with lines of ``step`` that this
    run's schedule (``t``: the ``training`` section, ``max_steps`` past ``step``) skips: the
    last step of an earlier start, whose lines an uninterrupted run has not; they are kept."""
    if not path.is_file():
        return
    off = []
    for line in reversed(path.read_bytes().splitlines()):
        try:
            row = json.loads(line)
        except ValueError:
            break
        if not isinstance(row, dict) or row.get("step") != step:
            break
        every = {"train": t.log_every, "validation": t.eval_every}.get(row.get("split"))
        if every and step % every:
            off.insert(0, row["split"])
    if off:
        logger.warning("%s keeps the %s line(s) of step %d (the last step of an earlier start, "
                       "or logged under another schedule), which training.log_every %d / "
                       "eval_every %d skip: its checkpoint records no last step's lines "
                       "(written before 2026-12-07, or not at a last step), so this run to %d "
                       "steps keeps them (an uninterrupted one has none%s)", path,
                       " and ".join(off), step, t.log_every, t.eval_every, t.max_steps,
                       "; the best validation may be that step's" if "validation" in off
                       else "")


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
    start, counts, dropped = 0, NonFiniteCounts(), None
    newest = _newest_checkpoint(ckpt_dir)
    if newest is not None:
        acc.load_state(str(newest[0]))
        start, counts = newest[1]["step"], NonFiniteCounts.from_state(newest[1])
        if acc.is_main_process:  # what a killed run logged after this checkpoint
            dropped = _cut_back_log(out / "metrics.jsonl", newest[1], t)
            if dropped is None:
                truncate_log(out / "metrics.jsonl", newest[1].get("metrics_bytes"))
                if start < t.max_steps:
                    _note_unrecorded_last_step(out / "metrics.jsonl", start, t)
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
        if best is not None:  # the checkpoint's best validation, and best_student/ put right
            best.resume(newest[0] if newest is not None else None,
                        before_last="validation" in (dropped or []))
    # a fresh start hides what a run killed before its first checkpoint logged (steps >= 0:
    # the step-0 validation too)
    acc.init_trackers("se", config={"seed": cfg.seed, "max_steps": t.max_steps},
                      init_kwargs=tracker_resume_kwargs(start) if newest is not None
                      else {"tensorboard": {"purge_step": 0}})
    metrics = (out / "metrics.jsonl").open("a") if acc.is_main_process else None
    return start, counts, newest, metrics
