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
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
WHISPER_DIR = SHARED / "models" / "whisper-tiny.en"
SPLIT = REPO / "runs" / "data"  # scripts/split_shared_data.sh

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


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
