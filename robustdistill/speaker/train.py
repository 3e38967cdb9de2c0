"""Train a speaker student with IML-KD or a baseline: build it (:func:`build_student`), train
it (:func:`train_system`), evaluate it (:mod:`.evaluation`) and export it.

IML-KD ("Integrated Multi-Level Knowledge Distillation for Enhanced Speaker Verification",
arXiv:2409.09389) from a frozen GE2E teacher (:mod:`.ge2e`). ``loss.method`` picks the system:

=============== =====================================================================
``none``        AM-softmax only (the student without KD)
``logit_kd``    AM-softmax + ``class_level`` (vanilla logit KD, Hinton et al.)
``embedding_kd`` AM-softmax + ``instance`` (embedding cosine KD)
``imlkd``       AM-softmax + ``map`` + ``instance`` + ``class_level`` + ``batch_level``
=============== =====================================================================

The teacher's logits are GE2E's similarity ``w cos(e, c_k) + b`` to the centroids ``c_k`` of the
training speakers (means of the normalised embeddings of their crops); the student's are its
AM-softmax cosines times the scale, without margin. Training follows the trainer's conventions:
``accelerate`` (``Accelerator``, ``prepare``, ``save_state`` / ``load_state``), one checkpoint
per epoch, exact resume (the batch order of epoch ``e`` is a permutation seeded by
``(seed, e)``), ``metrics.jsonl`` (one JSON object per epoch), ``config.yaml``,
``environment.json`` (software versions at each start and resume, and where: the epoch, and
the batch for a mid-epoch one). A SIGTERM (``training.save_on_sigterm``, default true)
finishes the batch under way and saves a mid-epoch checkpoint ``epoch_N_batch_B`` holding the
epoch's partial sums; the resume goes on from the next batch of that epoch and ends as the
uninterrupted run (weights, ``metrics.jsonl``, ``result.json``, wall-clock fields aside).

Usage::

    robustdistill train-speaker train --config configs/imlkd_speaker.yaml --loss.method imlkd
    robustdistill train-speaker table --config configs/imlkd_speaker.yaml   # all systems x seeds

Legend: ``M`` training crops, ``B`` batch, ``N`` samples, ``K`` training speakers, ``E``
embedding width.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import yaml

from downstream.config import to_dict
from robustdistill.checkpoints import remove_incomplete
from robustdistill.environment import record_environment
from robustdistill.files import atomic_write_text
from robustdistill.interrupts import note, sigterm_deferred, sigterm_pending, stop_terminated
from robustdistill.nonfinite import NonFiniteTrainingError, stop_with_record
from robustdistill.outcome import STOPPED, remove_stopped
from robustdistill.processes import require_single_process
from robustdistill.strict_json import strict_dumps

from .attribution import AttributionCache, attribute_segments, segment_bounds
from .config import SpeakerKDConfig, TrainConfig
from .data import Crop, Utterance, check_disjoint, skipped_counts
from .evaluation import evaluate_student
from .ge2e import GE2E
from .losses import batch_loss, class_loss, instance_loss
from .models import MelLSTMEncoder, SpeakerEmbedder, SpeakerModel, UpstreamEncoder
from .run_folder import (
    check_run_folder,
    epoch_progress,
    logged_epochs,
    newest_checkpoint,
    newest_checkpoint_note,
    newest_complete_checkpoint,
    resume_changes,
    save_epoch_checkpoint,
    weight_settings,
)
from .targets import MAP_FRAMES_RULE, map_targets, student_map_loss, teacher_targets

__all__ = ["NonFiniteLossError", "build_student", "train_system"]

logger = logging.getLogger("robustdistill.speaker")


class NonFiniteLossError(NonFiniteTrainingError):
    """A ``train-speaker`` step whose loss or gradient norm was NaN/Inf: the run stopped before
    its update (:func:`train_system`); the command prints the message in one line, exit 1."""


def _nonfinite_weights(model: torch.nn.Module) -> list[str]:
    """The names of ``model``'s trained parameters holding a NaN/Inf value."""
    return [name for name, p in model.named_parameters()
            if p.requires_grad and not bool(torch.isfinite(p.detach()).all())]


def _check_weights(model: torch.nn.Module, stop: Callable[..., NoReturn]) -> None:
    """Call ``stop`` (:func:`_stop_nonfinite` of the step just done) when that step's update
    left NaN/Inf in ``model``'s trained weights, naming the first three."""
    if broken := _nonfinite_weights(model):
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        stop(f"its update made weights NaN/Inf ({', '.join(broken[:3])}{more})", applied=True)


def _stop_nonfinite(out_dir: Path, epoch: int, batch: int, num_batches: int, what: str,
                    applied: bool, t: TrainConfig, folder_key: str = "training.output_dir"
                    ) -> NoReturn:
    """Stop a run at the step of (0-based) ``epoch`` and ``batch`` where ``what`` (``"the
    loss was NaN/Inf (ce=nan, loss=nan)"``) was found: before its update (``applied`` false),
    or after it, in the weights it left (then not saved). Log it as a stop
    (:data:`~robustdistill.processes.STOP_RECORD`) and raise; ``folder_key``: the setting the
    message offers to change.

    A train-speaker run is seeded throughout (its batch order, the student's initialisation),
    so resuming it with the same settings meets the same step again; a resume with another
    ``training.lr`` or ``training.max_grad_norm`` is refused (:func:`check_run_folder`), so
    the way on is a new run with them.

    With no checkpoint of this run, the same folder will do, except in a table
    (``folder_key`` ``table.output_dir``) whose other runs hold checkpoints: the message then
    names them and asks for another ``table.output_dir``.

    The stop is recorded in ``out_dir/stopped.json`` (:func:`robustdistill.nonfinite.
    stop_with_record`, as ``distill`` and ``train-se`` record theirs; the card and outcome
    tools read it): ``{"step", "epoch", "batch", "batches_per_epoch", "reason": "non-finite",
    "message", "nonfinite", "applied", "checkpoint", "checkpoint_epochs",
    "checkpoint_batches"}``, where ``step`` is the optimizer step stopped at (1-based,
    ``batches_per_epoch`` a completed epoch), ``epoch`` and ``batch`` are 1-based,
    ``nonfinite`` is ``what``, and ``checkpoint`` is the newest complete checkpoint (the
    weights to go on from: ``checkpoint_epochs`` epochs and ``checkpoint_batches`` batches of
    the next one done) or None with the other two when none was saved. No
    ``nonfinite_in_a_row``: no step was skipped, and the checkpoint's weights are those of its
    own epoch, not of the step before the stop.

    Raises:
        NonFiniteLossError: always.
    """
    newest = newest_checkpoint(out_dir)
    saved_at = newest_complete_checkpoint(out_dir)
    advice = ("lower training.lr, set a smaller training.max_grad_norm or check the data, and "
              "start again")
    # a table's other runs (table.output_dir/<method>_seed<seed>) with checkpoints: a table
    # with another training.lr or max_grad_norm refuses their folders, so its own is no way on
    others = sorted(p.name for p in out_dir.parent.iterdir()
                    if p.is_dir() and p != out_dir and newest_checkpoint(p) is not None
                    ) if folder_key == "table.output_dir" else []
    if newest is None and others:
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        saved = (f"; no checkpoint of this run was saved: {advice} in another {folder_key} "
                 f"(the table's runs {', '.join(others[:3])}{more} there hold checkpoints of "
                 "these settings, which a table with other ones refuses)")
    elif newest is None:
        saved = (f"; no checkpoint of this run was saved: {advice} (the same folder will do, "
                 "it holds none)")
    else:
        saved = (f", and nothing after the newest checkpoint, {newest}, was saved. The run is "
                 f"seeded, so --training.resume true would meet this step again: {advice} in "
                 f"another {folder_key} (a resume with other settings is refused)")
    message = (f"stopped at epoch {epoch + 1}, batch {batch + 1} of {num_batches}: {what}, "
               f"with training.lr={t.lr:g} and training.max_grad_norm={t.max_grad_norm:g}; "
               f"{'those weights were not saved' if applied else 'that step was not applied'}"
               f"{saved}")
    folder, epochs_done, batches_done = saved_at if saved_at is not None else (None, None, None)
    # one process (require_single_process): it writes the record
    stop_with_record(out_dir, {
        "step": epoch * num_batches + batch + 1, "epoch": epoch + 1, "batch": batch + 1,
        "batches_per_epoch": num_batches, "reason": "non-finite", "message": message,
        "nonfinite": what, "applied": applied,
        "checkpoint": None if folder is None else str(folder),
        "checkpoint_epochs": epochs_done, "checkpoint_batches": batches_done},
        main_process=True, error=NonFiniteLossError)


def _remove_passed_stop(out_dir: Path, epochs_done: int | None, batches: int = 0) -> None:
    """Remove ``out_dir/stopped.json``, the record of an earlier segment's stop
    (:func:`_stop_nonfinite`), once it no longer describes the run (``train-speaker`` writes
    no ``final_state.json`` to replace it: :mod:`robustdistill.outcome`).

    Args:
        out_dir: the run's folder.
        epochs_done: None: a fresh start (no checkpoint to resume from), which replaces a run
            that stopped before its first checkpoint: its record goes as this run's
            ``config.yaml`` replaces that run's (that run saved nothing; a start that fails
            before, in the teacher's targets, say, leaves both), not at this run's first
            checkpoint (a SIGTERM in the first epoch kept it, naming the other run's
            settings and "no checkpoint" beside this run's). Else the checkpoint just saved:
            ``epochs_done`` epochs and ``batches`` batches of the next one.
        batches: 0: the end of epoch ``epochs_done``, always past the stop (a stopped run
            saves nothing after its newest checkpoint, and a resume starts there). Else a
            mid-epoch checkpoint (a SIGTERM): past the stop when it holds the stop's batch
            (the record's 1-based ``epoch`` and ``batch``); before it the record stays, as
            does one without them.
    """
    path = out_dir / STOPPED
    if not path.is_file():
        return
    if epochs_done is None:
        why = "it saved no checkpoint, and this run starts afresh"
    elif batches == 0:
        why = f"epoch {epochs_done} is past that stop"
    else:
        try:
            record = json.loads(path.read_text())
            at = (int(record["epoch"]), int(record["batch"]))
        except (OSError, ValueError, TypeError, KeyError):
            return
        if (epochs_done + 1, batches) < at:
            return
        why = f"batch {batches} of epoch {epochs_done + 1} is past that stop"
    if remove_stopped(out_dir):
        logger.info("%s of an earlier %s removed: %s", path,
                    "run" if epochs_done is None else "segment", why)


def build_student(cfg: SpeakerKDConfig, num_speakers: int, teacher_dim: int) -> SpeakerModel:
    """The student of ``cfg.student``."""
    s = cfg.student
    if s.kind == "lstm":
        encoder = MelLSTMEncoder(s.hidden_size, s.num_layers)
    else:
        encoder = UpstreamEncoder(s.upstream, frozen=s.upstream_frozen)
    return SpeakerModel(encoder, num_speakers, s.embedding_dim, teacher_dim, s.margin, s.scale)


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=cfg.lr)


def train_system(cfg: SpeakerKDConfig, teacher: GE2E, crops: list[Crop],
                 eval_sets: dict[str, list[Utterance]] | None = None,
                 stop_after_epochs: int | None = None,
                 skipped_files: dict[str, dict[str, str]] | None = None,
                 folder_key: str = "training.output_dir") -> dict[str, Any]:
    """Train one student (``cfg.loss.method``) and evaluate it.

    Args:
        cfg: the recipe.
        teacher: frozen GE2E.
        crops: training crops, all of one length.
        eval_sets: name -> utterances of speakers unseen in training (None: no evaluation).
        stop_after_epochs: stop (after checkpointing) once this many epochs are done in this
            call, as an interrupted run would (for resume tests).
        skipped_files: ``{set name: {path: reason}}`` of the input files the loaders skipped
            (:func:`.inputs.load_inputs`); recorded as counts, and checked against a
            checkpoint resumed from (:func:`check_run_folder`).
        folder_key: the setting a refusal or a stop offers to change (``table.output_dir``
            for a run of a table).

    Returns:
        ``{"method", "seed", "config", "epochs": [per-epoch logs], "params", "cache":
        {"hits", "misses"}}`` (the IG map cache lookups of every epoch, before a resume too),
        plus ``"eval": {set: metrics}`` once every epoch is done and
        ``eval_sets`` is given, and ``"skipped_files": {set: {reason: count}}`` when
        ``skipped_files`` names any (also written to ``output_dir/result.json``).

    Raises:
        ValueError: crops of different lengths, a test speaker seen in training, a run folder
            :func:`check_run_folder` refuses (before anything is written), or a launch among
            several processes (it runs in one:
            :func:`robustdistill.processes.require_single_process`).
        NonFiniteLossError: a step whose loss (a term or the total) or gradient norm is
            NaN/Inf (one line naming them, the epoch and batch, and the newest checkpoint):
            the run stops there, before that step's update; or an epoch's last update that
            left NaN/Inf weights (checked before the epoch is logged and saved). Nothing after
            the newest checkpoint is logged or saved; the checkpoints before stay; the stop is
            recorded in ``output_dir/stopped.json`` (:func:`_stop_nonfinite`), which a later
            run in the folder removes once past it (:func:`_remove_passed_stop`: at a fresh
            start, at an epoch's end, or at a SIGTERM's checkpoint holding the stop's batch).
        ValueError: (also, before anything is written) a resume from a mid-epoch checkpoint
            with another number of training crops (the rest of that epoch's batch order would
            differ).
        robustdistill.interrupts.Terminated: a SIGTERM inside the epochs, with
            ``training.save_on_sigterm`` (inside :func:`robustdistill.interrupts.handled`, as
            the command runs): the batch under way finished its optimizer step and, unless it
            was its epoch's last (then that epoch's checkpoint is the one), a mid-epoch
            checkpoint ``checkpoints/epoch_N_batch_B`` was saved (N epochs and B batches of
            epoch N + 1 done, with the epoch's partial loss sums, step count, seconds, IG
            seconds, cache hits and misses and IG gaps: :func:`.run_folder.epoch_progress`);
            the command's line names it. ``--training.resume true`` skips the B batches done
            and logs epoch N + 1 as the uninterrupted run does. One process only, so no other
            process has to agree on the batch. Without the option (or outside ``handled``)
            a SIGTERM stops the run at once and the epoch so far is lost.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    require_single_process("robustdistill train-speaker")
    t = cfg.training
    out_dir = Path(t.output_dir)
    last = check_run_folder(cfg, folder_key, skipped_files)
    # a mid-epoch checkpoint (saved for a SIGTERM): the epoch's progress and partial sums
    partial = epoch_progress(last[0]) if last is not None else None
    if partial is not None and partial["crops"] != len(crops):
        raise ValueError(f"{last[0]} was saved {partial['batches']} batches into epoch "
                         f"{last[1] + 1} of {partial['crops']} training crops; this run has "
                         f"{len(crops)}: the rest of that epoch's batch order would differ "
                         "(allowed: the same training crops, or another training.output_dir)")
    out_dir.mkdir(parents=True, exist_ok=True)
    # what the resume changes, from config.yaml before this start writes it again (below)
    changes = resume_changes(cfg, last[0]) if last is not None else None
    lengths = {len(c.audio) for c in crops}
    if len(lengths) != 1:
        raise ValueError(f"training crops must share one length, got {sorted(lengths)}")
    num_samples = lengths.pop()
    speakers = sorted({c.speaker for c in crops})
    for name, utts in (eval_sets or {}).items():
        check_disjoint(speakers, [u.speaker for u in utts], name)
    index = {s: i for i, s in enumerate(speakers)}
    labels = torch.tensor([index[c.speaker] for c in crops])
    targets = teacher_targets(teacher, crops, labels, len(speakers))

    set_seed(t.seed)
    accelerator = Accelerator(cpu=t.cpu)
    model = build_student(cfg, len(speakers), targets.embeddings.shape[1])
    optimizer = _optimizer(model, t)
    model, optimizer = accelerator.prepare(model, optimizer)
    start_epoch = 0
    if accelerator.is_main_process:
        remove_incomplete(out_dir / "checkpoints")  # what a kill while saving left
    log_path = out_dir / "metrics.jsonl"
    history = []
    if last is not None:  # check_run_folder: resuming this run with its own settings
        accelerator.load_state(str(last[0]))
        start_epoch = last[1]
        history = logged_epochs(log_path, start_epoch)
        logger.info("resumed from %s (epoch %d%s)", last[0], start_epoch,
                    f", {partial['batches']} batches into epoch {start_epoch + 1}"
                    if partial is not None else "")
    elif accelerator.is_main_process:
        logged_epochs(log_path, 0)  # a log left by a run killed before its first checkpoint
    if accelerator.is_main_process:
        # config.yaml with the record of this start (its cwd: the folder config.yaml's
        # relative paths are from), after the resume: a start that fails before (the teacher's
        # targets, the checkpoint's state) leaves the last start's settings as they were;
        # atomic: a kill mid-write leaves the file whole
        atomic_write_text(out_dir / "config.yaml",
                          yaml.safe_dump(to_dict(cfg), sort_keys=False))
        if last is None:  # a run stopped before its first checkpoint: this one has replaced
            _remove_passed_stop(out_dir, None)  # its config.yaml, so its stop record goes
        # config_changes: every setting the resume changed (check_run_folder accepted them)
        record_environment(out_dir, start_epoch, unit="epoch",
                           batch=partial["batches"] if partial is not None else None,
                           config_changes=changes)
        if changes:
            logger.warning("resumed with settings other than the run's config.yaml: %s (%s "
                           "was trained with the old ones; environment.json keeps this list)",
                           "; ".join(changes), last[0])

    weights = cfg.loss.weights()
    settings = cfg.ig.settings()
    cache = AttributionCache(cfg.ig.cache_dir if cfg.ig.use_cache else None)
    teacher.cached_fingerprint = teacher.fingerprint
    bounds = segment_bounds(num_samples, cfg.ig.durations)
    unwrapped = accelerator.unwrap_model(model)
    student_frames = int(unwrapped.encoder.frame_lengths(torch.tensor([num_samples]))[0])
    assign = map_targets(bounds, student_frames, unwrapped.samples_per_frame,
                         unwrapped.first_frame_centre)
    all_audio = torch.from_numpy(np.stack([c.audio for c in crops]))
    # the batches trained an epoch: a last one of a single crop is skipped (below), so the
    # batch before it ends the epoch (a SIGTERM there saves the epoch's own checkpoint)
    num_batches = len(crops) // t.batch_size + (len(crops) % t.batch_size >= 2)
    resume_how = "resume with --training.resume true"
    done_here = 0

    def stop_for_sigterm(epoch: int, state: dict[str, Any] | None) -> None:
        """Stop for the SIGTERM held since a step: save ``state`` (the epoch's progress,
        :func:`epoch_progress`; None: epoch ``epoch + 1`` has just ended and been saved), say
        where, and raise :class:`robustdistill.interrupts.Terminated` (exit status 143)."""
        at = f"after epoch {epoch + 1} of {t.epochs}"
        if state is None:
            describe = f"{at}; " + newest_checkpoint_note(out_dir, resume_how)
        else:
            started = time.perf_counter()
            folder = save_epoch_checkpoint(accelerator, out_dir, epoch, weight_settings(cfg),
                                           t.keep_checkpoints, partial=state)
            took = time.perf_counter() - started
            logger.warning("SIGTERM: checkpoint %s (%d of %d batches of epoch %d) saved in "
                           "%.2f s (the grace period before SIGKILL must exceed one batch plus "
                           "this)", folder, state["batches"], num_batches, epoch + 1, took)
            _remove_passed_stop(out_dir, epoch, state["batches"])
            at = f"after batch {state['batches']} of {num_batches} of epoch {epoch + 1}"
            describe = f"{at}; saved checkpoint {folder} in {took:.1f} s ({resume_how})"
        with note(lambda: describe):
            stop_terminated()

    # the epochs: a SIGTERM is held until the batch under way has its optimizer step, then
    # saved (training.save_on_sigterm); start-up above and the evaluation below stop at once
    with sigterm_deferred(t.save_on_sigterm):
        for epoch in range(start_epoch, t.epochs):
            model.train()
            order = torch.randperm(len(crops), generator=torch.Generator().manual_seed(
                t.seed * 100_003 + epoch))
            resumed = partial if epoch == start_epoch else None
            # the epoch's sums so far: none, or those of the mid-epoch checkpoint resumed from
            # (its log line then equals the uninterrupted run's; seconds add both parts)
            skip = resumed["batches"] if resumed else 0
            steps = resumed["steps"] if resumed else 0
            sums = dict(resumed["sums"]) if resumed else {}
            deltas = list(resumed["ig_gaps"]) if resumed else []
            ig_seconds = resumed["ig_seconds"] if resumed else 0.0
            hits0 = cache.hits - (resumed["cache_hits"] if resumed else 0)
            misses0 = cache.misses - (resumed["cache_misses"] if resumed else 0)
            t0 = time.perf_counter() - (resumed["seconds"] if resumed else 0.0)
            last_step = None  # the stop naming the epoch's last step (its weights checked)
            for batch, i in enumerate(range(0, len(order), t.batch_size)):
                if batch < skip:  # done before the SIGTERM that saved the checkpoint
                    continue
                idx = order[i:i + t.batch_size]
                if len(idx) < 2:  # the batch-level loss and batch norm need two crops
                    continue
                parts = {}
                if "map" in weights:
                    t_ig = time.perf_counter()
                    maps = attribute_segments(teacher, [crops[j].audio for j in idx],
                                              targets.centroids[labels[idx]], bounds, settings,
                                              cache)
                    ig_seconds += time.perf_counter() - t_ig
                    deltas += [abs(m.delta) / max(abs(m.score_gap), 1e-12) for row in maps
                               for m in row]
                    teacher_maps = [torch.from_numpy(np.stack([row[s].map for row in maps]))
                                    for s in range(len(bounds))]
                out = model(all_audio[idx].to(accelerator.device))
                emb = out.embedding
                parts["ce"] = unwrapped.classifier(emb, labels[idx].to(emb.device))
                if "class_level" in weights:
                    parts["class_level"] = class_loss(unwrapped.logits(emb),
                                                      targets.logits[idx].to(emb.device),
                                                      cfg.loss.tau)
                if "instance" in weights:
                    parts["instance"] = instance_loss(unwrapped.project(emb),
                                                      targets.embeddings[idx].to(emb.device))
                if "batch_level" in weights:
                    parts["batch_level"] = batch_loss(emb,
                                                      targets.embeddings[idx].to(emb.device))
                if "map" in weights:
                    parts["map"] = student_map_loss(out.map_logits, teacher_maps, assign)
                loss = sum(weights[k] * v for k, v in parts.items())
                # a NaN/Inf loss or gradient stops the run before the update (one line):
                # nothing after the newest checkpoint is saved, the earlier ones stay
                values = {k: float(v.detach()) for k, v in {**parts, "loss": loss}.items()}
                stop = functools.partial(_stop_nonfinite, out_dir, epoch, batch, num_batches,
                                         t=t, folder_key=folder_key)
                if bad := [f"{k}={v:g}" for k, v in values.items() if not math.isfinite(v)]:
                    stop(f"the loss was NaN/Inf ({', '.join(bad)})", applied=False)
                optimizer.zero_grad()
                accelerator.backward(loss)
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                if grad_norm is not None and not math.isfinite(float(grad_norm)):
                    stop(f"the gradient norm was {float(grad_norm):g} (loss "
                         f"{values['loss']:g})", applied=False)
                optimizer.step()
                last_step = stop
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
                # one process (require_single_process): no other process to agree with
                if t.save_on_sigterm and sigterm_pending() and batch + 1 < num_batches:
                    _check_weights(unwrapped, stop)  # not saved NaN/Inf for a SIGTERM
                    stop_for_sigterm(epoch, {
                        "epochs_done": epoch, "batches": batch + 1, "crops": len(crops),
                        "steps": steps, "sums": sums,
                        "seconds": time.perf_counter() - t0, "ig_seconds": ig_seconds,
                        "cache_hits": cache.hits - hits0, "cache_misses": cache.misses - misses0,
                        "ig_gaps": deltas})
            # weights an epoch's last update made NaN/Inf (a later step's loss shows the
            # others): found before they are saved or evaluated
            if last_step is not None:
                _check_weights(unwrapped, last_step)
            record = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0,
                      "ig_seconds": ig_seconds, "cache_hits": cache.hits - hits0,
                      "cache_misses": cache.misses - misses0,
                      **{k: v / max(steps, 1) for k, v in sums.items()}}
            if deltas:
                record["ig_relative_gap"] = float(np.mean(deltas))
            history.append(record)
            with log_path.open("a") as f:
                f.write(strict_dumps(record) + "\n")
            logger.info("epoch %s", json.dumps(record))
            save_epoch_checkpoint(accelerator, out_dir, epoch + 1, weight_settings(cfg),
                                  t.keep_checkpoints)
            _remove_passed_stop(out_dir, epoch + 1)  # past an earlier segment's stop
            done_here += 1
            # last in the block: a SIGTERM held since this epoch's last batch, or that came
            # while it was logged and saved, stops with that checkpoint
            if t.save_on_sigterm and sigterm_pending():
                stop_for_sigterm(epoch, None)
            if stop_after_epochs is not None and done_here >= stop_after_epochs:
                break
    result = {"method": cfg.loss.method, "seed": t.seed, "config": to_dict(cfg),
              "epochs": history,
              "params": sum(p.numel() for n, p in unwrapped.named_parameters()
                            if not n.startswith(("projection", "map_head", "classifier"))),
              # the whole run's lookups (history holds the epochs before a resume too)
              "cache": {"hits": sum(e.get("cache_hits", 0) for e in history),
                        "misses": sum(e.get("cache_misses", 0) for e in history)}}
    if "map" in weights:  # how the maps were moved onto the student's frames (table reuse)
        result["map_frames"] = MAP_FRAMES_RULE
    if any((skipped_files or {}).values()):
        result["skipped_files"] = {name: skipped_counts(files)
                                   for name, files in skipped_files.items() if files}
    finished = start_epoch + done_here >= t.epochs
    if eval_sets and finished:
        result["eval"] = evaluate_student(unwrapped, eval_sets, cfg.data)
    if finished and accelerator.is_main_process:
        _export_student(unwrapped, out_dir / "student")
    (out_dir / "result.json").write_text(strict_dumps(result, indent=1))
    return result


def _export_student(model: SpeakerModel, folder: Path, strict: bool = False) -> Path | None:
    """``RUN/student``: the trained embedder (:class:`SpeakerEmbedder`), for ``robustdistill
    card --kind speaker`` and for use; a student that cannot be exported (on a Whisper
    upstream) is logged, and the run's results stand (``strict``: raised instead, as
    ``train-speaker export`` does, :func:`.export.export_checkpoint`).

    Returns:
        ``folder``, or None when the student was not exported.

    Raises:
        ValueError: (``strict`` only) a student that cannot be exported, before anything is
            written.
    """
    try:
        embedder = SpeakerEmbedder.from_speaker_model(model)
    except ValueError as err:
        if strict:
            raise
        logger.warning("student not exported to %s: %s", folder, err)
        return None
    embedder.save_pretrained(folder)
    logger.info("student (embedder) written to %s", folder)
    return folder
