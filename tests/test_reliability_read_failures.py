"""Audio that only decoding shows to be bad, and start-up errors that were tracebacks
(fresh-user walkthrough):

* a corrupt float file (finite samples far beyond full scale, e.g. 1e30) is refused by one
  shared check (``robustdistill.audio.MAX_PEAK``, the limit train-se used) in every reader:
  ``distill``'s datasets skip it by name, ``evaluate``'s decoding counts it (before, it passed:
  NaN gradients in distill, non-finite features scored silently in evaluate);
* validation items are read once at start-up: none readable is a one-line error before any
  step, bad ones are dropped and counted (before: a traceback at the first validation, losing
  the steps since the last checkpoint);
* a training batch that cannot be read stops the run with a checkpoint, ``stopped.json`` and
  one line (before: a traceback and no checkpoint); the run resumes exactly from it;
* a noise folder with no usable file and a negative learning rate are one-line errors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tiny_run_config

import robustdistill.data.files as files_module
import robustdistill.trainer as trainer_module
from robustdistill import cli
from robustdistill.audio import (
    MAX_PEAK,
    SAMPLE_RATE,
    AudioError,
    load_audio,
    load_audio_window,
    prepare_waveform,
)
from robustdistill.config import ConfigError
from robustdistill.data import AudioFileDataset, DataConfig, build_datasets
from robustdistill.se.data import MAX_SPEECH_PEAK, scan_speech_file
from robustdistill.trainer import DataReadError, NonFiniteTrainingError, train

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _speech(seconds: float = 1.0, seed: int = 0, sr: int = SAMPLE_RATE) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * sr))
            ).astype(np.float32)


def _write(path: Path, wave: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    sf.write(path, wave, sr, subtype="FLOAT")
    return path


def _bad_folder(folder: Path) -> Path:
    """NaN, Inf and silent float WAVs: their headers are fine, their samples are not."""
    folder.mkdir(parents=True, exist_ok=True)
    x = _speech(1.0)
    nan, inf = x.copy(), x.copy()
    nan[100:110], inf[50] = np.nan, np.inf
    _write(folder / "nan.wav", nan)
    _write(folder / "inf.wav", inf)
    _write(folder / "silent.wav", np.zeros_like(x))
    return folder


# ---- one limit for corrupt float files ----------------------------------------------------


def test_a_corrupt_float_file_is_refused_by_the_shared_check(tmp_path):
    assert MAX_SPEECH_PEAK is MAX_PEAK == 100.0  # train-se's limit is the shared one
    for sr in (SAMPLE_RATE, 44_100):
        loud = _speech(1.0, sr=sr)
        loud[1000] = 1e30  # finite: the NaN/Inf check passes it
        path = _write(tmp_path / f"loud_{sr}.wav", loud, sr)
        for read in (lambda p: load_audio(p), lambda p: load_audio_window(p, 0, 8000)):
            with pytest.raises(AudioError, match=r"loud_\d+\.wav: a sample of absolute value "
                                                 r"\S+ \(more than 100 times full scale\)"
                               ) as info:
                read(path)
            assert info.value.reason == "invalid"
        with pytest.raises(AudioError, match="more than 100 times full scale"):
            scan_speech_file(path)  # train-se's speech index
    with pytest.raises(AudioError, match=r"<array>: a sample of absolute value \d\.\d+e\+04 "):
        prepare_waveform(_speech() * 32768, SAMPLE_RATE)  # float samples at int16 scale
    loud_but_usable = _speech()
    loud_but_usable[10] = 50.0  # above full scale, below the limit: kept as stored
    out = load_audio(_write(tmp_path / "hot.wav", loud_but_usable))
    assert out[10] == 50.0


def test_distill_datasets_skip_a_corrupt_float_file_by_name(tmp_path):
    loud = _speech(1.0)
    loud[500] = 1e30
    bad = _write(tmp_path / "loud.wav", loud)
    good = _write(tmp_path / "good.wav", _speech(1.0, seed=1))
    dataset = AudioFileDataset([bad, good], max_length_s=1.0, min_length_s=0.5)
    item = dataset[0]
    assert item["index"] == 1 and item["skipped"] == [(str(bad), "invalid")]
    assert dataset.skipped == {str(bad): "invalid"}
    assert np.abs(item["waveform"]).max() < 1


def test_evaluate_decoding_skips_and_counts_a_corrupt_float_file(tmp_path):
    from downstream.data import Utterance
    from downstream.decoding import decode_all

    loud = _speech(1.0)
    loud[500] = 1e30
    _write(tmp_path / "loud.wav", loud)
    for i in range(2):
        _write(tmp_path / f"ok{i}.wav", _speech(1.0, seed=i))
    splits = {split: [Utterance(f"{split}/ok{i}", str(tmp_path / f"ok{i}.wav"), label="a")
                      for i in range(2)] for split in ("train", "dev", "test")}
    splits["test"].append(Utterance("test/loud", str(tmp_path / "loud.wav"), label="a"))
    waveforms, skipped = decode_all(splits, None)
    assert skipped == {"train": 0, "dev": 0, "test": 1}
    assert [u.key for u, _ in waveforms["test"]] == ["test/ok0", "test/ok1"]


# ---- validation read at start-up ----------------------------------------------------------


def test_validation_items_are_read_at_start_up(tmp_path):
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    for i in range(3):
        _write(train_dir / f"t{i}.wav", _speech(1.0, seed=i))
    valid = _bad_folder(tmp_path / "valid")
    _write(valid / "ok.wav", _speech(1.0, seed=9))
    cfg = DataConfig(train_dir=str(train_dir), validation_dir=str(valid), max_length_s=1.0,
                     min_length_s=0.5)
    _, validation = build_datasets(cfg)
    assert [f.name for f in validation.files] == ["ok.wav"]
    assert validation.skipped == {str(valid / "inf.wav"): "non-finite",
                                  str(valid / "nan.wav"): "non-finite",
                                  str(valid / "silent.wav"): "silent"}
    (valid / "ok.wav").unlink()
    with pytest.raises(ValueError, match=r"validation: none of the 3 AudioFileDataset items can "
                                         r"be read \(2 non-finite, 1 silent\)"):
        build_datasets(cfg)


def test_a_validation_folder_with_no_readable_item_fails_before_the_first_step(
        tmp_path, tiny_wavlm_dir):
    cfg = tiny_run_config(tmp_path, tiny_wavlm_dir, "run", **{
        "training.max_steps": 4, "training.eval_every": 2,
        "data.validation_dir": str(_bad_folder(tmp_path / "valid"))})
    with pytest.raises(ConfigError, match=r"data: validation: none of the 3 .* \(2 non-finite, "
                                          r"1 silent\)"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ---- a training batch that cannot be read -------------------------------------------------


@pytest.fixture
def break_audio_after_step(monkeypatch):
    """``break_audio_after_step(n)``: from the end of training step ``n`` on, every audio
    file read by a distill dataset fails with reason ``non-finite``."""
    state = {"broken": False}
    real_load = files_module.load_audio

    def load(source, *args, **kwargs):
        if state["broken"]:
            raise AudioError(f"{source}: 7 of 16000 samples are NaN or Inf", "non-finite")
        return real_load(source, *args, **kwargs)

    def arm(step: int) -> None:
        real_log = trainer_module._Run.log

        def log(run, split, values):
            real_log(run, split, values)
            if split == "train" and run.progress.step == step:
                state["broken"] = True

        monkeypatch.setattr(files_module, "load_audio", load)
        monkeypatch.setattr(trainer_module._Run, "log", log)

    return arm


@pytest.mark.parametrize("save_every", [0, 2])  # 2: the scheduled checkpoint of step 2 is kept
def test_a_training_read_failure_stops_with_a_checkpoint_and_resumes_exactly(
        tmp_path, tiny_wavlm_dir, monkeypatch, break_audio_after_step, save_every):
    def config(out, **training):
        return tiny_run_config(tmp_path, tiny_wavlm_dir, out, **{
            "training.max_steps": 5, "training.save_every": save_every,
            **{f"training.{k}": v for k, v in training.items()}})

    train(config("full"))
    break_audio_after_step(2)
    with pytest.raises(DataReadError, match=r"stopped at step 2: no training audio could be "
                                            r"read: AudioFileDataset: no item from index \d+ on "
                                            r"could be read.*checkpoint .*checkpoint_0 holds the "
                                            r"weights of step 2"):
        train(config("part"))
    monkeypatch.undo()
    part = tmp_path / "part"
    stopped = json.loads((part / "stopped.json").read_text())
    assert stopped["reason"] == "unreadable audio" and stopped["step"] == 2
    assert stopped["checkpoint"].endswith("checkpoint_0")
    assert [p.name for p in (part / "checkpoints").iterdir()] == ["checkpoint_0"]  # one, not two
    assert stopped["skipped_audio"]["count"] == 6  # every training file, by name
    assert set(stopped["skipped_audio"]["by_reason"]) == {"non-finite"}
    state = json.loads((part / "checkpoints" / "checkpoint_0" / "training_state.json").read_text())
    assert state["progress"]["step"] == 2 and state["progress"]["batches_in_epoch"] == 2
    train(config("part", resume_from="latest"))  # the files are readable again
    full_state = json.loads((tmp_path / "full" / "final_state.json").read_text())
    part_state = json.loads((part / "final_state.json").read_text())
    assert part_state["parameter_sha256_per_rank"] == full_state["parameter_sha256_per_rank"]


def test_a_validation_read_failure_mid_run_stops_the_same_way(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    cfg = tiny_run_config(tmp_path, tiny_wavlm_dir, "run", **{
        "training.max_steps": 4, "training.eval_every": 2, "training.save_every": 0,
        "data.validation_dir": str(tmp_path / "corpus"),  # the generated corpus itself...
        "data.synthetic_dir": str(tmp_path / "train_corpus")})
    from robustdistill.synthetic import write_synthetic_corpus

    write_synthetic_corpus(tmp_path / "corpus", 3, (0.6, 1.0), 7)
    real_step = trainer_module._Run.train_step

    def step_then_break_validation(run, batches):
        values = real_step(run, batches)
        if run.progress.step == 2:  # ...changed after start-up
            for path in (tmp_path / "corpus").iterdir():
                _write(path, np.zeros(SAMPLE_RATE, np.float32))
        return values

    monkeypatch.setattr(trainer_module._Run, "train_step", step_then_break_validation)
    with pytest.raises(DataReadError, match=r"stopped at step 2: no validation audio could "
                                            r"be read.*checkpoint_0 holds the weights"):
        train(cfg)
    stopped = json.loads((tmp_path / "run" / "stopped.json").read_text())
    assert stopped["skipped_audio"]["by_reason"] == {"silent": 3}


@pytest.mark.parametrize("error", [DataReadError, NonFiniteTrainingError])
def test_the_cli_reports_a_stopped_run_in_one_line(monkeypatch, capsys, error):
    def stop(cfg):
        raise error("stopped at step 7: no training audio could be read: x.wav\n"
                    "second line")

    monkeypatch.setattr(trainer_module, "train", stop)
    assert cli.main(["distill", "--config", str(DEMO)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["robustdistill distill: error: stopped at step 7: no training audio could be "
                   "read: x.wav second line"]
    # every process of a launch stops with that message: only the first one prints it
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["distill", "--config", str(DEMO)]) == 1
    assert capsys.readouterr().err == ""


# ---- start-up errors that were tracebacks -------------------------------------------------


@pytest.mark.parametrize("override, message", [
    (["--training.learning_rate", "-1"], r"training\.learning_rate must be a number > 0, got -1"),
    (["--training.learning_rate", ".nan"], r"training\.learning_rate must be a finite number, got nan"),
    (["--training.weight_decay", "-0.1"], r"training\.weight_decay must be a number >= 0"),
    (["--training.adam_betas", "[0.9, 1.0]"], r"training\.adam_betas must each lie in \[0, 1\)"),
])
def test_optimizer_values_adamw_refuses_fail_before_anything_is_written(
        tmp_path, capsys, override, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        cli.main(["distill", "--config", str(DEMO), "--output_dir", str(out), *override])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert re.search(message, err.strip().splitlines()[-1])
    assert not out.exists()  # no student_init/ left behind


def test_a_noise_folder_with_no_usable_file_is_a_start_up_error(tmp_path, tiny_wavlm_dir):
    cfg = tiny_run_config(tmp_path, tiny_wavlm_dir, "run", **{
        "augmentation.noise_dir": str(_bad_folder(tmp_path / "noise"))})
    with pytest.raises(ConfigError, match=r"augmentation: .*noise: none of the 3 noise files "
                                          r"could be used"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


_ONE_RANK_BREAKS = '''
import os, sys
import robustdistill.data.files as files
import robustdistill.trainer as trainer
from robustdistill.audio import AudioError
from robustdistill.cli import main

real_load, real_log, state = files.load_audio, trainer._Run.log, {"broken": False}

def load(source, *args, **kwargs):
    if state["broken"]:
        raise AudioError(f"{source}: 7 of 16000 samples are NaN or Inf", "non-finite")
    return real_load(source, *args, **kwargs)

def log(run, split, values):
    real_log(run, split, values)
    if split == "train" and run.progress.step == 2 and os.environ.get("RANK") == "1":
        state["broken"] = True  # rank 1 alone: rank 0 reads on

files.load_audio, trainer._Run.log = load, log
sys.exit(main(["distill", *sys.argv[1:]]))
'''


@pytest.mark.slow
def test_when_one_process_cannot_read_every_process_stops_and_saves(tmp_path, tiny_wavlm_dir):
    """Two CPU processes (gloo): rank 1's audio breaks after step 2, rank 0's does not. The
    processes agree on the failure, so both save the checkpoint together and exit 1, rather
    than rank 0 waiting forever in the next collective."""
    import os
    import subprocess
    import sys

    from conftest import free_port

    script = tmp_path / "one_rank_breaks.py"
    script.write_text(_ONE_RANK_BREAKS)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--main_process_port", str(free_port()), str(script),
           "--config", str(DEMO), "--teacher", str(tiny_wavlm_dir), "--output_dir", str(out),
           "--data.synthetic_items", "16", "--data.synthetic_seconds", "[0.6, 1.2]",
           "--data.synthetic_dir", str(tmp_path / "c"), "--data.max_length_s", "1.0",
           "--data.min_length_s", "0.5", "--data.validation_fraction", "0.25",
           "--data.batch_size", "2", "--augmentation.num_simulated_rooms", "2",
           "--augmentation.room_max_order", "3", "--objectives",
           "{layerwise: {teacher_layers: [1, 2]}}", "--training.max_steps", "5",
           "--training.eval_at_start", "false", "--training.save_every", "0", "--training.log_every", "1",
           "--training.report_to", "[]", "--training.cpu", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "robustdistill distill: error: stopped at step 2: no training audio could be read" \
        in result.stderr, result.stderr[-3000:]
    stopped = json.loads((out / "stopped.json").read_text())
    assert stopped["step"] == 2 and stopped["checkpoint"].endswith("checkpoint_0")
    assert "another process" not in stopped["message"]  # rank 1's own reason, gathered
    assert (out / "checkpoints" / "checkpoint_0" / "random_states_1.pkl").is_file()
