"""A distillation's checkpoints (:mod:`robustdistill.trainer`): what goes into one, and the
checks and loading of a resume.

``accelerator.save_state`` writes model, optimizer and RNG states; beside them
``training_state.json`` holds the :class:`TrainingProgress`, the scheduler, each rank's stream
position, the size of ``metrics.jsonl``, the teacher cache lookups, each head's layout and the
trajectory (what fixes which batches the steps see). A resume refuses a checkpoint of another
trajectory or process count, and one past ``training.max_steps``, before it writes or loads
anything. Writing, publishing and rotating the folders is :mod:`robustdistill.checkpoints`'s.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate.utils import gather_object
from accelerate.utils.other import load as accelerate_load

from .checkpoints import (
    TRAINING_STATE,
    CheckpointError,
    checkpoint_index,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
    truncate_log,
    verify_checkpoint,
)
from .config import ConfigError
from .metrics_log import file_size
from .trainer_model import write_student_init

if TYPE_CHECKING:
    from .trainer import _Run

__all__ = ["CROP_GRID", "DamagedCheckpointError", "TrainingProgress", "resume_run",
           "save_run_checkpoint"]

# the trainer's lines, under its logger name
logger = logging.getLogger("robustdistill.trainer")


class DamagedCheckpointError(CheckpointError, ConfigError):
    """The checkpoint a resume would start from is not a complete one of this trainer (a file
    cut short or missing, a damaged manifest): a ``ConfigError`` too, so ``distill`` names it
    in one line before any work (it was a ``CheckpointError`` traceback)."""


# the trajectory key (checkpoints' training_state.json) of the training crops' start grid
CROP_GRID = "crop grid (samples; set by teacher_cache)"


@dataclass
class TrainingProgress:
    """Where the run is; saved in every checkpoint (``training_state.json``)."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_validation_loss: float = math.inf
    skipped_updates: int = 0
    nonfinite_losses: int = 0  # steps whose loss was NaN/Inf (on any rank)
    nonfinite_in_a_row: int = 0  # consecutive non-finite steps (reset by a finite one)
    scaler_skipped_steps: int = 0  # fp16: steps whose update the GradScaler skipped (inf/NaN)
    # this step's validation was due but cut short by a SIGTERM: the resumed run does it first
    validation_due: bool = False

    def state_dict(self) -> dict:
        """Every field as a ``{name: value}`` dict (a shallow copy)."""
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        """Set each field named in ``state`` (a :meth:`state_dict`); fields it omits keep
        their current value. Keys are not checked: an unknown key becomes a new attribute.
        ``best_validation_loss`` ``null`` (strict JSON's infinity before any finite validation,
        :mod:`robustdistill.strict_json`) is ``math.inf`` again."""
        for key, value in state.items():
            setattr(self, key, value)
        if self.best_validation_loss is None:
            self.best_validation_loss = math.inf


def save_run_checkpoint(run: _Run) -> Path:
    """Write ``checkpoints/checkpoint_N`` so that it is only ever seen complete.

    Every rank writes its part (``accelerator.save_state``: model as safetensors,
    optimizer, RNG states) into ``checkpoints/.tmp-checkpoint_N``; the main process adds
    ``training_state.json`` (progress, scheduler, each rank's stream position, the size of
    ``metrics.jsonl``) and the manifest, flushes everything to disk, renames the folder to
    ``checkpoint_N`` and deletes all but the ``training.keep_checkpoints`` newest complete
    checkpoints (:func:`robustdistill.checkpoints.save_checkpoint`).

    Returns:
        The checkpoint folder.
    """
    acc = run.accelerator
    index = run._next_checkpoint
    streams = None
    if run.sampler is None:  # before the batches of a step that did not run, if any
        streams = gather_object([run._stream_restored or run.train_set.state_dict()])
    lookups = (gather_object([run.teacher_cache.lookups()])
               if run.teacher_cache is not None else None)
    state = None
    if acc.is_main_process:
        state = {TRAINING_STATE: {
            "progress": run.progress.state_dict(), "scheduler": run.scheduler.state_dict(),
            "stream_per_rank": streams, "num_processes": acc.num_processes,
            "trajectory": _trajectory(run), "metrics_bytes": file_size(run.metrics_path),
            # each rank's teacher cache lookups so far: final_state.json sums the whole run
            "teacher_cache_lookups": lookups,
            # each head's layout, so that `robustdistill export` of this checkpoint writes
            # the same rebuild recipe as the trainer's own export
            "head_configs": {name: objective.head_config()
                             for name, objective in run.objectives.items()}}}
    final = save_checkpoint(acc, run.checkpoint_dir, index, run.progress.step, state=state,
                            keep=run.cfg.training.keep_checkpoints)
    run._next_checkpoint = index + 1
    run.last_checkpoint = (run.progress.step, final)
    logger.info("checkpoint %s saved at step %d", final, run.progress.step)
    return final


def _trajectory(run: _Run) -> dict:
    """What fixes which batches the steps see (saved with every checkpoint and compared
    on resume): the seed, batch, accumulation, crop settings (the crop grid in samples
    too: a teacher cache puts crop starts on the teacher's frames, or on whole chunks)
    and training item count."""
    cfg = run.cfg
    out = {"seed": cfg.seed, "data.batch_size": cfg.data.batch_size,
           "data.max_length_s": cfg.data.max_length_s,
           "data.min_length_s": cfg.data.min_length_s,
           "training.gradient_accumulation_steps": cfg.training.gradient_accumulation_steps}
    if run.sampler is not None:
        out["training items"] = run.sampler.num_samples
        out[CROP_GRID] = int(run.train_set.crop_grid)
    return out


def resume_run(run: _Run, where: str) -> bool:
    """Load a checkpoint; the loop continues from its step.

    Args:
        where: ``"latest"`` (the newest complete checkpoint of this run), ``"auto"``
            (the same, or a fresh start when there is none: for restart loops), or a
            checkpoint folder.

    Returns:
        True when a checkpoint was loaded.

    Raises:
        FileNotFoundError: ``"latest"`` with no complete checkpoint, or a missing folder.
        DamagedCheckpointError: (a ``CheckpointError`` and a ``ConfigError``) the folder
            is incomplete, altered, or not written by this trainer (no or a damaged
            ``checkpoint.json``, no ``training_state.json``).
        CheckpointError: an RNG state file that is not tensors only.
        ConfigError: the checkpoint was written with another number of processes, or with
            another seed, batch, accumulation, crop length or training item count
            (:func:`_trajectory`), or is past ``training.max_steps``; a streaming dataset's
            checkpoint written with another ``data.num_workers``.
    """
    acc = run.accelerator
    if where in ("latest", "auto"):
        path = latest_checkpoint(run.checkpoint_dir)
        if path is None:
            if where == "auto":
                logger.info("resume_from auto: no complete checkpoint under %s; starting "
                            "from step 0", run.checkpoint_dir)
                return False
            raise FileNotFoundError(
                f"resume_from latest: no complete checkpoint under {run.checkpoint_dir}")
    else:
        path = Path(where)
        if not path.is_dir():
            raise FileNotFoundError(f"resume_from: checkpoint folder {path} does not exist")
    try:
        verify_checkpoint(path)
        if not (path / TRAINING_STATE).is_file():
            raise CheckpointError(f"{path} has no {TRAINING_STATE}: not written by this "
                                  "trainer")
    except CheckpointError as err:  # before any work: one line, not a traceback
        raise DamagedCheckpointError(
            f"{err}: refusing to resume from it (allowed: remove that folder to resume from "
            "the checkpoint before it, or --training.resume_from an earlier checkpoint "
            "folder)") from err
    state = json.loads((path / TRAINING_STATE).read_text())
    if state["num_processes"] != acc.num_processes:
        raise ConfigError(f"{path} was written by {state['num_processes']} process(es); this "
                         f"run has {acc.num_processes}: exact resume needs the same number")
    step = int((state.get("progress") or {}).get("step", 0))
    if step > run.cfg.training.max_steps:
        raise ConfigError(
            f"{path} is at step {step}, past training.max_steps "
            f"{run.cfg.training.max_steps}: a resume cannot shorten a run (its config and "
            f"card would say {run.cfg.training.max_steps} steps); allowed: max_steps >= "
            f"{step}, or `robustdistill export --run RUN --checkpoint DIR` of an earlier "
            "checkpoint")
    saved, now = state.get("trajectory", {}), _trajectory(run)
    changed = {k: (saved[k], now.get(k)) for k in saved if saved[k] != now.get(k)}
    if changed:
        raise ConfigError(f"{path} was trained with other settings that fix the data order "
                         "and the steps; resuming would not continue that run: " + "; ".join(
                             f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()))
    # accelerate would only log ("Could not load random states") and go on with other RNG
    # states, silently breaking exact resume: load this rank's file first, the same way.
    rng_file = path / f"random_states_{acc.process_index}.pkl"
    try:
        accelerate_load(rng_file)  # torch.load(weights_only=True) plus numpy arrays
    except Exception as err:
        raise CheckpointError(f"{rng_file}: not a tensor-only RNG state file ({err}); "
                              "refusing to resume from it") from err
    if run.sampler is None:  # before anything is written or loaded: it may refuse
        try:  # replays the stream up to its position (shuffle buffer and workers too)
            run.train_set.load_state_dict(state["stream_per_rank"][acc.process_index])
        except ValueError as err:  # saved with another data.num_workers
            raise ConfigError(f"{path}: {err} (data.num_workers)") from err
    write_student_init(run)  # the checks passed; before the checkpoint's weights load
    acc.load_state(str(path))  # weights_only loads only (safetensors, tensors, RNG arrays)
    run.progress.load_state_dict(state["progress"])
    run.scheduler.load_state_dict(state["scheduler"])
    # What this run logged after its own checkpoint goes (metrics.jsonl now, TensorBoard
    # when the trackers start); another run's checkpoint leaves this run's logs alone.
    run.resumed_own_checkpoint = path.parent.resolve() == run.checkpoint_dir.resolve()
    if run.resumed_own_checkpoint:
        run.last_checkpoint = (run.progress.step, path)
    if acc.is_main_process and run.resumed_own_checkpoint:
        truncate_log(run.metrics_path, state.get("metrics_bytes"))
    lookups = state.get("teacher_cache_lookups")  # None: no cache then, or an older run
    if run.resumed_own_checkpoint and run.teacher_cache is not None and lookups:
        run.teacher_cache.restore_lookups(lookups[acc.process_index])
    run._stream_resumed = run.sampler is None
    indices = [checkpoint_index(p) for p in list_checkpoints(run.checkpoint_dir, False)]
    run._next_checkpoint = max([checkpoint_index(path) or 0, *indices]) + 1
    logger.info("resumed from %s at step %d (epoch %d, batch %d)", path,
                run.progress.step, run.progress.epoch, run.progress.batches_in_epoch)
    return True
