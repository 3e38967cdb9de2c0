"""Checkpoint folders: what remove_incomplete removes, what verify refuses, how rotation
deletes (mutation-testing round 3, reviewer b)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from test_reliability_checkpoints import _fake_checkpoint

import robustdistill.checkpoints as checkpoints
from robustdistill.checkpoints import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    remove_incomplete,
    rotate_checkpoints,
    verify_checkpoint,
)


def test_remove_incomplete_removes_every_tmp_leftover_and_nothing_else(tmp_path):
    """Leftovers of a killed write (``.tmp-checkpoint_N``), of a killed rotation
    (``.tmp-delete-checkpoint_N``) and a stray ``.tmp-`` file all go; checkpoints and other
    entries stay."""
    for index in (1, 2):
        _fake_checkpoint(tmp_path, index, step=index)
    _fake_checkpoint(tmp_path, 3, step=3, publish=False)  # .tmp-checkpoint_3
    half_deleted = tmp_path / ".tmp-delete-checkpoint_0"
    (half_deleted / "sub").mkdir(parents=True)
    (half_deleted / "sub" / "part.bin").write_bytes(b"y")
    (tmp_path / ".tmp-stray.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("keep me")

    removed = remove_incomplete(tmp_path)
    assert [p.name for p in removed] == [
        ".tmp-checkpoint_3", ".tmp-delete-checkpoint_0", ".tmp-stray.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_1", "checkpoint_2", "notes.txt"]
    for path in list_checkpoints(tmp_path):
        verify_checkpoint(path)
    assert remove_incomplete(tmp_path) == []
    assert remove_incomplete(tmp_path / "nowhere") == []


def test_verify_refuses_a_file_that_grew_after_the_manifest(tmp_path):
    path = _fake_checkpoint(tmp_path, 0, step=7)
    with open(path / "model.safetensors", "ab") as f:  # 10 bytes listed, 11 on disk
        f.write(b"z")
    with pytest.raises(CheckpointError, match="model.safetensors has 11 bytes"):
        verify_checkpoint(path)


def test_a_rotation_killed_mid_deletion_leaves_only_a_tmp_folder(tmp_path, monkeypatch):
    """Rotation renames a doomed checkpoint into the ``.tmp-`` namespace before deleting it:
    a kill during the deletion leaves no folder that looks like a checkpoint, and the
    leftover is what remove_incomplete deletes."""
    for index in range(3):
        _fake_checkpoint(tmp_path, index, step=index)

    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt("killed while deleting")

    monkeypatch.setattr(checkpoints, "shutil", SimpleNamespace(rmtree=killed))
    with pytest.raises(KeyboardInterrupt):
        rotate_checkpoints(tmp_path, keep=2)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".tmp-delete-checkpoint_0", "checkpoint_1", "checkpoint_2"]
    assert [p.name for p in list_checkpoints(tmp_path, require_manifest=False)] == [
        "checkpoint_1", "checkpoint_2"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_2"
    assert [p.name for p in remove_incomplete(tmp_path)] == [".tmp-delete-checkpoint_0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1", "checkpoint_2"]
