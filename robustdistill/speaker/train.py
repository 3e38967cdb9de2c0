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
``environment.json`` (software versions at each start).

Usage::

    robustdistill train-speaker train --config configs/imlkd_speaker.yaml --loss.method imlkd
    robustdistill train-speaker table --config configs/imlkd_speaker.yaml   # all systems x seeds

Legend: ``M`` training crops, ``B`` batch, ``N`` samples, ``K`` training speakers, ``E``
embedding width.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from downstream.config import to_dict
from robustdistill.checkpoints import remove_incomplete
from robustdistill.environment import record_environment
from robustdistill.processes import require_single_process

from .attribution import AttributionCache, attribute_segments, segment_bounds
from .config import SpeakerKDConfig, TrainConfig
from .data import Crop, Utterance, check_disjoint, skipped_counts
from .evaluation import evaluate_student
from .ge2e import GE2E
from .losses import batch_loss, class_loss, instance_loss
from .models import MelLSTMEncoder, SpeakerEmbedder, SpeakerModel, UpstreamEncoder
from .run_folder import (
    check_run_folder,
    logged_epochs,
    save_epoch_checkpoint,
    weight_settings,
)
from .targets import map_targets, student_map_loss, teacher_targets

__all__ = ["build_student", "train_system"]

logger = logging.getLogger("robustdistill.speaker")


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
                 skipped_files: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """Train one student (``cfg.loss.method``) and evaluate it.

    Args:
        cfg: the recipe.
        teacher: frozen GE2E.
        crops: training crops, all of one length.
        eval_sets: name -> utterances of speakers unseen in training (None: no evaluation).
        stop_after_epochs: stop (after checkpointing) once this many epochs are done in this
            call, as an interrupted run would (for resume tests).
        skipped_files: ``{set name: {path: reason}}`` of the input files the loaders skipped
            (:func:`.inputs.load_inputs`); recorded as counts.

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
        FloatingPointError: an epoch whose summed losses are not finite (NaN/Inf); the
            epoch is neither logged nor checkpointed.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    require_single_process("robustdistill train-speaker")
    t = cfg.training
    out_dir = Path(t.output_dir)
    last = check_run_folder(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
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
        logger.info("resumed from %s (epoch %d)", last[0], start_epoch)
    elif accelerator.is_main_process:
        logged_epochs(log_path, 0)  # a log left by a run killed before its first checkpoint
    if accelerator.is_main_process:
        record_environment(out_dir, start_epoch, unit="epoch")

    weights = cfg.loss.weights()
    settings = cfg.ig.settings()
    cache = AttributionCache(cfg.ig.cache_dir if cfg.ig.use_cache else None)
    teacher.cached_fingerprint = teacher.fingerprint
    bounds = segment_bounds(num_samples, cfg.ig.durations)
    unwrapped = accelerator.unwrap_model(model)
    student_frames = int(unwrapped.encoder.frame_lengths(torch.tensor([num_samples]))[0])
    assign = map_targets(bounds, student_frames, unwrapped.samples_per_frame)
    all_audio = torch.from_numpy(np.stack([c.audio for c in crops]))
    done_here = 0
    for epoch in range(start_epoch, t.epochs):
        model.train()
        order = torch.randperm(len(crops), generator=torch.Generator().manual_seed(
            t.seed * 100_003 + epoch))
        hits0, misses0, t0 = cache.hits, cache.misses, time.perf_counter()
        ig_seconds, sums, deltas, steps = 0.0, {}, [], 0
        for i in range(0, len(order), t.batch_size):
            idx = order[i:i + t.batch_size]
            if len(idx) < 2:  # the batch-level loss and batch norm need two crops
                continue
            parts = {}
            if "map" in weights:
                t_ig = time.perf_counter()
                maps = attribute_segments(teacher, [crops[j].audio for j in idx],
                                          targets.centroids[labels[idx]], bounds, settings, cache)
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
                                                  targets.logits[idx].to(emb.device), cfg.loss.tau)
            if "instance" in weights:
                parts["instance"] = instance_loss(unwrapped.project(emb),
                                                  targets.embeddings[idx].to(emb.device))
            if "batch_level" in weights:
                parts["batch_level"] = batch_loss(emb, targets.embeddings[idx].to(emb.device))
            if "map" in weights:
                parts["map"] = student_map_loss(out.map_logits, teacher_maps, assign)
            loss = sum(weights[k] * v for k, v in parts.items())
            optimizer.zero_grad()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
            optimizer.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            steps += 1
        record = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0,
                  "ig_seconds": ig_seconds, "cache_hits": cache.hits - hits0,
                  "cache_misses": cache.misses - misses0,
                  **{k: v / max(steps, 1) for k, v in sums.items()}}
        if deltas:
            record["ig_relative_gap"] = float(np.mean(deltas))
        if not all(math.isfinite(v) for v in sums.values()):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}: {sums}")
        history.append(record)
        with log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("epoch %s", json.dumps(record))
        save_epoch_checkpoint(accelerator, out_dir, epoch + 1, weight_settings(cfg),
                         t.keep_checkpoints)
        done_here += 1
        if stop_after_epochs is not None and done_here >= stop_after_epochs:
            break
    result = {"method": cfg.loss.method, "seed": t.seed, "config": to_dict(cfg),
              "epochs": history,
              "params": sum(p.numel() for n, p in unwrapped.named_parameters()
                            if not n.startswith(("projection", "map_head", "classifier"))),
              # the whole run's lookups (history holds the epochs before a resume too)
              "cache": {"hits": sum(e.get("cache_hits", 0) for e in history),
                        "misses": sum(e.get("cache_misses", 0) for e in history)}}
    if any((skipped_files or {}).values()):
        result["skipped_files"] = {name: skipped_counts(files)
                                   for name, files in skipped_files.items() if files}
    finished = start_epoch + done_here >= t.epochs
    if eval_sets and finished:
        result["eval"] = evaluate_student(unwrapped, eval_sets, cfg.data)
    if finished and accelerator.is_main_process:
        _export_student(unwrapped, out_dir / "student")
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _export_student(model: SpeakerModel, folder: Path) -> None:
    """``RUN/student``: the trained embedder (:class:`SpeakerEmbedder`), for ``robustdistill
    card --kind speaker`` and for use; a student that cannot be exported (on a Whisper
    upstream) is logged, and the run's results stand."""
    try:
        embedder = SpeakerEmbedder.from_speaker_model(model)
    except ValueError as err:
        logger.warning("student not exported to %s: %s", folder, err)
        return
    embedder.save_pretrained(folder)
    logger.info("student (embedder) written to %s", folder)
