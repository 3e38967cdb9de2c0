"""Ctrl-C (SIGINT) and SIGTERM sent to real ``robustdistill`` processes: one line naming where
the work stopped (the newest checkpoint, the cache entries), no traceback, the signal's exit
status, and a resume that ends as an uninterrupted run (``robustdistill.interrupts``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
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
PYTHON = [sys.executable, "-m", "robustdistill"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def _distill_args(tmp_path: Path, teacher: Path, out: str) -> list[str]:
    """A distillation of 12 steps of about 0.1 s each (the kill test's), a checkpoint every
    2 steps."""
    return small_distill_args(tmp_path, teacher, out, **{"training.max_steps": 12})


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _signal_when(cmd: list[str], ready, *signums: int, gap_s: float = 0.0,
                 timeout_s: float = 120) -> tuple[int, str]:
    """Start ``cmd``, wait until ``ready()``, send ``signums`` (``gap_s`` apart).

    Returns:
        The return code (``-N``: ended by signal N, which a shell shows as ``128 + N``) and
        stderr.
    """
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"ended before the signal: {proc.communicate()[1][-3000:]}")
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.01)
        for i, signum in enumerate(signums):
            time.sleep(gap_s if i else 0.0)
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def _default_sigint() -> None:
    """In the child before ``exec``: SIGINT at its default, as in a terminal. A test session
    started in the background of a non-interactive shell (``nohup ... &``) ignores SIGINT, and
    its children would inherit that (the command keeps an ignored SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _newest(checkpoints: Path) -> tuple[Path, int]:
    newest = list_checkpoints(checkpoints)[-1]
    return newest, json.loads((newest / "checkpoint.json").read_text())["step"]


@pytest.mark.slow
def test_ctrl_c_mid_distillation_is_one_line_and_the_resume_ends_as_an_uninterrupted_run(
        tmp_path, tiny_wavlm_dir):
    """Ctrl-C after step 4: no traceback; the last line names the step and the newest complete
    checkpoint and says how to resume; the process ends by SIGINT (a shell shows 130, and a
    shell loop around the command stops too). ``--resume`` ends with the parameters of an
    uninterrupted run, each step logged once. Before: a ``KeyboardInterrupt`` traceback."""
    from robustdistill.trainer import train

    in_one_thread(train, load_config(None, _distill_args(tmp_path, tiny_wavlm_dir, "whole")))
    out = tmp_path / "part"
    cmd = [*PYTHON, "distill", *_distill_args(tmp_path, tiny_wavlm_dir, "part")]
    code, err = _signal_when(cmd, lambda: _lines(out / "metrics.jsonl") >= 4, signal.SIGINT)
    assert code == -signal.SIGINT, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    newest, step = _newest(out / "checkpoints")
    line = _last_line(err)
    stopped = int(line.removeprefix("robustdistill distill: interrupted after step ").split()[0])
    assert line == (f"robustdistill distill: interrupted after step {stopped} of 12; the newest "
                    f"checkpoint is {newest} (step {step}; resume with --resume)")
    assert 4 <= stopped < 12 and step in (stopped - 2, stopped - 1, stopped)

    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_equals_whole(tmp_path, steps=12)
    logged = [(r["split"], r["step"]) for r in map(json.loads, (out / "metrics.jsonl")
                                                    .read_text().splitlines())]
    assert logged == [("train", s) for s in range(1, 13)] + [("validation", 12)]


def _terminated_distillation(tmp_path, teacher, *extra) -> tuple[str, Path, int]:
    """SIGTERM a 12-step distillation (``extra``: more overrides) after its third logged line:
    its last stderr line, newest checkpoint and that checkpoint's step, once the exit status
    (143), no traceback and the line's start are checked."""
    out = tmp_path / "part"
    cmd = [*PYTHON, "distill", *_distill_args(tmp_path, teacher, "part"), *extra]
    code, err = _signal_when(cmd, lambda: _lines(out / "metrics.jsonl") >= 3, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    newest, step = _newest(out / "checkpoints")
    line = _last_line(err)
    assert line.startswith("robustdistill distill: terminated (SIGTERM) after step "), line
    return line, newest, step


@pytest.mark.slow
def test_sigterm_mid_distillation_is_one_line_and_exit_status_143(tmp_path, tiny_wavlm_dir):
    """SIGTERM (``kill``, a scheduler, a launcher): the same line with ``terminated
    (SIGTERM)``, exit status 143 (128 + 15, as ``accelerate launch`` exits on SIGTERM), and a
    checkpoint of the step it stopped at (``training.save_on_sigterm``, default true: saved
    for the signal, or by the schedule just before it). Before: the default action, no line at
    all; until 2026-12-07 the steps since the last scheduled checkpoint were lost."""
    line, newest, step = _terminated_distillation(tmp_path, tiny_wavlm_dir)
    stopped = int(line.split()[6])
    assert step == stopped, line
    assert (line.endswith(f" of 12; the newest checkpoint is {newest} (step {step}; resume "
                          "with --resume)")
            or (f" of 12; saved checkpoint {newest} in " in line
                and line.endswith(f" s (step {step}; resume with --resume)"))), line


@pytest.mark.slow
def test_sigterm_with_save_on_sigterm_false_stops_at_once(tmp_path, tiny_wavlm_dir):
    """``training.save_on_sigterm false``: SIGTERM stops at once, as before 2026-12-07: the
    line names the newest scheduled checkpoint."""
    line, newest, step = _terminated_distillation(tmp_path, tiny_wavlm_dir,
                                                  "--training.save_on_sigterm", "false")
    assert line.endswith(f" of 12; the newest checkpoint is {newest} (step {step}; resume "
                         "with --resume)"), line
    assert step % 2 == 0  # a scheduled one


@pytest.mark.slow
def test_ctrl_c_mid_train_se_is_one_line_and_the_same_command_resumes_exactly(tmp_path):
    """``train-se`` (a checkpoint every step) interrupted after step 3 names its newest
    checkpoint; the same command run again ends with the uninterrupted run's weights."""
    from robustdistill.se.train import load_se_config, train_se

    write_se_data(tmp_path)
    in_one_thread(train_se, load_se_config(None, se_train_args(tmp_path, tmp_path / "whole",
                                                                30)))
    out = tmp_path / "part"
    cmd = [*PYTHON, "train-se", *se_train_args(tmp_path, out, 30)]
    code, err = _signal_when(cmd, lambda: _lines(out / "metrics.jsonl") >= 3, signal.SIGINT)
    assert code == -signal.SIGINT, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    newest, step = _newest(out / "checkpoints")
    line = _last_line(err)
    assert line.startswith("robustdistill train-se: interrupted after step "), line
    assert line.endswith(f" of 30; the newest checkpoint is {newest} (step {step}; run the "
                         "same command again to resume)"), line
    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    sha = [json.loads((tmp_path / name / "final_state.json").read_text())["parameter_sha256"]
           for name in ("part", "whole")]
    assert sha[0] == sha[1]


@pytest.mark.slow
def test_ctrl_c_mid_cache_teacher_keeps_the_entries_and_the_same_command_builds_the_rest(
        tmp_path, tiny_wavlm_dir):
    """``cache-teacher`` interrupted once 2 entries are written: one line with the count and
    what to do; the same command builds only the rest, ending with the entries of a build
    that was never interrupted."""
    args = _distill_args(tmp_path, tiny_wavlm_dir, "run")
    args = [*args, "--data.synthetic_items", "40", "--teacher_cache.dir", str(tmp_path / "tc"),
            "--teacher_cache.context", "utterance"]
    cmd = [*PYTHON, "cache-teacher", *args]

    def entries() -> list[str]:
        return sorted(p.name for p in (tmp_path / "tc").glob("*/*/*.safetensors"))

    code, err = _signal_when(cmd, lambda: len(entries()) >= 2, signal.SIGINT)
    assert code == -signal.SIGINT, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    line = _last_line(err)
    assert line.startswith("robustdistill cache-teacher: interrupted after "), line
    assert line.endswith(f" were there); every entry complete in {tmp_path / 'tc'} stays (each "
                         "is written whole): the same command builds the rest"), line
    written = len(entries())
    assert written < 40
    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["skipped"] >= written and summary["computed"] + summary["skipped"] == 40
    assert len(entries()) == 40


_SLOW_CLEANUP = textwrap.dedent("""
    import pathlib, sys, time
    from robustdistill.interrupts import handled, note
    def slow():
        print("cleaning up", file=sys.stderr, flush=True)
        time.sleep(float(sys.argv[1]))
        return "after the work"
    with handled("prog"):
        with note(slow):
            pathlib.Path(sys.argv[2]).touch()
            time.sleep(60)
""")


def _run_slow_cleanup(tmp_path: Path, cleanup_s: float, *signums: int, gap_s: float):
    """A command whose note takes ``cleanup_s`` to write; ``signums`` sent once it works."""
    script, working = tmp_path / "slow.py", tmp_path / "working"
    script.write_text(_SLOW_CLEANUP)
    started = time.monotonic()
    code, err = _signal_when([sys.executable, str(script), str(cleanup_s), str(working)],
                             working.exists, *signums, gap_s=gap_s)
    return code, err, time.monotonic() - started


def test_a_second_ctrl_c_during_the_clean_up_stops_the_process_at_once(tmp_path):
    """The clean-up after the first Ctrl-C takes 30 s (a note that sleeps); a second Ctrl-C
    1.5 s later ends the process by SIGINT right away, printing nothing more."""
    code, err, took = _run_slow_cleanup(tmp_path, 30, signal.SIGINT, signal.SIGINT, gap_s=1.5)
    assert code == -signal.SIGINT
    assert "cleaning up" in err and "prog: interrupted" not in err and "Traceback" not in err
    assert took < 20


def test_a_launchers_repeat_of_the_same_ctrl_c_is_not_a_second_one(tmp_path):
    """A terminal's Ctrl-C reaches a launcher's child twice (directly, then passed on as
    SIGINT or SIGTERM by ``accelerate launch`` or torchrun): a repeat within
    ``REPEAT_GRACE_S`` is ignored, so the line is still printed, as for Ctrl-C."""
    code, err, _ = _run_slow_cleanup(tmp_path, 0.3, signal.SIGINT, signal.SIGTERM, gap_s=0.05)
    assert code == -signal.SIGINT, err
    assert _last_line(err) == "prog: interrupted after the work"
    assert "Traceback" not in err


def test_an_interrupt_while_the_se_table_saves_keeps_its_results(tmp_path, monkeypatch):
    """``python -m robustdistill.se.table`` saves ``results.json`` after every entry. A Ctrl-C
    while it is written (the file opened, nothing written yet) left it empty, and every later
    call of the table failed on it (``JSONDecodeError``) with the finished entries lost; now
    the file is replaced whole, so it keeps the entries saved before and the next call goes
    on from there."""
    import robustdistill.se.students as students
    import robustdistill.se.table as table
    from robustdistill.se.evaluate import TestPairs

    pairs = TestPairs([torch.zeros(160).numpy()], {0.0: [torch.ones(160).numpy()]}, ["a.flac"],
                      {0.0: [{"si_sdr": 0.0, "pesq": 1.5, "stoi": 0.7}]})
    scores = {"si_sdr": 1.0, "si_sdr_i": 1.0, "pesq": 2.0, "pesq_i": 0.5, "stoi": 0.8,
              "stoi_i": 0.1, "n": 1, "unscored": {}}
    out = tmp_path / "t"
    for seed in (0, 1):  # trained by an earlier call
        (out / "runs" / f"mixture_63x_s{seed}" / "student").mkdir(parents=True)
        (out / "runs" / f"mixture_63x_s{seed}" / "student" / "model.safetensors").write_text("")
    monkeypatch.setattr(table, "make_test_pairs", lambda *a, **k: pairs)
    monkeypatch.setattr(table, "evaluate_model", lambda model, p: {"0": scores})
    monkeypatch.setattr(students.GRUMaskStudent, "from_pretrained",
                        classmethod(lambda cls, path: f"student {path.parent.name}"))
    monkeypatch.setattr(students, "count_parameters", lambda model: 5)
    args = ["--out", str(out), "--snrs", "0", "--skip-teachers", "--methods", "mixture",
            "--sizes", "63"]
    assert table.main([*args, "--seeds", "0"]) == 0
    saved = (out / "results.json").read_text()
    assert sorted(json.loads(saved)) == ["mixture_63x_s0", "noisy"]

    write_text = Path.write_text

    def interrupted(self, *a, **k):  # opened (emptied) for writing, then Ctrl-C
        if self.name.startswith(".results.json") or self.name == "results.json":
            self.open("w").close()
            raise KeyboardInterrupt
        return write_text(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        table.main([*args, "--seeds", "0", "1"])
    monkeypatch.setattr(Path, "write_text", write_text)
    assert (out / "results.json").read_text() == saved
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "runs", "table.md"]
    assert table.main([*args, "--seeds", "0", "1"]) == 0
    assert sorted(json.loads((out / "results.json").read_text())) == [
        "mixture_63x_s0", "mixture_63x_s1", "noisy"]


def test_the_note_names_the_newest_complete_checkpoint_and_how_this_run_resumes(tmp_path):
    """The distillation's note for each way a run was started: no ``resume_from`` (``--resume``
    continues it), ``auto``/``latest`` (the same command does), another run's checkpoint
    (``--resume`` beside ``--training.resume_from`` is refused: ``latest`` in its place); an
    unfinished ``.tmp-`` folder and a folder without a manifest are not named; with no
    complete checkpoint the same command starts again."""
    from types import SimpleNamespace

    from robustdistill.trainer import _interrupt_note

    checkpoints = tmp_path / "run" / "checkpoints"
    for name, step in (("checkpoint_9", 35), ("checkpoint_10", 40), (".tmp-checkpoint_11", 45)):
        (checkpoints / name).mkdir(parents=True)
        (checkpoints / name / "checkpoint.json").write_text(json.dumps({"step": step}))
    (checkpoints / "checkpoint_12").mkdir()  # no manifest: not complete

    def note(resume_from, step=41):
        cfg = SimpleNamespace(output_dir=str(tmp_path / "run"), training=SimpleNamespace(
            max_steps=60, resume_from=resume_from))
        run = SimpleNamespace(progress=SimpleNamespace(step=step))
        return _interrupt_note(cfg, run)

    newest = checkpoints / "checkpoint_10"
    assert note(None) == (f"after step 41 of 60; the newest checkpoint is {newest} (step 40; "
                          "resume with --resume)")
    for where in ("auto", "latest"):
        assert note(where).endswith("(step 40; run the same command again to resume)")
    assert note(str(tmp_path)).endswith(
        "(step 40; resume with --training.resume_from latest in place of the checkpoint given)")
    for name in ("checkpoint_9", "checkpoint_10"):
        (checkpoints / name / "checkpoint.json").unlink()
    assert note(None) == ("after step 41 of 60; no checkpoint of this run yet: the same "
                          "command starts it again")


_HOST = textwrap.dedent("""
    import os, signal, sys, threading, time
    from robustdistill import cli
    def wait(argv):
        time.sleep(60)
        return 0
    cli.COMMANDS["wait"] = wait
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        cli.main(["wait"])
    except KeyboardInterrupt:
        print("caught", flush=True)
    print(signal.getsignal(signal.SIGINT) is signal.default_int_handler,
          signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)
    try:  # the program's own Ctrl-C, later
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)
    except KeyboardInterrupt:
        print("its own Ctrl-C", flush=True)
""")


def test_a_program_that_calls_main_and_catches_its_ctrl_c_keeps_its_own_ctrl_c(tmp_path):
    """A program or notebook that calls ``robustdistill.cli.main`` and catches the
    ``KeyboardInterrupt`` of a Ctrl-C gets its own handlers back: its next Ctrl-C is a
    ``KeyboardInterrupt`` again. They were left at SIG_DFL: that Ctrl-C killed the program (a
    Python or IPython session, a program that retries or goes on to other work)."""
    script = tmp_path / "host.py"
    script.write_text(_HOST)
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=_default_sigint)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n") == ["caught", "True True", "its own Ctrl-C", ""]
    assert _last_line(done.stderr) == "robustdistill wait: interrupted"


_SLOW_EXIT = textwrap.dedent("""
    import atexit, pathlib, sys, time
    from robustdistill.interrupts import handled
    atexit.register(time.sleep, 30)  # Python's shut-down is slow (workers, TensorBoard)
    with handled("prog"):
        pathlib.Path(sys.argv[1]).touch()
        time.sleep(60)
""")


def test_a_second_ctrl_c_while_python_shuts_down_stops_the_process_at_once(tmp_path):
    """After the line, Python shuts down (30 s here: an ``atexit`` call that sleeps); a second
    Ctrl-C then ends the process by SIGINT at once, with no traceback (the excepthook sets the
    default action once nothing caught the interrupt; the handlers themselves were given back
    to the caller)."""
    script, working = tmp_path / "slow_exit.py", tmp_path / "working"
    script.write_text(_SLOW_EXIT)
    started = time.monotonic()
    code, err = _signal_when([sys.executable, str(script), str(working)], working.exists,
                             signal.SIGINT, signal.SIGINT, gap_s=1.5)
    assert code == -signal.SIGINT, err
    assert time.monotonic() - started < 20
    assert _last_line(err) == "prog: interrupted" and "Traceback" not in err, err


def test_a_launchers_repeat_after_the_handlers_are_given_back_prints_no_traceback():
    """A launcher's repeat of the same Ctrl-C that comes after :func:`handled` gave the
    caller's handlers back raises a new ``KeyboardInterrupt`` on the way out: within
    ``REPEAT_GRACE_S`` of the first signal the excepthook prints nothing for it either; a
    ``KeyboardInterrupt`` later, or any other error, goes to the previous hook."""
    from robustdistill import interrupts

    seen = []
    hook = interrupts._quiet_excepthook(lambda kind, value, tb: seen.append(kind))
    saved = interrupts._received, interrupts._installed
    try:
        interrupts._received, interrupts._installed = (signal.SIGINT, time.monotonic()), ()
        hook(KeyboardInterrupt, KeyboardInterrupt(), None)
        hook(ValueError, ValueError(), None)
        interrupts._received = (signal.SIGINT, time.monotonic() - 2 * interrupts.REPEAT_GRACE_S)
        hook(KeyboardInterrupt, KeyboardInterrupt(), None)
    finally:
        interrupts._received, interrupts._installed = saved
    assert seen == [ValueError, KeyboardInterrupt]
