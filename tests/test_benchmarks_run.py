"""The benchmarks are the package ``benchmarks``, run as ``python -m benchmarks.NAME``: they import
the same way with and without ``python -P`` (which leaves the script's folder and the working
directory off ``sys.path``; ``import _common`` failed under it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")


def test_every_benchmark_imports_under_python_P():
    code = ("import importlib\n"
            f"for name in {MODULES!r}:\n"
            "    importlib.import_module('benchmarks.' + name)\n"
            "print('ok', len(" f"{MODULES!r}" "))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-P", "-c", code], cwd="/", env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", str(len(MODULES))]
    assert len(MODULES) >= 10  # _common and the nine benchmarks


@pytest.mark.parametrize("safe_path", [False, True], ids=["python", "python -P"])
def test_a_benchmark_runs_as_a_module_both_ways(safe_path):
    """``bench_se_rtf`` on 0.1 s of audio, one repeat: its table has a row per model."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if safe_path:
        env["PYTHONPATH"] = "."
    cmd = [sys.executable, *(["-P"] if safe_path else []), "-m", "benchmarks.bench_se_rtf",
           "--seconds", "0.1", "--repeats", "1"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    names = [line.split("|")[1].strip() for line in out.stdout.splitlines()
             if line.startswith("| ")]
    assert names[-5:] == ["nsnet2", "dtln", "student 16x", "student 32x", "student 63x"], out.stdout
