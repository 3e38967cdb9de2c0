"""What ``train-speaker`` loads before any work, with one-line errors: the frozen GE2E teacher
(:func:`load_teacher`), the training crops and the verification sets (:func:`load_inputs`;
their speakers must not be training speakers), all three at once (:func:`load_run_inputs`).
Unusable audio files are skipped and reported back (:mod:`.data`).
"""

from __future__ import annotations

from pathlib import Path

from robustdistill.messages import first_line

from .config import DataConfig, SpeakerKDConfig
from .data import (
    Crop,
    SpeakerDataError,
    Utterance,
    check_disjoint,
    load_fsdd,
    load_speaker_folders,
    load_train_crops,
)
from .ge2e import GE2E

__all__ = ["TeacherLoadError", "load_eval_sets", "load_inputs", "load_run_inputs",
           "load_teacher"]


def load_eval_sets(cfg: DataConfig, skipped: dict[str, dict[str, str]] | None = None
                   ) -> dict[str, list[Utterance]]:
    """The configured verification sets (``test_other``, ``fsdd``).

    Args:
        cfg: the data section.
        skipped: if given, ``skipped[set name]`` is filled with ``{path: reason}`` of the
            files skipped as unusable or shorter than ``cfg.min_test_length_s`` (each is also
            logged).

    Raises:
        FileNotFoundError: a configured folder that does not exist or holds no audio.
        SpeakerDataError: a set unusable once its bad files are skipped (:mod:`.data`).
    """
    skipped = {} if skipped is None else skipped
    sets = {}
    if cfg.test_other_dir:
        sets["test_other"] = load_speaker_folders(
            cfg.test_other_dir, skipped=skipped.setdefault("test_other", {}),
            min_length_s=cfg.min_test_length_s)
    if cfg.fsdd_dir:
        sets["fsdd"] = load_fsdd(cfg.fsdd_dir, cfg.fsdd_per_speaker,
                                 skipped=skipped.setdefault("fsdd", {}),
                                 min_length_s=cfg.min_test_length_s)
    return sets


class TeacherLoadError(ValueError):
    """A ``teacher`` file that is not GE2E weights (not a PyTorch file, or another model)."""


def load_teacher(path: str | Path | None) -> GE2E:
    """The frozen GE2E teacher (:meth:`GE2E.from_resemblyzer`), with one-line errors.

    Args:
        path: a GE2E ``pretrained.pt``; None: the installed resemblyzer package's.

    Raises:
        FileNotFoundError: no such file.
        TeacherLoadError: the file is not GE2E weights (the message names it).
    """
    if path is not None and not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"teacher file not found: {path} (a GE2E pretrained.pt; null: "
                                "the installed resemblyzer package's)")
    try:
        return GE2E.from_resemblyzer(None if path is None else Path(path).expanduser())
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - torch.load of a foreign file raises anything
        raise TeacherLoadError(f"teacher {path or '(resemblyzer)'} is not a GE2E weights file "
                               f"({type(err).__name__}: {first_line(err)[:200]})") from err


def load_inputs(cfg: SpeakerKDConfig, skipped: dict[str, dict[str, str]] | None = None
                ) -> tuple[list[Crop], dict[str, list[Utterance]]]:
    """The training crops and verification sets of ``cfg.data``, checked at start-up: the
    sets' speakers must not be training speakers.

    Args:
        cfg: the recipe.
        skipped: if given, filled with ``{set name: {path: reason}}`` (``train``,
            ``test_other``, ``fsdd``) of the files skipped as unusable.

    Returns:
        ``(crops, sets)``.

    Raises:
        FileNotFoundError: a configured folder that does not exist or holds no audio.
        SpeakerDataError: a set unusable once its bad files are skipped, or a verification
            speaker that is also a training speaker.
    """
    skipped = {} if skipped is None else skipped
    d = cfg.data
    crops = load_train_crops(d.train_dir, d.crop_seconds, d.crops_per_utterance,
                             skipped=skipped.setdefault("train", {}),
                             min_length_s=d.min_train_seconds, min_key=d.min_train_key)
    sets = load_eval_sets(d, skipped)
    speakers = {c.speaker for c in crops}
    for name, utts in sets.items():
        try:
            check_disjoint(speakers, [u.speaker for u in utts], name)
        except ValueError as err:
            raise SpeakerDataError(str(err)) from None
    return crops, sets


def load_run_inputs(cfg: SpeakerKDConfig
                    ) -> tuple[GE2E, list[Crop], dict[str, list[Utterance]],
                               dict[str, dict[str, str]]]:
    """What ``train`` and ``table`` work on: ``(teacher, crops, sets, skipped)``
    (:func:`load_teacher`, :func:`load_inputs`; ``skipped`` as filled by the latter).

    Raises:
        FileNotFoundError / TeacherLoadError / SpeakerDataError: as those two.
    """
    skipped: dict[str, dict[str, str]] = {}
    teacher = load_teacher(cfg.teacher)
    crops, sets = load_inputs(cfg, skipped)
    return teacher, crops, sets, skipped
