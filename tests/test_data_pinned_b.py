"""Map-style datasets and the sampler: lengths, subsets, crop-by-crop reads, sampler state
(mutation-testing round 3, reviewer b)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from test_data import SR, ramp, write

import robustdistill.data.cropped as cropped
from robustdistill.audio import load_audio
from robustdistill.data import AudioFileDataset, ShardedRandomSampler


def test_lengths_are_the_decoded_lengths_at_16k_rounded_not_floored(tmp_path):
    """44102 frames at 44.1 kHz -> 16000.73 -> 16001 samples (what soxr returns), as the header
    scan must predict: the lengths drive crops and the long-file window reads."""
    files = [write(tmp_path / "a44k.wav", ramp(44_102), sr=44_100),
             write(tmp_path / "b22k.wav", ramp(22_051), sr=22_050),
             write(tmp_path / "c16k.wav", ramp(16_001))]
    ds = AudioFileDataset(files, max_length_s=None, min_length_s=0.5)
    assert ds.lengths.tolist() == [16_001, 16_001, 16_001]
    assert ds.lengths.tolist() == [len(load_audio(f)) for f in files]
    assert [len(ds[i]["waveform"]) for i in range(3)] == [16_001] * 3


def test_subset_forgets_read_failures_of_other_positions_but_keeps_scan_skips(tmp_path):
    files = [write(tmp_path / f"{i}.wav", ramp(SR, offset=i)) for i in range(3)]
    short = write(tmp_path / "short.wav", ramp(SR // 4))
    ds = AudioFileDataset([*files, short], max_length_s=4.0, min_length_s=0.5)
    assert ds.skipped == {str(short): "too short"}
    files[1].write_bytes(b"RIFF....not audio any more")
    assert ds[(1, 0)]["index"] == 2  # position 1 is now known bad in ds

    sub = ds.subset([0, 2])  # positions 0, 1 of sub are files 0, 2
    item = sub[(1, 0)]
    assert item["index"] == 1 and "skipped" not in item
    np.testing.assert_array_equal(item["waveform"], ramp(SR, offset=2))
    # the scan's skips (and the read-time one so far) carry over, as a copy
    assert sub.skipped == {str(short): "too short", str(files[1]): "unreadable"}
    assert sub.skipped is not ds.skipped


@pytest.fixture
def window_reads(monkeypatch):
    """Files longer than 1 s are read crop by crop (the threshold is 120 s otherwise)."""
    monkeypatch.setattr(cropped, "WINDOW_READ_MIN_S", 1.0)


def test_a_long_file_read_by_window_after_a_failed_item_carries_the_skip(tmp_path, window_reads):
    bad = write(tmp_path / "0_bad.wav", ramp(3 * SR))
    full = ramp(3 * SR, offset=1)
    good = write(tmp_path / "1_long.wav", full)
    ds = AudioFileDataset([bad, good], max_length_s=1.0, min_length_s=0.5, seed=5)
    bad.write_bytes(b"RIFF....not audio any more")
    item = ds[(0, 2)]
    assert item["index"] == 1 and item["skipped"] == [(str(bad), "unreadable")]
    start = int(np.random.default_rng([5, 2, 1]).integers(0, 2 * SR + 1))
    np.testing.assert_array_equal(item["waveform"], full[start: start + SR])
    assert "skipped" not in ds[(1, 2)]  # no failure on the way: no skipped pairs


def test_validation_crops_of_long_files_depend_on_the_index_only(tmp_path, window_reads):
    """random_crop=False and a file read window by window: the crop start comes from
    default_rng(index), every epoch and seed, exactly as for a file decoded whole."""
    full = ramp(3 * SR)
    path = write(tmp_path / "long.wav", full)
    val = AudioFileDataset([write(tmp_path / "other.wav", ramp(SR)), path],
                           max_length_s=1.0, min_length_s=0.5, seed=3, random_crop=False)
    start = int(np.random.default_rng(1).integers(0, 2 * SR + 1))
    for epoch in (0, 4):
        np.testing.assert_array_equal(val[(1, epoch)]["waveform"], full[start: start + SR])
    other_seed = AudioFileDataset([path], max_length_s=1.0, min_length_s=0.5, seed=9,
                                  random_crop=False).subset([0])
    start0 = int(np.random.default_rng(0).integers(0, 2 * SR + 1))
    np.testing.assert_array_equal(other_seed[(0, 7)]["waveform"], full[start0: start0 + SR])


def test_sampler_state_of_another_dataset_or_world_size_or_out_of_range_is_refused():
    s = ShardedRandomSampler(23, seed=1, rank=0, world_size=2)
    s.set_epoch(2)
    s.set_start(3)
    state = s.state_dict()
    with pytest.raises(ValueError, match="world_size=2"):
        ShardedRandomSampler(23, seed=1, rank=0, world_size=3).load_state_dict(state)
    with pytest.raises(ValueError, match="num_samples=23"):
        ShardedRandomSampler(24, seed=1, rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="outside"):
        ShardedRandomSampler(23, seed=1, rank=0, world_size=2).load_state_dict(
            {**state, "start": 12})  # 11 samples per rank
    ok = ShardedRandomSampler(23, seed=1, rank=1, world_size=2)
    ok.load_state_dict(state)
    assert (ok.epoch, ok.start, len(ok)) == (2, 3, 8)


@pytest.mark.parametrize(("n", "world_size"), [(10, 3), (7, 2), (4, 4)])
def test_sampler_ranks_are_exactly_the_strided_truncated_permutation(n, world_size):
    """Every rank's items by hand: the epoch permutation cut to a multiple of world_size,
    position p to rank p % world_size; together they are all but the dropped remainder."""
    perm = np.random.default_rng([11, 3]).permutation(n)
    total = world_size * (n // world_size)
    seen = []
    for rank in range(world_size):
        s = ShardedRandomSampler(n, seed=11, rank=rank, world_size=world_size)
        s.set_epoch(3)
        items = [i for i, _ in s]
        assert items == [int(perm[p]) for p in range(rank, total, world_size)]
        seen += items
    assert sorted(seen) == sorted(perm[:total].tolist())
    assert set(range(n)) - set(seen) == set(perm[total:].tolist())


def test_a_file_with_no_samples_is_dropped_at_the_scan_even_with_no_minimum_length(tmp_path):
    empty = tmp_path / "zero_frames.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    good = write(tmp_path / "good.wav", ramp(100))
    ds = AudioFileDataset([empty, good], max_length_s=None, min_length_s=0.0)
    assert ds.files == [good] and ds.lengths.tolist() == [100]
    assert ds.skipped == {str(empty): "too short"}


@pytest.mark.parametrize(("n", "world_size"), [(7, 2), (10, 3), (2, 3)])
def test_sampler_without_drop_last_gives_every_item_once_strided(n, world_size):
    """Validation's sharding (``drop_last=False``, no shuffle): rank r takes r, r + world, ...
    of all n items, so ranks hold 1 item apart at most (none when n < world_size)."""
    seen = []
    for rank in range(world_size):
        s = ShardedRandomSampler(n, seed=11, shuffle=False, rank=rank, world_size=world_size,
                                 drop_last=False)
        s.set_epoch(0)
        items = [i for i, _ in s]
        assert items == list(range(rank, n, world_size)) and len(s) == len(items)
        seen += items
    assert sorted(seen) == list(range(n))
