"""The software record of a run (environment.json) and the card's Software line."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import metadata

import pytest
import yaml

from robustdistill.environment import (
    ENVIRONMENT_FILE,
    describe_config_changes,
    describe_software,
    git_state,
    read_environment,
    record_environment,
    since_last_fresh_start,
)
from robustdistill.publish.card import copy_run_files, write_card

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                        "HOME": str(cwd), "PATH": "/usr/bin:/bin"})


@needs_git
def test_git_state_is_the_commit_of_the_checkout_that_holds_the_package(tmp_path):
    repo = tmp_path / "repo"
    package = repo / "robustdistill"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert git_state(package) == {"commit": head, "dirty": False}
    (package / "__init__.py").write_text("x = 2\n")
    assert git_state(package) == {"commit": head, "dirty": True}
    # a package installed deeper inside some other repository is not that repository's code
    nested = repo / ".venv" / "lib" / "site-packages" / "robustdistill"
    nested.mkdir(parents=True)
    assert git_state(nested) is None
    assert git_state(tmp_path) is None  # not a checkout at all


def test_each_start_appends_a_record_and_the_card_line_says_what_changed(tmp_path):
    first = record_environment(tmp_path, 0)
    assert first["start"] == {"step": 0}
    assert first["packages"]["torch"] == metadata.version("torch")
    assert first["packages"]["transformers"] == metadata.version("transformers")
    record_environment(tmp_path, 40)
    records = read_environment(tmp_path)
    assert [r["start"] for r in records] == [{"step": 0}, {"step": 40}]
    text = describe_software(records)
    assert f"torch {metadata.version('torch')}" in text
    assert text.endswith("; resumed 1 time with the same software")
    # a resume under another torch is named
    records[1]["packages"]["torch"] = "9.9.9"
    (tmp_path / ENVIRONMENT_FILE).write_text(json.dumps(records))
    assert "resumed with other software: " in describe_software(read_environment(tmp_path))
    assert "torch 9.9.9" in describe_software(read_environment(tmp_path))
    assert describe_software([]) == ""
    (tmp_path / ENVIRONMENT_FILE).write_text("{}")
    with pytest.raises(ValueError, match="JSON list"):
        read_environment(tmp_path)
    # a start never fails on it: the bad file is kept aside and a new record begins
    (tmp_path / ENVIRONMENT_FILE).write_text('[{"start": ')  # cut mid-write by an old version
    record_environment(tmp_path, 7)
    assert [r["start"] for r in read_environment(tmp_path)] == [{"step": 7}]
    assert (tmp_path / f"{ENVIRONMENT_FILE}.unreadable").read_text() == '[{"start": '
    assert sorted(p.name for p in tmp_path.iterdir()) == [ENVIRONMENT_FILE,
                                                          f"{ENVIRONMENT_FILE}.unreadable"]


def test_a_mid_epoch_resume_records_its_batch_and_the_card_line_names_it(tmp_path):
    """``train-speaker``'s ``epoch_N_batch_B``: N epochs and B batches of epoch N + 1 done."""
    record_environment(tmp_path, 0, unit="epoch")
    record_environment(tmp_path, 2, unit="epoch", batch=5, config_changes=["a.b 1 -> 2"])
    record_environment(tmp_path, 3, unit="epoch", config_changes=["a.b 2 -> 3"])
    records = read_environment(tmp_path)
    assert [r["start"] for r in records] == [{"epoch": 0}, {"epoch": 2, "batch": 5},
                                             {"epoch": 3}]
    # not "at epoch 2, batch 5": the resume went on inside epoch 3
    assert describe_config_changes(records) == ("after batch 5 of epoch 3: a.b 1 -> 2; "
                                                "at epoch 3: a.b 2 -> 3")


def test_commit_and_uncommitted_changes_are_in_the_line():
    record = {"packages": {"robustdistill": "0.1.0", "torch": "2.13.0"},
              "git": {"commit": "0123456789abcdef" * 2 + "01234567", "dirty": True}}
    assert describe_software([record]) == (
        "robustdistill 0.1.0 (git 0123456789, with uncommitted changes), torch 2.13.0")


def test_a_distillation_run_records_its_software_and_the_card_shows_it(tmp_path,
                                                                        tiny_wavlm_dir):
    from test_trainer import _config

    from robustdistill.trainer import train

    train(_config(tmp_path, tiny_wavlm_dir, "run", max_steps=1, export_student="false",
                  eval_at_start="false"))
    run = tmp_path / "run"
    (record,) = read_environment(run)
    assert record["start"] == {"step": 0}
    assert record["packages"]["robustdistill"] == metadata.version("robustdistill")
    from robustdistill.export import export_from_checkpoint

    student = export_from_checkpoint(run, None, tmp_path / "student")  # the run's weights
    written = copy_run_files(run, student)
    assert student / "training_environment.json" in written
    assert json.loads((student / "training_environment.json").read_text()) == [record]
    text = write_card(student, [], run, license="mit").read_text()
    assert f"- Software: {describe_software([record])}\n" in text
    # a run without the file (older than it) gets no Software line
    (run / ENVIRONMENT_FILE).unlink()
    assert "- Software:" not in write_card(student, [], run, license="mit").read_text()
    assert yaml.safe_load((student / "training_config.yaml").read_text())


def test_a_start_again_from_zero_begins_the_runs_records(tmp_path):
    """A run killed (or stopped on a NaN/Inf step) before its first checkpoint and started
    again in its folder appends a second record at 0: that start is no resume, and the card
    counts, and lists the changes of, only the starts from the last one at 0 on. A mid-epoch
    resume inside the first epoch (``{"epoch": 0, "batch": 3}``) is a resume."""
    records = [{"start": {"epoch": 0}, "packages": {"torch": "1.0"}},
               {"start": {"epoch": 0}, "packages": {"torch": "2.0"}},
               {"start": {"epoch": 0, "batch": 3}, "packages": {"torch": "2.0"},
                "config_changes": ["data.max_nontarget 5000 -> 200"]},
               {"start": {"epoch": 2}, "packages": {"torch": "2.0"}}]
    assert since_last_fresh_start(records) == records[1:]
    assert describe_software(records) == "torch 2.0; resumed 2 times with the same software"
    assert describe_config_changes(records) == ("after batch 3 of epoch 1: "
                                                "data.max_nontarget 5000 -> 200")
    # the abandoned start's changes are not the run's
    records[0]["config_changes"] = ["training.lr 1e+30 -> 0.002"]
    assert describe_config_changes(records) == ("after batch 3 of epoch 1: "
                                                "data.max_nontarget 5000 -> 200")
    assert describe_software(records[:2]) == "torch 2.0"
    assert since_last_fresh_start(records[2:]) == records[2:]  # no fresh start recorded
    # a start from another run's checkpoint (distill's resume_from) begins the run too
    other = [records[0], {"start": {"step": 500}, "from_another_run": True,
                          "packages": {"torch": "2.0"}}, records[3]]
    assert since_last_fresh_start(other) == other[1:]
    assert describe_software(other) == "torch 2.0; resumed 1 time with the same software"
    assert since_last_fresh_start([]) == []
