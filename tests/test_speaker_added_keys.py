"""``train-speaker``: runs made before a setting existed (``added_keys.ADDED_KEYS``, one table
read by the table's reuse and by a resume) and ``data.min_length_s`` compared by what it does
(``added_keys.SAME_EFFECT``: the training minimum is the smaller of it and
``data.crop_seconds``, so with 2 s crops 3 s and 4 s train on the same files)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_speaker_bad_input import _data, _main_error, _resemblyzer, _tiny_args, _tiny_table_args

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, **data):
    from downstream.config import from_dict
    from robustdistill.speaker.config import SpeakerKDConfig

    return from_dict(SpeakerKDConfig, {  # test_other only: the set _finished evaluated
        "data": {"crop_seconds": 2.0, "fsdd_dir": None, **data}, "loss": {"method": "none"},
        "training": {"output_dir": str(tmp_path / "run"), "epochs": 2, "resume": True}})


def _finished(cfg) -> None:
    """A finished, evaluated run of ``cfg`` in its folder (``result.json`` only)."""
    from downstream.config import to_dict

    Path(cfg.training.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.training.output_dir) / "result.json").write_text(json.dumps(
        {"config": to_dict(cfg), "params": 1000,
         "eval": {"test_other": {"eer": 0.1, "min_dcf": 0.5}}}))


def _checkpoint(cfg, drop: tuple[str, ...] = ()) -> Path:
    """``checkpoints/epoch_1`` of a run of ``cfg`` (its settings without ``drop``)."""
    from robustdistill.speaker.run_folder import weight_settings

    epoch = Path(cfg.training.output_dir) / "checkpoints" / "epoch_1"
    epoch.mkdir(parents=True)
    settings = {k: v for k, v in weight_settings(cfg).items() if k not in drop}
    (epoch / "speaker_run.json").write_text(json.dumps(settings))
    return epoch


@pytest.mark.parametrize(("trained", "now", "crop", "same"), [
    (3.0, 4.0, 2.0, True),   # the 2 s crop is the minimum either way
    (2.0, 3.0, 2.0, True),   # min(2, 2) = min(3, 2)
    (1.0, 1.5, 2.0, False),  # 1 s -> 1.5 s: other files may be skipped
    (3.0, 1.5, 2.0, False),  # 2 s -> 1.5 s
])
def test_min_length_s_is_compared_by_the_training_minimum_it_gives(tmp_path, caplog, trained,
                                                                   now, crop, same):
    """A resume, and the table's reuse of a finished run, with another ``data.min_length_s``
    go on exactly when ``min(min_length_s, crop_seconds)`` is unchanged (before: every change
    was refused, a resume in one line and the table by training the run again), logged."""
    from robustdistill.speaker.run_folder import check_run_folder, resume_changes
    from robustdistill.speaker.table import finished_run

    caplog.set_level(logging.INFO, logger="robustdistill.speaker")
    old = _config(tmp_path, min_length_s=trained, crop_seconds=crop)
    _finished(old)
    epoch = _checkpoint(old)
    cfg = _config(tmp_path, min_length_s=now, crop_seconds=crop)
    why = (f"data.min_length_s {trained} -> {now}: with data.crop_seconds {crop:g}, training "
           f"files shorter than {min(now, crop):g} s are skipped either way (the smaller of the "
           "two: DataConfig.min_train_seconds)")
    if same:
        assert check_run_folder(cfg) == (epoch, 1)
        assert finished_run(cfg, {})["eval"] == {"test_other": {"eer": 0.1, "min_dcf": 0.5}}
        assert caplog.messages == [
            f"resuming {epoch} although {why}, so the run is unchanged",
            f"reusing {epoch.parents[1] / 'result.json'} although {why}, so it is unchanged"]
        caplog.clear()
        assert check_run_folder(cfg, log=False) == (epoch, 1)
        assert finished_run(cfg, {}, log=False) is not None and caplog.messages == []
        # the resume's environment.json record keeps the change (the card lists it)
        assert resume_changes(cfg, epoch) == [f"data.min_length_s {trained} -> {now}"]
        assert resume_changes(old, epoch) == []
    else:
        with pytest.raises(ValueError, match=rf"epoch_1 was trained with other settings; "
                                             rf"resuming would not continue that run: "
                                             rf"data.min_length_s {trained} -> {now} \(allowed"):
            check_run_folder(cfg)
        assert finished_run(cfg, {}) is None and caplog.messages == []
    # every other setting is compared as before: the crop too
    cfg.data.crop_seconds = 1.0
    with pytest.raises(ValueError, match=r"data.crop_seconds 2.0 -> 1.0"):
        check_run_folder(cfg)
    assert finished_run(cfg, {}) is None


def test_a_key_added_later_is_one_entry_read_by_reuse_and_resume(tmp_path, monkeypatch, caplog):
    """``ADDED_KEYS`` is the one place that knows of settings added later: an entry for a
    third key (here ``data.crops_per_utterance``, as if new) is honoured by the table's reuse
    and by a resume alike, its test's verdict and reason as written, with no other code."""
    from robustdistill.speaker import added_keys
    from robustdistill.speaker.run_folder import check_run_folder
    from robustdistill.speaker.table import finished_run, reuse_awaits_inputs

    caplog.set_level(logging.INFO, logger="robustdistill.speaker")
    cfg = _config(tmp_path)
    _finished(cfg)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    del result["config"]["data"]["crops_per_utterance"]
    (tmp_path / "run" / "result.json").write_text(json.dumps(result))
    epoch = _checkpoint(cfg, drop=("data.crops_per_utterance",))
    seen = []

    def test(run_cfg, run):
        seen.append((tuple(run.missing), run.added, run.resume))
        if run.skipped is None:
            return added_keys.Verdict(None)
        if run.skipped.get("train"):
            return added_keys.Verdict(False, "trained on other crops" if run.resume else
                                      "it cut other crops")
        return added_keys.Verdict(True, "" if run.resume else "its crops are the same")

    entry = added_keys.AddedKeys(("data.crops_per_utterance",), "2027-01-01", test)
    monkeypatch.setattr(added_keys, "ADDED_KEYS", (*added_keys.ADDED_KEYS, entry))
    short = {"train": {"/x.wav": "too short"}}
    done = tmp_path / "run" / "result.json"
    assert reuse_awaits_inputs(cfg) and finished_run(cfg) is None
    assert finished_run(cfg, {})["eval"] == result["eval"]
    assert finished_run(cfg, short) is None
    assert caplog.messages == [f"reusing {done}, its crops are the same",
                               f"not reusing {done}: it cut other crops"]
    assert check_run_folder(cfg) == (epoch, 1)  # inputs not loaded yet
    with pytest.raises(ValueError) as refused:
        check_run_folder(cfg, skipped=short)
    assert str(refused.value) == (f"{epoch} trained on other crops (allowed: another "
                                  "training.output_dir, or remove that folder to start again)")
    assert {s[:2] for s in seen} == {(("data.crops_per_utterance",), "2027-01-01")}
    assert {s[2] for s in seen} == {False, True}
    # without the entry the key is an ordinary setting: the config differs, no reuse
    monkeypatch.undo()
    assert finished_run(cfg, {}) is None and not reuse_awaits_inputs(cfg)


def test_train_resumes_after_a_min_length_s_change_that_changes_nothing_trained(
        tmp_path, monkeypatch, capsys, caplog):
    """``train-speaker train``: 1 epoch with ``data.min_length_s 0.3`` (0.2 s crops: the
    minimum is 0.2 s), resumed to 2 epochs with 0.4, ends with the weights of 2 epochs with 0.4
    straight, logging once why it went on (before: refused, "trained with other settings");
    0.15, which lowers the minimum, is still refused."""
    _resemblyzer()
    from robustdistill.speaker.cli import main

    monkeypatch.chdir(REPO)
    caplog.set_level(logging.INFO, logger="robustdistill.speaker")
    train, test = _data(tmp_path)
    args = ["train", "--config", "configs/imlkd_speaker.yaml", *_tiny_args(tmp_path, train, test),
            "--loss.method", "none"]
    straight, part = tmp_path / "straight", tmp_path / "part"
    assert main([*args, "--data.min_length_s", "0.4", "--training.epochs", "2",
                 "--training.output_dir", str(straight)]) == 0
    assert main([*args, "--data.min_length_s", "0.3", "--training.output_dir", str(part)]) == 0
    resume = [*args, "--training.epochs", "2", "--training.resume", "true",
              "--training.output_dir", str(part)]
    line = _main_error([*resume, "--data.min_length_s", "0.15"], capsys)
    assert line.endswith("epoch_1 was trained with other settings; resuming would not continue "
                         "that run: data.min_length_s 0.3 -> 0.15 (allowed: the same settings, "
                         "or another training.output_dir)")
    caplog.clear()
    assert main([*resume, "--data.min_length_s", "0.4"]) == 0
    said = [m for m in caplog.messages if m.startswith("resuming ")]
    assert said == [f"resuming {part / 'checkpoints' / 'epoch_1'} although data.min_length_s "
                    "0.3 -> 0.4: with data.crop_seconds 0.2, training files shorter than 0.2 s "
                    "are skipped either way (the smaller of the two: "
                    "DataConfig.min_train_seconds), so the run is unchanged"]
    a = load_file(straight / "student" / "model.safetensors")
    b = load_file(part / "student" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    result = json.loads((part / "result.json").read_text())
    assert result["config"]["data"]["min_length_s"] == 0.4 and len(result["epochs"]) == 2
    # config.yaml and result.json say 0.4; epoch 1 ran with 0.3: the resume's record says so,
    # and so does the card (before: nothing on disk kept it once epoch_1 was rotated out)
    from robustdistill.environment import describe_config_changes

    records = json.loads((part / "environment.json").read_text())
    assert [r.get("config_changes") for r in records] == [None, ["data.min_length_s 0.3 -> 0.4"]]
    assert describe_config_changes(records) == "at epoch 1: data.min_length_s 0.3 -> 0.4"
    assert "config_changes" not in json.loads((straight / "environment.json").read_text())[0]
    assert result["eval"] == json.loads((straight / "result.json").read_text())["eval"]


def test_the_table_reuses_a_run_whose_min_length_s_change_changes_nothing(
        tmp_path, monkeypatch, capsys, caplog):
    """``train-speaker table`` with ``data.min_length_s`` 0.3 -> 0.4 (0.2 s crops) reuses the
    finished run, logged (before: trained again, or refused for its checkpoints); with 0.15 it
    is not reused and a fresh table is refused as before."""
    _resemblyzer()
    from robustdistill.speaker import table as table_mod
    from robustdistill.speaker.cli import main

    monkeypatch.chdir(REPO)
    caplog.set_level(logging.INFO, logger="robustdistill.speaker")
    train, test = _data(tmp_path)
    args = _tiny_table_args(tmp_path, train, test)
    assert main([*args, "--data.min_length_s", "0.3"]) == 0
    run = tmp_path / "table" / "none_seed0"
    before = json.loads((run / "result.json").read_text())

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(table_mod, "train_system", no_training)
    caplog.clear()
    assert main([*args, "--data.min_length_s", "0.4"]) == 0
    said = (f"reusing {run / 'result.json'} although data.min_length_s 0.3 -> 0.4: with "
            "data.crop_seconds 0.2, training files shorter than 0.2 s are skipped either way "
            "(the smaller of the two: DataConfig.min_train_seconds), so it is unchanged")
    assert caplog.messages.count(said) == 1  # once: not by the start-up checks too
    table = json.loads((tmp_path / "table" / "results.json").read_text())
    assert table["systems"]["none"][0]["eval"] == before["eval"]
    line = _main_error([*args, "--data.min_length_s", "0.15"], capsys)
    assert "holds checkpoints of an earlier run" in line


_WRONG = "is not a result.json as train-speaker writes it: "


def _damaged(cfg, field: str, value) -> str:
    """The text of :func:`_finished`'s ``result.json`` with ``field`` (dotted) set to
    ``value`` (removed for ``...``)."""
    record = json.loads((Path(cfg.training.output_dir) / "result.json").read_text())
    *sections, last = field.split(".")
    inner = record
    for section in sections:
        inner = inner[section]
    if value is ...:
        del inner[last]
    else:
        inner[last] = value
    return json.dumps(record)


@pytest.mark.parametrize(("text", "says"), [
    ("[1]", "holds a JSON list, not a result.json object"),
    ('{"eval": ', "is not a readable result.json (Expecting value"),
    (b"\xff\xfe", "is not a readable result.json ('utf-8' codec can't decode"),
    # a field the table reads of another structure (until 2026-12-08: a KeyError or a
    # TypeError when the table was written, or a score compared as a string)
    (("eval.test_other.eer", "0.1"),
     _WRONG + 'eval.test_other.eer is "0.1" (a JSON string), not a number or null'),
    (("eval.test_other.min_dcf", ...), _WRONG + "eval.test_other has no min_dcf"),
    # a score no run writes (until 2026-12-08: a table row of 2750.00 %, a card alike)
    (("eval.test_other.eer", 27.5), _WRONG + "eval.test_other.eer is 27.5 (a JSON number), "
                                             "outside [0, 1] (a fraction, not a percentage)"),
    (("eval.test_other.min_dcf", -0.25), _WRONG + "eval.test_other.min_dcf is -0.25 (a JSON "
                                                  "number), outside [0, 1] (a fraction, not a "
                                                  "percentage)"),
    # nested past the parser's depth (until 2026-12-08: a RecursionError traceback)
    ("[" * 100_000 + "]" * 100_000, "is not a readable result.json (maximum recursion depth "
                                    "exceeded"),
    (("eval.test_other", 0.1), _WRONG + "eval.test_other is 0.1 (a JSON number), not an object"),
    (("eval", [0.1, 0.5]), _WRONG + "eval is a JSON array, not an object of verification sets"),
    (("config", "none"), _WRONG + 'config is "none" (a JSON string), not an object'),
    (("config.loss", ...), _WRONG + "config has no loss"),
    (("config.loss.method", None), _WRONG + "config.loss.method is null, not a string"),
    (("config.training", []), _WRONG + "config.training is a JSON array, not an object"),
    (("params", ...), _WRONG + "it has no params"),
    (("params", "1,000"), _WRONG + 'params is "1,000" (a JSON string), not an integer'),
])
def test_an_unreadable_result_json_is_one_error_naming_it(tmp_path, text, says):
    """A ``result.json`` that is not JSON, JSON but not an object, or an object whose fields
    the table reads are missing (``params``) or of another structure, is refused naming the
    file and the field (a ``ValueError``, one usage line in the command), not an
    ``AttributeError``, a ``KeyError`` when the table is written or a message without the
    path."""
    from robustdistill.speaker.table import finished_run

    cfg = _config(tmp_path)
    _finished(cfg)
    done = tmp_path / "run" / "result.json"
    if isinstance(text, bytes):
        done.write_bytes(text)
    else:
        done.write_text(text if isinstance(text, str) else _damaged(cfg, *text))
    with pytest.raises(ValueError) as refused:
        finished_run(cfg, {})
    assert str(refused.value).startswith(f"{done} {says}")
    assert str(refused.value).endswith("; move it away to train that run again")
    assert "\n" not in str(refused.value)


def test_a_matching_run_without_a_set_its_config_names_is_refused_naming_it(tmp_path):
    """A finished run whose config matches but whose ``eval`` lacks a set that config names
    (an edited file: ``fsdd`` removed with ``data.fsdd_dir`` set) is refused in one line
    naming the file and the set (until 2026-12-08: reused, then a ``KeyError: 'fsdd'`` when
    ``table.md`` was written, after the teacher was evaluated and every other run trained). A
    set it holds beyond the config's is no fault."""
    from robustdistill.speaker.table import finished_run

    cfg = _config(tmp_path, fsdd_dir="x/fsdd")
    _finished(cfg)
    done = tmp_path / "run" / "result.json"
    with pytest.raises(ValueError) as refused:
        finished_run(cfg, {})
    assert str(refused.value) == (f"{done} {_WRONG}eval has no fsdd, a set its config names "
                                  "(data.fsdd_dir); move it away to train that run again")
    both = {"test_other": {"eer": 0.1, "min_dcf": 0.5}, "fsdd": {"eer": 0.2, "min_dcf": 0.6}}
    done.write_text(_damaged(cfg, "eval", both))
    assert finished_run(cfg, {})["eval"] == both
    cfg = _config(tmp_path)  # no data.fsdd_dir: an fsdd entry beyond it is no fault
    _finished(cfg)
    done.write_text(_damaged(cfg, "eval", both))
    assert finished_run(cfg, {})["eval"] == both


def test_a_result_json_with_null_scores_and_no_optional_fields_is_reused(tmp_path):
    """What :func:`_finished` writes, with a ``null`` (non-finite) EER and the trial counts:
    reused, the EER read as NaN; fields the table does not need (``skipped_files``,
    ``map_frames``) may be absent."""
    import math

    from robustdistill.speaker.table import finished_run

    cfg = _config(tmp_path)
    _finished(cfg)
    done = tmp_path / "run" / "result.json"
    done.write_text(_damaged(cfg, "eval.test_other", {"eer": None, "min_dcf": 1.0,
                                                      "target_trials": 4,
                                                      "nontarget_trials": 6}))
    reused = finished_run(cfg, {})
    assert math.isnan(reused["eval"]["test_other"]["eer"]) and reused["params"] == 1000
    assert reused["eval"]["test_other"]["min_dcf"] == 1.0  # a trivial system's: in range
    assert reused["eval"]["test_other"]["nontarget_trials"] == 6


def _chmod_unreadable(path: Path) -> None:
    """``chmod 000`` on ``path``; the test is skipped where the process reads it all the same
    (root: ``os.geteuid() == 0`` with ``CAP_DAC_OVERRIDE``)."""
    import os

    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        return
    path.chmod(0o644)
    pytest.skip(f"chmod 000 does not keep this process (euid {os.geteuid()}) from reading")


def test_a_result_json_the_process_cannot_read_is_one_error_naming_it(tmp_path):
    """A folder named ``result.json`` or a link to nothing (each was taken for a missing
    file: the run was checked as one to train again) and a file without read permission (an
    ``OSError`` traceback) are refused in one line naming them."""
    from robustdistill.speaker.table import finished_run

    cfg = _config(tmp_path)
    _finished(cfg)
    done = tmp_path / "run" / "result.json"
    good = done.read_text()
    done.unlink()
    done.mkdir()
    with pytest.raises(ValueError) as refused:
        finished_run(cfg, {})
    assert str(refused.value) == (f"{done} is not a readable result.json (Is a directory); "
                                  "move it away to train that run again")
    done.rmdir()
    done.symlink_to(tmp_path / "elsewhere.json")  # a link to nothing: refused, not "missing"
    with pytest.raises(ValueError) as refused:
        finished_run(cfg, {})
    assert str(refused.value) == (f"{done} is not a readable result.json (No such file or "
                                  "directory); move it away to train that run again")
    done.unlink()
    done.write_text(good)
    _chmod_unreadable(done)
    try:
        with pytest.raises(ValueError) as refused:
            finished_run(cfg, {})
    finally:
        done.chmod(0o644)
    assert str(refused.value) == (f"{done} is not a readable result.json (Permission denied); "
                                  "move it away to train that run again")


def test_the_card_refuses_an_unreadable_result_json_with_its_own_advice(tmp_path):
    """The card reads ``result.json`` through the table's reader: the same first part, its
    own advice."""
    from robustdistill.publish.provenance import read_run_result
    from robustdistill.speaker.table import finished_run

    cfg = _config(tmp_path)
    _finished(cfg)
    done = tmp_path / "run" / "result.json"
    done.write_text(_damaged(cfg, "eval.test_other.eer", True))
    with pytest.raises(ValueError) as by_table:
        finished_run(cfg, {})
    with pytest.raises(ValueError) as by_card:
        read_run_result(tmp_path / "run")
    first = f"{done} {_WRONG}eval.test_other.eer is true (a JSON boolean), not a number or null"
    assert str(by_table.value) == first + "; move it away to train that run again"
    assert str(by_card.value) == (first + "; the card cannot tell what the run evaluated: "
                                  "restore it, or train the run again")
    _chmod_unreadable(done)
    try:
        with pytest.raises(ValueError, match=r"\(Permission denied\); the card cannot tell"):
            read_run_result(tmp_path / "run")
    finally:
        done.chmod(0o644)


def test_the_table_command_refuses_a_damaged_result_json_in_one_line(tmp_path, monkeypatch,
                                                                    capsys):
    """``train-speaker table`` checks each run's ``result.json`` before loading its inputs: a
    damaged one is one usage line naming it and the field (exit 2), no traceback."""
    monkeypatch.chdir(REPO)
    train, test = _data(tmp_path)
    run = tmp_path / "table" / "none_seed0"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps(
        {"config": {"loss": {"method": "none"}}, "params": 10,
         "eval": {"test_other": {"eer": 0.1, "min_dcf": "0.5"}}}))
    line = _main_error(_tiny_table_args(tmp_path, train, test), capsys)
    assert line.endswith(f"{run / 'result.json'} {_WRONG}eval.test_other.min_dcf is \"0.5\" "
                         "(a JSON string), not a number or null; move it away to train that "
                         "run again")
