"""Train a tiny SE student (supervised or distilled from an SE teacher); ``robustdistill train-se``.

One YAML recipe plus ``--section.key value`` overrides (``configs/se_*.yaml``)::

    output_dir: runs/se/two_step_gram_63x
    seed: 0
    student:  {ratio: 63}                      # or {hidden_size: 45, num_layers: 2}
    data:     {crop_seconds: 2.0, snr_range: [-5, 20], ...}      # PairConfig
    loss:     {teacher: nsnet2, schedule: two_step, kd_steps: 300, gram_weight: 100, ...}
    training: {max_steps: 600, batch_size: 8, learning_rate: 1.0e-3, eval_every: 200, ...}
    validation: {speech_dir: null, noise_dir: runs/data/noise_test, items: 32, ...}  # off

The run writes to ``output_dir``: ``config.yaml``, ``environment.json`` (software versions at
each start), ``scan_cache/`` (the speech files' checks, unless ``data.scan_cache_dir`` puts
them elsewhere or is ``off``), ``metrics.jsonl`` (one JSON object per
logged step: step, split, lr, every loss part; and, with ``validation.speech_dir``, one per
validation, split ``validation``: the loss parts, SI-SDR and STOI on held-out pairs and their
improvements, :mod:`robustdistill.se.validation`), ``logs/`` (TensorBoard), ``checkpoints/
checkpoint_N/`` (N the step: ``accelerator.save_state`` plus ``training_state.json``, written,
published and rotated by :func:`robustdistill.checkpoints.save_checkpoint`, so a kill while
saving never leaves a half-written ``checkpoint_N``; resumed from the newest one automatically:
batches are a pure function of ``(seed, step)``, the student's and loss heads' weights and the
optimizer state are restored, and ``metrics.jsonl`` is cut back to the checkpoint, so a resumed
run equals an uninterrupted one), and at the end ``student/`` (``save_pretrained``) and ``final_state.json`` (step, a
SHA-256 of the student's parameters, ``skipped_updates``, the speech files dropped and, with
validation, ``best_validation``: :class:`~robustdistill.se.validation.BestValidation`; with
``validation.keep_best``, ``best_student/`` holds that step's student). The
teacher is frozen and never saved; with ``two_step`` it is freed at ``loss.kd_steps``.

A step whose loss (on any process) or gradient norm is NaN/Inf changes nothing: its update is
skipped (gradients zeroed, no optimizer step), counted and logged as a warning;
``training.max_nonfinite_in_a_row`` such steps in a row save a checkpoint (of the last finite
weights), write ``stopped.json`` and raise :class:`~robustdistill.nonfinite.NonFiniteTrainingError`,
as ``robustdistill distill`` does.

A SIGTERM during the steps (``training.save_on_sigterm``, default true) finishes the step under
way; every process agrees on it (the flag rides on the step's non-finite all-reduce), saves a
checkpoint of it and stops with exit status 143 (:mod:`robustdistill.interrupts`); a validation
that was due at that step is marked ``validation_due`` in the checkpoint and done first by the
resumed run, so its ``metrics.jsonl`` stays the uninterrupted run's.

This module is the run (start-up, the steps, the end) and the command; the recipe is
:mod:`robustdistill.se.config`, the checkpoints :mod:`robustdistill.se.run_checkpoints`, the
resume check :mod:`robustdistill.se.resume_settings`, the early stops (non-finite steps,
SIGTERM) :mod:`robustdistill.se.stops`, and ``student/`` plus ``final_state.json``
:mod:`robustdistill.se.final_state`.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
from pathlib import Path

import torch

from ..audio import AudioError
from ..checkpoints import newest_checkpoint_note
from ..config import ConfigError
from ..interrupts import note as interrupt_note
from ..interrupts import sigterm_deferred, sigterm_pending, stop_terminated
from ..memory import release_free_heap
from ..nonfinite import NonFiniteTrainingError, any_process
from ..processes import finish_processes, print_stop
from ..strict_json import strict_dumps
from .config import (
    SCAN_CACHE_FOLDER,
    SETrainConfig,
    StudentOptions,
    TrainingOptions,
    data_config,
    load_se_config,
)
from .data import PairMaker
from .final_state import parameter_hash, save_final_student
from .losses import LossConfig, SELoss, _widths, teacher_layers
from .resume_settings import ResumeSettingsError, _resume_changes
from .run_checkpoints import DamagedCheckpointError, resume_or_start, save_run_checkpoint
from .run_checkpoints import _newest_checkpoint as _newest_checkpoint  # importable from here
from .stops import NonFiniteCounts, nonfinite_step, stop_after_nonfinite, stop_for_sigterm
from .students import GRUMaskStudent
from .teachers import load_teacher
from .teachers.onnx_weights import TeacherUnavailable
from .validation import (
    BestValidation,
    TeacherOutputs,
    make_validation_pairs,
    validate,
)

__all__ = ["DamagedCheckpointError", "DataFolderError", "ResumeSettingsError", "SETrainConfig",
           "TrainingOptions", "StudentOptions",
           "load_se_config", "train_se", "main", "parameter_hash",
           # moved to their own modules, still importable from here
           "SCAN_CACHE_FOLDER", "data_config", "teacher_layers", "NonFiniteCounts",
           "nonfinite_step"]

logger = logging.getLogger(__name__)


class DataFolderError(FileNotFoundError):
    """A speech, noise or RIR folder of the recipe is missing or holds no audio file (found at
    start-up, before any training step)."""


def train_se(cfg: SETrainConfig) -> Path:
    """Run (or resume) a training run; returns ``output_dir``.

    Raises:
        TeacherUnavailable: the recipe needs a teacher whose package is not installed.
        DataFolderError: (a ``FileNotFoundError``) a data folder, or a validation folder
            (``validation: ...``), is missing or holds no audio file (found at start-up).
        AudioError: no usable speech, noise or RIR file, for training or validation (found at
            start-up; each unusable file is logged by name and skipped).
        ConfigError: a ``validation.speech_dir`` file is also a training speech file (found
            at start-up).
        NonFiniteTrainingError: ``training.max_nonfinite_in_a_row`` steps in a row had a
            NaN/Inf loss or gradient norm (a checkpoint of the last finite weights and
            ``stopped.json`` are written first).
        ResumeSettingsError: (a ``ConfigError``, before any work) a resume whose seed,
            ``training.batch_size`` or ``data`` settings differ from the run's ``config.yaml``
            (:data:`_RESUME_REFUSED`: other batches), whose student or loss heads have other
            parameter shapes (the checkpoint's weights would not fit), or whose checkpoint is
            past ``training.max_steps``, or whose checkpoint was saved on another number of
            processes. Other
            changes are logged as a warning and kept in ``environment.json``.
        DamagedCheckpointError: the newest checkpoint does not match its manifest (a
            truncated ``model.safetensors``), found before any work.

    A fresh start (no checkpoint) empties a ``metrics.jsonl`` left by a run killed before
    its first checkpoint, and hides that run's TensorBoard points (``purge_step`` 0), so
    each step is logged once.

    With ``validation.speech_dir``, the held-out pairs are made at start-up and scored at step
    0 (``training.eval_at_start``), every ``training.eval_every`` steps and at the last step
    (:func:`~robustdistill.se.validation.validate`), before that step's checkpoint; each
    validation is one ``metrics.jsonl`` line (split ``validation``) and TensorBoard's
    ``validation/<value>`` points, written by the main process. It changes no weight. With
    ``two_step`` the teacher, its kept validation outputs and its pooled training outputs
    (``data.pool_size``) are freed at ``kd_steps`` and the heap's free pages given back
    (:func:`robustdistill.memory.release_free_heap`): no later step, validation or save reads
    them. A run resumed at or past ``kd_steps`` loads no teacher at all (any other schedule
    with a KD term loads it, even a ``mixture`` at ``alpha`` 0). A run extended past its old
    last step (a larger ``training.max_steps``) drops that step's lines that its ``log_every``
    and ``eval_every`` skip, and that validation's part in the best
    (:func:`~robustdistill.se.run_checkpoints.resume_or_start`): it ends as an uninterrupted
    run to the new ``max_steps``.
    """
    done: list[int] = []  # the last step completed, for the line of an interrupt
    saved: list[tuple[Path, float]] = []  # the checkpoint a SIGTERM saved, and its seconds
    with interrupt_note(lambda: _interrupt_note(cfg, done, saved)):
        return _train_se(cfg, done, saved)


def _interrupt_note(cfg: SETrainConfig, done: list[int],
                    saved: list[tuple[Path, float]] = ()) -> str:
    """Where an interrupted ``train-se`` stopped (:func:`robustdistill.interrupts.note`):
    ``after step 37 of 200; the newest checkpoint is .../checkpoint_30 (step 30; run the same
    command again to resume)``, or, with ``saved`` (the checkpoint a SIGTERM saved, and its
    seconds), ``after step 37 of 200; saved checkpoint .../checkpoint_37 in 0.1 s (step 37;
    ...)``. Reads the checkpoints folder only: no collective."""
    at = f"after step {done[-1]} of {cfg.training.max_steps}" if done else "while starting"
    how = "run the same command again to resume"
    if saved and done:
        folder, took = saved[-1]
        return f"{at}; saved checkpoint {folder} in {took:.1f} s (step {done[-1]}; {how})"
    return f"{at}; " + newest_checkpoint_note(Path(cfg.output_dir) / "checkpoints", how)



def _resume_step(out: Path) -> int:
    """The step of ``out``'s newest complete checkpoint (the step a run resumes at), 0 for a
    fresh start. Raises as :func:`~robustdistill.se.run_checkpoints._newest_checkpoint`."""
    newest = _newest_checkpoint(out / "checkpoints")
    return 0 if newest is None else int(newest[1]["step"])


def _keeps_teacher_from(loss: LossConfig, step: int) -> bool:
    """Whether the run keeps its teacher from ``step`` on: a KD term is on and ``step`` is
    not in ``two_step``'s phase 2 (from ``kd_steps`` on no step or validation reads it, for
    the rest of the run). Only ``two_step`` drops it: a ``mixture`` with ``alpha`` 0, whose KD
    factor is 0 throughout, keeps loading it, because loading a teacher draws from torch's
    global generator before the loss heads are initialised, so leaving it out would change
    those heads' initial weights (and ``final_state.json``) of such a run."""
    schedule = loss.schedule_obj
    return loss.uses_teacher and not (schedule.kind == "two_step" and step >= schedule.kd_steps)


def _free_teacher_note(acc, name: str, teacher: torch.nn.Module, pooled, pool_freed: bool,
                       step: int) -> None:
    """Log (the main process) that the teacher, and the pooled training outputs ``pooled``
    (None: no ``data.pool_size``) when ``pool_freed``, are freed at ``step``; with several
    processes, that each frees its own copy."""
    params = sum(p.numel() for p in teacher.parameters())
    freed = kept = ""
    if pooled is not None:
        outputs = (f"its outputs on the {len(pooled)} pooled training pairs (data.pool_size; "
                   f"{pooled.nbytes / 1e6:.1f} MB)")
        if pool_freed:
            freed = f" and {outputs}"
        else:
            kept = f" ({outputs} stay cached for this process's later runs)"
    each = ("" if acc.num_processes == 1 else
            f" (each of the {acc.num_processes} processes frees its own)")
    if acc.is_main_process:
        logger.info("the teacher (%s, %s parameters)%s freed at step %d%s%s: no step or "
                    "validation from this step on reads it (two_step's phase 2)", name,
                    f"{params:,}", freed, step, kept, each)


def _train_se(cfg: SETrainConfig, done_steps: list[int],
              sigterm_saved: list[tuple[Path, float]] | None = None) -> Path:
    """:func:`train_se`; ``done_steps`` holds the last step completed, ``sigterm_saved`` the
    checkpoint saved for a SIGTERM and how long it took."""
    if sigterm_saved is None:
        sigterm_saved = []
    from accelerate import Accelerator
    from accelerate.utils import (
        DistributedDataParallelKwargs,
        ProjectConfiguration,
        set_seed,
    )
    from tqdm.auto import tqdm

    t = cfg.training
    if t.threads:
        torch.set_num_threads(t.threads)
    out = Path(cfg.output_dir)
    # find_unused_parameters: a schedule's phase can leave parameters without a gradient
    # (two_step: the student's output layers while it distils, the bottlenecks afterwards)
    acc = Accelerator(cpu=t.cpu, log_with=None if t.report_to == "none" else t.report_to,
                      project_config=ProjectConfiguration(project_dir=str(out),
                                                          logging_dir=str(out / "logs")),
                      kwargs_handlers=[DistributedDataParallelKwargs(
                          find_unused_parameters=True)])
    # before any work (the Accelerator only gives the process count): other batches, shapes
    # or process counts are refused
    changes = _resume_changes(cfg, acc.num_processes)
    note = cfg.loss.schedule_obj.single_phase_note(t.max_steps)
    if note is not None and acc.is_main_process:
        logger.warning("loss.%s", note)
    if cfg.loss.schedule != "sum" and not cfg.loss.uses_teacher and acc.is_main_process:
        logger.warning("loss.schedule %s has no KD term to schedule (every KD weight is 0): "
                       "the student trains on the task loss alone, at weight 1",
                       cfg.loss.schedule)
    set_seed(cfg.seed)
    student = GRUMaskStudent(cfg.student.build())
    # none for a run resumed at or past two_step's kd_steps: no step from there on reads it
    teacher = (load_teacher(cfg.loss.teacher).to(acc.device)
               if _keeps_teacher_from(cfg.loss, _resume_step(out)) else None)
    loss_fn = SELoss(cfg.loss, *_widths(student.config, cfg.loss.teacher))
    params = list(student.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.Adam(params, lr=t.learning_rate)
    if any(p.requires_grad for p in loss_fn.parameters()):  # bottlenecks or projections
        student, loss_fn, optimizer = acc.prepare(student, loss_fn, optimizer)
    else:  # DDP refuses a module with nothing to train
        student, optimizer = acc.prepare(student, optimizer)
        loss_fn = loss_fn.to(acc.device)
    try:
        maker = PairMaker(data_config(cfg), seed=cfg.seed)
    except FileNotFoundError as err:
        raise DataFolderError(str(err)) from err
    pairs = None
    if cfg.validation.enabled:  # made once, on every process (a bad folder stops them all)
        try:
            pairs = make_validation_pairs(data_config(cfg), cfg.validation, cfg.seed)
        except FileNotFoundError as err:
            raise DataFolderError(f"validation: {err}") from err
        except AudioError as err:  # no usable file in a validation folder
            raise AudioError(f"validation: {err}", err.reason) from err
    best = teacher_outputs = None
    if pairs is not None:
        best = BestValidation(cfg.validation, acc.unwrap_model(student).config, out,
                              pairs.set_sha1)

    # the run folder: resumed from its newest checkpoint, or started afresh
    start, counts, newest, metrics = resume_or_start(acc, cfg, changes, best)
    # the teacher run once per item, at the first validation that reads it; none kept in a
    # run resumed at or past two_step's kd_steps: no schedule's KD weight rises again (sum and
    # mixture keep theirs, two_step's drops to 0 at kd_steps), so no later validation reads it
    if best is not None and teacher is not None and acc.unwrap_model(loss_fn).needs_teacher(start):
        teacher_outputs = TeacherOutputs(teacher_layers(cfg.loss), cfg.loss.output_kd_weight > 0,
                                         cfg.validation.teacher_cache_mb)
    ckpt_dir = out / "checkpoints"
    # the last step's metrics.jsonl lines, [split, line] as written: a run extended past this
    # step leaves out those its schedule skips (run_checkpoints._cut_back_log)
    last_step_lines: list[list[str]] = []

    def save(step: int, validation_due: bool = False) -> Path:
        return save_run_checkpoint(acc, ckpt_dir, step, metrics=metrics, counts=counts,
                                   best=best, keep=t.keep_checkpoints,
                                   validation_due=validation_due,
                                   last_step_lines=last_step_lines if step == t.max_steps
                                   else None)

    def write_row(row: dict) -> None:  # the main process: one metrics.jsonl line
        line = strict_dumps(row) + "\n"
        metrics.write(line)
        metrics.flush()
        if row["step"] == t.max_steps:
            last_step_lines.append([row["split"], line])

    bar = tqdm(total=t.max_steps, initial=start, desc="train-se",
               disable=not acc.is_main_process)

    def log_validation(step: int) -> None:  # every process scores its share of the items
        values = validate(acc, student, loss_fn, teacher, pairs, step, cfg.loss.teacher_input,
                          teacher_outputs)
        if values is None:  # not the main process
            return
        new_best = best.update(step, values, acc.unwrap_model(student),
                               last_step=step == t.max_steps)
        row = {"step": step, "split": "validation", "lr": t.learning_rate, **values}
        acc.log({f"validation/{k}": v for k, v in row.items()
                 if k not in ("step", "split") and isinstance(v, int | float)}, step=step)
        write_row(row)
        bar.write(f"step {step}: validation loss {row['loss']:.3f}, SI-SDR "
                  f"{row['si_sdr']:.2f} dB (SI-SDRi {row['si_sdr_i']:+.2f} dB)"
                  + (f"; best {best.metric} so far" if new_best else ""))

    student.train()
    pooled = None
    if teacher is not None and cfg.data.pool_size:
        from .teacher_pool import pooled_teacher

        noisy_pool, clean_pool = maker.pool()
        which = cfg.loss.teacher_input
        key = (json.dumps(cfg.to_dict()["data"], sort_keys=True), cfg.loss.teacher, which)
        pooled = pooled_teacher(key, teacher,
                                (clean_pool if which == "clean" else noisy_pool).to(acc.device),
                                teacher_layers(cfg.loss), cfg.loss.output_kd_weight > 0)
        # the build's teacher passes (32 items each, float32) and the float16 pieces it joined
        # are freed: their pages back to the system, not the heap (se_two_step_gram, pool 256:
        # phase 1's RSS 1,211 -> 902 MB, docs/se.md)
        release_free_heap()
    if pairs is not None and start == 0 and t.eval_at_start:  # the step-0 baseline
        log_validation(0)
    elif (pairs is not None and newest is not None and newest[1].get("validation_due")
          and (start % t.eval_every == 0 or start == t.max_steps)):
        # a SIGTERM stopped the run before this step's validation (unless the step was its
        # last, off eval_every, and this run is extended past it: an uninterrupted run to
        # max_steps has no validation there)
        log_validation(start)

    with sigterm_deferred(t.save_on_sigterm):  # start-up above: a SIGTERM stops at once
        for step in range(start, t.max_steps):
            noisy, clean, idx = maker.batch(step, t.batch_size, acc.process_index)
            noisy, clean = noisy.to(acc.device), clean.to(acc.device)
            teacher_out = None
            if acc.unwrap_model(loss_fn).needs_teacher(step):
                if pooled is not None:
                    teacher_out = pooled(idx, acc.device)
                else:
                    with torch.no_grad():
                        t_in = clean if cfg.loss.teacher_input == "clean" else noisy
                        teacher_out = teacher(t_in, return_activations=True)
            # only what this step's loss reads keeps its graph (DDP: the rest trains nothing)
            wants_output, layers = acc.unwrap_model(loss_fn).student_needs(step)
            s_out = student(noisy, return_activations=layers, trained_outputs=wants_output)
            total, parts = loss_fn(step, s_out, clean, teacher_out)
            acc.backward(total)
            grad_norm = acc.clip_grad_norm_(params, t.max_grad_norm)
            bad_loss, bad_step, stop = nonfinite_step(acc, total, grad_norm,
                                                      t.save_on_sigterm and sigterm_pending())
            if not bad_step:  # a skipped step changes neither the weights nor Adam's state
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            counts.record(step, bad_loss, bad_step, float(grad_norm))
            bar.update(1)
            done = step + 1
            done_steps[:] = [done]
            if counts.nonfinite_in_a_row >= t.max_nonfinite_in_a_row:  # every rank stops
                stop_after_nonfinite(acc, out, done, counts, t.max_nonfinite_in_a_row, save, bar)
            if done % t.log_every == 0 or done == t.max_steps:
                # means over the processes' batches (every rank takes part in the reduce)
                names = ["loss", *parts]
                values = acc.reduce(torch.stack([total.detach(), *(v.detach() for v in
                                                                    parts.values())]).float(),
                                    reduction="mean").tolist()
                means = dict(zip(names, values, strict=True))
                row = {"step": done, "split": "train", "lr": t.learning_rate,
                       "loss": means.pop("loss"), "grad_norm": float(grad_norm), **means}
                acc.log({f"train/{k}": v for k, v in row.items() if k not in ("step", "split")},
                        step=done)
                if metrics:
                    write_row(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}")
            if teacher is not None and not _keeps_teacher_from(cfg.loss, done):
                # two_step at kd_steps: no later step, validation or save reads the teacher
                if teacher_outputs is not None:
                    teacher_outputs.release(done, acc.process_index, acc.num_processes,
                                            len(pairs))
                from .teacher_pool import release_pooled

                # kept instead inside the table's shared_pools(), for its later runs
                pool_freed = pooled is not None and release_pooled(pooled)
                _free_teacher_note(acc, cfg.loss.teacher, teacher, pooled, pool_freed, done)
                teacher = pooled = teacher_outputs = teacher_out = None
                gc.collect()  # a cycle through a hooked teacher's modules
                release_free_heap()  # their pages back to the system, not the heap
            due = pairs is not None and (done % t.eval_every == 0 or done == t.max_steps)
            if stop:  # some process holds a SIGTERM: this step is done; save it and stop
                stop_for_sigterm(acc, done, due, save, bar, sigterm_saved)
            if due:
                log_validation(done)  # before the checkpoint: its metrics_bytes keep this line
            if t.save_every and done % t.save_every == 0 and done < t.max_steps:
                save(done)
        bar.close()
        if start < t.max_steps:  # else this is a finished run started again: nothing new to save
            save(t.max_steps)
        # a SIGTERM after the last step's agreement: its checkpoint is saved; stop before the
        # export, every process together (the same command then writes student/)
        if any_process(acc, t.save_on_sigterm and sigterm_pending()):
            finish_processes(acc)
            stop_terminated()
    save_final_student(acc, out, student, loss_fn, max_steps=t.max_steps, counts=counts,
                       maker=maker, best=best, metrics=metrics)
    finish_processes(acc)  # the trainer's own end: a gloo rank cannot hang in teardown
    return out


def main(argv: list[str]) -> int:
    """``robustdistill train-se --config configs/se_*.yaml [--section.key value ...]``."""
    from ..config_reference import config_reference

    parser = argparse.ArgumentParser(
        prog="robustdistill train-se", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a tiny causal SE student. Every key of the recipe can be "
                    "overridden as --section.key value; the keys, their types and defaults:",
        epilog=config_reference(SETrainConfig))
    parser.add_argument("--config", help="YAML recipe (configs/se_*.yaml)")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_se_config(args.config, overrides)
        cfg.student.build()  # exactly one of ratio / hidden_size
    except (ConfigError, FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    try:
        train_se(cfg)
    except (DataFolderError, TeacherUnavailable, ConfigError,
            DamagedCheckpointError) as err:  # ConfigError: ResumeSettingsError, validation
        # found at start-up: a message, no traceback (a FileNotFoundError once training runs, a
        # checkpoint folder deleted, keeps its traceback)
        hint = ("; the recipes' runs/data/* folders are made once by "
                "`bash scripts/split_shared_data.sh`"
                if isinstance(err, DataFolderError) and "runs/data/" in str(err) else "")
        parser.error(f"{err}{hint}")
    except NonFiniteTrainingError as err:  # a run that diverged (every process agrees)
        print_stop(parser.prog, str(err))
        return 1
    except AudioError as err:  # no usable audio; or, mid-run, one process's own crops failed
        print_stop(parser.prog, str(err), agreed=False)
        return 1
    return 0
