"""Speed of the distillation core, measured as ratios in one run.

Prints a Markdown table:
- teacher vs student forward time on 10 s of audio (WavLM Base+ shape vs the DistilHuBERT-shape
  student created from it; random weights, ``inference_mode``, interleaved, median of
  ``--repeats``);
- distillation steps per second and audio seconds per second (the RobustDistiller recipe:
  layer-wise prediction + enhancement head, batch ``--batch-size`` x ``--crop-s`` s; the
  generated corpus is sized so that the warm-up and timed steps are full batches of the first
  epoch, checked);
- augmentation speed as a multiple of real time (noise, reverberation, both; interleaved), with
  the real noise/RIR folders when ``../shared/data`` exists, else white noise and simulated
  rooms.

Usage: ``python -m benchmarks.bench_distill [--threads 2] [--steps 5] [--out runs/bench_distill.md]``
(``--out`` writes the table alone: not over ``docs/benchmarks.md``, which keeps notes beside it)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import REPO, check_full_steps, interleaved, items_for_steps, machine, median

SHARED = REPO.parent / "shared" / "data"


def bench_forward(teacher_dir: Path, repeats: int) -> list[tuple[str, str]]:
    from robustdistill.student import create_student
    from robustdistill.upstream import Upstream

    teacher = Upstream.from_pretrained(teacher_dir)
    student = Upstream(create_student(teacher), frozen=True)
    wave, lengths = torch.randn(1, 160_000) * 0.1, torch.tensor([160_000])
    models = {"teacher (WavLM Base+ shape)": teacher, "student (2 layers)": student}
    with torch.inference_mode():
        times = interleaved({name: (lambda m=model: m(wave, lengths))
                             for name, model in models.items()}, repeats)
    timings = {name: median(values) for name, values in times.items()}
    rows = []
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append((f"forward 10 s, {name}, {params:.1f} M params", f"{timings[name]:.3f} s"))
    t, s = timings.values()
    rows.append(("student speed-up over teacher (forward, 10 s)", f"{t / s:.2f}x"))
    return rows


def bench_training(teacher_dir: Path, steps: int, batch_size: int, crop_s: float,
                   workdir: Path) -> list[tuple[str, str]]:
    from robustdistill.config import load_config
    from robustdistill.trainer import _Run

    overrides = {
        "teacher": str(teacher_dir), "output_dir": str(workdir / "run"),
        "data.synthetic_items": 1, "data.synthetic_seconds": f"[{crop_s}, {crop_s}]",
        "data.synthetic_dir": str(workdir / "corpus"), "data.batch_size": batch_size,
        "data.max_length_s": crop_s, "data.min_length_s": min(1.0, crop_s),
        "data.train_dir": "null", "data.validation_dir": "null", "data.num_workers": 0,
        "augmentation.noise_dir": "null", "augmentation.rir_dir": "null",
        "augmentation.num_simulated_rooms": 4, "training.mixed_precision": "no",
        "training.cpu": True, "training.report_to": "[]", "training.max_steps": steps + 1,
    }
    def config():
        argv = [x for k, v in overrides.items() for x in (f"--{k}", str(v))]
        return load_config(REPO / "configs" / "robust_wavlm_base_plus.yaml", argv)

    overrides["data.synthetic_items"] = items_for_steps(config(), steps + 1)  # + the warm-up
    run = _Run(config())
    batches = run._batches()
    audio = [run.train_step(batches)["audio_seconds"]]  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        audio.append(run.train_step(batches)["audio_seconds"])
    elapsed = time.perf_counter() - start
    check_full_steps("distillation step", run, audio)
    audio = sum(audio[1:])
    return [
        (f"distillation step (batch {batch_size} x {crop_s:g} s, layer-wise + enhancement)",
         f"{elapsed / steps:.2f} s/step"),
        ("distillation steps per second", f"{steps / elapsed:.3f}"),
        ("distillation audio seconds per second", f"{audio / elapsed:.2f}"),
    ]


def bench_augmentation(repeats: int) -> list[tuple[str, str]]:
    from robustdistill.augment import AugmentationConfig, Corruptor

    real = SHARED.is_dir()
    clean = (np.random.default_rng(0).standard_normal(160_000) * 0.1).astype(np.float32)
    fns = {}
    for kind, probs in (("noise", (1, 0, 0, 0)), ("reverberation", (0, 1, 0, 0)),
                        ("noise + reverberation", (0, 0, 1, 0))):
        cfg = AugmentationConfig(
            noise_dir=str(SHARED / "noise") if real else None,
            rir_dir=str(SHARED / "rir") if real else None,
            p_noise=probs[0], p_reverb=probs[1], p_noise_reverb=probs[2], p_none=probs[3],
            num_simulated_rooms=8)
        corruptor, rng = Corruptor.from_config(cfg, seed=0), np.random.default_rng(1)
        fns[kind] = lambda c=corruptor, g=rng: c.corrupt(clean, g)
    source = "real noise/RIR files" if real else "white noise/simulated rooms"
    return [(f"augmentation, {kind}, 10 s ({source})", f"{10 / median(times):.0f}x real time")
            for kind, times in interleaved(fns, repeats).items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-s", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    from robustdistill.teachers import make_random_teacher

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher_dir = make_random_teacher("wavlm", "base", tmp / "teacher")
        rows = bench_forward(teacher_dir, args.repeats)
        rows += bench_training(teacher_dir, args.steps, args.batch_size, args.crop_s, tmp)
        rows += bench_augmentation(max(args.repeats, 5))
    header = machine(args.threads)
    lines = [header, "", "| measurement | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
