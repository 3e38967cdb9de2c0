"""The distillation loop on ``accelerate``.

Data flows one way: clean crops -> corruption (student input) -> frozen teacher on clean,
student on corrupted -> objectives -> optimizer step -> logs, checkpoints, export.

Loss normalisation: every objective returns sums over real units (frames, STFT frames,
utterances). Before an optimizer step the trainer pulls all micro-batches of the step,
counts their real units and all-reduces the counts over ranks; each micro-batch's loss is
``sum / step_count * world_size`` (DDP averages gradients over ranks), so the gradient is
that of the mean over every real frame of the step, whatever the padding, the micro-batch
split or the number of processes. That is why accumulation is explicit here (with
``no_sync`` on all micro-batches but the last) rather than ``accelerator.accumulate``,
which averages per micro-batch.

Exact resume: the sampler's order comes from ``(seed, epoch)`` (a streaming dataset instead
saves the batches each worker gave and replays its stream up to there, shuffle buffer and
workers included: :class:`~robustdistill.data.StreamingAudioDataset`), crops from
``(seed, epoch, index)``, corruption from ``(seed, step, rank, micro-batch)`` (or, with
``augmentation.in_loader``, from ``(seed, epoch, index)`` in the loader; validation's from
``(seed, index)`` alone, see :meth:`_Run.validate`); the checkpoint
(``accelerator.save_state``) holds model, optimizer, scheduler, RNG states and the
:class:`TrainingProgress` (step, epoch, batches consumed), so a resumed run replays exactly
the batches, corruptions and dropout masks of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from accelerate.utils.other import load as accelerate_load
from torch import nn
from torch.utils.data import IterableDataset
from tqdm.auto import tqdm
from transformers import AutoFeatureExtractor, AutoModel, get_scheduler

from .audio import SAMPLE_RATE, AudioError
from .augment import Corruptor, LoaderCorruption
from .checkpoints import (
    TRAINING_STATE,
    CheckpointError,
    checkpoint_index,
    latest_checkpoint,
    list_checkpoints,
    newest_checkpoint_note,
    remove_incomplete,
    save_checkpoint,
    tracker_resume_kwargs,
    truncate_log,
    verify_checkpoint,
)
from .config import ConfigError, DistillConfig
from .data import ShardedRandomSampler, build_dataloader, build_datasets
from .environment import record_environment
from .export import export_run_student, not_export_files, run_export_of_step
from .files import atomic_write_text, name_list
from .interrupts import note, sigterm_deferred, sigterm_pending, stop_terminated
from .metrics_log import drop_steps_after, file_size
from .nonfinite import NonFiniteTrainingError, any_process, any_process_each, stop_nonfinite
from .objectives import DistillationInputs, LossTerm, build_objective
from .outcome import FINAL_STATE, STOPPED, write_outcome
from .processes import STOP_RECORD, finish_processes
from .random_streams import VALIDATION_STREAM, keyed_rng
from .run_settings import saved_config_changes
from .startup_checks import (
    RESUME_FREE,
    check_crop_covers_a_frame,
    check_output_dir,
    check_student_is_trained,
    loss_schedule,
    prepare_models,
    student_differences,
)
from .strict_json import strict_dumps
from .student import create_student, save_student, student_feature_extractor
from .teacher_cache import MissingEntryError, TeacherFeatureCache
from .teachers import load_teacher
from .upstream import Upstream, disable_train_randomness, lengths_to_mask

logger = logging.getLogger(__name__)
# the trajectory key (checkpoints' training_state.json) of the training crops' start grid
CROP_GRID = "crop grid (samples; set by teacher_cache)"

__all__ = ["DataReadError", "Distiller", "NonFiniteTrainingError", "TrainingProgress", "train"]



class DataReadError(RuntimeError):
    """A training or validation batch could not be read: its dataset gave up after
    :data:`~robustdistill.data.cropped.MAX_READ_FAILURES` items in a row (or all of them)
    failed at read time (NaN/Inf, silent or corrupt samples: what the header scan cannot
    see), or, with ``teacher_cache.missing: error``, a teacher cache entry it needs is missing
    or unreadable. :func:`train` raises it after saving a checkpoint and writing
    ``stopped.json``."""


class _SigtermStop(Exception):  # noqa: N818 - a stop, not an error
    """Every process agreed to stop for a SIGTERM (one of them, or all, received it): raised
    on every process by :meth:`_Run._agree_on_data`, before the step's collectives."""


class Distiller(nn.Module):
    """The trainable part of a run: the student plus the objectives (which own the heads).

    ``forward(noisy (B, S), clean (B, S), lengths (B,), teacher: UpstreamOutput)`` runs the
    student on ``noisy`` and returns ``{objective: {term: LossTerm}}``.
    """

    def __init__(self, student: Upstream, objectives: dict[str, nn.Module]) -> None:
        super().__init__()
        self.student = student
        self.objectives = nn.ModuleDict(objectives)
        self.needs_cnn = any(o.needs_extract_features for o in objectives.values())

    def forward(self, noisy, clean, lengths, teacher) -> dict[str, dict[str, LossTerm]]:
        """Student on ``noisy (B, S)``; objectives on both outputs over their common frames."""
        student = self.student(noisy, lengths, return_extract_features=self.needs_cnn)
        frames = min(teacher.frame_mask.shape[1], student.hidden_states[-1].shape[1])
        common = torch.minimum(teacher.frame_lengths, student.frame_lengths).clamp(max=frames)
        inputs = DistillationInputs(teacher, student, lengths_to_mask(common, frames),
                                    clean, noisy, lengths)
        return {name: objective(inputs) for name, objective in self.objectives.items()}


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


def _param_groups(model: nn.Module, weight_decay: float, which: str = "matrices") -> list[dict]:
    """Two AdamW groups, with and without weight decay.

    ``which="matrices"``: decay on parameters with two or more dimensions (nanoGPT);
    ``"non_bias"``: on every parameter whose name does not contain ``bias`` (s3prl's
    ``get_grouped_parameters``, used by DistilHuBERT and RobustDistiller: fairseq's layer norms
    are named ``layer_norm``, not ``LayerNorm``, so their weights are decayed there too).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if which == "non_bias":
        decay = ["bias" not in n for n, _ in named]
    else:
        decay = [p.dim() >= 2 for _, p in named]
    return [
        {"params": [p for (_, p), d in zip(named, decay, strict=True) if d],
         "weight_decay": weight_decay},
        {"params": [p for (_, p), d in zip(named, decay, strict=True) if not d],
         "weight_decay": 0.0},
    ]


def _fingerprint(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in order: equal on all ranks after a DDP step."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _Run:
    """Everything one ``train`` call builds; methods are the loop's steps."""

    def __init__(self, cfg: DistillConfig) -> None:
        self.cfg = cfg
        t = cfg.training
        self.output_dir = Path(cfg.output_dir)
        self.accelerator = Accelerator(
            cpu=t.cpu,
            mixed_precision=t.mixed_precision,
            log_with=t.report_to or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs"),
                automatic_checkpoint_naming=False),  # named, published, rotated here
        )
        acc = self.accelerator
        if t.mixed_precision == "fp16" and acc.scaler is None:  # accelerate: no fp16 on a CPU
            logger.warning("training.mixed_precision fp16 runs in float32 on %s (no fp16 autocast "
                           "or gradient scaler there); bf16 is the CPU's mixed precision",
                           acc.device.type)
        if t.tf32:  # process-wide, as transformers' TrainingArguments(tf32=True)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if t.cudnn_benchmark:  # process-wide, as Lightning's Trainer(benchmark=True)
            torch.backends.cudnn.benchmark = True
        set_seed(cfg.seed)
        with acc.main_process_first():
            prepare_models(cfg)
        self.teacher = load_teacher(cfg)
        self.teacher.to(acc.device)
        student, feature_extractor, save_init = self._build_student()
        self.feature_extractor = feature_extractor
        if t.gradient_checkpointing:  # transformers' own recomputation of encoder layers
            student.activation_checkpointing_enable({"use_reentrant": False})
        if t.compile_student:  # in place: parameter names (checkpoints, export) unchanged
            student.compile()
        student_up = Upstream(student, normalize=feature_extractor.do_normalize,
                              use_attention_mask=feature_extractor.return_attention_mask,
                              frozen=False, feature_grad_mult=cfg.student.feature_grad_mult)
        check_crop_covers_a_frame(cfg.data, self.teacher, student_up)
        objectives = {}
        for name, options in cfg.objectives.items():
            try:
                objectives[name] = build_objective(
                    name, teacher_hidden_size=self.teacher.hidden_size,
                    teacher_num_layers=self.teacher.num_layers,
                    student_hidden_size=student_up.hidden_size,
                    student_conv_dim=student_up.conv_dim,
                    student_num_layers=student_up.num_layers, **options)
            except (KeyError, TypeError, ValueError) as err:
                raise ConfigError(str(err)) from err
        check_student_is_trained(objectives, student_up.num_layers,
                                 cfg.student.feature_grad_mult, warn=acc.is_main_process)
        model = Distiller(student_up, objectives)
        self.objectives = objectives
        self.schedule, self.task_objectives = loss_schedule(t, objectives)
        note = self.schedule.single_phase_note(t.max_steps)
        if note is not None and acc.is_main_process:
            logger.warning("training.%s", note)
        optimizer = torch.optim.AdamW(_param_groups(model, t.weight_decay, t.weight_decay_params),
                                      lr=t.learning_rate, betas=tuple(t.adam_betas),
                                      eps=t.adam_eps)
        # Not prepared: accelerate would step it once per process; our steps are optimizer steps.
        self.scheduler = get_scheduler(t.lr_schedule, optimizer,
                                       num_warmup_steps=int(t.warmup_ratio * t.max_steps),
                                       num_training_steps=t.max_steps)
        rank, world = acc.process_index, acc.num_processes
        try:
            train_set, valid_set = build_datasets(cfg.data, cfg.seed, rank=rank,
                                                  world_size=world)
        except ValueError as err:  # a folder with no usable audio, no readable validation
            raise ConfigError(f"data: {err}") from err  # item (AudioError too): start-up lines
        self.train_set, self.valid_set = train_set, valid_set
        self.teacher_cache = None
        if cfg.teacher_cache.dir:  # targets read from disk instead of a teacher forward
            try:
                self.teacher_cache = TeacherFeatureCache.from_config(
                    cfg.teacher_cache, self.teacher, objectives.values())
                for dataset in (train_set, valid_set):
                    self.teacher_cache.prepare_dataset(dataset)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"teacher_cache: {err}") from err
            logger.info("teacher cache %s (context %s, layers %s)", self.teacher_cache.path,
                        cfg.teacher_cache.context, self.teacher_cache.layers)
        if isinstance(train_set, IterableDataset):  # streaming: sharded and resumed by itself
            self.sampler = None
        else:
            self.sampler = ShardedRandomSampler(len(train_set), cfg.seed, shuffle=True,
                                                rank=rank, world_size=world)
        try:
            self.corruptor = Corruptor.from_config(cfg.augmentation, seed=cfg.seed)
        except AudioError as err:  # no usable file in noise_dir / rir_dir: a start-up message
            raise ConfigError(f"augmentation: {err} (reasons in the warnings above)") from err
        collate = self._cache_reader(acc.device)
        pin = acc.device.type == "cuda"  # page-locked batches: asynchronous host-to-device copies
        train_collate = collate
        if cfg.augmentation.in_loader:  # the student's input made in the workers
            if self.sampler is None:
                raise ConfigError("augmentation.in_loader needs a map-style dataset (data."
                                  "streaming false): a stream's items carry no epoch")
            train_collate = LoaderCorruption(self.corruptor, cfg.seed, collate)
        self.loader = build_dataloader(train_set, cfg.data.batch_size, self.sampler,
                                       cfg.data.num_workers, collate_fn=train_collate,
                                       pin_memory=pin)
        # Every validation item once, on one rank (ranks may get one item, or a batch, fewer:
        # validate's collectives come after its loop, so they stay matched)
        self.valid_sampler = ShardedRandomSampler(len(valid_set), cfg.seed, shuffle=False,
                                                  rank=rank, world_size=world, drop_last=False)
        self.valid_loader = build_dataloader(valid_set, cfg.data.batch_size, self.valid_sampler,
                                             cfg.data.num_workers, collate_fn=collate,
                                             pin_memory=pin)
        # written once every start-up check has passed, a resume's included (write_student_init)
        self._student_init = (student, feature_extractor) if save_init else None
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.progress = TrainingProgress()
        # Scheduler, progress and stream position go to training_state.json (save_checkpoint),
        # not to accelerate's custom-object pickles, which load with weights_only=False.
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self._next_checkpoint = 0
        self._stream_resumed = False
        #: ``{name: reason}`` of every audio item skipped in this process (summary).
        self.skipped_audio: dict[str, str] = {}
        for dataset in (train_set, valid_set):
            skipped = getattr(dataset, "skipped", None)  # a stream only counts its skips
            if isinstance(skipped, dict):
                self.skipped_audio.update(skipped)
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.resumed_own_checkpoint = False  # set by resume()
        #: ``(step, folder)`` of this run's newest checkpoint (saved, or resumed from).
        self.last_checkpoint: tuple[int, Path] | None = None
        #: Whether a held SIGTERM stops the run (``training.save_on_sigterm``), and, once it
        #: did, ``(folder, seconds)`` of the checkpoint saved for it (None: none was needed).
        self.watch_sigterm = cfg.training.save_on_sigterm
        self.sigterm_checkpoint: tuple[Path, float] | None = None
        # a stream's position before the step's batches were drawn, and the one a stop put
        # back for the checkpoint (see _agree_on_data)
        self._stream_before_step: dict | None = None
        self._stream_restored: dict | None = None
        logger.info("teacher %s: %d layers, width %d; student: %d layers, width %d, %.1f M "
                    "params; %s train / %d validation utterances; %d process(es)",
                    cfg.teacher, self.teacher.num_layers, self.teacher.hidden_size,
                    student_up.num_layers, student_up.hidden_size,
                    sum(p.numel() for p in student.parameters()) / 1e6,
                    "streamed" if self.sampler is None else len(train_set), len(valid_set), world)

    def _build_student(self):
        """``(student, feature_extractor, save)``: the run's student and its preprocessor
        (``student_init``, or made from the teacher); ``save``: whether
        ``OUTPUT_DIR/student_init/`` is to be written, once every start-up check has passed
        (not for a resume of this run, whose first start wrote it). Saving draws no random
        number and nothing before it changes the student's weights or config, so writing it
        after the checks changes no run.

        Raises:
            ConfigError: a student that does not fit the teacher, keeps LayerDrop, or differs
                from the one a resumed run was started with.
        """
        cfg = self.cfg
        if cfg.student_init:
            student = AutoModel.from_pretrained(cfg.student_init)
            if not cfg.student.keep_train_randomness:  # as create_student's students
                disable_train_randomness(student.config)
            feature_extractor = AutoFeatureExtractor.from_pretrained(cfg.student_init)
        else:
            try:  # e.g. a preset's CNN with more layers than the teacher's
                student = create_student(self.teacher, cfg.student)
            except ValueError as err:
                raise ConfigError(f"student: {err}") from err
            feature_extractor = self._own_input_convention(
                student_feature_extractor(self.teacher, student.config))
        layerdrop = getattr(student.config, "layerdrop", 0.0) or 0.0
        if layerdrop > 0:  # transformers records no hidden state for a skipped layer
            raise ConfigError(
                f"the student keeps LayerDrop (layerdrop {layerdrop}, student.keep_train_"
                "randomness or student_init), and a skipped layer is left out of its "
                "hidden_states, so the layers the objectives read would shift or be missing: "
                "set student.keep_train_randomness false, or a student_init with layerdrop 0")
        saved = self.output_dir / "student_init"
        if self._resuming_own_run() and (saved / "config.json").is_file():
            # the run's student, as its first start wrote it: kept, never replaced by another
            differ = student_differences(saved, student.config)
            if differ:
                raise ConfigError(
                    f"{saved} holds this run's student, and the settings given make another "
                    f"({'; '.join(differ)}): its checkpoints would not fit; resume with the "
                    "run's student settings, or give another output_dir")
            return student, feature_extractor, False
        return student, feature_extractor, True  # the exported student's config, preprocessor

    def _resuming_own_run(self) -> bool:
        """Whether ``training.resume_from`` resumes a checkpoint of this run's own folder
        (``latest`` / ``auto`` with one there, or a folder under ``output_dir/checkpoints``)."""
        where, own = self.cfg.training.resume_from, self.output_dir / "checkpoints"
        if not where:
            return False
        if where in ("latest", "auto"):
            return latest_checkpoint(own) is not None
        return Path(where).resolve().parent == own.resolve()

    def _own_input_convention(self, made):
        """``made`` (the preprocessor :func:`student_feature_extractor` gives now), or, for a
        resume of this run's own checkpoint, the one its first start saved in
        ``student_init/`` when their normalisation or attention mask differ (a run created
        before 2026-12-06 from a teacher that normalises without a mask, e.g.
        ``facebook/wav2vec2-base``): a resumed run keeps the input convention its steps so far
        were trained with, with a warning."""
        saved = self.output_dir / "student_init"
        if not (saved / "preprocessor_config.json").is_file() or not self._resuming_own_run():
            return made
        kept = AutoFeatureExtractor.from_pretrained(saved)
        before = (bool(kept.do_normalize), bool(getattr(kept, "return_attention_mask", False)))
        if before == (bool(made.do_normalize), bool(made.return_attention_mask)):
            return made
        if self.accelerator.is_main_process:
            logger.warning("resuming with the run's own student input convention (%s: "
                           "do_normalize %s, return_attention_mask %s), which this version "
                           "would now choose otherwise (%s, %s)", saved, *before,
                           made.do_normalize, made.return_attention_mask)
        return kept

    # ------------------------------------------------------------------ data
    def _cache_reader(self, device: torch.device):
        """The loaders' collate function: the cache's :class:`CacheReader` when
        ``teacher_cache.read_in_workers`` (targets read in the workers; float32 for a CPU run,
        the storage dtype for an accelerator, which converts them), else None (plain collate)."""
        if self.teacher_cache is None or not self.cfg.teacher_cache.read_in_workers:
            return None
        longest = 0
        for dataset in (self.train_set, self.valid_set):
            lengths = getattr(dataset, "lengths", None)
            if lengths is None or not len(lengths):
                continue
            utterance = int(np.max(lengths))  # a dataset's crops are at most this long
            crop = getattr(dataset, "_max_samples", None) or utterance
            longest = max(longest, min(crop, utterance))
        if not longest:
            return None
        dtype = torch.float32 if device.type == "cpu" else self.teacher_cache.dtype
        return self.teacher_cache.reader(longest, dtype)

    def _batches(self) -> Iterator[dict]:
        """Training batches forever, epoch after epoch, tracking the position exactly."""
        p = self.progress
        while True:
            if self.sampler is not None:
                self.sampler.set_epoch(p.epoch)
                start = p.batches_in_epoch * self.cfg.data.batch_size
                if start >= self.sampler.samples_per_rank:  # resumed at the epoch's end
                    p.epoch, p.batches_in_epoch = p.epoch + 1, 0
                    continue
                self.sampler.set_start(start)
            elif not self._stream_resumed:  # a loaded stream state continues its epoch
                self.train_set.set_epoch(p.epoch)
            self._stream_resumed = False
            from_start = p.batches_in_epoch == 0
            # a stream records the batches consumed (its resume position) as they are taken
            loader = self.loader if self.sampler is not None else self.train_set.track(self.loader)
            for batch in loader:
                p.batches_in_epoch += 1
                self.note_skipped(batch)
                yield batch
            if from_start and p.batches_in_epoch == 0:
                raise ConfigError(
                    f"epoch {p.epoch} gave no training batch on rank "
                    f"{self.accelerator.process_index}: every item was held out for "
                    "validation (data.max_validation_items, data.validation_fraction) or "
                    "skipped (shorter than data.min_length_s, unreadable)")
            # a stream's next epoch follows this rank's own (after a resume, ranks may be in
            # other epochs than rank 0, whose progress the checkpoint holds)
            p.epoch = (p.epoch if self.sampler is not None else self.train_set.epoch) + 1
            p.batches_in_epoch = 0

    def _unit_counts(self, batch: dict) -> dict[str, torch.Tensor]:
        """Real units of one micro-batch, computed from lengths alone (before any forward)."""
        lengths = batch["lengths"]
        student = self.accelerator.unwrap_model(self.model).student
        frames = torch.minimum(self.teacher.frame_lengths(lengths).cpu(),
                               student.frame_lengths(lengths).cpu())
        counts = {"frames": frames.sum(), "utterances": torch.tensor(len(lengths)),
                  "seconds": lengths.cpu().sum() / SAMPLE_RATE}
        for objective in self.objectives.values():
            counts.update(objective.count_units(lengths.cpu()))
        return {k: v.double() for k, v in counts.items()}

    def _reduce_counts(self, counts: dict[str, torch.Tensor]) -> dict[str, float]:
        keys = sorted(counts)
        stacked = torch.stack([counts[k] for k in keys]).to(self.accelerator.device)
        total = self.accelerator.reduce(stacked, reduction="sum").cpu()
        return dict(zip(keys, total.tolist(), strict=True))

    def write_student_init(self) -> None:
        """Write ``OUTPUT_DIR/student_init/`` (the student as built, before any step) when the
        run is to write it, once: after every start-up check, a resume's included, so a run
        refused at start-up leaves none, and before a resumed checkpoint's weights load.

        Rank 0 writes; the other ranks read ``student_init/`` only in :meth:`_build_student`,
        before ``accelerator.prepare``, whose DDP wrap is a collective (shapes gathered,
        parameters broadcast): every rank has read before rank 0 gets here (checked on 2
        processes with rank 1's reads delayed 16 s: rank 0 waited)."""
        if self._student_init is not None and self.accelerator.is_main_process:
            save_student(*self._student_init, self.output_dir / "student_init")
        self._student_init = None

    # ------------------------------------------------------------------ forward
    def _loss(self, batch: dict, rng: np.random.Generator | list[np.random.Generator],
              step: int | None, dataset=None, model: nn.Module | None = None):
        """Teacher on clean (or its cached targets), student on corrupted; returns the
        objectives' terms. ``rng``: one generator for the batch or one per row
        (:meth:`Corruptor.corrupt_batch`). ``dataset`` (default the training set) fills cache
        misses; ``model`` (default the prepared, DDP-wrapped one) runs the student."""
        device = self.accelerator.device
        clean = batch["waveforms"]
        lengths = batch["lengths"]
        noisy = batch.get("noisy")  # made by the loader (augmentation.in_loader)
        if noisy is None:
            noisy, _ = self.corruptor.corrupt_batch(clean, lengths, rng, step)
        _check_finite_inputs(batch, clean, noisy)
        if self.teacher_cache is not None:
            dataset = self.train_set if dataset is None else dataset
            teacher = self.teacher_cache.targets(batch, dataset.full_waveform, device)
        clean, noisy, lengths = clean.to(device), noisy.to(device), lengths.to(device)
        if self.teacher_cache is None:  # outside autocast: float32 targets, as both references
            teacher = self.teacher(clean, lengths)
        with self.accelerator.autocast():
            return (self.model if model is None else model)(noisy, clean, lengths, teacher)

    def _factors(self, step: int) -> dict[str, float]:
        """Each objective's factor at ``step`` from the loss schedule (1 with ``sum``)."""
        weights = self.schedule.weights(step)
        return {name: weights.task if name in self.task_objectives else weights.kd
                for name in self.objectives}

    @staticmethod
    def _weighted(terms, counts: dict[str, float], factors: dict[str, float]) -> torch.Tensor:
        return sum(factors[name] * term.weight * term.total / max(counts[term.unit], 1.0)
                   for name, parts in terms.items() for term in parts.values())

    @staticmethod
    def _add_sums(sums: dict, terms) -> None:
        for name, parts in terms.items():
            for part, term in parts.items():
                sums[f"{name}/{part}"] = sums[f"{name}/{part}"] + term.total.detach().double()
                sums.setdefault(f"_unit/{name}/{part}", (term.unit, term.weight))

    def _means(self, sums: dict, counts: dict[str, float],
               factors: dict[str, float]) -> dict[str, float]:
        """Reduce term sums over ranks and divide by the step's unit counts; ``loss`` weighs
        each term by its weight and its objective's schedule factor."""
        names = sorted(k for k in sums if not k.startswith("_unit/"))
        if not names:
            return {}
        stacked = torch.stack([sums[k].reshape(()) for k in names]).to(self.accelerator.device)
        totals = self.accelerator.reduce(stacked, reduction="sum").cpu().tolist()
        means, loss = {}, 0.0
        for name, total in zip(names, totals, strict=True):
            unit, weight = sums[f"_unit/{name}"]
            means[name] = total / max(counts[unit], 1.0)
            loss += factors[name.split("/", 1)[0]] * weight * means[name]
        means["loss"] = loss
        return means

    # ------------------------------------------------------------------ steps
    def train_step(self, batches: Iterator[dict]) -> dict[str, float]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches.

        Returns the step's mean of every loss term over its real units (all micro-batches,
        all ranks), the weighted ``loss``, ``grad_norm`` and ``audio_seconds``.
        """
        acc, t = self.accelerator, self.cfg.training
        p = self.progress
        position = p.epoch, p.batches_in_epoch
        # a stream records the batches taken as they come: its position before them, for a
        # checkpoint of the previous step if the run stops before this one (a few small lists)
        self._stream_before_step = self.train_set.state_dict() if self.sampler is None else None
        waited = time.perf_counter()
        try:
            window = [next(batches) for _ in range(t.gradient_accumulation_steps)]
            for batch in window:  # before the step's collectives, so every process stops
                self._check_cache(batch, self.train_set)
            failure = None
        except (AudioError, MissingEntryError) as err:  # the dataset gave up (MAX_READ_
            failure = err  # FAILURES in a row, or all), or missing: error met a cache miss
        waited = time.perf_counter() - waited  # time blocked on the data loader
        self._agree_on_data(failure, "training", position)
        counts = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        for batch in window:
            for unit, value in self._unit_counts(batch).items():
                counts[unit] = counts[unit] + value
        counts = self._reduce_counts(dict(counts))
        step = self.progress.step
        factors = self._factors(step)
        if self.schedule.switches_at(step):
            logger.info("step %d: two-step schedule switches to phase 2 (task objectives %s "
                        "only)", step, sorted(self.task_objectives))
            self.log("schedule", {"phase": 2, "kd_weight": 0.0, "task_weight": 1.0})
        sums = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        self.model.train()
        for i, batch in enumerate(window):
            rng = keyed_rng(self.cfg.seed, step, acc.process_index, i)
            sync = i == len(window) - 1
            with nullcontext() if sync else acc.no_sync(self.model):
                terms = self._loss(batch, rng, step)
                acc.backward(self._weighted(terms, counts, factors) * acc.num_processes)
            self._add_sums(sums, terms)
        grad_norm = acc.clip_grad_norm_(self.model.parameters(),
                                        t.max_grad_norm if t.max_grad_norm > 0 else math.inf)
        bad_loss = self._nonfinite_on_any_rank(sums)
        bad_step = bad_loss or not torch.isfinite(grad_norm)
        # fp16's GradScaler skips non-finite steps itself (and must see them to lower its scale);
        # fp16 on a CPU has no scaler (accelerate runs it in float32), so the step is ours to skip.
        if bad_step and acc.scaler is None:
            self.progress.nonfinite_losses += bad_loss
            self.progress.skipped_updates += 1
            self.progress.nonfinite_in_a_row += 1
            logger.warning("step %d: non-finite %s (grad norm %s); update skipped (%d in a row, "
                           "%d in all)", step, "loss" if bad_loss else "gradient",
                           float(grad_norm), self.progress.nonfinite_in_a_row,
                           self.progress.skipped_updates)
        else:
            self.optimizer.step()
            if self.optimizer.step_was_skipped:  # fp16: the GradScaler saw inf/NaN gradients
                logger.warning("step %d: fp16 gradient scaler skipped the update", step)
                self.progress.scaler_skipped_steps += 1
            # fp16: overflowing gradients are the scaler's business; a NaN/Inf loss is not.
            self.progress.nonfinite_losses += bad_loss
            self.progress.nonfinite_in_a_row = self.progress.nonfinite_in_a_row + 1 if bad_loss else 0
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        means = self._means(sums, counts, factors)
        if self.schedule.kind != "sum":
            weights = self.schedule.weights(step)
            means.update({"schedule/phase": weights.phase, "schedule/kd_weight": weights.kd,
                          "schedule/task_weight": weights.task})
        means["grad_norm"] = float(grad_norm)
        means["audio_seconds"] = counts["seconds"]
        means["data_wait_seconds"] = waited
        return means

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss terms over the validation set (the full target distribution of the
        corruption, no curriculum), comparable across steps, process counts and batch sizes.

        Every item is evaluated once, on one rank (none is dropped to even out the ranks). Its
        corruption comes from its own stream ``default_rng([seed, VALIDATION_STREAM, index])``
        (``index``: the item's position in the validation set), so it is the same at every
        step, on any number of processes, in any batch. The sums and unit counts are reduced
        over ranks in float64. What remains of the batching: float32 rounding of the models and
        of each objective's per-batch sum (about 1e-6 relative); a model whose output depends
        on the padding (no attention mask, a group-norm CNN as WavLM/HuBERT Base, or
        data2vec-audio, whose positional convolutions carry the padding into the last real
        frames even with a mask), for items shorter than ``data.max_length_s`` batched with
        longer ones; an objective whose terms couple the utterances of a batch (none of the
        built-in ones: every term is a sum over utterances or frames); and
        ``training.max_eval_batches``, a cap per process (its items then depend on the process
        count and batch size).
        """
        acc = self.accelerator
        model = acc.unwrap_model(self.model)  # no DDP hooks: ranks may run unequal batches
        model.eval()
        sums = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        counts = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        limit = self.cfg.training.max_eval_batches
        self.valid_sampler.set_epoch(0)
        batches = iter(self.valid_loader)
        failure = None
        for i in itertools.count():
            if limit is not None and i >= limit:
                break
            if self.watch_sigterm and sigterm_pending():  # the pass stops; the agreement below
                break  # stops every process (the checkpoint's step validates again on resume)
            try:
                batch = next(batches)
                self._check_cache(batch, self.valid_set)
            except StopIteration:
                break
            except (AudioError, MissingEntryError) as err:  # audio read at start-up
                failure = err  # (build_datasets), so changed since; or a cache miss
                break
            self.note_skipped(batch)
            for unit, value in self._unit_counts(batch).items():
                counts[unit] = counts[unit] + value
            rngs = [keyed_rng(self.cfg.seed, VALIDATION_STREAM, int(index))
                    for index in batch["indices"]]
            self._add_sums(sums, self._loss(batch, rngs, self.corruptor.target_step,
                                            self.valid_set, model))
        self._agree_on_data(failure, "validation", validation=True)
        if acc.num_processes > 1:  # a rank with fewer batches (or none) reduces the same keys
            self._same_keys_on_all_ranks(sums, counts)
        # ``loss`` with the factors of the step the run is at (phase 1 or 2 of two_step)
        means = self._means(sums, self._reduce_counts(dict(counts)),
                            self._factors(self.progress.step))
        self.model.train()
        return means

    @staticmethod
    def _same_keys_on_all_ranks(sums: defaultdict, counts: defaultdict) -> None:
        """Add, as zeros, the term and unit keys other ranks have and this one lacks (a rank
        that evaluated no item knows no term), so that every rank's reductions stack the same
        keys in the same order (a collective: every process calls it at the same point)."""
        mine = ({k: v for k, v in sums.items() if k.startswith("_unit/")}, sorted(counts))
        for units, unit_names in gather_object([mine]):
            for key, unit in units.items():
                sums.setdefault(key, unit)
                sums.setdefault(key.removeprefix("_unit/"), torch.zeros((), dtype=torch.float64))
            for name in unit_names:
                counts.setdefault(name, torch.zeros((), dtype=torch.float64))

    # ------------------------------------------------------------------ logging
    def log(self, split: str, values: dict[str, float]) -> None:
        """To the trackers (TensorBoard) and one JSON line of ``metrics.jsonl`` (strict JSON:
        a non-finite value, e.g. a loss term of a NaN step, is ``null`` under its key)."""
        acc = self.accelerator
        record = {"step": self.progress.step, "split": split,
                  "lr": self.scheduler.get_last_lr()[0], **values}
        acc.log({f"{split}/{k}": v for k, v in record.items() if k not in ("step", "split")},
                step=self.progress.step)
        if acc.is_main_process:
            with self.metrics_path.open("a") as handle:
                handle.write(strict_dumps(record) + "\n")

    def _nonfinite_on_any_rank(self, sums: dict) -> bool:
        """True when a loss term of this step is NaN/Inf on any rank (the same on all ranks)."""
        return any_process(self.accelerator, any(not bool(torch.isfinite(v))
                                                 for k, v in sums.items()
                                                 if not k.startswith("_unit/")))

    def _check_cache(self, batch: dict, dataset) -> None:
        """With ``teacher_cache.missing: error``, refuse a batch whose cache entries are not
        all there (:meth:`TeacherFeatureCache.check_entries`; ``dataset`` names the audio).

        Raises:
            MissingEntryError: naming the entry and its audio file.
        """
        if self.teacher_cache is not None:  # names listed only for a message
            named = getattr(type(dataset), "names", None) is not None
            self.teacher_cache.check_entries(batch, (lambda i: dataset.names[i]) if named
                                             else None)

    def _agree_on_data(self, failure: AudioError | MissingEntryError | None, split: str,
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
        term = self.watch_sigterm and sigterm_pending()
        if self.accelerator.num_processes > 1:  # one process: no collective, no device sync
            failed, term = any_process_each(self.accelerator, failed, term)
        if not (failed or term):
            return
        if position is not None:
            self.progress.epoch, self.progress.batches_in_epoch = position
            self._stream_restored = self._stream_before_step
        if not failed:
            if validation and self.progress.step > 0:
                self.progress.validation_due = True
            raise _SigtermStop(split)
        if failure is None:
            raise DataReadError(f"another process could not read its {split} batch")
        if isinstance(failure, MissingEntryError):
            raise DataReadError(f"{split} batch: {failure}") from failure
        lines = str(failure).strip().splitlines()  # a DataLoader worker's error holds its
        detail = lines[-1] if lines else type(failure).__name__  # traceback: its last line,
        detail = re.sub(r"^[\w.]*AudioError: ", "", detail)  # less the exception's name
        raise DataReadError(f"no {split} audio could be read: {detail}") from failure

    def note_skipped(self, batch: dict) -> None:
        """Record the audio items a batch's dataset skipped (``batch["skipped"]``)."""
        for name, reason in batch.get("skipped", ()):
            self.skipped_audio.setdefault(name, reason)

    def save_checkpoint(self) -> Path:
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
        acc = self.accelerator
        index = self._next_checkpoint
        streams = None
        if self.sampler is None:  # before the batches of a step that did not run, if any
            streams = gather_object([self._stream_restored or self.train_set.state_dict()])
        lookups = (gather_object([self.teacher_cache.lookups()])
                   if self.teacher_cache is not None else None)
        state = None
        if acc.is_main_process:
            state = {TRAINING_STATE: {
                "progress": self.progress.state_dict(), "scheduler": self.scheduler.state_dict(),
                "stream_per_rank": streams, "num_processes": acc.num_processes,
                "trajectory": self._trajectory(), "metrics_bytes": file_size(self.metrics_path),
                # each rank's teacher cache lookups so far: final_state.json sums the whole run
                "teacher_cache_lookups": lookups,
                # each head's layout, so that `robustdistill export` of this checkpoint writes
                # the same rebuild recipe as the trainer's own export
                "head_configs": {name: objective.head_config()
                                 for name, objective in self.objectives.items()}}}
        final = save_checkpoint(acc, self.checkpoint_dir, index, self.progress.step, state=state,
                                keep=self.cfg.training.keep_checkpoints)
        self._next_checkpoint = index + 1
        self.last_checkpoint = (self.progress.step, final)
        logger.info("checkpoint %s saved at step %d", final, self.progress.step)
        return final

    def _trajectory(self) -> dict:
        """What fixes which batches the steps see (saved with every checkpoint and compared
        on resume): the seed, batch, accumulation, crop settings (the crop grid in samples
        too: a teacher cache puts crop starts on the teacher's frames, or on whole chunks)
        and training item count."""
        cfg = self.cfg
        out = {"seed": cfg.seed, "data.batch_size": cfg.data.batch_size,
               "data.max_length_s": cfg.data.max_length_s,
               "data.min_length_s": cfg.data.min_length_s,
               "training.gradient_accumulation_steps": cfg.training.gradient_accumulation_steps}
        if self.sampler is not None:
            out["training items"] = self.sampler.num_samples
            out[CROP_GRID] = int(self.train_set.crop_grid)
        return out

    def resume(self, where: str) -> bool:
        """Load a checkpoint; the loop continues from its step.

        Args:
            where: ``"latest"`` (the newest complete checkpoint of this run), ``"auto"``
                (the same, or a fresh start when there is none: for restart loops), or a
                checkpoint folder.

        Returns:
            True when a checkpoint was loaded.

        Raises:
            FileNotFoundError: ``"latest"`` with no complete checkpoint, or a missing folder.
            CheckpointError: the folder is incomplete, altered, or not written by this
                trainer (no ``checkpoint.json`` or ``training_state.json``).
            ConfigError: the checkpoint was written with another number of processes, or with
                another seed, batch, accumulation, crop length or training item count
                (:meth:`_trajectory`), or is past ``training.max_steps``; a streaming dataset's
                checkpoint written with another ``data.num_workers``.
        """
        acc = self.accelerator
        if where in ("latest", "auto"):
            path = latest_checkpoint(self.checkpoint_dir)
            if path is None:
                if where == "auto":
                    logger.info("resume_from auto: no complete checkpoint under %s; starting "
                                "from step 0", self.checkpoint_dir)
                    return False
                raise FileNotFoundError(
                    f"resume_from latest: no complete checkpoint under {self.checkpoint_dir}")
        else:
            path = Path(where)
            if not path.is_dir():
                raise FileNotFoundError(f"resume_from: checkpoint folder {path} does not exist")
        verify_checkpoint(path)
        if not (path / TRAINING_STATE).is_file():
            raise CheckpointError(f"{path} has no {TRAINING_STATE}: not written by this trainer")
        state = json.loads((path / TRAINING_STATE).read_text())
        if state["num_processes"] != acc.num_processes:
            raise ConfigError(f"{path} was written by {state['num_processes']} process(es); this "
                             f"run has {acc.num_processes}: exact resume needs the same number")
        step = int((state.get("progress") or {}).get("step", 0))
        if step > self.cfg.training.max_steps:
            raise ConfigError(
                f"{path} is at step {step}, past training.max_steps "
                f"{self.cfg.training.max_steps}: a resume cannot shorten a run (its config and "
                f"card would say {self.cfg.training.max_steps} steps); allowed: max_steps >= "
                f"{step}, or `robustdistill export --run RUN --checkpoint DIR` of an earlier "
                "checkpoint")
        saved, now = state.get("trajectory", {}), self._trajectory()
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
        if self.sampler is None:  # before anything is written or loaded: it may refuse
            try:  # replays the stream up to its position (shuffle buffer and workers too)
                self.train_set.load_state_dict(state["stream_per_rank"][acc.process_index])
            except ValueError as err:  # saved with another data.num_workers
                raise ConfigError(f"{path}: {err} (data.num_workers)") from err
        self.write_student_init()  # the checks passed; before the checkpoint's weights load
        acc.load_state(str(path))  # weights_only loads only (safetensors, tensors, RNG arrays)
        self.progress.load_state_dict(state["progress"])
        self.scheduler.load_state_dict(state["scheduler"])
        # What this run logged after its own checkpoint goes (metrics.jsonl now, TensorBoard
        # when the trackers start); another run's checkpoint leaves this run's logs alone.
        self.resumed_own_checkpoint = path.parent.resolve() == self.checkpoint_dir.resolve()
        if self.resumed_own_checkpoint:
            self.last_checkpoint = (self.progress.step, path)
        if acc.is_main_process and self.resumed_own_checkpoint:
            truncate_log(self.metrics_path, state.get("metrics_bytes"))
        lookups = state.get("teacher_cache_lookups")  # None: no cache then, or an older run
        if self.resumed_own_checkpoint and self.teacher_cache is not None and lookups:
            self.teacher_cache.restore_lookups(lookups[acc.process_index])
        self._stream_resumed = self.sampler is None
        indices = [checkpoint_index(p) for p in list_checkpoints(self.checkpoint_dir, False)]
        self._next_checkpoint = max([checkpoint_index(path) or 0, *indices]) + 1
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path,
                    self.progress.step, self.progress.epoch, self.progress.batches_in_epoch)
        return True


def _check_finite_inputs(batch: dict, clean: torch.Tensor, noisy: torch.Tensor) -> None:
    """Non-finite audio never reaches a model (the datasets refuse it; corruption keeps it
    finite): a last check before the teacher and the student.

    Raises:
        RuntimeError: naming the batch's dataset indices.
    """
    for what, waves in (("clean", clean), ("corrupted", noisy)):
        finite = torch.isfinite(waves).all(dim=-1)
        if not bool(finite.all()):
            bad = batch["indices"][~finite.cpu()].tolist()
            raise RuntimeError(f"{what} audio of dataset items {bad} has NaN/Inf samples; "
                               "refusing to feed it to the models")


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
    every process calls it (all agreed in :meth:`_Run._agree_on_data`).

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


def _loop(run: _Run, bar) -> None:
    """Validate at step 0 (``eval_at_start``), or the resumed step's validation that a SIGTERM
    cut short (``validation_due``), then train to ``max_steps``: log, validate and save on
    their schedules.

    Raises:
        NonFiniteTrainingError: see :func:`_stop_nonfinite`.
        DataReadError: a training or validation batch could not be read.
        _SigtermStop: a process holds a SIGTERM (``training.save_on_sigterm``): seen before
            a step's collectives or, cutting it short, in a validation.
    """
    acc, t = run.accelerator, run.cfg.training
    if run.progress.step == 0 and t.eval_at_start:  # the step-0 baseline of the validation loss
        run.log("validation", run.validate())
    elif run.progress.validation_due:  # as the uninterrupted run did before this checkpoint
        valid = run.validate()
        run.progress.best_validation_loss = min(run.progress.best_validation_loss,
                                                valid["loss"])
        run.progress.validation_due = False
        run.log("validation", valid)
    batches = run._batches()
    started, done_audio, waited = time.perf_counter(), 0.0, 0.0
    while run.progress.step < t.max_steps:
        values = run.train_step(batches)
        step = run.progress.step
        done_audio += values["audio_seconds"]
        waited += values.pop("data_wait_seconds")
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.3f}")
        if run.progress.nonfinite_in_a_row >= t.max_nonfinite_in_a_row:
            bar.close()
            _stop_nonfinite(run)
        if step % t.log_every == 0 or step == t.max_steps:
            elapsed = time.perf_counter() - started
            values["audio_seconds_per_second"] = done_audio / max(elapsed, 1e-9)
            values["data_wait_share"] = waited / max(elapsed, 1e-9)  # of wall time since start
            run.log("train", values)
        if step % t.eval_every == 0 or step == t.max_steps:
            valid = run.validate()
            run.progress.best_validation_loss = min(run.progress.best_validation_loss,
                                                    valid["loss"])
            run.log("validation", valid)
            if acc.is_main_process:
                bar.write(f"step {step}: validation loss {valid['loss']:.4f}")
        if (t.save_every and step % t.save_every == 0) or step == t.max_steps:
            run.save_checkpoint()


def train(cfg: DistillConfig) -> Path:
    """Run a distillation from a validated config.

    Writes under ``cfg.output_dir``: ``config.yaml``, ``environment.json`` (software versions
    at each start, :mod:`robustdistill.environment`), ``metrics.jsonl``, TensorBoard logs in
    ``logs/``, checkpoints in ``checkpoints/``, and at the end the exported ``student/``
    (loads with ``AutoModel.from_pretrained``) and ``heads/``. Both are emptied before they are
    written (:func:`~robustdistill.export.export_run_student`): a resumed run removes what an
    earlier export left there (a card, plots, copied heads, an ONNX graph), warning at the start
    and when it removes them, except a run resumed at ``max_steps`` (no step left to train)
    whose ``student/`` and ``heads/`` already are that step's export
    (:func:`~robustdistill.export.run_export_of_step`): it keeps both as they are, card
    included, and exports nothing. A run that starts at step 0 (no checkpoint resumed, also
    ``resume_from auto`` finding none) empties a ``metrics.jsonl`` left by a run killed before
    its first checkpoint and hides that run's TensorBoard points, so each step is logged once.
    A start from another run's checkpoint (``resume_from DIR``) into an ``output_dir`` with no
    checkpoint of its own removes the ``metrics.jsonl`` records of steps after the loaded one
    (a killed first try's; other lines stay); its TensorBoard points are not hidden.

    Returns:
        The exported student folder (or the output dir when export is off).

    Raises:
        ConfigError: objectives or options that do not fit the models, a crop shorter than
            one frame, an ``output_dir`` that cannot be written (checked first), a data folder
            with no usable audio or a validation set with no readable item (each validation
            item is read at start-up), a noise or RIR folder with no usable file.
        FileNotFoundError: missing data, noise/RIR folder, or checkpoint to resume.
        NonFiniteTrainingError: ``training.max_nonfinite_in_a_row`` steps in a row had a
            NaN/Inf loss or gradient (a checkpoint is saved first).
        DataReadError: a training or validation batch could not be read (every item its
            dataset tried failed at read time); a checkpoint of the last step is saved first
            (none at step 0) and ``stopped.json`` names the skipped files.
        robustdistill.interrupts.Terminated: a SIGTERM during training, with
            ``training.save_on_sigterm``: the step under way finished, every process agreed to
            stop after it, and a checkpoint of it was saved first (none at step 0; a
            validation it cut short is done first by the resumed run); at start-up, or with
            the option off, at once (docs/reliability.md, "SIGTERM during training").
    """
    check_output_dir(cfg.output_dir, resuming=bool(cfg.training.resume_from))  # before loading
    runs: list[_Run] = []  # the run once built, for the line of an interrupt
    with note(lambda: _interrupt_note(cfg, runs[0] if runs else None)):
        return _train(cfg, runs)


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


def _train(cfg: DistillConfig, runs: list[_Run]) -> Path:
    """:func:`train` once the output folder is checked; appends the run to ``runs``."""
    run = _Run(cfg)
    runs.append(run)
    acc, t = run.accelerator, cfg.training
    # the settings the run was last started with, before config.yaml is written again
    changes = saved_config_changes(run.output_dir, cfg.to_dict(), RESUME_FREE)
    if acc.is_main_process:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        remove_incomplete(run.checkpoint_dir)  # what a killed run's last write left
    resumed = bool(t.resume_from) and run.resume(t.resume_from)
    if acc.is_main_process and not resumed:  # a log left by a run killed before its first
        truncate_log(run.metrics_path, 0)  # checkpoint (resume_from auto found none)
    elif (acc.is_main_process and not run.resumed_own_checkpoint
          and not list_checkpoints(run.checkpoint_dir, require_manifest=False)):
        # another run's checkpoint, none of this run's own: a start killed before its first
        # checkpoint logged the steps after the loaded one, which this start logs again
        drop_steps_after(run.metrics_path, run.progress.step)
    run.write_student_init()  # unless the resume wrote it (or the run has its own)
    changes = changes if run.resumed_own_checkpoint else []
    if acc.is_main_process:  # after the resume: a refused one leaves the run's settings
        atomic_write_text(run.output_dir / "config.yaml",  # whole, even if interrupted
                          yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        # with it, the folder its relative paths are from (the record's cwd)
        record_environment(run.output_dir, run.progress.step, config_changes=changes)
    if changes and acc.is_main_process:
        logger.warning("resumed with settings other than the run's config.yaml: %s (the steps "
                       "before %d used the old ones; environment.json keeps this list)",
                       "; ".join(changes), run.progress.step)
    # A resumed run with no step left to train whose student/ and heads/ already are the export
    # of this step keeps them (and the card, plots or ONNX graph beside them): same weights.
    keep_export = (t.export_student and acc.is_main_process and run.progress.step >= t.max_steps
                   and run_export_of_step(run.output_dir, run.progress.step,
                                          acc.unwrap_model(run.model).objectives.keys()))
    if keep_export:
        logger.info("step %d: nothing left to train; %s and %s already hold this step's export "
                    "and are kept as they are", run.progress.step, run.output_dir / "student",
                    run.output_dir / "heads")
    elif (t.export_student and acc.is_main_process
          and (extra := not_export_files(run.output_dir / "student"))):
        logger.warning("%s holds files written beside the earlier export (%s): this run "
                       "removes them when it exports its student at the end (then write the "
                       "card again)", run.output_dir / "student", name_list(extra))
    acc.init_trackers("distill", config={"teacher": cfg.teacher, "seed": cfg.seed,
                                         "max_steps": t.max_steps, "lr": t.learning_rate},
                      init_kwargs=tracker_resume_kwargs(run.progress.step)
                      if run.resumed_own_checkpoint
                      else {} if resumed else {"tensorboard": {"purge_step": 0}})
    bar = tqdm(total=t.max_steps, initial=run.progress.step, desc="distill",
               disable=not acc.is_main_process, dynamic_ncols=True)
    try:
        with sigterm_deferred(t.save_on_sigterm):  # start-up above: a SIGTERM stops at once
            _loop(run, bar)
            # a SIGTERM after the last step's agreement: the last checkpoint is saved; the
            # run stops before its export (a resume exports), every process together
            run._agree_on_data(None, "training")
    except DataReadError as err:  # the data broke mid-run: keep what was trained
        bar.close()
        _stop_unreadable(run, err)
    except _SigtermStop:  # preempted: keep the step under way
        bar.close()
        _stop_sigterm(run)
    bar.close()
    acc.wait_for_everyone()
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
    out = run.output_dir
    if keep_export:
        out = run.output_dir / "student"
    elif t.export_student and acc.is_main_process:
        out = export_run_student(acc.unwrap_model(run.model), run.feature_extractor,
                                 run.output_dir, cfg.to_dict(), step=run.progress.step)
    finish_processes(acc)
    return out
