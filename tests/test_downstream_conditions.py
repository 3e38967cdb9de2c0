"""Mutation-testing additions for downstream.conditions and downstream.data: independent
noise and room streams, the silent-segment fallback, head crops, split sizes and checks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from downstream.conditions import TestCorruptor, parse_condition
from downstream.data import (
    DataConfig,
    SourceConfig,
    SplitConfig,
    Utterance,
    check_speaker_disjoint,
    load_splits,
    load_waveform,
)
from robustdistill.augment import NoiseBank, RirBank


def test_noise_and_room_come_from_independent_streams():
    """The noise recording and the room are drawn from two generators: over many utterances
    every (recording, room) pair occurs (one shared generator would tie them together)."""
    rng = np.random.default_rng(0)
    noise = NoiseBank(tuple(rng.standard_normal(3000).astype(np.float32) for _ in range(2)),
                      ("n0", "n1"))
    rirs = RirBank((np.array([1.0, 0.5], np.float32), np.array([1.0, -0.3], np.float32)),
                   ("r0", "r1"))
    corruptor = TestCorruptor(noise, rirs, seed=0)
    pairs = set()
    for i in range(40):
        drawn = corruptor.draw(f"utt{i}", 1000)
        pairs.add((drawn.noise_name, drawn.rir_name))
    assert pairs == {("n0", "r0"), ("n0", "r1"), ("n1", "r0"), ("n1", "r1")}
    room = corruptor.rng("utt0", "room").integers(0, 2**32, 4)
    assert not np.array_equal(room, corruptor.rng("utt0", "noise").integers(0, 2**32, 4))


def test_silent_noise_segment_is_replaced_by_seeded_white_noise():
    """A noise segment that is all zeros becomes white noise from the utterance's noise
    generator (named "white"), so the condition's SNR is still met exactly."""
    wave = np.zeros(4000, np.float32)
    wave[-1] = 1.0  # audible only in the segment that starts at 3000 (1 in 3001)
    bank = NoiseBank((wave,), ("quiet.wav",))
    corruptor = TestCorruptor(bank, None, seed=1)
    clean = np.sin(np.arange(1000) / 5.0).astype(np.float32)
    drawn = corruptor.draw("utt", clean.size)
    assert drawn.noise_name == "white"
    replay = corruptor.rng("utt", "noise")
    bank.draw(clean.size, replay)
    np.testing.assert_array_equal(drawn.noise,
                                  replay.standard_normal(clean.size).astype(np.float32))
    out = corruptor.apply(clean, parse_condition("snr5"), "utt")
    residual = out.astype(np.float64) - clean
    snr = 10 * math.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(residual**2))
    assert snr == pytest.approx(5.0, abs=1e-4)


def test_load_waveform_keeps_the_first_max_seconds(tmp_path):
    ramp = (np.arange(16_000) / 32_000).astype(np.float32)
    sf.write(tmp_path / "a.wav", ramp, 16_000, subtype="FLOAT")
    utt = Utterance("a.wav", str(tmp_path / "a.wav"))
    np.testing.assert_array_equal(load_waveform(utt, max_seconds=0.25), ramp[:4000])
    np.testing.assert_array_equal(load_waveform(utt), ramp)


def _touch_corpus(root: Path, labels: int, per_label: int) -> str:
    root.mkdir(parents=True)
    for label in range(labels):
        for take in range(per_label):
            (root / f"{label}_s{take}_{take}.wav").write_bytes(b"")  # listed, never decoded
    return str(root)


def test_a_small_nonzero_fraction_still_takes_one_item_per_label(tmp_path):
    """split.dev / split.test fractions round to at least one item per label (3 items and
    0.1 round to 0 otherwise, leaving dev and test empty)."""
    source = SourceConfig(root=_touch_corpus(tmp_path / "c", 2, 3),
                          pattern=r"(?P<label>\d)_(?P<speaker>s\d)_\d")
    splits = load_splits(DataConfig(source, split=SplitConfig("item", 0.1, 0.1)), seed=0)
    assert sorted(u.label for u in splits["dev"]) == ["0", "1"]
    assert sorted(u.label for u in splits["test"]) == ["0", "1"]
    assert sorted(u.label for u in splits["train"]) == ["0", "1"]


def test_speaker_disjoint_check_ignores_missing_speakers_and_names_shared_ones():
    def utt(key, speaker):
        return Utterance(key, b"", "x", speaker)

    splits = {"train": [utt("a", None), utt("b", "s1")], "test": [utt("c", None), utt("d", "s2")]}
    check_speaker_disjoint(splits, "train", "test")  # None is no speaker: no overlap
    splits["test"].append(utt("e", "s1"))
    with pytest.raises(ValueError, match=r"share speakers \['s1'\]"):
        check_speaker_disjoint(splits, "train", "test")


def test_explicit_dev_and_test_speaker_lists_must_not_overlap(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    for spk in ("a", "b", "c"):
        (root / f"0_{spk}_0.wav").write_bytes(b"")
    source = SourceConfig(root=str(root), pattern=r"(?P<label>\d)_(?P<speaker>\w)_\d")
    with pytest.raises(ValueError, match="share speakers"):
        load_splits(DataConfig(source, split=SplitConfig("speaker", ["a", "b"], ["b"])), seed=0)
