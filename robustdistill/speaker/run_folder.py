"""A speaker run's folder (``training.output_dir``): its checkpoints ``checkpoints/epoch_N``
(written and published through :mod:`robustdistill.checkpoints`) and, for a SIGTERM
(``training.save_on_sigterm``), ``checkpoints/epoch_N_batch_B`` (N epochs and B batches of
epoch N + 1 done: :func:`save_epoch_checkpoint` with ``partial``), the settings stored with
each (:func:`weight_settings`), the check that a fresh start or a resume may use the folder
(:func:`check_run_folder`, before any work), ``metrics.jsonl`` cut back to the checkpoint a
run resumes from (:func:`logged_epochs`), and the finished run's ``result.json``, read for the
table's reuse and the model card alike (:func:`read_result`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from downstream.config import to_dict
from robustdistill.checkpoints import (
    MANIFEST,
    CheckpointError,
    delete_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from robustdistill.run_settings import config_changes, saved_config_changes
from robustdistill.strict_json import nan_for_null, strict_dumps

from .added_keys import (
    MAP_FRAMES_KEY,
    map_targets_predate_rule,
    old_run_verdict,
    predated,
    same_effect,
)
from .config import SpeakerKDConfig
from .targets import MAP_FRAMES_RULE

__all__ = ["EPOCH_PREFIX", "EPOCH_PROGRESS", "RESULT", "RESUME_FREE", "check_run_folder",
           "checkpoint_progress", "checkpoint_setting_changes", "checkpoint_started_in",
           "complete_checkpoints", "epoch_progress", "incomplete_checkpoints", "logged_epochs",
           "newest_checkpoint", "newest_checkpoint_note",
           "newest_complete_checkpoint", "read_result", "resume_changes",
           "save_epoch_checkpoint", "map_targets_predate_rule", "weight_settings"]

logger = logging.getLogger("robustdistill.speaker")

#: Speaker checkpoints are ``checkpoints/epoch_N`` (N epochs done), written and published as
#: the distillation trainer's (:mod:`robustdistill.checkpoints`).
EPOCH_PREFIX = "epoch_"
#: A checkpoint saved inside an epoch (for a SIGTERM) is ``epoch_N_batch_B``: N epochs and the
#: first B batches of epoch N + 1 (1-based, as ``metrics.jsonl`` counts) done.
_NAME = re.compile(rf"{EPOCH_PREFIX}(\d+)(?:_batch_(\d+))?")
#: The file in a mid-epoch checkpoint holding where in the epoch it stopped and the epoch's
#: partial sums (:func:`epoch_progress`).
EPOCH_PROGRESS = "speaker_epoch.json"


def _progress(path: Path) -> tuple[int, int] | None:
    """``(epochs done, batches of the next epoch done)`` of a checkpoint folder's name
    (``epoch_3`` -> ``(3, 0)``, ``epoch_3_batch_5`` -> ``(3, 5)``), None for any other name."""
    match = _NAME.fullmatch(path.name)
    if match is None or (match.group(2) is not None and int(match.group(2)) < 1):
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def _checkpoints(output_dir: Path, require_manifest: bool = True) -> list[Path]:
    """The run's checkpoint folders (both kinds; with a manifest unless ``require_manifest``
    is false), in training order."""
    folder = output_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _progress(p) is not None
             and (not require_manifest or (p / MANIFEST).is_file())]
    return sorted(found, key=_progress)


def _last_checkpoint(output_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint, ``(folder, epochs done)``; None if there is none.

    Checkpoints with a manifest first (every one :func:`save_epoch_checkpoint` published, at an
    epoch's end or inside one), in training order (``epoch_3_batch_5`` after ``epoch_3``);
    else the newest bare ``epoch_N`` folder, as runs older than the manifest wrote them.
    """
    complete = _checkpoints(output_dir)
    if complete:
        return complete[-1], _progress(complete[-1])[0]
    bare = [p for p in _checkpoints(output_dir, require_manifest=False)
            if _progress(p)[1] == 0]
    return (bare[-1], _progress(bare[-1])[0]) if bare else None


def epoch_progress(checkpoint: Path) -> dict[str, Any] | None:
    """What a mid-epoch checkpoint (``epoch_N_batch_B``) holds of its unfinished epoch:
    ``{"epochs_done", "batches", "crops", "steps", "sums", "seconds", "ig_seconds",
    "cache_hits", "cache_misses", "ig_gaps"}`` (see :func:`robustdistill.speaker.train.
    train_system`); None for an epoch's end checkpoint."""
    file = Path(checkpoint) / EPOCH_PROGRESS
    if not file.is_file():
        return None
    progress = json.loads(file.read_text())
    for key in ("sums", "ig_gaps"):  # a non-finite loss sum or gap is written null: NaN
        if key in progress:
            progress[key] = nan_for_null(progress[key])
    return progress


def checkpoint_progress(checkpoint: Path) -> tuple[int, int]:
    """``(N epochs done, B batches of epoch N + 1 done)`` of a checkpoint folder, from its name
    (``epoch_3`` -> ``(3, 0)``, ``epoch_3_batch_5`` -> ``(3, 5)``).

    Raises:
        ValueError: a name of neither form."""
    progress = _progress(Path(checkpoint))
    if progress is None:
        raise ValueError(f"{checkpoint} is not a train-speaker checkpoint (epoch_N or "
                         "epoch_N_batch_B)")
    return progress


def newest_complete_checkpoint(output_dir: Path) -> tuple[Path, int, int] | None:
    """The run's newest complete checkpoint (with a manifest), ``(folder, epochs done,
    batches of the next epoch done)`` (batches 0 for an epoch's end); None when there is none.
    Reads the disk only."""
    complete = _checkpoints(Path(output_dir))
    if not complete:
        return None
    return complete[-1], *_progress(complete[-1])


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The run's complete checkpoints (``epoch_N`` and ``epoch_N_batch_B`` folders with a
    manifest), in training order (``epoch_3_batch_5`` after ``epoch_3``); ``[]`` for none.
    Reads the disk only."""
    return _checkpoints(Path(output_dir))


def incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """The run's checkpoint folders (``epoch_N``, ``epoch_N_batch_B``) without a manifest
    (a bare ``epoch_N`` of a run older than manifests, or one whose ``checkpoint.json`` was
    lost), in training order; ``[]`` for none. Reads the disk only."""
    return [p for p in _checkpoints(Path(output_dir), require_manifest=False)
            if not (p / MANIFEST).is_file()]


def newest_checkpoint(output_dir: Path) -> str | None:
    """The run's newest complete checkpoint and how far it is: ``RUN/checkpoints/epoch_3_batch_5
    (5 batches into epoch 4)``, ``RUN/checkpoints/epoch_3 (epoch 3)``; None when there is none.
    Reads the disk only."""
    if (newest := newest_complete_checkpoint(output_dir)) is None:
        return None
    folder, epochs, batches = newest
    return f"{folder} ({batches} batches into epoch {epochs + 1})" if batches else \
        f"{folder} (epoch {epochs})"


def newest_checkpoint_note(output_dir: Path, resume: str) -> str:
    """What an interrupted run's line says about its checkpoints
    (:func:`robustdistill.interrupts.note`): ``the newest checkpoint is
    RUN/checkpoints/epoch_3_batch_5 (5 batches into epoch 4; RESUME)`` (``(epoch 3; RESUME)``
    for an epoch's end), or, with none complete yet, that the same command starts again. Reads the
    disk only."""
    newest = newest_checkpoint(output_dir)
    if newest is None:
        return "no checkpoint of this run yet: the same command starts it again"
    return f"the newest checkpoint is {newest[:-1]}; {resume})"


#: The file in each checkpoint holding :func:`weight_settings` of the run that wrote it.
_RUN_SETTINGS = "speaker_run.json"
#: The key in it of the folder the run was in (the relative paths' folder), not a setting.
_STARTED_IN = "_cwd"


def weight_settings(cfg: SpeakerKDConfig) -> dict[str, Any]:
    """What the trained weights depend on, flattened to ``{"section.key": value}``: the
    teacher, the training crops, the student, the active loss terms (and ``ig``'s map settings
    for ``imlkd``, with the rule that moves the maps onto the student's frames:
    :data:`MAP_FRAMES_KEY`) and the optimisation, but not ``training.epochs`` (a resume may
    extend a run), the evaluation sets, the cache folder, the device or the output folder."""
    full = to_dict(cfg)
    out: dict[str, Any] = {"teacher": full["teacher"]}
    for key in ("train_dir", "crop_seconds", "crops_per_utterance", "min_length_s"):
        out[f"data.{key}"] = full["data"][key]
    out.update({f"student.{k}": v for k, v in full["student"].items()})
    out["loss.method"] = cfg.loss.method
    out.update({f"loss.{k}": v for k, v in cfg.loss.weights().items()})
    if "class_level" in cfg.loss.weights():
        out["loss.tau"] = cfg.loss.tau
    if cfg.loss.method == "imlkd":
        out.update({f"ig.{k}": v for k, v in cfg.ig.settings().key().items()})
        out["ig.durations"] = full["ig"]["durations"]
        out[MAP_FRAMES_KEY] = MAP_FRAMES_RULE
    out.update({f"training.{k}": full["training"][k]
                for k in ("batch_size", "lr", "weight_decay", "seed", "max_grad_norm")})
    return out


def check_run_folder(cfg: SpeakerKDConfig, folder_key: str = "training.output_dir",
                     skipped: dict[str, dict[str, str]] | None = None, log: bool = True
                     ) -> tuple[Path, int] | None:
    """The checkpoint ``cfg`` resumes from (``(folder, epochs done)``; None: a fresh start; a
    mid-epoch ``epoch_N_batch_B`` also holds :func:`epoch_progress`), checked before any
    work. ``folder_key`` is the setting the messages offer to change
    (``table.output_dir`` for a run of a table, whose run folders are made from it).
    ``skipped``: the loaded inputs' skipped files (``{set name: {path: reason}}``,
    :func:`~robustdistill.speaker.inputs.load_run_inputs`), once they are loaded: a checkpoint
    from before ``data.min_length_s`` is then checked against them (below). A setting
    whose value changed but whose effect did not
    (:data:`~robustdistill.speaker.added_keys.SAME_EFFECT`: ``data.min_length_s`` 3 -> 4 with
    2 s crops, whose training minimum is the 2 s crop either way) is no change: logged
    (``log``; the command line checks before the run with ``log`` false, so the run's own
    check logs it once).

    Raises:
        ValueError: (one line) a fresh run (``training.resume`` false) into a folder holding
            an earlier run's checkpoints (its log and its later checkpoints would mix with
            this run's), a resume whose newest checkpoint does not match its manifest (a
            truncated ``model.safetensors``: refused by name, not replaced by an older one),
            a resume whose checkpoint was trained with other settings
            (:func:`weight_settings`; the run would go on with the new ones and be reported as
            if it had used them throughout; also a checkpoint from before a setting added
            later that its lacking changed,
            :data:`~robustdistill.speaker.added_keys.ADDED_KEYS`: an IML-KD checkpoint from
            before 2026-12-07 whose map targets the old frame mapping made differ,
            :func:`map_targets_predate_rule`, and, given ``skipped``, a checkpoint from
            before ``data.min_length_s`` (2026-12-07) when training files are now skipped as
            shorter than it: it trained on them zero-padded), or one whose checkpoint is past
            ``training.epochs`` (its model would be reported as trained for fewer epochs;
            a mid-epoch checkpoint of epoch ``training.epochs + 1`` too).
    """
    out_dir = Path(cfg.training.output_dir)
    last = _last_checkpoint(out_dir)
    if last is None:
        return None
    if not cfg.training.resume:
        earlier = [p.name for p in _checkpoints(out_dir, require_manifest=False)]
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
    batches = _progress(last[0])[1]
    if last[1] > cfg.training.epochs or (batches and last[1] == cfg.training.epochs):
        trained = f"{last[1]} epochs" + (f" and {batches} batches of epoch {last[1] + 1}"
                                         if batches else "")
        need = last[1] + (batches > 0)
        raise ValueError(f"{last[0]} has trained {trained}, more than training.epochs "
                         f"{cfg.training.epochs}: resuming would report it as a "
                         f"{cfg.training.epochs}-epoch run (allowed: training.epochs >= "
                         f"{need}, or another {folder_key})")
    saved_file = last[0] / _RUN_SETTINGS
    if saved_file.is_file():  # checkpoints written before it was stored are not checked
        saved, now = json.loads(saved_file.read_text()), weight_settings(cfg)
        # relative paths are from the folder that run was in (none before 2026-12-07: here)
        started_in = saved.pop(_STARTED_IN, None)
        # another loss.method has other terms: its weights are not listed one by one; one
        # folder spelt two ways (relative, absolute, a link) is no change (config_changes)
        # a setting whose value changed but whose effect did not is no change (added_keys)
        unchanged = same_effect(saved, now)
        common = (saved.keys() & now.keys()) - {key for key, _ in unchanged}
        changed = config_changes({k: saved[k] for k in common}, {k: now[k] for k in common},
                                 old_folder=started_in if isinstance(started_in, str) else None)
        if changed:
            raise ValueError(f"{last[0]} was trained with other settings; resuming would not "
                             f"continue that run: {'; '.join(changed)} (allowed: the same "
                             f"settings, or another {folder_key})")
        # settings added after the checkpoint was written (added_keys.ADDED_KEYS)
        verdict = old_run_verdict(cfg, predated(saved, now), skipped, resume=True)
        if verdict.reuse is False:
            raise ValueError(f"{last[0]} {verdict.reason} (allowed: another {folder_key}, or "
                             "remove that folder to start again)")
        for _, why in unchanged if log else []:
            logger.info("resuming %s although %s, so the run is unchanged", last[0], why)
    return last


def checkpoint_started_in(checkpoint: Path) -> str | None:
    """The folder the start that saved ``checkpoint`` ran in (its relative paths are from
    there), from the checkpoint's settings file; None for a checkpoint written before it was
    stored (2026-12-07), or an unreadable one."""
    try:
        started_in = json.loads((Path(checkpoint) / _RUN_SETTINGS).read_text()).get(_STARTED_IN)
    except (OSError, ValueError, AttributeError):
        return None
    return started_in if isinstance(started_in, str) else None


def checkpoint_setting_changes(cfg: SpeakerKDConfig, checkpoint: Path) -> list[str]:
    """``["loss.method none -> imlkd", "student.hidden_size 8 -> 16"]``: the settings the
    weights depend on (:func:`weight_settings`) that ``cfg`` gives otherwise than the run that
    saved ``checkpoint`` did: the method and its loss terms, the student's shape, the crops'
    length and the optimisation. A setting of the same effect
    (:func:`~robustdistill.speaker.added_keys.same_effect`), or one added after the checkpoint
    was written, is no change; the folders (:data:`_FOLDER_KEYS`, relative to where each start
    ran) are not compared. ``[]`` for a checkpoint written before its settings were stored
    (nothing to compare).

    Raises:
        ValueError: the checkpoint's settings file is not a JSON object.
    """
    file = Path(checkpoint) / _RUN_SETTINGS
    if not file.is_file():
        return []
    try:
        saved = json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(f"{file} is not readable JSON ({err})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{file} holds a JSON {type(saved).__name__}, not the run's settings")
    now = weight_settings(cfg)
    unchanged = {key for key, _ in same_effect(saved, now)}
    common = (saved.keys() & now.keys()) - unchanged - set(_FOLDER_KEYS)
    return config_changes({k: saved[k] for k in common}, {k: now[k] for k in common})


#: The settings of :func:`weight_settings` that name a file or folder: each relative to the
#: folder its start ran in, so one path may be spelt two ways; not what
#: :func:`checkpoint_setting_changes` checks (the student's shape is checked when its weights
#: are loaded).
_FOLDER_KEYS = ("teacher", "data.train_dir", "student.upstream")


#: Keys a resume may change without a word, as ``distill``'s
#: :data:`robustdistill.startup_checks.RESUME_FREE`: where the run lives, whether and how far it
#: resumes (``training.epochs``: a resume that trains on), what a SIGTERM does, and the
#: ``table`` section (the table's, not the run's: a table's run config carries it).
RESUME_FREE = ("training.output_dir", "training.resume", "training.epochs",
               "training.save_on_sigterm", "table.")


def resume_changes(cfg: SpeakerKDConfig, checkpoint: Path) -> list[str]:
    """``["data.max_nontarget 5000 -> 200", "data.min_length_s 3.0 -> 4.0", ...]``: every
    setting a resume of ``cfg`` from ``checkpoint`` changes relative to the run folder's
    ``config.yaml`` (the settings the run was last started with; relative paths from the folder
    that start ran in: :func:`robustdistill.run_settings.saved_config_changes`), apart from
    :data:`RESUME_FREE`, as ``distill`` and ``train-se`` compare. These are the changes
    :func:`check_run_folder` accepts: the settings the weights do not depend on (the
    evaluation sets, ``ig.cache_dir``, ``training.keep_checkpoints``, ...) and a
    ``data.min_length_s`` of the same effect
    (:data:`~robustdistill.speaker.added_keys.SAME_EFFECT`). The resume's record in
    ``environment.json`` keeps them (``config_changes``:
    :func:`robustdistill.environment.record_environment`), so the run's card says that
    ``config.yaml`` holds the last values, not the first epochs'. Call it before the resume
    writes ``config.yaml`` again.

    Without a readable ``config.yaml`` (removed, a run folder copied without it, or not a
    YAML mapping: a warning): the settings the weights depend on that changed with the same
    effect, from the checkpoint's ``speaker_run.json`` (``[]`` for a checkpoint written before
    it was stored). ``[]`` when nothing changed."""
    out_dir = Path(cfg.training.output_dir)
    path = out_dir / "config.yaml"
    if path.is_file():
        try:
            readable = isinstance(yaml.safe_load(path.read_text()), dict)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            readable = False
        if readable:
            return saved_config_changes(out_dir, to_dict(cfg), RESUME_FREE)
        logger.warning("%s is not a readable YAML mapping: the settings this resume changes "
                       "are taken from %s, which holds only those the weights depend on",
                       path, checkpoint / _RUN_SETTINGS)
    saved_file = checkpoint / _RUN_SETTINGS
    if not saved_file.is_file():
        return []
    saved, now = json.loads(saved_file.read_text()), weight_settings(cfg)
    keys = [key for key, _ in same_effect(saved, now)]
    return config_changes({k: saved[k] for k in keys}, {k: now[k] for k in keys})


def save_epoch_checkpoint(accelerator, output_dir: Path, epochs_done: int,
                          settings: dict[str, Any], keep: int,
                          partial: dict[str, Any] | None = None) -> Path:
    """``checkpoints/epoch_N`` through :func:`robustdistill.checkpoints.save_checkpoint`
    (``.tmp-epoch_N``, a manifest, an atomic rename): a kill while saving leaves only the
    ``.tmp-`` folder, which :func:`_last_checkpoint` ignores and the next start deletes. A
    checkpoint of an older run with the same name, beyond the checkpoint this run resumed from,
    is replaced. ``settings`` (:func:`weight_settings`) is stored with it for
    :func:`check_run_folder`, with the folder the run is in (:data:`_STARTED_IN`: its relative
    paths are from there).

    Args:
        partial: inside an epoch (a SIGTERM): :func:`epoch_progress`'s record, whose
            ``batches`` (>= 1) names the folder ``epoch_N_batch_B`` and which is stored in it
            (:data:`EPOCH_PROGRESS`); None: the end of epoch ``epochs_done``.

    Rotation (``keep``, ``training.keep_checkpoints``): the ``keep`` newest epoch-end
    checkpoints stay; a mid-epoch checkpoint is a resume point only: it stays, beyond
    ``keep``, while it is the newest, and goes once a later checkpoint is saved (so a SIGTERM
    never deletes an epoch's checkpoint). Bare ``epoch_N`` folders of runs older than the
    manifest are never deleted.

    Returns:
        The published folder.
    """
    state: dict[str, Any] = {_RUN_SETTINGS: {**settings, _STARTED_IN: os.getcwd()}}
    prefix, index = EPOCH_PREFIX, epochs_done
    if partial is not None:
        if partial.get("batches", 0) < 1:
            raise ValueError(f"a mid-epoch checkpoint needs batches >= 1, got {partial}")
        prefix, index = f"{EPOCH_PREFIX}{epochs_done}_batch_", partial["batches"]
        state[EPOCH_PROGRESS] = partial
    folder = save_checkpoint(accelerator, output_dir / "checkpoints", index, epochs_done,
                             state=state, prefix=prefix, replace=True)
    if getattr(accelerator, "is_main_process", True):
        _rotate(output_dir, keep)
    return folder


def _rotate(output_dir: Path, keep: int) -> list[Path]:
    """Delete the mid-epoch checkpoints older than the newest checkpoint, and all but the
    ``keep`` newest epoch-end ones (complete ones only). Returns the deleted folders."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    complete = _checkpoints(Path(output_dir))
    partial = [p for p in complete[:-1] if _progress(p)[1] > 0]
    ends = [p for p in complete if _progress(p)[1] == 0]
    doomed = partial + ends[: max(0, len(ends) - keep)]
    for path in doomed:
        delete_checkpoint(path)
    return doomed


def logged_epochs(log_path: Path, epochs_done: int) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` up to ``epochs_done`` (the checkpoint a run
    resumes from; 0 for a fresh start); the file is rewritten without later ones, which a run
    killed between its log line and its checkpoint left behind. Lines without an ``epoch``
    (another tool's log in the same folder) are kept, first, and not returned."""
    if not log_path.exists():
        return []
    records = [nan_for_null(json.loads(line)) for line in log_path.read_text().splitlines()
               if line.strip()]  # a non-finite value is written null: NaN, as in an older log
    ours = [isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in records]
    kept = [r for r, mine in zip(records, ours, strict=True) if mine and r["epoch"] <= epochs_done]
    other = [r for r, mine in zip(records, ours, strict=True) if not mine]
    log_path.write_text("".join(strict_dumps(r) + "\n" for r in other + kept))
    return kept


#: A run's record, written by :func:`~robustdistill.speaker.train.train_system` at its end
#: (``{"method", "seed", "config", "epochs", "params", "cache"}``, with ``eval`` once the run
#: finished with verification sets, ``map_frames`` for IML-KD and ``skipped_files`` when
#: files were skipped).
RESULT = "result.json"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _what(value: Any) -> str:
    """``"0.05" (a JSON string)``, ``a JSON array``, ``null``: a wrong value as the one-line refusal
    shows it (its JSON cut to 40 characters)."""
    kind = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)
    if isinstance(value, dict | list):
        return f"a JSON {kind}"
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return shown if shown == kind else f"{shown} (a JSON {kind})"


def _structure_fault(result: dict[str, Any], needs: tuple[str, ...]) -> str | None:
    """The first field of ``result`` not of the structure the table and the card read, as
    ``eval.fsdd.eer is "0.05" (a JSON string), not a number or null``; None when all are."""
    for key in needs:
        if key not in result:
            return f"it has no {key}"
    if "params" in result and not _is_count(result["params"]):
        return f"params is {_what(result['params'])}, not an integer"
    config = result.get("config")
    if "config" in result:
        if not isinstance(config, dict):
            return f"config is {_what(config)}, not an object"
        loss = config.get("loss")
        if "loss" not in config:
            return "config has no loss"
        if not isinstance(loss, dict):
            return f"config.loss is {_what(loss)}, not an object"
        if "method" not in loss:
            return "config.loss has no method"
        if not isinstance(loss["method"], str):
            return f"config.loss.method is {_what(loss['method'])}, not a string"
        if "training" in config and not isinstance(config["training"], dict):
            return f"config.training is {_what(config['training'])}, not an object"
    scores = result.get("eval")
    if "eval" in result and not isinstance(scores, dict):
        return f"eval is {_what(scores)}, not an object of verification sets"
    for name, entry in (scores or {}).items():
        if not isinstance(entry, dict):
            return f"eval.{name} is {_what(entry)}, not an object"
        for key in ("eer", "min_dcf"):
            if key not in entry:
                return f"eval.{name} has no {key}"
            if entry[key] is not None and not _is_number(entry[key]):
                return f"eval.{name}.{key} is {_what(entry[key])}, not a number or null"
            if entry[key] is not None and not (math.isnan(entry[key]) or 0 <= entry[key] <= 1):
                return (f"eval.{name}.{key} is {_what(entry[key])}, outside [0, 1] (a "
                        "fraction, not a percentage)")
        for key in ("target_trials", "nontarget_trials"):
            if key in entry and not _is_count(entry[key]):
                return f"eval.{name}.{key} is {_what(entry[key])}, not an integer"
    skipped = result.get("skipped_files")
    if "skipped_files" in result and not isinstance(skipped, dict):
        return f"skipped_files is {_what(skipped)}, not an object"
    for name, counts in (skipped or {}).items():
        if not isinstance(counts, dict):
            return f"skipped_files.{name} is {_what(counts)}, not an object"
        for reason, count in counts.items():
            if not _is_count(count):
                return f"skipped_files.{name}.{reason} is {_what(count)}, not an integer"
    return None


def read_result(run_dir: str | Path, advice: str, needs: tuple[str, ...] = ()
                ) -> dict[str, Any] | None:
    """A ``train-speaker`` run's :data:`RESULT` (``run_dir/result.json``), checked in the
    fields the table's reuse (:func:`robustdistill.speaker.table.finished_run`) and the model
    card (:func:`robustdistill.publish.provenance.read_run_result`) read; None when there is
    none (the run has not finished an epoch, or is not a speaker run). Its ``eval`` scores
    ``eer`` and ``min_dcf`` written ``null`` (non-finite: :mod:`robustdistill.strict_json`)
    are read as NaN, as a file written before that rule gives them.

    A field may be absent (a file of an older run, or one with no evaluation), except
    ``needs``; where present it must be as :func:`~robustdistill.speaker.train.train_system`
    writes it: ``eval`` an object of verification sets, each an object with ``eer`` and
    ``min_dcf`` (fractions in [0, 1], or null) and any ``target_trials`` /
    ``nontarget_trials`` integers;
    ``config`` an object whose ``loss`` is an object with a ``method`` string and whose
    ``training``, if any, is an object; ``params`` an integer; ``skipped_files`` an object of
    ``{reason: integer}`` objects.

    Args:
        advice: what the caller's user may do, ending the refusal after ``; `` (the table:
            move the file away to train that run again; the card: restore it or train again).
        needs: top-level fields the caller cannot do without (the table's reuse: ``params``).

    Raises:
        ValueError: (one line naming the file, then ``advice``) it cannot be read (no
            permission, a folder named ``result.json``, any other ``OSError``), is not JSON
            (nor UTF-8, or nested too deep to parse), is not a JSON object, or a field is
            missing from ``needs``, of another structure, or a score outside [0, 1] (naming
            the field: ``eval.fsdd.eer``).
    """
    path = Path(run_dir) / RESULT
    if not os.path.lexists(path):  # a dangling link named result.json is refused, not missing
        return None
    try:
        result = json.loads(path.read_text())
    except OSError as err:  # PermissionError, IsADirectoryError, a dangling link, ...
        raise ValueError(f"{path} is not a readable {RESULT} ({err.strerror or err}); "
                         f"{advice}") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError; nesting
        raise ValueError(f"{path} is not a readable {RESULT} ({err}); {advice}") from None
    if not isinstance(result, dict):
        raise ValueError(f"{path} holds a JSON {type(result).__name__}, not a {RESULT} "
                         f"object; {advice}")
    if (fault := _structure_fault(result, needs)) is not None:
        raise ValueError(f"{path} is not a {RESULT} as train-speaker writes it: {fault}; "
                         f"{advice}")
    if "eval" in result:
        result["eval"] = {name: {k: nan_for_null(v) if k in ("eer", "min_dcf") else v
                                 for k, v in scores.items()}
                          for name, scores in result["eval"].items()}
    return result
