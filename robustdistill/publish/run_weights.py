"""Whether a model folder holds the weights its ``--run`` trained, so that a card never
describes another run's training (a mistyped ``--run``, or a folder overwritten since).

Every trainer saves its student with ``save_pretrained`` at the end (``<run>/student``), so the
final weights of a ``distill``, ``train-se`` or ``train-speaker`` run are checked. A
``distill`` run also keeps the student in every checkpoint (``<run>/checkpoints/checkpoint_N``,
the student's tensors under :data:`robustdistill.checkpoints.STUDENT_PREFIX`), so the weights of
any step can be read without building a model; the SE trainer's checkpoints are not read
(``--step`` there is not checked). A ``train-speaker`` run that exported no student (stopped,
or not finished) is checked against all its checkpoints, and the card says which one the
weights are (:func:`speaker_checkpoint_weights`). The comparison is exact (every tensor's name
and bytes).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..checkpoints import STUDENT_PREFIX, checkpoint_step, list_checkpoints
from .card_results import CardError
from .provenance import RunSummary, read_run_result

__all__ = ["BEST_STUDENT", "STUDENT_PREFIX", "best_validation_record", "check_run_weights",
           "is_best_student", "speaker_checkpoint_weights",
           "stale_speaker_student"]  # STUDENT_PREFIX: re-exported

logger = logging.getLogger(__name__)


def _checkpoints_of_step(run_dir: Path, step: int) -> list[Path]:
    """The complete checkpoints whose manifest records ``step``, oldest first: more than one
    when the run was resumed from an earlier checkpoint and trained past ``step`` again."""
    return [f for f in list_checkpoints(run_dir / "checkpoints") if checkpoint_step(f) == step]


def check_run_weights(model_dir: str | Path, run: RunSummary, step: int | None = None) -> str:
    """Check that ``model_dir/model.safetensors`` holds the student ``run`` trained, at its end
    or at checkpoint ``step``.

    The reference: without ``step``, the run's own export ``<run>/student`` (for a
    ``train-se`` run, its ``<run>/best_student`` too: the best validation step's), else (a
    ``distill`` run that did not export) its newest checkpoint; with ``step`` (``distill``
    runs only), the checkpoints whose manifest records that step (any of them: a run resumed
    from an earlier checkpoint has two of one step).

    Args:
        model_dir: the student folder the card is for.
        run: the run given as ``--run`` (:func:`~robustdistill.publish.provenance.
            summarise_run`).
        step: ``--step``, the training step of the weights when they are a checkpoint's.

    A ``train-speaker`` run that exported no student (stopped at a non-finite step,
    ``stopped.json``; stopped by a SIGTERM; not finished) has only its checkpoints: the
    weights must be one of them (:func:`speaker_checkpoint_weights`).

    Returns:
        What was checked, for the log (``"not checked: ..."`` when nothing could be: no
        ``model.safetensors`` in ``model_dir``, no reference weights in the run, or ``step``
        with an SE or speaker run).

    Raises:
        CardError: the weights differ from the reference (another tensor, name or value); a
            ``train-speaker`` run without ``RUN/student`` whose complete checkpoints hold
            none of them, or that saved none (:func:`speaker_checkpoint_weights`).
    """
    model_dir = Path(model_dir)
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        return f"not checked: no {weights}"
    exported = run.run_dir / "student" / "model.safetensors"
    if run.recipe != "ssl":
        if step is not None:
            return (f"not checked: --step {step} of a {run.recipe!r} run (only distill "
                    "checkpoints are read)")
        if is_best_student(model_dir, run):
            return (f"the card's weights are the best validation student of {run.run_dir} "
                    f"(step {best_validation_record(run)['step']})")
        if run.recipe == "se" and model_dir.resolve() == (run.run_dir / BEST_STUDENT).resolve():
            raise CardError(_stale_best_student(model_dir, run))
        if (found := speaker_checkpoint_weights(model_dir, run)) is not None:
            return found[1]  # a train-speaker run that exported no student: a checkpoint's
        if not exported.is_file():
            return f"not checked: {run.run_dir} has no exported student ({exported})"
        what = f"the final student of {run.run_dir} ({exported.parent})"
        if exported.resolve() != weights.resolve():
            from safetensors.torch import load_file

            differ = _differing(load_file(str(weights)), load_file(str(exported)))
            if differ:
                raise _other_weights(model_dir, what, differ)
        return f"the card's weights are {what}"
    if step is None:
        if exported.is_file():
            reference, what = exported, f"the final student of {run.run_dir} ({exported.parent})"
        else:
            found = list_checkpoints(run.run_dir / "checkpoints")
            if not found:
                return f"not checked: {run.run_dir} has no student folder and no checkpoint"
            reference, what = found[-1] / "model.safetensors", f"the student of {found[-1]}"
    else:
        candidates = _checkpoints_of_step(run.run_dir, step)
        if not candidates:
            return f"not checked: no checkpoint of step {step} under {run.run_dir}"
        reference, what = (candidates[-1] / "model.safetensors",
                           f"the student of {candidates[-1]}")
    if reference.resolve() == weights.resolve():
        return f"the card's weights are {what}"
    from safetensors.torch import load_file

    mine = load_file(str(weights))
    differ = _differing(mine, _student_tensors(reference))
    if differ and step is not None:  # another checkpoint of that step may hold them
        for folder in candidates[:-1]:
            if not _differing(mine, _student_tensors(folder / "model.safetensors")):
                return f"the card's weights are the student of {folder}"
        if len(candidates) > 1:
            what = f"the student of any of {', '.join(str(f) for f in candidates)}"
    if differ:
        init = run.run_dir / "student_init" / "model.safetensors"
        if init.is_file() and not _differing(mine, _student_tensors(init)):
            raise CardError(
                f"the weights in {model_dir} are the undistilled student {run.run_dir} started "
                f"from ({init.parent}), not {what}: card them without --run (no training to "
                "describe), or card the trained student")
        hint = "--step N if they are the export of checkpoint N"
        if step is None:  # name the checkpoint they are, when they are one
            for folder in list_checkpoints(run.run_dir / "checkpoints"):
                if not _differing(mine, _student_tensors(folder / "model.safetensors")):
                    hint = (f"--step {checkpoint_step(folder)}: they are the student of "
                            f"{folder}")
                    break
        raise _other_weights(model_dir, what, differ, hint)
    return f"the card's weights are {what}"


def speaker_checkpoint_weights(model_dir: str | Path, run: RunSummary
                               ) -> tuple[Path, str] | None:
    """The complete checkpoint of a ``train-speaker`` run without an exported student
    (``RUN/student``: stopped at a NaN/Inf step, by a SIGTERM, or not finished) whose student
    the weights in ``model_dir`` are.

    The embedder's tensors as the export writes them (``model_dir/model.safetensors`` of a
    :class:`~robustdistill.speaker.models.SpeakerEmbedder`: the encoder, pooling and
    embedding, named as in the training model; an upstream's own weights are in
    ``upstream/*.safetensors``, compared as ``encoder.upstream.model.NAME``) must equal, name
    for name and bit for bit, those of one of the run's complete checkpoints
    (``RUN/checkpoints/epoch_N``, ``epoch_N_batch_B``: their ``model.safetensors`` also holds
    the training-only classifier, projection and map head, which are left out); the newest
    that does is the one. ``robustdistill train-speaker export --run RUN --checkpoint NAME``
    writes such a folder (:mod:`robustdistill.speaker.export`). A run whose ``student/``
    predates a resume with more epochs (:func:`stale_speaker_student`) is checked so too.

    Returns:
        ``(checkpoint folder, what was checked, for the log)``; None when the check is not
        this one's: ``run`` is not a ``train-speaker`` run, it exported ``RUN/student``
        (:func:`check_run_weights` compares with that), or ``model_dir`` holds no
        ``model.safetensors``.

    Raises:
        CardError: (one line) the run saved no checkpoint (stopped at a NaN/Inf step before
            its first, or none is complete), the weights equal no complete checkpoint's
            (the line names the command that exports one), or, for a run stopped at a
            NaN/Inf step, the checkpoint ``stopped.json`` names is gone and the weights equal
            no other; the weights are a stale ``student/`` (:func:`stale_speaker_student`).
    """
    model_dir = Path(model_dir)
    weights = model_dir / "model.safetensors"
    stale = stale_speaker_student(run)
    if run.recipe != "speaker" or not weights.is_file() or (
            (run.run_dir / "student" / "model.safetensors").is_file() and stale is None):
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    # imported here: the speaker package loads accelerate and transformers
    from robustdistill.speaker.models import EMBEDDER_PARTS
    from robustdistill.speaker.run_folder import complete_checkpoints

    stopped = run.stopped if run.stopped.get("reason") == "non-finite" else {}
    where = (f"{run.run_dir} stopped at epoch {stopped.get('epoch', '?')}, batch "
             f"{stopped.get('batch', '?')} (a NaN/Inf step, {run.run_dir / 'stopped.json'})")
    saved = stopped.get("checkpoint")
    if stopped and (not isinstance(saved, str) or not saved):
        raise CardError(f"{where} before its first checkpoint: it saved no trained weights, so "
                        f"those in {model_dir} are not its student; card them with the run that "
                        "trained them as --run, or without --run")
    checkpoints = complete_checkpoints(run.run_dir)
    # the record names the folder as the run was given it (relative to where it ran)
    gone = run.run_dir / "checkpoints" / Path(saved).name if stopped else None
    gone = gone if gone is not None and not gone.is_dir() else None
    if gone is not None and not checkpoints:
        raise CardError(f"{where}; the checkpoint holding its last saved weights, {gone}, is "
                        "gone: the card cannot say which weights these are")
    if not checkpoints:
        raise CardError(f"{run.run_dir} holds no complete checkpoint and no exported student "
                        f"(RUN/student): no weights of it were saved, so those in {model_dir} "
                        "are not its student; card them with the run that trained them as "
                        "--run, or without --run")
    try:
        mine = _exported_tensors(model_dir)
    except (SafetensorError, OSError) as err:
        raise CardError(f"{weights} cannot be read ({err})") from None
    nearest = None  # the checkpoint whose tensors differ least (the newer of a tie), those
    for folder in reversed(checkpoints):  # the newest first
        try:
            tensors = load_file(str(folder / "model.safetensors"))
        except (SafetensorError, OSError) as err:
            logger.warning("%s cannot be read (%s): not compared with the card's weights",
                           folder / "model.safetensors", err)
            continue
        exported = {k: v for k, v in tensors.items() if k.startswith(EMBEDDER_PARTS)}
        differ = _differing(mine, exported) if exported else ["(no embedder tensors)"]
        if not differ:
            which = ("the newest checkpoint of a run that stopped early"
                     if stopped and folder.name == Path(saved).name else
                     f"{'the newest' if folder == checkpoints[-1] else 'a'} checkpoint of a run "
                     + ("that exported no final student" if stale is None else
                        f"resumed after it exported RUN/student ({_epochs(stale[0])})"))
            return folder, f"the card's weights are the student of {folder}, {which}"
        if nearest is None or len(differ) < len(nearest[1]):
            nearest = (folder, differ)
    names = ", ".join(f.name for f in checkpoints)
    if stale is not None and _is_student(mine, run.run_dir / "student"):
        raise CardError(f"the weights in {model_dir} are {run.run_dir / 'student'}, the student "
                        f"{run.run_dir} exported when it finished {_epochs(stale[0])}; the run "
                        f"was resumed since (its newest checkpoint is {stale[1].name}), and its "
                        "config.yaml and metrics.jsonl describe that longer training: the card "
                        "would mix the two; card the student once the resumed run finishes, or "
                        "card the student of a checkpoint, written by robustdistill "
                        f"train-speaker export --run {run.run_dir} --checkpoint NAME --out DIR")
    if gone is not None:
        raise CardError(f"{where}; the checkpoint holding its last saved weights, {gone}, is "
                        f"gone, and the weights in {model_dir} are none of its other "
                        f"checkpoints' ({names}): the card cannot say which weights these are")
    how = "stopped at a NaN/Inf step" if stopped else "was stopped or has not finished"
    how += " and exported no final student" if stale is None else (
        f", resumed after it exported RUN/student ({_epochs(stale[0])})")
    if nearest is None:
        found = "none of them can be read"
    else:
        count = "1 tensor differs" if len(nearest[1]) == 1 else \
            f"{len(nearest[1])} tensors differ"
        found = f"the nearest, {nearest[0].name}: {count}, e.g. {nearest[1][0]!r}"
    raise CardError(f"the weights in {model_dir} are not the student of any complete checkpoint "
                    f"of {run.run_dir} ({names}), a run that {how} ({found}): the card would "
                    "describe another training; pass the run that trained them as --run, or "
                    "card the student of one of these checkpoints, written by robustdistill "
                    f"train-speaker export --run {run.run_dir} --checkpoint NAME --out DIR")


#: The folder of a ``train-se`` run that ``validation.keep_best`` exports the best validation
#: step's student to (:data:`robustdistill.se.validation.BEST_STUDENT`).
BEST_STUDENT = "best_student"


def best_validation_record(run: RunSummary) -> dict | None:
    """The best validation of a ``train-se`` run
    (:class:`~robustdistill.se.validation.BestValidation`'s record): ``final_state.json``'s
    ``best_validation``, or, for a run without ``final_state.json`` (stopped by NaN/Inf steps,
    or killed), its newest checkpoint's ``best_validation.json``; None when neither names a
    step and the student's ``parameter_sha256``."""
    import json

    record = run.final_state.get("best_validation")
    if not run.final_state:
        found = list_checkpoints(run.run_dir / "checkpoints")
        path = found[-1] / "best_validation.json" if found else None
        if path is not None and path.is_file():
            record = json.loads(path.read_text())
    if not isinstance(record, dict) or record.get("step") is None \
            or not isinstance(record.get("parameter_sha256"), str):
        return None
    return record


def _se_parameter_hash(model_dir: Path) -> str | None:
    """:func:`robustdistill.se.train.parameter_hash` of the SE student saved in
    ``model_dir``; None when it does not load as one."""
    from ..se.students import GRUMaskStudent
    from ..se.train import parameter_hash

    try:
        return parameter_hash(GRUMaskStudent.from_pretrained(model_dir))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None


def is_best_student(model_dir: str | Path, run: RunSummary) -> bool:
    """Whether ``model_dir`` holds the student of ``run``'s best validation: a ``train-se``
    run with a best validation step (:func:`best_validation_record`), and weights whose
    parameter SHA-256 is the record's (so a ``best_student/`` left from an earlier best, or
    exported by a killed run after its newest checkpoint, is not)."""
    record = best_validation_record(run)
    if run.recipe != "se" or record is None \
            or not (Path(model_dir) / "model.safetensors").is_file():
        return False
    return _se_parameter_hash(Path(model_dir)) == record["parameter_sha256"]


def _stale_best_student(model_dir: Path, run: RunSummary) -> str:
    """The refusal of a ``best_student/`` whose weights are not the recorded best."""
    record = best_validation_record(run)
    if record is None:
        return (f"{model_dir} cannot be checked: {run.run_dir} records no best validation step "
                "(in final_state.json or its newest checkpoint: a run without validation, or "
                "none scored)")
    return (f"the weights in {model_dir} are not the best validation student that "
            f"{run.run_dir} records (step {record['step']}, "
            f"parameter_sha256 {record['parameter_sha256'][:12]}...): a student left from an "
            "earlier best, or exported by a killed run after its newest checkpoint; run the "
            "same train-se command again with validation.keep_best true to export the "
            "recorded best, or card student/")


def _other_weights(model_dir: Path, what: str, differ: list[str],
                   hint: str | None = None) -> CardError:
    """The refusal of weights that are not ``what`` (``differ``: the tensors that differ)."""
    count = "1 tensor differs" if len(differ) == 1 else f"{len(differ)} tensors differ"
    return CardError(f"the weights in {model_dir} are not {what} ({count}, e.g. "
                     f"{differ[0]!r}): the card would describe another training; pass the run "
                     f"that trained them as --run" + (f", and {hint}" if hint else ""))


def _student_tensors(path: Path) -> dict:
    """The student's tensors in a saved student's or a checkpoint's ``model.safetensors``."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if path.parent.parent.name != "checkpoints":
        return tensors
    return {k[len(STUDENT_PREFIX):]: v for k, v in tensors.items() if k.startswith(STUDENT_PREFIX)}


def _exported_tensors(folder: Path) -> dict:
    """The tensors of an exported speaker student (``SpeakerEmbedder.save_pretrained``)
    named as in the training model's checkpoint: ``model.safetensors``, and an upstream
    student's ``upstream/*.safetensors`` (``save_pretrained``: its model's own names) as
    ``encoder.upstream.model.NAME`` (a folder without it differs from such a checkpoint).

    Raises:
        safetensors.SafetensorError, OSError: a file cannot be read."""
    from safetensors.torch import load_file

    from robustdistill.speaker.models import _UPSTREAM_DIR, _UPSTREAM_KEYS

    tensors = load_file(str(folder / "model.safetensors"))
    for part in sorted((folder / _UPSTREAM_DIR).glob("*.safetensors")):
        tensors.update({f"{_UPSTREAM_KEYS}model.{k}": v for k, v in load_file(str(part)).items()})
    return tensors


def stale_speaker_student(run: RunSummary) -> tuple[int, Path] | None:
    """``(N, newest)`` when the ``RUN/student`` of a ``train-speaker`` run is that of an
    earlier finish: ``result.json`` (written with it) logged ``N`` epochs, and the run,
    resumed with more epochs since, saved a complete checkpoint ``newest`` past epoch ``N``
    (``epoch_M`` with M > N, or ``epoch_N_batch_B``); None otherwise (no student, no readable
    ``result.json``, or none past it)."""
    from robustdistill.speaker.run_folder import newest_complete_checkpoint

    if run.recipe != "speaker" or not (run.run_dir / "student" / "model.safetensors").is_file():
        return None
    try:  # the card's one reader; a damaged file was refused when the run was summarised
        epochs = (read_run_result(run.run_dir) or {}).get("epochs")
    except ValueError:
        return None
    newest = newest_complete_checkpoint(run.run_dir) if isinstance(epochs, list) else None
    if newest is None or (newest[1], newest[2]) <= (len(epochs), 0):
        return None
    return len(epochs), newest[0]


def _is_student(tensors: dict, student: Path) -> bool:
    """Whether ``tensors`` (:func:`_exported_tensors`) are those of the exported ``student``
    folder; False when it cannot be read."""
    from safetensors import SafetensorError

    try:
        return not _differing(tensors, _exported_tensors(student))
    except (SafetensorError, OSError):
        return False


def _epochs(count: int) -> str:
    """``"1 epoch"``, ``"3 epochs"``."""
    return f"{count} epoch{'' if count == 1 else 's'}"


def _differing(a: dict, b: dict) -> list[str]:
    """Names of the tensors not in both, else of those with other shapes or values."""
    import torch

    return sorted(set(a) ^ set(b)) or [
        k for k in a if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
