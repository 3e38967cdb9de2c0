"""Three start-up leftovers of ``distill``: a failed start leaves no empty output folder, a
model folder's own code that is not run is said so, and a small student's size is a count."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest


def _bad_model_folder(path: Path) -> Path:
    """A folder whose ``config.json`` names no ``model_type`` (not a readable model)."""
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def test_a_failed_start_removes_the_empty_output_folders_it_created(tmp_path, tiny_wavlm_dir):
    from conftest import tiny_run_config

    from robustdistill.config import ConfigError
    from robustdistill.trainer import train

    bad = _bad_model_folder(tmp_path / "bad")
    # a bad teacher: output_dir and its new parent are both removed, tmp_path kept
    cfg = tiny_run_config(tmp_path, bad, "new/run")
    with pytest.raises(ConfigError, match="^teacher .*bad: not a readable model folder"):
        train(cfg)
    assert not (tmp_path / "new").exists()
    # a bad student_init, a data folder with no audio: same
    cfg = tiny_run_config(tmp_path, tiny_wavlm_dir, "run2", student_init=str(bad))
    with pytest.raises(ConfigError, match="^student_init "):
        train(cfg)
    assert not (tmp_path / "run2").exists()
    (tmp_path / "no_audio").mkdir()
    cfg = tiny_run_config(tmp_path, tiny_wavlm_dir, "run3", **{
        "data.synthetic_items": 0, "data.train_dir": str(tmp_path / "no_audio")})
    with pytest.raises(FileNotFoundError, match="no audio files"):
        train(cfg)
    assert not (tmp_path / "run3").exists()
    # folders that existed before the run stay, empty or not
    (tmp_path / "kept" / "run").mkdir(parents=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    for out in ("kept/run", "full"):
        with pytest.raises(ConfigError, match="^teacher "):
            train(tiny_run_config(tmp_path, bad, out))
    assert (tmp_path / "kept" / "run").is_dir()
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_remove_new_empty_folders_keeps_a_folder_that_holds_anything(tmp_path):
    from robustdistill.startup_checks import missing_folders, remove_new_empty_folders

    created = missing_folders(tmp_path / "a" / "b" / "c")
    assert created == [tmp_path / "a" / "b" / "c", tmp_path / "a" / "b", tmp_path / "a"]
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "log.txt").write_text("x")  # written meanwhile: b and a stay
    remove_new_empty_folders(created)
    assert not (tmp_path / "a" / "b" / "c").exists()
    assert (tmp_path / "a" / "b" / "log.txt").is_file()
    assert missing_folders(tmp_path) == []


def _with_own_code(tiny_wavlm_dir: Path, folder: Path) -> Path:
    """A copy of the tiny WavLM whose config.json's auto_map names ``modeling_mine.py``, which
    it ships (code that fails if it is ever run)."""
    shutil.copytree(tiny_wavlm_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_mine.MineConfig",
                          "AutoModel": "modeling_mine.MineModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_mine.py").write_text("raise RuntimeError('own code ran')\n")
    return folder


def test_ignored_code_note_names_the_shipped_files_of_a_known_model_type(tmp_path,
                                                                         tiny_wavlm_dir):
    from robustdistill.upstream import ignored_code_note

    folder = _with_own_code(tiny_wavlm_dir, tmp_path / "own")
    assert ignored_code_note(folder) == (
        f"{folder}: its own code (modeling_mine.py, named by config.json's auto_map) is not "
        "run (trust_remote_code is off); the stock 'wavlm' class of transformers is used")
    assert ignored_code_note(tiny_wavlm_dir) is None  # no auto_map
    (folder / "modeling_mine.py").unlink()  # auto_map names files the folder does not hold
    assert ignored_code_note(folder) is None


def test_distill_warns_that_a_teachers_own_code_is_not_run_and_counts_small_students(
        tmp_path, tiny_wavlm_dir, caplog):
    from conftest import tiny_run_config

    from robustdistill.trainer import train

    teacher = _with_own_code(tiny_wavlm_dir, tmp_path / "own")
    cfg = tiny_run_config(tmp_path, teacher, "run", **{"training.max_steps": 1})
    with caplog.at_level(logging.INFO):
        train(cfg)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "its own code" in r.getMessage()]
    assert warnings == [f"{teacher}: its own code (modeling_mine.py, named by config.json's "
                        "auto_map) is not run (trust_remote_code is off); the stock 'wavlm' "
                        "class of transformers is used"]
    size = [r.getMessage() for r in caplog.records if "params;" in r.getMessage()]
    assert len(size) == 1 and "student: 2 layers, width 32, 44,132 params;" in size[0], size


def test_parameter_count_is_exact_below_a_million():
    from robustdistill.publish.card_training import parameter_count

    assert parameter_count(31_488) == "31,488"
    assert parameter_count(3_160_000) == "3.2 M"
