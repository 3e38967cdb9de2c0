"""Downstream data: utterance lists from local folders, manifests or ``datasets``, and splits.

Labels come from

* file or folder names: a regular expression with named groups, matched against the path
  relative to the source root (``/`` separators). FSDD's ``{digit}_{speaker}_{take}.wav`` is
  ``(?P<label>\\d)_(?P<speaker>[a-z]+)_\\d+\\.wav$``; LibriSpeech ``test-other/<speaker>/x.flac``
  is ``^(?P<speaker>[^/]+)/``;
* a CSV (header row) or JSON / JSON-lines manifest with columns ``path``, ``label`` and
  optionally ``speaker`` and ``text`` (relative paths are relative to the manifest's folder);
* a ``datasets`` dataset (``load_from_disk`` folder or hub name), its audio column read without
  ``datasets``' decoder (``Audio(decode=False)``; the bytes go through
  :func:`robustdistill.audio.load_audio`).

Splits are speaker-disjoint (``split.by: speaker``) where a task needs it (keyword spotting on
FSDD; speaker verification: test speakers unseen in training), or per item, stratified by label
(speaker identification). ``max_items_per_split`` subsamples each split, balanced over labels
and seeded, so CPU runs stay short. Relative paths in configs are relative to the working
directory (run from the repository root).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from robustdistill.audio import SAMPLE_RATE, list_audio_files, load_audio

logger = logging.getLogger(__name__)

__all__ = [
    "SPLITS",
    "DataConfig",
    "SourceConfig",
    "SplitConfig",
    "Utterance",
    "check_speaker_disjoint",
    "load_source",
    "load_splits",
    "load_waveform",
    "subsample",
]

#: The three splits of the SUPERB protocol.
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Utterance:
    """One audio item before decoding.

    Attributes:
        key: unique, stable id (path relative to the source root, or ``dataset:<row>``); used
            to seed per-utterance corruption, so it must not depend on the machine.
        audio: a file path, or the encoded file's bytes (``datasets`` rows).
        label: class label (keyword, speaker, intent...), or None.
        speaker: speaker id, or None.
        text: transcript, or None.
    """

    key: str
    audio: str | bytes = field(repr=False)
    label: str | None = None
    speaker: str | None = None
    text: str | None = None


@dataclass
class SourceConfig:
    """Where utterances come from (exactly one of ``root``, ``manifest``, ``dataset``).

    Attributes:
        root: folder scanned recursively for audio files (.wav .flac .ogg .mp3).
        pattern: regex searched in the path relative to ``root``; named groups give the
            label and speaker. Files that do not match are skipped with a logged warning.
        label_group: the group that holds the label (``speaker`` for speaker identification).
        speaker_group: the group that holds the speaker id.
        manifest: CSV / JSON / JSON-lines file with ``path``, ``label`` [, ``speaker``, ``text``]
            (other column names: ``label_column`` / ``speaker_column`` / ``text_column``). A JSON
            object holding one list (s3prl's IEMOCAP ``{"labels": [...]}``) is read as that list.
        audio_root: folder that relative manifest paths are relative to (default: the
            manifest's folder; Fluent Speech Commands: the dataset root).
        dataset: a ``datasets`` folder (``save_to_disk``) or hub name.
        dataset_split: split of ``dataset`` to read.
        audio_column / label_column / speaker_column / text_column: ``dataset`` columns
            (``speaker_column`` / ``text_column`` may be absent from the dataset); for
            manifests, ``label_column`` may join several columns with ``+`` (Fluent Speech
            Commands intents: ``action+object+location`` gives labels ``"activate|lights|none"``).

    Raises:
        ValueError: (on construction) not exactly one of ``root``, ``manifest``, ``dataset``
            given, or a ``pattern`` that is not a valid regular expression.
    """

    root: str | None = None
    pattern: str | None = None
    label_group: str = "label"
    speaker_group: str = "speaker"
    manifest: str | None = None
    dataset: str | None = None
    dataset_split: str = "train"
    audio_column: str = "audio"
    label_column: str = "label"
    speaker_column: str = "speaker"
    text_column: str = "text"
    audio_root: str | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("root", "manifest", "dataset") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a data source needs exactly one of root, manifest, dataset; got {given or 'none'}"
            )
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise ValueError(f"invalid source pattern {self.pattern!r}: {err}") from err


@dataclass
class SplitConfig:
    """How a source is cut into train / dev / test.

    Attributes:
        by: ``speaker`` (speaker-disjoint splits) or ``item`` (stratified by label).
        dev: fraction of speakers (``by: speaker``) or of each label's items (``by: item``)
            for dev, or an explicit list of dev speakers.
        test: the same for test. With ``DataConfig.train_source`` set, the source only gives
            dev and test: ``dev`` is taken first and everything else is test.
    """

    by: Literal["speaker", "item"] = "item"
    dev: float | list[str] = 0.1
    test: float | list[str] = 0.1


@dataclass
class DataConfig:
    """The data of one downstream task.

    Attributes:
        source: the main source, cut into splits by ``split``.
        train_source: optional separate training source (e.g. ``train-clean-100`` speakers
            for speaker verification); then ``source`` gives only dev and test.
        dev_source / test_source: optional official dev / test lists (Fluent Speech Commands'
            ``valid_data.csv`` / ``test_data.csv``; IEMOCAP's held-out session). With all three
            explicit sources ``source`` is not read (set it to the training source); with only
            ``test_source``, ``source`` gives train and dev (``split.dev``).
        split: see :class:`SplitConfig`.
        max_items_per_split: keep at most this many items per split (balanced over labels,
            seeded): one number for every split, or per split (``{train: 60, test: 10}``;
            splits not named keep all); None keeps all. A mapping given with ``-o`` replaces
            the config's, as in a YAML file (``-o 'data.max_items_per_split={train: 40}'``
            over ``{train: 100, dev: 50, test: 50}`` gives ``{train: 40}``); a dotted key
            changes one split (``-o data.max_items_per_split.train=40`` gives ``{train: 40,
            dev: 50, test: 50}``).
        max_seconds: crop each utterance to its first ``max_seconds`` seconds (None: no crop).

    Raises:
        ValueError: (on construction) ``max_seconds`` not a finite number above 0 (0 left
            every utterance one sample long: "no usable audio" named no setting).
    """

    source: SourceConfig
    train_source: SourceConfig | None = None
    dev_source: SourceConfig | None = None
    test_source: SourceConfig | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    max_items_per_split: int | dict[str, int] | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_seconds is not None and not (
                isinstance(self.max_seconds, int | float) and math.isfinite(self.max_seconds)
                and self.max_seconds > 0):
            raise ValueError(f"data.max_seconds must be a number of seconds above 0 (or null: "
                             f"no crop), got {self.max_seconds!r}")


# ---------------------------------------------------------------------------- reading sources
def load_source(config: SourceConfig) -> list[Utterance]:
    """All utterances of one source, in a deterministic order.

    Raises:
        FileNotFoundError: missing folder / manifest, or a folder without audio.
        ValueError: no file matched the pattern, or a malformed manifest.
    """
    if config.root is not None:
        return _from_folder(config)
    if config.manifest is not None:
        return _from_manifest(Path(config.manifest), config)
    return _from_dataset(config)


def _as_text(name: str) -> str:
    """``name`` with the bytes of a file name that are not UTF-8 (Python's surrogate escapes)
    written as ``\\xff`` text: keys, labels and speakers are hashed, written to JSON and
    matched as UTF-8 text, where a surrogate raised ``UnicodeEncodeError`` once the head was
    trained (the file itself is opened by its real path)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _from_folder(config: SourceConfig) -> list[Utterance]:
    root = Path(config.root)
    pattern = re.compile(config.pattern) if config.pattern else None
    utterances, skipped = [], []
    for path in list_audio_files(root):
        rel = _as_text(path.relative_to(root).as_posix() if root.is_dir() else path.name)
        groups: dict[str, str] = {}
        if pattern is not None:
            match = pattern.search(rel)
            if match is None:
                skipped.append(rel)
                continue
            groups = {k: v for k, v in match.groupdict().items() if v is not None}
        utterances.append(
            Utterance(
                key=rel,
                audio=str(path),
                label=groups.get(config.label_group),
                speaker=groups.get(config.speaker_group),
                text=groups.get("text"),
            )
        )
    if skipped:
        logger.warning("%s: %d files do not match pattern %r and are skipped (first: %s)",
                       root, len(skipped), config.pattern, skipped[0])
    if not utterances:
        raise ValueError(f"{root}: no audio file matches pattern {config.pattern!r}")
    return utterances


def _from_manifest(path: Path, config: SourceConfig | None = None) -> list[Utterance]:
    config = config or SourceConfig(manifest=str(path))
    root = Path(config.audio_root) if config.audio_root else path.parent
    label_cols = config.label_column.split("+")
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    text = path.read_text()
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    elif path.suffix.lower() in (".json", ".jsonl"):
        stripped = text.lstrip()
        if stripped.startswith("["):
            rows = json.loads(text)
        elif _single_json_object(stripped):
            data = json.loads(text)
            lists = [v for v in data.values() if isinstance(v, list)]
            rows = lists[0] if len(lists) == 1 and "path" not in data else [data]
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        raise ValueError(f"{path}: manifest must be .csv, .json or .jsonl")
    utterances = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("path"):
            raise ValueError(f"{path}: row {i} has no 'path'")
        audio = Path(row["path"])
        if not audio.is_absolute():
            audio = root / audio
        parts = [_str_or_none(row.get(c)) for c in label_cols]
        missing = [c for c, p in zip(label_cols, parts, strict=True) if p is None]
        label = None if len(label_cols) > 1 and len(missing) == len(label_cols) else (
            "|".join(p or "" for p in parts) if len(label_cols) > 1 else parts[0])
        if len(label_cols) > 1 and missing and len(missing) < len(label_cols):
            raise ValueError(f"{path}: row {i} lacks label columns {missing}")
        utterances.append(
            Utterance(
                key=str(row["path"]),
                audio=str(audio),
                label=label,
                speaker=_str_or_none(row.get(config.speaker_column)),
                text=_str_or_none(row.get(config.text_column)),
            )
        )
    if not utterances:
        raise ValueError(f"{path}: empty manifest")
    return utterances


def _single_json_object(text: str) -> bool:
    """Whether ``text`` is one JSON object (not JSON lines)."""
    if not text.startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _str_or_none(value) -> str | None:
    return None if value is None or value == "" else str(value)


def _from_dataset(config: SourceConfig) -> list[Utterance]:
    import datasets  # optional path: imported only when used

    if Path(config.dataset).is_dir():
        ds = datasets.load_from_disk(config.dataset)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[config.dataset_split]
    else:
        ds = datasets.load_dataset(config.dataset, split=config.dataset_split)
    if config.audio_column not in ds.column_names:
        raise ValueError(f"{config.dataset}: no audio column {config.audio_column!r}")
    ds = ds.cast_column(config.audio_column, datasets.Audio(decode=False))
    columns = set(ds.column_names)
    utterances = []
    for i, row in enumerate(ds):
        audio = row[config.audio_column]
        data = audio.get("bytes") or audio.get("path")
        if data is None:
            raise ValueError(f"{config.dataset}: row {i} has neither audio bytes nor a path")

        def col(name, _row=row):
            return _str_or_none(_row[name]) if name in columns else None

        utterances.append(
            Utterance(
                key=f"{config.dataset}:{config.dataset_split}:{i}",
                audio=data,
                label=col(config.label_column),
                speaker=col(config.speaker_column),
                text=col(config.text_column),
            )
        )
    return utterances


def load_waveform(utterance: Utterance, max_seconds: float | None = None) -> np.ndarray:
    """Decode an utterance to ``(samples,)`` float32 mono at 16 kHz, cropped to its first
    ``max_seconds`` seconds when given.

    Raises:
        robustdistill.audio.AudioError: unreadable, empty, non-finite or silent audio, or a
            corrupt float file (a sample beyond :data:`robustdistill.audio.MAX_PEAK`).
    """
    waveform = load_audio(utterance.audio, SAMPLE_RATE)
    if max_seconds is not None:
        waveform = waveform[: max(1, int(round(max_seconds * SAMPLE_RATE)))]
    return waveform


# ---------------------------------------------------------------------------- splitting
def load_splits(config: DataConfig, seed: int) -> dict[str, list[Utterance]]:
    """Read the sources and return ``{"train": [...], "dev": [...], "test": [...]}``.

    Raises:
        ValueError: a split comes out empty, a speaker split without speaker labels, or
            unknown speakers listed in ``split.dev`` / ``split.test``.
    """
    explicit = {name: cfg for name, cfg in (("train", config.train_source),
                                            ("dev", config.dev_source),
                                            ("test", config.test_source)) if cfg is not None}
    if len(explicit) == 3:
        splits = {name: load_source(cfg) for name, cfg in explicit.items()}
    elif set(explicit) == {"test"}:
        train, dev, _ = _cut(load_source(config.source), dataclasses.replace(config.split, test=0.0),
                             seed, with_train=True)
        splits = {"train": train, "dev": dev, "test": load_source(config.test_source)}
    elif set(explicit) == {"train"}:
        dev, test = _cut(load_source(config.source), config.split, seed, with_train=False)
        splits = {"train": load_source(config.train_source), "dev": dev, "test": test}
    elif not explicit:
        splits = dict(zip(SPLITS, _cut(load_source(config.source), config.split, seed,
                                       with_train=True), strict=True))
    else:
        raise ValueError(f"data: explicit sources for {sorted(explicit)} are not supported; give "
                         "train_source, test_source, or all of train/dev/test_source")
    limits = config.max_items_per_split
    if isinstance(limits, dict):
        unknown = sorted(set(limits) - set(SPLITS))
        if unknown:
            raise ValueError(f"data.max_items_per_split: unknown splits {unknown}")
    for name in SPLITS:
        limit = limits.get(name) if isinstance(limits, dict) else limits
        if limit is not None:
            splits[name] = subsample(splits[name], limit, seed)
        if not splits[name]:
            raise ValueError(f"the {name} split is empty; check data.split and the source")
    return splits


def _cut(items: list[Utterance], split: SplitConfig, seed: int, with_train: bool):
    if split.by == "speaker":
        return _cut_by_speaker(items, split, seed, with_train)
    return _cut_by_item(items, split, seed, with_train)


def _count(fraction: float, n: int, name: str) -> int:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split.{name} must be a fraction in [0, 1) or a list, got {fraction}")
    return 0 if fraction == 0 else max(1, round(fraction * n))


def _cut_by_speaker(items, split: SplitConfig, seed: int, with_train: bool):
    if any(u.speaker is None for u in items):
        raise ValueError("split.by: speaker needs a speaker for every utterance "
                         "(a 'speaker' group in the pattern or column in the manifest)")
    speakers = sorted({u.speaker for u in items})
    rng = random.Random(seed)
    shuffled = speakers[:]
    rng.shuffle(shuffled)
    chosen: dict[str, list[str]] = {}
    for name in ("dev", "test") if with_train else ("dev",):
        spec = getattr(split, name)
        if isinstance(spec, list):
            unknown = sorted(set(spec) - set(speakers))
            if unknown:
                raise ValueError(f"split.{name}: unknown speakers {unknown}")
            chosen[name] = list(spec)
        else:
            left = [s for s in shuffled if not any(s in c for c in chosen.values())]
            chosen[name] = left[: _count(spec, len(speakers), name)]
    taken = {s for c in chosen.values() for s in c}
    rest = [s for s in speakers if s not in taken]
    if with_train:
        groups = {"train": rest, "dev": chosen["dev"], "test": chosen["test"]}
    else:
        groups = {"dev": chosen["dev"], "test": rest}
    if with_train and set(chosen["dev"]) & set(chosen["test"]):
        raise ValueError("split.dev and split.test share speakers")
    logger.info("speaker-disjoint split: %s", {k: len(v) for k, v in groups.items()})
    out = [[u for u in items if u.speaker in set(groups[name])] for name in groups]
    return tuple(out)


def _cut_by_item(items, split: SplitConfig, seed: int, with_train: bool):
    if isinstance(split.dev, list) or isinstance(split.test, list):
        raise ValueError("speaker lists in split.dev / split.test need split.by: speaker")
    rng = random.Random(seed)
    by_label: dict[str | None, list[Utterance]] = defaultdict(list)
    for u in items:
        by_label[u.label].append(u)
    train, dev, test = [], [], []
    for label in sorted(by_label, key=str):
        group = by_label[label][:]
        rng.shuffle(group)
        n_dev = _count(split.dev, len(group), "dev")
        if with_train:
            n_test = _count(split.test, len(group), "test")
            dev += group[:n_dev]
            test += group[n_dev : n_dev + n_test]
            train += group[n_dev + n_test :]
        else:
            dev += group[:n_dev]
            test += group[n_dev:]
    order = {u.key: i for i, u in enumerate(items)}  # keep the source's order
    out = [sorted(s, key=lambda u: order[u.key]) for s in (train, dev, test)]
    return tuple(out) if with_train else (out[1], out[2])


def subsample(items: list[Utterance], max_items: int, seed: int) -> list[Utterance]:
    """At most ``max_items`` utterances, balanced over labels (round robin over shuffled
    per-label groups; speakers when there are no labels), seeded; source order is kept.

    Raises:
        ValueError: ``max_items < 1``.
    """
    if max_items < 1:
        raise ValueError(f"max_items_per_split must be >= 1, got {max_items}")
    if len(items) <= max_items:
        return items
    rng = random.Random(seed)
    groups: dict[str | None, list[Utterance]] = defaultdict(list)
    for u in items:
        groups[u.label if u.label is not None else u.speaker].append(u)
    queues = []
    for key in sorted(groups, key=str):
        group = groups[key][:]
        rng.shuffle(group)
        queues.append(group)
    picked: list[Utterance] = []
    while len(picked) < max_items:
        for queue in queues:
            if queue and len(picked) < max_items:
                picked.append(queue.pop())
    keep = {u.key for u in picked}
    return [u for u in items if u.key in keep]


def check_speaker_disjoint(splits: dict[str, list[Utterance]], a: str, b: str) -> None:
    """Raise ValueError naming the shared speakers if splits ``a`` and ``b`` share any."""
    shared = {u.speaker for u in splits[a]} & {u.speaker for u in splits[b]} - {None}
    if shared:
        raise ValueError(f"{a} and {b} splits share speakers {sorted(shared)[:10]}; "
                         "this task needs speaker-disjoint splits (split.by: speaker)")
