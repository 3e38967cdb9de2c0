"""Teacher feature cache vs teacher-every-step: distillation throughput, one run, interleaved.

For each recipe (``configs/distilhubert.yaml``: layer-wise MLP heads, clean;
``configs/robust_wavlm_base_plus.yaml``: layer-wise heads + BiLSTM enhancement head,
noise/reverberation from ``runs/data/*_train``) and student preset, two identical runs on real
LibriSpeech utterances (``../shared/data``; generated audio without it): one with the teacher
on every step, one reading its targets from a prebuilt cache (fp16; context ``utterance``, or
for Whisper, whose absolute position embedding rules that out, context ``crop`` with
``crop_starts: chunks``).
Steps alternate between the two runs; the figure is the ratio of audio seconds per second.
Also printed: the one-off cost of building the cache and its size per hour of audio.

Usage::

    python -m benchmarks.bench_cache --teacher wavlm-base [--threads 2 --batch-size 2 --crop-s 4]
    python -m benchmarks.bench_cache --teacher whisper-tiny.en --presets default
    python -m benchmarks.bench_cache --set student.feature_grad_mult=0   # any config override

``--set KEY=VALUE`` (repeatable) overrides a config key in every run of the table (both sides),
e.g. ``student.feature_grad_mult=0`` (the student's CNN frozen, the reference code's
``feature_grad_mult: 0``) or ``training.mixed_precision=bf16`` (CPU autocast); the table's
notes list them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import (
    REPO,
    SHARED_DATA,
    SPLIT,
    WHISPER_DIR,
    interleaved,
    median,
    quiet,
    table,
)


def _teacher_dir(name: str, tmp: Path) -> Path:
    if name == "wavlm-base":
        from robustdistill.teachers import make_random_teacher

        return make_random_teacher("wavlm", "base", tmp / "teacher")
    if name == "whisper-tiny.en":
        if not WHISPER_DIR.is_dir():
            raise SystemExit(f"{WHISPER_DIR} is absent")
        return WHISPER_DIR
    raise SystemExit(f"unknown teacher {name!r}")


def _config(args, teacher_dir: Path, tmp: Path, out: str, recipe: str = "distilhubert",
            preset: str = "default", **extra):
    from benchmarks._common import subset_folder
    from robustdistill.config import load_config

    overrides = {
        "teacher": str(teacher_dir), "output_dir": str(tmp / out),
        "data.batch_size": args.batch_size, "data.max_length_s": args.crop_s,
        "data.min_length_s": min(2.0, args.crop_s), "data.num_workers": 0,
        "data.validation_dir": "null", "data.validation_fraction": 0.01,
        "training.cpu": True, "training.report_to": "[]", "training.mixed_precision": "no",
        "training.max_steps": 10_000, "student.preset": preset, **extra,
        **dict(item.split("=", 1) for item in getattr(args, "set", ())),
    }
    if preset != "default":  # shapes differ from the teacher's: nothing to copy
        overrides["student.init_layers"] = "null"
    if args.teacher == "whisper-tiny.en":  # 4 layers: the recipe's [4, 8, 12] scaled, [1, 3, 4]
        overrides["objectives.layerwise.teacher_layers"] = "null"
    if (SHARED_DATA / "librispeech-mini").is_dir():
        overrides["data.train_dir"] = str(subset_folder(
            SHARED_DATA / "librispeech-mini" / "train-clean-100", args.items, tmp / "speech"))
    else:
        overrides.update({"data.train_dir": "null", "data.synthetic_items": args.items,
                          "data.synthetic_seconds": f"[{args.crop_s}, {2 * args.crop_s}]",
                          "data.synthetic_dir": str(tmp / "speech")})
    if (SPLIT / "noise_train").is_dir():
        overrides.update({"augmentation.noise_dir": str(SPLIT / "noise_train"),
                          "augmentation.rir_dir": str(SPLIT / "rir_train")})
    else:
        overrides.update({"augmentation.noise_dir": "null", "augmentation.rir_dir": "null",
                          "augmentation.num_simulated_rooms": 4})
    argv = [x for k, v in overrides.items() for x in (f"--{k}", str(v))]
    return load_config(REPO / "configs" / f"{recipe}.yaml", argv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="wavlm-base", choices=["wavlm-base", "whisper-tiny.en"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--items", type=int, default=12, help="utterances in the corpus")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--crop-s", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=4, help="steps per side (after 1 warm-up)")
    parser.add_argument("--recipes", nargs="+", default=["distilhubert", "robust_wavlm_base_plus"])
    parser.add_argument("--presets", nargs="+", default=["default", "fast"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    if bad := [item for item in args.set if "=" not in item]:
        parser.error(f"--set takes KEY=VALUE, got {bad}")
    quiet()
    torch.set_num_threads(args.threads)
    from robustdistill.teacher_cache import build_cache
    from robustdistill.trainer import _Run

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher_dir = _teacher_dir(args.teacher, tmp)
        cached_cfg = _config(args, teacher_dir, tmp, "cached", **_cache_options(args, tmp))
        start = time.perf_counter()
        built = build_cache(cached_cfg, splits=["train"])
        build_s = time.perf_counter() - start
        rows, notes = [], []
        for recipe in args.recipes:
            for preset in args.presets:
                row, note = _pair(args, teacher_dir, tmp, recipe, preset)
                print("partial:", row, note, flush=True)  # kept if a long run is cut short
                rows += row
                notes.append(note)
        cache = _Run(cached_cfg)
        audio_s = float(cache.train_set.total_seconds)
        size = cache.teacher_cache.stats()["bytes"]
        notes += [
            f"Teacher: {args.teacher} "
            f"({sum(p.numel() for p in cache.teacher.parameters()) / 1e6:.1f} M params, layers "
            f"{cache.teacher_cache.layers} cached); batch {args.batch_size} x {args.crop_s:g} s "
            f"crops, {cache.cfg.training.mixed_precision.replace('no', 'fp32')} training, "
            f"{args.repeats} interleaved steps per side after one warm-up.",
            f"Overrides on both sides: {', '.join(args.set) or 'none'}.",
            f"Corpus: {len(cache.train_set)} utterances, {audio_s:.0f} s "
            f"({'LibriSpeech train-clean-100' if (SHARED_DATA / 'librispeech-mini').is_dir() else 'generated'}).",
            f"Cache build (one-off, `build_cache`, 1 process): {build_s:.1f} s for {audio_s:.0f} s "
            f"of audio = {audio_s / build_s:.1f} audio-s/s; {built['computed']} entries, "
            f"{size / 1e6:.1f} MB = {size / 1e9 / (audio_s / 3600):.2f} GB per hour of audio (fp16).",
        ]
        table(f"Teacher cache, {args.teacher}", ("recipe, student preset", "run",
              "median s/step", "audio s per s", "speed-up"), rows, notes, threads=args.threads,
              out=args.out)


def _cache_options(args, tmp: Path) -> dict:
    """The cache section: whole utterances, or fixed chunks for Whisper (position embedding)."""
    options = {"teacher_cache.dir": str(tmp / "cache"), "teacher_cache.missing": "error"}
    if args.teacher == "whisper-tiny.en":
        options.update({"teacher_cache.context": "crop", "teacher_cache.crop_starts": "chunks"})
    return options


def _pair(args, teacher_dir, tmp, recipe, preset):
    """Interleaved steps of teacher-every-step and cached runs of one recipe and preset."""
    from robustdistill.trainer import _Run

    cache = _cache_options(args, tmp)
    runs = {"teacher every step": _Run(_config(args, teacher_dir, tmp, f"{recipe}-{preset}-p",
                                               recipe, preset)),
            "cached targets": _Run(_config(args, teacher_dir, tmp, f"{recipe}-{preset}-c",
                                           recipe, preset, **cache))}
    audio = {name: [] for name in runs}
    iterators = {name: run._batches() for name, run in runs.items()}

    def step(name):
        audio[name].append(runs[name].train_step(iterators[name])["audio_seconds"])

    times = interleaved({name: (lambda n=name: step(n)) for name in runs}, args.repeats)
    speed = {name: sum(audio[name][1:]) / sum(times[name]) for name in runs}  # warm-up excluded
    ratio = speed["cached targets"] / speed["teacher every step"]
    rows = [(f"{recipe}, `{preset}`", name, f"{median(times[name]):.2f}", f"{speed[name]:.2f}",
             f"**{ratio:.2f}x**" if name == "cached targets" else "") for name in runs]
    student = runs["cached targets"].accelerator.unwrap_model(runs["cached targets"].model).student
    note = (f"{recipe}, `{preset}`: student {sum(p.numel() for p in student.parameters()) / 1e6:.1f} "
            f"M params; objectives {sorted(runs['cached targets'].objectives)}.")
    return rows, note


if __name__ == "__main__":
    main()
