"""Checkpoints: only ever seen complete, found by ``resume_from latest``, rotated, and loaded
without unpickling anything but tensors (issue 14)."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

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
    save_checkpoint,
    separate_packed_views,
    separate_packed_views_on_save,
    temporary_checkpoint_dir,
    tracker_resume_kwargs,
    truncate_log,
    verify_checkpoint,
    write_manifest,
)
from robustdistill.environment import describe_software, read_environment, since_last_fresh_start
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


def _records(run_dir) -> list[dict]:
    """``metrics.jsonl`` without its wall-clock fields."""
    clock = {"audio_seconds_per_second", "data_wait_share"}
    return [{k: v for k, v in json.loads(line).items() if k not in clock}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _resume_later() -> None:
    """TensorBoard reads a folder's event files in name order, and a name holds the second it
    was made and a per-process counter: a resume in the same process and second as the killed
    run (only in a test) could sort first once the counter reaches another digit. A real
    resume is a later process."""
    time.sleep(1.1)


def _tensorboard_steps(run_dir) -> list[int]:
    """The steps of ``train/loss`` as TensorBoard shows them (purged events hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "logs" / "distill"))  # not the hparams
    accumulator.Reload()
    return [e.step for e in accumulator.Scalars("train/loss")]


@pytest.mark.slow
def test_crash_during_a_checkpoint_write_then_resume_latest_is_exact(
        tmp_path, tiny_wavlm_dir, monkeypatch, die_at_checkpoint):
    """A run dies while its third checkpoint is being written (after every file of it is on
    disk, before the rename): ``resume_from latest`` takes the second, and the resumed run
    ends with exactly the parameters of an uninterrupted one. Rotation keeps 2. The step the
    killed run logged after its last checkpoint is not logged twice, in ``metrics.jsonl``
    nor in TensorBoard."""
    full = tmp_path / "full"
    tb = {"report_to": "[tensorboard]"}
    train(_config(tmp_path, tiny_wavlm_dir, "full", max_steps=5, save_every=1,
                  keep_checkpoints=2, **tb))
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
                      keep_checkpoints=2, **tb))
    monkeypatch.undo()
    names = sorted(p.name for p in (part / "checkpoints").iterdir())
    assert names == [".tmp-checkpoint_2", "checkpoint_0", "checkpoint_1"]
    assert latest_checkpoint(part / "checkpoints").name == "checkpoint_1"
    assert [r["step"] for r in _records(part)] == [1, 2, 3]  # step 3 logged, never saved
    _resume_later()
    train(_config(tmp_path, tiny_wavlm_dir, "part", max_steps=5, save_every=1,
                  keep_checkpoints=2, resume_from="latest", **tb))
    assert _records(part) == _records(full)
    assert _tensorboard_steps(part) == _tensorboard_steps(full) == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == [
        "checkpoint_3", "checkpoint_4"]  # the leftover was removed, numbering went on
    assert _final_sha(part) == _final_sha(full)
    a = load_file(str(full / "checkpoints" / "checkpoint_4" / "model.safetensors"))
    b = load_file(str(part / "checkpoints" / "checkpoint_4" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("resume_from", ["auto", None], ids=["auto", "none"])
def test_a_run_killed_before_its_first_checkpoint_restarts_logging_each_step_once(
        tmp_path, tiny_wavlm_dir, monkeypatch, die_at_checkpoint, resume_from):
    """Killed while writing its first checkpoint (steps 1-2 logged), then started again with
    ``resume_from auto`` (the restart loop of ``distill --resume``), which finds no checkpoint
    and starts at step 0, or with no ``resume_from`` (the same command run again):
    ``metrics.jsonl`` and TensorBoard hold each step once, as an uninterrupted run's (until
    2026-12-07 the killed run's lines stayed: 1, 2, 1, 2, 3, 4)."""
    tb = {"report_to": "[tensorboard]", **({"resume_from": resume_from} if resume_from else {})}
    train(_config(tmp_path, tiny_wavlm_dir, "full", max_steps=4, save_every=2, **tb))
    die_at_checkpoint(1)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, tiny_wavlm_dir, "part", max_steps=4, save_every=2, **tb))
    monkeypatch.undo()
    assert [r["step"] for r in _records(part)] == [1, 2]
    _resume_later()
    train(_config(tmp_path, tiny_wavlm_dir, "part", max_steps=4, save_every=2, **tb))
    assert _records(part) == _records(tmp_path / "full")
    assert _tensorboard_steps(part) == [1, 2, 3, 4]
    assert _final_sha(part) == _final_sha(tmp_path / "full")


def _killed_beside_a_start_from_another_run(tmp_path, tiny_wavlm_dir, monkeypatch,
                                            die_at_checkpoint, max_steps: int,
                                            killed: dict | None = None) -> tuple[Path, dict]:
    """``source``: a run to its step-2 checkpoint; ``full``: an uninterrupted start from that
    checkpoint (``resume_from``) in a new folder, to ``max_steps``; ``part``: a start killed
    while writing its first checkpoint, with ``killed``'s settings (None: ``full``'s).

    Returns:
        ``(part's folder, full's settings)``: what ``part`` is started again with.
    """
    train(_config(tmp_path, tiny_wavlm_dir, "source", max_steps=2, save_every=2))
    source = str(latest_checkpoint(tmp_path / "source" / "checkpoints"))
    warm = {"resume_from": source, "max_steps": max_steps, "save_every": 2}
    train(_config(tmp_path, tiny_wavlm_dir, "full", **warm))
    die_at_checkpoint(1)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, tiny_wavlm_dir, "part", **(warm if killed is None else killed)))
    monkeypatch.undo()
    return part, warm


def test_a_start_from_another_runs_checkpoint_killed_before_its_own_first_one_logs_once(
        tmp_path, tiny_wavlm_dir, monkeypatch, die_at_checkpoint):
    """``resume_from`` another run's checkpoint (step 2) into a new ``output_dir``, killed
    while writing its own first checkpoint (steps 3-4 logged), then started again the same
    way: ``metrics.jsonl`` holds each step once, as an uninterrupted start's (until
    2026-12-07 the killed start's lines stayed: 3, 4, 3, 4, 5, 6); a line that is not a
    step's record stays."""
    part, warm = _killed_beside_a_start_from_another_run(
        tmp_path, tiny_wavlm_dir, monkeypatch, die_at_checkpoint, max_steps=6)
    assert [r["step"] for r in _records(part)] == [3, 4]
    with (part / "metrics.jsonl").open("a") as log:
        log.write('{"note": "not a step"}\n')
    train(_config(tmp_path, tiny_wavlm_dir, "part", **warm))
    assert _records(part) == [{"note": "not a step"}, *_records(tmp_path / "full")]


def test_a_fresh_start_killed_before_its_first_checkpoint_then_started_from_another_runs_logs_none_of_it(
        tmp_path, tiny_wavlm_dir, monkeypatch, die_at_checkpoint):
    """A fresh start killed while writing its first checkpoint (steps 1-2 logged), then started
    again in its folder from another run's step-2 checkpoint (``resume_from``): the log holds
    the new start's steps only, as a start from that checkpoint in a new folder (until
    2026-12-07 the killed start's steps 1-2 stayed, records of weights this run never had)."""
    part, warm = _killed_beside_a_start_from_another_run(
        tmp_path, tiny_wavlm_dir, monkeypatch, die_at_checkpoint, max_steps=4,
        killed={"max_steps": 4, "save_every": 2, "learning_rate": 0.5})
    assert [r["step"] for r in _records(part) if r["split"] == "train"] == [1, 2]
    train(_config(tmp_path, tiny_wavlm_dir, "part", **warm))
    assert [r["step"] for r in _records(part)] == [3, 4, 4]
    assert _records(part) == _records(tmp_path / "full")
    # nor is the killed start a segment of the run on its card ("resumed 1 time" before)
    records = read_environment(part)
    assert [(r["start"], r.get("from_another_run")) for r in records] == [
        ({"step": 0}, None), ({"step": 2}, True)]
    assert since_last_fresh_start(records) == records[1:]
    assert "resumed" not in describe_software(records)


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


def test_truncate_log_cuts_back_to_the_checkpoint_and_refuses_a_cut_mid_line(tmp_path, caplog):
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')  # killed mid-write
    assert truncate_log(log, 24) == 2  # one whole line and the torn one
    assert log.read_bytes() == b'{"step": 1}\n{"step": 2}\n'
    assert truncate_log(log, 24) == 0 and truncate_log(log, None) == 0
    assert truncate_log(tmp_path / "absent.jsonl", 10) == 0
    assert truncate_log(log, 0) == 2 and log.read_bytes() == b""
    log.write_bytes(b'{"step": 1}\n{"step": 2}\n')
    with caplog.at_level("WARNING", logger="robustdistill.checkpoints"):
        assert truncate_log(log, 5) == 0  # not a line's end
        assert truncate_log(log, 99) == 0  # beyond the end: shortened by hand
    assert log.read_bytes() == b'{"step": 1}\n{"step": 2}\n'
    assert caplog.text.count("may appear twice") == 2


def test_tracker_resume_kwargs_purge_what_follows_the_resumed_step():
    assert tracker_resume_kwargs(0) == {}
    assert tracker_resume_kwargs(7) == {"tensorboard": {"purge_step": 8}}


def test_save_checkpoint_publishes_state_rotates_by_prefix_and_keeps_packed_gru_whole(tmp_path):
    """The one writer of the three trainers: a GRU packed as cuDNN packs it (the SE student
    on a GPU) is saved whole; ``state`` files join the manifest; rotation counts its own
    prefix only; an existing folder is replaced only when asked."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 4, num_layers=2)
    _pack_like_cudnn(gru)
    acc = Accelerator(cpu=True)
    model = acc.prepare(gru)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    folder = tmp_path / "checkpoints"
    _fake_checkpoint(folder, 0, step=0)  # another prefix: never rotated by epoch_ saves
    for epoch in (1, 2, 3):
        final = save_checkpoint(acc, folder, epoch, epoch * 10, state={"s.json": {"e": epoch}},
                                keep=2, prefix="epoch_")
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_0", "epoch_2", "epoch_3"]
    manifest = verify_checkpoint(final)
    assert manifest["step"] == 30 and "s.json" in manifest["files"]
    assert json.loads((final / "s.json").read_text()) == {"e": 3}
    saved = load_file(str(final / "model.safetensors"))
    assert saved.keys() == expected.keys() and len(saved) == 8
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
    with pytest.raises(CheckpointError, match="exists already"):  # before anything is written
        save_checkpoint(acc, folder, 3, 30, prefix="epoch_")
    with pytest.raises(ValueError, match="keep must be >= 1"):
        save_checkpoint(acc, folder, 4, 40, keep=0, prefix="epoch_")
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_0", "epoch_2", "epoch_3"]
    save_checkpoint(acc, folder, 3, 31, prefix="epoch_", replace=True)
    assert verify_checkpoint(folder / "epoch_3")["step"] == 31
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_0", "epoch_2", "epoch_3"]


def test_resuming_from_another_runs_checkpoint_leaves_this_runs_log_alone(
        tmp_path, tiny_wavlm_dir):
    """The size recorded in a checkpoint is that of its own run's log: resuming run B from
    run A's checkpoint cuts nothing of B's ``metrics.jsonl`` and hides none of B's
    TensorBoard points."""
    train(_config(tmp_path, tiny_wavlm_dir, "a", max_steps=2, save_every=1))
    checkpoint = tmp_path / "a" / "checkpoints" / "checkpoint_0"
    size = json.loads((checkpoint / "training_state.json").read_text())["metrics_bytes"]
    b = tmp_path / "b"
    b.mkdir()
    first = '{"note": "' + "x" * (size - 13) + '"}\n'  # a line ends where A's log was cut
    earlier = first + '{"note": "B\'s second line"}\n'
    assert len(first) == size
    (b / "metrics.jsonl").write_text(earlier)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(b / "logs" / "distill")) as writer:  # B's own earlier points
        for step in (1, 5, 9):
            writer.add_scalar("train/loss", 1.0, step)
    train(_config(tmp_path, tiny_wavlm_dir, "b", max_steps=2, resume_from=str(checkpoint),
                  report_to="[tensorboard]"))
    lines = (b / "metrics.jsonl").read_text().splitlines(keepends=True)
    assert "".join(lines[:2]) == earlier and [json.loads(x)["step"] for x in lines[2:]] == [2, 2]
    assert 9 in _tensorboard_steps(b)  # not hidden by a purge from A's step
