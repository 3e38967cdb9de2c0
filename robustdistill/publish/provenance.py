"""What a model card says about where a student comes from: its run, teacher, data and size.

Everything is read from files a training run writes (``config.yaml``, ``final_state.json``,
``metrics.jsonl``, see ``README.md``) and from the saved model folders; nothing is downloaded.
Three trainers write runs, each with its own config layout (:func:`run_recipe`): ``robustdistill
distill`` (SSL distillation, :class:`robustdistill.config.DistillConfig`), ``train-se``
(:class:`robustdistill.se.train.SETrainConfig`) and ``train-speaker``
(:class:`robustdistill.speaker.config.SpeakerKDConfig`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..checkpoints import checkpoint_step, list_checkpoints
from ..environment import read_environment
from ..metrics_log import read_records

__all__ = ["ENGLISH_CORPORA", "NOT_RECORDED", "RECIPES", "DataLanguage", "ModelFacts",
           "RunSummary", "config_recipe", "config_section", "evaluated_sets", "is_synthetic_data",
           "is_transformers_config", "measure_speed", "model_facts", "read_run_result",
           "run_recipe", "ssl_corruption_kinds", "ssl_input_corrupted", "student_input_corrupted",
           "student_recipe", "summarise_run", "training_language"]

logger = logging.getLogger(__name__)

#: What a card says for a value the run's config does not hold.
NOT_RECORDED = "not recorded"

#: The trainers whose runs a card describes (see :func:`run_recipe`).
RECIPES = ("ssl", "se", "speaker")


@dataclass
class ModelFacts:
    """Shape and size of a saved model folder (a ``transformers`` encoder or an SE student).

    Attributes:
        model_type: ``config.model_type`` (``wavlm``, ``hubert``, ``whisper``...).
        architecture: ``config.architectures[0]`` or the model type.
        num_layers: transformer layers (encoder layers for Whisper); the config's layer count,
            or None, for other folders.
        hidden_size: width D of the hidden states (the config's, or None, for other folders).
        parameters: parameter count (from the config on the ``meta`` device, no weights read;
            the encoder only for encoder-decoder models such as Whisper; for a folder
            ``transformers`` cannot read, the values stored in its safetensors files).
        frame_rate_hz: hidden-state frames per second of 16 kHz audio, when derivable.
        receptive_field: samples the CNN front end needs for one frame (400 for the
            wav2vec 2.0 CNN), when the config has ``conv_kernel`` / ``conv_stride``.
        layer_kind: what ``num_layers`` counts (``"transformer"``); empty when only the
            config's number is known (a folder ``transformers`` cannot read).
    """

    model_type: str
    architecture: str
    num_layers: int | None
    hidden_size: int | None
    parameters: int
    frame_rate_hz: float | None = None
    receptive_field: int | None = None
    layer_kind: str = "transformer"


def _stored_facts(path: Path) -> ModelFacts:
    """:class:`ModelFacts` of a folder ``transformers`` cannot read (an SE or speaker student):
    the fields of its ``config.json`` and the values stored in its ``*.safetensors`` file(s),
    with those of the subfolder its config names as ``upstream`` (a speaker student's)."""
    from safetensors import safe_open

    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path / 'config.json'} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path / 'config.json'} is not a JSON object")
    weights = sorted(path.glob("*.safetensors"))
    if isinstance(config.get("upstream"), str):  # a speaker student's upstream/ subfolder
        weights += sorted((path / config["upstream"]).glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{path} has no *.safetensors file: its parameters cannot be "
                                "counted")
    count = 0
    for file in weights:
        with safe_open(str(file), framework="numpy") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                count += math.prod(handle.get_slice(key).get_shape())
    model_type = str(config.get("model_type") or "unknown")
    return ModelFacts(model_type=model_type,
                      architecture=(config.get("architectures") or [model_type])[0],
                      num_layers=config.get("num_hidden_layers") or config.get("num_layers"),
                      hidden_size=config.get("hidden_size"), parameters=count, layer_kind="")


def is_transformers_config(model_dir: str | Path) -> bool:
    """Whether ``model_dir/config.json`` names a ``model_type`` that ``transformers`` knows
    (checked without ``AutoConfig``, which logs advice to upgrade transformers for any other
    folder)."""
    from transformers import CONFIG_MAPPING

    try:
        model_type = json.loads((Path(model_dir) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(model_type, str) and model_type in CONFIG_MAPPING


def model_facts(name_or_path: str | Path) -> ModelFacts:
    """Read :class:`ModelFacts` from a local model folder (``config.json``).

    A folder whose ``config.json`` ``transformers`` cannot read (an unknown ``model_type``,
    e.g. an SE student) gets the config's ``model_type``, ``num_layers`` /
    ``num_hidden_layers`` and ``hidden_size`` and, as ``parameters``, the number of values
    stored in its ``*.safetensors`` file(s).

    Raises:
        FileNotFoundError: the folder has no ``config.json``, or neither a config
            ``transformers`` reads nor a ``*.safetensors`` file.
        ValueError: ``config.json`` is not a JSON object.
    """
    import torch
    from transformers import AutoConfig, AutoModel

    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json")
    if not is_transformers_config(path):  # an SE or speaker student of this library
        return _stored_facts(path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)  # None: asks y/N
    except (OSError, ValueError) as err:
        logger.info("transformers cannot read %s (%s): facts from config.json and the "
                    "safetensors files", path, err)
        return _stored_facts(path)
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    encoder_cfg = getattr(config, "encoder", None) or config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "encoder_layers", None)
    hidden = getattr(encoder_cfg, "hidden_size", None) or getattr(config, "d_model", None)
    rate = field_ = None
    if getattr(config, "conv_stride", None):
        rate = 16000 / math.prod(config.conv_stride)
        field_ = 1
        for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride),
                                  strict=True):
            field_ = (field_ - 1) * stride + kernel
    elif config.model_type == "whisper":
        rate = 50.0
    arch = (config.architectures or [type(model).__name__])[0]
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()  # Whisper: the distilled teacher is its encoder
        arch += " encoder"
        layers = getattr(config, "encoder_layers", layers)
    return ModelFacts(model_type=config.model_type, architecture=arch, num_layers=layers,
                      hidden_size=hidden, parameters=sum(p.numel() for p in model.parameters()),
                      frame_rate_hz=rate, receptive_field=field_)


def measure_speed(model_dir: str | Path, seconds: tuple[float, ...] = (1.0, 10.0),
                  repeats: int = 3) -> list[dict[str, float]]:
    """Forward time of the model on random audio, CPU, ``torch.inference_mode``, batch 1.

    Args:
        model_dir: a saved model folder (``AutoModel``).
        seconds: audio lengths to time, in seconds at 16 kHz.
        repeats: timed runs per length after one warm-up; the median is reported.

    Returns:
        One dict per length: ``seconds``, ``median_s`` (wall seconds per forward),
        ``real_time_factor`` (``median_s / seconds``), ``threads`` (torch intra-op threads).
    """
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=False).eval()
    generator = torch.Generator().manual_seed(0)
    rows = []
    for length in seconds:
        x = torch.randn(1, int(length * 16000), generator=generator)
        times = []
        with torch.inference_mode():
            model(x)
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
        median = statistics.median(times)
        rows.append({"seconds": float(length), "median_s": median,
                     "real_time_factor": median / length, "threads": torch.get_num_threads()})
    return rows


@dataclass
class RunSummary:
    """A training run, as the card describes it.

    Attributes:
        run_dir: the run's ``output_dir``.
        config: the resolved ``config.yaml``.
        teacher: the teacher as configured (hub id or path; an SE teacher's name such as
            ``nsnet2``; a speaker run's GE2E weights file); ``""`` when none is configured.
        teacher_facts: :class:`ModelFacts` of a local teacher folder, else None.
        final_state: ``final_state.json`` (step, best validation loss...), or ``{}``; for a
            checkpoint, ``{"step": step, "checkpoint": True}``.
        last_validation: the last ``split == "validation"`` record of ``metrics.jsonl``.
        train_data, validation_data, corruption: one-line descriptions (``corruption``: what
            was done to the student's input).
        recipe: the trainer that wrote the run, one of :data:`RECIPES`.
        last_train: the last other record of ``metrics.jsonl`` (a training step or epoch).
        environment: the records of ``environment.json`` (software versions at each start,
            :mod:`robustdistill.environment`), ``[]`` for a run older than that file.
        teacher_dir: the local teacher folder, when ``teacher`` is one that exists (relative
            to here or to the folder the run was started from), else None (a hub id).
        stopped: ``stopped.json`` (the step the run stopped at before its last, the reason,
            and for non-finite steps ``nonfinite_in_a_row``...; a ``train-speaker`` run's also
            ``epoch``, ``batch``, ``nonfinite`` and ``checkpoint_epochs``), or ``{}`` for a run that
            did not stop early or has a ``final_state.json`` (:mod:`robustdistill.outcome`),
            and for weights of a step after the stop (``step`` past it; without ``step``, a
            later step logged or checkpointed): the run was resumed past it, then killed or
            stopped by a SIGTERM, which write no outcome file.
    """

    run_dir: Path
    config: dict[str, Any]
    teacher: str
    teacher_facts: ModelFacts | None
    final_state: dict[str, Any] = field(default_factory=dict)
    last_validation: dict[str, Any] = field(default_factory=dict)
    train_data: str = ""
    validation_data: str = ""
    corruption: str = ""
    recipe: str = "ssl"
    last_train: dict[str, Any] = field(default_factory=dict)
    environment: list[dict[str, Any]] = field(default_factory=list)
    teacher_dir: Path | None = None
    stopped: dict[str, Any] = field(default_factory=dict)


def config_section(config: dict[str, Any], name: str) -> dict[str, Any]:
    """``config[name]`` when it is a mapping (a config section), else ``{}``."""
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def config_recipe(config: dict[str, Any]) -> str | None:
    """Which trainer wrote a run's ``config.yaml``, from the keys only that trainer writes;
    None when the config holds none of them (a hand-cut ``config.yaml``).

    ``"ssl"``: ``objectives`` or ``augmentation`` (``robustdistill distill``); ``"speaker"``:
    ``loss.method``, ``ig`` or ``training.epochs`` (``train-speaker``); ``"se"``: any other
    ``loss`` section, ``data.snr_range`` or ``data.speech_dir`` (``train-se``).
    """
    loss, data = config_section(config, "loss"), config_section(config, "data")
    if "objectives" in config or "augmentation" in config:
        return "ssl"
    if "method" in loss or "ig" in config or "epochs" in config_section(config, "training"):
        return "speaker"
    if loss or "snr_range" in data or "speech_dir" in data:
        return "se"
    return None


def run_recipe(config: dict[str, Any], default: str = "ssl") -> str:
    """Which trainer wrote a run's ``config.yaml`` (:func:`config_recipe`); ``default`` when
    the config holds none of the keys that show it.

    Raises:
        ValueError: ``default`` is not one of :data:`RECIPES`.
    """
    if default not in RECIPES:
        raise ValueError(f"unknown recipe {default!r}; known: {RECIPES}")
    return config_recipe(config) or default


#: ``model_type`` of the students ``train-se`` and ``train-speaker`` save (their own
#: ``config.json``: :mod:`robustdistill.se.students`, :mod:`robustdistill.speaker.models`).
STUDENT_MODEL_TYPES = {"robustdistill-se-gru-mask": "se",
                       "robustdistill-speaker-lstm": "speaker",
                       "robustdistill-speaker-upstream": "speaker"}


def student_recipe(model_dir: str | Path) -> str | None:
    """Which trainer's student ``model_dir`` holds, from its ``config.json``'s ``model_type``:
    ``"se"`` / ``"speaker"`` for :data:`STUDENT_MODEL_TYPES`, ``"ssl"`` for a model
    ``transformers`` knows (a ``distill`` student is a stock one); None otherwise (no or an
    unreadable ``config.json``, another ``model_type``)."""
    try:
        model_type = json.loads((Path(model_dir) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    if model_type in STUDENT_MODEL_TYPES:
        return STUDENT_MODEL_TYPES[model_type]
    return "ssl" if is_transformers_config(model_dir) else None


def _value(section: dict[str, Any], key: str) -> Any:
    value = section.get(key)
    return NOT_RECORDED if value is None else value


def _folder(section: dict[str, Any], key: str) -> str:
    return f"`{section[key]}`" if section.get(key) else f"a folder {NOT_RECORDED}"


def _snr_text(snr: Any) -> str:
    if isinstance(snr, list | tuple) and len(snr) == 2 and all(
            isinstance(v, int | float) for v in snr):
        return f"an SNR drawn uniformly from {snr[0]:g} to {snr[1]:g} dB"
    return f"an SNR range {NOT_RECORDED}"


def _describe_se_validation(config: dict[str, Any]) -> str:
    """The validation set of a ``train-se`` run (its ``validation`` section,
    :class:`robustdistill.se.validation.ValidationOptions`; none unless ``speech_dir`` is set,
    as in runs before 2026-12-07, which have no such section)."""
    valid = config_section(config, "validation")
    if not valid.get("speech_dir"):
        return "none (`train-se` held out no validation set: `validation.speech_dir` unset)"
    data, training = config_section(config, "data"), config_section(config, "training")
    prob = data.get("reverb_prob")
    rooms = (f"rooms under {_folder(valid, 'rir_dir')} with probability {prob:g}"
             if valid.get("rir_dir") and isinstance(prob, int | float) and prob > 0
             else "no reverberation")
    return (f"{_value(valid, 'items')} held-out pairs made once like the training items from "
            f"speech under {_folder(valid, 'speech_dir')}, noise under "
            f"{_folder(valid, 'noise_dir')}, {rooms}; scored every "
            f"{_value(training, 'eval_every')} steps and at the last (SI-SDR, STOI, "
            + ("PESQ, " if valid.get("pesq") else "") + "the loss); the best step chosen by "
            f"{valid.get('best_metric', 'si_sdr')}")


def _describe_se_data(config: dict[str, Any]) -> tuple[str, str, str]:
    """Training data, validation data (:func:`_describe_se_validation`) and the student's
    input of a ``train-se`` run's config (``data``: :class:`robustdistill.se.data.PairConfig`).
    """
    data, valid = config_section(config, "data"), _describe_se_validation(config)
    if not data:
        return f"{NOT_RECORDED} in the run's config", valid, f"{NOT_RECORDED} in the run's config"
    crop = data.get("crop_seconds")
    train = (f"speech under {_folder(data, 'speech_dir')}, crops of "
             + (f"{crop:g} s" if isinstance(crop, int | float) else f"a length {NOT_RECORDED}")
             + f", mixed on the fly with noise under {_folder(data, 'noise_dir')}")
    if data.get("pool_size"):
        train += (f"; a fixed pool of {data['pool_size']} such items drawn once (pool seed "
                  f"{_value(data, 'pool_seed')})")
    prob = data.get("reverb_prob")
    target = {"reverberant": "the speech as the room left it (it denoises, it does not "
                             "dereverberate)",
              "dry": "the dry speech before the room (it denoises and dereverberates)"
              }.get(data.get("target"), NOT_RECORDED)
    if not isinstance(prob, int | float):
        reverb = f"reverberation {NOT_RECORDED}"
    elif prob > 0 and data.get("rir_dir"):
        reverb = (f"reverberated with probability {prob:g} by a room response under "
                  f"`{data['rir_dir']}`")
    else:
        reverb, target = "no reverberation", "the clean speech"
    student_input = (f"noisy mixtures: noise added to every item at "
                     f"{_snr_text(data.get('snr_range'))}, {reverb}; the training target is "
                     f"{target}")
    return train, valid, student_input


#: A ``train-speaker`` verification set's config key (its folder) and what the card calls it.
SPEAKER_SETS = {"test_other": ("test_other_dir", "LibriSpeech test-other"),
                "fsdd": ("fsdd_dir", "FSDD")}


#: What the card's refusal of a damaged ``result.json`` advises
#: (:func:`robustdistill.speaker.run_folder.read_result`).
CARD_RESULT_ADVICE = ("the card cannot tell what the run evaluated: restore it, or train the "
                      "run again")


def read_run_result(run_dir: str | Path) -> dict[str, Any] | None:
    """A ``train-speaker`` run's ``result.json``; None when there is none (the run has not
    finished an epoch, or is not a speaker run). Read and checked as the table reads it
    (:func:`robustdistill.speaker.run_folder.read_result`): a ``null`` ``eer`` or ``min_dcf``
    (non-finite, :mod:`robustdistill.strict_json`) is read as NaN.

    Raises:
        ValueError: (one line naming the file, and the field for a structure fault) the
            file cannot be read, is not JSON, is not a JSON object, or holds ``eval``,
            ``config``, ``params`` or ``skipped_files`` of another structure (the card would
            say the run holds no evaluation, or drop a set or a count without a word); the
            line ends with :data:`CARD_RESULT_ADVICE`.
    """
    # imported here: the speaker package loads accelerate and transformers
    from robustdistill.speaker.run_folder import read_result

    return read_result(run_dir, CARD_RESULT_ADVICE)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def evaluated_sets(result: dict[str, Any] | None) -> list[str]:
    """The verification sets of ``result.json``'s ``eval`` with both an ``eer`` and a
    ``min_dcf`` (the sets the run evaluated), in the file's order; ``[]`` when it has none."""
    sets = (result or {}).get("eval")
    if not isinstance(sets, dict):
        return []
    return [str(name) for name, m in sets.items() if isinstance(m, dict)
            and _is_number(m.get("eer")) and _is_number(m.get("min_dcf"))]


def _speaker_set_text(name: str, data: dict[str, Any]) -> str:
    key, label = SPEAKER_SETS.get(name, ("", ""))
    if key and data.get(key):
        return f"`{data[key]}` ({label})"
    return f"the `{name}` set" + (f" ({label})" if label else "")


def _describe_speaker_data(data: dict[str, Any], result: dict[str, Any] | None = None
                           ) -> tuple[str, str, str]:
    """Training data, verification sets and the student's input of a ``train-speaker`` run
    (``DataConfig`` of :mod:`robustdistill.speaker.config`); the verification sets are those
    the run's ``result.json`` (``result``, None when it has none) evaluated, never assumed
    from the config."""
    evaluated = evaluated_sets(result)
    if evaluated:
        valid = ("none held out during training; verification after training on "
                 + ", ".join(_speaker_set_text(n, data) for n in evaluated)
                 + ", speakers unseen in training (the Evaluation section)")
    else:
        configured = [_speaker_set_text(name, data) for name, (key, _) in SPEAKER_SETS.items()
                      if data.get(key)]
        why = ("the run has no `result.json` (it was not finished)" if result is None else
               "the run's `result.json` holds no evaluation (the run was not finished, or had "
               "no verification sets)")
        valid = (f"none held out during training; no verification recorded: {why}"
                 + (f"; its config names {', '.join(configured)}" if configured else ""))
    if not data:
        return (f"{NOT_RECORDED} in the run's config", valid,
                "clean speech crops (the speaker trainer adds no noise or reverberation)")
    crop = data.get("crop_seconds")
    train = (f"{_value(data, 'crops_per_utterance')} fixed crop(s) of "
             + (f"{crop:g} s" if isinstance(crop, int | float) else f"a length {NOT_RECORDED}")
             + f" per utterance of the speech under {_folder(data, 'train_dir')} (speaker = "
             "first field of the file name)")
    return (train, valid, "the clean crops, volume-normalised to -30 dBFS, as the teacher got "
            "them: no noise or reverberation was added in training")


def _local_teacher(teacher: str, run_dir: Path, config: dict[str, Any]) -> Path | None:
    """The folder of a local teacher (one with a ``config.json``), or None.

    A relative ``teacher`` is relative to the folder the run was started from, which need not
    be the current one: when ``output_dir`` is relative too, that folder is ``run_dir`` less
    ``output_dir``'s parts (``runs/demo-teacher`` of a run ``runs/demo`` read as
    ``../runs/demo`` is ``../runs/demo-teacher``).
    """
    if not teacher:
        return None
    here = Path(teacher).expanduser()
    candidates = []
    out = Path(str(config.get("output_dir") or ""))
    if not here.is_absolute() and out.parts and not out.is_absolute() \
            and ".." not in out.parts:
        # the run folder as named (a symlinked ``runs/`` keeps its name) and with links resolved
        for full in (Path(os.path.abspath(run_dir)), run_dir.resolve()):
            if full.parts[-len(out.parts):] == out.parts:
                candidates.append(full.parents[len(out.parts) - 1] / here)
    candidates.append(here)  # relative to the current folder (the start folder's, if card
    # runs there): after the run's own start folder, which a relative teacher was relative to
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def _run_teacher(config: dict[str, Any], recipe: str) -> str:
    if recipe == "se":
        loss = config_section(config, "loss")
        teacher = loss.get("teacher") if "teacher" in loss else config.get("teacher")
    else:
        teacher = config.get("teacher")
    return "" if teacher is None else str(teacher)


def _describe_data(data: dict[str, Any]) -> tuple[str, str]:
    if data.get("train_dir"):
        train = f"audio files under `{data['train_dir']}`"
    elif data.get("train_dataset"):
        config = f" (config `{data['dataset_config']}`)" if data.get("dataset_config") else ""
        train = (f"the `{data['train_dataset']}` dataset{config}, split "
                 f"`{data.get('train_split', 'train')}`")
    elif data.get("synthetic_items"):
        seconds = data.get("synthetic_seconds")
        span = (f"{seconds[0]:g}-{seconds[1]:g} s" if isinstance(seconds, list | tuple)
                and len(seconds) == 2 and all(isinstance(v, int | float) for v in seconds)
                else f"a length {NOT_RECORDED}")
        train = (f"{data['synthetic_items']} generated speech-like signals of {span} "
                 "(`robustdistill.synthetic`), no real speech")
    else:
        train = "not recorded in the run's config"
    low, high = data.get("min_length_s"), data.get("max_length_s")
    if isinstance(low, int | float) and isinstance(high, int | float):
        span = f"{low:g}" if low == high else f"{low:g}-{high:g}"
    else:
        span = f"{low}-{high}"
    crops = f"; random crops of {span} s, batch {data.get('batch_size', '?')}"

    if data.get("validation_dir"):
        valid = f"audio files under `{data['validation_dir']}`"
    elif data.get("validation_split"):
        valid = f"split `{data['validation_split']}` of the training dataset"
    else:
        valid = f"{data.get('validation_fraction', 0.05):.0%} of the training items held out"
    return train + crops, valid


#: The probabilities of the corruption kinds that change the student's input.
_CORRUPTING = ("p_noise", "p_reverb", "p_noise_reverb")


def ssl_corruption_kinds(aug: dict[str, Any]) -> tuple[str, ...]:
    """What a ``distill`` run's ``augmentation`` section corrupted the student's input with:
    ``"noise"`` (a probability above 0 of noise, or of noise + reverberation) and / or
    ``"reverberation"`` (of reverberation, or of both), the ``AugmentationConfig`` default for
    a key the section lacks. An empty section (nothing recorded), ``enabled: false`` or
    ``p_none: 1`` with the others 0: ``()``."""
    if not aug or not aug.get("enabled", True):
        return ()
    from ..augment.config import AugmentationConfig  # imports torch: only when asked

    defaults = {f.name: f.default for f in dataclasses.fields(AugmentationConfig)}
    used = {k for k in _CORRUPTING if isinstance(p := aug.get(k, defaults[k]), int | float)
            and not isinstance(p, bool) and p > 0}
    return tuple(kind for kind, keys in (("noise", {"p_noise", "p_noise_reverb"}),
                                         ("reverberation", {"p_reverb", "p_noise_reverb"}))
                 if used & keys)


def ssl_input_corrupted(aug: dict[str, Any]) -> bool:
    """Whether a ``distill`` run's ``augmentation`` section corrupted the student's input
    (:func:`ssl_corruption_kinds` is not empty)."""
    return bool(ssl_corruption_kinds(aug))


def student_input_corrupted(run: RunSummary) -> bool:
    """Whether the run trained its student on corrupted input (what the ``noise-robust`` tag
    claims): a ``distill`` run by its ``augmentation`` (:func:`ssl_input_corrupted`); a
    ``train-se`` run always (noise is added to every item, :class:`robustdistill.se.data.
    PairConfig`); a ``train-speaker`` run never (clean crops only)."""
    if run.recipe == "se":
        return True
    if run.recipe == "speaker":
        return False
    return ssl_input_corrupted(config_section(run.config, "augmentation"))


def _describe_corruption(aug: dict[str, Any]) -> str:
    if not aug or not aug.get("enabled", True):
        return "none (the student saw clean audio)"
    if not ssl_input_corrupted(aug):
        return ("none (the student saw clean audio: `augmentation` is enabled, but its "
                "probabilities of noise, reverberation and both are 0)")
    noise = (f"recordings under `{aug['noise_dir']}` ({aug.get('noise_file_prob', 0.7):.0%}) or "
             "white Gaussian noise" if aug.get("noise_dir") else "white Gaussian noise")
    rooms = (f"measured room responses under `{aug['rir_dir']}`" if aug.get("rir_dir") else
             f"{aug.get('num_simulated_rooms', '?')} rooms simulated with pyroomacoustics "
             f"(RT60 {aug.get('rt60_min', '?')}-{aug.get('rt60_max', '?')} s)")
    parts = ", ".join(f"{k[2:].replace('_', ' + ')} {aug[k]:g}" for k in
                      ("p_noise", "p_reverb", "p_noise_reverb", "p_none") if k in aug)
    return (f"noise: {noise} at {aug.get('snr_min', '?')}-{aug.get('snr_max', '?')} dB SNR; "
            f"reverberation: {rooms}; probabilities {parts}")


def summarise_run(run_dir: str | Path, step: int | None = None,
                  kind: str = "ssl") -> RunSummary:
    """Read a training run's output folder.

    Args:
        run_dir: the run's ``output_dir``.
        step: the training step of the published weights when they are a checkpoint
            (``robustdistill export --checkpoint``) rather than the run's end: the final state
            is then ignored and the last validation is the last one at or before ``step``.
        kind: the recipe (one of :data:`RECIPES`) assumed when the config's keys do not show
            which trainer wrote it (:func:`run_recipe`).

    Raises:
        FileNotFoundError: no ``config.yaml`` in ``run_dir``.
        ValueError: ``config.yaml`` is not a mapping; ``kind`` is not a recipe; a line of
            ``metrics.jsonl`` is not a JSON object.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: is {run_dir} a distillation run's "
                                "output_dir?")
    config = yaml.safe_load(cfg_path.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{cfg_path} is not a YAML mapping")
    final_state = {}
    if (run_dir / "final_state.json").is_file():
        final_state = json.loads((run_dir / "final_state.json").read_text())
    stopped = {}  # beside a final_state.json (a run older than outcome.py) it is stale
    if not final_state and (run_dir / "stopped.json").is_file():
        stopped = json.loads((run_dir / "stopped.json").read_text())
    last_validation: dict[str, Any] = {}
    last_train: dict[str, Any] = {}
    # the last step the run logged or saved a checkpoint of
    reached = [s for p in list_checkpoints(run_dir / "checkpoints")
               if (s := checkpoint_step(p)) is not None]
    if (run_dir / "metrics.jsonl").is_file():  # null (a non-finite value) read as NaN
        for record in read_records(run_dir / "metrics.jsonl"):
            if isinstance(record.get("step"), int):
                reached.append(record["step"])
            if step is not None and record.get("step", 0) > step:
                continue
            if record.get("split") == "validation":
                last_validation = record
            else:
                last_train = record
    # a stop the run was resumed past (then killed, or stopped by a SIGTERM: neither writes an
    # outcome file) is no stop of the weights of a later step: of the checkpoint at ``step``,
    # or without ``step`` of the last step the run logged or saved
    later = step if step is not None else max(reached, default=0)
    if isinstance(stopped, dict) and isinstance(stopped.get("step"), int) \
            and later > stopped["step"]:
        logger.info("%s: not said, the run was resumed past that stop (to step %d)",
                    run_dir / "stopped.json", later)
        stopped = {}
    if step is not None:
        final_state = {"step": step, "checkpoint": True}
    recipe = run_recipe(config, kind)
    teacher = _run_teacher(config, recipe)
    teacher_dir = _local_teacher(teacher, run_dir, config) if recipe == "ssl" else None
    facts = None
    if teacher_dir is not None:
        try:
            facts = model_facts(teacher_dir)
        except (OSError, ValueError) as err:  # an unknown architecture: say less, not fail
            logger.warning("could not read the teacher %s: %s", teacher, err)
    if recipe == "se":
        train, valid, corruption = _describe_se_data(config)
    elif recipe == "speaker":
        train, valid, corruption = _describe_speaker_data(config_section(config, "data"),
                                                          read_run_result(run_dir))
    else:
        train, valid = _describe_data(config.get("data") or {})
        corruption = _describe_corruption(config.get("augmentation") or {})
    return RunSummary(run_dir=run_dir, config=config, teacher=teacher, teacher_facts=facts,
                      final_state=final_state, last_validation=last_validation,
                      train_data=train, validation_data=valid, corruption=corruption,
                      recipe=recipe, last_train=last_train,
                      environment=read_environment(run_dir), teacher_dir=teacher_dir,
                      stopped=stopped if isinstance(stopped, dict) else {})


#: Speech corpora known to be English, found (case-insensitive) in the name of a run's training
#: data, a folder path or a ``datasets`` id: (pattern, the corpus as the card names it).
ENGLISH_CORPORA: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"libri[-_ ]?speech"), "LibriSpeech"),
    (re.compile(r"libri[-_ ]?tts"), "LibriTTS"),
    (re.compile(r"libri[-_ ]?light"), "Libri-Light"),
    (re.compile(r"(?<![a-z0-9])fsdd(?![a-z0-9])|free[-_ ]?spoken[-_ ]?digit"), "FSDD"),
)

#: Names that are not English although they contain one of :data:`ENGLISH_CORPORA`
#: (Multilingual LibriSpeech, ``facebook/multilingual_librispeech``).
_NOT_ENGLISH = re.compile(r"multi[-_ ]?lingual|(?<![a-z0-9])mls(?![a-z0-9])")


@dataclass(frozen=True)
class DataLanguage:
    """The language of a run's training speech, as far as the run records it.

    Attributes:
        languages: ISO 639-1 codes for the card's ``language`` metadata; ``()`` when no
            language is known (or the audio is not speech).
        reason: why, as one sentence's clause (quoted in the card's limitations when
            ``languages`` is empty).
        synthetic: the run trained on generated audio (``data.synthetic_items``), not speech.
    """

    languages: tuple[str, ...]
    reason: str
    synthetic: bool = False


def is_synthetic_data(config: dict[str, Any]) -> bool:
    """Whether a run's config trained on generated audio: ``data.synthetic_items > 0`` and
    neither ``data.train_dir`` nor ``data.train_dataset`` (``robustdistill distill``, the
    offline demo; :attr:`robustdistill.data.config.DataConfig.source` ``"synthetic"``)."""
    data = config_section(config, "data")
    items = data.get("synthetic_items")
    return (not data.get("train_dir") and not data.get("train_dataset")
            and isinstance(items, int | float) and items > 0)


def training_language(run: RunSummary) -> DataLanguage:
    """The language of the speech ``run`` trained on, from its config.

    Generated audio (:func:`is_synthetic_data`) has none. Real speech is English (``en``)
    when the name of its source (``data.train_dir`` or ``data.train_dataset`` and
    ``dataset_config`` of ``distill``, ``data.speech_dir`` of ``train-se``, ``data.train_dir``
    of ``train-speaker``) names a corpus of :data:`ENGLISH_CORPORA` (LibriSpeech, LibriTTS,
    Libri-Light, FSDD) and no multilingual one (Multilingual LibriSpeech); any other source's
    language is unknown: nothing in a run records it, and a card should not guess.
    """
    data = config_section(run.config, "data")
    if is_synthetic_data(run.config):
        return DataLanguage((), "the training audio was generated speech-like signals, not "
                                "speech in any language", synthetic=True)
    if run.recipe == "ssl":
        source = data.get("train_dir") or data.get("train_dataset")
        extra = data.get("dataset_config") if data.get("train_dataset") else None
    else:
        source = data.get("speech_dir" if run.recipe == "se" else "train_dir")
        extra = None
    if not source:
        return DataLanguage((), "the run's config does not record its training speech")
    name = f"{source} {extra or ''}".lower()
    if not _NOT_ENGLISH.search(name):
        for pattern, corpus in ENGLISH_CORPORA:
            if pattern.search(name):
                return DataLanguage(("en",), f"the training speech `{source}` is {corpus}, "
                                             "English")
    return DataLanguage((), f"the language of the training speech `{source}` is not recorded "
                            "in the run")
