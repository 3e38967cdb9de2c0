"""A card is refused for weights its ``--run`` did not train (a mistyped ``--run``, or a
folder overwritten since): ``check_run_weights`` compares every tensor with the run's final
student, or with the checkpoint of ``--step``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import save_file

from robustdistill.publish.card_results import CardError
from robustdistill.publish.provenance import summarise_run
from robustdistill.publish.run_weights import STUDENT_PREFIX, check_run_weights


def _tensors(value: float) -> dict[str, torch.Tensor]:
    return {"encoder.w": torch.full((2, 3), value), "encoder.b": torch.arange(3.0)}


def _run(tmp_path, kind="ssl"):
    """A run: its final student (value 2), checkpoints of steps 30 (value 1) and 60 (value 2,
    with an objective's head beside the student's tensors)."""
    run_dir = tmp_path / "run"
    (run_dir / "student").mkdir(parents=True)
    config = {"objectives": {"layerwise": {}}} if kind == "ssl" else {
        "loss": {"gram_weight": 1.0}, "data": {"speech_dir": "x"}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "final_state.json").write_text(json.dumps({"step": 60}))
    save_file(_tensors(2.0), run_dir / "student" / "model.safetensors")
    for index, (step, value) in enumerate(((30, 1.0), (60, 2.0))):
        folder = run_dir / "checkpoints" / f"checkpoint_{index}"
        folder.mkdir(parents=True)
        state = {STUDENT_PREFIX + k: v for k, v in _tensors(value).items()}
        state["objectives.layerwise.proj.weight"] = torch.ones(2)
        save_file(state, folder / "model.safetensors")
        (folder / "checkpoint.json").write_text(json.dumps({"format": 1, "step": step,
                                                            "files": {}}))
    return run_dir


def _model(tmp_path, name, tensors):
    folder = tmp_path / name
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors")
    return folder


def test_the_prefix_is_the_one_export_reads():
    from robustdistill import export

    assert export.STUDENT_PREFIX == STUDENT_PREFIX


def test_the_runs_own_weights_pass_at_its_end_and_at_a_checkpoint(tmp_path):
    run_dir = _run(tmp_path)
    run = summarise_run(run_dir)
    assert check_run_weights(run_dir / "student", run) == (
        f"the card's weights are the final student of {run_dir} ({run_dir / 'student'})")
    copy = _model(tmp_path, "copy", _tensors(2.0))
    assert check_run_weights(copy, run).startswith("the card's weights are the final student")
    at_30 = _model(tmp_path, "step30", _tensors(1.0))
    assert check_run_weights(at_30, summarise_run(run_dir, step=30), step=30) == (
        f"the card's weights are the student of {run_dir / 'checkpoints' / 'checkpoint_0'}")


def test_other_weights_are_refused_and_a_checkpoints_step_is_named(tmp_path):
    run_dir = _run(tmp_path)
    run = summarise_run(run_dir)
    other = _model(tmp_path, "other", _tensors(3.0))
    with pytest.raises(CardError, match=(
            r"the weights in .*other are not the final student of .*run \(.*student\) "
            r"\(1 tensor differs, e.g. 'encoder.w'\): .*pass the run that trained them as "
            r"--run, and --step N if they are the export of checkpoint N")):
        check_run_weights(other, run)
    renamed = _model(tmp_path, "renamed", {"encoder.v": torch.full((2, 3), 2.0),
                                           "encoder.b": torch.arange(3.0)})
    with pytest.raises(CardError, match=r"2 tensors differ, e.g. 'encoder.v'"):
        check_run_weights(renamed, run)
    at_30 = _model(tmp_path, "step30", _tensors(1.0))
    with pytest.raises(CardError, match=r"--step 30: they are the student of .*checkpoint_0"):
        check_run_weights(at_30, run)  # the export of checkpoint 30, carded without --step
    with pytest.raises(CardError, match=r"are not the student of .*checkpoint_1"):
        check_run_weights(at_30, summarise_run(run_dir, step=60), step=60)


def test_any_checkpoint_of_the_step_may_hold_them(tmp_path):
    """A run resumed from checkpoint_0 (step 30) and trained past step 60 again has two
    checkpoints of step 60 with other weights: the export of either is the run's at --step 60
    (before, only the oldest was compared, and the card suggested a --step it then refused)."""
    run_dir = _run(tmp_path)
    again = run_dir / "checkpoints" / "checkpoint_2"
    again.mkdir()
    save_file({STUDENT_PREFIX + k: v for k, v in _tensors(5.0).items()},
              again / "model.safetensors")
    (again / "checkpoint.json").write_text(json.dumps({"format": 1, "step": 60, "files": {}}))
    run = summarise_run(run_dir, step=60)
    for value, folder in ((2.0, "checkpoint_1"), (5.0, "checkpoint_2")):
        model = _model(tmp_path, f"step60_{value:g}", _tensors(value))
        assert check_run_weights(model, run, step=60).endswith(folder)
    with pytest.raises(CardError, match=r"--step 60: they are the student of .*checkpoint_2"):
        check_run_weights(tmp_path / "step60_5", summarise_run(run_dir))
    with pytest.raises(CardError, match=r"not the student of any of .*checkpoint_1, .*checkpoint_2"):
        check_run_weights(_model(tmp_path, "other", _tensors(3.0)), run, step=60)


def test_the_runs_student_init_is_named_as_such(tmp_path):
    run_dir = _run(tmp_path)
    init = run_dir / "student_init"
    init.mkdir()
    save_file(_tensors(0.0), init / "model.safetensors")
    with pytest.raises(CardError, match=(
            r"are the undistilled student .*run started from \(.*student_init\), not the final "
            r"student .*: card them without --run")):
        check_run_weights(init, summarise_run(run_dir))


def test_what_cannot_be_checked_is_said_not_refused(tmp_path):
    run_dir = _run(tmp_path)
    other = _model(tmp_path, "other", _tensors(3.0))
    assert check_run_weights(other, summarise_run(run_dir, step=45), step=45) == (
        f"not checked: no checkpoint of step 45 under {run_dir}")
    assert check_run_weights(tmp_path, summarise_run(run_dir)) == (
        f"not checked: no {tmp_path / 'model.safetensors'}")
    se_run = _run(tmp_path / "se", kind="se")
    assert check_run_weights(other, summarise_run(se_run, step=30), step=30) == (
        "not checked: --step 30 of a 'se' run (only distill checkpoints are read)")
    shutil.rmtree(se_run / "student")
    assert check_run_weights(other, summarise_run(se_run)) == (
        f"not checked: {se_run} has no exported student "
        f"({se_run / 'student' / 'model.safetensors'})")
    shutil.rmtree(run_dir / "student")  # a run that did not export: its newest checkpoint
    run = summarise_run(run_dir)
    assert check_run_weights(_model(tmp_path, "final", _tensors(2.0)), run) == (
        f"the card's weights are the student of {run_dir / 'checkpoints' / 'checkpoint_1'}")
    shutil.rmtree(run_dir / "checkpoints")
    assert check_run_weights(other, run) == (
        f"not checked: {run_dir} has no student folder and no checkpoint")


def test_the_card_command_refuses_another_runs_weights_and_writes_nothing(tmp_path, capsys):
    from robustdistill.publish.card import card_main

    run_dir = _run(tmp_path)
    other = _model(tmp_path, "other", _tensors(3.0))
    (other / "config.json").write_text(json.dumps({"model_type": "wavlm"}))
    before = sorted(p.name for p in other.iterdir())
    with pytest.raises(SystemExit) as stop:
        card_main(["--model", str(other), "--run", str(run_dir), "--license", "mit",
                   "--no-speed"])
    assert stop.value.code == 2
    assert "are not the final student of" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == before


@pytest.mark.parametrize("kind", ["se", "speaker"])
def test_se_and_speaker_runs_check_the_final_student(tmp_path, kind):
    """Every trainer exports ``RUN/student``: a card of an SE or speaker run refuses weights that
    are not that student, and accepts a copy of it."""
    run_dir = _run(tmp_path, kind=kind)
    if kind == "speaker":
        (run_dir / "config.yaml").write_text(yaml.safe_dump(
            {"ig": {"n_steps": 2}, "student": {"hidden_size": 8}, "data": {"train_dir": "x"}}))
    run = summarise_run(run_dir)
    assert run.recipe == kind
    copy = _model(tmp_path, "copy", _tensors(2.0))
    assert check_run_weights(copy, run) == (
        f"the card's weights are the final student of {run_dir} ({run_dir / 'student'})")
    with pytest.raises(CardError, match=r"are not the final student .* \(1 tensor differs, e.g. "
                                        r"'encoder.w'\).*pass the run that trained them"):
        check_run_weights(_model(tmp_path, "other", _tensors(3.0)), run)
