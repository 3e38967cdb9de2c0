"""Student shape values are checked when the config is built (``create-student`` and
``distill``); ``create-student``'s path mistakes and YAML syntax errors in a recipe end in one
line naming the key, path or line."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustdistill import cli
from robustdistill.config import ConfigError, load_config, parse_overrides, read_yaml
from robustdistill.student import StudentConfig, _student_config


@pytest.mark.parametrize("key", ["hidden_size", "num_attention_heads", "intermediate_size"])
@pytest.mark.parametrize("value", [0, -4])
def test_a_shape_value_below_one_is_refused_naming_the_key(key, value):
    with pytest.raises(ValueError, match=rf"student\.{key} must be >= 1, or null .*got {value}"):
        StudentConfig(**{key: value})


def test_zero_heads_with_a_width_is_a_value_error_not_a_zero_division():
    with pytest.raises(ValueError, match="student.num_attention_heads must be >= 1"):
        StudentConfig(hidden_size=64, num_attention_heads=0)


@pytest.mark.parametrize("field, value, match", [
    ("conv_dim", [0] * 7, "conv_dim needs channel counts >= 1"),
    ("conv_dim", [], "conv_dim needs channel counts >= 1"),
    ("init_layers", [-1, 0], "init_layers are 0-based"),
])
def test_bad_cnn_and_layer_lists_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        StudentConfig(**{field: value})


def test_none_still_means_the_teachers_shape(tiny_wavlm_dir):
    from robustdistill.upstream import Upstream

    teacher = Upstream.from_pretrained(str(tiny_wavlm_dir))
    config = _student_config(teacher, StudentConfig())
    assert config.hidden_size == teacher.hidden_size
    assert config.num_attention_heads == teacher.config.num_attention_heads
    assert config.intermediate_size == teacher.config.intermediate_size


def test_distill_config_with_zero_heads_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"student\.num_attention_heads must be >= 1"):
        load_config(None, ["--teacher", str(tmp_path), "--student.num_attention_heads", "0"])


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("flag", ["--hidden-size", "--intermediate-size",
                                  "--num-attention-heads"])
def test_create_student_refuses_zero_shape_values(tmp_path, capsys, flag, tiny_wavlm_dir):
    line = _cli_error(["create-student", "--teacher", str(tiny_wavlm_dir), "--out",
                       str(tmp_path / "s"), flag, "0"], capsys)
    key = flag[2:].replace("-", "_")
    assert line.startswith("robustdistill create-student: error:") and f"student.{key}" in line
    assert not (tmp_path / "s").exists()


def test_create_student_with_a_mistyped_teacher_path_is_one_line(tmp_path, capsys):
    missing = tmp_path / "no_such_teacher"
    line = _cli_error(["create-student", "--teacher", str(missing), "--out",
                       str(tmp_path / "s")], capsys)
    assert f"--teacher folder {str(missing)!r} does not exist" in line


def test_create_student_with_a_folder_that_holds_no_model_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    line = _cli_error(["create-student", "--teacher", str(tmp_path / "empty"), "--out",
                       str(tmp_path / "s")], capsys)
    assert "is not a model folder" in line


@pytest.mark.parametrize("out", ["afile", "afile/sub"])
def test_create_student_out_on_an_existing_file_is_one_line(tmp_path, capsys, tiny_wavlm_dir,
                                                            out):
    (tmp_path / "afile").write_text("keep me\n")
    line = _cli_error(["create-student", "--teacher", str(tiny_wavlm_dir), "--out",
                       str(tmp_path / out)], capsys)
    assert "is an existing file, not a folder" in line
    assert (tmp_path / "afile").read_text() == "keep me\n"


# ------------------------------------------------------------------------------ YAML syntax
BAD_YAML = "teacher: x\nstudent:\n  num_layers: [2\ntraining: {}\n"


def test_load_config_names_the_file_and_line_of_a_yaml_syntax_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_YAML)
    with pytest.raises(ConfigError, match=rf"^{bad}: invalid YAML at line 4, column \d+: ") as err:
        load_config(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("command", ["distill", "cache-teacher", "train-se"])
def test_every_command_prints_one_line_for_a_yaml_syntax_error(tmp_path, capsys, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_YAML)
    line = _cli_error([command, "--config", str(bad)], capsys)
    assert "invalid YAML at line 4" in line


@pytest.mark.parametrize("command", ["distill", "cache-teacher"])
def test_an_empty_config_file_is_refused(tmp_path, capsys, command):
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n# only a comment\n")
    line = _cli_error([command, "--config", str(empty)], capsys)
    assert f"{empty}: the config file is empty" in line


def test_a_bad_yaml_override_names_the_key():
    with pytest.raises(ConfigError, match=r"override --training\.max_steps '\[1,': invalid YAML"):
        parse_overrides(["--training.max_steps", "[1,"])


def test_read_yaml_error_is_still_a_yaml_error_for_callers_that_catch_that():
    import yaml

    with pytest.raises(yaml.YAMLError):
        read_yaml("a: [1,\n", source=Path("x.yaml"))


def test_distill_with_a_preset_cnn_that_does_not_fit_the_teacher_is_one_line(
        tiny_wavlm_dir, tmp_path, capsys):
    """The fast preset's 7 CNN layers against a 3-layer teacher CNN: found while the student is
    built (after the config), a start-up line, not a traceback."""
    err = _cli_error(["distill", "--teacher", str(tiny_wavlm_dir), "--output_dir",
                      str(tmp_path / "run"), "--student.preset", "fast", "--training.cpu", "true",
                      "--data.synthetic_items", "4"], capsys)
    assert "student: student.conv_dim needs 3 entries" in err


def test_distill_refuses_a_student_that_keeps_layerdrop_in_one_line(
        tiny_wavlm_dir, tmp_path, capsys):
    """transformers 5 leaves a LayerDrop-skipped layer out of ``hidden_states`` (a 2-layer
    student gave 2 states, not 3): layer indices would shift, or an objective's index crash."""
    err = _cli_error(["distill", "--teacher", str(tiny_wavlm_dir), "--output_dir",
                      str(tmp_path / "run"), "--student.keep_train_randomness", "true",
                      "--training.cpu", "true", "--data.synthetic_items", "4",
                      "--training.max_steps", "1"], capsys)
    assert "keeps LayerDrop (layerdrop 0.1" in err
    assert not (tmp_path / "run" / "student_init").exists()


def test_distill_refusing_objectives_that_train_no_student_leaves_no_output_folder(
        tiny_wavlm_dir, tmp_path, capsys):
    """Objectives that send no gradient into the student are refused after the student is
    built; ``student_init/`` was written before that check (and before the later start-up
    checks), so the refused run left it behind. It is written once they have all passed."""
    out = tmp_path / "run"
    err = _cli_error(["distill", "--teacher", str(tiny_wavlm_dir), "--output_dir", str(out),
                      "--objectives", "{enhancement: {input: cnn, hidden_size: 8, num_layers: 1}}",
                      "--student.feature_grad_mult", "0", "--training.cpu", "true",
                      "--data.synthetic_items", "4", "--data.synthetic_dir",
                      str(tmp_path / "corpus"), "--training.max_steps", "1"], capsys)
    assert "no gradient reaches the student" in err
    assert not out.exists()  # the folder the writability check made is removed, still empty


def test_distill_refusing_a_resume_leaves_no_new_output_folder(tiny_wavlm_dir, tmp_path,
                                                                       capsys):
    """A resume from another run's checkpoint with another seed is refused by the resume's
    checks, which come after the start-up checks: ``student_init/`` is written only once they
    have passed too (and before the checkpoint's weights load)."""
    common = ["distill", "--teacher", str(tiny_wavlm_dir), "--training.cpu", "true",
              "--data.synthetic_items", "4", "--data.synthetic_dir", str(tmp_path / "corpus"),
              "--data.batch_size", "2", "--training.max_steps", "2", "--training.save_every", "1",
              "--training.eval_at_start", "false", "--objectives",
              "{layerwise: {teacher_layers: [1]}}"]
    cli.main([*common, "--output_dir", str(tmp_path / "a")])
    first = tmp_path / "a" / "checkpoints" / "checkpoint_0"
    assert first.is_dir() and (tmp_path / "a" / "student_init").is_dir()
    out = tmp_path / "b"
    err = _cli_error([*common, "--output_dir", str(out), "--seed", "4",
                      "--training.resume_from", str(first)], capsys)
    assert "seed 0 -> 4" in err
    assert not out.exists()  # the folder the writability check made is removed, still empty
