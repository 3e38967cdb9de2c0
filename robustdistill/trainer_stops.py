"""How a distillation stops (:mod:`robustdistill.trainer`): early, interrupted, or at its last
step.

Early: every process agrees, before a step's collectives, on a batch that could not be read
(or a teacher cache miss with ``missing: error``) and on a held SIGTERM
(:func:`_agree_on_data`); then all of them save a checkpoint of the last step and stop
together: :func:`_stop_unreadable` (``stopped.json`` naming the audio skipped so far, one line,
:class:`DataReadError`), :func:`_stop_sigterm` (exit status 143), and :func:`_stop_nonfinite`
after ``training.max_nonfinite_in_a_row`` non-finite steps. Interrupted: the line that says
where a Ctrl-C or SIGTERM left the run (:func:`_interrupt_note`). At the last step:
``final_state.json`` (:func:`_write_final_state`), with the parameters' fingerprint on every
rank and the audio skipped (:func:`_skipped_summary`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate.utils import gather_object
from torch import nn

from .audio import AudioError
from .checkpoints import newest_checkpoint_note
from .interrupts import sigterm_pending, stop_terminated
from .nonfinite import any_process_each, stop_nonfinite
from .outcome import FINAL_STATE, STOPPED, write_outcome
from .processes import STOP_RECORD, finish_processes
from .teacher_cache import MissingEntryError

if TYPE_CHECKING:
    from .config import DistillConfig
    from .trainer import _Run

__all__ = ["DataReadError"]

# the trainer's lines, under its logger name
logger = logging.getLogger("robustdistill.trainer")


class DataReadError(RuntimeError):
    """A training or validation batch could not be read: its dataset gave up after
    :data:`~robustdistill.data.cropped.MAX_READ_FAILURES` items in a row (or all of them)
    failed at read time (NaN/Inf, silent or corrupt samples: what the header scan cannot
    see), or, with ``teacher_cache.missing: error``, a teacher cache entry it needs is missing
    or unreadable. :func:`~robustdistill.trainer.train` raises it after saving a checkpoint
    and writing ``stopped.json``."""


class _SigtermStop(Exception):  # noqa: N818 - a stop, not an error
    """Every process agreed to stop for a SIGTERM (one of them, or all, received it): raised
    on every process by :func:`_agree_on_data`, before the step's collectives."""


def _agree_on_data(run: _Run, failure: AudioError | MissingEntryError | None, split: str,
                   position: tuple[int, int] | None = None, validation: bool = False
                   ) -> None:
    """Raise :class:`DataReadError` on every process when any process's ``split`` batch
    could not be read, or missed a teacher cache entry with ``missing: error``; else
    :class:`_SigtermStop` on every process when any process holds a SIGTERM
    (``training.save_on_sigterm``). A collective: every process calls it at the same point.

    Both flags ride on one all-reduce of two numbers, the one this agreement made before
    SIGTERM was carried (one process: no collective, no device sync).

    ``position`` (``(epoch, batches_in_epoch)`` before the step's batches were drawn) is
    restored first, and a stream's position with it, so a checkpoint saved on the way out
    resumes at the failed (or not started) step. ``validation``: a stop for SIGTERM marks
    the step's validation as due (done first by the resumed run); at step 0 nothing is
    saved, so nothing is marked.
    """
    failed = failure is not None
    term = run.watch_sigterm and sigterm_pending()
    if run.accelerator.num_processes > 1:  # one process: no collective, no device sync
        failed, term = any_process_each(run.accelerator, failed, term)
    if not (failed or term):
        return
    if position is not None:
        run.progress.epoch, run.progress.batches_in_epoch = position
        run._stream_restored = run._stream_before_step
    if not failed:
        if validation and run.progress.step > 0:
            run.progress.validation_due = True
        raise _SigtermStop(split)
    if failure is None:
        raise DataReadError(f"another process could not read its {split} batch")
    if isinstance(failure, MissingEntryError):
        raise DataReadError(f"{split} batch: {failure}") from failure
    lines = str(failure).strip().splitlines()  # a DataLoader worker's error holds its
    detail = lines[-1] if lines else type(failure).__name__  # traceback: its last line,
    detail = re.sub(r"^[\w.]*AudioError: ", "", detail)  # less the exception's name
    raise DataReadError(f"no {split} audio could be read: {detail}") from failure


def _fingerprint(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in order: equal on all ranks after a DDP step."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _skipped_summary(per_rank: list[dict[str, str]], log: bool = True) -> dict:
    """``{"count", "by_reason": {reason: n}, "items": {name: reason}}`` over all ranks,
    logged as a warning when ``log`` (the main process: every process has the same summary)."""
    items: dict[str, str] = {}
    for skipped in per_rank:
        items.update(skipped)
    by_reason: dict[str, int] = {}
    for reason in items.values():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    if items and log:
        logger.warning("%d audio item(s) skipped: %s (names in final_state.json)", len(items),
                       ", ".join(f"{n} {r}" for r, n in sorted(by_reason.items())))
    return {"count": len(items), "by_reason": by_reason, "items": dict(sorted(items.items()))}


def _write_final_state(run: _Run) -> None:
    """Write ``final_state.json`` of a run that reached its last step (main process): progress,
    skipped updates and audio, each rank's parameter SHA-256, and the teacher cache lookups;
    log an error when the ranks' parameters differ. A collective: every process calls it.
    """
    acc = run.accelerator
    fingerprints = gather_object([_fingerprint(acc.unwrap_model(run.model))])
    skipped_audio = _skipped_summary(gather_object([run.skipped_audio]), acc.is_main_process)
    if run.sampler is None:  # a stream's skips among the examples consumed: counted, not named
        counts = gather_object([(run.train_set.skipped, run.train_set.skipped_complete)])
        total = sum(count for count, _ in counts)
        skipped_audio["streamed_items_skipped"] = (
            total if all(complete for _, complete in counts) else
            f"at least {total} (resumed from a checkpoint written before the DataLoader "
            "workers' skips were counted: the ones before it are not included)")
    cache_lookups = (gather_object([run.teacher_cache.lookups()])
                     if run.teacher_cache is not None else None)
    if acc.is_main_process:
        summary = {"step": run.progress.step, "epoch": run.progress.epoch,
                   "best_validation_loss": run.progress.best_validation_loss,
                   "skipped_updates": run.progress.skipped_updates,
                   "scaler_skipped_steps": run.progress.scaler_skipped_steps,
                   "nonfinite_losses": run.progress.nonfinite_losses,
                   "nonfinite_in_a_row": run.progress.nonfinite_in_a_row,
                   "skipped_audio": skipped_audio,
                   "parameter_sha256_per_rank": fingerprints,
                   "ranks_identical": len(set(fingerprints)) == 1}
        if cache_lookups is not None:  # lookups of every process, training and validation
            summary["teacher_cache"] = {
                **{key: sum(p[key] for p in cache_lookups) for key in cache_lookups[0]},
                **run.teacher_cache.folder_stats(), "per_process": cache_lookups}
        write_outcome(run.output_dir, FINAL_STATE, summary)
        if not summary["ranks_identical"]:
            logger.error("parameters differ between ranks: %s", fingerprints)


def _stop_nonfinite(run: _Run) -> None:
    """Save a checkpoint (the last finite weights: skipped steps change nothing), write
    ``stopped.json`` and raise.

    Raises:
        NonFiniteTrainingError: always.
    """
    p = run.progress
    stop_nonfinite(run.output_dir, p.step, in_a_row=p.nonfinite_in_a_row,
                   skipped_updates=p.skipped_updates, nonfinite_losses=p.nonfinite_losses,
                   limit=run.cfg.training.max_nonfinite_in_a_row,
                   checkpoint=run.save_checkpoint(),
                   main_process=run.accelerator.is_main_process)


def _stop_unreadable(run: _Run, err: DataReadError) -> None:
    """Save a checkpoint (unless nothing was trained yet), write ``stopped.json`` (its
    ``reason``: ``unreadable audio`` or ``teacher cache miss``) with the audio skipped so far,
    and raise one line. A collective: every process calls it.

    Raises:
        DataReadError: always, naming the step, the data error and the checkpoint.
    """
    acc, p = run.accelerator, run.progress
    checkpoint = None
    if run.last_checkpoint is not None and run.last_checkpoint[0] == p.step:
        checkpoint = run.last_checkpoint[1]  # saved (or resumed from) at this very step
    elif p.step > 0:
        checkpoint = run.save_checkpoint()
    skipped = dict(run.skipped_audio)
    for dataset in (run.train_set, run.valid_set):  # the failed call's skips (no batch came)
        if isinstance(getattr(dataset, "skipped", None), dict):
            skipped.update(dataset.skipped)
    missed = isinstance(err.__cause__, MissingEntryError)
    details = gather_object([("teacher cache miss" if missed else "unreadable audio",
                              str(err))])
    skipped_audio = _skipped_summary(gather_object([skipped]), acc.is_main_process)
    reason, detail = next((d for d in details if not d[1].startswith("another process")),
                          details[0])
    fix = "build it" if reason == "teacher cache miss" else "replace or fix them"
    then = (f"checkpoint {checkpoint} holds the weights of step {p.step}; {fix} and resume "
            "(--resume)" if checkpoint is not None else f"nothing was trained; {fix} and run "
            "again")
    if reason == "teacher cache miss":
        message = f"stopped at step {p.step}: {detail}; {then}"
    else:
        message = (f"stopped at step {p.step}: {detail}. Files skipped so far, with their "
                   f"reasons: {run.output_dir / 'stopped.json'}; {then}")
    if acc.is_main_process:
        write_outcome(run.output_dir, STOPPED,
                      {"step": p.step, "reason": reason, "message": message,
                       "checkpoint": str(checkpoint) if checkpoint is not None else None,
                       "skipped_audio": skipped_audio})
    logger.error(message, extra=STOP_RECORD)  # the command prints it (processes.print_stop)
    finish_processes(acc)
    raise DataReadError(message) from err


def _stop_sigterm(run: _Run) -> None:
    """Save a checkpoint of the step the run is at (unless one is there already, or nothing
    was trained yet), say how long it took, and stop as the SIGTERM would have. A collective:
    every process calls it (all agreed in :func:`_agree_on_data`).

    Raises:
        Terminated: always (:func:`robustdistill.interrupts.stop_terminated`: the command's
            line names the checkpoint, exit status 143).
    """
    acc, p = run.accelerator, run.progress
    if p.step > 0 and (run.last_checkpoint is None or run.last_checkpoint[0] != p.step):
        started = time.perf_counter()
        folder = run.save_checkpoint()
        took = time.perf_counter() - started
        run.sigterm_checkpoint = (folder, took)
        if acc.is_main_process:
            logger.warning("SIGTERM: checkpoint %s of step %d saved in %.2f s (the grace period "
                           "before SIGKILL must exceed one step plus this)", folder, p.step, took)
    finish_processes(acc)  # trackers closed (TensorBoard's last points written)
    stop_terminated()


def _interrupt_note(cfg: DistillConfig, run: _Run | None) -> str:
    """Where an interrupted distillation stopped (:func:`robustdistill.interrupts.note`):
    ``after step 37 of 60; the newest checkpoint is .../checkpoint_7 (step 35; resume with
    --resume)``, or, after a SIGTERM that saved one (``training.save_on_sigterm``), ``after
    step 37 of 60; saved checkpoint .../checkpoint_8 in 0.4 s (step 37; ...)``; a run started
    with ``--resume`` (``resume_from`` auto or latest) resumes with the same command, one
    started from another run's checkpoint with ``resume_from latest`` (``--resume`` beside
    ``--training.resume_from`` is refused). Reads the checkpoints folder only: no
    collective."""
    at = (f"after step {run.progress.step} of {cfg.training.max_steps}" if run is not None
          else "while starting")
    where = cfg.training.resume_from
    how = ("resume with --resume" if not where
           else "run the same command again to resume" if where in ("auto", "latest")
           else "resume with --training.resume_from latest in place of the checkpoint given")
    saved = getattr(run, "sigterm_checkpoint", None)  # saved for this SIGTERM
    if saved is not None:
        folder, took = saved
        return (f"{at}; saved checkpoint {folder} in {took:.1f} s (step {run.progress.step}; "
                f"{how})")
    return f"{at}; " + newest_checkpoint_note(Path(cfg.output_dir) / "checkpoints", how)
