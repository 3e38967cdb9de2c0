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
``(seed, index)`` alone, see :func:`~robustdistill.trainer_validation.validate_run`); the
checkpoint (``accelerator.save_state``) holds model, optimizer, scheduler, RNG states and the
:class:`~robustdistill.trainer_checkpoints.TrainingProgress` (step, epoch, batches consumed), so
a resumed run replays exactly the batches, corruptions and dropout masks of an uninterrupted
one.

This module holds :func:`train`, the loop and the run's steps (``_Run``: set-up, batches, loss,
optimizer step, logging); its parts each have their own module: the student and the
:class:`Distiller` around it (:mod:`~robustdistill.trainer_model`), the validation pass
(:mod:`~robustdistill.trainer_validation`), what a checkpoint holds and how a run resumes from
one (:mod:`~robustdistill.trainer_checkpoints`), and how a run stops, early or at its last step
(:mod:`~robustdistill.trainer_stops`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch import nn
from torch.utils.data import IterableDataset
from tqdm.auto import tqdm
from transformers import get_scheduler

from .audio import SAMPLE_RATE, AudioError
from .augment import Corruptor, LoaderCorruption
from .checkpoints import list_checkpoints, remove_incomplete, tracker_resume_kwargs, truncate_log
from .config import ConfigError, DistillConfig
from .data import ShardedRandomSampler, build_dataloader, build_datasets
from .data.batching import workers_beyond_cpus
from .environment import record_environment
from .export import export_run_student, not_export_files, run_export_of_step
from .files import atomic_write_text, name_list
from .interrupts import note, sigterm_deferred
from .metrics_log import drop_steps_after
from .nonfinite import NonFiniteTrainingError, any_process
from .objectives import build_objective
from .processes import finish_processes
from .publish.card_training import parameter_count
from .random_streams import keyed_rng
from .run_settings import saved_config_changes
from .startup_checks import (
    RESUME_FREE,
    check_crop_covers_a_frame,
    check_frame_grids,
    check_output_dir,
    check_student_is_trained,
    loss_schedule,
    missing_folders,
    prepare_models,
    remove_new_empty_folders,
)
from .strict_json import strict_dumps
from .teacher_cache import MissingEntryError, TeacherFeatureCache
from .teachers import load_teacher
from .trainer_checkpoints import (
    DamagedCheckpointError,
    TrainingProgress,
    resume_run,
    save_run_checkpoint,
)
from .trainer_model import Distiller, _build_student, _param_groups, write_student_init
from .trainer_stops import (
    DataReadError,
    _agree_on_data,
    _interrupt_note,
    _SigtermStop,
    _stop_nonfinite,
    _stop_sigterm,
    _stop_unreadable,
    _write_final_state,
)
from .trainer_validation import validate_run
from .upstream import Upstream

logger = logging.getLogger(__name__)

__all__ = ["DamagedCheckpointError", "DataReadError", "Distiller", "NonFiniteTrainingError",
           "TrainingProgress", "train"]


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
        student, feature_extractor, save_init = _build_student(self)
        self.feature_extractor = feature_extractor
        if t.gradient_checkpointing:  # transformers' own recomputation of encoder layers
            student.activation_checkpointing_enable({"use_reentrant": False})
        if t.compile_student:  # in place: parameter names (checkpoints, export) unchanged
            student.compile()
        student_up = Upstream(student, normalize=feature_extractor.do_normalize,
                              use_attention_mask=feature_extractor.return_attention_mask,
                              frozen=False, feature_grad_mult=cfg.student.feature_grad_mult)
        check_crop_covers_a_frame(cfg.data, self.teacher, student_up)
        check_frame_grids(self.teacher, student_up)
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
        if acc.is_main_process and (note := workers_beyond_cpus(cfg.data.num_workers)):
            logger.warning(note)
        # A map-style set's workers are kept across epochs (not restarted at each): its items
        # are a function of the sampler's (index, epoch) keys, drawn in this process.
        self.loader = build_dataloader(train_set, cfg.data.batch_size, self.sampler,
                                       cfg.data.num_workers, collate_fn=train_collate,
                                       pin_memory=pin,
                                       persistent_workers=self.sampler is not None)
        # Every validation item once, on one rank (ranks may get one item, or a batch, fewer:
        # validate's collectives come after its loop, so they stay matched); its workers start
        # at each validation (kept, they would sit idle between validations)
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
        logger.info("teacher %s: %d layers, width %d; student: %d layers, width %d, %s "
                    "params; %s train / %d validation utterances; %d process(es)",
                    cfg.teacher, self.teacher.num_layers, self.teacher.hidden_size,
                    student_up.num_layers, student_up.hidden_size,
                    parameter_count(sum(p.numel() for p in student.parameters())),
                    "streamed" if self.sampler is None else len(train_set), len(valid_set), world)

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
                  "seconds": lengths.cpu().sum().double() / SAMPLE_RATE}  # float64: exact
        for objective in self.objectives.values():
            counts.update(objective.count_units(lengths.cpu()))
        return {k: v.double() for k, v in counts.items()}

    def _reduce_counts(self, counts: dict[str, torch.Tensor]) -> dict[str, float]:
        keys = sorted(counts)
        stacked = torch.stack([counts[k] for k in keys]).to(self.accelerator.device)
        total = self.accelerator.reduce(stacked, reduction="sum").cpu()
        return dict(zip(keys, total.tolist(), strict=True))

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
        _agree_on_data(self, failure, "training", position)
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

    def validate(self) -> dict[str, float]:
        """Mean loss terms over the validation set, the same at every step and on any number
        of processes (:func:`~robustdistill.trainer_validation.validate_run`)."""
        return validate_run(self)

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

    def note_skipped(self, batch: dict) -> None:
        """Record the audio items a batch's dataset skipped (``batch["skipped"]``)."""
        for name, reason in batch.get("skipped", ()):
            self.skipped_audio.setdefault(name, reason)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/checkpoint_N`` so that it is only ever seen complete
        (:func:`~robustdistill.trainer_checkpoints.save_run_checkpoint`).

        Returns:
            The checkpoint folder.
        """
        return save_run_checkpoint(self)

    def resume(self, where: str) -> bool:
        """Load a checkpoint (``where``: ``"latest"``, ``"auto"`` or a folder); the loop
        continues from its step. True when one was loaded; the checks and errors:
        :func:`~robustdistill.trainer_checkpoints.resume_run`."""
        return resume_run(self, where)


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
    (a killed first try's; other lines stay); its TensorBoard points are not hidden. A call
    that fails (a bad model folder, data folder or frame grid at start-up) removes the
    ``output_dir`` it created, and parents it created, while they are still empty.

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
    created = missing_folders(cfg.output_dir)
    check_output_dir(cfg.output_dir, resuming=bool(cfg.training.resume_from))  # before loading
    runs: list[_Run] = []  # the run once built, for the line of an interrupt
    try:
        with note(lambda: _interrupt_note(cfg, runs[0] if runs else None)):
            return _train(cfg, runs)
    except BaseException:  # a failed start (bad model, data, frames) leaves no empty folder
        remove_new_empty_folders(created)
        raise


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
        # another run's checkpoint, none of this run's own: every step record in the log is a
        # start's that saved no checkpoint (one from the same checkpoint logged the steps after
        # it, which this start logs again; a fresh one killed before its first checkpoint
        # logged steps from 1, which this run's weights never trained): all of them go
        drop_steps_after(run.metrics_path, -1)
    write_student_init(run)  # unless the resume wrote it (or the run has its own)
    changes = changes if run.resumed_own_checkpoint else []
    if acc.is_main_process:  # after the resume: a refused one leaves the run's settings
        atomic_write_text(run.output_dir / "config.yaml",  # whole, even if interrupted
                          yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        # with it, the folder its relative paths are from (the record's cwd)
        record_environment(run.output_dir, run.progress.step, config_changes=changes,
                           from_another_run=resumed and not run.resumed_own_checkpoint)
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
            _agree_on_data(run, None, "training")
    except DataReadError as err:  # the data broke mid-run: keep what was trained
        bar.close()
        _stop_unreadable(run, err)
    except _SigtermStop:  # preempted: keep the step under way
        bar.close()
        _stop_sigterm(run)
    bar.close()
    acc.wait_for_everyone()
    _write_final_state(run)
    out = run.output_dir
    if keep_export:
        out = run.output_dir / "student"
    elif t.export_student and acc.is_main_process:
        out = export_run_student(acc.unwrap_model(run.model), run.feature_extractor,
                                 run.output_dir, cfg.to_dict(), step=run.progress.step)
    finish_processes(acc)
    return out
