"""Where one distillation step spends its time: cProfile of one step (after a warm-up step).

Same run as ``bench_cache.py`` (its ``_config``: RobustDistiller recipe, real LibriSpeech,
training noise and rooms), teacher on every step; prints the teacher's forward time alone and
the 35 most expensive calls by cumulative time.

Usage: ``python benchmarks/profile_step.py whisper-tiny.en`` (or ``wavlm-base``)
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import bench_cache
import torch
from _common import quiet


class _Options:
    items, batch_size, crop_s = 4, 2, 4.0
    teacher = sys.argv[1] if len(sys.argv) > 1 else "whisper-tiny.en"


def main() -> None:
    quiet()
    torch.set_num_threads(2)
    from robustdistill.trainer import _Run

    tmp = Path(tempfile.mkdtemp())
    teacher_dir = bench_cache._teacher_dir(_Options.teacher, tmp)
    run = _Run(bench_cache._config(_Options, teacher_dir, tmp, "p", "robust_wavlm_base_plus"))
    batches = run._batches()
    run.train_step(batches)
    batch = next(batches)
    start = time.perf_counter()
    with torch.no_grad():
        run.teacher(batch["waveforms"], batch["lengths"])
    print(f"teacher forward alone: {time.perf_counter() - start:.2f} s")
    profile = cProfile.Profile()
    profile.runcall(run.train_step, batches)
    pstats.Stats(profile).sort_stats("cumulative").print_stats(35)


if __name__ == "__main__":
    main()
