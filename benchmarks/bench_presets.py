"""Student presets vs the WavLM Base+-shaped teacher: CPU inference on 10 s, one run.

Teacher ``robustdistill make-teacher --family wavlm --preset base`` (random weights of the
real shape), every student preset created from it (``default``, ``pruned``, ``fast``)
(:data:`robustdistill.student.STUDENT_PRESETS`), each behind the upstream contract
(``Upstream``, all hidden states), batch 1 x 10 s, ``torch.inference_mode``, interleaved,
median of ``--repeats``. ``--compile`` adds ``nn.Module.compile`` variants of the students
(inductor; the first call compiles and is not timed). ``--dtypes float32 bfloat16`` times every
model at each precision in the same interleaved run (bfloat16: CPU autocast, i.e. convolutions
and matrix products in bf16, weights kept in fp32, as ``Upstream`` users get with
``torch.autocast("cpu", dtype=torch.bfloat16)``); each row's speed-up is against the teacher at
the same precision, and the bf16 rows also give the factor over the same model in fp32.

Usage: ``python -m benchmarks.bench_presets [--threads 2 --repeats 7 --compile
--dtypes float32 bfloat16]``
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import torch

from benchmarks._common import interleaved, median, quiet, table


def _channels(conv_dim) -> str:
    """``512`` for a uniform CNN, else the per-layer list (``256x2-512x5``)."""
    runs = [(width, len(list(group))) for width, group in itertools.groupby(conv_dim)]
    if len(runs) == 1:
        return str(runs[0][0])
    return "-".join(f"{w}x{n}" if n > 1 else str(w) for w, n in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--compile", action="store_true", help="also time compiled students")
    parser.add_argument("--dtypes", nargs="+", default=["float32"],
                        choices=["float32", "bfloat16"],
                        help="precisions to time (bfloat16: CPU autocast)")
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    from robustdistill.student import STUDENT_PRESETS, StudentConfig, create_student
    from robustdistill.teachers import make_random_teacher
    from robustdistill.upstream import Upstream

    with tempfile.TemporaryDirectory() as tmp:
        teacher = Upstream.from_pretrained(make_random_teacher("wavlm", "base", Path(tmp) / "t"))
    models = {"teacher (WavLM Base+ shape)": teacher}
    for preset in STUDENT_PRESETS:
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

    def call(model, dtype):
        with torch.inference_mode(), torch.autocast(
                "cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            model(wave, lengths)

    def call_cnn(model, dtype):  # the convolutional feature encoder alone
        with torch.inference_mode(), torch.autocast(
                "cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            model.model.feature_extractor(wave)

    calls = {(name, dtype): (lambda m=m, d=dtype: call(m, d))
             for dtype in args.dtypes for name, m in models.items()}
    calls.update({(name, dtype, "cnn"): (lambda m=m, d=dtype: call_cnn(m, d))
                  for dtype in args.dtypes for name, m in models.items()
                  if "compiled" not in name})
    times = interleaved(calls, args.repeats, warmup=2)
    rows = []
    for dtype in args.dtypes:
        base = median(times[("teacher (WavLM Base+ shape)", dtype)])
        for name, model in models.items():
            cfg = model.config
            params = sum(p.numel() for p in model.parameters()) / 1e6
            shape = (f"{cfg.model_type}, CNN {_channels(cfg.conv_dim)}, {cfg.num_hidden_layers} x "
                     f"{cfg.hidden_size}, {cfg._attn_implementation}")
            ts = times[(name, dtype)]
            t = median(ts)
            # paired: teacher and model timed in the same round, so a slow round hits both
            ratios = sorted(a / b for a, b in zip(times[("teacher (WavLM Base+ shape)", dtype)],
                                                  ts, strict=True))
            q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
            vs_fp32 = (f"{median(times[(name, 'float32')]) / t:.2f}x"
                       if dtype != "float32" and "float32" in args.dtypes else "")
            cnn = times.get((name, dtype, "cnn"))
            cnn_share = f"{median(cnn) / t:.0%}" if cnn else ""
            rows.append((name, dtype, shape, f"{params:.1f} M", cnn_share,
                         f"{t:.3f} ({min(ts):.3f}-{max(ts):.3f})", f"{base / t:.2f}x",
                         f"{median(ratios):.2f}x ({q1:.2f}-{q3:.2f})",
                         f"{args.seconds / t:.0f}x", vs_fp32))
    table(f"Student presets: CPU inference, {args.seconds:g} s of audio, {args.threads} threads",
          ("model", "precision", "shape (family, CNN channels, layers x width, attention)",
           "params", "CNN share", "median s (min-max)", "speed-up vs teacher (same precision)",
           "per-round speed-up, median (quartiles)",
           "x real time", "speed-up vs its fp32"), rows,
          [f"Batch 1, `torch.inference_mode`, all hidden states returned; {args.repeats} "
           f"interleaved calls per model and precision after 2 warm-up calls.",
           "CNN share: median time of the convolutional feature encoder alone (timed in the "
           "same rounds) over the model's median time.",
           "Speed-up: ratio of medians; per-round: the teacher's time over the model's in "
           "each interleaved round (one round = every model once), median and quartiles.",
           "bfloat16: `torch.autocast('cpu', dtype=torch.bfloat16)` around the call "
           "(weights stay fp32).",
           "Random weights (speed does not depend on them)."],
          threads=args.threads, out=args.out)

if __name__ == "__main__":
    main()
