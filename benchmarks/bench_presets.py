"""Student presets vs the WavLM Base+-shaped teacher: CPU inference on 10 s, one run.

Teacher ``robustdistill make-teacher --family wavlm --preset base`` (random weights of the
real shape), the ``default`` and ``fast`` students created from it
(:data:`robustdistill.student.STUDENT_PRESETS`), each behind the upstream contract
(``Upstream``, all hidden states), batch 1 x 10 s, ``torch.inference_mode``, interleaved,
median of ``--repeats``. ``--compile`` adds ``nn.Module.compile`` variants of the students
(inductor; the first call compiles and is not timed).

Usage: ``python benchmarks/bench_presets.py [--threads 2 --repeats 7 --compile]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import interleaved, median, quiet, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--compile", action="store_true", help="also time compiled students")
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    from robustdistill.student import StudentConfig, create_student
    from robustdistill.teachers import make_random_teacher
    from robustdistill.upstream import Upstream

    with tempfile.TemporaryDirectory() as tmp:
        teacher = Upstream.from_pretrained(make_random_teacher("wavlm", "base", Path(tmp) / "t"))
    models = {"teacher (WavLM Base+ shape)": teacher}
    for preset in ("default", "fast"):
        models[f"student `{preset}`"] = Upstream(
            create_student(teacher, StudentConfig(preset=preset)), frozen=True)
    if args.compile:
        for preset in ("default", "fast"):
            model = Upstream(create_student(teacher, StudentConfig(preset=preset)), frozen=True)
            model.model.compile()
            models[f"student `{preset}`, compiled"] = model
    samples = round(args.seconds * 16_000)
    wave = torch.randn(1, samples, generator=torch.Generator().manual_seed(0)) * 0.1
    lengths = torch.tensor([samples])

    def call(model):
        with torch.inference_mode():
            model(wave, lengths)

    times = interleaved({name: (lambda m=m: call(m)) for name, m in models.items()},
                        args.repeats, warmup=2)
    base = median(times["teacher (WavLM Base+ shape)"])
    rows = []
    for name, model in models.items():
        cfg = model.config
        params = sum(p.numel() for p in model.parameters()) / 1e6
        shape = (f"{cfg.model_type}, CNN {cfg.conv_dim[0]}, {cfg.num_hidden_layers} x "
                 f"{cfg.hidden_size}, {cfg._attn_implementation}")
        t = median(times[name])
        rows.append((name, shape, f"{params:.1f} M", f"{t:.3f} ({min(times[name]):.3f}-"
                     f"{max(times[name]):.3f})", f"{base / t:.2f}x", f"{args.seconds / t:.0f}x"))
    table(f"Student presets: CPU inference, {args.seconds:g} s of audio, {args.threads} threads",
          ("model", "shape (family, CNN channels, layers x width, attention)", "params",
           "median s (min-max)", "speed-up vs teacher", "x real time"), rows,
          [f"Batch 1, fp32, `torch.inference_mode`, all hidden states returned; "
           f"{args.repeats} interleaved calls per model after 2 warm-up calls.",
           "Random weights (speed does not depend on them)."],
          threads=args.threads, out=args.out)


if __name__ == "__main__":
    main()
