"""Values a config or command line can get wrong are refused with a message that names them."""

from __future__ import annotations

import pytest

from downstream.conditions import parse_condition
from downstream.report import main as report_main
from downstream.tasks.asr.task import AsrHeadConfig
from robustdistill.objectives.tfckd import TFCalibratedKD
from robustdistill.speaker.config import LossConfig


@pytest.mark.parametrize("name", ["+snr5", "+reverb", "reverbsnr5", "snr", ""])
def test_malformed_conditions_are_refused(name):
    with pytest.raises(ValueError, match="condition"):
        parse_condition(name)


def test_well_formed_conditions_still_parse():
    assert parse_condition("reverb+snr5").name == "reverb+snr5"
    assert parse_condition("snr-5").snr_db == -5.0


def test_report_refuses_a_names_entry_without_an_equals_sign(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path / "results.json"), "--names", "student"])
    assert exit_info.value.code == 2
    assert "FOLDER=NAME" in capsys.readouterr().err


def test_asr_head_names_a_negative_projection():
    with pytest.raises(ValueError, match="project_dim"):
        AsrHeadConfig(project_dim=-1)


@pytest.mark.parametrize("field", ["teacher_layers", "student_layers"])
def test_tfckd_refuses_an_empty_layer_list_instead_of_taking_the_default(field):
    with pytest.raises(ValueError, match=f"{field} is empty"):
        TFCalibratedKD(teacher_hidden_size=4, teacher_num_layers=3, student_hidden_size=4,
                       **{field: []})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"tau": 0.0}, "loss.tau"), ({"tau": -1.0}, "loss.tau"),
    ({"map": -0.5}, "loss.map"), ({"ce": float("nan")}, "loss.ce"),
])
def test_speaker_loss_refuses_a_bad_temperature_or_negative_weight(overrides, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**overrides)
    LossConfig(tau=0.5, map=0.0)  # the edges that are allowed


def _evaluate(tmp_path, *extra):
    from robustdistill.cli import main

    config = tmp_path / "ks.yaml"
    config.write_text("data:\n  source:\n    root: /nonexistent-audio-root\n")
    return main(["evaluate", "--task", "ks", "--config", str(config), "--out",
                 str(tmp_path / "out"), "--conditions", "clean", *extra])


def test_evaluate_names_a_mistyped_upstream_folder_before_reading_any_audio(tmp_path, capsys):
    """The data root does not exist: the upstream's check must come first, in one line."""
    with pytest.raises(SystemExit) as exit_info:
        _evaluate(tmp_path, "--upstream", str(tmp_path / "studnet"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "upstream folder" in err and "studnet" in err and "Traceback" not in err


def test_evaluate_only_names_a_missing_or_unreadable_head_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _evaluate(tmp_path, "--upstream", "fbank", "--evaluate-only", str(tmp_path / "no.pt"))
    assert "head file not found" in capsys.readouterr().err
    from downstream.runner import RunOptions, load_head

    broken = tmp_path / "head.pt"
    broken.write_bytes(b"PK\x03\x04 not a whole zip")
    options = RunOptions(task="utterance_classification", upstream="fbank", config="x",
                         out=str(tmp_path))
    with pytest.raises(ValueError, match="cannot be read as a head file"):
        load_head(broken, None, None, None, options)


def test_evaluate_refuses_an_empty_task_config(tmp_path, capsys):
    from robustdistill.cli import main

    config = tmp_path / "empty.yaml"
    config.write_text("# nothing here\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--task", "ks", "--upstream", "fbank", "--config", str(config),
              "--out", str(tmp_path / "out"), "--conditions", "clean"])
    assert exit_info.value.code == 2
    assert "the config file is empty" in capsys.readouterr().err
