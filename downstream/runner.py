"""One downstream run: encode once, train featurizer + head, select on dev, test every condition.

SUPERB protocol (Yang et al., arXiv:2105.01051) with a robustness matrix: the head is trained
on clean train audio, the head with the best dev metric is kept, and the test split is
evaluated once per condition (clean, noise at fixed SNRs, reverberation) with that head.

The upstream is frozen, so each (split, condition) is encoded once and its selected hidden
states are kept in memory (and, with ``disk_cache``, saved under ``OUT/cache/``); training
epochs never rerun the upstream. Everything random is seeded from ``seed``.

This module puts a run together and writes its results; the steps are modules of their own:
:mod:`downstream.options` (:class:`RunOptions`), :mod:`downstream.device` (the ``--device``
check), :mod:`downstream.decoding` (decoding the audio once), :mod:`downstream.encoding`
(encoding each split and condition once, the disk cache), :mod:`downstream.training` (training
and evaluating the head) and :mod:`downstream.head_file` (``head.pt``). ``RunOptions``,
``check_device``, ``save_head`` and ``load_head`` stay importable from here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from robustdistill.audio import SAMPLE_RATE
from robustdistill.config import check_model_path
from robustdistill.upstream import Upstream

from .base import Task, get_task, task_config_path
from .conditions import CLEAN, TestCorruptor, parse_conditions
from .config import load_config, to_dict
from .data import SPLITS, load_splits
from .decoding import decode_all
from .device import check_device
from .encoding import Encoder
from .fbank import FbankUpstream, is_fbank
from .featurizer import Featurizer
from .folders import check_evaluation_folder
from .head_file import load_head, save_head
from .intervals import interval_method, item_intervals
from .items import unscored_counts, write_items
from .options import RunOptions
from .results import write_outputs
from .seeds import aggregate_seeds
from .training import evaluate_head, format_metrics, train_head

logger = logging.getLogger(__name__)

__all__ = ["RunOptions", "check_device", "load_head", "run_evaluation", "run_seeds", "save_head",
           "test_set_hash"]

RESULTS_FORMAT = "robustdistill-downstream-results/1"


def run_evaluation(options: RunOptions) -> dict[str, Any]:
    """Run one task for one upstream and write ``results.json``, ``results.md`` and
    ``robustness.png`` to ``options.out``, and ``items/<condition>.jsonl``
    (:func:`~downstream.items.write_items`).

    results.json's ``unscored`` is ``{condition: {metric: count}}`` for every condition: the
    test items whose per-item record holds that metric as a non-finite value (a failed PESQ,
    an undefined SI-SDR...), which the metric's mean leaves out
    (:func:`~downstream.items.unscored_counts`; only counts above 0, ``{}`` when all scored).
    ``skipped_items`` counts, per split, the utterances that could not be decoded at all.

    ``options.out`` may hold an earlier run of the same task, label and upstream, which is
    replaced: per-item files of conditions this run does not test are removed with it, so
    every ``items/*.jsonl`` belongs to the results.json beside it (an earlier ``head.pt`` stays
    when ``evaluate_only`` loads another one). Any other results folder is refused
    (:func:`~downstream.folders.check_evaluation_folder`).

    Returns:
        The results dict (as written to results.json).

    Raises:
        ValueError / ConfigError: unknown task, bad config, unknown condition, a condition
            whose noise/RIR folder is missing, unusable splits, a device this torch cannot
            use (:func:`check_device`), ``bootstrap_resamples < 0``, an ``out`` that is a
            file or holds other results. All are raised before the upstream runs.
        FileNotFoundError: missing data, config, folders, upstream folder or head file (the
            last two before any audio is decoded).
        OSError: the upstream cannot be loaded (before any audio is decoded).
    """
    started = time.perf_counter()
    timing: dict[str, float] = {}
    check_device(options.device)
    if options.bootstrap_resamples < 0:
        raise ValueError("--bootstrap-resamples must be >= 0 (0: no intervals), got "
                         f"{options.bootstrap_resamples}")
    torch.manual_seed(options.seed)
    task_class, config_path, config = _load_task_config(options)
    label = config.label or options.label or options.task
    task = task_class(config, seed=options.seed)
    conditions = parse_conditions(options.conditions)
    corruptor = TestCorruptor.from_dirs(options.test_noise_dir, options.test_rir_dir, options.seed,
                                        options.test_rir_channels, options.test_rir_check)
    corruptor.check(conditions)
    if options.evaluate_only and not Path(options.evaluate_only).is_file():
        raise FileNotFoundError(f"head file not found: {options.evaluate_only}")
    out = check_evaluation_folder(options.out, options.task, label, options.upstream)
    out.mkdir(parents=True, exist_ok=True)

    # the upstream before the audio: a typo in its name costs seconds, not a decoding pass
    tic = time.perf_counter()
    if not is_fbank(options.upstream):
        check_model_path(options.upstream, "upstream",
                         "a folder written by save_pretrained (robustdistill export), or a hub id")
    upstream = (FbankUpstream() if is_fbank(options.upstream)
                else Upstream.from_pretrained(options.upstream, frozen=True)).to(options.device)
    timing["load_upstream_s"] = time.perf_counter() - tic

    splits = load_splits(config.data, options.seed)
    task.setup(splits)
    tic = time.perf_counter()
    waveforms, skipped = decode_all(splits, config.data.max_seconds)
    timing["decode_s"] = time.perf_counter() - tic
    featurizer = Featurizer(
        upstream.num_layers + 1,
        upstream.hidden_size,
        config.featurizer.layers,
        config.featurizer.layer_norm,
    ).to(options.device)
    task.frames_per_second = SAMPLE_RATE / upstream.samples_per_frame

    encoder = Encoder(task, upstream, featurizer, corruptor, waveforms, out, options)
    torch.manual_seed(options.seed)  # head initialisation independent of what ran before
    head = task.build_head(featurizer.output_size).to(options.device)
    tic = time.perf_counter()
    if options.evaluate_only:
        training = load_head(options.evaluate_only, task, featurizer, head, options)
    else:
        train_set = encoder.get("train", CLEAN)
        dev_set = encoder.get("dev", CLEAN)
        tic = time.perf_counter()
        training = train_head(task, featurizer, head, train_set, dev_set, options)
        del train_set, dev_set
        save_head(out / "head.pt", task, featurizer, head, training, options)
    timing["train_s"] = time.perf_counter() - tic

    metrics: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, list[float]]] = {}
    unscored: dict[str, dict[str, int]] = {}
    items_dir = out / "items"
    items_dir.mkdir(exist_ok=True)
    tic = time.perf_counter()
    for condition in tqdm(conditions, desc="conditions", leave=False):
        test_set = encoder.get("test", condition)
        metrics[condition.name] = evaluate_head(task, featurizer, head, test_set, options)
        items = task.items()
        write_items(items_dir / f"{condition.name}.jsonl", items)
        intervals[condition.name] = item_intervals(
            type(task), [items], metrics[condition.name], options.bootstrap_resamples,
            options.seed)
        unscored[condition.name] = unscored_counts(items, metrics[condition.name])
        for metric, count in unscored[condition.name].items():
            logger.warning("%s: %s could not be scored on %d of %d test %ss (left out of its "
                           "mean; counted in results.json 'unscored')", condition.name, metric,
                           count, len(items), task.item_unit)
        logger.info("test %-12s %s", condition.name, format_metrics(metrics[condition.name]))
        del test_set
    timing["test_s"] = time.perf_counter() - tic
    timing.update(encoder.timing)
    timing["total_s"] = time.perf_counter() - started

    results = {
        "format": RESULTS_FORMAT,
        "task": options.task,
        "upstream": options.upstream,
        "upstream_info": {
            "model_type": upstream.config.model_type,
            "num_layers": upstream.num_layers,
            "hidden_size": upstream.hidden_size,
            "parameters": sum(p.numel() for p in upstream.parameters()),
        },
        "label": label,
        "primary_metric": task.primary_metric,
        "higher_is_better": task.higher_is_better,
        "conditions": [c.name for c in conditions],
        "metrics": metrics,
        "intervals": intervals,
        "interval_method": interval_method(type(task), options.bootstrap_resamples),
        "item_unit": task.item_unit,
        "resample_unit": task.resample_unit,
        "items_dir": "items",
        "evaluate_only": options.evaluate_only,
        "dev": training,
        "featurizer": {
            "layers": featurizer.layers,
            "layer_norm": featurizer.layer_norm,
            "weights": featurizer.layer_weights(),
        },
        "task_summary": task.summary(),
        "num_items": {s: len(waveforms[s]) for s in SPLITS},
        "test_set_sha1": test_set_hash([u.key for u, _ in waveforms["test"]], options.seed,
                                       [c.name for c in conditions], corruptor.fingerprint()),
        "corruption_sha1": corruptor.fingerprint(),
        "skipped_items": skipped,
        "unscored": unscored,
        "seed": options.seed,
        "device": options.device,
        "config_path": str(config_path),
        "config": to_dict(config),
        "test_noise_dir": options.test_noise_dir,
        "test_rir_dir": options.test_rir_dir,
        "test_rir_channels": options.test_rir_channels,
        "test_rir_check": options.test_rir_check,
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "versions": _versions(),
    }
    write_outputs([results], out)
    _remove_stale_items(items_dir, results["conditions"])
    logger.info("wrote %s", out / "results.json")
    return results


def _load_task_config(options: RunOptions) -> tuple[type[Task], Path, Any]:
    """``(task class, config path, config)`` of a run: the task's YAML with the overrides.

    Raises:
        ValueError / ConfigError / FileNotFoundError: unknown task, missing or bad config.
    """
    task_class = get_task(options.task)
    config_path = task_config_path(options.task, options.config)
    return task_class, config_path, load_config(config_path, task_class.config_class,
                                                options.overrides)


def _remove_stale_items(items_dir: Path, conditions: list[str]) -> None:
    """Delete ``items_dir/*.jsonl`` of conditions not in ``conditions`` (an earlier run's, which
    the new results.json does not describe)."""
    if not items_dir.is_dir():
        return
    for path in sorted(items_dir.glob("*.jsonl")):
        if path.stem not in conditions:
            path.unlink()
            logger.info("removed %s: an earlier run's per-item results, of a condition this run "
                        "did not test", path)


def test_set_hash(keys: list[str], seed: int, conditions: list[str], corruption: str) -> str:
    """SHA-1 identifying a test set: the test utterance keys (in order), the seed (it draws the
    split, the noise segments and rooms), the condition names and the corruption fingerprint
    (:meth:`~downstream.conditions.TestCorruptor.fingerprint`: noise / RIR file names and
    samples, and the RIR channel mode). Two runs with equal hashes heard identical test audio."""
    text = "\n".join([f"seed={seed}", f"conditions={','.join(conditions)}",
                      f"corruption={corruption}", *keys])
    return hashlib.sha1(text.encode()).hexdigest()


# ---------------------------------------------------------------------------- several seeds
def run_seeds(options: RunOptions, seeds: list[int]) -> dict[str, Any]:
    """Run :func:`run_evaluation` once per seed into ``OUT/seed<N>/`` and write the aggregate
    (mean and standard deviation over seeds, stratified-bootstrap intervals of the mean) to
    ``OUT/results.json``; see :func:`downstream.seeds.aggregate_seeds`.

    ``OUT`` and every ``OUT/seed<N>/`` are checked as :func:`run_evaluation` checks its folder
    before the first seed runs; ``OUT/items/`` of an earlier single run there is removed once
    the aggregate is written (seed folders of an earlier ``--seeds`` run that this one does not
    list are kept).

    Raises:
        ValueError: fewer than one seed or repeated seeds; as :func:`run_evaluation`.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds needs distinct seeds, got {seeds}")
    _check_seed_folders(options, seeds)
    runs = []
    for seed in seeds:
        sub = dataclasses.replace(options, seed=seed, out=str(Path(options.out) / f"seed{seed}"))
        if options.evaluate_only:
            sub.evaluate_only = options.evaluate_only.replace("{seed}", str(seed))
        runs.append(run_evaluation(sub))
    merged = aggregate_seeds(runs, [Path(options.out) / f"seed{s}" for s in seeds],
                             options.bootstrap_resamples)
    write_outputs([merged], options.out)
    _remove_stale_items(Path(options.out) / "items", [])  # a single run's, written there before
    return merged


def _check_seed_folders(options: RunOptions, seeds: list[int]) -> None:
    """Before the first seed runs: the device, and ``OUT`` and every ``OUT/seed<N>/`` as
    :func:`run_evaluation` checks its folder (a refusal at the last seed would lose the others'
    work).

    Raises:
        ValueError / ConfigError / FileNotFoundError: as :func:`check_device`,
            :func:`_load_task_config` and :func:`~downstream.folders.check_evaluation_folder`.
    """
    check_device(options.device)
    _, _, config = _load_task_config(options)
    label = config.label or options.label or options.task
    for folder in [options.out, *(Path(options.out) / f"seed{s}" for s in seeds)]:
        check_evaluation_folder(folder, options.task, label, options.upstream)


def _versions() -> dict[str, str]:
    import transformers

    import robustdistill

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "robustdistill": getattr(robustdistill, "__version__", "unknown"),
    }
