"""A speaker run's folder (``training.output_dir``): its checkpoints ``checkpoints/epoch_N``
(written and published through :mod:`robustdistill.checkpoints`), the settings stored with each
(:func:`weight_settings`), the check that a fresh start or a resume may use the folder
(:func:`check_run_folder`, before any work), and ``metrics.jsonl`` cut back to the checkpoint a
run resumes from (:func:`logged_epochs`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from downstream.config import to_dict
from robustdistill.checkpoints import (
    MANIFEST,
    CheckpointError,
    checkpoint_index,
    latest_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from robustdistill.run_settings import config_changes

from .config import SpeakerKDConfig

__all__ = ["EPOCH_PREFIX", "check_run_folder", "logged_epochs", "save_epoch_checkpoint", "weight_settings"]


#: Speaker checkpoints are ``checkpoints/epoch_N`` (N epochs done), written and published as
#: the distillation trainer's (:mod:`robustdistill.checkpoints`).
EPOCH_PREFIX = "epoch_"


def _last_checkpoint(output_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint, ``(folder, epochs done)``; None if there is none.

    Checkpoints with a manifest first (every one :func:`save_epoch_checkpoint` published); else the
    newest bare ``epoch_N`` folder, as runs older than the manifest wrote them.
    """
    folder = output_dir / "checkpoints"
    path = (latest_checkpoint(folder, prefix=EPOCH_PREFIX)
            or latest_checkpoint(folder, require_manifest=False, prefix=EPOCH_PREFIX))
    return (path, checkpoint_index(path, EPOCH_PREFIX)) if path else None


#: The file in each checkpoint holding :func:`weight_settings` of the run that wrote it.
_RUN_SETTINGS = "speaker_run.json"
#: The key in it of the folder the run was in (the relative paths' folder), not a setting.
_STARTED_IN = "_cwd"


def weight_settings(cfg: SpeakerKDConfig) -> dict[str, Any]:
    """What the trained weights depend on, flattened to ``{"section.key": value}``: the
    teacher, the training crops, the student, the active loss terms (and ``ig``'s map settings
    for ``imlkd``) and the optimisation, but not ``training.epochs`` (a resume may extend a
    run), the evaluation sets, the cache folder, the device or the output folder."""
    full = to_dict(cfg)
    out: dict[str, Any] = {"teacher": full["teacher"]}
    for key in ("train_dir", "crop_seconds", "crops_per_utterance"):
        out[f"data.{key}"] = full["data"][key]
    out.update({f"student.{k}": v for k, v in full["student"].items()})
    out["loss.method"] = cfg.loss.method
    out.update({f"loss.{k}": v for k, v in cfg.loss.weights().items()})
    if "class_level" in cfg.loss.weights():
        out["loss.tau"] = cfg.loss.tau
    if cfg.loss.method == "imlkd":
        out.update({f"ig.{k}": v for k, v in cfg.ig.settings().key().items()})
        out["ig.durations"] = full["ig"]["durations"]
    out.update({f"training.{k}": full["training"][k]
                for k in ("batch_size", "lr", "weight_decay", "seed", "max_grad_norm")})
    return out


def check_run_folder(cfg: SpeakerKDConfig, folder_key: str = "training.output_dir"
                     ) -> tuple[Path, int] | None:
    """The checkpoint ``cfg`` resumes from (``(folder, epochs done)``; None: a fresh start),
    checked before any work. ``folder_key`` is the setting the messages offer to change
    (``table.output_dir`` for a run of a table, whose run folders are made from it).

    Raises:
        ValueError: (one line) a fresh run (``training.resume`` false) into a folder holding
            an earlier run's checkpoints (its log and its later checkpoints would mix with
            this run's), a resume whose newest checkpoint does not match its manifest (a
            truncated ``model.safetensors``: refused by name, not replaced by an older one),
            a resume whose checkpoint was trained with other settings
            (:func:`weight_settings`; the run would go on with the new ones and be reported as
            if it had used them throughout), or one whose checkpoint is past
            ``training.epochs`` (its model would be reported as trained for fewer epochs).
    """
    out_dir = Path(cfg.training.output_dir)
    last = _last_checkpoint(out_dir)
    if last is None:
        return None
    if not cfg.training.resume:
        earlier = sorted((p.name for p in (out_dir / "checkpoints").glob(f"{EPOCH_PREFIX}*")
                          if checkpoint_index(p, EPOCH_PREFIX) is not None),
                         key=lambda n: checkpoint_index(n, EPOCH_PREFIX))
        raise ValueError(
            f"{folder_key.split('.')[0]} run folder {str(out_dir)!r} holds checkpoints of an "
            f"earlier run ({', '.join(earlier)}); allowed: --training.resume true to continue "
            f"it, another {folder_key}, or remove that folder to start again")
    if (last[0] / MANIFEST).is_file():  # a bare epoch_N of an older run has none
        try:
            verify_checkpoint(last[0])
        except CheckpointError as err:
            raise ValueError(f"{err}: refusing to resume from it (allowed: remove that folder "
                             "to resume from the checkpoint before it, or another "
                             f"{folder_key})") from err
    if last[1] > cfg.training.epochs:
        raise ValueError(f"{last[0]} has trained {last[1]} epochs, more than training.epochs "
                         f"{cfg.training.epochs}: resuming would report it as a "
                         f"{cfg.training.epochs}-epoch run (allowed: training.epochs >= "
                         f"{last[1]}, or another {folder_key})")
    saved_file = last[0] / _RUN_SETTINGS
    if saved_file.is_file():  # checkpoints written before it was stored are not checked
        saved, now = json.loads(saved_file.read_text()), weight_settings(cfg)
        # relative paths are from the folder that run was in (none before 2026-12-07: here)
        started_in = saved.pop(_STARTED_IN, None)
        # another loss.method has other terms: its weights are not listed one by one; one
        # folder spelt two ways (relative, absolute, a link) is no change (config_changes)
        common = saved.keys() & now.keys()
        changed = config_changes({k: saved[k] for k in common}, {k: now[k] for k in common},
                                 old_folder=started_in if isinstance(started_in, str) else None)
        if changed:
            raise ValueError(f"{last[0]} was trained with other settings; resuming would not "
                             f"continue that run: {'; '.join(changed)} (allowed: the same "
                             f"settings, or another {folder_key})")
    return last


def save_epoch_checkpoint(accelerator, output_dir: Path, epochs_done: int,
                     settings: dict[str, Any], keep: int) -> None:
    """``checkpoints/epoch_N`` through :func:`robustdistill.checkpoints.save_checkpoint`
    (``.tmp-epoch_N``, a manifest, an atomic rename): a kill while saving leaves only the
    ``.tmp-`` folder, which :func:`_last_checkpoint` ignores and the next start deletes. An
    ``epoch_N`` of an older run, beyond the checkpoint this run resumed from, is replaced.
    ``settings`` (:func:`weight_settings`) is stored with it for :func:`check_run_folder`; the
    ``keep`` newest complete checkpoints stay (``training.keep_checkpoints``), with the
    folder the run is in (:data:`_STARTED_IN`: its relative paths are from there)."""
    save_checkpoint(accelerator, output_dir / "checkpoints", epochs_done, epochs_done,
                    state={_RUN_SETTINGS: {**settings, _STARTED_IN: os.getcwd()}}, keep=keep,
                    prefix=EPOCH_PREFIX, replace=True)


def logged_epochs(log_path: Path, epochs_done: int) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` up to ``epochs_done`` (the checkpoint a run
    resumes from; 0 for a fresh start); the file is rewritten without later ones, which a run
    killed between its log line and its checkpoint left behind. Lines without an ``epoch``
    (another tool's log in the same folder) are kept, first, and not returned."""
    if not log_path.exists():
        return []
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    ours = [isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in records]
    kept = [r for r, mine in zip(records, ours, strict=True) if mine and r["epoch"] <= epochs_done]
    other = [r for r, mine in zip(records, ours, strict=True) if not mine]
    log_path.write_text("".join(json.dumps(r) + "\n" for r in other + kept))
    return kept
