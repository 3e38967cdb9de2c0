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
teacher is frozen and never saved.

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
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from downstream.config import from_dict

from ..audio import AudioError
from ..checkpoints import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    newest_checkpoint_note,
    remove_incomplete,
    save_checkpoint,
    tracker_resume_kwargs,
    truncate_log,
    verify_checkpoint,
)
from ..config import (
    ConfigError,
    _unknown_key,
    merge_config,
    parse_overrides,
    read_config_file,
)
from ..environment import record_environment
from ..files import atomic_write_text
from ..interrupts import note as interrupt_note
from ..interrupts import sigterm_deferred, sigterm_pending, stop_terminated
from ..nonfinite import NonFiniteTrainingError, any_process, any_process_each, stop_nonfinite
from ..outcome import FINAL_STATE, write_outcome
from ..processes import finish_processes, print_stop
from ..run_settings import saved_config_changes
from ..strict_json import strict_dumps
from .data import PairConfig, PairMaker
from .losses import LossConfig, SELoss
from .stft import StftConfig
from .students import (
    GRUMaskStudent,
    StudentConfig,
    config_for_ratio,
    count_parameters,
    student_activation_names,
)
from .teachers import load_teacher
from .teachers.onnx_weights import TeacherUnavailable
from .validation import (
    BestValidation,
    TeacherOutputs,
    ValidationOptions,
    make_validation_pairs,
    validate,
)

__all__ = ["DamagedCheckpointError", "DataFolderError", "ResumeSettingsError", "SETrainConfig",
           "TrainingOptions", "StudentOptions",
           "load_se_config", "train_se", "main", "parameter_hash"]

logger = logging.getLogger(__name__)

#: The trainer's state in every checkpoint: ``{"step", "metrics_bytes", "skipped_updates",
#: "nonfinite_losses", "nonfinite_in_a_row"}`` (older checkpoints lack the counters: 0).
_STATE = "training_state.json"


@dataclass
class StudentOptions:
    """The student's shape: ``ratio`` (compression vs NSNet2, e.g. 16/32/63) or an explicit
    ``hidden_size``; ``num_layers`` GRUs; ``min_gain_db`` gain floor.

    Attributes:
        ratio: compression factor against NSNet2's 2,687,561 parameters (> 1): the widest GRU
            student at most ``1/ratio`` of that size (16 -> H 101, 32 -> H 68, 63 -> H 45).
            Set exactly one of ``ratio`` and ``hidden_size``; both None (the default) is an error.
        hidden_size: explicit GRU width ``H`` (>= 1) instead of ``ratio``; None (default): use
            ``ratio``.
        num_layers: stacked GRUs (>= 1; default 2, as NSNet2).
        min_gain_db: floor of the per-bin gain applied to the noisy spectrum, in dB (default
            -80, as NSNet2).
    """

    ratio: float | None = None
    hidden_size: int | None = None
    num_layers: int = 2
    min_gain_db: float = -80.0

    def build(self) -> StudentConfig:
        """The :class:`StudentConfig`.

        Raises:
            ValueError: both or neither of ``ratio`` and ``hidden_size`` set.
        """
        if (self.ratio is None) == (self.hidden_size is None):
            raise ValueError("set exactly one of student.ratio and student.hidden_size")
        if self.ratio is not None:
            return config_for_ratio(self.ratio, num_layers=self.num_layers,
                                    min_gain_db=self.min_gain_db)
        return StudentConfig(hidden_size=self.hidden_size, num_layers=self.num_layers,
                             min_gain_db=self.min_gain_db)


def _trackers() -> tuple[str, ...]:
    """The values of ``training.report_to``: ``"none"`` and accelerate's trackers."""
    from accelerate.utils import LoggerType

    return ("none", *(t.value for t in LoggerType))


@dataclass
class TrainingOptions:
    """Optimisation and logging.

    Attributes:
        max_steps: optimizer steps.
        batch_size: items per step (per process).
        learning_rate: Adam learning rate, constant.
        max_grad_norm: gradient clipping (L2 norm).
        log_every: steps between ``metrics.jsonl`` / TensorBoard lines.
        save_every: steps between checkpoints (0: only at the end).
        keep_checkpoints: newest complete checkpoints kept (checkpoints of runs older than the
            manifest, with a ``step.json``, are resumed from but never deleted).
        report_to: an accelerate tracker (``"tensorboard"``, ``"wandb"``...) or ``"none"``.
        cpu: force CPU.
        threads: ``torch.set_num_threads`` (0: leave it).
        max_nonfinite_in_a_row: stop (with a checkpoint of the last finite weights) after this
            many optimizer steps in a row with a NaN/Inf loss or gradient norm; each such step
            is skipped and counted (default 20, as ``distill``'s).
        eval_every: steps between validations (and at the last step), as ``distill``'s; only
            with ``validation.speech_dir`` (default 200: 10 validations in a 2000-step recipe).
        eval_at_start: also validate before the first step (the baseline; default True, as
            ``distill``'s).
        save_on_sigterm: on SIGTERM (a scheduler's preemption or time limit, a launcher)
            finish the step under way, save a checkpoint of it (every process agrees on the
            step), then stop with exit status 143 (default True, as ``distill``'s); False: stop
            at once, keeping the last scheduled checkpoint.
    """

    max_steps: int = 600
    batch_size: int = 8
    learning_rate: float = 1e-3
    max_grad_norm: float = 5.0
    log_every: int = 10
    save_every: int = 0
    keep_checkpoints: int = 2
    report_to: str = "tensorboard"
    cpu: bool = True
    threads: int = 0
    max_nonfinite_in_a_row: int = 20
    eval_every: int = 200
    eval_at_start: bool = True
    save_on_sigterm: bool = True

    def __post_init__(self) -> None:
        """Raises: ValueError: a count below its minimum (named, with the allowed range), or an
        unknown ``report_to``."""
        for name, least in (("max_steps", 1), ("batch_size", 1), ("log_every", 1),
                            ("save_every", 0), ("keep_checkpoints", 1), ("threads", 0),
                            ("max_nonfinite_in_a_row", 1), ("eval_every", 1)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        if self.report_to not in _trackers():
            raise ValueError(f"report_to must be one of {list(_trackers())}, got "
                             f"{self.report_to!r}")


@dataclass
class SETrainConfig:
    """A whole SE training run (see the module docstring).

    Attributes:
        output_dir: run folder (config, metrics, logs, checkpoints, the saved student); a
            folder holding checkpoints is resumed from its newest one.
        seed: seeds the student's and loss heads' initialisation (``accelerate.set_seed``) and
            the batches (each a pure function of ``(seed, step, rank)``); >= 0, default 0.
        student / data / loss / training / validation: the sections; see their classes
            (``validation``: :class:`~robustdistill.se.validation.ValidationOptions`, off by
            default).

    Raises:
        ValueError: (on construction) a negative ``seed``, or a ``data.sample_rate`` other
            than the student's STFT rate (16000 Hz: the student, the NSNet2 teacher and
            ``enhance`` all work at that rate, so pairs at another rate would train a student
            that is then used on audio resampled to 16 kHz),
            or a KD student layer that is not an activation of the student (e.g. ``gru3`` of
            a 2-layer one).
    """

    output_dir: str = "runs/se/default"
    seed: int = 0
    student: StudentOptions = field(default_factory=StudentOptions)
    data: PairConfig = field(default_factory=PairConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingOptions = field(default_factory=TrainingOptions)
    validation: ValidationOptions = field(default_factory=ValidationOptions)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0 (numpy seeds), got {self.seed}")
        rate = StftConfig().sample_rate  # every SE student's (StudentOptions has no stft)
        if self.data.sample_rate != rate:
            raise ValueError(f"data.sample_rate must be the student's STFT rate, {rate} Hz, got "
                             f"{self.data.sample_rate} (speech at other rates is resampled to "
                             f"{rate} Hz: leave data.sample_rate at {rate})")
        known = student_activation_names(self.student.num_layers)
        unknown = sorted(set(self.loss.layers("student")) - set(known))
        if unknown:
            raise ValueError(f"student layer(s) {unknown} are not activations of a "
                             f"{self.student.num_layers}-layer student {list(known)}")
        if (self.validation.enabled and self.validation.best_metric == "loss"
                and self.loss.schedule == "two_step" and self.loss.uses_teacher):
            raise ValueError("validation.best_metric loss cannot compare two_step's phases (KD "
                             "terms before loss.kd_steps, the task loss after): choose si_sdr, "
                             "stoi or pesq")

    def to_dict(self) -> dict:
        """Plain nested dict (``config.yaml``)."""
        out = {"output_dir": self.output_dir, "seed": self.seed}
        for name in _SECTIONS:
            section = getattr(self, name)
            out[name] = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
        out["data"]["snr_range"] = list(out["data"]["snr_range"])
        return out


_SECTIONS = {"student": StudentOptions, "data": PairConfig, "loss": LossConfig,
             "training": TrainingOptions, "validation": ValidationOptions}


def _build(raw: dict) -> SETrainConfig:
    """A recipe's nested dict -> :class:`SETrainConfig`: unknown keys are named with the
    closest known one; values are type-checked by :func:`downstream.config.from_dict` (the
    checks ``train-speaker`` uses); an empty section (``training:``) takes its defaults.

    Raises:
        ConfigError: an unknown key, a section that is not a mapping, a value of the wrong
            type or one a section rejects (one line naming the key).
    """
    for key, value in raw.items():
        if key in ("output_dir", "seed"):
            continue
        if key not in _SECTIONS:
            raise _unknown_key("", key, [*_SECTIONS, "output_dir", "seed"])
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"config section {key!r} must be a mapping, got {value!r}")
        known = {f.name for f in dataclasses.fields(_SECTIONS[key])}
        for k in value:
            if k not in known:
                raise _unknown_key(f"{key}.", k, known)
    return from_dict(SETrainConfig, {k: v for k, v in raw.items() if v is not None
                                     or k not in _SECTIONS})


def load_se_config(path: str | Path | None, overrides: list[str] | None = None
                   ) -> SETrainConfig:
    """Read a recipe and apply ``--section.key value`` overrides.

    Raises:
        ConfigError: invalid YAML (naming the file and line), an empty file, a top level that
            is not a mapping (:func:`robustdistill.config.read_config_file`), unknown keys
            (with the closest known one) or invalid values (see :func:`_build`).
        FileNotFoundError: ``path`` does not exist.
    """
    raw = read_config_file(path) if path else {}
    return _build(merge_config(raw, parse_overrides(overrides or [])))


def parameter_hash(model: torch.nn.Module) -> str:
    """SHA-256 over the model's parameters (names and float32 bytes, in order)."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def teacher_layers(loss: LossConfig) -> tuple[str, ...]:
    """The teacher activations a loss config distils."""
    names: set[str] = set()
    if loss.gram_weight > 0:
        names |= {t for _, t in loss.gram_pairs}
    if loss.cosine_weight > 0:
        names |= {t for _, t in loss.cosine_pairs}
    if loss.tfckd_weight > 0:
        names |= {t for ts in loss.tfckd_teacher_sets for t in ts}
    return tuple(sorted(names))


@dataclass
class NonFiniteCounts:
    """Steps whose update was skipped (saved in every checkpoint's ``training_state.json``).

    Attributes:
        skipped_updates: steps with a NaN/Inf loss (on any process) or gradient norm, whose
            update was skipped.
        nonfinite_losses: those of them whose loss was NaN/Inf (on any process).
        nonfinite_in_a_row: consecutive skipped steps up to now (reset by a finite one).
    """

    skipped_updates: int = 0
    nonfinite_losses: int = 0
    nonfinite_in_a_row: int = 0

    @classmethod
    def from_state(cls, state: dict) -> NonFiniteCounts:
        """The counters of a checkpoint's training state (0 where it has none)."""
        return cls(**{f.name: int(state.get(f.name, 0)) for f in dataclasses.fields(cls)})

    def record(self, step: int, bad_loss: bool, bad_step: bool, grad_norm: float) -> None:
        """Count step ``step`` (0-based): a skipped one is counted and logged as a warning,
        a finite one resets :attr:`nonfinite_in_a_row`."""
        if not bad_step:
            self.nonfinite_in_a_row = 0
            return
        self.skipped_updates += 1
        self.nonfinite_losses += bad_loss
        self.nonfinite_in_a_row += 1
        logger.warning("step %d: non-finite %s (grad norm %s); update skipped (%d in a row, %d "
                       "in all)", step, "loss" if bad_loss else "gradient", grad_norm,
                       self.nonfinite_in_a_row, self.skipped_updates)


def nonfinite_step(acc, total: torch.Tensor, grad_norm: torch.Tensor | float,
                   sigterm: bool = False) -> tuple[bool, bool, bool]:
    """Whether this step's update must be skipped, and whether the run stops after it, the same
    answers on every process.

    The gradient norm (after DDP's all-reduce) is the same on every process, but a loss can be
    NaN/Inf on one process only with finite gradients (a term without a gradient path), so
    the loss flag is summed over the processes; this process's held SIGTERM rides on the same
    all-reduce (two numbers instead of one: no collective of its own).

    Args:
        acc: the run's ``Accelerator``.
        total: this process's scalar loss.
        grad_norm: the clipped gradients' total norm (before clipping), from
            ``clip_grad_norm_``.
        sigterm: this process holds a SIGTERM (:func:`robustdistill.interrupts.
            sigterm_pending`).

    Returns:
        ``(bad_loss, bad_step, stop)``: the loss is NaN/Inf on some process; the update must
        be skipped (``bad_loss`` or a NaN/Inf gradient norm); some process holds a SIGTERM.
    """
    bad_loss, stop = any_process_each(acc, not bool(torch.isfinite(total.detach()).all()),
                                      sigterm)
    return bad_loss, bad_loss or not math.isfinite(float(grad_norm)), stop


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


#: The folder of ``output_dir`` that keeps the speech files' checks when
#: ``data.scan_cache_dir`` is unset (:func:`data_config`).
SCAN_CACHE_FOLDER = "scan_cache"


def data_config(cfg: SETrainConfig) -> PairConfig:
    """The run's ``data`` section as its :class:`PairMaker` uses it: an unset
    ``data.scan_cache_dir`` is the run's ``<output_dir>/scan_cache``, so a resume (or a start
    again) of the run decodes only new or changed speech files (``cfg`` is left as it is:
    ``config.yaml`` keeps ``null``). Every rank checks the files it does not find there and
    writes the cache atomically (:class:`~robustdistill.se.data.SpeechScanCache`); the folder
    is outside ``student/``, so ``card`` and ``push`` never take it."""
    if cfg.data.scan_cache_dir is not None:
        return cfg.data
    return dataclasses.replace(cfg.data,
                               scan_cache_dir=str(Path(cfg.output_dir) / SCAN_CACHE_FOLDER))


class DamagedCheckpointError(CheckpointError):
    """The newest checkpoint of ``output_dir`` does not match its manifest (found at start-up,
    before any work; ``train-se`` says it in one line)."""


class ResumeSettingsError(ConfigError):
    """A resume that would not continue the run: its checkpoint was trained with another seed,
    batch size or ``data`` setting (:data:`_RESUME_REFUSED`: the batches would change), for
    another student or other loss heads (its weights would not fit), or is past
    ``training.max_steps`` (a run cannot be shortened)."""


#: Keys that a resume may change without a word: where the run lives, its scan cache, CPU
#: threads, trackers, and ``max_steps`` (a resume that trains on; below the checkpoint's step it
#: is refused).
_RESUME_FREE = ("output_dir", "data.scan_cache_dir", "training.threads", "training.report_to",
                "training.max_steps", "training.save_on_sigterm")

#: Keys (``section.`` for a whole section, :data:`_RESUME_FREE` aside) that fix which batches
#: the steps see: each batch is a pure function of ``(seed, step, rank)`` and these settings
#: (the speech, noise and RIR files, crop length, SNR range, reverberation, target, pool), so a
#: resume that changes one would draw other batches (other crops, noises, SNRs, rooms) from its
#: first step on than the run it continues, and present that mixture as one run. Refused, as
#: ``distill`` refuses its seed, batch, crop and item count. Any other key (a learning rate, a
#: loss weight or schedule, the logging and checkpoint cadence) only changes what the steps do
#: with those batches: allowed, said and kept in ``environment.json``'s record of the resume
#: (and on the card), as ``distill`` allows it (e.g. a lower learning rate after a run stopped
#: on non-finite steps).
_RESUME_REFUSED = ("seed", "training.batch_size", "data.")

#: ``data`` keys a resume may change with a warning, as ``distill`` allows its folders: the
#: data moved to another place (another machine, another mount) is the usual reason, and a
#: folder named by another path or a link is no change at all. ``data.rir_check`` goes with
#: ``data.rir_dir``: like a folder given other files, it changes which of that folder's files
#: are rooms (only when the check refused one), as ``distill`` allows ``augmentation.rir_check``.
_RESUME_FOLDERS = ("data.speech_dir", "data.noise_dir", "data.rir_dir", "data.rir_check")


#: The keys of the validation (:mod:`robustdistill.se.validation`): never a change of the
#: batches; while validation is off (no ``validation.speech_dir`` before or now) no change at all,
#: so that a run started before these keys existed resumes without a word about them.
_VALIDATION_KEYS = ("validation.", "training.eval_every", "training.eval_at_start")


def _key(change: str) -> str:
    """The dotted key of a :func:`~robustdistill.run_settings.config_changes` line."""
    return change.split(" ", 1)[0]


def _resume_changes(cfg: SETrainConfig, num_processes: int) -> list[str]:
    """How ``cfg``, run on ``num_processes`` processes, differs from the ``config.yaml`` of the
    run it resumes (``[]`` for a fresh start), apart from :data:`_RESUME_FREE`.

    Raises:
        ResumeSettingsError: (one line) a key of :data:`_RESUME_REFUSED` differs (but
            :data:`_RESUME_FOLDERS`: a warning; each named,
            ``old -> new``, with what is allowed); a ``student`` key differs and so do the
            student's parameter shapes (the checkpoint's weights would not fit: another width
            or depth; a ``min_gain_db``, or a ``ratio`` spelt as its ``hidden_size``, is only a
            change); a ``loss`` key differs and so do the loss heads' parameter shapes (the
            cosine bottlenecks or TF-CKD projections: a KD term turned on or off, other pairs);
            or the checkpoint is past ``training.max_steps`` (its weights would be saved as a
            shorter run's); or it was saved on another number of processes (each rank draws
            its own batches; checkpoints before 2026-12-07 do not record it).
        DamagedCheckpointError: the newest checkpoint is altered (see
            :func:`_newest_checkpoint`).
    """
    out = Path(cfg.output_dir)
    newest = _newest_checkpoint(out / "checkpoints")
    if newest is None:
        return []
    step = int(newest[1]["step"])
    if step > cfg.training.max_steps:
        raise ResumeSettingsError(
            f"{newest[0]} is at step {step}, past training.max_steps {cfg.training.max_steps}: "
            "a resume cannot shorten a run (its student and final_state.json would say "
            f"{cfg.training.max_steps} steps); allowed: training.max_steps >= {step}, or "
            "another output_dir")
    before = newest[1].get("num_processes", num_processes)
    if before != num_processes:
        raise ResumeSettingsError(
            f"{newest[0]} was trained on {before} process(es), this resume runs "
            f"{num_processes}: each rank draws its own batches from (seed, step, rank), so "
            f"the steps would see other batches; resume on {before}, or give another output_dir")
    changes = saved_config_changes(out, cfg.to_dict(), _RESUME_FREE)
    if not cfg.validation.enabled and "validation.speech_dir" not in map(_key, changes):
        changes = [c for c in changes if not _key(c).startswith(_VALIDATION_KEYS)]
    refused = [c for c in changes if _key(c) not in _RESUME_FOLDERS and (
        _key(c) in _RESUME_REFUSED
        or _key(c).startswith(tuple(k for k in _RESUME_REFUSED if k.endswith("."))))]
    if refused:
        raise ResumeSettingsError(
            f"{newest[0]} was trained with other settings that fix its batches (the crops, "
            f"noises, SNRs and rooms each step draws); resuming would not continue that run: "
            f"{'; '.join(refused)} (allowed: the run's seed, training.batch_size and data "
            "settings, with other changes such as the data folders' places, a learning rate, "
            "a loss weight or a larger training.max_steps said and recorded in "
            "environment.json; or another output_dir)")
    for section in ("student", "loss"):
        differ = [c for c in changes if c.startswith(f"{section}.")]
        if differ and not _same_shapes(out, cfg, section):
            what = "another student" if section == "student" else "other loss heads"
            raise ResumeSettingsError(
                f"output_dir {str(out)!r} holds a run of {what} ({'; '.join(differ)}): "
                f"{newest[0].name} cannot be loaded into this one; resume with the run's "
                f"{section} settings, or give another output_dir")
    return changes


def _parameter_shapes(student: StudentOptions, loss: LossConfig
                      ) -> dict[str, dict[str, tuple[int, ...]]]:
    """``{"student": {name: shape}, "loss": {name: shape}}`` of the modules a checkpoint holds
    (the student, and the loss heads: cosine bottlenecks, TF-CKD projections).

    Raises:
        ValueError: settings that build no student or no loss heads.
    """
    model = GRUMaskStudent(student.build())
    heads = SELoss(loss, *_widths(model.config, loss.teacher))
    return {name: {k: tuple(v.shape) for k, v in module.state_dict().items()}
            for name, module in (("student", model), ("loss", heads))}


def _widths(student: StudentConfig, teacher: str | None
            ) -> tuple[dict[str, int], dict[str, int]]:
    """The student's and the teacher's activation widths (name -> ``D``) that the loss heads
    are built for (the teacher's: NSNet2's layers; ``{}`` for no teacher)."""
    s_widths = {"fc_in": student.hidden_size, "fc_hidden": student.hidden_size,
                **{f"gru{i + 1}": student.hidden_size for i in range(student.num_layers)}}
    t_widths = ({"fc_in": 400, "gru1": 400, "gru2": 400, "fc_out1": 600, "fc_out2": 600,
                 "mask": 161} if teacher == "nsnet2" else {})
    return s_widths, t_widths


def _same_shapes(out: Path, now: SETrainConfig, section: str) -> bool:
    """Whether the run of ``out/config.yaml`` and ``now`` have the same parameter names and
    shapes in ``section`` (``"student"`` or ``"loss"``: its heads); False when the saved
    settings cannot be built."""
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text())
        before = _parameter_shapes(from_dict(StudentOptions, saved["student"]),
                                   from_dict(LossConfig, saved["loss"]))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return False
    return before[section] == _parameter_shapes(now.student, now.loss)[section]


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
    ``validation/<value>`` points, written by the main process. It changes no weight.
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
        gather_object,
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
    teacher = load_teacher(cfg.loss.teacher).to(acc.device) if cfg.loss.uses_teacher else None
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
        if teacher is not None:  # run once per item, at the first validation that reads it
            teacher_outputs = TeacherOutputs(teacher_layers(cfg.loss),
                                             cfg.loss.output_kd_weight > 0)

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
        if best is not None:  # the checkpoint's best validation, and best_student/ put right
            best.resume(newest[0] if newest is not None else None)
    # a fresh start hides what a run killed before its first checkpoint logged (steps >= 0:
    # the step-0 validation too)
    acc.init_trackers("se", config={"seed": cfg.seed, "max_steps": t.max_steps},
                      init_kwargs=tracker_resume_kwargs(start) if newest is not None
                      else {"tensorboard": {"purge_step": 0}})
    metrics = (out / "metrics.jsonl").open("a") if acc.is_main_process else None

    def save(step: int, validation_due: bool = False) -> Path:
        state = None
        if metrics:  # flushed after every line
            state = {_STATE: {"step": step, "metrics_bytes": os.fstat(metrics.fileno()).st_size,
                              "num_processes": acc.num_processes,
                              **dataclasses.asdict(counts)}}
            if best is not None:
                state.update(best.checkpoint_files())
            if validation_due:  # skipped for a SIGTERM: the resumed run validates this step
                state[_STATE]["validation_due"] = True
        return save_checkpoint(acc, ckpt_dir, step, step, state=state,
                               keep=t.keep_checkpoints, replace=True)

    bar = tqdm(total=t.max_steps, initial=start, desc="train-se",
               disable=not acc.is_main_process)

    def log_validation(step: int) -> None:  # every process scores its share of the items
        values = validate(acc, student, loss_fn, teacher, pairs, step, cfg.loss.teacher_input,
                          teacher_outputs)
        if values is None:  # not the main process
            return
        new_best = best.update(step, values, acc.unwrap_model(student))
        row = {"step": step, "split": "validation", "lr": t.learning_rate, **values}
        acc.log({f"validation/{k}": v for k, v in row.items()
                 if k not in ("step", "split") and isinstance(v, int | float)}, step=step)
        metrics.write(strict_dumps(row) + "\n")
        metrics.flush()
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
        pool_in = (clean_pool if which == "clean" else noisy_pool).to(acc.device)
        pooled = pooled_teacher(key, teacher, pool_in, teacher_layers(cfg.loss),
                                cfg.loss.output_kd_weight > 0)
    if pairs is not None and start == 0 and t.eval_at_start:  # the step-0 baseline
        log_validation(0)
    elif pairs is not None and newest is not None and newest[1].get("validation_due"):
        log_validation(start)  # a SIGTERM stopped the run before this step's validation

    def stop_for_sigterm(step: int, validation_due: bool) -> None:
        """Save a checkpoint of ``step`` (every process), say how long it took, and stop.

        Raises:
            Terminated: always (the line names the checkpoint; exit status 143).
        """
        bar.close()
        started = time.perf_counter()
        folder = save(step, validation_due)
        took = time.perf_counter() - started
        sigterm_saved[:] = [(folder, took)]
        if acc.is_main_process:
            logger.warning("SIGTERM: checkpoint %s of step %d saved in %.2f s (the grace period "
                           "before SIGKILL must exceed one step plus this)", folder, step, took)
        finish_processes(acc)
        stop_terminated()

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
            if counts.nonfinite_in_a_row >= t.max_nonfinite_in_a_row:
                bar.close()
                checkpoint = save(done)
                finish_processes(acc)  # every rank stops here (the decision is the same on all)
                stop_nonfinite(out, done, in_a_row=counts.nonfinite_in_a_row,
                               skipped_updates=counts.skipped_updates,
                               nonfinite_losses=counts.nonfinite_losses,
                               limit=t.max_nonfinite_in_a_row, checkpoint=checkpoint,
                               main_process=acc.is_main_process)
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
                    metrics.write(strict_dumps(row) + "\n")
                    metrics.flush()
                bar.set_postfix(loss=f"{row['loss']:.3f}")
            due = pairs is not None and (done % t.eval_every == 0 or done == t.max_steps)
            if stop:  # some process holds a SIGTERM: this step is done; save it and stop
                stop_for_sigterm(done, validation_due=due)
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
    acc.wait_for_everyone()
    model = acc.unwrap_model(student)
    per_rank = gather_object([parameter_hash(model) + "/"
                              + parameter_hash(acc.unwrap_model(loss_fn))])
    if acc.is_main_process:
        if best is not None and best.end_note() is not None:
            logger.warning("validation: %s", best.end_note())
        model.save_pretrained(out / "student")
        write_outcome(out, FINAL_STATE, {
            "step": t.max_steps, "parameters": count_parameters(model),
            "compression_vs_nsnet2": model.compression(), "latency_ms": model.latency_ms,
            "parameter_sha256": parameter_hash(model), "num_processes": acc.num_processes,
            "parameter_sha256_per_rank": per_rank,
            "ranks_identical": len(set(per_rank)) == 1, **dataclasses.asdict(counts),
            "skipped_speech_files": maker.speech.skipped,
            "best_validation": best.state if best is not None else None})
        metrics.close()
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
