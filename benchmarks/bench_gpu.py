"""GPU distillation throughput (bf16) with and without the teacher cache, one run.

The recipe shape: batch 24 x 15.6 s crops (``configs/robust_wavlm_base_plus.yaml`` or
``configs/distilhubert.yaml``), WavLM Base+-shaped teacher (random weights of the real shape),
``bf16`` autocast through ``accelerate``. Two runs, interleaved steps: teacher on every step,
and targets from a prebuilt cache (context ``utterance``, fp16). Prints per run:

* audio-hours per GPU-hour (= audio seconds per second of one GPU), twice: the timed steps'
  total audio over their total time, and one step's audio (batch x crop) over the median step
  time;
* peak GPU memory of the run alone (``torch.cuda.max_memory_allocated`` over one step, less
  what was allocated before the run was built: the other run's tensors);
* FLOP per step (``torch.utils.flop_counter.FlopCounterMode`` over one step: matmuls and
  convolutions, forward and backward; plus the LSTMs' matmuls counted by hand, which
  FlopCounterMode counts as 0: :func:`lstm_flops`) and the share of the GPU's peak dense bf16
  FLOP/s reached (``--peak-tflops``; default from the device name: H100/H200 SXM 989, A100 312).

The generated corpus is sized from the options (:func:`_common.items_for_steps`) so that every
step of a run (the FLOP step, the peak-memory step, the timed steps) is a full batch of its
first epoch: no DataLoader start and no short last batch inside the measurement (checked).

The target of issue 8 is 5,000 audio-hours per GPU-hour on an H100 (DPHuBERT's published
budget is roughly 550 per A100-hour).

Usage (on a GPU machine)::

    python -m benchmarks.bench_gpu [--recipe robust_wavlm_base_plus --batch-size 24 --crop-s 15.6]

``--set KEY=VALUE`` overrides a config key in both runs (e.g. ``student.feature_grad_mult=0``).
``benchmarks/gpu_suite.sh`` runs every configuration of ``docs/performance.md`` section 5 in one
call. ``--smoke`` runs the same code on CPU with a tiny teacher (to check the script, no figure).
Generated speech-like audio is used (no data folder needed), noise and rooms simulated unless
``runs/data`` exists.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.nn.utils.rnn import PackedSequence

from benchmarks._common import (
    REPO,
    SPLIT,
    check_full_steps,
    full_step_seconds,
    interleaved,
    items_for_steps,
    median,
    quiet,
    table,
)

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


def lstm_flops(lstm: torch.nn.LSTM, steps: int) -> int:
    """Forward matmul FLOP of ``lstm`` over ``steps`` time steps summed over the batch (the
    real frames of a packed sequence): 2 FLOP per element of its weight matrices per time
    step, i.e. per layer and direction 4 gates x (input + hidden) x hidden x 2 (elementwise
    gate arithmetic and biases not counted, as FlopCounterMode does for matmuls)."""
    weights = sum(p.numel() for name, p in lstm.named_parameters() if name.startswith("weight_"))
    return 2 * weights * steps


@contextmanager
def counting_flops():
    """``FlopCounterMode`` over the block, plus the matmuls of every ``nn.LSTM`` forward in
    which it counted nothing (``aten._cudnn_rnn``, ``aten.mkldnn_rnn_layer``: not in its
    registry), by hand: :func:`lstm_flops`, x 3 when a gradient is taken (backward = 2 x
    forward, FlopCounterMode's convention for matmuls).

    Yields a dict filled on exit: ``total`` (FLOP, by-hand part included) and ``lstm`` (the
    by-hand part).
    """
    from torch.nn.modules.module import (
        register_module_forward_hook,
        register_module_forward_pre_hook,
    )
    from torch.utils.flop_counter import FlopCounterMode

    counter, result, before = FlopCounterMode(display=False), {"total": 0, "lstm": 0}, {}

    def pre(module, args):
        if isinstance(module, torch.nn.LSTM):
            before[id(module)] = counter.get_total_flops()

    def post(module, args, output):
        if not isinstance(module, torch.nn.LSTM) or counter.get_total_flops() > before[id(module)]:
            return
        x = args[0].data if isinstance(args[0], PackedSequence) else args[0]
        grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in module.parameters()))
        result["lstm"] += lstm_flops(module, x.numel() // x.shape[-1]) * (3 if grad else 1)

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    try:
        with counter:
            yield result
    finally:
        for handle in handles:
            handle.remove()
    result["total"] = counter.get_total_flops() + result["lstm"]


def check_lstm_count(device: torch.device) -> None:
    """Self-check of :func:`counting_flops` on ``device``: a 2-layer BiLSTM (input 40, hidden
    16) and a Linear(32, 3) over 2 x 5 frames, forward and backward.

    By hand, per frame: layer 1 2 x 4 x (40 + 16) x 16 x 2 = 14,336, layer 2
    2 x 4 x (32 + 16) x 16 x 2 = 12,288, the Linear 2 x 32 x 3 = 192; x 10 frames x 3
    (forward + backward): LSTM 798,720, total 804,480.

    Raises:
        RuntimeError: other counts (an LSTM missed, or counted twice).
    """
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(40, 16, num_layers=2, bidirectional=True, batch_first=True).to(device)
    proj = torch.nn.Linear(32, 3).to(device)
    x = torch.randn(2, 5, 40, device=device, requires_grad=True)
    with counting_flops() as flops:
        proj(lstm(x)[0]).sum().backward()
    if (flops["total"], flops["lstm"]) != (804_480, 798_720):
        raise RuntimeError(f"FLOP count self-check on {device}: total {flops['total']}, LSTM "
                           f"{flops['lstm']}; expected 804480 and 798720")


def _step_flops(run, batches) -> tuple[float, float]:
    """FLOP of one training step (:func:`counting_flops`): (total, LSTM by hand)."""
    with counting_flops() as flops:
        run.train_step(batches)
    return float(flops["total"]), float(flops["lstm"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="robust_wavlm_base_plus",
                        choices=["robust_wavlm_base_plus", "distilhubert"])
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--crop-s", type=float, default=15.6)
    parser.add_argument("--items", type=int, default=None,
                        help="utterances generated (default and minimum: enough for batch x "
                             "(repeats + 2) training items after the validation hold-out)")
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
        args.batch_size, args.crop_s, args.repeats, args.workers = 2, 1.0, 1, 0
    elif not torch.cuda.is_available():
        raise SystemExit("no GPU visible: run on a GPU machine, or --smoke to check the script")
    from robustdistill.teacher_cache import build_cache
    from robustdistill.teachers import make_random_teacher
    from robustdistill.trainer import _Run

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        extra = {"student.preset": args.preset, "training.compile_student": args.compile}
        if args.preset != "default" or args.smoke:
            extra["student.init_layers"] = "null"
        # per run: the FLOP step, the peak-memory step and the timed steps, all in epoch 0
        steps = 2 + args.repeats
        probe = _config(args, tmp / "teacher", tmp, "plain",
                        **{**extra, "data.synthetic_items": 1})
        needed = items_for_steps(probe, steps)
        if args.items is not None and args.items < needed:
            parser.error(f"--items {args.items}: {steps} full steps of batch "
                         f"{probe.data.batch_size} need at least {needed} utterances")
        args.items = args.items or needed
        check_lstm_count(torch.device("cpu" if args.smoke else "cuda"))
        # smoke: the 4-layer "small" teacher, whose 7-layer CNN the presets' shapes fit
        teacher_dir = make_random_teacher("wavlm", "small" if args.smoke else "base",
                                          tmp / "teacher")
        cache = {"teacher_cache.dir": str(tmp / "cache"), "teacher_cache.missing": "error"}
        cached_cfg = _config(args, teacher_dir, tmp, "cached", **extra, **cache)
        start = time.perf_counter()
        build_cache(cached_cfg, splits=["train"])
        build_s = time.perf_counter() - start
        cfgs = {"teacher every step": _config(args, teacher_dir, tmp, "plain", **extra),
                "cached targets": cached_cfg}
        cuda = not args.smoke
        gpu = torch.cuda.get_device_name() if cuda else "CPU (smoke)"
        runs, iterators, audio = {}, {}, {name: [] for name in cfgs}
        peaks, flops, lstm = {}, {}, {}

        def step(name):
            audio[name].append(runs[name].train_step(iterators[name])["audio_seconds"])
            if cuda:
                torch.cuda.synchronize()

        for name, cfg in cfgs.items():  # FLOP and peak memory of each run before the next
            held = torch.cuda.memory_allocated() if cuda else 0  # not this run's tensors
            runs[name] = _Run(cfg)
            iterators[name] = runs[name]._batches()
            flops[name], lstm[name] = _step_flops(runs[name], iterators[name])  # also warm-up
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            step(name)
            peaks[name] = (torch.cuda.max_memory_allocated() - held) / 2**30 if cuda else math.nan
        times = interleaved({name: (lambda n=name: step(n)) for name in runs}, args.repeats,
                            warmup=0)
        for name, run in runs.items():
            check_full_steps(name, run, audio[name])
        peak = _peak_tflops(gpu, args.peak_tflops)
        rows = []
        for name in runs:
            seconds = audio[name][-args.repeats:]
            total = sum(seconds) / sum(times[name])  # audio-s per s = audio-h per GPU-h
            per_median = full_step_seconds(runs[name].cfg) / median(times[name])
            achieved = flops[name] / median(times[name]) / 1e12
            share = f"{100 * achieved / peak:.1f} %" if peak else "n/a (give --peak-tflops)"
            rows.append((name, f"{median(times[name]):.3f}", f"{total:,.1f}",
                         f"{per_median:,.1f}", f"{peaks[name]:.1f}",
                         f"{flops[name] / 1e12:.1f}", f"{achieved:.0f}", share))
        precision = runs["cached targets"].cfg.training.mixed_precision.replace("no", "fp32")
        by_hand = ", ".join(f"{name} {value / 1e12:.2f}" for name, value in lstm.items())
        table(f"GPU distillation throughput, {args.recipe}, {precision}, batch {args.batch_size} x "
              f"{args.crop_s:g} s ({gpu})", (
                  "run", "median s/step", "audio-hours per GPU-hour (total audio / total time)",
                  "audio-hours per GPU-hour (batch x crop / median step)",
                  "peak GPU memory GiB (this run alone)", "TFLOP per step", "TFLOP/s",
                  "share of peak bf16"), rows,
              [f"`{args.preset}` student{' (torch.compile)' if args.compile else ''}; "
               f"{'the small 4 x 256 WavLM' if args.smoke else 'WavLM Base+-shaped'} teacher "
               f"(random weights); {args.items} generated utterances, so that every measured "
               f"step is a full batch of the first epoch (checked); "
               f"{args.repeats} interleaved steps per run; cache built in {build_s:.0f} s "
               f"(one-off). FLOP counted by FlopCounterMode (matmul/conv, forward + backward; "
               f"peak {peak} TFLOP/s assumed) plus the matmuls of LSTMs it counts as 0 "
               f"(cuDNN's), by hand (TFLOP per step: {by_hand}). Peak memory: one step's "
               f"max_memory_allocated less what was allocated before the run was built. "
               f"Overrides: {', '.join(args.set) or 'none'}.",
               "Target (issue 8): 5,000 audio-hours per GPU-hour on an H100."],
              out=args.out)


if __name__ == "__main__":
    main()
