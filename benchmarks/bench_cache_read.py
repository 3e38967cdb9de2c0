"""Reading a batch's cached teacher targets: time on the step's critical path, one run.

The recipe batch (24 crops of up to 15.6 s, real LibriSpeech; WavLM Base+-shaped teacher,
layers [4, 8, 12], fp16 cache, context ``utterance``). Interleaved, medians of ``--repeats``:

* **in the step** (``teacher_cache.read_in_workers: false``): ``TeacherFeatureCache.targets``
  reads every row from the memory-mapped entries into a float32 batch;
* **in the loader** (the default): the ``CacheReader`` collate reads the rows in a DataLoader
  worker (timed here, but off the critical path when ``num_workers > 0``), and the step only
  converts what it receives: fp16 for an accelerator (``.to(float32)``, done here on the CPU,
  so an upper bound of what a GPU's step does after its host-to-device copy), float32 for a
  CPU run (nothing left to do).

Usage: ``python -m benchmarks.bench_cache_read [--batch-size 24 --crop-s 15.6 --repeats 7]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import bench_cache
from benchmarks._common import interleaved, median, quiet, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--crop-s", type=float, default=15.6)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    args.items, args.teacher, args.set = args.batch_size + 2, "wavlm-base", []
    quiet()
    torch.set_num_threads(args.threads)
    from robustdistill.teacher_cache import build_cache
    from robustdistill.trainer import _Run

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher_dir = bench_cache._teacher_dir("wavlm-base", tmp)
        cfg = bench_cache._config(args, teacher_dir, tmp, "c", "distilhubert", "default",
                                  **bench_cache._cache_options(args, tmp),
                                  **{"teacher_cache.read_in_workers": "false"})
        start = time.perf_counter()
        build_cache(cfg, splits=["train"])
        build_s = time.perf_counter() - start
        run = _Run(cfg)
        cache = run.teacher_cache
        batch = next(run._batches())  # plain collate: nothing read yet
        longest = int(batch["lengths"].max())
        readers = {"fp16": cache.reader(longest, cache.dtype),
                   "float32": cache.reader(longest, torch.float32)}
        read = {name: reader.read(batch) for name, reader in readers.items()}
        assert all(bool(r["cached_rows"].all()) for r in read.values())
        calls = {
            "in the step: targets() reads every row": lambda: cache.targets(batch),
            "loader, fp16 (accelerator): collate reads, in the worker": lambda: readers[
                "fp16"].read(batch),
            "loader, fp16 (accelerator): step converts to float32": lambda: cache.targets(
                {**batch, **read["fp16"]}),
            "loader, float32 (CPU run): collate reads and converts, in the worker":
                lambda: readers["float32"].read(batch),
            "loader, float32 (CPU run): step": lambda: cache.targets(
                {**batch, **read["float32"]}),
        }
        times = interleaved(calls, args.repeats)
        step_ms = median(times["in the step: targets() reads every row"]) * 1e3
        rows = []
        for name, values in times.items():
            ms = median(values) * 1e3
            critical = "no (worker)" if "in the worker" in name else "yes"
            rows.append((name, f"{ms:.1f}", critical, f"{ms / step_ms:.2f}"))
        size = sum(v.numel() * v.element_size() for v in read["fp16"].values()) / 2**20
        table(f"Reading cached targets of a {len(batch['lengths'])} x {args.crop_s:g} s batch",
              ("where", "median ms", "on the step's critical path", "vs in-step read"), rows,
              [f"WavLM Base+ shape, layers {cache.layers}, fp16 entries, context utterance; "
               f"batch {tuple(batch['waveforms'].shape)} samples, targets "
               f"{tuple(read['fp16']['cached_targets'].shape)} ({size:.0f} MiB in fp16); "
               f"{args.repeats} interleaved calls after one warm-up; cache built in "
               f"{build_s:.0f} s.",
               "On a GPU the step also copies the batch to the device (half the bytes in "
               "fp16); with pinned memory that copy is asynchronous."],
              threads=args.threads, out=args.out)


if __name__ == "__main__":
    main()
