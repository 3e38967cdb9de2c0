"""Exporting a trained student as a stock ``transformers`` checkpoint, heads beside it.

``OUTPUT_DIR/student/`` holds ``config.json``, ``model.safetensors`` and
``preprocessor_config.json``: it loads with ``AutoModel.from_pretrained`` and
``AutoFeatureExtractor.from_pretrained``, no custom code. The objectives' heads (prediction
heads, enhancement head) are training-only and go to ``OUTPUT_DIR/heads/<objective>.safetensors``
with a ``<objective>.json`` that says how to rebuild them and which student weights they were
saved with (``student_weights``: the SHA-256 of the student's ``*.safetensors``, the step and
the checkpoint), so that ``robustdistill card`` never ships heads of other weights
(:func:`heads_match`).

Where the heads go (:func:`export_heads_dir`): beside a student folder named ``student``
(``PARENT/student`` + ``PARENT/heads``, the run's own layout, which ``enhance --model PARENT``
reads), else inside it (``OUT/heads``, where ``card`` puts them for publishing), so that two
exports never share one ``heads/``.

Every export writes a clean folder: ``export --out`` refuses one that already holds files
(unless ``overwrite``) and one inside the run other than ``RUN/student`` or under
``RUN/exports/`` (:func:`~robustdistill.files.check_outside_run`: the rest is the trainer's), and the run's own folders (the trainer's ``RUN/student`` and
``RUN/heads``, ``export``'s defaults) are emptied before they are written again, with a warning
naming what was written beside the earlier export (a card, plots, copied heads, an ONNX graph).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from .checkpoints import (
    MANIFEST,
    STUDENT_PREFIX,
    TRAINING_STATE,
    CheckpointError,
    checkpoint_step,
    latest_checkpoint,
    verify_checkpoint,
)
from .files import (
    check_output_folder,
    check_outside_run,
    empty_folder,
    folder_entries,
    name_list,
)
from .student import save_student
from .upstream import model_folder_errors

logger = logging.getLogger(__name__)

__all__ = ["export_from_checkpoint", "export_heads_dir", "export_run_student", "heads_match",
           "heads_records", "not_export_files", "run_export_of_step", "save_heads",
           "weights_sha256"]

_OBJECTIVES_PREFIX = "objectives."


def export_heads_dir(student_dir: str | Path) -> Path:
    """Where the heads of the student exported to ``student_dir`` go: ``PARENT/heads`` for a
    folder named ``student`` (the run layout, ``RUN/student`` + ``RUN/heads``), else
    ``student_dir/heads``."""
    student_dir = Path(student_dir)
    return student_dir.parent / "heads" if student_dir.name == "student" else student_dir / "heads"


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(model_dir: str | Path) -> str | None:
    """A SHA-256 of the ``*.safetensors`` files of ``model_dir`` (not its subfolders): over
    each file's name and the SHA-256 of its bytes, in name order; None when it has none."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(file.name.encode())
        digest.update(_file_sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()


def not_export_files(student_dir: str | Path) -> list[str]:
    """What ``student_dir`` holds that an export does not write there (a card, plots,
    ``heads/`` copied by ``card``, ``onnx/``, ...): every entry but ``config.json``,
    ``preprocessor_config.json``, ``*.safetensors`` and ``*.safetensors.index.json``."""
    own = ("config.json", "preprocessor_config.json")
    return [n for n in folder_entries(student_dir)
            if n not in own and not n.endswith((".safetensors", ".safetensors.index.json"))]


def save_heads(objective_states: dict[str, dict[str, torch.Tensor]], head_configs: dict[str, dict],
               options: dict[str, dict], out_dir: Path, weights: dict | None = None) -> Path:
    """Write each objective's head weights and rebuild recipe.

    Args:
        objective_states: objective name -> its ``state_dict``.
        head_configs: objective name -> ``Objective.head_config()``.
        options: objective name -> the options it was built with (from the run config).
        out_dir: the ``heads/`` folder.
        weights: the student weights these heads were saved with (``sha256`` from
            :func:`weights_sha256`, ``step``, ``checkpoint``), written into each recipe as
            ``student_weights``; None writes no record.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, state in objective_states.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                  str(out_dir / f"{name}.safetensors"))
        recipe = {"objective": name, "options": options.get(name, {}),
                  "head_config": head_configs.get(name, {})}
        if weights is not None:
            recipe["student_weights"] = weights
        (out_dir / f"{name}.json").write_text(json.dumps(recipe, indent=2))
    return out_dir


def heads_records(heads_dir: str | Path) -> dict[str, dict | None]:
    """Head name -> the ``student_weights`` record of its ``<name>.json`` (None when it has
    none or cannot be read), for every ``<name>.safetensors`` in ``heads_dir``."""
    records: dict[str, dict | None] = {}
    for weights in sorted(Path(heads_dir).glob("*.safetensors")):
        try:
            recipe = json.loads(weights.with_suffix(".json").read_text())
        except (OSError, ValueError):
            recipe = None
        record = recipe.get("student_weights") if isinstance(recipe, dict) else None
        records[weights.stem] = record if isinstance(record, dict) else None
    return records


def heads_match(heads_dir: str | Path, model_dir: str | Path) -> tuple[bool | None, str]:
    """Whether the heads in ``heads_dir`` were saved with the weights in ``model_dir``.

    Returns:
        ``(True, "")`` when every head records ``model_dir``'s :func:`weights_sha256`;
        ``(None, "")`` when no head records any weights (exported before heads carried a
        record, or written by hand) or ``heads_dir`` holds no heads; else ``(False, what)``,
        ``what`` saying which weights they record (e.g. ``"step 60, checkpoint_1"``).
    """
    records = heads_records(heads_dir)
    if not records or all(r is None for r in records.values()):
        return None, ""
    sha = weights_sha256(model_dir)
    others = [r for r in records.values() if r is None or sha is None or r.get("sha256") != sha]
    if not others:
        return True, ""
    return False, "; ".join(sorted({_describe(r) for r in others}))


def run_export_of_step(output_dir: str | Path, step: int, heads: Iterable[str]) -> bool:
    """Whether the run's own ``output_dir/student`` and ``output_dir/heads`` are already the
    export of its weights at ``step``: the student folder holds ``config.json`` and weights,
    ``heads/`` holds exactly the heads named ``heads``, and every one records those weights
    (:func:`heads_match`) and ``step``. A resumed run that trains no step keeps such folders
    (and what was written beside them) instead of exporting the same weights again."""
    student_dir, heads_dir = Path(output_dir) / "student", Path(output_dir) / "heads"
    if not (student_dir / "config.json").is_file():
        return False
    records = heads_records(heads_dir)
    return (set(records) == set(heads) and heads_match(heads_dir, student_dir)[0] is True
            and all(r.get("step") == step for r in records.values()))


def _describe(record: dict | None) -> str:
    """``"step 60, checkpoint_1"`` for a ``student_weights`` record."""
    if record is None:
        return "no record"
    parts = [f"step {record['step']}" if record.get("step") is not None else "",
             str(record.get("checkpoint") or "")]
    return ", ".join(x for x in parts if x) or "other weights"


def _replace_run_folders(student_dir: Path, heads_dir: Path, heads: Iterable[str]) -> None:
    """Empty the run's own ``student_dir`` and ``heads_dir`` before an export writes them again,
    warning about what was written beside the earlier export (what this export does not write:
    a card, plots, copied heads, an ONNX graph, heads of objectives it does not have)."""
    written = {f"{n}{ext}" for n in heads for ext in (".safetensors", ".json")}
    stale = [f"{student_dir.name}/{n}" for n in not_export_files(student_dir)]
    stale += [f"{heads_dir.name}/{n}" for n in folder_entries(heads_dir) if n not in written]
    empty_folder(student_dir)
    empty_folder(heads_dir)
    if stale:
        logger.warning("removed what was written beside the earlier export in %s: %s (a card "
                       "or files made for the weights exported then; write the card again with "
                       "robustdistill card)", student_dir.parent, name_list(stale))


def export_run_student(distiller, feature_extractor, output_dir: str | Path,
                       config: dict, step: int | None = None) -> Path:
    """Export the student and heads of a trained :class:`~robustdistill.trainer.Distiller`
    into ``output_dir/student`` and ``output_dir/heads``.

    Both folders are emptied first: what was written beside the earlier export (a card, plots,
    copied heads, an ONNX graph: :func:`not_export_files`), made for the weights exported then,
    is removed with a warning naming it.

    Args:
        step: the training step of the weights, recorded with the heads.

    Returns:
        ``output_dir / "student"``.
    """
    output_dir = Path(output_dir)
    student_dir, heads_dir = output_dir / "student", output_dir / "heads"
    objectives = dict(distiller.objectives.items())
    _replace_run_folders(student_dir, heads_dir, objectives)
    save_student(distiller.student.model, feature_extractor, student_dir)
    save_heads({n: o.state_dict() for n, o in objectives.items()},
               {n: o.head_config() for n, o in objectives.items()},
               config.get("objectives", {}), heads_dir,
               {"sha256": weights_sha256(student_dir), "step": step, "checkpoint": None})
    logger.info("student exported to %s (heads in %s)", student_dir, heads_dir)
    return student_dir


def _saved_head_configs(checkpoint: Path) -> dict[str, dict]:
    """The heads' layouts the trainer saved in ``checkpoint``'s :data:`TRAINING_STATE`
    (``head_configs``), or ``{}`` for a checkpoint from before they were saved (the heads'
    recipes then carry their options only, whose defaults rebuild the same heads)."""
    try:
        state = json.loads((checkpoint / TRAINING_STATE).read_text())
    except (OSError, ValueError):
        return {}
    configs = state.get("head_configs") if isinstance(state, dict) else None
    return configs if isinstance(configs, dict) else {}


def export_from_checkpoint(run_dir: str | Path, checkpoint: str | Path | None = None,
                           out_dir: str | Path | None = None, overwrite: bool = False,
                           inputs: Iterable[str | Path] = ()) -> Path:
    """Export the student of any saved checkpoint of a run, without loading the teacher.

    The checkpoint is checked against its manifest first (as ``--resume`` does): a damaged
    newest checkpoint is refused, naming it, not replaced by an older one silently; export an
    earlier one with ``checkpoint``. Every output folder is checked before anything is read or
    written.

    Args:
        run_dir: the run's ``output_dir`` (holds ``student_init/``, ``config.yaml`` and
            ``checkpoints/``).
        checkpoint: a checkpoint folder; default the newest complete one (with a manifest)
            under ``run_dir/checkpoints``, else, for runs from before manifests, the newest
            ``checkpoint_N`` folder.
        out_dir: where to write; it must be new or empty unless ``overwrite``, and inside
            ``run_dir`` only ``run_dir/student`` or a folder under ``run_dir/exports/`` (the
            rest is the trainer's: :func:`~robustdistill.files.check_outside_run`). Default: the
            run's own ``run_dir/student`` for the newest checkpoint, and
            ``run_dir/exports/<checkpoint name>/student`` for a ``checkpoint`` given, so that
            an earlier checkpoint never replaces the run's final student (and its card); these
            are emptied and written again, as the trainer's export does (what was written beside
            the earlier export is removed, with a warning naming it).
        overwrite: empty ``out_dir`` (and its heads folder) first instead of refusing one that
            holds files.
        inputs: other paths the caller reads after the export (e.g. the ONNX check audio),
            protected as the run, its ``student_init`` and the checkpoint are.

    Returns:
        The student folder; the heads go to :func:`export_heads_dir` of it (``../heads`` for
        a folder named ``student``, else ``<out_dir>/heads``), with a record of these weights.

    Raises:
        FileNotFoundError: no ``run_dir``, no ``student_init``, no checkpoint, or a
            checkpoint folder without ``model.safetensors``.
        OutputFolderError: (a ``FileExistsError``) an existing file where the student or heads
            folder would be; ``out_dir`` or its heads folder holds files and ``overwrite`` is
            false; or, with ``overwrite``, one of them is or holds the run, its ``student_init``,
            the checkpoint, one of ``inputs`` or the current folder; or ``out_dir`` (or its
            heads folder) is inside ``run_dir`` but not ``run_dir/student`` (``run_dir/heads``)
            and not under ``run_dir/exports/``.
        CheckpointError: (a ``RuntimeError``) the checkpoint is damaged (a file missing or of
            another size than its manifest says, or weights that cannot be read), or its
            student weights do not match the student config.
        ModelFolderError: (a ``ValueError``) ``student_init`` cannot be read as a stock
            model (:func:`~robustdistill.upstream.model_folder_errors`; one whose
            ``config.json`` needs code of its own is a ``CustomCodeError`` saying so: that code
            never runs).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    init = run_dir / "student_init"
    if not (init / "config.json").is_file():
        speaker = any((run_dir / "checkpoints").glob("epoch_*"))  # train-speaker's checkpoints
        raise FileNotFoundError(
            f"{init} has no config.json: is {run_dir} a distillation run?" + (
                f" (its checkpoints are train-speaker's: robustdistill train-speaker export "
                f"--run {run_dir})" if speaker else ""))
    chosen = checkpoint is not None
    if checkpoint is None:
        # The newest complete checkpoint (robustdistill.checkpoints); runs from before
        # checkpoints had manifests: the newest checkpoint_N folder.
        checkpoint = (latest_checkpoint(run_dir / "checkpoints")
                      or latest_checkpoint(run_dir / "checkpoints", require_manifest=False))
        if checkpoint is None:
            raise FileNotFoundError(f"no checkpoint under {run_dir / 'checkpoints'}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint folder {checkpoint} does not exist")
    own = out_dir is None  # the run's own folders: written again, as the trainer does
    if own:
        out_dir = (run_dir / "exports" / Path(checkpoint).resolve().name / "student"
                   if chosen else run_dir / "student")
    out_dir = Path(out_dir).expanduser()
    heads_dir = export_heads_dir(out_dir)
    # inside the run: its own student/ + heads/ or under exports/ (--overwrite of
    # RUN/checkpoints/checkpoint_N emptied that checkpoint)
    check_outside_run(out_dir, run_dir, "student folder" if own else "--out",
                      allowed=("student",))
    check_outside_run(heads_dir, run_dir, "heads folder", allowed=("heads",))
    for folder, what in ((out_dir, "student folder" if own else "--out"),
                         (heads_dir, "heads folder")):
        check_output_folder(folder, what, overwrite=overwrite or own,
                            inputs=(run_dir, init, checkpoint, *inputs),
                            emptied_by="--overwrite" if overwrite or not own
                            else "the export (it writes the run's own folder again)")
    if (checkpoint / MANIFEST).is_file():
        try:
            verify_checkpoint(checkpoint)
        except CheckpointError as err:
            raise CheckpointError(f"damaged checkpoint: {err}; export an earlier one with "
                                  "--checkpoint DIR") from err
    weights = checkpoint / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:  # truncated or corrupt, or unreadable
        raise CheckpointError(f"damaged checkpoint: {weights} cannot be read "
                              f"({type(err).__name__}: {err}); export an earlier one with "
                              "--checkpoint DIR") from err
    # a student is a stock model: no code of its own runs (trust_remote_code None: transformers
    # asks y/N on the terminal for a folder with code); both read before anything is written
    with model_folder_errors(init):
        student = AutoModel.from_config(AutoConfig.from_pretrained(init, trust_remote_code=False))
        extractor = AutoFeatureExtractor.from_pretrained(init, trust_remote_code=False)
    student_state = {k[len(STUDENT_PREFIX):]: v for k, v in state.items()
                     if k.startswith(STUDENT_PREFIX)}
    missing, unexpected = student.load_state_dict(student_state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint} does not match the student in {init}: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    heads: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(_OBJECTIVES_PREFIX):
            name, _, rest = key[len(_OBJECTIVES_PREFIX):].partition(".")
            heads.setdefault(name, {})[rest] = value
    config = {}
    if (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    if own:
        _replace_run_folders(out_dir, heads_dir, heads)
    elif overwrite:
        removed = [f"{out_dir.name}/{n}" for n in empty_folder(out_dir)]
        removed += [f"{heads_dir.name}/{n}" for n in empty_folder(heads_dir)]  # [] if inside
        if removed:
            logger.info("--overwrite: removed %s", name_list(removed))
    save_student(student, extractor, out_dir)
    save_heads(heads, _saved_head_configs(checkpoint), config.get("objectives", {}), heads_dir,
               {"sha256": weights_sha256(out_dir), "step": checkpoint_step(checkpoint),
                "checkpoint": checkpoint.resolve().name})
    logger.info("exported %s -> %s (heads in %s)", checkpoint, out_dir, heads_dir)
    return out_dir


