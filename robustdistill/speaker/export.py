"""``robustdistill train-speaker export`` (:func:`export_checkpoint`): the student of a
``train-speaker`` checkpoint (``RUN/checkpoints/epoch_N``, or ``epoch_N_batch_B`` saved for a
SIGTERM) as the model folder a finished run writes to ``RUN/student``: a run that stopped at a
NaN/Inf step (``stopped.json``) or was stopped by a SIGTERM saved only checkpoints, and ``card
--run RUN --kind speaker`` is given such a folder.

The student is built as training builds it (:func:`.train.build_student` from the run's
``config.yaml``) and written by the trainer's own export (:func:`.train._export_student`), so the
export of a finished run's last checkpoint is ``RUN/student``, tensor for tensor. The two sizes
``build_student`` needs besides the config, ``K`` training speakers and the teacher's embedding
width, are read from the checkpoint's tensor shapes (``classifier.weight`` ``(K, E)``,
``projection.weight`` ``(E_teacher, E)``): no data set or teacher is loaded, and the sizes are
those of the weights exported, whatever the data folders hold now.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from downstream.config import load_config
from robustdistill.checkpoints import MANIFEST, CheckpointError, verify_checkpoint
from robustdistill.files import check_output_folder, check_outside_run, empty_folder, name_list
from robustdistill.messages import first_line
from robustdistill.run_settings import _started_in as config_started_in

from .config import SpeakerKDConfig
from .run_folder import (
    _progress,
    checkpoint_setting_changes,
    checkpoint_started_in,
    complete_checkpoints,
    epoch_progress,
    incomplete_checkpoints,
)

__all__ = ["export_checkpoint"]

logger = logging.getLogger("robustdistill.speaker")

#: The checkpoint's weights file (``accelerate``'s ``save_state`` of the one model).
_WEIGHTS = "model.safetensors"


def export_checkpoint(run_dir: str | Path, checkpoint: str | None = None,
                      out_dir: str | Path | None = None, overwrite: bool = False
                      ) -> dict[str, Any]:
    """Export the student of one checkpoint of a ``train-speaker`` run as a model folder
    (:class:`~robustdistill.speaker.models.SpeakerEmbedder`: ``config.json`` and
    ``model.safetensors``, an upstream student's upstream in ``upstream/``). Everything is
    checked before anything is written.

    Args:
        run_dir: the run's folder (``training.output_dir``: ``config.yaml``, ``checkpoints/``).
        checkpoint: a complete checkpoint's name (``epoch_2``, ``epoch_2_batch_3``) or its
            folder under ``run_dir/checkpoints``; None: the newest complete one (the one
            ``stopped.json`` names, for a run stopped at a NaN/Inf step); newer folders
            without a manifest are named in a warning.
        out_dir: a new or empty folder (``overwrite``: one whose files are removed first);
            default ``run_dir/exports/<checkpoint name>/student``. Never ``run_dir/student``,
            which says the run finished, nor elsewhere in ``run_dir`` except under
            ``run_dir/exports/`` (the rest is the trainer's: ``--overwrite`` of
            ``run_dir/checkpoints/epoch_N`` would delete that checkpoint).
        overwrite: empty ``out_dir`` first instead of refusing one that holds files.

    Returns:
        ``{"student": the folder written, "checkpoint": the checkpoint folder,
        "epochs_done": N, "batches_done": B (of epoch N + 1; 0 for an epoch's end),
        "num_speakers": K, "teacher_dim": E_teacher (None without a projection)}``.

    Raises:
        FileNotFoundError: no ``run_dir``, no ``config.yaml`` in it, or no complete checkpoint.
        ValueError: (one line each) a ``config.yaml`` that is not a ``train-speaker`` recipe
            (a ``distill`` one names ``robustdistill export``); a
            ``checkpoint`` that is not one of the run's complete checkpoints (those that are
            are listed); a checkpoint that does not match its manifest; one trained with other
            settings than ``config.yaml`` gives (:func:`.run_folder.checkpoint_setting_changes`:
            another ``loss.method``, student shape...) or whose weights do not fit the student
            it describes (tensors missing, unexpected or of other shapes); a ``student.upstream``
            that cannot be loaded (a relative one that names no folder: the message names the
            folder it was read from); a student that cannot be exported (a Whisper upstream);
            weights the trainer never saves (a tensor holding NaN/Inf, or of another dtype
            than the student's: :func:`_check_saved_values`); ``out_dir`` ``run_dir/student``.
        OutputFolderError: (a ``FileExistsError``) ``out_dir`` is a file, or holds files and
            ``overwrite`` is false, or with ``overwrite`` is or holds the run folder; or it is
            inside ``run_dir`` and not under ``run_dir/exports/``
            (:func:`~robustdistill.files.check_outside_run`).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from .models import SpeakerEmbedder
    from .train import _export_student, build_student

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: {run_dir} is not a train-speaker run "
                                "folder")
    try:
        cfg = load_config(config_file, SpeakerKDConfig)
    except ValueError as err:  # ConfigError: another trainer's config, a damaged file
        raise ValueError(f"{first_line(err)} ({_other_trainers_run(run_dir, config_file)})"
                         ) from None
    folder = _chosen_checkpoint(run_dir, checkpoint)
    try:
        verify_checkpoint(folder)
    except CheckpointError as err:
        raise ValueError(f"damaged checkpoint: {err}; export an earlier one with --checkpoint "
                         f"NAME ({_complete_list(run_dir)})") from None
    if changes := checkpoint_setting_changes(cfg, folder):
        raise ValueError(f"{folder} was trained with other settings than {config_file} gives: "
                         f"{'; '.join(changes)}: its student would be described as another "
                         "run's (export a checkpoint of this run)")
    out = Path(out_dir).expanduser() if out_dir is not None else \
        run_dir / "exports" / folder.name / "student"
    what = "--out" if out_dir is not None else "the default folder"  # as messages name it
    if out.resolve() == (run_dir / "student").resolve():
        raise ValueError(f"{what} {str(out)!r} is the folder a finished run exports its "
                         "student to (RUN/student says the run finished): give another folder")
    check_outside_run(out, run_dir, what)  # --overwrite of RUN/checkpoints/epoch_N: gone
    out = check_output_folder(out, what, overwrite=overwrite, inputs=(run_dir,))
    weights = folder / _WEIGHTS
    try:  # the header only: the two sizes the student is built with
        with safe_open(str(weights), "pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} cannot be read ({first_line(err)})") from None
    if len(shapes.get("classifier.weight", ())) != 2:
        raise ValueError(f"{weights} holds no classifier.weight (K, E): not a train-speaker "
                         "checkpoint")
    num_speakers = shapes["classifier.weight"][0]
    teacher_dim = shapes["projection.weight"][0] if "projection.weight" in shapes else None
    read_from = _resolve_upstream(cfg, run_dir, folder)
    try:
        model = build_student(cfg, num_speakers, teacher_dim)
    except (OSError, ValueError) as err:  # ModelFolderError is a ValueError
        where = "" if read_from is None else (
            f"no folder {os.path.join(read_from, cfg.student.upstream)} (a relative "
            f"student.upstream is read from {read_from}, the folder config.yaml's start ran "
            "in), nor a model id that loads: ")
        raise ValueError(f"student.upstream {cfg.student.upstream!r}: {where}{first_line(err)}"
                         ) from None
    state = load_file(str(weights))
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    other = [f"{k} {tuple(state[k].shape)} (student: {tuple(expected[k].shape)})"
             for k in sorted(expected.keys() & state.keys())
             if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or other:
        found = "; ".join(f"{what} {', '.join(keys[:3])}" + (" ..." if len(keys) > 3 else "")
                          for what, keys in (("missing", missing), ("unexpected", unexpected),
                                             ("other shapes:", other)) if keys)
        raise ValueError(f"{folder} does not fit the student {config_file} describes "
                         f"({found}): a checkpoint of another run?")
    _check_saved_values(state, expected, weights, run_dir)
    model.load_state_dict(state, strict=True)
    model.eval()
    try:  # a student the trainer's export cannot write (a Whisper upstream): refused before
        SpeakerEmbedder.from_speaker_model(model)  # --overwrite empties out_dir
    except ValueError as err:
        raise ValueError(f"{folder}: {err}") from None
    if overwrite:
        empty_folder(out)
    _export_student(model, out, strict=True)  # the trainer's export
    epochs, batches = _progress_of(folder)
    return {"student": str(out), "checkpoint": str(folder), "epochs_done": epochs,
            "batches_done": batches, "num_speakers": num_speakers, "teacher_dim": teacher_dim}


def _complete_list(run_dir: Path) -> str:
    """``complete: epoch_1, epoch_2`` or ``none is complete``, for the messages."""
    names = [p.name for p in complete_checkpoints(run_dir)]
    return f"complete: {', '.join(names)}" if names else "none is complete"


def _chosen_checkpoint(run_dir: Path, checkpoint: str | None) -> Path:
    """The checkpoint folder ``checkpoint`` names (a name, or a folder under
    ``run_dir/checkpoints``); None: the newest complete one.

    Raises:
        FileNotFoundError: no complete checkpoint (default).
        ValueError: ``checkpoint`` is not a complete checkpoint of the run (one line listing
            those that are).
    """
    complete = complete_checkpoints(run_dir)
    if checkpoint is None:
        if not complete:
            raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no complete checkpoint: "
                                    "nothing to export (a run stopped before its first "
                                    "checkpoint saved no weights)")
        newer = [p.name for p in incomplete_checkpoints(run_dir)
                 if _progress(p) > _progress(complete[-1])]
        if newer:
            logger.warning("%s %s not complete (no %s): exporting %s, the newest complete "
                           "checkpoint", name_list(newer), "is" if len(newer) == 1 else "are",
                           MANIFEST, complete[-1].name)
        return complete[-1]
    given = Path(checkpoint).expanduser()
    # a folder path (as stopped.json or a log line names it): under this run's checkpoints/
    if len(given.parts) > 1 and os.path.realpath(given.parent) != os.path.realpath(
            run_dir / "checkpoints"):
        raise ValueError(f"--checkpoint {checkpoint} is not in {run_dir / 'checkpoints'} "
                         f"({_complete_list(run_dir)})")
    for folder in complete:
        if folder.name == given.name:
            return folder
    raise ValueError(f"no complete checkpoint {given.name} in {run_dir / 'checkpoints'} "
                     f"({_complete_list(run_dir)})")


def _progress_of(folder: Path) -> tuple[int, int]:
    """``(epochs done, batches of the next epoch done)`` of a checkpoint folder."""
    partial = epoch_progress(folder)
    if partial is not None:
        return int(partial["epochs_done"]), int(partial["batches"])
    return int(folder.name.split("_")[1]), 0


def _resolve_upstream(cfg: SpeakerKDConfig, run_dir: Path, checkpoint: Path) -> str | None:
    """A relative ``student.upstream`` is relative to the folder the start that wrote
    ``run_dir/config.yaml`` ran in (the last ``environment.json`` record's ``cwd``; for a run
    without one, the folder ``checkpoint``'s start ran in, which its settings record): made
    absolute there when it names a folder there, else left as it is (relative to the current
    folder, or a hub id). A run resumed from another folder with the path spelt from there
    has the new spelling in ``config.yaml``, which the older checkpoints' folder would not
    resolve.

    Returns:
        The folder a relative ``student.upstream`` was looked for in when it names no folder
        there (for the message if it does not load as a hub id either); else None."""
    upstream = cfg.student.upstream
    if cfg.student.kind != "upstream" or not upstream or os.path.isabs(
            os.path.expanduser(upstream)):
        return None
    started_in = config_started_in(run_dir) or checkpoint_started_in(checkpoint)
    if started_in is None:
        return None
    if os.path.isdir(os.path.join(started_in, upstream)):
        cfg.student.upstream = os.path.join(started_in, upstream)
        return None
    return started_in


def _other_trainers_run(run_dir: Path, config_file: Path) -> str:
    """The hint after a ``config.yaml`` that is not a ``train-speaker`` recipe: the command
    that exports a ``distill`` run (``robustdistill export --run RUN``), what a ``train-se``
    run has instead, else the question whether it is a ``train-speaker`` run."""
    from robustdistill.config import load_config as load_distill_config
    from robustdistill.se.config import load_se_config

    for load, hint in (
            (load_distill_config, f"a distillation run: robustdistill export --run {run_dir}"),
            (load_se_config, "a train-se run: train-se writes its student to RUN/student when "
                             "it finishes (resume it to finish); no command exports a train-se "
                             "checkpoint")):
        try:
            load(config_file)
        except (ValueError, OSError):  # ConfigError: not that trainer's recipe
            continue
        return f"{run_dir} is {hint}"
    return f"is {run_dir} a train-speaker run?"


def _check_saved_values(state: dict[str, Any], expected: dict[str, Any], weights: Path,
                        run_dir: Path) -> None:
    """Refuse weights the trainer never saves: a tensor of another dtype than the student's
    (float32: the trainer saves no other; a cast would change the values exported, or pass a
    converted copy off as the checkpoint) or holding NaN/Inf (a non-finite step stops the
    run before its checkpoint is saved). The manifest records sizes only, so a same-size
    change of the bytes gets this far.

    Raises:
        ValueError: one line naming the first such tensor (in name order) and the complete
            checkpoints to export instead.
    """
    import torch

    for key in sorted(state):
        tensor, dtype = state[key], expected[key].dtype
        if tensor.dtype != dtype:
            problem = (f"holds {key} as {str(tensor.dtype).removeprefix('torch.')}, not "
                       f"{str(dtype).removeprefix('torch.')} as the trainer saves it "
                       "(converted?)")
        elif tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            problem = (f"holds NaN/Inf in {key}, which the trainer never saves (a NaN/Inf step "
                       "stops the run before its checkpoint)")
        else:
            continue
        raise ValueError(f"damaged checkpoint: {weights} {problem}; export an earlier one with "
                         f"--checkpoint NAME ({_complete_list(run_dir)})")
