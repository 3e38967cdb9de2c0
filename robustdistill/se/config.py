"""A ``train-se`` recipe: its sections (:class:`StudentOptions`, :class:`TrainingOptions`;
``data`` is :class:`~robustdistill.se.data.PairConfig`, ``loss``
:class:`~robustdistill.se.losses.LossConfig`, ``validation``
:class:`~robustdistill.se.validation.ValidationOptions`), the whole run (:class:`SETrainConfig`,
checked on construction), reading one from YAML plus ``--section.key value`` overrides
(:func:`load_se_config`), and the ``data`` section as the run's pair maker uses it
(:func:`data_config`: the scan cache in the run folder by default).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from downstream.config import from_dict

from ..config import (
    ConfigError,
    _unknown_key,
    merge_config,
    parse_overrides,
    read_config_file,
)
from ..nonfinite import largest_adam_learning_rate
from .data import PairConfig
from .losses import LossConfig
from .stft import StftConfig
from .students import StudentConfig, config_for_ratio, student_activation_names
from .validation import ValidationOptions

__all__ = ["ADAM_BETA1", "SCAN_CACHE_FOLDER", "SETrainConfig", "StudentOptions",
           "TrainingOptions", "data_config", "load_se_config"]

#: The first-moment decay of train-se's optimizer (``torch.optim.Adam``'s default betas).
ADAM_BETA1 = 0.9


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
        learning_rate: Adam learning rate, constant; >= 0 and at most 3.4e37 (Adam's first
            step, ``learning_rate / (1 - 0.9)``, must fit in float32).
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
            A run extended to a larger ``max_steps`` drops the validation of its old last step
            when off this schedule, as an uninterrupted run never made it (docs/se.md).
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
        """Raises: ValueError: a count below its minimum (named, with the allowed range), a
        negative ``learning_rate`` (0 is allowed: an untrained baseline) or one whose first
        Adam step overflows float32 (above 3.4e37:
        :func:`~robustdistill.nonfinite.largest_adam_learning_rate`), a ``max_grad_norm``
        that is not > 0, or an unknown ``report_to``."""
        for name, least in (("max_steps", 1), ("batch_size", 1), ("log_every", 1),
                            ("save_every", 0), ("keep_checkpoints", 1), ("threads", 0),
                            ("max_nonfinite_in_a_row", 1), ("eval_every", 1)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        if not 0 <= self.learning_rate < math.inf:  # torch's Adam: a traceback
            raise ValueError(f"learning_rate must be a number >= 0, got {self.learning_rate}")
        if self.learning_rate > (most := largest_adam_learning_rate(ADAM_BETA1)):
            raise ValueError(f"learning_rate must be at most {most:.4g}, the largest whose "
                             f"first Adam step (learning_rate / (1 - beta1), beta1 = "
                             f"{ADAM_BETA1:g}) fits in float32; got {self.learning_rate:g}")
        if not 0 < self.max_grad_norm < math.inf:  # clipping to 0 silently trained nothing
            raise ValueError(f"max_grad_norm must be a number > 0, got {self.max_grad_norm}")
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
