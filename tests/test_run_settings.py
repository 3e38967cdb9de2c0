"""A resume with other settings is said, and kept in ``environment.json``, not silent: the
trainers write ``config.yaml`` again at every start, which used to lose the settings of the
steps before the resume. ``train-se`` refuses a student of another shape in one line (it used
to end in a ``size mismatch`` traceback from ``load_state_dict``)."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import se_train_args, tiny_run_config, write_se_data

from robustdistill.run_settings import config_changes, flatten, saved_config_changes


def test_config_changes_by_hand(tmp_path):
    old = {"seed": 1, "training": {"lr": 0.001, "steps": 4, "pairs": [["a", "b"]]},
           "data": {"dir": "x", "cache": "c1"}, "gone": 3}
    new = {"seed": 1, "training": {"lr": 0.002, "steps": 8, "pairs": (("a", "b"),)},
           "data": {"dir": "x", "cache": "c2"}, "added": None, "extra": {"k": 0}}
    assert flatten(old)["training.pairs"] == [["a", "b"]]
    # a tuple equals the list YAML wrote for it; a missing key counts as None
    assert config_changes(old, new) == [
        "data.cache c1 -> c2", "extra.k None -> 0", "gone 3 -> None",
        "training.lr 0.001 -> 0.002", "training.steps 4 -> 8"]
    assert config_changes(old, new, ignore=("training.steps", "data.", "extra.", "gone")) == [
        "training.lr 0.001 -> 0.002"]
    # an exact key is not a prefix: training.steps does not hide training.steps_x
    assert config_changes({"training": {"steps_x": 1}}, {"training": {"steps_x": 2}},
                          ignore=("training.steps",)) == ["training.steps_x 1 -> 2"]
    assert saved_config_changes(tmp_path, new) == []  # no config.yaml: nothing to compare
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert saved_config_changes(tmp_path, old) == []
    (tmp_path / "config.yaml").write_text("- a list\n")
    assert saved_config_changes(tmp_path, new) == []


def _environment(run) -> list[dict]:
    return json.loads((run / "environment.json").read_text())


def test_distill_resume_with_another_learning_rate_is_logged_and_recorded(
        tmp_path, tiny_wavlm_dir, caplog):
    from robustdistill.trainer import train

    run = tmp_path / "run"
    train(tiny_run_config(tmp_path, tiny_wavlm_dir, "run", **{
        "training.max_steps": 2, "training.save_every": 2}))
    with caplog.at_level("WARNING", logger="robustdistill.trainer"):
        train(tiny_run_config(tmp_path, tiny_wavlm_dir, "run", **{
            "training.max_steps": 3, "training.save_every": 2, "training.resume_from": "latest",
            "training.learning_rate": 5e-4}))
    assert ("resumed with settings other than the run's config.yaml: training.learning_rate "
            "0.001 -> 0.0005 (the steps before 2 used the old ones" in caplog.text)
    records = _environment(run)
    assert [r["start"]["step"] for r in records] == [0, 2]
    assert "config_changes" not in records[0]
    # max_steps and resume_from are how a resume is asked for: not changes
    assert records[1]["config_changes"] == ["training.learning_rate 0.001 -> 0.0005"]
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["learning_rate"] == 5e-4
    # the card says so: its training_config.yaml holds the resumed settings only
    from robustdistill.environment import describe_config_changes
    from robustdistill.export import export_from_checkpoint
    from robustdistill.publish.card import write_card

    assert describe_config_changes(records) == (
        "at step 2: training.learning_rate 0.001 -> 0.0005")
    student = export_from_checkpoint(run, None, tmp_path / "student")
    text = write_card(student, [], run, license="mit").read_text()
    assert ("- Settings changed at a resume (training_config.yaml holds the last ones): at step "
            "2: training.learning_rate 0.001 -> 0.0005\n") in text


def test_train_se_resume_logs_changes_and_refuses_another_student(tmp_path, caplog, capsys):
    from robustdistill.se.train import load_se_config, main, train_se

    write_se_data(tmp_path)
    run = tmp_path / "run"
    train_se(load_se_config(None, se_train_args(tmp_path, run, 1)))
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(SystemExit) as stop:
        main(se_train_args(tmp_path, run, 2, "--student.hidden_size", "12"))
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith(f"output_dir {str(run)!r} holds a run of another student "
                         "(student.hidden_size 8 -> 12): checkpoint_1 cannot be loaded into "
                         "this one; resume with the run's student settings, or give another "
                         "output_dir")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    assert len(_environment(run)) == 1  # refused before anything was written
    # the same shape (a gain floor, or the width given as the ratio it comes from) is no
    # other student: it resumes, with the change said and recorded
    with caplog.at_level("WARNING", logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(tmp_path, run, 1,
                                                    "--student.min_gain_db", "-60")))
    assert "student.min_gain_db -80.0 -> -60.0" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(tmp_path, run, 2,
                                                    "--training.learning_rate", "0.002",
                                                    "--student.min_gain_db", "-60")))
    assert "resumed with settings other than the run's config.yaml: training.learning_rate " \
           "0.001 -> 0.002" in caplog.text
    assert _environment(run)[-1]["config_changes"] == ["training.learning_rate 0.001 -> 0.002"]
    from robustdistill.publish.card import write_card

    text = write_card(run / "student", [], run, license="mit").read_text()
    assert ("- Settings changed at a resume (training_config.yaml holds the last ones): at step "
            "1: student.min_gain_db -80.0 -> -60.0; at step 1: training.learning_rate 0.001 -> "
            "0.002\n") in text


def test_one_file_or_folder_spelled_otherwise_is_no_change(tmp_path, monkeypatch):
    """A resume that names the run's teacher or data folder by another path (absolute for
    relative, ``./x``, a link) changed nothing: it used to be logged, kept in
    ``environment.json`` and printed on the model card as a changed setting."""
    (tmp_path / "teacher").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "teacher")
    monkeypatch.chdir(tmp_path)
    old = {"teacher": "teacher", "data": {"dir": "teacher"}}
    for spelling in (str(tmp_path / "teacher"), "./teacher/", "link", str(tmp_path / "link")):
        assert config_changes(old, {"teacher": spelling, "data": {"dir": "teacher"}}) == []
    # another folder, or names that are no path here (a hub id), still differ
    (tmp_path / "other").mkdir()
    assert config_changes(old, {"teacher": "other", "data": {"dir": "teacher"}}) == [
        "teacher teacher -> other"]
    assert config_changes({"teacher": "org/a"}, {"teacher": "org/b"}) == [
        "teacher org/a -> org/b"]


def test_relative_paths_of_the_saved_config_are_from_the_folder_the_run_started_in(
        tmp_path, monkeypatch):
    """A run started in A with ``data`` and resumed from B: before 2026-12-07 the saved
    relative path was read from the current folder, so B's own ``data`` (other audio) was no
    change and ``../A/data`` (the same folder) was one. ``environment.json`` records where
    each start ran (``cwd``); the comparison reads the saved paths from there."""
    from robustdistill.environment import record_environment

    for folder in ("A", "B"):
        (tmp_path / folder / "data").mkdir(parents=True)
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path / "A")
    saved = {"teacher": "org/model", "data": {"train_dir": "data"}}
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    record_environment(run, 0)
    assert _environment(run)[-1]["cwd"] == str(tmp_path / "A")
    assert saved_config_changes(run, saved) == []  # resumed where it started
    monkeypatch.chdir(tmp_path / "B")
    assert saved_config_changes(run, saved) == [
        f"data.train_dir data (in {tmp_path / 'A'}) -> data (in {tmp_path / 'B'})"]
    assert saved_config_changes(run, {**saved, "data": {"train_dir": "../A/data"}}) == []
    assert saved_config_changes(run, {**saved, "data": {"train_dir": str(
        tmp_path / "A" / "data")}}) == []
    # a name that is no path on one side (a hub id) is compared as text, as before
    assert saved_config_changes(run, {"teacher": "org/other", "data": {
        "train_dir": "../A/data"}}) == ["teacher org/model -> org/other"]
    # a setting that is no path is not one because both folders hold a folder of its name
    for folder in ("A", "B"):
        (tmp_path / folder / "clean").mkdir()
    words = {"data": {"train_dir": "data", "target_column": "clean"}}
    assert config_changes(words, words, old_folder=str(tmp_path / "A")) == [
        f"data.train_dir data (in {tmp_path / 'A'}) -> data (in {tmp_path / 'B'})"]
    # a run written before the record had cwd: the current folder, as before
    (run / "environment.json").write_text(json.dumps([{"start": {"step": 0}}]))
    assert saved_config_changes(run, saved) == []


def test_a_refused_resume_leaves_the_runs_settings_for_the_next_one(
        tmp_path, tiny_wavlm_dir, caplog):
    """``distill`` wrote ``config.yaml`` before the resume was checked: a resume refused for
    another batch size left that batch size there, and the next, correct resume was logged and
    carded as having changed it back (and a teacher named by another path, as changed)."""
    from robustdistill.config import ConfigError
    from robustdistill.trainer import train

    run = tmp_path / "run"
    train(tiny_run_config(tmp_path, tiny_wavlm_dir, "run", **{
        "training.max_steps": 2, "training.save_every": 2}))
    with pytest.raises(ConfigError, match="data.batch_size 2 -> 4"):
        train(tiny_run_config(tmp_path, tiny_wavlm_dir, "run", **{
            "training.max_steps": 3, "training.save_every": 2,
            "training.resume_from": "latest", "data.batch_size": 4}))
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["batch_size"] == 2
    with caplog.at_level("WARNING", logger="robustdistill.trainer"):
        train(tiny_run_config(tmp_path, f"{tiny_wavlm_dir}/.", "run", **{
            "training.max_steps": 3, "training.save_every": 2,
            "training.resume_from": "latest"}))
    assert "resumed with settings other" not in caplog.text
    assert [("config_changes" in r) for r in _environment(run)] == [False, False]


def test_start_up_warnings_come_from_the_main_process_only(tmp_path, tiny_wavlm_dir,
                                                           monkeypatch, caplog):
    """Under ``accelerate launch --num_processes N`` every process logs warnings: the
    two_step and no-KD-term notes of ``distill`` and ``train-se`` came N times."""
    from accelerate import Accelerator

    from robustdistill.se.train import load_se_config, train_se
    from robustdistill.trainer import _Run

    write_se_data(tmp_path)
    se_args = ("--loss.schedule", "two_step", "--loss.kd_steps", "1")
    for main_process in (True, False):
        monkeypatch.setattr(Accelerator, "is_main_process", property(lambda _, m=main_process: m))
        caplog.clear()
        with caplog.at_level("WARNING"):
            _Run(tiny_run_config(tmp_path, tiny_wavlm_dir, f"d{main_process}", **{
                "training.max_steps": 2, "training.loss_schedule": "two_step",
                "training.kd_steps": 2, "training.task_objectives": "[enhancement]"}))
            train_se(load_se_config(None, se_train_args(tmp_path, tmp_path / f"s{main_process}",
                                                        1, *se_args)))
        notes = [r.getMessage() for r in caplog.records if "never reaches phase 2" in r.message
                 or "no KD term" in r.message]
        assert len(notes) == (3 if main_process else 0), notes


def test_a_relative_folder_setting_from_another_start_folder_is_a_change_before_it_exists(
        tmp_path, monkeypatch):
    """A run started in A with ``ig.cache_dir: runs/x/ig_cache`` and resumed from B: the
    cache folder is made only later in the run, so until 2026-12-08 the change of folder was
    missed whenever it did not yet exist on both sides (the rule needed two existing folders).
    A folder setting now differs exactly when its absolute paths do; a name that may be a hub
    id (``teacher``) still counts only through existing folders."""
    from robustdistill.environment import record_environment

    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(b)
    cfg = {"ig": {"cache_dir": "runs/x/ig_cache"}, "teacher": "org/model"}
    moved = [f"ig.cache_dir runs/x/ig_cache (in {a}) -> runs/x/ig_cache (in {b})"]
    # the side from here names nothing: said (a data folder left behind reads so at once)
    not_here = [f"ig.cache_dir runs/x/ig_cache (in {a}) -> runs/x/ig_cache (in {b}, not there "
                "at this start)"]
    assert config_changes(cfg, cfg, old_folder=str(a)) == not_here  # neither exists
    (a / "runs/x/ig_cache").mkdir(parents=True)
    assert config_changes(cfg, cfg, old_folder=str(a)) == not_here  # only A's
    (a / "runs/x/ig_cache").rmdir()
    (b / "runs/x/ig_cache").mkdir(parents=True)
    assert config_changes(cfg, cfg, old_folder=str(a)) == moved  # only B's
    (a / "runs/x/ig_cache").mkdir(parents=True)
    assert config_changes(cfg, cfg, old_folder=str(a)) == moved  # both (as before)
    # the same place spelt from B, existing or not yet: no change
    for there in ("runs/x/ig_cache", "runs/y"):
        same = {"ig": {"cache_dir": f"../A/{there}"}, "teacher": "org/model"}
        assert config_changes({**cfg, "ig": {"cache_dir": there}}, same,
                              old_folder=str(a)) == []
        assert config_changes({**cfg, "ig": {"cache_dir": there}}, {
            **same, "ig": {"cache_dir": str(a / there)}}, old_folder=str(a)) == []
    # through a link in the existing part of the path (B/to_a -> A), the folder not made yet
    (b / "to_a").symlink_to(a)
    assert config_changes({"ig": {"cache_dir": "runs/new"}}, {"ig": {"cache_dir":
                          "to_a/runs/new"}}, old_folder=str(a)) == []
    assert config_changes({"ig": {"cache_dir": "runs/new"}}, {"ig": {"cache_dir":
                          "runs/new"}}, old_folder=str(b / "runs" / "..")) == []
    # resumed where it started, or a run before the record of cwd: no change
    assert config_changes({"d": {"cache_dir": "none/yet"}}, {"d": {"cache_dir": "./none/yet"}},
                          old_folder=str(b)) == []
    assert config_changes({"d": {"cache_dir": "none/yet"}}, {"d": {"cache_dir": "none/yet"}}) \
        == []
    # another folder from the same start folder, neither existing: a change, as always
    assert config_changes({"d": {"cache_dir": "p"}}, {"d": {"cache_dir": "q"}},
                          old_folder=str(b)) == ["d.cache_dir p -> q"]
    # the whole path through environment.json's cwd, as a resume compares it
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"teacher_cache": {"dir": "tc"}}))
    monkeypatch.chdir(a)
    record_environment(run, 0)
    monkeypatch.chdir(b)
    assert saved_config_changes(run, {"teacher_cache": {"dir": "tc"}}) == [
        f"teacher_cache.dir tc (in {a}) -> tc (in {b}, not there at this start)"]
    (b / "tc").mkdir()
    assert saved_config_changes(run, {"teacher_cache": {"dir": "tc"}}) == [
        f"teacher_cache.dir tc (in {a}) -> tc (in {b})"]
    assert saved_config_changes(run, {"teacher_cache": {"dir": "../A/tc"}}) == []


def test_a_relative_folder_setting_is_no_change_once_the_start_folder_is_gone(tmp_path,
                                                                                monkeypatch):
    """The project folder moved (renamed) between two starts: the folder the run started in
    is gone, so where its relative ``data.train_dir`` pointed from there cannot be told, and
    the same spelling is no change (before 2026-12-08's absolute-path rule this resume was
    accepted; the rule refused it, and no setting could make it resume). A start folder that
    is still there: a change, as before."""
    old, new = tmp_path / "project", tmp_path / "moved"
    (new / "data").mkdir(parents=True)
    monkeypatch.chdir(new)
    cfg = {"data": {"train_dir": "data"}, "ig": {"cache_dir": "cache"}}
    assert config_changes(cfg, cfg, old_folder=str(old)) == []
    old.mkdir()
    assert config_changes(cfg, cfg, old_folder=str(old)) == [
        f"data.train_dir data (in {old}) -> data (in {new})",
        f"ig.cache_dir cache (in {old}) -> cache (in {new}, not there at this start)"]
