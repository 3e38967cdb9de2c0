"""Checkpoint folders that are only ever seen complete: write, publish, find, verify, rotate.

A checkpoint is written into ``checkpoints/.tmp-checkpoint_N/``; its last file is
``checkpoint.json`` (the manifest: step, and the size of every file), then every file and the
folder are flushed to disk (``fsync``) and the folder is renamed to ``checkpoints/checkpoint_N``
(``os.rename`` is atomic within a file system). A process killed at any moment therefore leaves
either a complete ``checkpoint_N`` or a ``.tmp-`` folder, which :func:`latest_checkpoint`
ignores and :func:`remove_incomplete` deletes. Old checkpoints are rotated the same way round:
renamed to ``.tmp-delete-checkpoint_N`` first, then deleted, so a kill during a deletion never
leaves a half-deleted folder under a checkpoint's name.

The same idea as ``transformers.Trainer``'s ``save_total_limit`` and accelerate's
``ProjectConfiguration(total_limit=...)``; accelerate's own rotation deletes in place and counts
every entry of the folder, so the trainer names and rotates checkpoints itself.

:func:`save_checkpoint` does all of it for an ``accelerate.Accelerator`` (the three trainers:
``distill``, ``train-se``, ``train-speaker``). A trainer that appends to a log while it runs
(``metrics.jsonl``) stores the log's size in the checkpoint and cuts the log back to it on resume
(:func:`truncate_log`), so the lines a killed run wrote after its last checkpoint are not
written twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch

from .strict_json import strict_dumps

__all__ = [
    "CHECKPOINT_PREFIX",
    "MANIFEST",
    "STUDENT_PREFIX",
    "TRAINING_STATE",
    "CheckpointError",
    "checkpoint_index",
    "checkpoint_step",
    "delete_checkpoint",
    "latest_checkpoint",
    "newest_checkpoint_note",
    "list_checkpoints",
    "publish_checkpoint",
    "remove_incomplete",
    "rotate_checkpoints",
    "save_checkpoint",
    "separate_packed_views",
    "separate_packed_views_on_save",
    "temporary_checkpoint_dir",
    "tracker_resume_kwargs",
    "truncate_log",
    "verify_checkpoint",
    "write_manifest",
]

logger = logging.getLogger(__name__)

#: Complete checkpoints are ``<folder>/checkpoint_<N>``.
CHECKPOINT_PREFIX = "checkpoint_"
#: In-progress writes and deletions start with this prefix.
TMP_PREFIX = ".tmp-"
#: The manifest, written last into a checkpoint.
MANIFEST = "checkpoint.json"
#: The student's tensors' prefix in a ``distill`` checkpoint's ``model.safetensors`` (the
#: distiller's ``student.model``); the objectives' heads are under ``objectives.``.
STUDENT_PREFIX = "student.model."
#: The distillation trainer's own state in every checkpoint (JSON: no pickle to load on
#: resume): progress, scheduler, trajectory, the heads' layouts (``head_configs``).
TRAINING_STATE = "training_state.json"

_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint folder that is incomplete or altered (missing or resized files)."""


def checkpoint_index(path: str | os.PathLike, prefix: str = CHECKPOINT_PREFIX) -> int | None:
    """``N`` of a ``{prefix}N`` folder name (``checkpoint_N`` by default), else None."""
    name = Path(path).name
    if prefix == CHECKPOINT_PREFIX:
        match = _NAME.match(name)
    else:
        match = re.fullmatch(rf"{re.escape(prefix)}(\d+)", name)
    return int(match.group(1)) if match else None


def temporary_checkpoint_dir(folder: str | os.PathLike, index: int,
                             prefix: str = CHECKPOINT_PREFIX) -> Path:
    """Where checkpoint ``index`` is written before :func:`publish_checkpoint`
    (``.tmp-{prefix}{index}``)."""
    return Path(folder) / f"{TMP_PREFIX}{prefix}{index}"


def list_checkpoints(folder: str | os.PathLike, require_manifest: bool = True,
                     prefix: str = CHECKPOINT_PREFIX) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first (numeric order: 2 before 10).

    Args:
        folder: a run's ``checkpoints/`` folder (may not exist: an empty list).
        require_manifest: only folders holding a :data:`MANIFEST` (every checkpoint this
            module published). False also lists folders written by plain
            ``accelerator.save_state`` (older runs), which may be incomplete.
        prefix: the folder names' prefix: ``checkpoint_`` (distillation, per step) or
            ``epoch_`` (speaker training, per epoch).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir()
             and checkpoint_index(p, prefix) is not None
             and (not require_manifest or (p / MANIFEST).is_file())]
    return sorted(found, key=lambda p: checkpoint_index(p, prefix))


def latest_checkpoint(folder: str | os.PathLike, require_manifest: bool = True,
                      prefix: str = CHECKPOINT_PREFIX) -> Path | None:
    """The newest complete checkpoint in ``folder`` (see :func:`list_checkpoints`), or None."""
    found = list_checkpoints(folder, require_manifest, prefix)
    return found[-1] if found else None


def newest_checkpoint_note(folder: str | os.PathLike, resume: str,
                           prefix: str = CHECKPOINT_PREFIX, unit: str = "step") -> str:
    """What an interrupted run's line says about its checkpoints
    (:func:`robustdistill.interrupts.note`): ``the newest checkpoint is FOLDER/checkpoint_7
    (step 35; RESUME)``, or, with none complete yet, that the same command starts again.

    Args:
        folder: the run's checkpoints folder (may not exist).
        resume: how to go on from it (``resume with --resume``).
        prefix: the checkpoint folders' prefix (``epoch_`` for speaker training).
        unit: what the manifest's step counts (``epoch``).
    """
    newest = latest_checkpoint(folder, prefix=prefix)
    if newest is None:
        return "no checkpoint of this run yet: the same command starts it again"
    step = checkpoint_step(newest)
    return (f"the newest checkpoint is {newest} "
            f"({'' if step is None else f'{unit} {step}; '}{resume})")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(tmp_dir: str | os.PathLike, step: int) -> dict:
    """Write :data:`MANIFEST` into ``tmp_dir``: ``{"step", "files": {relative path: bytes}}``.

    Call it after everything else is written; it is what makes a folder a checkpoint.
    """
    tmp_dir = Path(tmp_dir)
    files = {str(p.relative_to(tmp_dir)): p.stat().st_size
             for p in sorted(tmp_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": 1, "step": int(step), "files": files}
    (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def publish_checkpoint(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> Path:
    """Flush ``tmp_dir`` to disk and rename it to ``final_dir`` in one atomic step.

    Raises:
        CheckpointError: ``tmp_dir`` has no manifest, or ``final_dir`` exists already.
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if not (tmp_dir / MANIFEST).is_file():
        raise CheckpointError(f"{tmp_dir} has no {MANIFEST}: not a finished checkpoint")
    if final_dir.exists():
        raise CheckpointError(f"checkpoint {final_dir} exists already; not overwriting it")
    for path in sorted(tmp_dir.rglob("*"), reverse=True):  # files, then their folders
        _fsync(path)
    _fsync(tmp_dir)
    os.rename(tmp_dir, final_dir)
    _fsync(final_dir.parent)
    return final_dir


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The training step a checkpoint's manifest records, or None (no manifest, an unreadable
    one, or no integer step: a checkpoint from before manifests)."""
    try:
        step = json.loads((Path(path) / MANIFEST).read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """Check a checkpoint against its manifest.

    Returns:
        The manifest.

    Raises:
        CheckpointError: no manifest, a manifest that is not a JSON object with a ``files``
            mapping (a damaged file: it was a ``JSONDecodeError`` traceback), or a listed file
            missing or of another size.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{path} has no {MANIFEST}: not a complete checkpoint of this trainer (an "
            "interrupted write, or a folder written by another program)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (ValueError, TypeError, KeyError) as err:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: {MANIFEST} is damaged, not a manifest of this trainer "
                              f"({type(err).__name__}: {err})") from err
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} listed in {MANIFEST} is missing")
        if file.stat().st_size != size:
            raise CheckpointError(f"{path}: {name} has {file.stat().st_size} bytes, "
                                  f"{MANIFEST} says {size}")
    return manifest


def delete_checkpoint(path: str | os.PathLike) -> None:
    """Delete a checkpoint folder: renamed out of the checkpoint namespace first
    (``.tmp-delete-NAME``), then deleted, so a kill while deleting never leaves a half-deleted
    folder under a checkpoint's name."""
    path = Path(path)
    doomed = path.with_name(f"{TMP_PREFIX}delete-{path.name}")
    os.rename(path, doomed)
    shutil.rmtree(doomed)


def rotate_checkpoints(folder: str | os.PathLike, keep: int,
                       prefix: str = CHECKPOINT_PREFIX) -> list[Path]:
    """Delete all but the ``keep`` newest complete checkpoints.

    Only complete checkpoints (``{prefix}N`` with a manifest) count and only they are rotated:
    a ``.tmp-`` folder never pushes a complete one out.

    Returns:
        The deleted folders.

    Raises:
        ValueError: ``keep < 1``.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    complete = list_checkpoints(folder, prefix=prefix)
    doomed = complete[: max(0, len(complete) - keep)]
    for path in doomed:
        delete_checkpoint(path)
        logger.info("rotated out %s (keeping the %d newest)", path, keep)
    return doomed


def remove_incomplete(folder: str | os.PathLike) -> list[Path]:
    """Delete what interrupted writes and deletions left: ``.tmp-*`` entries in ``folder``.

    Call it on the main process only, before any checkpoint is written.

    Returns:
        The deleted paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.glob(f"{TMP_PREFIX}*")):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
        logger.warning("removed %s, left by an interrupted checkpoint write or rotation", path)
    return removed


def save_checkpoint(accelerator, folder: str | os.PathLike, index: int, step: int, *,
                    state: dict[str, object] | None = None, keep: int | None = None,
                    prefix: str = CHECKPOINT_PREFIX, replace: bool = False) -> Path:
    """Write ``{folder}/{prefix}{index}`` with ``accelerator.save_state`` so that it is only
    ever seen complete; call it on every process.

    Every rank writes its part into ``.tmp-{prefix}{index}``; the main process adds ``state``
    (one JSON file per entry), the manifest (:func:`write_manifest`), flushes and renames the
    folder (:func:`publish_checkpoint`), and keeps the ``keep`` newest complete checkpoints
    (:func:`rotate_checkpoints`). Packed parameter views (cuDNN's LSTM / GRU weights on a GPU)
    are saved whole (:func:`separate_packed_views_on_save`, registered on first use).

    Args:
        accelerator: the run's ``accelerate.Accelerator`` (model, optimizer prepared).
        folder: the run's ``checkpoints/`` folder.
        index: the ``N`` of the folder name.
        step: recorded in the manifest (the optimizer step, or the epochs done).
        state: file name -> JSON-serialisable object (written as strict JSON, a non-finite
            number as ``null``: :mod:`robustdistill.strict_json`) or ``bytes`` (written as
            they are, e.g. a ``safetensors`` blob), written by the main process.
        keep: newest complete checkpoints kept (None: all).
        prefix: folder-name prefix (``checkpoint_``, ``epoch_``).
        replace: delete a complete ``{prefix}{index}`` first (a later checkpoint of an older
            run, beyond the one this run resumed from) instead of raising.

    Returns:
        The published folder.

    Raises:
        CheckpointError: the folder exists and ``replace`` is false.
        ValueError: ``keep < 1``.
        OSError: the disk refused a write.

    Both errors are raised on every process before anything is written, so no rank is left
    waiting for the main one.
    """
    folder = Path(folder)
    tmp = temporary_checkpoint_dir(folder, index, prefix)
    final = folder / f"{prefix}{index}"
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if final.exists() and not replace:
        raise CheckpointError(f"checkpoint {final} exists already; not overwriting it")
    if not getattr(accelerator, "_separates_packed_views", False):
        separate_packed_views_on_save(accelerator)
        accelerator._separates_packed_views = True
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, value in (state or {}).items():
            if isinstance(value, bytes):
                (tmp / name).write_bytes(value)
            else:
                (tmp / name).write_text(strict_dumps(value))
        write_manifest(tmp, step)
        if replace and final.exists():
            delete_checkpoint(final)
            logger.info("replaced %s, left by an earlier run beyond this run's resume point",
                        final)
        publish_checkpoint(tmp, final)
        if keep is not None:
            rotate_checkpoints(folder, keep, prefix)
    accelerator.wait_for_everyone()
    return final


def truncate_log(path: str | os.PathLike, size: int | None) -> int:
    """Cut an append-only log (JSON lines) back to ``size`` bytes, its size when the checkpoint
    a run resumes from was written: what a killed run logged after that checkpoint goes, and
    the resumed run logs it again.

    Nothing is cut, with a warning, when ``size`` is beyond the file's end (the log was
    shortened by hand) or not at a line's end; ``size`` None (a checkpoint older than this
    record) leaves the file as it is.

    Args:
        path: the log (may not exist: nothing to do).
        size: bytes to keep.

    Returns:
        The number of lines removed.
    """
    path = Path(path)
    if size is None or not path.is_file():
        return 0
    data = path.read_bytes()
    if size > len(data) or (size > 0 and data[size - 1 : size] != b"\n"):
        logger.warning("%s: not cut back to the checkpoint's %d bytes (the file has %d, and "
                       "byte %d does not end a line): lines logged after the checkpoint may "
                       "appear twice", path, size, len(data), size)
        return 0
    dropped = data[size:].count(b"\n") + (not data.endswith(b"\n") and len(data) > size)
    if dropped:
        with path.open("r+b") as handle:
            handle.truncate(size)
        logger.info("%s: removed %d line(s) logged after the checkpoint", path, dropped)
    return dropped


def tracker_resume_kwargs(step: int) -> dict[str, dict]:
    """``init_kwargs`` for ``Accelerator.init_trackers`` in a run that resumes at ``step``.

    TensorBoard is told to hide what a killed run logged after its last checkpoint
    (``SummaryWriter(purge_step=step + 1)``: the resumed run logs those steps again); a fresh
    start (``step`` 0) needs nothing.
    """
    return {"tensorboard": {"purge_step": step + 1}} if step > 0 else {}


def separate_packed_views(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give every tensor that is a distinct view into a shared buffer its own copy, in place.

    On a GPU, cuDNN packs an ``nn.LSTM``'s weights and biases into one flat buffer and makes
    each parameter a view into it (``flatten_parameters``). accelerate's safetensors writer
    takes tensors that share storage for tied weights and keeps only the first name, so a
    checkpoint of the enhancement head's BLSTM silently lost all but one of its weights and
    could not be resumed. Views at *different* offsets or shapes are copied here (tied weights,
    the same offset and shape, are left to the writer's de-duplication). The trainer applies
    it to every ``save_state`` (:func:`separate_packed_views_on_save`).

    Args:
        state: a state dict (name -> tensor); modified in place.

    Returns:
        The same dict.
    """
    groups: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
            key = (tensor.device, tensor.untyped_storage().data_ptr())
            groups.setdefault(key, []).append(name)
    for names in groups.values():
        layouts = {(state[n].data_ptr(), tuple(state[n].shape), state[n].stride()) for n in names}
        if len(layouts) > 1:  # distinct views of one buffer, not tied copies of one tensor
            for name in names:
                state[name] = state[name].clone()
    return state


def separate_packed_views_on_save(accelerator) -> None:
    """Register :func:`separate_packed_views` as ``accelerator``'s ``save_state`` pre-hook.

    Args:
        accelerator: an ``accelerate.Accelerator``; every model state dict it saves from now on
            has its packed views copied apart first.
    """
    accelerator.register_save_state_pre_hook(
        lambda models, weights, output_dir: [separate_packed_views(w) for w in weights])
