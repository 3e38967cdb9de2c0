"""``train-speaker`` and its loaders on bad input: unusable audio files are skipped with a log
line naming each and counted (``result.json``'s ``skipped_files``); a set left unusable, a bad
config value, a missing or foreign teacher file, a missing data or upstream folder and an empty
config end in one line (exit 2), before any training."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustdistill.speaker.data import (
    SpeakerDataError,
    load_fsdd,
    load_speaker_folders,
    load_train_crops,
)

SR = 16_000
REPO = Path(__file__).resolve().parents[1]


def _noise(path: Path, seconds: float = 0.5, seed: int = 0, sr: int = SR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32), sr)


def _silent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(SR // 2, np.float32), SR)


def _data(root: Path) -> tuple[Path, Path]:
    """``root/train``: 3 speakers x 2 utterances; ``root/test``: 2 speakers x 2 utterances."""
    for i, spk in enumerate((19, 26, 32)):
        for u in range(2):
            _noise(root / "train" / f"{spk}-100-000{u}.wav", seed=10 * i + u)
    for i, spk in enumerate((40, 41)):
        for u in range(2):
            _noise(root / "test" / str(spk) / f"{spk}-1-{u}.wav", seed=100 + 10 * i + u)
    return root / "train", root / "test"


def test_train_crops_skip_a_text_file_named_wav_and_say_so(tmp_path, caplog):
    train, _ = _data(tmp_path)
    bad = train / "19-999-0000.wav"
    bad.write_text("hello\n")
    skipped: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="robustdistill.speaker"):
        crops = load_train_crops(train, 0.2, 1, skipped=skipped)
    assert len(crops) == 6 and {c.speaker for c in crops} == {"19", "26", "32"}
    assert not any(c.key.startswith("19-999-0000") for c in crops)
    assert skipped == {str(bad): "unreadable"}
    assert any(str(bad) in r.getMessage() and "unreadable" in r.getMessage()
               for r in caplog.records)


def test_a_training_file_not_named_speaker_chapter_utterance_is_skipped(tmp_path, caplog):
    """Its speaker label would be its whole name: one extra training class, silently."""
    train, _ = _data(tmp_path)
    _noise(train / "stray_recording.wav", seed=7)
    skipped: dict[str, str] = {}
    with caplog.at_level(logging.WARNING):
        crops = load_train_crops(train, 0.25, 1, skipped=skipped)
    assert sorted({c.speaker for c in crops}) == ["19", "26", "32"]
    assert skipped == {str(train / "stray_recording.wav"): "invalid"}
    assert "stray_recording.wav" in caplog.text and "<speaker>-<chapter>-<utt>" in caplog.text


def test_train_crops_with_no_usable_file_raise_one_line(tmp_path):
    (tmp_path / "19-1-0.wav").write_text("x")
    _silent(tmp_path / "26-1-0.wav")
    with pytest.raises(SpeakerDataError, match=r"no usable training audio .*2 files skipped "
                                               r"\(1 silent, 1 unreadable\)") as err:
        load_train_crops(tmp_path, 0.2, 1)
    assert "\n" not in str(err.value)


def test_speaker_folders_skip_a_silent_file(tmp_path, caplog):
    _, test = _data(tmp_path)
    bad = test / "40" / "40-1-9.wav"
    _silent(bad)
    skipped: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="robustdistill.speaker"):
        utts = load_speaker_folders(test, skipped=skipped)
    assert sorted(u.key for u in utts) == ["40-1-0.wav", "40-1-1.wav", "41-1-0.wav", "41-1-1.wav"]
    assert skipped == {str(bad): "silent"}
    assert any(str(bad) in r.getMessage() for r in caplog.records)


def test_a_speaker_left_with_one_usable_utterance_is_refused(tmp_path):
    _, test = _data(tmp_path)
    _silent(test / "41" / "41-1-1.wav")  # replaces a good one: 41 keeps one utterance
    with pytest.raises(SpeakerDataError, match=r"41: 1 of 2 utterances usable.*1 silent"):
        load_speaker_folders(test)


def test_a_verification_set_without_trials_is_refused_at_load_time(tmp_path):
    _noise(tmp_path / "40" / "a.wav")
    _noise(tmp_path / "40" / "b.wav", seed=1)  # one speaker: no non-target trial
    with pytest.raises(SpeakerDataError, match="no target or no non-target trial"):
        load_speaker_folders(tmp_path)


def test_fsdd_skips_a_bad_file_and_takes_the_speakers_next_one(tmp_path):
    for spk in ("jackson", "theo"):
        for take in range(2):
            for digit in range(2):
                _noise(tmp_path / f"{digit}_{spk}_{take}.wav", sr=8000, seed=take * 2 + digit)
    bad = tmp_path / "0_jackson_0.wav"
    bad.write_bytes(b"\x00" * 10)
    skipped: dict[str, str] = {}
    utts = load_fsdd(tmp_path, 2, skipped=skipped)
    assert [(u.speaker, u.key) for u in utts] == [
        ("jackson", "1_jackson_0.wav"), ("jackson", "0_jackson_1.wav"),
        ("theo", "0_theo_0.wav"), ("theo", "1_theo_0.wav")]
    assert skipped == {str(bad): "unreadable"}


def test_an_fsdd_speaker_with_too_few_usable_files_names_its_own_skipped_files(tmp_path):
    """The error gave the skip counts of the whole set (here 2 of jackson's files counted as
    theo's): it names theo's skipped files in the order tried, up to 5, and counts the others."""
    for spk in ("jackson", "theo"):
        for take in range(4):
            for digit in range(2):
                _noise(tmp_path / f"{digit}_{spk}_{take}.wav", sr=8000, seed=take * 2 + digit,
                       seconds=0.3)
    (tmp_path / "0_jackson_0.wav").write_bytes(b"")
    (tmp_path / "1_jackson_0.wav").write_bytes(b"")
    for take in range(4):
        for digit in range(2):
            if (digit, take) != (1, 2):  # theo keeps one usable file of 8
                (tmp_path / f"{digit}_theo_{take}.wav").write_bytes(b"\x00" * 10)
    with pytest.raises(SpeakerDataError) as err:
        load_fsdd(tmp_path, 2)
    assert str(err.value) == (
        f"{tmp_path}: FSDD speaker 'theo' has 1 usable files of 8, too few for a target trial; "
        "its 7 skipped files (7 unreadable): 0_theo_0.wav [unreadable], 1_theo_0.wav "
        "[unreadable], 0_theo_1.wav [unreadable], 1_theo_1.wav [unreadable], 0_theo_2.wav "
        "[unreadable] and 2 more; 2 files of other speakers skipped")


def test_a_training_utterance_shorter_than_min_length_s_is_skipped_not_padded(tmp_path, caplog):
    """A 10 ms file was zero-padded to a crop of (nearly) zeros and trained on, silently."""
    train, _ = _data(tmp_path)
    _noise(train / "19-100-0009.wav", seconds=0.01, seed=9)  # 160 samples
    _noise(train / "26-100-0009.wav", seconds=0.1, seed=8)  # exactly min_length_s: kept
    skipped: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="robustdistill.speaker"):
        crops = load_train_crops(train, 0.2, 1, skipped=skipped, min_length_s=0.1)
    assert skipped == {str(train / "19-100-0009.wav"): "too short"}
    assert sorted(c.key for c in crops if c.key.startswith(("19-", "26-"))) == [
        "19-100-0000.wav:2400", "19-100-0001.wav:2400", "26-100-0000.wav:2400",
        "26-100-0001.wav:2400", "26-100-0009.wav:0"]  # 0.1 s kept, padded to the 0.2 s crop
    assert (f"train: skipping {train / '19-100-0009.wav'} [too short]: 0.0100 s < "
            "data.min_length_s=0.1 s") in caplog.text
    assert "1 of 8 files" in caplog.text and "(1 too short)" in caplog.text
    assert len(load_train_crops(train, 0.2, 1)) == 8  # no minimum: padded, as before


def test_a_verification_utterance_shorter_than_min_test_length_s_is_skipped(tmp_path, caplog):
    """A 10 ms test utterance was scored (the teacher's embedding of a partial of zeros)."""
    _, test = _data(tmp_path)
    _noise(test / "40" / "40-1-2.wav", seconds=0.01, seed=5)
    skipped: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="robustdistill.speaker"):
        utts = load_speaker_folders(test, skipped=skipped, min_length_s=0.1)
    assert sorted(u.key for u in utts) == ["40-1-0.wav", "40-1-1.wav", "41-1-0.wav", "41-1-1.wav"]
    assert skipped == {str(test / "40" / "40-1-2.wav"): "too short"}
    assert "[too short]: 0.0100 s < data.min_test_length_s=0.1 s" in caplog.text
    fsdd = tmp_path / "fsdd"
    for spk in ("jackson", "theo"):
        for take in range(2):
            _noise(fsdd / f"0_{spk}_{take}.wav", sr=8000, seed=take,
                   seconds=0.01 if (spk, take) == ("theo", 0) else 0.3)
    fsdd_skipped: dict[str, str] = {}
    with pytest.raises(SpeakerDataError, match=r"FSDD speaker 'theo' has 1 usable files of 2.*"
                                               r"1 too short"):
        load_fsdd(fsdd, 2, skipped=fsdd_skipped, min_length_s=0.1)
    _noise(fsdd / "1_theo_0.wav", sr=8000, seed=3, seconds=0.3)  # theo's next file
    utts = load_fsdd(fsdd, 2, skipped=fsdd_skipped, min_length_s=0.1)
    assert [u.key for u in utts if u.speaker == "theo"] == ["1_theo_0.wav", "0_theo_1.wav"]


@pytest.mark.parametrize(("override", "message"), [
    ({"min_length_s": 0.01}, "data.min_length_s must be at least 0.025 s (one 25 ms analysis "
                             "window), got 0.01"),
    ({"min_test_length_s": 0.0}, "data.min_test_length_s must be at least 0.025 s (one 25 ms "
                                 "analysis window), got 0.0"),
])
def test_the_minimum_lengths_are_checked_with_the_config(override, message):
    from robustdistill.speaker.config import DataConfig

    assert (DataConfig().min_length_s, DataConfig().min_test_length_s) == (1.0, 0.1)
    with pytest.raises(ValueError) as err:
        DataConfig(**override)
    assert message in str(err.value)


def test_a_crop_shorter_than_min_length_s_is_the_minimum():
    """An utterance that fills a crop is never too short: with 0.2 s crops the default 1 s
    minimum would skip utterances that fill them (a config error before)."""
    from robustdistill.speaker.config import DataConfig

    assert DataConfig(crop_seconds=0.2).min_train_seconds == 0.2
    assert DataConfig(crop_seconds=2.0).min_train_seconds == 1.0
    assert DataConfig(crop_seconds=3.0, min_length_s=2.5).min_train_seconds == 2.5


def test_the_too_short_warning_names_the_crop_when_the_crop_is_the_minimum(tmp_path, caplog,
                                                                          monkeypatch):
    """With 0.2 s crops and the recipe's 1 s data.min_length_s the minimum is the crop, and the
    warning says so: it said "< data.min_length_s=0.2 s", a value that setting did not have.
    Training (load_inputs) and the IG cache (load_ig_inputs) keep the same crops."""
    from types import SimpleNamespace

    from robustdistill.speaker import ig
    from robustdistill.speaker.config import DataConfig, SpeakerKDConfig
    from robustdistill.speaker.inputs import load_inputs

    train, test = _data(tmp_path)
    _noise(train / "19-999-0000.wav", seconds=0.15, seed=3)  # shorter than a crop
    _noise(train / "26-999-0000.wav", seconds=0.5, seed=4)  # fills a crop: kept
    cfg = SpeakerKDConfig(data=DataConfig(train_dir=str(train), test_other_dir=str(test),
                                          fsdd_dir=None, crop_seconds=0.2,
                                          crops_per_utterance=1))
    assert (cfg.data.min_length_s, cfg.data.min_train_key) == (1.0, "data.crop_seconds")
    skipped: dict = {}
    with caplog.at_level(logging.WARNING, logger="robustdistill.speaker"):
        crops, _ = load_inputs(cfg, skipped)
    short = str(train / "19-999-0000.wav")
    assert skipped["train"] == {short: "too short"}
    said = [r.getMessage() for r in caplog.records if short in r.getMessage()]
    assert said == [f"train: skipping {short} [too short]: 0.1500 s < data.crop_seconds=0.2 s"]
    monkeypatch.setattr(ig, "load_teacher", lambda _: SimpleNamespace(fingerprint="t"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robustdistill.speaker"):
        _, ig_crops = ig.load_ig_inputs(cfg)
    assert [c.key for c in ig_crops] == [c.key for c in crops] and len(crops) == 7
    assert "< data.crop_seconds=0.2 s" in caplog.text
    assert DataConfig(crop_seconds=2.0).min_train_key == "data.min_length_s"


# ------------------------------------------------------------------------------ the command
def _tiny_args(root: Path, train: Path, test: Path) -> list[str]:
    return ["--data.train_dir", str(train), "--data.test_other_dir", str(test),
            "--data.fsdd_dir", "null", "--data.crop_seconds", "0.2", "--data.min_length_s", "0.1",
            "--data.crops_per_utterance", "1", "--student.hidden_size", "8",
            "--student.num_layers", "1", "--student.embedding_dim", "8",
            "--ig.durations", "[0.1, null]", "--ig.n_steps", "2",
            "--ig.cache_dir", str(root / "cache"), "--training.epochs", "1",
            "--training.batch_size", "4", "--training.output_dir", str(root / "out")]


def _tiny_table_args(root: Path, train: Path, test: Path) -> list[str]:
    """``table`` of one run (no KD, seed 0) in ``root/table``, on :func:`_tiny_args`."""
    return ["table", "--config", "configs/imlkd_speaker.yaml", *_tiny_args(root, train, test),
            "--table.methods", "[none]", "--table.seeds", "[0]",
            "--table.output_dir", str(root / "table")]


def _resemblyzer():
    pytest.importorskip("resemblyzer")


def _main_error(argv: list[str], capsys) -> str:
    from robustdistill.speaker.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_train_speaker_runs_past_bad_files_and_counts_them(tmp_path, monkeypatch):
    _resemblyzer()
    from robustdistill.speaker.cli import main

    monkeypatch.chdir(REPO)
    train, test = _data(tmp_path)
    (train / "19-999-0000.wav").write_text("hello\n")
    _silent(test / "40" / "40-1-9.wav")
    assert main(["train", "--config", "configs/imlkd_speaker.yaml",
                 *_tiny_args(tmp_path, train, test)]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["skipped_files"] == {"train": {"unreadable": 1}, "test_other": {"silent": 1}}
    assert result["eval"]["test_other"]["target_trials"] == 2  # the silent file is not in it


def test_train_speaker_skips_and_counts_utterances_shorter_than_its_minimums(tmp_path,
                                                                             monkeypatch):
    _resemblyzer()
    from robustdistill.speaker.cli import main

    monkeypatch.chdir(REPO)
    train, test = _data(tmp_path)
    _noise(train / "19-999-0000.wav", seconds=0.01, seed=3)
    _noise(test / "41" / "41-1-9.wav", seconds=0.01, seed=4)
    assert main(["train", "--config", "configs/imlkd_speaker.yaml",
                 *_tiny_args(tmp_path, train, test)]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["skipped_files"] == {"train": {"too short": 1},
                                       "test_other": {"too short": 1}}
    assert result["eval"]["test_other"]["target_trials"] == 2  # 10 ms: in no trial
    assert result["config"]["data"]["min_length_s"] == 0.1


@pytest.mark.parametrize("extra, message", [
    (["--teacher", "{root}/nope.pt"], "teacher file not found: {root}/nope.pt"),
    (["--teacher", "{root}/notmodel.pt"], "teacher {root}/notmodel.pt is not a GE2E weights"),
    (["--student.kind", "upstream", "--student.upstream", "{root}/no_upstream"],
     "student.upstream folder '{root}/no_upstream' does not exist"),
    # a folder with no model's config.json: once a traceback after the teacher's targets
    (["--student.kind", "upstream", "--student.upstream", "{root}"],
     "student.upstream '{root}' is not a model folder: Unrecognized model"),
    (["--data.train_dir", "{root}/no_train"], "audio path does not exist: {root}/no_train"),
    (["--data.test_other_dir", "{root}/no_test"], "verification folder does not exist"),
    (["--training.batch_size", "0"], "training.batch_size must be >= 2, got 0"),
    (["--training.batch_size", "1"], "training.batch_size must be >= 2, got 1"),
    (["--training.lr", "-1"], "training.lr must be > 0, got -1"),
    (["--data.crop_seconds", "0"], "data.crop_seconds must be at least 0.025 s"),
    # 16 samples used to train without a word (less than one 25 ms window)
    (["--data.crop_seconds", "0.001"], "data.crop_seconds must be at least 0.025 s (one 25 ms "
                                       "analysis window"),
    (["--data.fsdd_per_speaker", "1"], "data.fsdd_per_speaker must be >= 2, got 1"),
    (["--student.hidden_size", "0"], "student.hidden_size must be >= 1, got 0"),
    (["--ig.n_steps", "1"], "n_steps must be >= 2"),
    # used to pass the config and end in captum's AssertionError traceback at the first batch
    (["--ig.method", "gauss_legendre"], "ig: method must be one of"),
    (["--table.methods", "[imlkdd]"], "table.methods must be a non-empty list"),
])
def test_train_speaker_start_up_errors_are_one_line(tmp_path, monkeypatch, capsys, extra,
                                                    message):
    _resemblyzer()
    monkeypatch.chdir(REPO)
    train, test = _data(tmp_path)
    (tmp_path / "notmodel.pt").write_text("hello\n")
    argv = ["train", "--config", "configs/imlkd_speaker.yaml",
            *_tiny_args(tmp_path, train, test), *[e.format(root=tmp_path) for e in extra]]
    line = _main_error(argv, capsys)
    assert line.startswith("robustdistill train-speaker: error:")
    assert message.format(root=tmp_path) in line
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing started


def test_train_speaker_refuses_an_empty_config(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    line = _main_error(["train", "--config", str(empty)], capsys)
    assert f"{empty}: the config file is empty" in line


def test_train_speaker_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train_dir: [a\nx: 1\n")
    line = _main_error(["train", "--config", str(bad)], capsys)
    assert f"{bad}" in line and "invalid YAML" in line and "line 3" in line


def test_train_speaker_table_error_during_training_keeps_its_traceback(tmp_path, monkeypatch):
    # Only start-up errors become one usage line; a FileNotFoundError raised while training
    # (a cache folder deleted hours in) must surface as itself, not as "error: ..." exit 2.
    _resemblyzer()
    from robustdistill.speaker import table as table_mod
    from robustdistill.speaker.cli import main

    monkeypatch.chdir(REPO)
    train, test = _data(tmp_path)

    def vanished(*args, **kwargs):
        raise FileNotFoundError("attribution cache folder vanished")

    monkeypatch.setattr(table_mod, "train_system", vanished)
    with pytest.raises(FileNotFoundError, match="vanished"):
        main(["table", "--config", "configs/imlkd_speaker.yaml",
              *_tiny_args(tmp_path, train, test), "--table.output_dir",
              str(tmp_path / "table"), "--table.seeds", "[0]"])


@pytest.mark.parametrize("action", ["cache", "gap"])
@pytest.mark.parametrize("extra, message", [
    (["--data.train_dir", "{root}/no_train"], "audio path does not exist: {root}/no_train"),
    (["--teacher", "{root}/nope.pt"], "teacher file not found: {root}/nope.pt"),
])
def test_train_speaker_cache_and_gap_input_errors_are_one_line(tmp_path, monkeypatch, capsys,
                                                               action, extra, message):
    _resemblyzer()
    monkeypatch.chdir(REPO)
    train, test = _data(tmp_path)
    gap_only = ["--steps", "2,4", "--crops", "2"] if action == "gap" else []
    argv = [action, "--config", "configs/imlkd_speaker.yaml", *_tiny_args(tmp_path, train, test),
            *gap_only, *[e.format(root=tmp_path) for e in extra]]
    line = _main_error(argv, capsys)
    assert line.startswith("robustdistill train-speaker: error:")
    assert message.format(root=tmp_path) in line
    assert not (tmp_path / "cache").exists()  # nothing attributed


def _no_inputs(monkeypatch) -> None:
    """Loading the teacher or the audio fails the test: the error must come before it (in
    main, and in the functions that load their own inputs when given none)."""
    from robustdistill.speaker import cli as cli_mod
    from robustdistill.speaker import ig as ig_mod
    from robustdistill.speaker import table as table_mod

    def loaded(*args, **kwargs):
        raise AssertionError("the inputs were loaded before the argument error")

    for module in (cli_mod, ig_mod):
        monkeypatch.setattr(module, "load_ig_inputs", loaded)
    for module in (cli_mod, table_mod):
        monkeypatch.setattr(module, "load_run_inputs", loaded)


@pytest.mark.parametrize("extra, message", [
    (["--steps", "4,x"], "--steps must be comma-separated integers >= 2 (IG n_steps), got '4,x'"),
    (["--steps", ""], "--steps must be comma-separated integers >= 2 (IG n_steps), got ''"),
    (["--steps", "4,,8"], "got '4,,8'"),
    (["--steps", "0"], "got '0'"),
    (["--steps", "1,4"], "got '1,4'"),
    (["--steps=-3"], "got '-3'"),
    (["--crops", "0"], "--crops must be >= 1, got 0"),
    (["--crops", "-2"], "--crops must be >= 1, got -2"),
])
def test_train_speaker_gap_refuses_bad_steps_and_crops_in_one_line(monkeypatch, capsys, extra,
                                                                   message):
    monkeypatch.chdir(REPO)
    _no_inputs(monkeypatch)
    line = _main_error(["gap", "--config", "configs/imlkd_speaker.yaml", *extra], capsys)
    assert line.startswith("robustdistill train-speaker: error: --") and message in line


@pytest.mark.parametrize("action", ["train", "table", "cache"])
@pytest.mark.parametrize("extra, given", [
    (["--steps", "2,4"], "--steps is"),
    (["--steps", "4,8,16,32"], "--steps is"),  # gap's default, but given: refused all the same
    (["--crops", "4"], "--crops is"),
    (["--crops=0"], "--crops is"),  # refused for the action, whatever the value
    (["--crops", "2", "--steps", "8"], "--steps and --crops are"),
])
def test_train_speaker_refuses_steps_and_crops_outside_gap(tmp_path, monkeypatch, capsys, action,
                                                           extra, given):
    # only gap reads them: ignored by the other actions, a user would believe they took effect
    monkeypatch.chdir(tmp_path)
    _no_inputs(monkeypatch)
    train, test = _data(tmp_path)
    argv = [action, "--config", str(REPO / "configs" / "imlkd_speaker.yaml"),
            *_tiny_args(tmp_path, train, test), *extra]
    line = _main_error(argv, capsys)
    assert line == f"robustdistill train-speaker: error: {given} read by gap only, not by {action}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test", "train"]  # nothing started


def test_train_speaker_gap_defaults_apply_when_steps_and_crops_are_not_given(monkeypatch):
    from robustdistill.speaker import cli as cli_mod

    calls = []
    monkeypatch.setattr(cli_mod, "load_ig_inputs", lambda cfg, per_utterance=None: ("t", ["c"]))
    monkeypatch.setattr(cli_mod, "completeness_by_steps",
                        lambda cfg, steps, num_crops, inputs=None: calls.append((steps,
                                                                                 num_crops)) or {})
    config = str(REPO / "configs" / "imlkd_speaker.yaml")
    assert cli_mod.main(["gap", "--config", config]) == 0
    assert cli_mod.main(["gap", "--config", config, "--crops", "2"]) == 0
    assert cli_mod.main(["gap", "--config", config, "--steps", "16,2"]) == 0
    assert calls == [([4, 8, 16, 32], 4), ([4, 8, 16, 32], 2), ([2, 16], 4)]


def test_completeness_by_steps_refuses_no_crops_or_steps_before_loading(monkeypatch):
    from robustdistill.speaker.config import SpeakerKDConfig
    from robustdistill.speaker.ig import completeness_by_steps

    _no_inputs(monkeypatch)
    cfg = SpeakerKDConfig()
    with pytest.raises(ValueError, match="num_crops must be >= 1, got 0"):
        completeness_by_steps(cfg, [4, 8], 0)
    for steps in ([], [1, 4]):
        with pytest.raises(ValueError, match="steps must be IG n_steps values >= 2"):
            completeness_by_steps(cfg, steps, 2)


def test_train_speaker_gap_steps_are_sorted_once():
    from robustdistill.speaker.ig import parse_gap_steps

    assert parse_gap_steps(" 16,4,8,4") == [4, 8, 16]


@pytest.mark.parametrize("action, extra, message", [  # "''": YAML's empty string
    ("cache", ["--ig.cache_dir", "''"], "ig.cache_dir must name a folder"),
    ("cache", ["--ig.use_cache", "false"], "cache fills ig.cache_dir, but ig.use_cache is false"),
    ("cache", ["--ig.cache_dir", "{root}/afile"], "{root}/afile is a file, not a folder"),
    ("cache", ["--ig.cache_dir", "{root}/afile/maps"], "{root}/afile is a file, not a folder"),
    ("table", ["--table.output_dir", "''"], "table.output_dir must name a folder"),
    ("table", ["--table.output_dir", "{root}/afile"], "{root}/afile is a file, not a folder"),
    ("table", ["--ig.cache_dir", "{root}/afile"], "{root}/afile is a file, not a folder"),
    ("table", ["--table.seeds", "[0, 1, 0]"], "table.seeds must not repeat an entry"),
    ("table", ["--table.methods", "[none, imlkd, none]"],
     "table.methods must not repeat an entry"),
    ("train", ["--training.output_dir", "{root}/afile"], "{root}/afile is a file, not a folder"),
    ("train", ["--training.output_dir", "''"], "training.output_dir must name a folder"),
])
def test_train_speaker_cache_and_table_bad_folders_and_lists_are_one_line(
        tmp_path, monkeypatch, capsys, action, extra, message):
    # an empty folder name would be the working folder: the maps or runs would land there
    monkeypatch.chdir(tmp_path)
    _no_inputs(monkeypatch)
    train, test = _data(tmp_path)
    (tmp_path / "afile").write_text("not a folder\n")
    argv = [action, "--config", str(REPO / "configs" / "imlkd_speaker.yaml"),
            *_tiny_args(tmp_path, train, test), *[e.format(root=tmp_path) for e in extra]]
    line = _main_error(argv, capsys)
    assert line.startswith("robustdistill train-speaker: error:")
    assert message.format(root=tmp_path) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "test", "train"]


def test_an_empty_ig_cache_dir_is_fine_without_a_cache():
    from robustdistill.speaker.config import IGConfig

    assert IGConfig(cache_dir="", use_cache=False).cache_dir == ""  # no cache: no folder needed
    with pytest.raises(ValueError, match="ig.cache_dir must name a folder"):
        IGConfig(cache_dir="", use_cache=True)


@pytest.mark.parametrize("action", ["cache", "gap"])
def test_train_speaker_cache_and_gap_errors_during_the_work_keep_their_traceback(
        tmp_path, monkeypatch, action):
    # Only input errors become one usage line; a FileNotFoundError raised once the maps are
    # being computed (a cache folder deleted hours in) must surface as itself, not exit 2.
    _resemblyzer()
    from robustdistill.speaker import ig as ig_mod
    from robustdistill.speaker.cli import main

    monkeypatch.chdir(REPO)
    train, test = _data(tmp_path)
    calls = []

    def vanished(*args, **kwargs):
        calls.append(args)
        raise FileNotFoundError("attribution cache folder vanished")

    monkeypatch.setattr(ig_mod, "attribute_segments", vanished)
    gap_only = ["--steps", "2,4", "--crops", "2"] if action == "gap" else []
    with pytest.raises(FileNotFoundError, match="vanished"):
        main([action, "--config", "configs/imlkd_speaker.yaml",
              *_tiny_args(tmp_path, train, test), *gap_only])
    assert len(calls) == 1  # the inputs loaded, the work started


def test_train_speaker_refuses_a_used_run_folder_in_one_line(tmp_path, monkeypatch, capsys):
    """A fresh run into a run folder with checkpoints, or a resume with other settings, ends
    in one usage line before any input is loaded."""
    _resemblyzer()
    from robustdistill.speaker.cli import main

    monkeypatch.chdir(REPO)
    train, test = _data(tmp_path)
    args = ["train", "--config", "configs/imlkd_speaker.yaml", *_tiny_args(tmp_path, train, test),
            "--loss.method", "none"]
    assert main(args) == 0
    line = _main_error(args, capsys)
    assert "holds checkpoints of an earlier run" in line and "--training.resume true" in line
    line = _main_error([*args, "--training.resume", "true", "--training.lr", "0.5"], capsys)
    assert "was trained with other settings" in line and "training.lr" in line
    # the same training folder spelt relative to the working folder is the same setting
    relative = os.path.relpath(train, REPO)
    assert main([*args, "--data.train_dir", relative, "--training.resume", "true",
                 "--training.epochs", "2"]) == 0


def test_train_speaker_with_a_diverging_learning_rate_stops_in_one_line(tmp_path, monkeypatch,
                                                                        capsys):
    """``--training.lr`` under the AdamW limit but absurd: the first epoch's last update turns
    the weights NaN/Inf, with finite losses. The run went on to evaluate them (a "scores
    contain NaN or Inf" traceback; a NaN loss was a ``FloatingPointError`` traceback after the
    whole epoch); now one line, exit status 1, naming the step and the weights."""
    _resemblyzer()
    from robustdistill.speaker.cli import main

    monkeypatch.chdir(REPO)
    train, test = _data(tmp_path)
    args = ["train", "--config", "configs/imlkd_speaker.yaml", *_tiny_args(tmp_path, train, test),
            "--loss.method", "none", "--training.lr", "3e37"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("robustdistill train-speaker: error: stopped at epoch 1, batch 2 of "
                           "2: its update made weights NaN/Inf (encoder.lstm.")
    assert ", with training.lr=3e+37 and training.max_grad_norm=5; those weights were not saved" \
        in line
    assert line.endswith("no checkpoint of this run was saved: lower training.lr, set a smaller "
                         "training.max_grad_norm or check the data, and start again (the same "
                         "folder will do, it holds none)")
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert not (tmp_path / "out" / "result.json").exists()


def _as_before_min_lengths(run: Path) -> None:
    """Make ``run`` a run finished before data.min_length_s / data.min_test_length_s: its
    result.json's config and its checkpoints' settings without them."""
    result = json.loads((run / "result.json").read_text())
    for key in ("min_length_s", "min_test_length_s"):
        result["config"]["data"].pop(key, None)
    (run / "result.json").write_text(json.dumps(result))
    for settings in (run / "checkpoints").glob("*/speaker_run.json"):
        saved = json.loads(settings.read_text())
        saved.pop("data.min_length_s", None)
        settings.write_text(json.dumps(saved))
        manifest = settings.parent / "checkpoint.json"  # its sizes, as that run wrote them
        listed = json.loads(manifest.read_text())
        listed["files"]["speaker_run.json"] = settings.stat().st_size
        manifest.write_text(json.dumps(listed))


def test_table_reuses_a_run_from_before_the_minimum_lengths_only_if_no_file_is_under_them(
        tmp_path, monkeypatch, capsys, caplog):
    """A table run finished before data.min_length_s / data.min_test_length_s lacks them in
    its config: it was retrained (hours) though it would be unchanged. It is reused exactly
    when no file of the inputs is under the minimums; else not (a too-short test file: a
    resume evaluates it again, its weights being unchanged; a too-short training file: a
    resume is refused, the weights trained on it zero-padded). Each is logged."""
    _resemblyzer()
    from robustdistill.speaker import table as table_mod
    from robustdistill.speaker.cli import main

    monkeypatch.chdir(REPO)
    caplog.set_level(logging.INFO, logger="robustdistill.speaker")
    train, test = _data(tmp_path)
    args = _tiny_table_args(tmp_path, train, test)
    assert main(args) == 0
    run = tmp_path / "table" / "none_seed0"
    before = json.loads((run / "result.json").read_text())
    _as_before_min_lengths(run)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(table_mod, "train_system", no_training)
    caplog.clear()
    assert main(args) == 0  # nothing under the minimums: unchanged, reused
    assert (f"reusing {run / 'result.json'}, made before data.min_length_s and "
            "data.min_test_length_s (2026-12-07): none of its input files is shorter than that "
            "now, so it is unchanged") in caplog.text
    table = json.loads((tmp_path / "table" / "results.json").read_text())
    assert table["systems"]["none"][0]["eval"] == before["eval"]

    # a 10 ms test utterance: that run scored it; a run now skips it
    _noise(test / "41" / "41-1-9.wav", seconds=0.01, seed=4)
    caplog.clear()
    line = _main_error(args, capsys)
    assert (f"not reusing {run / 'result.json'}: it was made before data.min_length_s and "
            "data.min_test_length_s (2026-12-07), and 1 of its input files is now shorter than "
            "that (test_other 1), which it used and a run now skips") in caplog.text
    assert "holds checkpoints of an earlier run" in line and "--training.resume true" in line
    monkeypatch.undo()
    monkeypatch.chdir(REPO)
    assert main([*args, "--training.resume", "true"]) == 0  # its weights, evaluated again
    after = json.loads((run / "result.json").read_text())
    assert after["config"]["data"]["min_test_length_s"] == 0.1
    assert after["skipped_files"] == {"test_other": {"too short": 1}}
    assert after["epochs"] == before["epochs"]  # no epoch trained again
    assert after["eval"]["test_other"]["target_trials"] == \
        before["eval"]["test_other"]["target_trials"]  # 10 ms: in no trial

    # a 10 ms training utterance: that run trained on it zero-padded: a resume is refused
    _as_before_min_lengths(run)
    _noise(train / "19-999-0000.wav", seconds=0.01, seed=3)
    caplog.clear()
    line = _main_error([*args, "--training.resume", "true"], capsys)
    assert "2 of its input files are now shorter than that (train 1, test_other 1)" in caplog.text
    assert line.endswith(f"{run / 'checkpoints' / 'epoch_1'} was trained before "
                         "data.min_length_s (2026-12-07) on 1 training file(s) now skipped as "
                         "shorter than 0.1 s (it used them zero-padded); a resume would report "
                         "it as a run without them (allowed: another table.output_dir, or remove "
                         "that folder to start again)")
    # so does train's resume of that folder, once its inputs are loaded
    line = _main_error(["train", "--config", "configs/imlkd_speaker.yaml",
                        *_tiny_args(tmp_path, train, test), "--loss.method", "none",
                        "--training.seed", "0", "--training.output_dir", str(run),
                        "--training.resume", "true"], capsys)
    assert line.startswith(f"robustdistill train-speaker: error: {run / 'checkpoints' / 'epoch_1'} "
                           "was trained before data.min_length_s (2026-12-07) on 1 training")
    assert line.endswith("(allowed: another training.output_dir, or remove that folder to start "
                         "again)")


@pytest.mark.parametrize(("missing", "short", "reused"), [
    (["min_length_s", "min_test_length_s"], {}, True),
    (["min_length_s", "min_test_length_s"], {"fsdd": "too short"}, False),
    (["min_test_length_s"], {"train": "too short"}, True),  # it skipped them already
    (["min_length_s"], {"test_other": "too short"}, True),
    (["min_length_s"], {"train": "too short"}, False),
    (["min_length_s", "min_test_length_s"], {"train": "silent"}, True),  # skipped before too
    ([], {"train": "too short"}, True),  # a run of today: its config has the minimums
])
def test_finished_run_weighs_only_the_minimums_the_run_lacks(tmp_path, missing, short, reused):
    from downstream.config import from_dict, to_dict
    from robustdistill.speaker.config import SpeakerKDConfig
    from robustdistill.speaker.table import finished_run, reuse_awaits_inputs

    cfg = from_dict(SpeakerKDConfig, {"loss": {"method": "none"},
                                      "training": {"output_dir": str(tmp_path / "run")}})
    config = to_dict(cfg)
    for key in missing:
        del config["data"][key]
    (tmp_path / "run").mkdir()
    eval_ = {"test_other": {"eer": 0.1, "min_dcf": 0.5}, "fsdd": {"eer": 0.2, "min_dcf": 0.6}}
    (tmp_path / "run" / "result.json").write_text(json.dumps({"config": config, "params": 1000,
                                                                "eval": eval_}))
    skipped = {name: {f"/data/{name}/x.wav": reason} for name, reason in short.items()}
    assert reuse_awaits_inputs(cfg) == bool(missing)
    assert (finished_run(cfg, skipped) is not None) == reused
    assert (finished_run(cfg) is not None) == (not missing)  # inputs not loaded: undecided
    cfg.data.crop_seconds = 1.5  # any other change still counts
    assert finished_run(cfg, {}) is None and not reuse_awaits_inputs(cfg)
