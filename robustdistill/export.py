"""Exporting a trained student as a stock ``transformers`` checkpoint, heads beside it.

``OUTPUT_DIR/student/`` holds ``config.json``, ``model.safetensors`` and
``preprocessor_config.json``: it loads with ``AutoModel.from_pretrained`` and
``AutoFeatureExtractor.from_pretrained``, no custom code. The objectives' heads (prediction
heads, enhancement head) are training-only and go to ``OUTPUT_DIR/heads/<objective>.safetensors``
with a ``<objective>.json`` that says how to rebuild them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from .checkpoints import MANIFEST, CheckpointError, latest_checkpoint, verify_checkpoint
from .student import save_student

logger = logging.getLogger(__name__)

__all__ = ["export_from_checkpoint", "export_run_student", "save_heads"]

_STUDENT_PREFIX = "student.model."
_OBJECTIVES_PREFIX = "objectives."


def save_heads(objective_states: dict[str, dict[str, torch.Tensor]], head_configs: dict[str, dict],
               options: dict[str, dict], out_dir: Path) -> Path:
    """Write each objective's head weights and rebuild recipe.

    Args:
        objective_states: objective name -> its ``state_dict``.
        head_configs: objective name -> ``Objective.head_config()``.
        options: objective name -> the options it was built with (from the run config).
        out_dir: the ``heads/`` folder.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, state in objective_states.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                  str(out_dir / f"{name}.safetensors"))
        recipe = {"objective": name, "options": options.get(name, {}),
                  "head_config": head_configs.get(name, {})}
        (out_dir / f"{name}.json").write_text(json.dumps(recipe, indent=2))
    return out_dir


def export_run_student(distiller, feature_extractor, output_dir: str | Path,
                       config: dict) -> Path:
    """Export the student and heads of a trained :class:`~robustdistill.trainer.Distiller`.

    Returns:
        ``output_dir / "student"``.
    """
    output_dir = Path(output_dir)
    student_dir = save_student(distiller.student.model, feature_extractor, output_dir / "student")
    objectives = dict(distiller.objectives.items())
    save_heads({n: o.state_dict() for n, o in objectives.items()},
               {n: o.head_config() for n, o in objectives.items()},
               config.get("objectives", {}), output_dir / "heads")
    logger.info("student exported to %s (heads in %s)", student_dir, output_dir / "heads")
    return student_dir


def export_from_checkpoint(run_dir: str | Path, checkpoint: str | Path | None = None,
                           out_dir: str | Path | None = None) -> Path:
    """Export the student of any saved checkpoint of a run, without loading the teacher.

    The checkpoint is checked against its manifest first (as ``--resume`` does): a damaged
    newest checkpoint is refused, naming it, not replaced by an older one silently; export an
    earlier one with ``checkpoint``.

    Args:
        run_dir: the run's ``output_dir`` (holds ``student_init/``, ``config.yaml`` and
            ``checkpoints/``).
        checkpoint: a checkpoint folder; default the newest complete one (with a manifest)
            under ``run_dir/checkpoints``, else, for runs from before manifests, the newest
            ``checkpoint_N`` folder.
        out_dir: where to write; default ``run_dir/student`` for the newest checkpoint, and
            ``run_dir/exports/<checkpoint name>/student`` for a ``checkpoint`` given, so that
            an earlier checkpoint never replaces the run's final student (and its card).

    Returns:
        The student folder; heads go to ``<out_dir>/../heads``.

    Raises:
        FileNotFoundError: no ``run_dir``, no ``student_init``, no checkpoint, or a
            checkpoint folder without ``model.safetensors``.
        CheckpointError: (a ``RuntimeError``) the checkpoint is damaged (a file missing or of
            another size than its manifest says, or weights that cannot be read), or its
            student weights do not match the student config.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    init = run_dir / "student_init"
    if not (init / "config.json").is_file():
        raise FileNotFoundError(f"{init} has no config.json: is {run_dir} a distillation run?")
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
    student = AutoModel.from_config(AutoConfig.from_pretrained(init))
    student_state = {k[len(_STUDENT_PREFIX):]: v for k, v in state.items()
                     if k.startswith(_STUDENT_PREFIX)}
    missing, unexpected = student.load_state_dict(student_state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint} does not match the student in {init}: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    if out_dir is None:
        out_dir = (run_dir / "exports" / Path(checkpoint).resolve().name / "student"
                   if chosen else run_dir / "student")
    out_dir = Path(out_dir)
    save_student(student, AutoFeatureExtractor.from_pretrained(init), out_dir)
    heads: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(_OBJECTIVES_PREFIX):
            name, _, rest = key[len(_OBJECTIVES_PREFIX):].partition(".")
            heads.setdefault(name, {})[rest] = value
    config = {}
    if (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    save_heads(heads, {}, config.get("objectives", {}), out_dir.parent / "heads")
    logger.info("exported %s -> %s", checkpoint, out_dir)
    return out_dir
