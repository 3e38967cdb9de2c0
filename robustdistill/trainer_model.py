"""What a distillation trains (:mod:`robustdistill.trainer`): the student, built from the
teacher or loaded from ``student_init``, and for a resume of the run's own checkpoint checked
against the ``student_init/`` its first start wrote (its input convention kept); the
:class:`Distiller` that holds it with the objectives and their heads; and the AdamW parameter
groups, with and without weight decay.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import AutoFeatureExtractor, AutoModel

from .checkpoints import latest_checkpoint
from .config import ConfigError
from .objectives import DistillationInputs, LossTerm
from .startup_checks import student_differences
from .student import create_student, save_student, student_feature_extractor
from .upstream import (
    ModelFolderError,
    Upstream,
    disable_train_randomness,
    lengths_to_mask,
    model_folder_errors,
)

if TYPE_CHECKING:
    from .trainer import _Run

__all__ = ["Distiller", "write_student_init"]

# the trainer's lines, under its logger name
logger = logging.getLogger("robustdistill.trainer")


class Distiller(nn.Module):
    """The trainable part of a run: the student plus the objectives (which own the heads).

    ``forward(noisy (B, S), clean (B, S), lengths (B,), teacher: UpstreamOutput)`` runs the
    student on ``noisy`` and returns ``{objective: {term: LossTerm}}``.
    """

    def __init__(self, student: Upstream, objectives: dict[str, nn.Module]) -> None:
        super().__init__()
        self.student = student
        self.objectives = nn.ModuleDict(objectives)
        self.needs_cnn = any(o.needs_extract_features for o in objectives.values())

    def forward(self, noisy, clean, lengths, teacher) -> dict[str, dict[str, LossTerm]]:
        """Student on ``noisy (B, S)``; objectives on both outputs over their common frames."""
        student = self.student(noisy, lengths, return_extract_features=self.needs_cnn)
        frames = min(teacher.frame_mask.shape[1], student.hidden_states[-1].shape[1])
        common = torch.minimum(teacher.frame_lengths, student.frame_lengths).clamp(max=frames)
        inputs = DistillationInputs(teacher, student, lengths_to_mask(common, frames),
                                    clean, noisy, lengths)
        return {name: objective(inputs) for name, objective in self.objectives.items()}


def _param_groups(model: nn.Module, weight_decay: float, which: str = "matrices") -> list[dict]:
    """Two AdamW groups, with and without weight decay.

    ``which="matrices"``: decay on parameters with two or more dimensions (nanoGPT);
    ``"non_bias"``: on every parameter whose name does not contain ``bias`` (s3prl's
    ``get_grouped_parameters``, used by DistilHuBERT and RobustDistiller: fairseq's layer norms
    are named ``layer_norm``, not ``LayerNorm``, so their weights are decayed there too).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if which == "non_bias":
        decay = ["bias" not in n for n, _ in named]
    else:
        decay = [p.dim() >= 2 for _, p in named]
    return [
        {"params": [p for (_, p), d in zip(named, decay, strict=True) if d],
         "weight_decay": weight_decay},
        {"params": [p for (_, p), d in zip(named, decay, strict=True) if not d],
         "weight_decay": 0.0},
    ]


def _build_student(run: _Run):
    """``(student, feature_extractor, save)``: the run's student and its preprocessor
    (``student_init``, or made from the teacher); ``save``: whether
    ``OUTPUT_DIR/student_init/`` is to be written, once every start-up check has passed
    (not for a resume of this run, whose first start wrote it). Saving draws no random
    number and nothing before it changes the student's weights or config, so writing it
    after the checks changes no run.

    Raises:
        ConfigError: a student that does not fit the teacher, keeps LayerDrop, or differs
            from the one a resumed run was started with.
    """
    cfg = run.cfg
    if cfg.student_init:
        try:
            with model_folder_errors(cfg.student_init):  # a student is a stock model: no code
                student = AutoModel.from_pretrained(cfg.student_init, trust_remote_code=False)
                feature_extractor = AutoFeatureExtractor.from_pretrained(
                    cfg.student_init, trust_remote_code=False)  # None: transformers asks y/N
        except ModelFolderError as err:
            raise ConfigError(f"student_init {err}") from err
        if not cfg.student.keep_train_randomness:  # as create_student's students
            disable_train_randomness(student.config)
    else:
        try:  # e.g. a preset's CNN with more layers than the teacher's
            student = create_student(run.teacher, cfg.student)
        except ValueError as err:
            raise ConfigError(f"student: {err}") from err
        feature_extractor = _own_input_convention(
            run, student_feature_extractor(run.teacher, student.config))
    layerdrop = getattr(student.config, "layerdrop", 0.0) or 0.0
    if layerdrop > 0:  # transformers records no hidden state for a skipped layer
        raise ConfigError(
            f"the student keeps LayerDrop (layerdrop {layerdrop}, student.keep_train_"
            "randomness or student_init), and a skipped layer is left out of its "
            "hidden_states, so the layers the objectives read would shift or be missing: "
            "set student.keep_train_randomness false, or a student_init with layerdrop 0")
    saved = run.output_dir / "student_init"
    if _resuming_own_run(run) and (saved / "config.json").is_file():
        # the run's student, as its first start wrote it: kept, never replaced by another
        differ = student_differences(saved, student.config)
        if differ:
            raise ConfigError(
                f"{saved} holds this run's student, and the settings given make another "
                f"({'; '.join(differ)}): its checkpoints would not fit; resume with the "
                "run's student settings, or give another output_dir")
        return student, feature_extractor, False
    return student, feature_extractor, True  # the exported student's config, preprocessor


def _resuming_own_run(run: _Run) -> bool:
    """Whether ``training.resume_from`` resumes a checkpoint of this run's own folder
    (``latest`` / ``auto`` with one there, or a folder under ``output_dir/checkpoints``)."""
    where, own = run.cfg.training.resume_from, run.output_dir / "checkpoints"
    if not where:
        return False
    if where in ("latest", "auto"):
        return latest_checkpoint(own) is not None
    return Path(where).resolve().parent == own.resolve()


def _own_input_convention(run: _Run, made):
    """``made`` (the preprocessor :func:`student_feature_extractor` gives now), or, for a
    resume of this run's own checkpoint, the one its first start saved in
    ``student_init/`` when their normalisation or attention mask differ (a run created
    before 2026-12-06 from a teacher that normalises without a mask, e.g.
    ``facebook/wav2vec2-base``): a resumed run keeps the input convention its steps so far
    were trained with, with a warning."""
    saved = run.output_dir / "student_init"
    if not (saved / "preprocessor_config.json").is_file() or not _resuming_own_run(run):
        return made
    kept = AutoFeatureExtractor.from_pretrained(saved, trust_remote_code=False)
    before = (bool(kept.do_normalize), bool(getattr(kept, "return_attention_mask", False)))
    if before == (bool(made.do_normalize), bool(made.return_attention_mask)):
        return made
    if run.accelerator.is_main_process:
        logger.warning("resuming with the run's own student input convention (%s: "
                       "do_normalize %s, return_attention_mask %s), which this version "
                       "would now choose otherwise (%s, %s)", saved, *before,
                       made.do_normalize, made.return_attention_mask)
    return kept


def write_student_init(run: _Run) -> None:
    """Write ``OUTPUT_DIR/student_init/`` (the student as built, before any step) when the
    run is to write it, once: after every start-up check, a resume's included, so a run
    refused at start-up leaves none, and before a resumed checkpoint's weights load.

    Rank 0 writes; the other ranks read ``student_init/`` only in :func:`_build_student`,
    before ``accelerator.prepare``, whose DDP wrap is a collective (shapes gathered,
    parameters broadcast): every rank has read before rank 0 gets here (checked on 2
    processes with rank 1's reads delayed 16 s: rank 0 waited)."""
    if run._student_init is not None and run.accelerator.is_main_process:
        save_student(*run._student_init, run.output_dir / "student_init")
    run._student_init = None
