"""One downstream run: encode once, train featurizer + head, select on dev, test every condition.

SUPERB protocol (Yang et al., arXiv:2105.01051) with a robustness matrix: the head is trained
on clean train audio, the head with the best dev metric is kept, and the test split is
evaluated once per condition (clean, noise at fixed SNRs, reverberation) with that head.

The upstream is frozen, so each (split, condition) is encoded once and its selected hidden
states are kept in memory (and, with ``disk_cache``, saved under ``OUT/cache/``); training
epochs never rerun the upstream. Everything random is seeded from ``seed``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustdistill.audio import SAMPLE_RATE, AudioError
from robustdistill.config import check_model_path
from robustdistill.files import atomic_path
from robustdistill.messages import first_line
from robustdistill.upstream import SSL_RECEPTIVE_FIELD, Upstream

from .base import (
    EncodedExample,
    Task,
    encode_examples,
    get_task,
    iterate_batches,
    padding_independent,
    task_config_path,
)
from .conditions import CLEAN, DEFAULT_CONDITIONS, Condition, TestCorruptor, parse_conditions
from .config import load_config, to_dict
from .data import SPLITS, Utterance, load_splits, load_waveform
from .fbank import FbankUpstream, is_fbank
from .featurizer import Featurizer, resolve_layers
from .folders import check_evaluation_folder
from .intervals import interval_method, item_intervals
from .items import unscored_counts, write_items
from .results import write_outputs
from .seeds import aggregate_seeds

logger = logging.getLogger(__name__)

__all__ = ["RunOptions", "check_device", "load_head", "run_evaluation", "run_seeds", "save_head",
           "test_set_hash"]

RESULTS_FORMAT = "robustdistill-downstream-results/1"


@dataclass
class RunOptions:
    """Everything that defines one run (the CLI's arguments).

    Attributes:
        task: task folder name (``utterance_classification``, ``speaker_verification``...).
        upstream: hub id or local folder of the upstream.
        config: the task's YAML config.
        out: output folder (created).
        conditions: test conditions (see :mod:`downstream.conditions`).
        test_noise_dir: noise recordings for ``snr*`` conditions.
        test_rir_dir: RIRs for ``reverb*`` conditions.
        test_rir_channels: ``"mean"`` (default, the published figures) down-mixes a
            multi-channel RIR file; ``"one"`` uses one channel per utterance's room
            (:meth:`~downstream.conditions.TestCorruptor.from_dirs`).
        test_rir_check: skip the ``test_rir_dir`` files that do not look like room impulse
            responses (default); False (``--no-test-rir-check``) keeps every readable file.
        seed: seeds data splits, subsampling, corruption, trials, head initialisation, batches.
        device: torch device for the upstream and the head.
        overrides: nested dict merged over the YAML config (``-o key=value``).
        evaluate_only: a ``head.pt`` written by an earlier run (same task, upstream, config
            and seed): skip training and test it on ``conditions`` (e.g. new ones).
        bootstrap_resamples: resamples of the per-item bootstrap intervals (0: none).
        label: task label used when the config sets none (the SUPERB name given as
            ``--task``, e.g. ``ks``).
    """

    task: str
    upstream: str
    config: str
    out: str
    conditions: list[str] = field(default_factory=lambda: list(DEFAULT_CONDITIONS))
    test_noise_dir: str | None = None
    test_rir_dir: str | None = None
    test_rir_channels: str = "mean"
    test_rir_check: bool = True
    seed: int = 0
    device: str = "cpu"
    overrides: dict[str, Any] | None = None
    evaluate_only: str | None = None
    bootstrap_resamples: int = 1000
    label: str | None = None


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
    waveforms, skipped = _decode_all(splits, config.data.max_seconds)
    timing["decode_s"] = time.perf_counter() - tic
    featurizer = Featurizer(
        upstream.num_layers + 1,
        upstream.hidden_size,
        config.featurizer.layers,
        config.featurizer.layer_norm,
    ).to(options.device)
    task.frames_per_second = SAMPLE_RATE / upstream.samples_per_frame

    encoder = _Encoder(task, upstream, featurizer, corruptor, waveforms, out, options)
    torch.manual_seed(options.seed)  # head initialisation independent of what ran before
    head = task.build_head(featurizer.output_size).to(options.device)
    tic = time.perf_counter()
    if options.evaluate_only:
        training = load_head(options.evaluate_only, task, featurizer, head, options)
    else:
        train_set = encoder.get("train", CLEAN)
        dev_set = encoder.get("dev", CLEAN)
        tic = time.perf_counter()
        training = _train(task, featurizer, head, train_set, dev_set, options)
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
        metrics[condition.name] = _evaluate(task, featurizer, head, test_set, options)
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
        logger.info("test %-12s %s", condition.name, _fmt(metrics[condition.name]))
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


def check_device(device: str) -> None:
    """Check, before any work, that torch can put a tensor on ``device``.

    Raises:
        ValueError: not a torch device name (``gpu``), or one this torch or machine cannot use
            (``cuda`` on a CPU-only torch or without a GPU, ``cuda:3`` with fewer GPUs, ``mps``
            off a Mac): one line naming the device, with torch's reason.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, "
                         "mps)") from None
    try:
        torch.zeros(1, device=parsed)  # allocates and runs a kernel: a bad ordinal fails here
    except (AssertionError, RuntimeError) as err:  # "Torch not compiled with CUDA enabled"...
        reason = first_line(err) or type(err).__name__
        reason = reason.split(". ")[0]  # torch's dispatcher lists every backend after this
        raise ValueError(f"--device {device!r} cannot be used here: {reason} (torch "
                         f"{torch.__version__}, CUDA available: {torch.cuda.is_available()}); "
                         "use --device cpu or a device this machine has") from None


def test_set_hash(keys: list[str], seed: int, conditions: list[str], corruption: str) -> str:
    """SHA-1 identifying a test set: the test utterance keys (in order), the seed (it draws the
    split, the noise segments and rooms), the condition names and the corruption fingerprint
    (:meth:`~downstream.conditions.TestCorruptor.fingerprint`: noise / RIR file names and
    samples, and the RIR channel mode). Two runs with equal hashes heard identical test audio."""
    text = "\n".join([f"seed={seed}", f"conditions={','.join(conditions)}",
                      f"corruption={corruption}", *keys])
    return hashlib.sha1(text.encode()).hexdigest()


# ---------------------------------------------------------------------------- the head file
def save_head(path: Path, task: Task, featurizer: Featurizer, head: nn.Module,
              training: dict[str, Any], options: RunOptions) -> None:
    """Save the selected (dev-best) featurizer + head with what identifies them (task, config,
    seed, upstream, task summary such as the class list), for ``--evaluate-only``. Written to a
    temporary name and renamed: a run killed while saving leaves the earlier ``head.pt`` whole."""
    payload = {
        "format": "robustdistill-downstream-head/1",
        "task": options.task,
        "upstream": options.upstream,
        "seed": options.seed,
        "config": to_dict(task.config),
        "task_summary": task.summary(),
        "training": training,
        "featurizer": featurizer.state_dict(),
        "head": head.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_head(path: str | Path, task: Task, featurizer: Featurizer, head: nn.Module,
              options: RunOptions) -> dict[str, Any]:
    """Load a :func:`save_head` file into ``featurizer`` and ``head``.

    Returns:
        The training record saved with it (best step, dev history).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable head file, another task, a different class / speaker list
            (the config or seed differ from the run that trained it), other settings of what
            the weights compute (:func:`_model_setting_differences`: featurizer layers or
            layer norm, head, STFT), or weights that do not fit ``featurizer`` and ``head``
            (another upstream or head config).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head file not found: {path}")
    try:
        saved = torch.load(path, map_location=options.device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, not a zip, a text file (KeyError)...
        raise ValueError(f"{path} cannot be read as a head file ({type(err).__name__}: "
                         f"{first_line(err)})") from err
    if not isinstance(saved, dict) or saved.get("format") != "robustdistill-downstream-head/1":
        raise ValueError(f"{path} is not a head saved by robustdistill evaluate")
    if saved["task"] != options.task:
        raise ValueError(f"{path} holds a {saved['task']!r} head, not {options.task!r}")
    summary = task.summary()
    for key in ("classes", "num_classes", "train_speakers", "alphabet"):
        if key in summary and summary[key] != saved["task_summary"].get(key):
            raise ValueError(f"{path}: its {key} differ from this run's (trained with another "
                             "config or seed?)")
    differences = _model_setting_differences(saved.get("config") or {}, to_dict(task.config),
                                             featurizer)
    if differences:
        raise ValueError(f"{path} was trained with other settings than this run's config: "
                         f"{'; '.join(differences)}; test it with the config it was trained with")
    if str(saved["upstream"]) != str(options.upstream):
        logger.warning("head %s was trained on upstream %s, evaluating on %s", path,
                       saved["upstream"], options.upstream)
    try:
        featurizer.load_state_dict(saved["featurizer"])
        head.load_state_dict(saved["head"])
    except RuntimeError as err:  # another upstream's layer count or width, another head shape
        raise ValueError(f"{path} does not fit this upstream and task config (trained on "
                         f"{saved['upstream']}; {first_line(err)})") from err
    return {**saved["training"], "loaded_from": str(path)}


#: Head settings of training only (speaker verification's AM-softmax, and its batch norm
#: statistics, which evaluation takes from the running ones either way): a head trained with
#: other values is tested the same way.
_TRAINING_ONLY_HEAD_KEYS = ("margin", "scale", "batch_norm")


def _model_setting_differences(saved: dict[str, Any], current: dict[str, Any],
                               featurizer: Featurizer) -> list[str]:
    """``"section.key (head's value, this run's)"`` for each setting that decides what a saved
    featurizer + head compute and differs between the head's training config ``saved`` and this
    run's ``current`` (:func:`~downstream.config.to_dict` form): the featurizer's layers (as
    indices into ``featurizer``'s hidden states) and layer norm, and every key of the ``head``
    and ``stft`` sections except those of training only (dropout; the AM-softmax ``margin``
    and ``scale`` of speaker verification, whose test scores the embeddings, and its
    ``batch_norm`` statistics mode, which evaluation does not use). Weights of the
    same shape loaded under other such settings give other numbers with no error."""
    differences = []
    feat = saved.get("featurizer") or {}
    try:
        layers = resolve_layers(feat.get("layers"), featurizer.num_hidden_states)
    except ValueError:
        layers = feat.get("layers")
    if layers != featurizer.layers:
        differences.append(f"featurizer.layers ({layers} in the head, {featurizer.layers} here)")
    if bool(feat.get("layer_norm", False)) != featurizer.layer_norm:
        differences.append(f"featurizer.layer_norm ({bool(feat.get('layer_norm', False))} in the "
                           f"head, {featurizer.layer_norm} here)")
    for section in ("head", "stft"):
        old, new = saved.get(section), current.get(section)
        if not (isinstance(old, dict) and isinstance(new, dict)):
            continue
        for key in sorted(set(old) | set(new)):
            if ("dropout" not in key and key not in _TRAINING_ONLY_HEAD_KEYS
                    and old.get(key) != new.get(key)):
                differences.append(f"{section}.{key} ({old.get(key)!r} in the head, "
                                   f"{new.get(key)!r} here)")
    return differences


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


# ---------------------------------------------------------------------------- decoding
def _decode_all(splits: dict[str, list[Utterance]], max_seconds: float | None):
    """Decode every utterance once; undecodable ones are skipped with a logged warning."""
    waveforms: dict[str, list[tuple[Utterance, np.ndarray]]] = {}
    skipped: dict[str, int] = {}
    for split in SPLITS:
        kept = []
        for utterance in tqdm(splits[split], desc=f"decode {split}", leave=False):
            try:
                waveform = load_waveform(utterance, max_seconds)
                if len(waveform) < SSL_RECEPTIVE_FIELD:  # no frame from an SSL encoder
                    raise AudioError(f"{utterance.key}: {len(waveform)} samples, shorter than "
                                     f"one encoder frame ({SSL_RECEPTIVE_FIELD})", "too short")
                kept.append((utterance, waveform))
            except AudioError as err:
                logger.warning("skipping %s: %s", utterance.key, err)
        skipped[split] = len(splits[split]) - len(kept)
        if not kept:
            raise ValueError(f"no usable audio in the {split} split")
        waveforms[split] = kept
    return waveforms, skipped


# ---------------------------------------------------------------------------- encoding + cache
class _Encoder:
    """Makes the examples of a (split, condition) and encodes them once (memory / disk)."""

    def __init__(self, task, upstream, featurizer, corruptor, waveforms, out: Path, options):
        self.task = task
        self.upstream = upstream
        self.featurizer = featurizer
        self.corruptor = corruptor
        self.waveforms = waveforms
        self.cache_dir = out / "cache" if task.config.disk_cache else None
        self.options = options
        self.dtype = getattr(torch, task.config.cache_dtype)
        self.timing: dict[str, float] = {}
        self._upstream_id = _upstream_fingerprint(options.upstream, upstream)
        mode = task.config.encode_padding
        single = mode == "single" or (mode == "auto" and not padding_independent(upstream))
        self.batch_size = 1 if single else task.config.encode_batch_size
        if single and mode == "auto":
            logger.info("upstream features depend on padding (group-norm CNN or no attention "
                        "mask): encoding one utterance at a time")

    def get(self, split: str, condition: Condition) -> list[EncodedExample]:
        """The encoded examples of ``split`` under ``condition``: from ``OUT/cache/`` when a
        readable file of the same examples is there (an unreadable one is logged and written
        again), else encoded now (and saved there with ``disk_cache``)."""
        examples = [
            self.task.make_example(utt, wave, split, condition, self.corruptor)
            for utt, wave in self.waveforms[split]
        ]
        path = self._cache_path(split, condition, examples)
        if path is not None and path.is_file():
            try:
                hidden = torch.load(path, weights_only=True)
            except Exception as err:  # noqa: BLE001 - cut, not a zip, other bytes (KeyError)
                # a cut or damaged file (a copy stopped halfway, a crash before it reached the
                # disk): a cache, so encoded again and written anew, not a failed run
                logger.warning("cached hidden states %s are unreadable (%s: %s): encoding "
                               "again", path, type(err).__name__, first_line(err))
                hidden = []
            if len(hidden) == len(examples):
                logger.info("reusing cached hidden states %s", path)
                return [EncodedExample(e, h) for e, h in zip(examples, hidden, strict=True)]
        tic = time.perf_counter()
        encoded = encode_examples(
            self.upstream, self.featurizer, examples, self.batch_size,
            self.dtype, self.options.device, desc=f"encode {split}/{condition.name}",
        )
        seconds = time.perf_counter() - tic
        self.timing[f"encode_{split}_{condition.name}_s"] = seconds
        self.timing.setdefault("encode_s_per_utterance", seconds / max(1, len(examples)))
        if path is not None:  # atomic: another process may read the cache
            with atomic_path(path) as tmp:
                torch.save([e.hidden for e in encoded], tmp)
        return encoded

    def _cache_path(self, split, condition, examples) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha1()
        rirs = self.options.test_rir_dir
        if self.options.test_rir_channels != "mean":  # "mean" keeps the keys of earlier caches
            rirs = (rirs, self.options.test_rir_channels)
        for part in (
            self._upstream_id, self.task.name, split, condition.name, self.options.seed,
            self.featurizer.layers, self.task.config.cache_dtype,
            self.options.test_noise_dir, rirs, self.batch_size,
        ):
            digest.update(repr(part).encode())
        for e in examples:
            digest.update(e.key.encode())
            digest.update(hashlib.sha1(np.ascontiguousarray(e.waveform).tobytes()).digest())
        return self.cache_dir / f"{split}-{condition.name}-{digest.hexdigest()[:16]}.pt"


def _upstream_fingerprint(name: str, upstream: Upstream) -> str:
    """Identity of an upstream for the cache: its id, config and (for folders) weight files."""
    parts = [str(name), upstream.config.to_json_string()]
    path = Path(name)
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file():
                stat = f.stat()
                parts.append(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


# ---------------------------------------------------------------------------- training
def _features(task: Task, featurizer: Featurizer, encoded, batch_size: int, device: str
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
    for batch in iterate_batches(task, encoded, batch_size):
        yield featurizer(batch.hidden.to(device)), batch.frame_lengths.to(device), batch.examples


def _evaluate(task: Task, featurizer: Featurizer, head: nn.Module, encoded, options
              ) -> dict[str, float]:
    featurizer.eval()
    head.eval()
    with torch.no_grad():
        batch_size = task.config.training.eval_batch_size
        metrics = task.evaluate(head, _features(task, featurizer, encoded, batch_size,
                                                options.device))
    if task.primary_metric not in metrics:
        raise KeyError(f"{task.name}.evaluate() did not return {task.primary_metric!r}")
    return {k: float(v) for k, v in metrics.items()}


def _optimizer(task: Task, featurizer: Featurizer, head: nn.Module) -> torch.optim.Optimizer:
    cfg = task.config.training
    decay = [p for p in head.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in head.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": list(featurizer.parameters()), "weight_decay": 0.0,
         "lr": cfg.learning_rate if cfg.featurizer_learning_rate is None
         else cfg.featurizer_learning_rate},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate)


def _better(task: Task, value: float, best: float | None) -> bool:
    """Whether a dev metric beats the best so far. A NaN (e.g. a PESQ that failed on every dev
    utterance) never wins, but it never locks selection either: the first finite value after
    a NaN replaces it."""
    if not np.isfinite(value):
        return best is None
    if best is None or not np.isfinite(best):
        return True
    return value > best if task.higher_is_better else value < best


def _train(task: Task, featurizer: Featurizer, head: nn.Module, train_set, dev_set, options
           ) -> dict[str, Any]:
    """AdamW on featurizer weights + head for ``training.steps`` steps; keep the best dev head
    (a later evaluation replaces it only when strictly better, as s3prl's ``>``: on a tie the
    earlier head stays).

    Returns:
        ``{"best_step", "best_metric", "history": [{"step", "train_loss", <dev metrics>}]}``;
        the featurizer and head are left holding the selected (best dev) state.
    """
    cfg = task.config.training
    rng = np.random.default_rng(options.seed)
    optimizer = _optimizer(task, featurizer, head)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def batches():
        while True:
            yield from iterate_batches(task, train_set, cfg.batch_size, train=True, rng=rng)

    stream = batches()
    history, losses = [], []
    best_metric, best_step, best_state = None, 0, None
    bar = tqdm(range(1, cfg.steps + 1), desc=f"train {task.name}", leave=False)
    for step in bar:
        featurizer.train()
        head.train()
        batch = next(stream)
        features = featurizer(batch.hidden.to(options.device))
        loss = task.training_loss(head, features, batch.frame_lengths.to(options.device),
                                  batch.examples)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {step}: {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            dev = _evaluate(task, featurizer, head, dev_set, options)
            history.append({"step": step, "train_loss": float(np.mean(losses)), **dev})
            losses = []
            logger.info("step %d dev %s", step, _fmt(dev))
            if _better(task, dev[task.primary_metric], best_metric):
                best_metric, best_step = dev[task.primary_metric], step
                best_state = (copy.deepcopy(featurizer.state_dict()),
                              copy.deepcopy(head.state_dict()))
    if best_state is not None:
        featurizer.load_state_dict(best_state[0])
        head.load_state_dict(best_state[1])
    return {"best_step": best_step, "best_metric": best_metric, "history": history}


def _fmt(metrics: dict[str, float]) -> str:
    return json.dumps({k: round(v, 4) for k, v in metrics.items()})


def _versions() -> dict[str, str]:
    import transformers

    import robustdistill

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "robustdistill": getattr(robustdistill, "__version__", "unknown"),
    }
