"""SIGTERM during ``train-speaker`` (``training.save_on_sigterm``, default true): the batch under
way finishes its optimizer step, a mid-epoch checkpoint ``epoch_N_batch_B`` is saved with the
epoch's partial sums, the command stops with one line naming it (exit status 143), and
``--training.resume true`` goes on inside the epoch and ends with the uninterrupted run's
student files, ``metrics.jsonl`` and ``result.json`` (wall-clock fields aside). The signal is
sent by the process to itself from the student's forward pass, so it lands inside a known
batch; 6 crops in batches of 2: 3 batches an epoch."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
from conftest import nan_instance_loss_at, speaker_kd_config

from downstream.config import from_dict, to_dict
from robustdistill.environment import read_environment
from robustdistill.interrupts import handled
from robustdistill.speaker import cli as cli_mod
from robustdistill.speaker import run_folder as run_folder_mod
from robustdistill.speaker.config import SpeakerKDConfig
from robustdistill.speaker.models import SpeakerModel
from robustdistill.speaker.train import train_system

PROG = "robustdistill train-speaker"
#: what measures wall-clock time (metrics.jsonl, result.json's epochs)
CLOCK = {"seconds", "ig_seconds"}


def _cfg(tmp_path: Path, out: str, resume: bool = False, epochs: int = 3):
    """IML-KD (maps, their cache and IG gaps in the log), batch 2, the run's own map cache."""
    cfg = speaker_kd_config(tmp_path, out, epochs, resume)
    cfg.training.batch_size = 2
    cfg.ig.cache_dir = str(tmp_path / f"cache_{out}")  # cache hits as an uninterrupted run's
    return cfg


def _terminated_in_forward(monkeypatch, call: int) -> None:
    """SIGTERM to this process inside the student's ``call``-th forward pass (1-based: batch
    ``(call - 1) % 3 + 1`` of epoch ``(call - 1) // 3 + 1``)."""
    forward, calls = SpeakerModel.forward, []

    def wrapped(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(SpeakerModel, "forward", wrapped)


def _stopped(run, capsys) -> str:
    """Run ``run()`` as the command does (:func:`handled`); the exit status must be 143.
    Returns the command's last line."""
    with pytest.raises(SystemExit) as stopped, handled(PROG):
        run()
    assert stopped.value.code == 128 + signal.SIGTERM
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _without_clock(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in CLOCK} for r in records]


def _result(run: Path) -> dict:
    """``result.json`` without its wall-clock fields, ``training.resume`` (how the run got to
    its end: the resumed run was started again with it) and the run's own folders."""
    result = json.loads((run / "result.json").read_text())
    result["epochs"] = _without_clock(result["epochs"])
    for section, key in (("training", "resume"), ("training", "output_dir"),
                         ("ig", "cache_dir")):
        del result["config"][section][key]
    return result


def _sha256(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


@pytest.mark.parametrize(("call", "saved", "line_at"), [
    (2, "epoch_0_batch_2", "after batch 2 of 3 of epoch 1"),  # IG maps computed (misses)
    (5, "epoch_1_batch_2", "after batch 2 of 3 of epoch 2"),  # read from the cache (hits)
    (6, "epoch_2", "after epoch 2 of 3"),  # in an epoch's last batch: that epoch's checkpoint
])
def test_sigterm_saves_the_batch_under_way_and_the_resume_equals_an_uninterrupted_run(
        tiny, tmp_path, monkeypatch, capsys, call, saved, line_at):
    teacher, crops = tiny
    train_system(_cfg(tmp_path, "whole"), teacher, crops)
    run = tmp_path / "part"
    _terminated_in_forward(monkeypatch, call)
    line = _stopped(lambda: train_system(_cfg(tmp_path, "part"), teacher, crops), capsys)
    monkeypatch.undo()
    folder = run / "checkpoints" / saved
    earlier = ["epoch_1"] if call > 3 else []
    assert _names(run) == sorted([*earlier, saved])  # the epoch's checkpoint stays
    assert not (run / "student").exists() and not (run / "result.json").exists()
    if saved.startswith("epoch_2"):  # the epoch ended: its own checkpoint, nothing partial
        assert line == (f"{PROG}: terminated (SIGTERM) {line_at}; the newest checkpoint is "
                        f"{folder} (epoch 2; resume with --training.resume true)"), line
        assert run_folder_mod.epoch_progress(folder) is None
    else:
        assert line.startswith(f"{PROG}: terminated (SIGTERM) {line_at}; saved checkpoint "
                               f"{folder} in "), line
        assert line.endswith(" s (resume with --training.resume true)"), line
        progress = run_folder_mod.epoch_progress(folder)
        assert (progress["epochs_done"], progress["batches"], progress["steps"],
                progress["crops"]) == (call // 3, 2, 2, 6)
        # 2 batches of 2 crops, 3 segments each (two of 0.1 s, the whole 0.2 s): computed in
        # epoch 1, read in epoch 2
        hits = 12 if call > 3 else 0
        assert (progress["cache_hits"], progress["cache_misses"]) == (hits, 12 - hits)
        assert len(progress["ig_gaps"]) == 12
        # what the command says of it on a later Ctrl-C (it used to see epoch_N only)
        assert cli_mod._interrupt_note(_cfg(tmp_path, "part"), "train") == (
            f"; the newest checkpoint is {folder} (2 batches into epoch {call // 3 + 1}; resume "
            "with --training.resume true)")
    log = run / "metrics.jsonl"
    logged = [json.loads(x)["epoch"] for x in log.read_text().splitlines()] if log.exists() \
        else []
    assert logged == list(range(1, call // 3 + 1))  # the unfinished epoch is not logged

    train_system(_cfg(tmp_path, "part", resume=True), teacher, crops)
    whole = tmp_path / "whole"
    assert _sha256(run / "student") == _sha256(whole / "student")
    assert (_without_clock([json.loads(x) for x in (run / "metrics.jsonl").read_text()
                            .splitlines()])
            == _without_clock([json.loads(x) for x in (whole / "metrics.jsonl").read_text()
                               .splitlines()]))
    assert _result(run) == _result(whole)
    assert _names(run) == ["epoch_2", "epoch_3"]  # keep_checkpoints 2; the partial one went
    # environment.json: the start, then the resume at the checkpoint's epochs and batches done
    # (the record used to say the epoch only, as if the resume had replayed the whole epoch)
    resumed_at = ({"epoch": 2} if saved == "epoch_2"
                  else {"epoch": call // 3, "batch": 2})
    assert [r["start"] for r in read_environment(run)] == [{"epoch": 0}, resumed_at]


def test_with_save_on_sigterm_false_sigterm_stops_at_once_and_loses_the_epoch(
        tiny, tmp_path, monkeypatch, capsys):
    teacher, crops = tiny
    run = tmp_path / "off"
    settings = to_dict(_cfg(tmp_path, "off"))
    assert settings["training"]["save_on_sigterm"] is True  # the default
    settings["training"]["save_on_sigterm"] = False  # as --training.save_on_sigterm false
    cfg = from_dict(SpeakerKDConfig, settings)
    _terminated_in_forward(monkeypatch, 5)
    line = _stopped(lambda: train_system(cfg, teacher, crops), capsys)
    assert line == f"{PROG}: terminated (SIGTERM)", line  # no note: the command's own is in cli
    assert _names(run) == ["epoch_1"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_mid_epoch_checkpoints_keep_the_resume_checks_and_rotate(tiny, tmp_path, monkeypatch,
                                                                 capsys):
    """Settings changed, an epoch count the checkpoint is past, other training crops: refused
    by the mid-epoch checkpoint's name; a kill while it is written leaves ``.tmp-`` only, and
    the resume starts from the epoch before; with ``keep_checkpoints 1`` the SIGTERM deletes no
    epoch checkpoint."""
    import accelerate

    teacher, crops = tiny
    run = tmp_path / "r"
    cfg = _cfg(tmp_path, "r")
    cfg.training.keep_checkpoints = 1
    _terminated_in_forward(monkeypatch, 8)  # epoch 3, batch 2
    _stopped(lambda: train_system(cfg, teacher, crops), capsys)
    monkeypatch.undo()
    assert _names(run) == ["epoch_2", "epoch_2_batch_2"]
    folder = run / "checkpoints" / "epoch_2_batch_2"
    changed = _cfg(tmp_path, "r", resume=True)
    changed.training.lr = 0.05
    with pytest.raises(ValueError, match=rf"{folder} was trained with other settings.*"
                                         r"training\.lr"):
        train_system(changed, teacher, crops)
    with pytest.raises(ValueError, match=r"has trained 2 epochs and 2 batches of epoch 3, more "
                                         r"than training\.epochs 2.*training\.epochs >= 3"):
        train_system(_cfg(tmp_path, "r", resume=True, epochs=2), teacher, crops)
    with pytest.raises(ValueError, match="saved 2 batches into epoch 3 of 6 training crops; "
                                         "this run has 5"):
        train_system(_cfg(tmp_path, "r", resume=True), teacher, crops[:5])
    with pytest.raises(ValueError, match=r"earlier run \(epoch_2, epoch_2_batch_2\)"):
        train_system(_cfg(tmp_path, "r"), teacher, crops)
    assert _names(run) == ["epoch_2", "epoch_2_batch_2"]

    # a kill while the mid-epoch checkpoint is written: the resume replays the epoch
    fresh = _cfg(tmp_path, "k")
    real_save = accelerate.Accelerator.save_state

    def killed_while_saving(self, output_dir=None, **kwargs):
        if "batch" in str(output_dir):
            Path(output_dir).mkdir(parents=True)
            raise KeyboardInterrupt("killed while saving")
        return real_save(self, output_dir, **kwargs)

    _terminated_in_forward(monkeypatch, 5)
    monkeypatch.setattr(accelerate.Accelerator, "save_state", killed_while_saving)
    with pytest.raises(SystemExit), handled(PROG):
        train_system(fresh, teacher, crops)
    monkeypatch.undo()
    assert _names(tmp_path / "k") == [".tmp-epoch_1_batch_2", "epoch_1"]
    train_system(_cfg(tmp_path, "k", resume=True), teacher, crops)
    train_system(_cfg(tmp_path, "whole"), teacher, crops)
    assert _sha256(tmp_path / "k" / "student") == _sha256(tmp_path / "whole" / "student")
    assert _result(tmp_path / "k") == _result(tmp_path / "whole")


def test_sigterm_in_the_last_batch_trained_saves_the_epoch_when_a_one_crop_batch_follows(
        tiny, tmp_path, monkeypatch, capsys):
    """6 crops in batches of 5: the second batch (one crop) is never trained, so the first is
    the epoch's last: a SIGTERM in it saves ``epoch_1``, not a needless ``epoch_0_batch_1``
    (which used to say "after batch 1 of 2")."""
    teacher, crops = tiny

    def cfg(out, resume=False):
        c = _cfg(tmp_path, out, resume)
        c.training.batch_size = 5
        return c

    train_system(cfg("whole"), teacher, crops)
    run = tmp_path / "part"
    _terminated_in_forward(monkeypatch, 1)
    line = _stopped(lambda: train_system(cfg("part"), teacher, crops), capsys)
    monkeypatch.undo()
    assert _names(run) == ["epoch_1"]
    assert line == (f"{PROG}: terminated (SIGTERM) after epoch 1 of 3; the newest checkpoint is "
                    f"{run / 'checkpoints' / 'epoch_1'} (epoch 1; resume with --training.resume "
                    "true)"), line
    train_system(cfg("part", resume=True), teacher, crops)
    assert _sha256(run / "student") == _sha256(tmp_path / "whole" / "student")
    assert _result(run) == _result(tmp_path / "whole")


def _nan_instance_loss_at(monkeypatch, call: int) -> None:
    """Make ``instance_loss``'s ``call``-th call (1-based: batch ``(call - 1) % 3 + 1`` of epoch
    ``(call - 1) // 3 + 1`` with 6 crops in batches of 2) NaN."""
    nan_instance_loss_at(monkeypatch, call)


def _embedding_kd(tmp_path: Path, out: str, resume: bool = False, lr: float = 0.01):
    cfg = speaker_kd_config(tmp_path, out, 3, resume, method="embedding_kd")
    cfg.training.batch_size, cfg.training.lr = 2, lr
    return cfg


def test_a_fresh_start_replacing_a_run_stopped_before_any_checkpoint_drops_its_stop_record(
        tiny, tmp_path, monkeypatch, capsys):
    """A run stopped by a NaN/Inf step before its first checkpoint, then started again in the
    same folder with a sane rate ("the same folder will do") and stopped by a SIGTERM inside
    its first epoch: its ``stopped.json`` used to stay until an epoch ended, so the folder held
    a mid-epoch checkpoint beside a record naming the other run's rate and "no checkpoint", and
    ``card --run`` refused that checkpoint's weights as those of a run that saved none."""
    from robustdistill.speaker.train import NonFiniteLossError

    teacher, crops = tiny
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="no checkpoint of this run was saved"):
        train_system(_embedding_kd(tmp_path, "run", lr=3e37), teacher, crops)
    assert json.loads((run / "stopped.json").read_text())["checkpoint"] is None
    _terminated_in_forward(monkeypatch, 1)  # batch 1 of epoch 1: before the old stop's batch
    _stopped(lambda: train_system(_embedding_kd(tmp_path, "run"), teacher, crops), capsys)
    assert _names(run) == ["epoch_0_batch_1"]
    assert not (run / "stopped.json").exists()


@pytest.mark.parametrize(("nan_call", "term_call", "saved", "kept"), [
    (4, 2, "epoch_1_batch_2", False),  # stop at batch 1 of epoch 2; SIGTERM after batch 2
    (4, 1, "epoch_1_batch_1", False),  # ... SIGTERM in that very batch: it was trained
    (5, 1, "epoch_1_batch_1", True),  # stop at batch 2 of epoch 2; SIGTERM before it
])
def test_a_mid_epoch_checkpoint_past_a_stop_drops_its_record_one_before_it_keeps_it(
        tiny, tmp_path, monkeypatch, capsys, nan_call, term_call, saved, kept):
    """A run stopped by a NaN/Inf step, resumed (the step is finite this time) and stopped by a
    SIGTERM inside the epoch of the stop: a checkpoint holding the stop's batch is past it, and
    the record goes (it used to stay until an epoch ended, so ``card --run`` said "the weights
    are those of its newest checkpoint, `epoch_1`, nothing after it was saved" beside a newer
    ``epoch_1_batch_2``, and refused that checkpoint's weights); one before it keeps it."""
    from robustdistill.speaker.train import NonFiniteLossError

    teacher, crops = tiny
    run = tmp_path / "run"
    _nan_instance_loss_at(monkeypatch, nan_call)
    with pytest.raises(NonFiniteLossError):
        train_system(_embedding_kd(tmp_path, "run"), teacher, crops)
    record = json.loads((run / "stopped.json").read_text())
    assert (record["epoch"], record["batch"]) == (2, nan_call - 3)
    monkeypatch.undo()
    _terminated_in_forward(monkeypatch, term_call)
    _stopped(lambda: train_system(_embedding_kd(tmp_path, "run", resume=True), teacher, crops),
             capsys)
    assert _names(run) == ["epoch_1", saved]
    assert (run / "stopped.json").exists() == kept
    if kept:
        assert json.loads((run / "stopped.json").read_text()) == record
