"""``train-speaker``: a resume records every setting it changed relative to the run's
``config.yaml`` (the previous segment's) in its ``environment.json`` record, as ``distill`` and
``train-se`` do, and the card lists them (before 2026-12-07 only a ``data.min_length_s`` of the
same effect was recorded: another evaluation set, ``data.max_nontarget``, ``ig.cache_dir`` ...
were accepted and then known nowhere once ``config.yaml`` was overwritten)."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import speaker_kd_config

import robustdistill.speaker.train as train_mod
from robustdistill.environment import describe_config_changes, read_environment
from robustdistill.speaker.train import train_system


def _start_failing_in_the_teachers_targets(monkeypatch, cfg, teacher, crops) -> None:
    """A start of ``cfg`` that fails while the teacher's targets are computed (out of memory,
    say): after the folder checks, before the checkpoint loads and ``config.yaml`` is written."""
    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    with monkeypatch.context() as patch:
        patch.setattr(train_mod, "teacher_targets", fail)
        with pytest.raises(RuntimeError, match="out of memory"):
            train_system(cfg, teacher, crops)


def test_a_resume_records_every_setting_it_changed_and_the_card_lists_them(
        tiny, tmp_path, monkeypatch):
    """1 epoch started in ``A``, resumed to 2 from ``B`` with another ``data.max_nontarget``,
    ``ig.cache_dir``, ``training.keep_checkpoints`` and the same relative ``data.fsdd_dir``
    naming another folder: each is in the resume's record and on the card. What a resume may
    change without a word (``training.epochs``, ``training.resume``,
    ``training.save_on_sigterm``, the ``table`` section: ``run_folder.RESUME_FREE``, as
    ``distill``'s) and one folder spelt another way (``data.test_other_dir``) are not."""
    from robustdistill.publish.card import build_card

    teacher, crops = tiny
    a, b = tmp_path / "A", tmp_path / "B"
    for folder in (a / "held", a / "fsdd", b / "fsdd"):
        folder.mkdir(parents=True)
    run = tmp_path / "run"
    monkeypatch.chdir(a)
    first = speaker_kd_config(tmp_path, "run", 1, method="none")
    first.data.test_other_dir, first.data.fsdd_dir = "held", "fsdd"
    train_system(first, teacher, crops)
    monkeypatch.chdir(b)
    cfg = speaker_kd_config(tmp_path, "run", 2, resume=True, method="none")
    cfg.data.test_other_dir, cfg.data.fsdd_dir = "../A/held", "fsdd"  # the same; another
    cfg.data.max_nontarget, cfg.ig.cache_dir = 200, str(tmp_path / "cache2")
    cfg.training.keep_checkpoints, cfg.training.save_on_sigterm = 3, False
    cfg.table.seeds = [0]
    train_system(cfg, teacher, crops)
    records = read_environment(run)
    assert [r["start"] for r in records] == [{"epoch": 0}, {"epoch": 1}]
    assert "config_changes" not in records[0]
    changes = [f"data.fsdd_dir fsdd (in {a}) -> fsdd (in {b})",
               "data.max_nontarget 5000 -> 200",
               f"ig.cache_dir {tmp_path / 'cache'} -> {tmp_path / 'cache2'}",
               "training.keep_checkpoints 2 -> 3"]
    assert records[1]["config_changes"] == changes
    # config.yaml holds the last settings, and the card says which the first epoch used
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["max_nontarget"] == 200 and saved["training"]["epochs"] == 2
    card = build_card(run / "student", [], run, license="mit", kind="speaker", speed=False)
    assert ("- Settings changed at a resume (training_config.yaml holds the last ones): at "
            f"epoch 1: {'; '.join(changes)}\n") in card.text
    # a resume that changes nothing is recorded without config_changes
    train_system(cfg, teacher, crops)
    assert "config_changes" not in read_environment(run)[-1]
    assert describe_config_changes(read_environment(run)) == "at epoch 1: " + "; ".join(changes)


def test_a_resume_that_fails_before_its_record_leaves_config_yaml_as_it_was(
        tiny, tmp_path, monkeypatch):
    """``config.yaml`` is written with the start's ``environment.json`` record, after the
    teacher's targets and the checkpoint's state: a resume that fails before them leaves the
    settings the trained epoch used, so the next resume still records the change (before, the
    failed start had overwritten ``config.yaml`` with no record, and the change was lost)."""
    teacher, crops = tiny
    run = tmp_path / "run"
    train_system(speaker_kd_config(tmp_path, "run", 1, method="none"), teacher, crops)
    cfg = speaker_kd_config(tmp_path, "run", 2, resume=True, method="none")
    cfg.data.max_nontarget = 200
    _start_failing_in_the_teachers_targets(monkeypatch, cfg, teacher, crops)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["max_nontarget"] == 5000
    assert len(read_environment(run)) == 1
    result = train_system(cfg, teacher, crops)
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert read_environment(run)[-1]["config_changes"] == ["data.max_nontarget 5000 -> 200"]
    assert json.loads((run / "result.json").read_text())["config"]["data"]["max_nontarget"] == 200


@pytest.mark.parametrize("config_yaml", [None, "[not, a, mapping]\n", "a: [unclosed\n"])
def test_without_a_readable_config_yaml_the_checkpoints_settings_are_compared(
        tmp_path, caplog, config_yaml):
    """No ``config.yaml`` (a folder copied without it) or an unreadable one (a warning naming
    it): the checkpoint's ``speaker_run.json`` still gives a ``data.min_length_s`` of the same
    effect (the only change it can show); the other settings it does not hold are unknown."""
    import logging

    from robustdistill.speaker.run_folder import _RUN_SETTINGS, resume_changes, weight_settings

    caplog.set_level(logging.WARNING, logger="robustdistill.speaker")
    old = speaker_kd_config(tmp_path, "run", 1, method="none")
    old.data.crop_seconds, old.data.min_length_s = 2.0, 3.0
    epoch = tmp_path / "run" / "checkpoints" / "epoch_1"
    epoch.mkdir(parents=True)
    (epoch / _RUN_SETTINGS).write_text(json.dumps(weight_settings(old)))
    if config_yaml is not None:
        (tmp_path / "run" / "config.yaml").write_text(config_yaml)
    cfg = speaker_kd_config(tmp_path, "run", 2, resume=True, method="none")
    cfg.data.crop_seconds, cfg.data.min_length_s, cfg.data.max_nontarget = 2.0, 4.0, 200
    assert resume_changes(cfg, epoch) == ["data.min_length_s 3.0 -> 4.0"]
    assert caplog.messages == ([] if config_yaml is None else [
        f"{tmp_path / 'run' / 'config.yaml'} is not a readable YAML mapping: the settings this "
        f"resume changes are taken from {epoch / _RUN_SETTINGS}, which holds only those the "
        "weights depend on"])


def test_a_fresh_start_that_fails_before_its_record_keeps_the_stopped_runs_record(
        tiny, tmp_path, monkeypatch):
    """A run stopped at a NaN/Inf step before its first checkpoint, then started afresh in the
    same folder with a sane rate, which fails in the teacher's targets (an out-of-memory, a
    Ctrl-C): the folder still holds the stopped run's ``config.yaml`` (written with the start's
    record since 2026-12-07), so it keeps that run's ``stopped.json`` too (it was removed at
    once, leaving the stopped run's settings with no word of its stop); the next fresh start
    that gets past its start-up replaces both."""
    from robustdistill.speaker.train import NonFiniteLossError

    teacher, crops = tiny
    run = tmp_path / "run"
    stopped = speaker_kd_config(tmp_path, "run", 1, method="none")
    stopped.training.lr = 3e37
    with pytest.raises(NonFiniteLossError, match="no checkpoint of this run was saved"):
        train_system(stopped, teacher, crops)
    record = (run / "stopped.json").read_text()
    cfg = speaker_kd_config(tmp_path, "run", 1, method="none")
    _start_failing_in_the_teachers_targets(monkeypatch, cfg, teacher, crops)
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["lr"] == 3e37
    assert (run / "stopped.json").read_text() == record
    train_system(cfg, teacher, crops)
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["lr"] == 2e-3
    assert not (run / "stopped.json").exists()
