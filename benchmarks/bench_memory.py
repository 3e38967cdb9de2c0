"""Peak CPU memory of a distillation step per batch size, with and without gradient
checkpointing of the student, one run (each setting in a fresh child process).

Each child builds the run (``configs/distilhubert.yaml`` shape: WavLM Base+-shaped teacher,
student of ``--preset``, generated audio of ``--crop-s`` seconds), records its resident memory,
runs ``--steps`` distillation steps and reports the peak resident set size (``ru_maxrss``) and
the growth over the resident memory before the first step (activations, gradients and AdamW
states: what the batch size and checkpointing change).

``--feature-grad-mults 0.1 0`` adds rows with the student's CNN frozen (``student.feature_grad_mult:
0``, run under no_grad as the reference code does): checkpointing covers only the transformer
layers, a frozen CNN keeps none of its activations.

Usage: ``python -m benchmarks.bench_memory [--batch-sizes 1 2 4 8 --crop-s 4 --threads 2
--feature-grad-mults 0.1 0]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks._common import REPO, quiet, table


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args) -> None:
    from robustdistill.config import load_config
    from robustdistill.teachers import make_random_teacher
    from robustdistill.trainer import _Run

    quiet()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        overrides = {
            "teacher": str(make_random_teacher("wavlm", "base", tmp / "teacher")),
            "output_dir": str(tmp / "run"), "data.train_dir": "null",
            "data.validation_dir": "null", "data.synthetic_items": 2 * args.batch_size + 1,
            "data.synthetic_seconds": f"[{args.crop_s}, {args.crop_s}]",
            "data.synthetic_dir": str(tmp / "speech"), "data.batch_size": args.batch_size,
            "data.max_length_s": args.crop_s, "data.min_length_s": min(1.0, args.crop_s),
            "data.num_workers": 0, "student.preset": args.preset,
            "training.cpu": True, "training.report_to": "[]", "training.mixed_precision": "no",
            "training.gradient_checkpointing": args.checkpointing, "training.max_steps": 100,
            "student.feature_grad_mult": args.feature_grad_mult,
        }
        if args.preset != "default":
            overrides["student.init_layers"] = "null"
        argv = [x for k, v in overrides.items() for x in (f"--{k}", str(v))]
        run = _Run(load_config(REPO / "configs" / "distilhubert.yaml", argv))
        batches = run._batches()
        before = _rss_mib()
        for _ in range(args.steps):
            run.train_step(batches)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"before": before, "peak": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--crop-s", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    parser.add_argument("--feature-grad-mults", type=float, nargs="+", default=[0.1],
                        help="student.feature_grad_mult values (0: frozen CNN)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--feature-grad-mult", type=float, default=0.1, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", default="false", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    for batch_size in args.batch_sizes:
        for mult in args.feature_grad_mults:
            for checkpointing in ("false", "true"):
                cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child",
                       "--batch-size", str(batch_size), "--checkpointing", checkpointing,
                       "--crop-s", str(args.crop_s), "--steps", str(args.steps),
                       "--threads", str(args.threads), "--preset", args.preset,
                       "--feature-grad-mult", str(mult)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                     cwd=REPO).stdout
                result = json.loads(out.strip().splitlines()[-1])
                rows.append((f"{batch_size} x {args.crop_s:g} s",
                             f"{mult:g}" + (" (CNN frozen)" if mult == 0 else ""), checkpointing,
                             f"{result['peak']:.0f}", f"{result['peak'] - result['before']:.0f}"))
    table(f"Peak CPU memory per batch size (`{args.preset}` student)", (
        "batch", "feature_grad_mult", "gradient checkpointing", "peak RSS MiB", "growth during the steps MiB"),
        rows, [f"distilhubert recipe shape (layer-wise MLP heads), WavLM Base+-shaped teacher "
               f"(random weights, fp32), {args.steps} steps per child process; RSS includes "
               "both models, the interpreter and libraries; growth = peak minus RSS before "
               "the first step (activations, gradients, AdamW states)."],
        threads=args.threads, out=args.out)


if __name__ == "__main__":
    main()
