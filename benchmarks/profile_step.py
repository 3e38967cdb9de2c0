"""Where one distillation step spends its time, one run.

Same run as ``bench_cache.py`` (its ``_config``: real LibriSpeech, training noise and rooms,
batch 2 x 4 s), teacher on every step or, with ``--cached``, targets from a prebuilt cache.
Prints the teacher's forward time alone, then either the 35 most expensive Python calls by
cumulative time (cProfile, the default) or, with ``--ops``, PyTorch's operator table
(``torch.profiler``, self CPU time over ``--steps`` steps) with the share of the step spent in
the convolutions' forward and backward.

Usage::

    python -m benchmarks.profile_step whisper-tiny.en             # RobustDistiller recipe
    python -m benchmarks.profile_step wavlm-base --recipe distilhubert --cached --ops
    python -m benchmarks.profile_step --conv-layers    # the 7 CNN layers alone, 2 x 4 s

``--conv-layers`` times each layer of the wav2vec 2.0 / WavLM CNN (random weights, fp32) on a
2 x 4 s batch: forward, weight gradient, and input gradient (the transposed convolution that
carries the gradient down to the layer below), medians of 5 interleaved calls.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import bench_cache
from benchmarks._common import machine, quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", nargs="?", default="whisper-tiny.en",
                        choices=["wavlm-base", "whisper-tiny.en"])
    parser.add_argument("--recipe", default="robust_wavlm_base_plus",
                        choices=["robust_wavlm_base_plus", "distilhubert"])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--cached", action="store_true", help="targets from a prebuilt cache")
    parser.add_argument("--ops", action="store_true", help="torch.profiler operator table")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps (--ops)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable)")
    parser.add_argument("--conv-layers", action="store_true",
                        help="time each CNN layer's forward and gradients, then stop")
    args = parser.parse_args()
    if args.conv_layers:
        conv_layers()
        return
    args.items, args.batch_size, args.crop_s = 4, 2, 4.0
    quiet()
    torch.set_num_threads(2)
    from robustdistill.teacher_cache import build_cache
    from robustdistill.trainer import _Run

    tmp = Path(tempfile.mkdtemp())
    teacher_dir = bench_cache._teacher_dir(args.teacher, tmp)
    extra = bench_cache._cache_options(args, tmp) if args.cached else {}
    cfg = bench_cache._config(args, teacher_dir, tmp, "p", args.recipe, args.preset, **extra)
    if args.cached:
        build_cache(cfg, splits=["train"])
    run = _Run(cfg)
    batches = run._batches()
    run.train_step(batches)
    batch = next(batches)
    start = time.perf_counter()
    with torch.no_grad():
        run.teacher(batch["waveforms"], batch["lengths"])
    print(f"{machine(2)}\nteacher forward alone: {time.perf_counter() - start:.2f} s "
          f"({args.recipe}, `{args.preset}`, {'cached' if args.cached else 'teacher every step'}"
          f", overrides {args.set or 'none'})")
    if not args.ops:
        profile = cProfile.Profile()
        profile.runcall(run.train_step, batches)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(35)
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            run.train_step(batches)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = {name: sum(e.self_cpu_time_total for e in events if e.key == name)
            for name in ("aten::mkldnn_convolution", "aten::convolution_backward")}
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    print(f"per step: {total / args.steps / 1e6:.2f} s of operator time; convolutions forward "
          f"{conv['aten::mkldnn_convolution'] / total:.0%}, backward "
          f"{conv['aten::convolution_backward'] / total:.0%}")


def conv_layers(batch: int = 2, samples: int = 64_000, repeats: int = 5) -> None:
    """Per layer of the 7-layer CNN: forward, weight-gradient and input-gradient times."""
    import torch.nn.functional as F

    from benchmarks._common import interleaved, median, table

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    specs = [(1, 512, 10, 5)] + [(512, 512, 3, 2)] * 4 + [(512, 512, 2, 2)] * 2
    x = torch.randn(batch, 1, samples, generator=gen)
    rows = []
    for i, (c_in, c_out, k, stride) in enumerate(specs):
        w = (torch.randn(c_out, c_in, k, generator=gen) / (c_in * k) ** 0.5).requires_grad_()
        x = x.detach().requires_grad_(i > 0)
        y = F.conv1d(x, w, stride=stride)
        g = torch.randn_like(y)
        fns = {"forward": lambda x=x, w=w, s=stride: F.conv1d(x, w, stride=s).detach(),
               "weight grad": lambda y=y, w=w, g=g: torch.autograd.grad(y, w, g,
                                                                      retain_graph=True)}
        if i > 0:
            fns["input grad"] = lambda y=y, x=x, g=g: torch.autograd.grad(y, x, g,
                                                                          retain_graph=True)
        times = {name: median(t) * 1e3 for name, t in interleaved(fns, repeats).items()}
        rows.append((i, f"{c_in} -> {c_out}, k {k}, stride {stride}", tuple(x.shape),
                     f"{times['forward']:.1f}", f"{times['weight grad']:.1f}",
                     f"{times['input grad']:.1f}" if i > 0 else "not needed",
                     f"{(times['weight grad'] + times.get('input grad', 0)) / times['forward']:.2f}"))
        x = y.detach()
    table(f"CNN layers, batch {batch} x {samples / 16_000:g} s, fp32", (
        "layer", "shape", "input", "forward ms", "weight grad ms", "input grad ms",
        "backward / forward"), rows,
        [f"medians of {repeats} interleaved calls after one warm-up; random weights"], threads=2)


if __name__ == "__main__":
    main()
