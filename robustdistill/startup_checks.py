"""Start-up checks of a ``distill`` run: what is refused (or warned about) before the first step.

Each check raises :class:`~robustdistill.config.ConfigError` with a one-line message naming the
key, the value and what is allowed (``robustdistill distill`` prints it as a usage error): the
output folder (:func:`check_output_dir`, before any model loads), missing model folders
(:func:`prepare_models`), crops shorter than a frame (:func:`check_crop_covers_a_frame`), a
student whose frames are not the teacher's (:func:`check_frame_grids`),
objectives that train nothing in the student (:func:`check_student_is_trained`), the loss
schedule against the objectives (:func:`loss_schedule`), and a resume's student or settings
against the run's own (:func:`student_differences`, :data:`RESUME_FREE`). Called by
:mod:`robustdistill.trainer`; it imports nothing of the trainer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import AutoConfig

from .audio import SAMPLE_RATE
from .config import ConfigError, DistillConfig, check_model_path
from .objectives import LossSchedule, build_loss_schedule
from .teachers import prepare_teacher
from .upstream import Upstream

logger = logging.getLogger(__name__)

__all__ = ["RESUME_FREE", "check_crop_covers_a_frame", "check_frame_grids", "check_output_dir",
           "missing_folders", "remove_new_empty_folders",
           "check_student_is_trained", "loss_schedule", "prepare_models", "student_differences"]


def prepare_models(cfg: DistillConfig) -> None:
    """Write the teacher when ``make_teacher`` asks for it and its folder is missing
    (:func:`~robustdistill.teachers.prepare_teacher`); then fail with a clear message for a
    local-looking teacher / student_init that is missing."""
    prepare_teacher(cfg.teacher, cfg.make_teacher)
    if cfg.student_init:
        check_model_path(cfg.student_init, "student_init",
                         f"robustdistill create-student --teacher {cfg.teacher} --out "
                         f"{cfg.student_init}")


def _min_samples_for_a_frame(upstream: Upstream) -> int:
    """The fewest samples for which ``upstream`` gives one output frame."""
    lengths = torch.arange(1, 4 * SAMPLE_RATE + 1)
    enough = (upstream.frame_lengths(lengths) >= 1).nonzero()
    return int(lengths[enough[0, 0]]) if len(enough) else 4 * SAMPLE_RATE + 1


def check_crop_covers_a_frame(data, teacher: Upstream, student: Upstream) -> None:
    """Crops (``data.max_length_s``) and kept utterances (``data.min_length_s``) must give
    both models at least one frame.

    Raises:
        ConfigError: naming the key, its value and the smallest allowed value.
    """
    need = max(_min_samples_for_a_frame(teacher), _min_samples_for_a_frame(student))
    for key in ("max_length_s", "min_length_s"):
        value = getattr(data, key)
        if value is not None and round(value * SAMPLE_RATE) < need:
            raise ConfigError(
                f"data.{key}={value} s is shorter than one frame of the teacher/student "
                f"({need} samples = {need / SAMPLE_RATE:.4f} s at {SAMPLE_RATE} Hz); "
                f"allowed: >= {need / SAMPLE_RATE:.4f}")


def check_frame_grids(teacher: Upstream, student: Upstream) -> None:
    """The objectives pair teacher frame ``t`` with student frame ``t`` (over the frames both
    have): both must be ``samples_per_frame`` apart and centred at the same sample
    (``first_frame_centre``), so that frame ``t`` of both covers the same audio. A student
    created from the teacher has the teacher's kernels and strides (only the channels of a
    ``pruned`` / ``fast`` CNN differ), so only a ``student_init`` can differ. A Whisper teacher
    on its own grid (``whisper_teacher_frames: native``, centred 200 samples before a
    wav2vec 2.0-style student's frames) is the documented exception: only its hop is checked.

    Raises:
        ConfigError: a student with another frame hop or centre, naming both grids.
    """
    grids = {who: (up.samples_per_frame, up.first_frame_centre)
             for who, up in (("teacher", teacher), ("student", student))}
    native_whisper = teacher.is_whisper and teacher.whisper_frames == "native"
    same = (grids["teacher"][0] == grids["student"][0] if native_whisper
            else grids["teacher"] == grids["student"])
    if not same:
        (t_hop, t_centre), (s_hop, s_centre) = grids["teacher"], grids["student"]
        raise ConfigError(
            f"the student's frames (every {s_hop} samples, frame 0 centred at sample "
            f"{s_centre}) are not the teacher's (every {t_hop}, centred at {t_centre}), and "
            "the objectives pair frame t of one with frame t of the other: give a "
            "student_init with the teacher's CNN kernels and strides, or leave student_init "
            "unset (the student is then made from the teacher)")


def check_student_is_trained(objectives: dict, num_layers: int, feature_grad_mult: float, *,
                             warn: bool = True) -> None:
    """Start-up check of what the objectives train in the student: the hidden states they read
    (``student_layers_read``, indices into the ``L + 1`` hidden states) train the layers up to
    the highest one; CNN features (``needs_extract_features``) train the CNN alone, and only with
    ``feature_grad_mult`` above 0. Warns when transformer layers above every read one get no
    gradient (they are exported as initialised) when ``warn`` (the main process).

    Raises:
        ConfigError: no objective sends a gradient into the student (only their heads would
            learn; the exported student would equal its initialisation).
    """
    slots = num_layers + 1
    read = {int(x) % slots for o in objectives.values() for x in o.student_layers_read()}
    cnn = sorted(name for name, o in objectives.items() if o.needs_extract_features)
    if not read and not (cnn and feature_grad_mult > 0):
        reads = (f"objectives {cnn} read only the CNN features and student.feature_grad_mult is "
                 "0" if cnn else "no objective reads the student's hidden states")
        raise ConfigError(f"{reads}: no gradient reaches the student, so only the objectives' "
                          "heads would learn and the exported student would equal its "
                          "initialisation; add an objective on a student layer (e.g. layerwise) "
                          "or set student.feature_grad_mult above 0")
    top = max(read, default=0 if cnn else None)
    if warn and top is not None and top < num_layers:
        logger.warning("student layers %d..%d are read by no objective (%s): they get no "
                       "gradient and are exported as initialised", top + 1, num_layers,
                       f"the highest hidden state read is {top}" if read
                       else f"{cnn} read only the CNN features")


#: Keys a resume may change without a word: where the run lives and whether and how far it
#: resumes (``max_steps``: a resume that trains on), its trackers, and what a SIGTERM does.
RESUME_FREE = ("output_dir", "training.resume_from", "training.max_steps", "training.report_to",
               "training.save_on_sigterm")


def student_differences(saved: Path, config) -> list[str]:
    """``"key saved -> now"`` for each student config value in which ``config`` (a
    ``transformers`` config) differs from the one saved in ``saved/config.json``
    (:data:`_NOT_THE_STUDENT` aside)."""
    old = AutoConfig.from_pretrained(saved, trust_remote_code=False).to_dict()
    new = config.to_dict()
    return [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
            if key not in _NOT_THE_STUDENT and old.get(key) != new.get(key)]


#: Config keys that say where a student was loaded from, by which library version and in which
#: storage dtype (set when it is saved), not what the student is.
_NOT_THE_STUDENT = ("_name_or_path", "transformers_version", "dtype", "torch_dtype")


def check_output_dir(output_dir: str | Path, resuming: bool = False) -> Path:
    """Create ``output_dir`` and prove it writable, before any model is loaded.

    A fresh run (``resuming`` false) into a folder that holds an earlier run's checkpoints is
    refused here, not at its first save, where it would fail after training for a while
    (checkpoints are never overwritten).

    Raises:
        ConfigError: naming ``output_dir`` and the operating system's reason, or the earlier
            run's checkpoints and how to continue that run or start elsewhere.
    """
    path = Path(output_dir).expanduser()
    earlier = sorted(p.name for p in (path / "checkpoints").glob("checkpoint_*") if p.is_dir())
    if earlier and not resuming:
        raise ConfigError(
            f"output_dir {str(path)!r} holds checkpoints of an earlier run ({', '.join(earlier)}); "
            "allowed: --resume (or --training.resume_from latest) to continue it, another "
            "output_dir, or remove that folder to start again")
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"output_dir {str(path)!r} cannot be written: "
                          f"{err.strerror or err}; allowed: a folder this user can create and "
                          "write") from err
    return path


def missing_folders(output_dir: str | Path) -> list[Path]:
    """``output_dir`` and those of its parents that do not exist yet, deepest first: the
    folders :func:`check_output_dir` will create (none when ``output_dir`` exists)."""
    path = Path(output_dir).expanduser().absolute()
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_new_empty_folders(created: list[Path]) -> None:
    """Remove the folders of ``created`` (deepest first, :func:`missing_folders`) that are
    still empty, after a run that made them failed: a failed start leaves no empty output
    folder behind. A folder holding anything (a file, a folder) is kept, and so are its
    parents; a folder that cannot be removed is left as it is (no error)."""
    for path in created:
        try:
            path.rmdir()  # only an empty folder: never anything a run or the user wrote
        except OSError:
            return


def loss_schedule(t, objectives: dict) -> tuple[LossSchedule, set[str]]:
    """The run's :class:`LossSchedule` and its task objectives, checked against the config.

    Raises:
        ConfigError: a task objective the run does not have, or a ``two_step`` / ``mixture``
            schedule without both a KD and a task objective.
    """
    schedule = build_loss_schedule(t.loss_schedule, t.kd_steps, t.mixture_alpha)
    tasks = set(t.task_objectives)
    unknown = sorted(tasks - set(objectives))
    if unknown:
        raise ConfigError(f"training.task_objectives {unknown} are not objectives of this run "
                          f"({sorted(objectives)})")
    if schedule.kind != "sum" and (not tasks or tasks == set(objectives)):
        raise ConfigError(f"training.loss_schedule {schedule.kind} needs task_objectives naming "
                          "some, not all, of the objectives (the rest are the KD losses)")
    return schedule, tasks
