"""Whether a ``train-se`` resume continues the run in its ``output_dir``: settings that would change
the batches its steps see (seed, batch size, ``data``), or a student or loss heads its
checkpoint's weights do not fit, or a shorter run or another process count are refused
(:class:`ResumeSettingsError`, before any work); other changes are returned, to be logged and
recorded in ``environment.json`` (:func:`_resume_changes`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from downstream.config import from_dict

from ..config import ConfigError
from ..run_settings import saved_config_changes
from .config import SETrainConfig, StudentOptions
from .losses import LossConfig, SELoss, _widths
from .run_checkpoints import _newest_checkpoint
from .students import GRUMaskStudent

__all__ = ["ResumeSettingsError"]


class ResumeSettingsError(ConfigError):
    """A resume that would not continue the run: its checkpoint was trained with another seed,
    batch size or ``data`` setting (:data:`_RESUME_REFUSED`: the batches would change), for
    another student or other loss heads (its weights would not fit), or is past
    ``training.max_steps`` (a run cannot be shortened)."""


#: Keys that a resume may change without a word: where the run lives, its scan cache, CPU
#: threads, trackers, the cap on the kept teacher outputs of the validation (it changes no
#: score), and ``max_steps`` (a resume that trains on; below the checkpoint's step it is
#: refused).
_RESUME_FREE = ("output_dir", "data.scan_cache_dir", "training.threads", "training.report_to",
                "training.max_steps", "training.save_on_sigterm", "validation.teacher_cache_mb")


#: Keys (``section.`` for a whole section, :data:`_RESUME_FREE` aside) that fix which batches
#: the steps see: each batch is a pure function of ``(seed, step, rank)`` and these settings
#: (the speech, noise and RIR files, crop length, SNR range, reverberation, target, pool), so a
#: resume that changes one would draw other batches (other crops, noises, SNRs, rooms) from its
#: first step on than the run it continues, and present that mixture as one run. Refused, as
#: ``distill`` refuses its seed, batch, crop and item count. Any other key (a learning rate, a
#: loss weight or schedule, the logging and checkpoint cadence) only changes what the steps do
#: with those batches: allowed, said and kept in ``environment.json``'s record of the resume
#: (and on the card), as ``distill`` allows it (e.g. a lower learning rate after a run stopped
#: on non-finite steps).
_RESUME_REFUSED = ("seed", "training.batch_size", "data.")


#: ``data`` keys a resume may change with a warning, as ``distill`` allows its folders: the
#: data moved to another place (another machine, another mount) is the usual reason, and a
#: folder named by another path or a link is no change at all. ``data.rir_check`` goes with
#: ``data.rir_dir``: like a folder given other files, it changes which of that folder's files
#: are rooms (only when the check refused one), as ``distill`` allows ``augmentation.rir_check``.
_RESUME_FOLDERS = ("data.speech_dir", "data.noise_dir", "data.rir_dir", "data.rir_check")


#: The keys of the validation (:mod:`robustdistill.se.validation`): never a change of the
#: batches; while validation is off (no ``validation.speech_dir`` before or now) no change at all,
#: so that a run started before these keys existed resumes without a word about them.
_VALIDATION_KEYS = ("validation.", "training.eval_every", "training.eval_at_start")


def _key(change: str) -> str:
    """The dotted key of a :func:`~robustdistill.run_settings.config_changes` line."""
    return change.split(" ", 1)[0]


def _resume_changes(cfg: SETrainConfig, num_processes: int) -> list[str]:
    """How ``cfg``, run on ``num_processes`` processes, differs from the ``config.yaml`` of the
    run it resumes (``[]`` for a fresh start), apart from :data:`_RESUME_FREE`.

    Raises:
        ResumeSettingsError: (one line) a key of :data:`_RESUME_REFUSED` differs (but
            :data:`_RESUME_FOLDERS`: a warning; each named,
            ``old -> new``, with what is allowed); a ``student`` key differs and so do the
            student's parameter shapes (the checkpoint's weights would not fit: another width
            or depth; a ``min_gain_db``, or a ``ratio`` spelt as its ``hidden_size``, is only a
            change); a ``loss`` key differs and so do the loss heads' parameter shapes (the
            cosine bottlenecks or TF-CKD projections: a KD term turned on or off, other pairs);
            or the checkpoint is past ``training.max_steps`` (its weights would be saved as a
            shorter run's); or it was saved on another number of processes (each rank draws
            its own batches; checkpoints before 2026-12-07 do not record it).
        DamagedCheckpointError: the newest checkpoint is altered (see
            :func:`_newest_checkpoint`).
    """
    out = Path(cfg.output_dir)
    newest = _newest_checkpoint(out / "checkpoints")
    if newest is None:
        return []
    step = int(newest[1]["step"])
    if step > cfg.training.max_steps:
        raise ResumeSettingsError(
            f"{newest[0]} is at step {step}, past training.max_steps {cfg.training.max_steps}: "
            "a resume cannot shorten a run (its student and final_state.json would say "
            f"{cfg.training.max_steps} steps); allowed: training.max_steps >= {step}, or "
            "another output_dir")
    before = newest[1].get("num_processes", num_processes)
    if before != num_processes:
        raise ResumeSettingsError(
            f"{newest[0]} was trained on {before} process(es), this resume runs "
            f"{num_processes}: each rank draws its own batches from (seed, step, rank), so "
            f"the steps would see other batches; resume on {before}, or give another output_dir")
    changes = saved_config_changes(out, cfg.to_dict(), _RESUME_FREE)
    if not cfg.validation.enabled and "validation.speech_dir" not in map(_key, changes):
        changes = [c for c in changes if not _key(c).startswith(_VALIDATION_KEYS)]
    refused = [c for c in changes if _key(c) not in _RESUME_FOLDERS and (
        _key(c) in _RESUME_REFUSED
        or _key(c).startswith(tuple(k for k in _RESUME_REFUSED if k.endswith("."))))]
    if refused:
        raise ResumeSettingsError(
            f"{newest[0]} was trained with other settings that fix its batches (the crops, "
            f"noises, SNRs and rooms each step draws); resuming would not continue that run: "
            f"{'; '.join(refused)} (allowed: the run's seed, training.batch_size and data "
            "settings, with other changes such as the data folders' places, a learning rate, "
            "a loss weight or a larger training.max_steps said and recorded in "
            "environment.json; or another output_dir)")
    for section in ("student", "loss"):
        differ = [c for c in changes if c.startswith(f"{section}.")]
        if differ and not _same_shapes(out, cfg, section):
            what = "another student" if section == "student" else "other loss heads"
            raise ResumeSettingsError(
                f"output_dir {str(out)!r} holds a run of {what} ({'; '.join(differ)}): "
                f"{newest[0].name} cannot be loaded into this one; resume with the run's "
                f"{section} settings, or give another output_dir")
    return changes


def _parameter_shapes(student: StudentOptions, loss: LossConfig
                      ) -> dict[str, dict[str, tuple[int, ...]]]:
    """``{"student": {name: shape}, "loss": {name: shape}}`` of the modules a checkpoint holds
    (the student, and the loss heads: cosine bottlenecks, TF-CKD projections).

    Raises:
        ValueError: settings that build no student or no loss heads.
    """
    model = GRUMaskStudent(student.build())
    heads = SELoss(loss, *_widths(model.config, loss.teacher))
    return {name: {k: tuple(v.shape) for k, v in module.state_dict().items()}
            for name, module in (("student", model), ("loss", heads))}


def _same_shapes(out: Path, now: SETrainConfig, section: str) -> bool:
    """Whether the run of ``out/config.yaml`` and ``now`` have the same parameter names and
    shapes in ``section`` (``"student"`` or ``"loss"``: its heads); False when the saved
    settings cannot be built."""
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text())
        before = _parameter_shapes(from_dict(StudentOptions, saved["student"]),
                                   from_dict(LossConfig, saved["loss"]))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return False
    return before[section] == _parameter_shapes(now.student, now.loss)[section]
