"""A distillation run, fully described by one YAML file plus command-line overrides.

The YAML has one section per concern; every section is a dataclass whose fields carry their
help text, parsed strictly by ``transformers.HfArgumentParser`` (an unknown key is an error
that names the key and the closest known one)::

    teacher: microsoft/wavlm-base-plus     # hub id or local folder
    output_dir: runs/robust_wavlm
    seed: 0
    student:      {num_layers: 2}          # StudentConfig
    data:         {train_dir: ..., batch_size: 24}        # DataConfig
    augmentation: {noise_dir: ..., rir_dir: ...}          # AugmentationConfig
    objectives:                            # name -> the objective's own options
      layerwise: {teacher_layers: [4, 8, 12]}
      enhancement: {lambda_enh: 2.0}
    training:     {max_steps: 200000, learning_rate: 2.0e-4}  # TrainingConfig

Overrides: ``--training.max_steps 200 --data.train_dir path --teacher path``; values are
read as YAML (``200`` is an int, ``[4, 8]`` a list, ``null`` None). An override sets the value
of its key, as that key's line in the YAML would: a mapping given as a value
(``--objectives '{layerwise: {}}'``, ``--training '{max_steps: 5}'``) replaces the key's whole
mapping, and a dotted key (``--objectives.layerwise.teacher_layers [4, 8]``) changes one entry
of it, the rest kept. ``--objectives.NAME null`` removes objective NAME, also from an earlier
``--objectives`` mapping (inside a mapping, as in the YAML, ``NAME: null`` or ``NAME: {}`` is the
objective with its default options).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from .augment import AugmentationConfig
from .data import DataConfig
from .messages import first_line
from .nonfinite import largest_adam_learning_rate
from .objectives import OBJECTIVES, build_loss_schedule
from .student import StudentConfig
from .teacher_cache import TeacherCacheConfig

__all__ = ["DEFAULT_OBJECTIVES", "ConfigError", "DistillConfig", "InvalidYAMLError",
           "ReplacingMapping", "TrainingConfig", "load_config", "merge_config", "parse_overrides",
           "read_config_file", "read_yaml"]


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with 1.2 booleans and floats: only true/false are booleans (``mixed_precision:
    no`` stays the string ``"no"``, not False as in YAML 1.1), and ``5e-4`` or ``1.0e5`` are
    floats (YAML 1.1 reads an exponent without a dot or a sign as a string)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))

#: The objectives of a config that names none (name -> options).
DEFAULT_OBJECTIVES: dict[str, dict[str, Any]] = {"layerwise": {}, "enhancement": {}}

#: ``transformers`` schedulers that need nothing but the warm-up and total steps.
LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                "constant_with_warmup", "inverse_sqrt")


class ConfigError(ValueError):
    """A config file or override that cannot be used (unknown key, bad value)."""


class InvalidYAMLError(ConfigError, yaml.YAMLError):
    """YAML text that does not parse. A :class:`ConfigError` (so every command's handler prints
    its one line) and a ``yaml.YAMLError`` (so callers that catch that still do)."""


def read_yaml(text: str, source: str | Path | None = None):
    """Parse YAML text with 1.2 booleans (see ``_Yaml12Loader``).

    Args:
        text: the YAML document.
        source: where it comes from (a file name), for the error message.

    Returns:
        the parsed value (None for an empty document or one of comments only).

    Raises:
        InvalidYAMLError: a syntax error; the one-line message names ``source``, the line
            and column (1-based) and the problem.
    """
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        where = f"{source}: " if source is not None else ""
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or first_line(err)
        context = getattr(err, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise InvalidYAMLError(f"{where}invalid YAML{at}: {detail}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ConfigError: invalid YAML (:class:`InvalidYAMLError`, naming the file and the line),
            an empty file (nothing but blanks or comments: almost surely a mistake, so it is
            not read as "all defaults"), or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    raw = read_yaml(path.read_text(), source=path)
    if raw is None:
        raise ConfigError(f"{path}: the config file is empty (no keys); give a recipe, e.g. "
                          "one of configs/*.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    return raw


@dataclass
class TrainingConfig:
    """Optimisation, logging and checkpointing (DistilHuBERT defaults where it has them).

    Raises:
        ConfigError: (on construction) a step count or interval below 1, a negative
            ``save_every``, ``max_eval_batches`` below 1, an unknown ``lr_schedule``,
            ``mixed_precision`` or ``weight_decay_params``, warm-up with the ``constant``
            schedule, ``warmup_ratio`` outside ``[0, 1)``, a ``resume_from`` that is neither
            ``latest``, ``auto`` nor an existing folder, ``adam_betas`` not two values in
            ``[0, 1)``, ``adam_eps <= 0``, ``learning_rate <= 0`` or one whose first AdamW
            step overflows float32 (:func:`~robustdistill.nonfinite.largest_adam_learning_rate`:
            torch's traceback at step 1), a negative
            ``weight_decay`` (values AdamW refuses, or NaN), or a loss schedule its options
            reject.
    """

    max_steps: int = field(default=200_000, metadata={"help": "optimizer steps"})
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate (AdamW), > 0 and at most 3.4e38 * (1 - adam_betas[0]) (3.4e37 at beta1 0.9: AdamW's first step must fit in float32)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (>= 0), on parameters with 2+ dims only"})
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98], metadata={"help": "AdamW betas, each in [0, 1)"})
    adam_eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon (s3prl distiller and RobustDistiller: 1e-6)"})
    weight_decay_params: str = field(default="matrices", metadata={"help": "which parameters weight_decay applies to: 'matrices' (2+ dims) or 'non_bias' (every parameter whose name has no 'bias': s3prl's grouping)"})
    warmup_ratio: float = field(default=0.07, metadata={"help": "fraction of max_steps of linear warm-up"})
    lr_schedule: str = field(default="linear", metadata={"help": "transformers scheduler after warm-up: linear, cosine, cosine_with_restarts, polynomial, constant (no warm-up), constant_with_warmup or inverse_sqrt"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_grad_norm: float = field(default=10.0, metadata={"help": "gradient clipping norm (0 disables)"})
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16 (accelerate)"})
    cpu: bool = field(default=False, metadata={"help": "force CPU even when a GPU is present"})
    tf32: bool = field(default=False, metadata={"help": "TF32 tensor cores for float32 matrix products and convolutions on NVIDIA GPUs (Ampere and later), e.g. the frozen teacher's float32 forward; float32 range, 10-bit mantissa in the products; no effect on CPU (transformers' TrainingArguments.tf32)"})
    cudnn_benchmark: bool = field(default=False, metadata={"help": "let cuDNN time its convolution algorithms on the first batch of each input shape and keep the fastest (torch.backends.cudnn.benchmark; PyTorch Lightning's Trainer(benchmark=True)): for the CNNs on raw audio at the recipes' fixed 15.6 s crops; every new batch length is timed again, and the chosen algorithms may differ between runs, so a resumed GPU run need not match an uninterrupted one bit for bit; no effect on CPU"})
    log_every: int = field(default=10, metadata={"help": "steps between training log entries"})
    eval_every: int = field(default=1000, metadata={"help": "steps between validation runs (and at the end)"})
    eval_at_start: bool = field(default=True, metadata={"help": "validate before the first step (the baseline)"})
    max_eval_batches: int | None = field(default=None, metadata={"help": "cap on validation batches per process and validation (its items then depend on the process count and batch size)"})
    save_every: int = field(default=5000, metadata={"help": "steps between checkpoints (0: only at the end)"})
    keep_checkpoints: int = field(default=3, metadata={"help": "newest complete checkpoints kept on disk (transformers' save_total_limit); older ones are deleted after each save"})
    resume_from: str | None = field(default=None, metadata={"help": "'latest' (newest complete checkpoint of output_dir), 'auto' (the same, or start fresh when there is none: for restart loops) or a checkpoint folder"})
    save_on_sigterm: bool = field(default=True, metadata={"help": "on SIGTERM (a scheduler's preemption or time limit, a launcher) finish the optimizer step under way, save a checkpoint of it (every process agrees on the step), then stop with exit status 143; false: stop at once, keeping only the last scheduled checkpoint. The grace period before SIGKILL must exceed one step plus one save (docs/reliability.md)"})
    max_nonfinite_in_a_row: int = field(default=20, metadata={"help": "stop (with a checkpoint of the last finite weights) after this many optimizer steps in a row with a NaN/Inf loss or gradient; each such step is skipped and counted"})
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"], metadata={"help": "accelerate trackers"})
    export_student: bool = field(default=True, metadata={"help": "export OUTPUT_DIR/student and heads/ at the end, both emptied first (what an earlier export left there, such as a card, is removed with a warning)"})
    loss_schedule: str = field(default="sum", metadata={"help": "sum (all losses, weight 1), two_step (KD objectives only for kd_steps, then task_objectives only; arXiv 2309.08144) or mixture (mixture_alpha * KD + (1 - mixture_alpha) * task)"})
    kd_steps: int = field(default=0, metadata={"help": "two_step: optimizer steps of the KD-only phase 1"})
    mixture_alpha: float = field(default=0.5, metadata={"help": "mixture: weight of the KD objectives, in [0, 1]"})
    task_objectives: list[str] = field(default_factory=list, metadata={"help": "objectives that are the supervised task loss for loss_schedule (e.g. [enhancement]); all others are KD"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute the student's transformer layers in the backward pass (less memory, more time)"})
    compile_student: bool = field(default=False, metadata={"help": "torch.compile the student (nn.Module.compile; state dict keys unchanged)"})

    def __post_init__(self) -> None:
        for name in ("max_steps", "gradient_accumulation_steps", "log_every", "eval_every",
                     "keep_checkpoints", "max_nonfinite_in_a_row"):
            if getattr(self, name) < 1:
                raise ConfigError(f"training.{name} must be >= 1, got {getattr(self, name)}")
        if self.save_every < 0:
            raise ConfigError(f"training.save_every must be >= 0, got {self.save_every}")
        if self.max_eval_batches is not None and self.max_eval_batches < 1:
            raise ConfigError(f"training.max_eval_batches must be >= 1 or null (all), got "
                              f"{self.max_eval_batches}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"training.lr_schedule must be one of {LR_SCHEDULES}, got "
                              f"{self.lr_schedule!r}")
        if self.lr_schedule == "constant" and self.warmup_ratio > 0:
            raise ConfigError("training.lr_schedule constant has no warm-up: use "
                              "constant_with_warmup, or warmup_ratio 0")
        if self.resume_from not in (None, "latest", "auto") and not Path(
                self.resume_from).expanduser().is_dir():
            raise ConfigError(f"training.resume_from {self.resume_from!r} is not an existing "
                              "checkpoint folder; allowed: 'latest', 'auto' or a folder")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"training.warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ConfigError(f"training.mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if len(self.adam_betas) != 2:
            raise ConfigError(f"training.adam_betas needs two values, got {self.adam_betas}")
        if not all(0 <= beta < 1 for beta in self.adam_betas):
            raise ConfigError(f"training.adam_betas must each lie in [0, 1), got {self.adam_betas}")
        if not 0 < self.learning_rate < math.inf:
            raise ConfigError(f"training.learning_rate must be a number > 0, got "
                              f"{self.learning_rate}")
        if self.learning_rate > (most := largest_adam_learning_rate(self.adam_betas[0])):
            raise ConfigError(f"training.learning_rate must be at most {most:.4g}, the "
                              f"largest whose first AdamW step (learning_rate / (1 - "
                              f"adam_betas[0]), adam_betas[0] = {self.adam_betas[0]:g}) fits in "
                              f"float32; got {self.learning_rate:g}")
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"training.weight_decay must be a number >= 0, got "
                              f"{self.weight_decay}")
        if not self.max_grad_norm >= 0:  # a negative norm turned clipping off silently
            raise ConfigError(f"training.max_grad_norm must be >= 0 (0 disables clipping), "
                              f"got {self.max_grad_norm}")
        try:
            build_loss_schedule(self.loss_schedule, self.kd_steps, self.mixture_alpha)
        except ValueError as err:
            raise ConfigError(f"training: {err}") from err
        if not self.adam_eps > 0:
            raise ConfigError(f"training.adam_eps must be > 0, got {self.adam_eps}")
        if self.weight_decay_params not in ("matrices", "non_bias"):
            raise ConfigError("training.weight_decay_params must be 'matrices' or 'non_bias', "
                              f"got {self.weight_decay_params!r}")


@dataclass
class DistillConfig:
    """The whole run: see the module docstring for the YAML layout.

    Raises:
        ConfigError: (on construction) ``whisper_teacher_frames`` not ``ssl`` or ``native``,
            or a ``make_teacher`` that is not ``FAMILY/PRESET``.
    """

    teacher: str = field(metadata={"help": "hub id or local folder of the frozen teacher "
                                           "(WavLM, HuBERT, wav2vec 2.0, data2vec-audio, "
                                           "Whisper encoder); required"})
    output_dir: str = field(default="runs/distill", metadata={
        "help": "the run's folder: config.yaml, environment.json, metrics.jsonl, logs/, "
                "checkpoints/, student/, heads/"})
    seed: int = field(default=0, metadata={
        "help": "seeds the student's new weights, the data order, crops and corruptions"})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "allow a hub teacher's own modelling code (transformers' trust_remote_code)"})
    student_init: str | None = field(default=None, metadata={
        "help": "an existing student folder to start from instead of creating one from the "
                "teacher (student section); its CNN must frame audio as the teacher's (same hop "
                "and frame centre), or the run is refused"})
    make_teacher: str | None = field(default=None, metadata={
        "help": "'FAMILY/PRESET' (e.g. 'wavlm/small'): write a random teacher of that shape at "
                "`teacher` when that folder does not exist yet (the offline demo)"})
    whisper_teacher_frames: str = field(default="ssl", metadata={
        "help": "a Whisper teacher's frames: 'ssl' interpolates them at the student CNN's frame "
                "centres (320 k + 200 samples), 'native' keeps Whisper's own grid (320 k)"})
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    objectives: dict[str, dict[str, Any]] = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_OBJECTIVES), metadata={
            "help": "objective name -> its options, e.g. {layerwise: {teacher_layers: [4, 8, "
                    "12]}}; names: the registry robustdistill.objectives.OBJECTIVES "
                    "(docs/objectives.md). On the command line --objectives '{...}' replaces "
                    "the mapping, --objectives.NAME.KEY VALUE changes one option and "
                    "--objectives.NAME null removes objective NAME"})
    training: TrainingConfig = field(default_factory=TrainingConfig)
    teacher_cache: TeacherCacheConfig = field(default_factory=TeacherCacheConfig)

    def __post_init__(self) -> None:
        if self.whisper_teacher_frames not in ("ssl", "native"):
            raise ConfigError("whisper_teacher_frames must be 'ssl' or 'native', got "
                              f"{self.whisper_teacher_frames!r}")
        if self.make_teacher is not None:
            family, _, preset = self.make_teacher.partition("/")
            if not family or not preset:
                raise ConfigError(f"make_teacher must be 'FAMILY/PRESET' (e.g. 'wavlm/small'), "
                                  f"got {self.make_teacher!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what is saved as ``OUTPUT_DIR/config.yaml``)."""
        return dataclasses.asdict(self)


_SECTIONS = {
    "student": StudentConfig,
    "data": DataConfig,
    "augmentation": AugmentationConfig,
    "training": TrainingConfig,
    "teacher_cache": TeacherCacheConfig,
}
# Filled in by the trainer from the models, never from the config.
_MODEL_FACTS = ("teacher_hidden_size", "teacher_num_layers", "student_hidden_size",
                "student_conv_dim")
_TOP_LEVEL = ("teacher", "output_dir", "seed", "trust_remote_code", "student_init", "objectives",
              "make_teacher", "whisper_teacher_frames")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_local(name: str) -> bool:
    """Whether a model reference is meant as a local folder rather than a hub id.

    Local: an absolute path, one starting with ``.`` or ``~``, one with two or more ``/``
    (hub ids are ``owner/name``), or ``first/rest`` whose ``first`` folder exists here (e.g.
    ``runs/demo-teacher`` in the repository). A bare name (``bert-base``) counts as a hub id.
    """
    name = str(name)
    if name.startswith(("/", ".", "~")) or name.count("/") >= 2:
        return True
    if "/" in name:
        return not _HUB_ID.match(name) or Path(name.split("/", 1)[0]).is_dir()
    return False


def check_model_path(name: str | Path, role: str, how_to_make: str) -> None:
    """Fail early, and helpfully, when a local-looking model folder does not exist.

    Without this check ``from_pretrained`` treats the missing folder as a hub id and fails
    with "couldn't connect to huggingface.co" (offline) or "not a valid model identifier".

    Args:
        name: the configured teacher or student folder / hub id.
        role: what it is, for the message (``"teacher"``, ``"student_init"``).
        how_to_make: the command or setting that creates it, for the message.

    Raises:
        FileNotFoundError: ``name`` looks local (see :func:`looks_local`) and is not a
            folder; the message names it and says how to make it.
    """
    path = Path(str(name)).expanduser()
    if looks_local(str(name)) and not path.is_dir():
        raise FileNotFoundError(
            f"{role} folder {str(name)!r} does not exist (it looks like a local path, so it is "
            f"not looked up on the Hugging Face hub). Make it first: {how_to_make}"
        )


def _unknown_key(where: str, key: str, known, list_known: bool = False) -> ConfigError:
    """The error for an unknown key ``where + key`` (``where``: its section with a trailing dot,
    ``"training."``, or ``""``): the closest known key, with its section (``'training.max_steps'``,
    as it is typed after ``--``), else (or with ``list_known``, for short lists such as the
    objectives' names) all of the section's keys."""
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {where + close[0]!r}?" if close else ""
    if list_known or not close:
        hint += f"{' K' if close else '; k'}nown keys: {sorted(known)}"
    return ConfigError(f"unknown config key {where + key!r}{hint}")


class ReplacingMapping(dict):
    """A mapping given as one command-line value (``--objectives '{layerwise: {}}'``):
    :func:`merge_config` puts it in place of the base's value for that key, as the key's line
    in a YAML file would, instead of merging it into the base's mapping (what the nested dicts
    of dotted keys, ``--objectives.layerwise.teacher_layers [4, 8]``, do). Equal to the plain
    dict of the same items; :func:`merge_config`'s result holds plain dicts only."""


def _plain(value: Any) -> Any:
    """``value`` with every :class:`ReplacingMapping` in it turned into a plain dict."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _check_objective_to_drop(name: str, objectives: Any, whose: str) -> None:
    """Check that ``--objectives.NAME null`` can remove ``name`` from ``objectives``.

    Raises:
        ConfigError: ``name`` is no registered objective (the message lists them), or not
            one of ``objectives`` (the message says ``whose`` objectives and lists them).
    """
    if name not in OBJECTIVES:
        raise _unknown_key("objectives.", name, OBJECTIVES, list_known=True)
    if not isinstance(objectives, dict) or name not in objectives:
        have = ", ".join(objectives) if isinstance(objectives, dict) and objectives else "none"
        raise ConfigError(f"--objectives.{name} null removes objective {name!r}, but {whose} "
                          f"objectives do not include it (they are: {have})")


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """``["--training.max_steps", "200", "--teacher=x"]`` -> nested dict.

    Dotted keys become nested dicts; a value that is itself a mapping (``--objectives
    '{layerwise: {}}'``) is a :class:`ReplacingMapping`, so :func:`merge_config` replaces the
    key's value with it rather than merging into it. A later override wins over an earlier
    one of the same key; a dotted key after a mapping value changes that mapping's entry, and
    ``--objectives.NAME null`` after an ``--objectives`` mapping removes NAME from it (as it
    removes NAME from the config's objectives, :func:`_apply_objective_overrides`).

    Raises:
        ConfigError: an argument that is not ``--key value`` or ``--key=value``, a value
            that is not valid YAML, a dotted key below an earlier override's value that
            is not a mapping (``--training 5 --training.max_steps 3``), or
            ``--objectives.NAME null`` after an ``--objectives`` mapping without NAME.
    """
    result: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"expected --key value, got {arg!r}")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise ConfigError(f"override {arg} has no value")
            key, raw = arg[2:], argv[i + 1]
            i += 2
        node = result
        parts = key.replace("-", "_").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override --{key} is below an earlier override's value "
                                  f"{node!r}, which is not a mapping")
        try:
            value = read_yaml(raw)
        except InvalidYAMLError as err:
            raise ConfigError(f"override --{key} {raw!r}: {err}") from None
        if value is None and parts[:-1] == ["objectives"] and isinstance(node, ReplacingMapping):
            _check_objective_to_drop(parts[-1], node, "the earlier --objectives value's")
            del node[parts[-1]]  # the mapping replaces the config's: drop NAME from it now
            continue
        node[parts[-1]] = ReplacingMapping(value) if isinstance(value, dict) else value
    return result


def merge_config(base: dict, override: dict) -> dict:
    """Recursive dict merge: ``override``'s leaves replace ``base``'s (neither is modified).

    A plain dict in ``override`` is merged into ``base``'s mapping at its key (the nested
    dicts of dotted command-line keys); a :class:`ReplacingMapping` (a mapping given as one
    command-line value) and any other value replace it. The result holds plain dicts only.
    """
    merged = dict(base)
    for key, value in override.items():
        if (isinstance(value, dict) and not isinstance(value, ReplacingMapping)
                and isinstance(merged.get(key), dict)):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = _plain(value)
    return merged


def _apply_objective_overrides(raw: dict[str, Any], overrides: dict[str, Any]
                               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``raw`` and ``overrides`` with the dotted ``objectives`` overrides resolved.

    Dotted keys change the objectives the config has, or :data:`DEFAULT_OBJECTIVES` when it
    names none; ``--objectives.NAME null`` removes objective NAME from them (neither argument
    is modified). After an ``--objectives`` mapping, :func:`parse_overrides` has already
    removed NAME from that mapping, which replaces the config's objectives.

    Raises:
        ConfigError: ``NAME`` is no registered objective (the message lists them), or not
            one of the run's objectives (the message lists those).
    """
    given = overrides.get("objectives")
    if not isinstance(given, dict) or isinstance(given, ReplacingMapping):
        return raw, overrides  # absent, or a whole mapping / value that replaces the config's
    base = raw["objectives"] if "objectives" in raw else copy.deepcopy(DEFAULT_OBJECTIVES)
    dropped = [name for name, value in given.items() if value is None]
    for name in dropped:
        _check_objective_to_drop(name, base, "the config's")
    if isinstance(base, dict):
        base = {name: options for name, options in base.items() if name not in dropped}
    kept = {name: value for name, value in given.items() if value is not None}
    return {**raw, "objectives": base}, {**overrides, "objectives": kept}


def _type_error(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"config key {where} must be {expected}, got {value!r} "
                       f"({type(value).__name__})")


def _check_value(where: str, annotation: Any, value: Any) -> Any:
    """``value`` checked against a field's type (ints accepted as floats, and converted; a
    float must be finite); annotations it does not know are left to the dataclass."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _check_value(where, options[0], value)
        return value
    if annotation is bool and not isinstance(value, bool):
        raise _type_error(where, "true or false", value)
    if annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _type_error(where, "an integer", value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(where, "a number", value)
        if not math.isfinite(value):  # YAML's .nan / .inf: no setting means either
            raise _type_error(where, "a finite number", value)
        return float(value)
    if annotation is str and not isinstance(value, str):
        raise _type_error(where, "a string", value)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise _type_error(where, f"a list ({annotation})", value)
        return [_check_value(f"{where}[{i}]", args[0], v) for i, v in enumerate(value)] \
            if args else list(value)
    if origin is dict and not isinstance(value, dict):
        raise _type_error(where, "a mapping", value)
    return value


def _check_types(where: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Check every value of a section against its dataclass field's type.

    Raises:
        ConfigError: naming the key, the type allowed and the value given.
    """
    hints = typing.get_type_hints(cls)
    return {key: _check_value(f"{where}{key}", hints[key], value) if key in hints else value
            for key, value in values.items()}


def build_config(raw: dict[str, Any]) -> DistillConfig:
    """Validate a nested dict and build the dataclasses.

    Raises:
        ConfigError: unknown key (named, with the closest known key), missing teacher,
            a section that is not a mapping, or a value a section rejects.
    """
    for key in raw:
        if key not in _TOP_LEVEL and key not in _SECTIONS:
            raise _unknown_key("", key, [*_TOP_LEVEL, *_SECTIONS])
    if not raw.get("teacher"):
        raise ConfigError("the config must name a teacher (hub id or local folder)")
    sections = {}
    for name, cls in _SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"config section {name!r} must be a mapping, got {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise _unknown_key(f"{name}.", key, known)
        values = _check_types(f"{name}.", cls, values)
        try:
            (sections[name],) = HfArgumentParser(cls).parse_dict(values)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config section {name!r}: {err}") from err
    objectives = raw.get("objectives", copy.deepcopy(DEFAULT_OBJECTIVES))
    if not isinstance(objectives, dict) or not objectives:
        raise ConfigError("objectives must be a non-empty mapping: name -> options")
    for name, options in objectives.items():
        if name not in OBJECTIVES:
            raise _unknown_key("objectives.", name, OBJECTIVES, list_known=True)
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"objectives.{name} must be a mapping of options (or null / {{}} "
                              f"for the defaults), got {options!r}")
    objectives = {name: dict(options or {}) for name, options in objectives.items()}
    for name, options in objectives.items():
        accepted = inspect.signature(OBJECTIVES[name].__init__).parameters
        for key in options:
            if key not in accepted or key in _MODEL_FACTS:
                raise _unknown_key(f"objectives.{name}.", key,
                                   [p for p in accepted if p not in ("self", *_MODEL_FACTS)])
    top = {k: raw[k] for k in _TOP_LEVEL if k in raw and k != "objectives"}
    top = _check_types("", DistillConfig, top)
    if top.get("seed", 0) < 0:
        raise ConfigError(f"seed must be >= 0 (numpy seeds), got {top['seed']}")
    return DistillConfig(**top, objectives=objectives, **sections)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> DistillConfig:
    """Read a YAML config, apply ``--key value`` overrides, validate.

    Args:
        path: the YAML file; None: the config is the overrides alone.
        overrides: ``["--section.key", "value", ...]`` (:func:`parse_overrides`).

    An override sets its key's value as the key's line in the YAML would: a mapping value
    replaces the config's mapping, a dotted key changes one entry of it
    (:func:`merge_config`); ``--objectives.NAME null`` removes an objective
    (:func:`_apply_objective_overrides`).

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ConfigError: a file that is not valid YAML (naming the file and the line), empty, or
            not a mapping (:func:`read_config_file`); ``--objectives.NAME null`` for an
            objective the config lacks or an unknown name; see also :func:`build_config`.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_config_file(path)
    raw, given = _apply_objective_overrides(raw, parse_overrides(overrides or []))
    return build_config(merge_config(raw, given))
