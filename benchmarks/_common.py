"""Helpers shared by the benchmarks: machine description, interleaved timing, tables.

Every benchmark measures what it compares in one process, interleaved (A, B, A, B, ...) and
reports medians, so a change of machine load during the run hits both sides alike; the ratio
is the figure, the absolute times depend on the machine and its load (recorded with each
table: ``os.getloadavg``).
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
WHISPER_DIR = SHARED / "models" / "whisper-tiny.en"
SPLIT = REPO / "runs" / "data"  # scripts/split_shared_data.sh


def quiet() -> None:
    """Warnings only, from us and from transformers; offline hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    """The 1/5/15-minute load averages, e.g. ``"load 3.1/2.4/1.9"``."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f}"


def machine(threads: int | None = None) -> str:
    """One line: date, CPU (or GPU), cores, torch threads, versions, load."""
    import transformers

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    device = (f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available()
              else f"CPU {cpu_name()}, {os.cpu_count()} cores")
    threads = torch.get_num_threads() if threads is None else threads
    return (f"{when}; {device}; {threads} torch thread(s); torch {torch.__version__}, "
            f"transformers {transformers.__version__}; {load()} when measured")


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                timer: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Times of each function, called in turn ``repeats`` times after ``warmup`` calls.

    ``timer``: wall clock by default; ``time.process_time`` gives the CPU time the process
    used (all its threads), which a busy shared machine does not inflate by descheduling.

    Returns:
        name -> list of ``repeats`` durations in seconds.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = timer()
            fn()
            times[name].append(timer() - start)
    return times


def items_for_steps(cfg, steps: int) -> int:
    """Synthetic utterances to generate so that ``steps`` optimizer steps of one run all fall
    in its first epoch with full batches (no epoch start, no short last batch among them).

    ``cfg``: a :class:`~robustdistill.config.DistillConfig` (its ``data.batch_size``,
    ``training.gradient_accumulation_steps`` and the validation hold-out of
    ``robustdistill/data/build.py``: ``min(max_validation_items, max(1, round(
    validation_fraction x n)), n - 1)`` of ``n`` items). Returns the smallest ``n`` leaving
    ``batch_size x gradient_accumulation_steps x steps`` training items.
    """
    data = cfg.data
    need = data.batch_size * cfg.training.gradient_accumulation_steps * steps
    n = need + 1
    while n - min(data.max_validation_items, max(1, round(data.validation_fraction * n)),
                  n - 1) < need:
        n += 1
    return n


def full_step_seconds(cfg) -> float:
    """Audio seconds of one optimizer step of full batches of full crops:
    ``batch_size x gradient_accumulation_steps x max_length_s`` (crop in whole samples)."""
    crop = round(cfg.data.max_length_s * 16_000) / 16_000
    return cfg.data.batch_size * cfg.training.gradient_accumulation_steps * crop


def check_full_steps(name: str, run, audio_seconds: list[float]) -> None:
    """Refuse a measurement whose steps were not all full and inside the first epoch.

    ``run``: a ``robustdistill.trainer._Run`` after its steps; ``audio_seconds``: the
    ``audio_seconds`` of the steps to check.

    Raises:
        RuntimeError: a step with less audio than :func:`full_step_seconds`, or the run
            started a second epoch (DataLoader workers re-created inside the measurement).
    """
    full = full_step_seconds(run.cfg)
    short = [round(float(s), 3) for s in audio_seconds if abs(float(s) - full) > 1e-6 * full]
    if short or run.progress.epoch:
        raise RuntimeError(
            f"{name}: the measured steps must be full batches of one epoch ({full:g} s of audio "
            f"each), got steps of {short or 'full size'} s and {run.progress.epoch} epoch "
            "start(s); generate more utterances (items_for_steps)")


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """``"median (min-max)"`` in seconds."""
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


def table(title: str, header: tuple[str, ...], rows: list[tuple], notes: list[str] = (),
          threads: int | None = None, out: Path | None = None) -> str:
    """A Markdown section: title, machine line (load averages when the table is printed, i.e.
    over the measurement), table, notes; printed and optionally appended to ``out``."""
    lines = [f"### {title}", "", f"Machine: {machine(threads)}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    lines += ["", *[f"- {n}" for n in notes], ""]
    text = "\n".join(lines)
    print(text, flush=True)
    if out is not None:
        with Path(out).open("a") as handle:
            handle.write(text + "\n")
    return text


def subset_folder(source: Path, count: int, dest: Path, pattern: str = "*.flac") -> Path:
    """A folder of symlinks to the first ``count`` files of ``source`` (sorted)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.rglob(pattern))[:count]:
        link = dest / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return dest
