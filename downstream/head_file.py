"""The head file (``OUT/head.pt``): the selected featurizer + head of a run, saved for
``--evaluate-only`` and loaded back only into a run whose settings compute the same thing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustdistill.files import atomic_path
from robustdistill.messages import first_line

from .base import Task
from .config import to_dict
from .featurizer import Featurizer, resolve_layers
from .options import RunOptions

logger = logging.getLogger(__name__)

__all__ = ["load_head", "save_head"]


def save_head(path: Path, task: Task, featurizer: Featurizer, head: nn.Module,
              training: dict[str, Any], options: RunOptions) -> None:
    """Save the selected (dev-best) featurizer + head with what identifies them (task, config,
    seed, upstream, task summary such as the class list), for ``--evaluate-only``. Written to a
    temporary name and renamed: a run killed while saving leaves the earlier ``head.pt`` whole."""
    payload = {
        "format": "robustdistill-downstream-head/1",
        "task": options.task,
        "upstream": options.upstream,
        "seed": options.seed,
        "config": to_dict(task.config),
        "task_summary": task.summary(),
        "training": training,
        "featurizer": featurizer.state_dict(),
        "head": head.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_head(path: str | Path, task: Task, featurizer: Featurizer, head: nn.Module,
              options: RunOptions) -> dict[str, Any]:
    """Load a :func:`save_head` file into ``featurizer`` and ``head``.

    Returns:
        The training record saved with it (best step, dev history).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable head file, another task, a different class / speaker list
            (the config or seed differ from the run that trained it), other settings of what
            the weights compute (:func:`_model_setting_differences`: featurizer layers or
            layer norm, head, STFT), or weights that do not fit ``featurizer`` and ``head``
            (another upstream or head config).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head file not found: {path}")
    try:
        saved = torch.load(path, map_location=options.device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, not a zip, a text file (KeyError)...
        raise ValueError(f"{path} cannot be read as a head file ({type(err).__name__}: "
                         f"{first_line(err)})") from err
    if not isinstance(saved, dict) or saved.get("format") != "robustdistill-downstream-head/1":
        raise ValueError(f"{path} is not a head saved by robustdistill evaluate")
    if saved["task"] != options.task:
        raise ValueError(f"{path} holds a {saved['task']!r} head, not {options.task!r}")
    summary = task.summary()
    for key in ("classes", "num_classes", "train_speakers", "alphabet"):
        if key in summary and summary[key] != saved["task_summary"].get(key):
            raise ValueError(f"{path}: its {key} differ from this run's (trained with another "
                             "config or seed?)")
    differences = _model_setting_differences(saved.get("config") or {}, to_dict(task.config),
                                             featurizer)
    if differences:
        raise ValueError(f"{path} was trained with other settings than this run's config: "
                         f"{'; '.join(differences)}; test it with the config it was trained with")
    if str(saved["upstream"]) != str(options.upstream):
        logger.warning("head %s was trained on upstream %s, evaluating on %s", path,
                       saved["upstream"], options.upstream)
    try:
        featurizer.load_state_dict(saved["featurizer"])
        head.load_state_dict(saved["head"])
    except RuntimeError as err:  # another upstream's layer count or width, another head shape
        raise ValueError(f"{path} does not fit this upstream and task config (trained on "
                         f"{saved['upstream']}; {first_line(err)})") from err
    return {**saved["training"], "loaded_from": str(path)}


#: Head settings of training only (speaker verification's AM-softmax, and its batch norm
#: statistics, which evaluation takes from the running ones either way): a head trained with
#: other values is tested the same way.
_TRAINING_ONLY_HEAD_KEYS = ("margin", "scale", "batch_norm")


def _model_setting_differences(saved: dict[str, Any], current: dict[str, Any],
                               featurizer: Featurizer) -> list[str]:
    """``"section.key (head's value, this run's)"`` for each setting that decides what a saved
    featurizer + head compute and differs between the head's training config ``saved`` and this
    run's ``current`` (:func:`~downstream.config.to_dict` form): the featurizer's layers (as
    indices into ``featurizer``'s hidden states) and layer norm, and every key of the ``head``
    and ``stft`` sections except those of training only (dropout; the AM-softmax ``margin``
    and ``scale`` of speaker verification, whose test scores the embeddings, and its
    ``batch_norm`` statistics mode, which evaluation does not use). Weights of the
    same shape loaded under other such settings give other numbers with no error."""
    differences = []
    feat = saved.get("featurizer") or {}
    try:
        layers = resolve_layers(feat.get("layers"), featurizer.num_hidden_states)
    except ValueError:
        layers = feat.get("layers")
    if layers != featurizer.layers:
        differences.append(f"featurizer.layers ({layers} in the head, {featurizer.layers} here)")
    if bool(feat.get("layer_norm", False)) != featurizer.layer_norm:
        differences.append(f"featurizer.layer_norm ({bool(feat.get('layer_norm', False))} in the "
                           f"head, {featurizer.layer_norm} here)")
    for section in ("head", "stft"):
        old, new = saved.get(section), current.get(section)
        if not (isinstance(old, dict) and isinstance(new, dict)):
            continue
        for key in sorted(set(old) | set(new)):
            if ("dropout" not in key and key not in _TRAINING_ONLY_HEAD_KEYS
                    and old.get(key) != new.get(key)):
                differences.append(f"{section}.{key} ({old.get(key)!r} in the head, "
                                   f"{new.get(key)!r} here)")
    return differences
