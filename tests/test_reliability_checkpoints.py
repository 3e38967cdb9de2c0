"""Checkpoints: only ever seen complete, found by ``resume_from latest``, rotated, and loaded
without unpickling anything but tensors (issue 14)."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from conftest import tiny_run_config
from safetensors.torch import load_file

import robustdistill.trainer as trainer_module
from robustdistill.checkpoints import (
    MANIFEST,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    publish_checkpoint,
    remove_incomplete,
    rotate_checkpoints,
    separate_packed_views,
    separate_packed_views_on_save,
    temporary_checkpoint_dir,
    verify_checkpoint,
    write_manifest,
)
from robustdistill.trainer import train


def _fake_checkpoint(folder, index: int, step: int, publish: bool = True):
    tmp = temporary_checkpoint_dir(folder, index)
    tmp.mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"x" * (10 + index))
    (tmp / "sub").mkdir()
    (tmp / "sub" / "part.bin").write_bytes(b"y" * 3)
    write_manifest(tmp, step)
    return publish_checkpoint(tmp, folder / f"checkpoint_{index}") if publish else tmp


def test_latest_is_numeric_and_ignores_unfinished_and_foreign_folders(tmp_path):
    for index in (2, 9, 10):
        _fake_checkpoint(tmp_path, index, step=index * 100)
    _fake_checkpoint(tmp_path, 11, step=1100, publish=False)  # killed before the rename
    (tmp_path / "checkpoint_12").mkdir()  # no manifest: e.g. a half-written plain save_state
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint_2", "checkpoint_9", "checkpoint_10"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_10"  # not "checkpoint_9" (text sort)
    assert latest_checkpoint(tmp_path, require_manifest=False).name == "checkpoint_12"
    assert verify_checkpoint(tmp_path / "checkpoint_10")["step"] == 1000
    assert latest_checkpoint(tmp_path / "nowhere") is None
    # The leftovers of interrupted writes are removed, complete checkpoints untouched.
    assert [p.name for p in remove_incomplete(tmp_path)] == [".tmp-checkpoint_11"]
    assert len(list_checkpoints(tmp_path)) == 3


def test_rotation_counts_and_deletes_complete_checkpoints_only(tmp_path):
    for index in range(5):
        _fake_checkpoint(tmp_path, index, step=index)
    _fake_checkpoint(tmp_path, 5, step=5, publish=False)
    deleted = rotate_checkpoints(tmp_path, keep=2)
    assert [p.name for p in deleted] == [f"checkpoint_{i}" for i in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".tmp-checkpoint_5", "checkpoint_3", "checkpoint_4"]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        rotate_checkpoints(tmp_path, keep=0)


def test_verify_catches_truncated_missing_and_unfinished_checkpoints(tmp_path):
    path = _fake_checkpoint(tmp_path, 0, step=7)
    (path / "model.safetensors").write_bytes(b"x")  # truncated
    with pytest.raises(CheckpointError, match="model.safetensors has 1 bytes"):
        verify_checkpoint(path)
    (path / "sub" / "part.bin").unlink()
    (path / "model.safetensors").write_bytes(b"x" * 10)
    with pytest.raises(CheckpointError, match="part.bin listed in checkpoint.json is missing"):
        verify_checkpoint(path)
    (path / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        verify_checkpoint(path)
    unfinished = temporary_checkpoint_dir(tmp_path, 1)
    unfinished.mkdir()
    with pytest.raises(CheckpointError, match="not a finished checkpoint"):
        publish_checkpoint(unfinished, tmp_path / "checkpoint_1")
    with pytest.raises(CheckpointError, match="exists already"):
        _fake_checkpoint(tmp_path, 0, step=8)


def _config(tmp_path, teacher_dir, out: str, **training):
    return tiny_run_config(tmp_path, teacher_dir, out,
                           **{f"training.{k}": v for k, v in training.items()})


def _final_sha(run_dir) -> str:
    return json.loads((run_dir / "final_state.json").read_text())["parameter_sha256_per_rank"][0]


@pytest.mark.slow
def test_crash_during_a_checkpoint_write_then_resume_latest_is_exact(
        tmp_path, tiny_wavlm_dir, monkeypatch, die_at_checkpoint):
    """A run dies while its third checkpoint is being written (after every file of it is on
    disk, before the rename): ``resume_from latest`` takes the second, and the resumed run
    ends with exactly the parameters of an uninterrupted one. Rotation keeps 2."""
    full = tmp_path / "full"
    train(_config(tmp_path, tiny_wavlm_dir, "full", max_steps=5, save_every=1,
                  keep_checkpoints=2))
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == [
        "checkpoint_3", "checkpoint_4"]
    for path in list_checkpoints(full / "checkpoints"):
        manifest = verify_checkpoint(path)
        assert {"model.safetensors", "optimizer.bin", "training_state.json",
                "random_states_0.pkl"} <= set(manifest["files"])
        assert not list(path.glob("custom_checkpoint_*"))  # no pickled custom objects

    die_at_checkpoint(3)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, tiny_wavlm_dir, "part", max_steps=5, save_every=1,
                      keep_checkpoints=2))
    monkeypatch.undo()
    names = sorted(p.name for p in (part / "checkpoints").iterdir())
    assert names == [".tmp-checkpoint_2", "checkpoint_0", "checkpoint_1"]
    assert latest_checkpoint(part / "checkpoints").name == "checkpoint_1"
    train(_config(tmp_path, tiny_wavlm_dir, "part", max_steps=5, save_every=1,
                  keep_checkpoints=2, resume_from="latest"))
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == [
        "checkpoint_3", "checkpoint_4"]  # the leftover was removed, numbering went on
    assert _final_sha(part) == _final_sha(full)
    a = load_file(str(full / "checkpoints" / "checkpoint_4" / "model.safetensors"))
    b = load_file(str(part / "checkpoints" / "checkpoint_4" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/robustdistill-pwned",))


def test_resume_loads_no_pickle_beyond_tensors_and_refuses_a_planted_one(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    train(_config(tmp_path, tiny_wavlm_dir, "run", max_steps=1, save_every=1))
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    run = trainer_module._Run(_config(tmp_path, tiny_wavlm_dir, "run", max_steps=2))
    assert run.resume("latest") and run.progress.step == 1
    assert calls and all(flag is True for flag in calls), calls  # optimizer, RNG states
    # A pickle planted in the checkpoint (same size, so the manifest does not catch it) is
    # refused by weights_only loading: its code never runs.
    evil = pickle.dumps(_Evil())
    rng_file = checkpoint / "random_states_0.pkl"
    size = rng_file.stat().st_size
    rng_file.write_bytes(evil + b"\0" * (size - len(evil)))
    if os.path.exists("/tmp/robustdistill-pwned"):
        os.remove("/tmp/robustdistill-pwned")
    run = trainer_module._Run(_config(tmp_path, tiny_wavlm_dir, "run", max_steps=2))
    with pytest.raises(CheckpointError, match="not a tensor-only RNG state file") as info:
        run.resume("latest")
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not os.path.exists("/tmp/robustdistill-pwned")


def test_resume_refuses_folders_this_trainer_did_not_complete(tmp_path, tiny_wavlm_dir):
    run = trainer_module._Run(_config(tmp_path, tiny_wavlm_dir, "run", max_steps=2))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        run.resume("latest")
    assert run.resume("auto") is False and run.progress.step == 0  # a fresh start
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        run.resume(str(foreign))


def _pack_like_cudnn(module: torch.nn.Module) -> None:
    """Make every parameter a view into one flat buffer, as cuDNN does to an LSTM on a GPU."""
    params = list(module.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()


def test_packed_lstm_weights_are_saved_whole_and_resume_exactly(tmp_path):
    """A BLSTM packed into one buffer (the enhancement head on a GPU) loses no weight in
    save_state; loading the checkpoint into a fresh module gives the same weights."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    _pack_like_cudnn(lstm)
    assert len({p.untyped_storage().data_ptr() for p in lstm.parameters()}) == 1
    acc = Accelerator(cpu=True)
    model = acc.prepare(lstm)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    separate_packed_views_on_save(acc)
    acc.save_state(str(tmp_path / "ckpt"))
    saved = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert saved.keys() == expected.keys() and len(saved) == 16
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
    # the live module keeps its packing (only the saved copy was separated)
    assert len({p.untyped_storage().data_ptr() for p in model.parameters()}) == 1
    fresh = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    fresh.load_state_dict(saved)
    assert all(torch.equal(fresh.state_dict()[k], expected[k]) for k in expected)


def test_separate_packed_views_leaves_tied_weights_and_plain_tensors_alone():
    buffer = torch.arange(10.0)
    tied = torch.ones(3)
    own = torch.zeros(2)
    state = {"a": buffer[:4], "b": buffer[4:].view(2, 3), "tied1": tied, "tied2": tied,
             "own": own}
    separate_packed_views(state)
    assert state["a"].untyped_storage().data_ptr() != state["b"].untyped_storage().data_ptr()
    assert torch.equal(state["a"], torch.arange(4.0))
    assert torch.equal(state["b"], torch.arange(4.0, 10.0).view(2, 3))
    assert state["tied1"] is tied and state["tied2"] is tied and state["own"] is own
