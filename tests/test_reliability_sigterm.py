"""SIGTERM during training (``training.save_on_sigterm``, default true): the step under way
finishes, a checkpoint of it is saved, the command stops with one line naming it and exit
status 143, and ``--resume`` ends with the uninterrupted run's parameters and ``metrics.jsonl``
(``robustdistill.interrupts.sigterm_deferred``). The signal is sent by the process to itself
from a wrapped trainer method, so it lands at a known point: inside a step's forward pass,
inside a validation pass, inside the last checkpoint's write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import (
    in_one_thread,
    resumed_equals_whole,
    se_train_args,
    small_distill_args,
    write_se_data,
)

from robustdistill.checkpoints import list_checkpoints
from robustdistill.config import load_config

REPO = Path(__file__).resolve().parents[1]

#: Runs ``robustdistill`` with one trainer method wrapped to send SIGTERM to this process once,
#: at ``SIGTERM_AT`` (``loss:N``: in the forward pass of the step after step N; ``validate:N``:
#: in the validation of step N; ``save:N``: as the checkpoint of step N is written;
#: ``batch:N``: as ``train-se`` draws the batch of step N, 0-based).
DRIVER = textwrap.dedent('''
    import os, signal, sys
    from robustdistill import cli, trainer
    from robustdistill.se import data as se_data

    kind, at = os.environ["SIGTERM_AT"].split(":")
    at, sent = int(at), []

    def term():
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)

    loss, save, batch = trainer._Run._loss, trainer._Run.save_checkpoint, se_data.PairMaker.batch

    def wrapped_loss(self, b, rng, step, dataset=None, model=None):
        if (kind, self.progress.step) in (("loss", at), ("validate", at)) and (
                (model is None) == (kind == "loss")):
            term()
        return loss(self, b, rng, step, dataset, model)

    def wrapped_save(self):
        if kind == "save" and self.progress.step == at:
            term()
        return save(self)

    def wrapped_batch(self, step, *args, **kwargs):
        if kind == "batch" and step == at:
            term()
        return batch(self, step, *args, **kwargs)

    trainer._Run._loss, trainer._Run.save_checkpoint = wrapped_loss, wrapped_save
    se_data.PairMaker.batch = wrapped_batch
    sys.exit(cli.main(sys.argv[1:]))
''')

#: metrics.jsonl fields that measure wall-clock time
CLOCK = {"audio_seconds_per_second", "data_wait_share"}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **extra}


def _run(tmp_path: Path, argv: list[str], at: str) -> subprocess.CompletedProcess:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.run([sys.executable, str(driver), *argv], cwd=REPO,
                          env=_env(SIGTERM_AT=at), capture_output=True, text=True, timeout=300)


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _records(run: Path) -> list[dict]:
    """``metrics.jsonl`` without its wall-clock fields."""
    return [{k: v for k, v in json.loads(line).items() if k not in CLOCK}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _steps(checkpoints: Path) -> list[int]:
    return [json.loads((c / "checkpoint.json").read_text())["step"]
            for c in list_checkpoints(checkpoints)]


def _distill_args(tmp_path: Path, teacher: Path, out: str, *extra: str) -> list[str]:
    """12 steps, a validation every 4, one checkpoint only at the end (any other is the
    SIGTERM's)."""
    return [*small_distill_args(tmp_path, teacher, out, **{
        "training.max_steps": 12, "training.save_every": 0, "training.eval_every": 4,
        "training.keep_checkpoints": 3}), *extra]


@pytest.mark.slow
@pytest.mark.parametrize(("at", "saved"), [
    ("loss:5", 6),  # mid-step: step 6 finishes, then its checkpoint
    ("validate:8", 8),  # the validation of step 8 stops; the resume validates step 8 first
    ("save:12", 12),  # during the last checkpoint: after every check; stops before the export
])
def test_sigterm_saves_the_step_under_way_and_the_resume_equals_an_uninterrupted_run(
        tmp_path, tiny_wavlm_dir, at, saved):
    from robustdistill.trainer import train

    in_one_thread(train, load_config(None, _distill_args(tmp_path, tiny_wavlm_dir, "whole")))
    out = tmp_path / "part"
    argv = ["distill", *_distill_args(tmp_path, tiny_wavlm_dir, "part")]
    part = _run(tmp_path, argv, at)
    assert part.returncode == 128 + signal.SIGTERM, part.stderr[-3000:]
    assert "Traceback" not in part.stderr, part.stderr[-3000:]
    newest = list_checkpoints(out / "checkpoints")[-1]
    assert _steps(out / "checkpoints") == [saved]
    line = _last_line(part.stderr)
    if at.startswith("save"):  # saved by the schedule, before the signal was acted upon
        assert line == (f"robustdistill distill: terminated (SIGTERM) after step 12 of 12; the "
                        f"newest checkpoint is {newest} (step 12; resume with --resume)"), line
    else:
        prefix = (f"robustdistill distill: terminated (SIGTERM) after step {saved} of 12; "
                  f"saved checkpoint {newest} in ")
        assert line.startswith(prefix) and line.endswith(f" s (step {saved}; resume with "
                                                         "--resume)"), line
        assert f"SIGTERM: checkpoint {newest} of step {saved} saved in " in part.stderr
    assert not (out / "final_state.json").exists()  # stopped, not finished
    state = json.loads((newest / "training_state.json").read_text())["progress"]
    assert state["validation_due"] is at.startswith("validate")

    resumed = subprocess.run([sys.executable, "-m", "robustdistill", *argv, "--resume"],
                             cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = resumed_equals_whole(tmp_path, steps=12)
    assert final["part"]["best_validation_loss"] == final["whole"]["best_validation_loss"]
    assert _records(out) == _records(tmp_path / "whole")
    assert [(r["split"], r["step"]) for r in _records(out) if r["split"] == "validation"] == [
        ("validation", 4), ("validation", 8), ("validation", 12)]


@pytest.mark.slow
def test_with_save_on_sigterm_false_sigterm_stops_at_once_as_before(tmp_path, tiny_wavlm_dir):
    """``training.save_on_sigterm false``: the step under way is lost; the line names the
    newest scheduled checkpoint (here none: only the end has one)."""
    out = tmp_path / "part"
    argv = ["distill", *_distill_args(tmp_path, tiny_wavlm_dir, "part",
                                      "--training.save_on_sigterm", "false")]
    part = _run(tmp_path, argv, "loss:5")
    assert part.returncode == 128 + signal.SIGTERM, part.stderr[-3000:]
    assert "Traceback" not in part.stderr, part.stderr[-3000:]
    assert _last_line(part.stderr) == (
        "robustdistill distill: terminated (SIGTERM) after step 5 of 12; no checkpoint of this "
        "run yet: the same command starts it again")
    assert _steps(out / "checkpoints") == []


@pytest.mark.slow
@pytest.mark.parametrize("save_on_sigterm", [True, False])
def test_train_se_sigterm_saves_the_step_under_way_and_resumes_exactly(tmp_path,
                                                                       save_on_sigterm):
    """``train-se`` (checkpoints only at the end): SIGTERM while step 4's batch is drawn; the
    step finishes and is saved, the same command ends with the uninterrupted run's weights and
    ``metrics.jsonl``, byte for byte. Off: stops at once, nothing saved."""
    from robustdistill.se.train import load_se_config, train_se

    write_se_data(tmp_path)
    extra = ["--training.save_every", "0", "--training.log_every", "1"]
    in_one_thread(train_se, load_se_config(None, se_train_args(tmp_path, tmp_path / "whole",
                                                                10, *extra)))
    out = tmp_path / "part"
    argv = ["train-se", *se_train_args(tmp_path, out, 10, *extra,
                                       "--training.save_on_sigterm", str(save_on_sigterm))]
    part = _run(tmp_path, argv, "batch:4")
    assert part.returncode == 128 + signal.SIGTERM, part.stderr[-3000:]
    assert "Traceback" not in part.stderr, part.stderr[-3000:]
    line = _last_line(part.stderr)
    if not save_on_sigterm:
        assert line == ("robustdistill train-se: terminated (SIGTERM) after step 4 of 10; no "
                        "checkpoint of this run yet: the same command starts it again"), line
        assert _steps(out / "checkpoints") == []
        return
    newest = list_checkpoints(out / "checkpoints")[-1]
    assert _steps(out / "checkpoints") == [5]
    assert line.startswith(f"robustdistill train-se: terminated (SIGTERM) after step 5 of 10; "
                           f"saved checkpoint {newest} in "), line
    assert line.endswith(" s (step 5; run the same command again to resume)"), line
    again = subprocess.run([sys.executable, "-m", "robustdistill", *argv], cwd=REPO, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    sha = [json.loads((tmp_path / name / "final_state.json").read_text())["parameter_sha256"]
           for name in ("part", "whole")]
    assert sha[0] == sha[1]
    assert (out / "metrics.jsonl").read_bytes() == (tmp_path / "whole" / "metrics.jsonl"
                                                    ).read_bytes()


@pytest.mark.slow
def test_sigterm_with_a_streamed_dataset_puts_back_the_batches_of_the_step_not_run(
        tmp_path, tiny_wavlm_dir):
    """A stream (shuffle buffer 8, 2 DataLoader workers) records each batch as it is taken:
    the checkpoint saved for a SIGTERM holds its position before the batches of the step that
    did not run (drawn before the agreement), so the resume trains on them: the uninterrupted
    run's parameters. Without putting them back the resume skipped one batch."""
    from datasets import Audio, Dataset

    from robustdistill.synthetic import write_synthetic_corpus
    from robustdistill.trainer import train

    files = write_synthetic_corpus(tmp_path / "wavs", 11, (0.6, 1.2), seed=5)
    table = Dataset.from_dict({"audio": [str(f) for f in files]})
    table.cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "hf"))
    stream = ["--data.synthetic_items", "0", "--data.train_dataset", str(tmp_path / "hf"),
              "--data.streaming", "true", "--data.shuffle_buffer", "8", "--data.num_workers",
              "2", "--data.validation_dir", str(tmp_path / "wavs"),
              "--data.max_validation_items", "2"]
    in_one_thread(train, load_config(None, _distill_args(tmp_path, tiny_wavlm_dir, "whole",
                                                          *stream)))
    argv = ["distill", *_distill_args(tmp_path, tiny_wavlm_dir, "part", *stream)]
    part = _run(tmp_path, argv, "loss:4")  # in step 5 (validations at 4 and 8)
    assert part.returncode == 128 + signal.SIGTERM, part.stderr[-3000:]
    assert _steps(tmp_path / "part" / "checkpoints") == [5]
    resumed = subprocess.run([sys.executable, "-m", "robustdistill", *argv, "--resume"],
                             cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = {name: json.loads((tmp_path / name / "final_state.json").read_text())
             for name in ("part", "whole")}
    assert (final["part"]["parameter_sha256_per_rank"]
            == final["whole"]["parameter_sha256_per_rank"])
    assert _records(tmp_path / "part") == _records(tmp_path / "whole")


def test_a_held_sigterm_raises_nothing_until_the_trainer_stops(capsys):
    """Inside ``sigterm_deferred`` a SIGTERM is recorded, not raised (a launcher's repeat within
    ``REPEAT_GRACE_S`` too); ``stop_terminated`` then ends the command as a SIGTERM does (the
    line with the note, ``SystemExit(143)``). An error raised while the signal is held is the
    run's own (it passes through as it is, not as exit 143). Outside the block, or with the
    option off, SIGTERM raises at once, as before."""
    from robustdistill.interrupts import (
        handled,
        note,
        sigterm_deferred,
        sigterm_pending,
        stop_terminated,
    )

    with (pytest.raises(SystemExit) as stopped, handled("prog"),
          note(lambda: "after step 3"), sigterm_deferred()):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the launcher's repeat: ignored
        assert sigterm_pending()
        stop_terminated()
    assert stopped.value.code == 143
    assert capsys.readouterr().err == "prog: terminated (SIGTERM) after step 3\n"

    with (pytest.raises(ValueError, match="the run's own"), handled("prog"),
          sigterm_deferred()):
        os.kill(os.getpid(), signal.SIGTERM)
        raise ValueError("the run's own")
    assert capsys.readouterr().err == ""

    for enabled in (False, True):
        with pytest.raises(SystemExit) as stopped, handled("prog"):
            with sigterm_deferred(enabled):
                if not enabled:
                    os.kill(os.getpid(), signal.SIGTERM)
                    pytest.fail("not raised")
            assert not sigterm_pending()
            os.kill(os.getpid(), signal.SIGTERM)  # after the block: at once
            pytest.fail("not raised")
        assert stopped.value.code == 143
    with sigterm_deferred():  # outside handled: nothing to defer
        assert not sigterm_pending()


class _SlowItems(torch.utils.data.Dataset):
    """Six items, each its index, a few milliseconds to read (a worker busy when signalled)."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> int:
        import time

        time.sleep(0.02)
        return index


def _items(batch: list[int]) -> list[int]:
    return batch


def test_a_dataloader_worker_outlives_the_runs_sigterm_while_the_trainer_finishes_its_step(
        capsys):
    """A SIGTERM sent to every process of the run (``timeout``, a scheduler, a terminal's
    process group) reaches the DataLoader workers too. Inside the trainers' deferral a worker
    outlives it, so the step finishes (every batch comes) and the run stops with 143; without
    this the worker died and torch raised ``DataLoader worker ... is killed by signal``
    mid-step: a traceback and status 1 on LibriSpeech with ``data.num_workers 2``. The
    parent's own SIGTERM (multiprocessing's ``terminate`` at exit) still ends the worker."""
    from robustdistill.data.batching import build_dataloader
    from robustdistill.interrupts import handled, sigterm_deferred, stop_terminated

    with pytest.raises(SystemExit) as stopped, handled("prog"), sigterm_deferred():
        loader = build_dataloader(_SlowItems(), 1, num_workers=1, collate_fn=_items)
        batches = iter(loader)
        got = [next(batches)]
        worker = batches._workers[0]
        # the group's signal, from another process (as timeout or slurmstepd sends it), to
        # the worker and to this process
        subprocess.run(["kill", "-TERM", str(worker.pid), str(os.getpid())], check=True)
        worker.join(timeout=1.0)  # torch's handler: dead within a second
        assert worker.is_alive()
        got += [next(batches) for _ in range(5)]  # the iterator not ended: its worker runs
        assert got == [[0], [1], [2], [3], [4], [5]]
        os.kill(worker.pid, signal.SIGTERM)  # from its parent (multiprocessing's terminate)
        worker.join(timeout=5.0)
        assert worker.exitcode == 0  # ended at once, as torch's handler does
        del batches
        stop_terminated()
    assert stopped.value.code == 143
    assert capsys.readouterr().err == "prog: terminated (SIGTERM)\n"
