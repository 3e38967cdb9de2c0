"""Configs (typos are errors), data sources, splits, subsampling and test conditions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from downstream.base import get_task
from downstream.conditions import TestCorruptor, parse_condition, parse_conditions
from downstream.config import ConfigError, load_config
from downstream.data import (
    DataConfig,
    SourceConfig,
    SplitConfig,
    load_source,
    load_splits,
    subsample,
)
from robustdistill.augment import NoiseBank, RirBank

TASKS = Path(__file__).resolve().parents[1] / "downstream" / "tasks"


def _write(path: Path, seconds: float = 0.1, sr: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(seconds * sr), 0.1, np.float32), sr)


@pytest.mark.parametrize("task, config", [
    ("utterance_classification", "kws_fsdd.yaml"),
    ("utterance_classification", "sid_librispeech.yaml"),
    ("speaker_verification", "sv_librispeech.yaml"),
])
def test_shipped_configs_load(task, config):
    cls = get_task(task)
    cfg = load_config(TASKS / task / config, cls.config_class)
    assert cfg.data.source.pattern


def test_config_typo_names_the_key(tmp_path):
    cls = get_task("utterance_classification")
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  source: {root: x}\ntraining:\n  stpes: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'training\.stpes'.*'training\.steps'"):
        load_config(path, cls.config_class)
    path.write_text("data:\n  source: {root: x, patern: y}\n")
    with pytest.raises(ConfigError, match=r"data\.source\.patern"):
        load_config(path, cls.config_class)
    path.write_text("data:\n  source: {root: x}\ntraining: {steps: many}\n")
    with pytest.raises(ConfigError, match=r"training\.steps: expected int"):
        load_config(path, cls.config_class)
    path.write_text("data:\n  source: {root: x, manifest: y.csv}\n")
    with pytest.raises(ConfigError, match="exactly one of root, manifest, dataset"):
        load_config(path, cls.config_class)


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")


def test_labels_from_file_names_and_folders(tmp_path):
    for name in ("3_alice_0.wav", "7_bob_12.wav", "notes_x.wav"):
        _write(tmp_path / "fsdd" / name)
    items = load_source(SourceConfig(root=str(tmp_path / "fsdd"),
                                     pattern=r"(?P<label>\d)_(?P<speaker>[a-z]+)_\d+\.wav$"))
    assert [(u.key, u.label, u.speaker) for u in items] == [
        ("3_alice_0.wav", "3", "alice"), ("7_bob_12.wav", "7", "bob")]  # non-matching skipped
    for spk in ("1688", "1998"):
        _write(tmp_path / "ls" / spk / f"{spk}-1-0.flac", sr=16000)
    items = load_source(SourceConfig(root=str(tmp_path / "ls"), pattern=r"^(?P<speaker>[^/]+)/",
                                     label_group="speaker"))
    assert [(u.label, u.speaker) for u in items] == [("1688", "1688"), ("1998", "1998")]


def test_manifest_csv_and_json(tmp_path):
    _write(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("path,label,speaker\na.wav,yes,s1\n")
    (u,) = load_source(SourceConfig(manifest=str(tmp_path / "m.csv")))
    assert (u.label, u.speaker, u.audio) == ("yes", "s1", str(tmp_path / "a.wav"))
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav", "label": "no"}\n')
    (u,) = load_source(SourceConfig(manifest=str(tmp_path / "m.jsonl")))
    assert (u.label, u.speaker) == ("no", None)


def _corpus(tmp_path: Path) -> str:
    for spk in ("a", "b", "c", "d", "e", "f"):
        for label in range(3):
            for take in range(2):
                _write(tmp_path / "c" / f"{label}_{spk}_{take}.wav")
    return str(tmp_path / "c")


def test_speaker_disjoint_split(tmp_path):
    source = SourceConfig(root=_corpus(tmp_path), pattern=r"(?P<label>\d)_(?P<speaker>\w)_\d")
    splits = load_splits(DataConfig(source, split=SplitConfig("speaker", ["e"], ["f"])), seed=0)
    speakers = {k: {u.speaker for u in v} for k, v in splits.items()}
    assert speakers == {"train": {"a", "b", "c", "d"}, "dev": {"e"}, "test": {"f"}}
    frac = load_splits(DataConfig(source, split=SplitConfig("speaker", 0.2, 0.2)), seed=3)
    spk = {k: {u.speaker for u in v} for k, v in frac.items()}
    assert len(spk["dev"]) == len(spk["test"]) == 1 and len(spk["train"]) == 4
    assert not (spk["train"] & spk["dev"] or spk["train"] & spk["test"] or spk["dev"] & spk["test"])
    with pytest.raises(ValueError, match="unknown speakers"):
        load_splits(DataConfig(source, split=SplitConfig("speaker", ["zz"], ["f"])), seed=0)


def test_item_split_is_stratified_and_subsample_balanced(tmp_path):
    source = SourceConfig(root=_corpus(tmp_path), pattern=r"(?P<label>\d)_(?P<speaker>\w)_\d")
    splits = load_splits(DataConfig(source, split=SplitConfig("item", 0.25, 0.25)), seed=0)
    for name, n in (("train", 6), ("dev", 3), ("test", 3)):  # per label 12 items: 6/3/3
        labels = [u.label for u in splits[name]]
        assert sorted(labels) == sorted(["0", "1", "2"] * n)
    items = splits["train"]
    picked = subsample(items, 6, seed=1)
    assert sorted(u.label for u in picked) == ["0", "0", "1", "1", "2", "2"]
    assert subsample(items, 6, seed=1) == picked  # seeded
    limited = load_splits(DataConfig(source, split=SplitConfig("item", 0.25, 0.25),
                                     max_items_per_split={"train": 3}), seed=0)
    assert [len(limited[s]) for s in ("train", "dev", "test")] == [3, 9, 9]


def test_condition_names():
    assert parse_condition("snr-5").snr_db == -5.0
    assert parse_condition("SNR10").name == "snr10"
    both = parse_condition("reverb+snr5")
    assert both.reverb and both.snr_db == 5.0
    for bad in ("noisy", "snr", ""):
        with pytest.raises(ValueError, match=f"unknown condition '{bad}'; use clean, snr<dB>"):
            parse_condition(bad)
    with pytest.raises(ValueError, match="did you mean 'reverb\\+snr5'"):
        parse_condition("reverbsnr5")
    with pytest.raises(ValueError, match="duplicate"):
        parse_conditions(["clean", "clean"])


def test_corruption_is_seeded_per_utterance_and_exact():
    rng = np.random.default_rng(0)
    noise = NoiseBank((rng.standard_normal(4000).astype(np.float32),), ("n",))
    rirs = RirBank((np.array([1.0, 0.5], np.float32),), ("r",))
    clean = np.sin(np.arange(1600) / 5.0).astype(np.float32)
    one, two = TestCorruptor(noise, rirs, seed=7), TestCorruptor(noise, rirs, seed=7)
    cond = parse_condition("snr5")
    a, b = one.apply(clean, cond, "utt1"), two.apply(clean, cond, "utt1")
    np.testing.assert_array_equal(a, b)  # same seed, key, condition: identical audio
    assert not np.array_equal(a, one.apply(clean, cond, "utt2"))
    measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2)
                             / np.mean((a.astype(np.float64) - clean) ** 2))
    assert measured == pytest.approx(5.0, abs=1e-3)
    assert one.apply(clean, parse_condition("clean"), "utt1") is clean
    with pytest.raises(ValueError, match="--test-rir-dir"):
        TestCorruptor(noise, None).check([parse_condition("reverb")])
