"""The ``cache-teacher`` command: fill a distillation config's teacher cache ahead of training
(:func:`build_cache`) on one or several ``accelerate`` processes, resumable, with a progress bar;
:func:`main` is its command line.

Part of :mod:`robustdistill.teacher_cache`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence

import numpy as np

from ..audio import AudioError
from ..data.cropped import content_key
from ..processes import finish_processes
from .cache import TeacherFeatureCache
from .keys import cached_layers_of
from .store import entry_readable

logger = logging.getLogger(__package__)  # the package's logger: log lines keep their name


def _whole_utterance(dataset, position: int) -> np.ndarray | None:
    """The whole utterance at ``position`` (``(samples,)`` float32, 16 kHz), or None for unusable
    audio (NaN/Inf, silent, truncated), skipped through the dataset (logged once, named in its
    ``skipped``)."""
    try:
        return dataset.full_waveform(position)
    except AudioError as err:
        dataset._skip(dataset._name(dataset._sources[position]), err.reason, err)
        return None


def _left_to_build(cache: TeacherFeatureCache, dataset, share: Sequence[int],
                   chunk: int | None, acc) -> tuple[list[int], int, int]:
    """The first pass of a resumed multi-process :func:`build_cache` over one split: which of
    this process's ``share`` (dataset positions) lack an entry (whole: only headers are read;
    an unreadable one is built again), then every process's such positions shared out again,
    ``r, r + N, ...`` of them (by position alone, a build stopped after process 0 had finished
    its share would leave all the rest to process 1). A collective.

    Returns:
        ``(positions this process builds, entries found built, unusable audio items)``.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    left, found, bad = [], 0, 0
    for position in tqdm(share, desc="cache-teacher (what is built)",
                         disable=not acc.is_main_process):
        if (waveform := _whole_utterance(dataset, position)) is None:
            bad += 1
            continue
        key = content_key(waveform)
        paths = ([path for *_, path in cache.chunk_entries(key, len(waveform), chunk)]
                 if chunk else [cache.entry_path(key)])
        if all(entry_readable(path) for path in paths):
            found += len(paths)
        else:
            left.append(position)
    left = sorted(gather_object(left))
    return left[acc.process_index :: acc.num_processes], found, bad


def build_cache(cfg, *, splits: Sequence[str] = ("train", "validation"),
                limit: int | None = None) -> dict:
    """Fill the cache of a distillation config ahead of training (context utterance, or
    context crop with ``crop_starts: chunks``: every chunk of every utterance).

    Runs under ``accelerate``: process ``r`` of ``N`` builds items ``r, r + N, ...`` of each
    split; existing entries are skipped and an unreadable one (truncated, corrupt) is built
    again, so an interrupted build resumes where it stopped. A resumed build on several
    processes first finds what is left and shares that out evenly (:func:`_left_to_build`;
    by position alone, one process could be left with all of it); one process, or an empty
    cache, skips that pass (it would decode every item twice). On several processes it ends
    by destroying the process group (:func:`~robustdistill.processes.finish_processes`).

    Args:
        cfg: a :class:`~robustdistill.config.DistillConfig` with ``teacher_cache.dir`` set.
        splits: which datasets to cache.
        limit: at most this many items per split (for smoke tests).

    Returns:
        ``{"computed": int, "skipped": int (already cached), "unusable": int (audio that
        failed to decode: NaN/Inf, silent, truncated; each logged once), "path": str,
        "num_processes": int, "per_process": [{"computed", "skipped", "unusable"}, ...]}``:
        the counts summed over every process, and each process's own.

    Raises:
        ValueError: no cache dir, or context ``crop`` with ``crop_starts: frames`` (its
            entries depend on the random crops of training, so it can only be filled lazily).
        TypeError: a split whose dataset has no ``full_waveform`` (a streaming dataset).
    """
    from ..interrupts import note

    counts: dict[str, int] = {}  # this process's, for the line of an interrupt
    with note(lambda: _interrupt_note(cfg, counts)):
        return _build_cache(cfg, splits, limit, counts)


def _interrupt_note(cfg, counts: dict[str, int]) -> str:
    """What an interrupted ``cache-teacher`` says (:func:`robustdistill.interrupts.note`): the
    entries this process wrote, and that the same command builds only the rest."""
    from ..processes import launched_processes

    whose = " by process 0" if launched_processes() > 1 else ""  # the one that prints
    written = (f"after {counts['computed']} new entries{whose} ({counts['skipped']} were "
               "there)" if counts else "while starting")
    return (f"{written}; every entry complete in {cfg.teacher_cache.dir} stays (each is "
            "written whole): the same command builds the rest")


def _build_cache(cfg, splits: Sequence[str], limit: int | None,
                 counts: dict[str, int]) -> dict:
    """:func:`build_cache`; ``counts`` holds this process's entries computed and skipped so
    far."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from ..data import build_datasets
    from ..nonfinite import any_process
    from ..objectives import build_objective
    from ..teachers import load_teacher, prepare_teacher

    tc = cfg.teacher_cache
    if not tc.dir:
        raise ValueError("teacher_cache.dir is not set: nowhere to build the cache")
    if tc.context == "crop" and tc.crop_starts != "chunks":
        raise ValueError("teacher_cache.context crop with crop_starts frames is filled lazily "
                         "during training (its entries are random crops); prebuild context "
                         "utterance, or context crop with crop_starts chunks")
    # the run's own precision: one process may build the cache, then train (accelerate keeps
    # one state per process and refuses a second Accelerator with other settings)
    acc = Accelerator(cpu=cfg.training.cpu, mixed_precision=cfg.training.mixed_precision)
    with acc.main_process_first():  # make_teacher writes it, as distill does, on rank 0 first
        prepare_teacher(cfg.teacher, cfg.make_teacher)
    teacher = load_teacher(cfg)  # the run's teacher, Whisper frame placement included
    teacher.to(acc.device)
    layers = tc.layers
    if layers is None:
        # Only the teacher layers they read matter here; student widths are placeholders.
        objectives = [build_objective(name, teacher_hidden_size=teacher.hidden_size,
                                      teacher_num_layers=teacher.num_layers,
                                      student_hidden_size=teacher.hidden_size,
                                      student_conv_dim=teacher.conv_dim or 512, **options)
                      for name, options in cfg.objectives.items()]
        layers = cached_layers_of(objectives)
    cache = TeacherFeatureCache(tc.dir, teacher, layers, context=tc.context, dtype=tc.dtype,
                                missing="compute", crop_starts=tc.crop_starts,
                                max_utterance_s=tc.max_utterance_s)
    train_set, valid_set = build_datasets(cfg.data, cfg.seed)
    datasets = {"train": train_set, "validation": valid_set}
    computed = skipped = unusable = 0
    # A resumed build on several processes finds what is left first (a decode per item); one
    # process, or an empty cache, has an even share by position already. Agreed before any
    # process writes an entry (a collective: the first pass gathers).
    counts.update(computed=0, skipped=0)  # started: the teacher is loaded
    resumed = acc.num_processes > 1 and any_process(
        acc, next(cache.path.glob("*/*.safetensors"), None) is not None)
    for split in splits:
        dataset = datasets[split]
        if not hasattr(dataset, "full_waveform"):
            raise TypeError(f"{split}: {type(dataset).__name__} cannot be cached ahead "
                            "(no full_waveform: a streaming dataset?)")
        cache.check_utterance_lengths(dataset)
        count = len(dataset) if limit is None else min(limit, len(dataset))
        chunk = cache.chunk_samples(dataset) if tc.context == "crop" else None
        mine = range(acc.process_index, count, acc.num_processes)
        if resumed:
            mine, found, bad = _left_to_build(cache, dataset, mine, chunk, acc)
            skipped, unusable = skipped + found, unusable + bad
        bar = tqdm(mine, desc=f"cache-teacher {split}", disable=not acc.is_main_process)
        for position in bar:
            if (waveform := _whole_utterance(dataset, position)) is None:
                unusable += 1
                continue
            if tc.context == "crop":  # every chunk a training or validation crop can be
                made, total = cache.ensure_chunks(content_key(waveform), waveform, chunk)
                computed, skipped = computed + made, skipped + total - made
            elif cache.ensure(content_key(waveform), lambda w=waveform: w):
                computed += 1
            else:
                skipped += 1
            bar.set_postfix(computed=computed, skipped=skipped)
            counts.update(computed=computed, skipped=skipped)
    acc.wait_for_everyone()
    per_process = gather_object([{"computed": computed, "skipped": skipped,
                                  "unusable": unusable}])
    totals = {key: sum(p[key] for p in per_process) for key in per_process[0]}
    if acc.is_main_process:
        logger.info("teacher cache %s: %d computed, %d already there, %d unusable audio "
                    "(%d process(es))", cache.path, totals["computed"], totals["skipped"],
                    totals["unusable"], acc.num_processes)
    if acc.num_processes > 1:  # a rank exiting with its gloo process group alive can abort
        finish_processes(acc)  # ("terminate called without an active exception", CI 12-07)
    return {**totals, "path": str(cache.path), "num_processes": acc.num_processes,
            "per_process": per_process}


def main(argv: list[str]) -> int:
    """``robustdistill cache-teacher --config RECIPE [--section.key value ...]``.

    Fills ``teacher_cache.dir`` for the recipe's teacher, layers and data (both splits by
    default). Several processes: ``accelerate launch -m robustdistill.cli cache-teacher ...``.
    """
    from ..config import ConfigError, DistillConfig, load_config
    from ..config_reference import config_reference

    parser = argparse.ArgumentParser(
        prog="robustdistill cache-teacher", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Precompute the teacher's target layers into teacher_cache.dir (give it as "
                    "--teacher_cache.dir DIR). Every key of the distillation recipe can be "
                    "overridden as --section.key value; the keys, their types and defaults:",
        epilog=config_reference(DistillConfig))
    parser.add_argument("--config", help="distillation YAML recipe (teacher, data, objectives)")
    parser.add_argument("--splits", nargs="+", default=["train", "validation"],
                        choices=["train", "validation"],
                        help="which splits to cache (default: both)")
    parser.add_argument("--limit", type=int, default=None, help="at most N items per split")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
        result = build_cache(cfg, splits=args.splits, limit=args.limit)
    except (ConfigError, FileNotFoundError, ValueError, TypeError) as err:
        parser.error(str(err))
    if int(os.environ.get("RANK", "0")) == 0:  # one summary, the counts of every process
        print(json.dumps(result))
    return 0
