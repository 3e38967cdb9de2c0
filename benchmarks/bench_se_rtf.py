"""Real-time factor of the speech-enhancement teachers and students, streaming hop by hop.

One process, one thread, interleaved repeats (``_common.interleaved``): each model streams the
same white-noise signal hop by hop (10 ms; DTLN 8 ms) with carried state, as a hearing aid
would run it. The figure is the median of ``processing time / audio duration`` (< 1 is faster
than real time) and its ratio to NSNet2's, both in one run so machine load hits all alike.

    python -m benchmarks.bench_se_rtf --seconds 3 --repeats 5 [--out docs/...]

Skips a teacher whose package is not installed (see ../shared/docs/teachers.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks._common import interleaved, median, quiet, table
from robustdistill.se.streaming import StreamingEnhancer
from robustdistill.se.students import GRUMaskStudent, config_for_ratio
from robustdistill.se.teachers import load_teacher


def _streamer(model, seconds: float):
    """A zero-argument callable that streams ``seconds`` of noise through ``model``."""
    x = 0.1 * torch.randn(1, int(seconds * model.stft.sample_rate),
                          generator=torch.Generator().manual_seed(0))
    hop = model.stft.hop_length
    enhancer = StreamingEnhancer(model)

    def run() -> None:
        enhancer.reset()
        with torch.inference_mode():
            for i in range(0, x.shape[1], hop):
                enhancer.push(x[:, i: i + hop])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(1)
    models = {}
    for name in ("nsnet2", "dtln"):
        try:
            models[name] = load_teacher(name)
        except Exception as err:  # noqa: BLE001 - a missing package is reported, not fatal
            print(f"skipping {name}: {err}")
    for ratio in (16, 32, 63):
        models[f"student {ratio}x"] = GRUMaskStudent(config_for_ratio(ratio)).eval()
    times = interleaved({n: _streamer(m, args.seconds) for n, m in models.items()},
                        repeats=args.repeats)
    rtf = {n: median(t) / args.seconds for n, t in times.items()}
    base = rtf.get("nsnet2")
    rows = [(n, f"{sum(p.numel() for p in models[n].parameters()):,}", f"{r:.3f}",
             f"{base / r:.1f}x" if base else "-") for n, r in rtf.items()]
    table("SE streaming real-time factor (1 thread)",
          ("model", "parameters", "RTF (median)", "speed vs NSNet2"), rows,
          notes=[f"{args.seconds} s of audio streamed hop by hop, median of {args.repeats} "
                 "interleaved repeats after one warm-up"], threads=1, out=args.out)


if __name__ == "__main__":
    main()
