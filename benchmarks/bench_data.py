"""Data never the bottleneck: augmentation speed per core, and the share of step time spent
waiting for data, one run.

1. Augmentation (``robustdistill.augment.Corruptor``, 1 thread = one core): noise, reverberation
   and both on 10 s of real LibriSpeech speech, with the training noise and rooms
   (``runs/data/noise_train``, ``runs/data/rir_train``: real recordings and measured RIRs;
   generated noise and simulated rooms without them), as a multiple of real time, interleaved,
   median of ``--repeats``.
2. Data-wait share: distillation steps (``configs/robust_wavlm_base_plus.yaml``, corruption on,
   fast student, WavLM Base+-shaped teacher) with ``num_workers`` 0 and ``--workers``,
   interleaved; the trainer's ``data_wait_seconds`` (time blocked on the loader) over the step
   time.

3. Corruption of the GPU recipe's batch (``--only recipe-batch``; 24 x 15.6 s of real speech,
   the RobustDistiller recipe's corruption settings and training noise/rooms): the time the
   step spends in ``Corruptor.corrupt_batch`` (``augmentation.in_loader: false``, the default),
   which ``augmentation.in_loader: true`` moves into the loader's workers (``LoaderCorruption``,
   the same work per item, timed here too).

4. Epoch boundaries (``--only epochs``; LibriSpeech train-clean-100 of librispeech-mini, 251
   files): the loader of a training run read for ``--epochs`` epochs, with ``num_workers`` 0
   and ``--workers``: a streamed, shuffled Parquet copy (4 files written to a temporary
   folder; ``data.shuffle_buffer`` 1000 and 64, ``data.stream_end_sleep`` true = ``datasets``'
   own 5 s sleep at a stream's end, false = skipped), and the map-style folder (its workers
   made again every epoch, against ``persistent_workers``, which the trainer's map-style
   training loader uses). Per epoch: seconds, the longest
   wait for a batch, and the boundary (``iter()`` to the first batch plus the last batch to
   the end); medians over the epochs after the first.

Usage: ``python -m benchmarks.bench_data [--threads 2 --steps 4 --workers 2]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import SHARED_DATA, SPLIT, interleaved, median, quiet, table


def _speech(seconds: float) -> np.ndarray:
    from robustdistill.audio import load_audio

    files = sorted((SHARED_DATA / "librispeech-mini" / "train-clean-100").glob("*.flac"))
    if not files:  # generated speech-like audio
        rng = np.random.default_rng(0)
        return (rng.standard_normal(round(seconds * 16_000)) * 0.1).astype(np.float32)
    samples, parts = round(seconds * 16_000), []
    for f in files:  # as many files as the duration needs (tiled if the folder is short)
        parts.append(load_audio(f))
        if sum(map(len, parts)) >= samples:
            break
    audio = np.concatenate(parts)
    audio = np.tile(audio, -(-samples // len(audio)))
    return np.ascontiguousarray(audio[:samples], dtype=np.float32)


def bench_augmentation(args) -> None:
    from robustdistill.augment import AugmentationConfig, Corruptor

    torch.set_num_threads(1)
    real = (SPLIT / "noise_train").is_dir()
    folders = ({"noise_dir": str(SPLIT / "noise_train"), "rir_dir": str(SPLIT / "rir_train")}
               if real else {"noise_dir": None, "rir_dir": None, "num_simulated_rooms": 8})
    clean = _speech(args.seconds)
    kinds = {"noise": (1, 0, 0, 0), "reverberation": (0, 1, 0, 0),
             "noise + reverberation": (0, 0, 1, 0), "recipe mix (0.25 each)": (.25, .25, .25, .25)}
    fns = {}
    for kind, (pn, pr, pnr, p0) in kinds.items():
        corruptor = Corruptor.from_config(AugmentationConfig(
            **folders, p_noise=pn, p_reverb=pr, p_noise_reverb=pnr, p_none=p0), seed=0)
        rng = np.random.default_rng(1)
        fns[kind] = lambda c=corruptor, g=rng: c.corrupt(clean, g)
    cpu = interleaved(fns, args.repeats, warmup=2, timer=time.process_time)
    wall = interleaved(fns, args.repeats, warmup=0)
    rows = [(kind, f"{median(t) * 1e3:.1f}", f"**{args.seconds / median(t):.0f}x**",
             f"{median(wall[kind]) * 1e3:.1f}") for kind, t in cpu.items()]
    source = ("real noise recordings (runs/data/noise_train) and measured RIRs "
              "(runs/data/rir_train)" if real else "generated noise and simulated rooms")
    table(f"Augmentation speed, {args.seconds:g} s of speech, one core", (
        "corruption", "median CPU ms", "x real time per core (CPU time)", "median wall ms"),
        rows,
        [f"{source}; `Corruptor.corrupt` on one utterance, 1 torch thread, "
         f"{args.repeats} interleaved calls per kind after 2 warm-up calls. Per core = the "
         "process's CPU time (`time.process_time`), which other jobs on a shared machine do "
         "not inflate; wall time (second pass) is what this machine's load made of it."],
        threads=1, out=args.out)


def bench_data_wait(args) -> None:
    from bench_cache import _config

    from robustdistill.teachers import make_random_teacher
    from robustdistill.trainer import _Run

    torch.set_num_threads(args.threads)

    class Options:
        items, batch_size, crop_s, teacher = 16, args.batch_size, args.crop_s, "wavlm-base"

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher_dir = make_random_teacher("wavlm", "base", tmp / "teacher")
        runs = {}
        for workers in (0, args.workers):
            cfg = _config(Options, teacher_dir, tmp, f"w{workers}", "robust_wavlm_base_plus",
                          args.preset, **{"data.num_workers": workers})
            runs[workers] = _Run(cfg)
        iterators = {w: run._batches() for w, run in runs.items()}
        waits = {w: [] for w in runs}

        def step(w):
            waits[w].append(runs[w].train_step(iterators[w])["data_wait_seconds"])

        times = interleaved({w: (lambda w=w: step(w)) for w in runs}, args.steps)
        rows = []
        for w in runs:
            wait = waits[w][1:]  # the warm-up step is not timed
            rows.append((w, f"{median(times[w]):.2f}", f"{median(wait) * 1e3:.0f}",
                         f"{100 * sum(wait) / sum(times[w]):.1f} %"))
        table("Share of step time waiting for data", (
            "num_workers", "median s/step", "median ms waiting", "share of step time"), rows,
            [f"`{args.preset}` student, robust_wavlm_base_plus recipe (noise/reverb on the "
             f"main process, in the step), batch {args.batch_size} x {args.crop_s:g} s, "
             f"{args.steps} interleaved steps per setting after one warm-up; the loader "
             "decodes FLAC and crops; corruption is part of the step, not of the wait."],
            threads=args.threads, out=args.out)


def bench_recipe_batch(args) -> None:
    from benchmarks._common import REPO
    from robustdistill.augment import Corruptor, LoaderCorruption
    from robustdistill.config import load_config

    torch.set_num_threads(1)
    cfg = load_config(REPO / "configs" / "robust_wavlm_base_plus.yaml", [])
    options = cfg.augmentation
    if (SPLIT / "noise_train").is_dir():
        options.noise_dir, options.rir_dir = str(SPLIT / "noise_train"), str(SPLIT / "rir_train")
    else:
        options.noise_dir = options.rir_dir = None
    corruptor = Corruptor.from_config(options, seed=0)
    crop = round(15.6 * 16_000)
    speech = _speech(24 * 15.6)
    items = [{"waveform": speech[b * crop: (b + 1) * crop], "index": b, "epoch": 0}
             for b in range(24)]
    collate = LoaderCorruption(corruptor, seed=0)
    batch = collate(items)
    assert all(len(item["waveform"]) == crop for item in items)
    fns = {"in the step: corrupt_batch": lambda: corruptor.corrupt_batch(
               batch["waveforms"], batch["lengths"], np.random.default_rng(1)),
           "in the loader: LoaderCorruption (collate + corruption)": lambda: collate(items)}
    cpu = interleaved(fns, max(3, args.repeats // 4), warmup=1, timer=time.process_time)
    rows = [(name, f"{median(t) * 1e3:.0f}", "yes" if "step" in name else
             "no (workers, when num_workers > 0)") for name, t in cpu.items()]
    table("Corrupting the GPU recipe's batch (24 x 15.6 s), one core", (
        "where", "median CPU ms per batch", "on the step's critical path"), rows,
        [f"robust_wavlm_base_plus.yaml corruption settings ({options.p_noise} noise, "
         f"{options.p_reverb} reverberation, {options.p_noise_reverb} both, {options.p_none} "
         f"none), {'real training noise and rooms' if options.noise_dir else 'generated noise, simulated rooms'}"
         f"; CPU time of one core (`time.process_time`), interleaved, after one warm-up."],
        threads=1, out=args.out)


def _epoch_times(epochs: int, start_epoch, batches) -> list[tuple[float, float, float]]:
    """Per epoch ``(seconds, longest wait for a batch, boundary)``: ``start_epoch(e)`` then
    iterate ``batches()``; boundary = ``iter()`` to the first batch + the last batch to the end
    (worker start and shutdown, a stream's end)."""
    times = []
    for epoch in range(epochs):
        start_epoch(epoch)
        begin = last = time.perf_counter()
        first, longest = None, 0.0
        for _ in batches():
            now = time.perf_counter()
            first = now - begin if first is None else first
            longest, last = max(longest, now - last), now
        end = time.perf_counter()
        times.append((end - begin, max(longest, end - last), (first or 0.0) + end - last))
    return times


def bench_epochs(args) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from robustdistill.data import (
        DataConfig,
        ShardedRandomSampler,
        build_dataloader,
        build_datasets,
    )

    files = sorted((SHARED_DATA / "librispeech-mini" / "train-clean-100").glob("*.flac"))
    validation = SHARED_DATA / "librispeech-mini" / "test-other"
    if not files:
        print("epochs: no ../shared/data/librispeech-mini: skipped")
        return
    torch.set_num_threads(args.threads)
    rows = []

    def row(name, workers, setting, times):
        later = times[1:] or times
        rows.append((name, workers, setting,
                     *(f"{median([t[i] for t in later]):.2f}" for i in range(3))))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "parquet" / "data"
        folder.mkdir(parents=True)
        cell = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        for k in range(4):
            cells = [{"bytes": f.read_bytes(), "path": f.name} for f in files[k::4]]
            pq.write_table(pa.table({"audio": pa.array(cells, type=cell)}),
                           folder / f"train-{k:05d}-of-00004.parquet", row_group_size=16)
        for workers in sorted({0, args.workers}):
            for buffer in (1000, 64):
                for keep in (True, False):
                    cfg = DataConfig(train_dataset=str(folder.parent), streaming=True,
                                     shuffle_buffer=buffer, stream_end_sleep=keep,
                                     num_workers=workers, batch_size=8,
                                     validation_dir=str(validation), max_validation_items=4)
                    train, _ = build_datasets(cfg, 0)
                    loader = build_dataloader(train, 8, None, workers)
                    row(f"stream, shuffle_buffer {buffer}", workers,
                        f"stream_end_sleep {str(keep).lower()}",
                        _epoch_times(args.epochs, train.set_epoch,
                                     lambda train=train, loader=loader: train.track(loader)))
        cfg = DataConfig(train_dir=str(files[0].parent), batch_size=8,
                         validation_dir=str(validation), max_validation_items=4)
        train, _ = build_datasets(cfg, 0)
        sampler = ShardedRandomSampler(len(train), 0, shuffle=True)
        for workers in sorted({0, args.workers}):
            loader = build_dataloader(train, 8, sampler, workers)
            row("map-style folder", workers, "workers made every epoch" if workers else "-",
                _epoch_times(args.epochs, sampler.set_epoch, lambda loader=loader: loader))
            if workers:
                kept = build_dataloader(train, 8, sampler, workers, persistent_workers=True)
                row("map-style folder", workers, "persistent_workers (the trainer's)",
                    _epoch_times(args.epochs, sampler.set_epoch, lambda kept=kept: kept))
    table("Epoch boundaries of the training loader", (
        "data", "num_workers", "setting", "median s per epoch", "median longest wait s",
        "median boundary s"), rows,
        [f"{len(files)} FLAC files of librispeech-mini train-clean-100, batch 8, crops of 4 s, "
         f"{args.epochs} epochs, medians over epochs 2-{args.epochs}; the stream is a 4-file "
         "Parquet copy (datasets' Parquet builder) read through StreamingAudioDataset.track, "
         "as the trainer does; the map-style folder through ShardedRandomSampler."],
        threads=args.threads, out=args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-s", type=float, default=4.0)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--epochs", type=int, default=4, help="--only epochs: epochs per setting")
    parser.add_argument("--only", choices=["augmentation", "wait", "recipe-batch", "epochs"],
                        default=None)
    parser.add_argument("--out", type=Path, default=None, help="append the tables to this file")
    args = parser.parse_args()
    quiet()
    if args.only in (None, "augmentation"):
        bench_augmentation(args)
    if args.only in (None, "wait"):
        bench_data_wait(args)
    if args.only in (None, "recipe-batch"):
        bench_recipe_batch(args)
    if args.only in (None, "epochs"):
        bench_epochs(args)


if __name__ == "__main__":
    main()
