"""GPU distillation throughput (bf16) with and without the teacher cache, one run.

The recipe shape: batch 24 x 15.6 s crops (``configs/robust_wavlm_base_plus.yaml`` or
``configs/distilhubert.yaml``), WavLM Base+-shaped teacher (random weights of the real shape),
``bf16`` autocast through ``accelerate``. Two runs, interleaved steps: teacher on every step,
and targets from a prebuilt cache (context ``utterance``, fp16). Prints per run:

* audio-hours per GPU-hour (= audio seconds per second of one GPU);
* peak GPU memory (``torch.cuda.max_memory_allocated``);
* FLOP per step (``torch.utils.flop_counter.FlopCounterMode`` over one step: matmuls and
  convolutions, forward and backward) and the share of the GPU's peak dense bf16 FLOP/s
  reached (``--peak-tflops``; default from the device name: H100/H200 SXM 989, A100 312).

The target of issue 8 is 5,000 audio-hours per GPU-hour on an H100 (DPHuBERT's published
budget is roughly 550 per A100-hour).

Usage (on a GPU machine)::

    python benchmarks/bench_gpu.py [--recipe robust_wavlm_base_plus --batch-size 24 --crop-s 15.6]

``--set KEY=VALUE`` overrides a config key in both runs (e.g. ``student.feature_grad_mult=0``).
``benchmarks/gpu_suite.sh`` runs every configuration of ``docs/performance.md`` section 5 in one
call. ``--smoke`` runs the same code on CPU with a tiny teacher (to check the script, no figure).
Generated speech-like audio is used (no data folder needed), noise and rooms simulated unless
``runs/data`` exists.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import REPO, SPLIT, interleaved, median, quiet, table

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def _peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _config(args, teacher_dir: Path, tmp: Path, out: str, **extra):
    from robustdistill.config import load_config

    overrides = {
        "teacher": str(teacher_dir), "output_dir": str(tmp / out),
        "data.train_dir": "null", "data.validation_dir": "null",
        "data.synthetic_items": args.items, "data.synthetic_dir": str(tmp / "speech"),
        "data.synthetic_seconds": f"[{args.crop_s}, {args.crop_s * 1.5}]",
        "data.batch_size": args.batch_size, "data.max_length_s": args.crop_s,
        "data.min_length_s": min(2.0, args.crop_s), "data.num_workers": args.workers,
        "training.mixed_precision": "no" if args.smoke else "bf16",
        "training.cpu": args.smoke, "training.report_to": "[]", "training.max_steps": 10_000,
        **extra, **dict(item.split("=", 1) for item in args.set),
    }
    if args.smoke:
        overrides["objectives.layerwise.teacher_layers"] = "null"
    if (SPLIT / "noise_train").is_dir():
        overrides.update({"augmentation.noise_dir": str(SPLIT / "noise_train"),
                          "augmentation.rir_dir": str(SPLIT / "rir_train")})
    else:
        overrides.update({"augmentation.noise_dir": "null", "augmentation.rir_dir": "null",
                          "augmentation.num_simulated_rooms": 8})
    argv = [x for k, v in overrides.items() for x in (f"--{k}", str(v))]
    return load_config(REPO / "configs" / f"{args.recipe}.yaml", argv)


def _step_flops(run, batches) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run.train_step(batches)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="robust_wavlm_base_plus",
                        choices=["robust_wavlm_base_plus", "distilhubert"])
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--crop-s", type=float, default=15.6)
    parser.add_argument("--items", type=int, default=96, help="utterances generated")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--compile", action="store_true",
                        help="training.compile_student (torch.compile of the student)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense bf16 TFLOP/s of the GPU (default: from its name)")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU check of the script")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both runs (repeatable), e.g. "
                             "student.feature_grad_mult=0")
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    if bad := [item for item in args.set if "=" not in item]:
        parser.error(f"--set takes KEY=VALUE, got {bad}")
    quiet()
    if args.smoke:
        args.batch_size, args.crop_s, args.items, args.repeats, args.workers = 2, 1.0, 4, 1, 0
    elif not torch.cuda.is_available():
        raise SystemExit("no GPU visible: run on a GPU machine, or --smoke to check the script")
    from robustdistill.teacher_cache import build_cache
    from robustdistill.teachers import make_random_teacher
    from robustdistill.trainer import _Run

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # smoke: the 4-layer "small" teacher, whose 7-layer CNN the presets' shapes fit
        teacher_dir = make_random_teacher("wavlm", "small" if args.smoke else "base",
                                          tmp / "teacher")
        extra = {"student.preset": args.preset, "training.compile_student": args.compile}
        if args.preset != "default" or args.smoke:
            extra["student.init_layers"] = "null"
        cache = {"teacher_cache.dir": str(tmp / "cache"), "teacher_cache.missing": "error"}
        cached_cfg = _config(args, teacher_dir, tmp, "cached", **extra, **cache)
        start = time.perf_counter()
        build_cache(cached_cfg, splits=["train"])
        build_s = time.perf_counter() - start
        runs = {"teacher every step": _Run(_config(args, teacher_dir, tmp, "plain", **extra)),
                "cached targets": _Run(cached_cfg)}
        device = runs["cached targets"].accelerator.device
        gpu = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke)"
        iterators = {name: run._batches() for name, run in runs.items()}
        audio = {name: [] for name in runs}
        peaks, flops = {}, {}

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        for name, run in runs.items():
            flops[name] = _step_flops(run, iterators[name])  # also the warm-up step

        def step(name):
            audio[name].append(runs[name].train_step(iterators[name])["audio_seconds"])
            sync()

        for name in runs:  # peak memory of each run on its own, then interleaved timing
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            step(name)
            peaks[name] = (torch.cuda.max_memory_allocated() / 2**30
                           if device.type == "cuda" else float("nan"))
        times = interleaved({name: (lambda n=name: step(n)) for name in runs}, args.repeats,
                            warmup=0)
        peak = _peak_tflops(gpu, args.peak_tflops)
        rows = []
        for name in runs:
            seconds = audio[name][-args.repeats:]
            speed = sum(seconds) / sum(times[name])  # audio-s per s = audio-h per GPU-h
            achieved = flops[name] / median(times[name]) / 1e12
            share = f"{100 * achieved / peak:.1f} %" if peak else "n/a (give --peak-tflops)"
            rows.append((name, f"{median(times[name]):.3f}", f"{speed:,.1f}",
                         f"{peaks[name]:.1f}", f"{flops[name] / 1e12:.1f}",
                         f"{achieved:.0f}", share))
        precision = runs["cached targets"].cfg.training.mixed_precision.replace("no", "fp32")
        table(f"GPU distillation throughput, {args.recipe}, {precision}, batch {args.batch_size} x "
              f"{args.crop_s:g} s ({gpu})", (
                  "run", "median s/step", "audio-hours per GPU-hour", "peak GPU memory GiB",
                  "TFLOP per step", "TFLOP/s", "share of peak bf16"), rows,
              [f"`{args.preset}` student{' (torch.compile)' if args.compile else ''}; "
               f"{'the small 4 x 256 WavLM' if args.smoke else 'WavLM Base+-shaped'} teacher "
               f"(random weights); "
               f"{args.repeats} interleaved steps per run; cache built in {build_s:.0f} s "
               f"(one-off). FLOP counted by FlopCounterMode (matmul/conv, forward + backward; "
               f"peak {peak} TFLOP/s assumed). Overrides: {', '.join(args.set) or 'none'}.",
               "Target (issue 8): 5,000 audio-hours per GPU-hour on an H100."],
              out=args.out)


if __name__ == "__main__":
    main()
