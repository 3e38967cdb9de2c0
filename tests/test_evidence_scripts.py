"""The evidence scripts: ``evidence_probe.py`` reads the checkpoints of runs trained from a
teacher cache; ``evidence_distill.sh`` fails when one of its runs fails; ``proxy_teacher.sh``
builds its cache where ``PROXY_CACHE`` says and reuses one it completed."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from test_teacher_cache import _config as cache_config

from robustdistill.config import ConfigError
from robustdistill.teacher_cache import build_cache
from robustdistill.trainer import _Run

ROOT = Path(__file__).resolve().parents[1]


def _probe_script():
    """``scripts/evidence_probe.py`` as a module."""
    path = ROOT / "scripts" / "evidence_probe.py"
    spec = importlib.util.spec_from_file_location("evidence_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(tmp_path, teacher_dir, out, **extra):
    """The teacher-cache tests' tiny distillation config, on 2.5 s synthetic utterances."""
    return cache_config(tmp_path, teacher_dir, out, 2.5, **extra)


def test_the_probe_resumes_a_run_trained_on_cached_chunks(tmp_path, tiny_wavlm_dir):
    """A run trained with ``crop_starts: chunks`` (as scripts/evidence_distill.sh trains) has
    the chunk length as its crop grid; the probe rebuilds it with the cache off (grid 1), which
    a plain resume refuses. The probe takes the checkpoint's grid and gets its exact weights."""
    cfg = _config(tmp_path, tiny_wavlm_dir, "run", **{
        "teacher_cache.dir": str(tmp_path / "cache"), "teacher_cache.context": "crop",
        "teacher_cache.crop_starts": "chunks", "teacher_cache.dtype": "float32"})
    build_cache(cfg)
    run = _Run(cfg)
    run.train_step(run._batches())
    checkpoint = run.save_checkpoint()
    trained = {k: v.clone() for k, v in run.model.student.state_dict().items()}

    def rebuilt():  # what the probe builds: the run's config with the cache off
        return _Run(_config(tmp_path, tiny_wavlm_dir, "probe", **{"teacher_cache.dir": "null"}))

    with pytest.raises(ConfigError, match="crop grid"):
        rebuilt().resume(str(checkpoint))
    probe = rebuilt()
    _probe_script().resume_weights(probe, checkpoint)
    assert probe.progress.step == 1
    for name, value in probe.model.student.state_dict().items():
        assert torch.equal(value, trained[name]), name


def test_evidence_distill_fails_when_one_of_its_runs_fails(tmp_path):
    """The script trains its variants in the background; one that fails (a stub ``python``
    refusing the plain run, as distill refuses an output_dir holding an earlier run) fails the
    script with the end of that run's log. A bare ``wait`` had returned 0, in silence."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "accelerate").write_text("#!/bin/sh\nexit 0\n")  # the cache build
    (stubs / "python").write_text(
        '#!/bin/sh\ncase "$*" in *distilhubert*) echo "distill: error: refused"; exit 1;; esac\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(tmp_path), "EVIDENCE_OUT": str(tmp_path / "ev"), "STEPS": "1"}

    def run(*variants):
        return subprocess.run(["bash", str(ROOT / "scripts" / "evidence_distill.sh"), *variants],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    failed = run()
    assert failed.returncode == 1, failed.stderr
    assert "plain failed" in failed.stderr and "distill: error: refused" in failed.stderr
    assert "robust failed" not in failed.stderr
    assert run("robust").returncode == 0


def _proxy_stubs(tmp_path, cache_status=0):
    """``accelerate`` (the cache build, exit ``cache_status``) and ``python`` (the
    distillation) stubs that append their arguments to ``tmp_path / "calls"``."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    log = tmp_path / "calls"
    (stubs / "accelerate").write_text(f'#!/bin/sh\necho "accelerate $*" >> "{log}"\n'
                                      f"exit {cache_status}\n")
    (stubs / "python").write_text(f'#!/bin/sh\necho "python $*" >> "{log}"\nexit 0\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    return {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
            "VIRTUAL_ENV": str(tmp_path), "PROXY_STEPS": "1"}


def _proxy(env, root=ROOT, **extra):
    return subprocess.run(["bash", str(root / "scripts" / "proxy_teacher.sh")], cwd=root,
                          env={**env, **extra}, capture_output=True, text=True, timeout=60)


def _config_sha256(root=ROOT) -> str:
    return hashlib.sha256((root / "configs" / "distilhubert.yaml").read_bytes()).hexdigest()


def test_proxy_teacher_takes_a_cache_path_and_reuses_a_complete_cache(tmp_path):
    """The script built its Whisper cache at a fixed path on every call (about 8 min): the
    cache goes to PROXY_CACHE, and a cache it has filled for the same settings is reused."""
    env = _proxy_stubs(tmp_path)
    cache, log = tmp_path / "cache", tmp_path / "calls"
    first = _proxy(env, PROXY=str(tmp_path / "a"), PROXY_CACHE=str(cache))
    assert first.returncode == 0, first.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["accelerate", "python"]
    assert all(f"--teacher_cache.dir {cache} " in c for c in calls)
    assert "cache-teacher" in calls[0] and "--teacher_cache.missing error" in calls[1]
    marker = (cache / "proxy_teacher.complete").read_text()
    assert marker.startswith(f"config configs/distilhubert.yaml sha256 {_config_sha256()} "
                             "--teacher ../shared/models/whisper-tiny.en ")
    # another proxy run on the same cache: no second build
    second = _proxy(env, PROXY=str(tmp_path / "b"), PROXY_CACHE=str(cache))
    assert second.returncode == 0, second.stderr
    calls = log.read_text().splitlines()[2:]
    assert [c.split()[0] for c in calls] == ["python"]
    assert f"--output_dir {tmp_path / 'b'}" in calls[0]
    assert "reusing the complete teacher cache" in (tmp_path / "b-cache.log").read_text()
    # a marker of other settings (another cache path inside it) is not taken as complete
    (cache / "proxy_teacher.complete").write_text("config other\n")
    assert _proxy(env, PROXY=str(tmp_path / "c"), PROXY_CACHE=str(cache)).returncode == 0
    assert [c.split()[0] for c in log.read_text().splitlines()[3:]] == ["accelerate", "python"]


def test_proxy_teacher_rebuilds_the_cache_of_an_edited_config(tmp_path):
    """The marker recorded the config's path, not its contents: after an edit of
    configs/distilhubert.yaml the old cache was taken as complete and the distillation
    (``--teacher_cache.missing error``) stopped on the first entry it lacked. The marker now
    records the SHA-256 of the config's contents: an edit runs cache-teacher again."""
    root = tmp_path / "repo"
    for part in ("scripts/proxy_teacher.sh", "configs/distilhubert.yaml"):
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, root / part)
    env = _proxy_stubs(tmp_path)
    cache, log = tmp_path / "cache", tmp_path / "calls"

    def programs(run: str) -> list[str]:
        assert _proxy(env, root, PROXY=str(tmp_path / run), PROXY_CACHE=str(cache)).returncode == 0
        calls = log.read_text().splitlines()
        log.unlink()
        return [c.split()[0] for c in calls]

    assert programs("a") == ["accelerate", "python"]
    assert programs("b") == ["python"]  # the same config: reused
    config = root / "configs" / "distilhubert.yaml"
    config.write_text(config.read_text().replace("seed: 0\n", "seed: 1\n"))
    assert _config_sha256(root) != _config_sha256()
    assert programs("c") == ["accelerate", "python"]  # edited: built again
    assert f" sha256 {_config_sha256(root)} " in (cache / "proxy_teacher.complete").read_text()
    assert programs("d") == ["python"]


def test_proxy_teacher_marks_no_cache_complete_when_its_build_fails(tmp_path):
    env = _proxy_stubs(tmp_path, cache_status=1)
    failed = _proxy(env, PROXY=str(tmp_path / "a"), PROXY_CACHE=str(tmp_path / "cache"))
    assert failed.returncode == 1
    assert not (tmp_path / "cache" / "proxy_teacher.complete").exists()
    # without PROXY_CACHE the cache path is the one it always was
    assert _proxy(env, PROXY=str(tmp_path / "b")).returncode == 1
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["accelerate", "accelerate"]  # no distillation
    assert "--teacher_cache.dir runs/cache/whisper-tiny " in calls[1]


def test_literature_table_script_activates_the_project_environment(tmp_path):
    """``bash scripts/literature_table.sh`` run as docs/objectives.md says, after
    ``scripts/setup.sh`` but with no environment active, found no ``robustdistill`` (exit 127):
    like the other scripts, it activates ``.venv`` when none is active."""
    repo, stubs, log = tmp_path / "repo", tmp_path / "venv_bin", tmp_path / "calls"
    (repo / ".venv" / "bin").mkdir(parents=True)
    stubs.mkdir()
    (stubs / "robustdistill").write_text(f'#!/bin/sh\necho "robustdistill $*" >> "{log}"\n')
    (stubs / "robustdistill").chmod(0o755)
    (repo / ".venv" / "bin" / "activate").write_text(
        f'export VIRTUAL_ENV="{repo / ".venv"}"\nexport PATH="{stubs}:$PATH"\n')
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if not (Path(p) / "robustdistill").exists())
    done = subprocess.run(["bash", str(ROOT / "scripts" / "literature_table.sh"), "3", "out",
                           "a_layerwise"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 1
    assert calls[0].startswith("robustdistill distill --teacher ../shared/models/whisper-tiny.en "
                               "--output_dir out/a_layerwise --seed 0 ")
    assert "--training.max_steps 3 " in calls[0]
