"""Bad configs and arguments fail at start-up, naming the key and what is allowed; an output
folder that cannot be written fails before any model is loaded (issue 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_reliability_checkpoints import _config

import robustdistill.trainer as trainer_module
from robustdistill import cli
from robustdistill.config import ConfigError, load_config
from robustdistill.trainer import train

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@pytest.mark.parametrize("override, message", [
    # wrong types
    (["--training.max_steps", "abc"], r"training\.max_steps must be an integer, got 'abc'"),
    (["--training.max_steps", "2.5"], r"training\.max_steps must be an integer, got 2\.5"),
    (["--training.learning_rate", "fast"], r"training\.learning_rate must be a number"),
    (["--training.cpu", "maybe"], r"training\.cpu must be true or false"),
    (["--data.batch_size", "[4]"], r"data\.batch_size must be an integer, got \[4\]"),
    (["--training.adam_betas", "[0.9, x]"], r"training\.adam_betas\[1\] must be a number"),
    (["--output_dir", "7"], r"output_dir must be a string, got 7"),
    (["--augmentation.snr_min", "loud"], r"augmentation\.snr_min must be a number"),
    # impossible values
    (["--augmentation.snr_min", "30", "--augmentation.snr_max", "10"],
     r"snr_min \(30\.0\) must not exceed snr_max \(10\.0\)"),
    (["--seed", "-1"], r"seed must be >= 0"),
    (["--training.keep_checkpoints", "0"], r"training\.keep_checkpoints must be >= 1"),
    (["--training.max_nonfinite_in_a_row", "0"], r"training\.max_nonfinite_in_a_row must be >= 1"),
    (["--training.resume_from", "/no/such/checkpoint"],
     r"resume_from '/no/such/checkpoint' is not an existing checkpoint folder; allowed: 'latest'"),
    (["--data.min_length_s", "3", "--data.max_length_s", "2"], r"min_length_s: 3\.0 > max_length_s"),
    # unknown keys (more in tests/test_config.py)
    (["--training.save_total_limit", "2"], r"unknown config key 'training\.save_total_limit'"),
])
def test_bad_values_fail_when_the_config_is_read(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, override)


def test_ints_are_accepted_as_floats():
    cfg = load_config(DEMO, ["--training.learning_rate", "1", "--augmentation.snr_min", "0"])
    assert isinstance(cfg.training.learning_rate, float) and cfg.training.learning_rate == 1.0


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if a model is loaded."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the start-up checks failed")

    monkeypatch.setattr(trainer_module.Upstream, "from_pretrained", refuse)


def test_an_output_dir_that_cannot_be_written_fails_before_any_model_is_loaded(
        tmp_path, tiny_wavlm_dir, no_model_loading):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = _config(tmp_path, tiny_wavlm_dir, "x")
    cfg.output_dir = str(blocker / "run")  # a folder cannot be made inside a file
    with pytest.raises(ConfigError, match=r"output_dir .*a_file/run.* cannot be written: Not a "
                                          r"directory; allowed: a folder this user can"):
        train(cfg)


def test_a_fresh_run_into_an_earlier_runs_checkpoints_fails_before_any_model_is_loaded(
        tmp_path, tiny_wavlm_dir, no_model_loading):
    cfg = _config(tmp_path, tiny_wavlm_dir, "x")
    (Path(cfg.output_dir) / "checkpoints" / "checkpoint_0").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"holds checkpoints of an earlier run \(checkpoint_0\); "
                                          r"allowed: --resume \(or --training.resume_from latest\)"):
        train(cfg)
    cfg.training.resume_from = "latest"  # continuing it passes the check (then loads a model)
    with pytest.raises(AssertionError, match="a model was loaded"):
        train(cfg)


@pytest.mark.parametrize("change, error, message", [
    ({"objectives": {"layerwise": {"teacher_layers": [1, 3]}}}, ConfigError,
     r"layerwise\.teacher_layers \[3\] outside \[0, 2\]"),  # the tiny teacher has 2 layers
    ({"data.max_length_s": 0.005, "data.min_length_s": 0.0}, ConfigError,  # 80 samples
     r"data\.max_length_s=0\.005 s is shorter than one frame .*\(148 samples = 0\.0092 s "
     r"at 16000 Hz\); allowed: >= 0\.0092"),
    ({"data.min_length_s": 0.001}, ConfigError,
     r"data\.min_length_s=0\.001 s is shorter than one frame"),
    ({"teacher": "./no/such/teacher"}, FileNotFoundError,
     r"teacher folder './no/such/teacher' does not exist"),
])
def test_values_that_do_not_fit_the_models_fail_before_training(
        tmp_path, tiny_wavlm_dir, change, error, message):
    cfg = _config(tmp_path, tiny_wavlm_dir, "run", max_steps=2)
    for key, value in change.items():
        if "." in key:
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, value)
        else:
            setattr(cfg, key, value)
    with pytest.raises(error, match=message):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing was trained


def test_a_data_folder_with_no_usable_audio_fails_before_the_first_step(tmp_path, tiny_wavlm_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.wav").write_text("not audio")
    (bad / "b.flac").write_bytes(b"")
    cfg = _config(tmp_path, tiny_wavlm_dir, "run", max_steps=2)
    cfg.data.synthetic_items, cfg.data.train_dir = 0, str(bad)
    with pytest.raises(ConfigError, match=r"none of the 2 items is usable .*1 empty, 1 unreadable"):
        train(cfg)
    # Files whose headers look fine but whose samples are all NaN: the validation items held
    # out of them are read at start-up, so this too is a one-line error before the first step
    # (it was an AudioError traceback from the first training step).
    for i in range(4):
        sf.write(bad / f"nan{i}.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(ConfigError, match=r"validation: none of the 1 AudioFileDataset items "
                                          r"can be read \(1 non-finite\)"):
        train(cfg)
    assert not list((tmp_path / "run").glob("checkpoints/checkpoint_*"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_cli_reports_start_up_errors_as_messages_naming_the_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["distill", "--config", str(DEMO), "--training.max_steps", "ten"])
    assert info.value.code == 2
    assert "training.max_steps must be an integer, got 'ten'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as info:
        cli.main(["distill", "--config", str(DEMO), "--output_dir", str(blocker / "run")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "cannot be written" in err and "Traceback" not in err


def test_cli_resume_flag_means_resume_from_auto(monkeypatch):
    import robustdistill.trainer

    seen = []
    monkeypatch.setattr(robustdistill.trainer, "train", lambda cfg: seen.append(cfg) or "out")
    assert cli.main(["distill", "--config", str(DEMO), "--resume"]) == 0
    assert seen[0].training.resume_from == "auto"
    assert cli.main(["distill", "--config", str(DEMO)]) == 0
    assert seen[1].training.resume_from is None
