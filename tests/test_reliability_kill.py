"""kill -9 a distillation at random moments (one of them while a checkpoint is being
written), restart it with ``resume_from auto`` each time, and end with exactly the parameters
of an uninterrupted run (CPU, seeded; issue 14)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import small_distill_args

from robustdistill.checkpoints import list_checkpoints
from robustdistill.config import load_config
from robustdistill.trainer import train

REPO = Path(__file__).resolve().parents[1]


def _command(tmp_path: Path, teacher: Path, out: str) -> list[str]:
    argv = small_distill_args(tmp_path, teacher, out, **{"training.resume_from": "auto"})
    return [sys.executable, "-m", "robustdistill.cli", "distill", *argv]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _kill_after_steps(proc, metrics: Path, steps: int, extra_s: float) -> bool:
    """kill -9 once ``metrics`` has ``steps`` more lines, plus ``extra_s``; False if it ended."""
    target = _lines(metrics) + steps
    while proc.poll() is None and _lines(metrics) < target:
        time.sleep(0.01)
    time.sleep(extra_s)
    if proc.poll() is not None:
        return False
    _kill(proc)
    return True


def _kill_during_checkpoint_write(proc, checkpoints: Path) -> tuple[bool, bool]:
    """kill -9 as soon as a ``.tmp-checkpoint_N`` folder appears.

    Returns:
        ``(killed, interrupted)``: whether the process was killed (False: it finished
        first), and whether the folder was still there after the kill (a write interrupted).
    """
    def unfinished() -> bool:
        return any(p.name.startswith(".tmp-checkpoint_") for p in checkpoints.iterdir())

    while proc.poll() is None:
        if checkpoints.is_dir() and unfinished():
            _kill(proc)
            return True, unfinished()
        time.sleep(0.001)
    return False, False


@pytest.mark.slow
def test_kill_9_at_random_moments_and_resume_ends_with_the_uninterrupted_parameters(
        tmp_path, tiny_wavlm_dir):
    env = _env()
    # The uninterrupted reference, in this process with the subprocesses' single thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(None, _command(tmp_path, tiny_wavlm_dir, "full")[4:]))
    finally:
        torch.set_num_threads(threads)
    reference = json.loads((tmp_path / "full" / "final_state.json").read_text())

    part = tmp_path / "part"
    metrics, checkpoints = part / "metrics.jsonl", part / "checkpoints"
    rng = random.Random(20_261_122)
    interrupted_writes, kills, launches = 0, 0, 0
    plan = ["steps", "write", "steps"]
    while plan:
        how = plan.pop(0)
        proc = subprocess.Popen(_command(tmp_path, tiny_wavlm_dir, "part"), env=env,
                                cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        launches += 1
        if how == "write":
            killed, interrupted = _kill_during_checkpoint_write(proc, checkpoints)
            interrupted_writes += interrupted
            if killed and not interrupted and launches < 6:
                plan.insert(0, "write")  # the kill came just after the rename: again
        else:
            killed = _kill_after_steps(proc, metrics, rng.randint(1, 2), rng.uniform(0, 0.3))
        kills += killed
        if not killed:
            proc.wait(timeout=300)
            break
    final = subprocess.run(_command(tmp_path, tiny_wavlm_dir, "part"), env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert kills >= 3 and interrupted_writes >= 1, (kills, interrupted_writes, launches)
    resumed = json.loads((part / "final_state.json").read_text())
    assert resumed["step"] == reference["step"] == 10
    assert resumed["parameter_sha256_per_rank"] == reference["parameter_sha256_per_rank"]
    # Nothing half-written is left, and rotation kept the two newest complete checkpoints.
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".tmp-")]
    assert [p.name for p in list_checkpoints(checkpoints)] == [
        p.name for p in list_checkpoints(tmp_path / "full" / "checkpoints")]
