"""Tests of robustdistill.data and robustdistill.synthetic (fast; CPU; no network)."""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from robustdistill.audio import AudioError, list_audio_files, load_audio
from robustdistill.data import (
    AudioFileDataset,
    DataConfig,
    HFAudioDataset,
    ShardedRandomSampler,
    StreamingAudioDataset,
    build_dataloader,
    build_datasets,
    collate_waveforms,
    load_hf_split,
)
from robustdistill.synthetic import synthetic_waveform, write_synthetic_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SR = 16_000
LIBRISPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "librispeech-mini"


def ramp(num_samples: int, offset: float = 0.0) -> np.ndarray:
    """A waveform whose every sample is distinct, so a crop reveals its start."""
    return (offset + np.arange(num_samples) / (4 * num_samples)).astype(np.float32)


def write(path: Path, waveform: np.ndarray, sr: int = SR) -> Path:
    """Float WAV: the values read back are exactly those written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, waveform, sr, subtype="FLOAT")
    return path


def warnings_of(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


# ------------------------------------------------------------------------------------------
# AudioFileDataset
# ------------------------------------------------------------------------------------------


def test_random_crop_is_bounded_deterministic_and_drawn_from_seed_epoch_index(tmp_path):
    full = ramp(3 * SR)
    files = [write(tmp_path / "a.wav", full), write(tmp_path / "b.wav", ramp(SR + 123, 0.5))]
    ds = AudioFileDataset(files, max_length_s=1.0, min_length_s=0.5, seed=7)
    assert len(ds) == 2 and ds.lengths.tolist() == [3 * SR, SR + 123]

    starts = []
    for epoch in range(4):
        item = ds[(0, epoch)]
        wave = item["waveform"]
        assert item["index"] == 0 and wave.dtype == np.float32 and wave.shape == (SR,)
        start = int(np.random.default_rng([7, epoch, 0]).integers(0, 2 * SR + 1))
        np.testing.assert_array_equal(wave, full[start : start + SR])
        np.testing.assert_array_equal(ds[(0, epoch)]["waveform"], wave)  # same key, same crop
        starts.append(start)
    assert len(set(starts)) == 4  # a new crop every epoch
    np.testing.assert_array_equal(ds[0]["waveform"], ds[(0, 0)]["waveform"])  # int = epoch 0
    assert ds[(1, 3)]["waveform"].shape == (SR,)  # 1.0077 s -> cut to 1 s

    # Another seed, another crop; a dataset rebuilt with the same seed, the same crop.
    other = AudioFileDataset(files, max_length_s=1.0, min_length_s=0.5, seed=8)
    assert not np.array_equal(other[(0, 0)]["waveform"], ds[(0, 0)]["waveform"])
    again = AudioFileDataset(files, max_length_s=1.0, min_length_s=0.5, seed=7)
    np.testing.assert_array_equal(again[(0, 2)]["waveform"], ds[(0, 2)]["waveform"])

    # out of range on either side: refused, never wrapped round to another item
    with pytest.raises(IndexError, match=r"^index 2 out of range for 2 items$"):
        ds[(2, 0)]
    with pytest.raises(IndexError, match=r"^index -1 out of range for 2 items$"):
        ds[(-1, 0)]


def test_validation_crop_depends_on_index_only(tmp_path):
    full = ramp(3 * SR)
    files = [write(tmp_path / "a.wav", full)]
    val = AudioFileDataset(files, max_length_s=1.0, min_length_s=0.5, seed=1, random_crop=False)
    start = int(np.random.default_rng(0).integers(0, 2 * SR + 1))
    for epoch in (0, 5):
        np.testing.assert_array_equal(val[(0, epoch)]["waveform"], full[start : start + SR])
    other_seed = AudioFileDataset(files, 1.0, 0.5, seed=99, random_crop=False)
    np.testing.assert_array_equal(other_seed[0]["waveform"], val[0]["waveform"])
    whole = AudioFileDataset(files, max_length_s=None, min_length_s=0.5)
    np.testing.assert_array_equal(whole[(0, 3)]["waveform"], full)


def test_short_files_dropped_with_one_warning_after_resampling(tmp_path, caplog):
    files = [
        write(tmp_path / "short_0.5s.wav", ramp(SR // 2)),
        write(tmp_path / "ok_1.2s.wav", ramp(int(1.2 * SR))),
        # 7999 samples at 8 kHz -> 15998 at 16 kHz < 1 s: dropped; 8000 -> 16000: kept.
        write(tmp_path / "short_8k.wav", ramp(7999), sr=8000),
        write(tmp_path / "ok_8k.wav", ramp(8000), sr=8000),
    ]
    with caplog.at_level(logging.WARNING, logger="robustdistill.data"):
        ds = AudioFileDataset(files, max_length_s=4.0, min_length_s=1.0)
    assert [f.name for f in ds.files] == ["ok_1.2s.wav", "ok_8k.wav"]
    assert ds.lengths.tolist() == [int(1.2 * SR), SR]
    records = warnings_of(caplog, "dropped")
    assert len(records) == 1
    message = records[0].getMessage()
    assert "dropped 2 of 4" in message and "2 shorter" in message and "unreadable" not in message
    assert "short_0.5s.wav" in message and "short_8k.wav" in message

    with pytest.raises(ValueError, match="none of the 1 items"):
        AudioFileDataset([files[0]], max_length_s=4.0, min_length_s=1.0)


def test_8khz_stereo_file_comes_out_mono_16khz(tmp_path):
    t = np.arange(12_000) / 8000  # 1.5 s at 8 kHz
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 440 * t)
    path = write(
        tmp_path / "stereo8k.wav", np.stack([left, right], axis=1).astype(np.float32), 8000
    )
    ds = AudioFileDataset([path], max_length_s=4.0, min_length_s=1.0)
    assert ds.lengths.tolist() == [24_000]
    wave = ds[0]["waveform"]
    assert wave.dtype == np.float32 and wave.shape == (24_000,)
    # mono = mean of channels = 0.375 sin(440 Hz), now sampled at 16 kHz (edges: filter ramp-up)
    t16 = np.arange(24_000) / SR
    expected = 0.375 * np.sin(2 * np.pi * 440 * t16)
    np.testing.assert_allclose(wave[1000:-1000], expected[1000:-1000], atol=2e-3)


def test_ogg_and_mp3_files_are_read(tmp_path):
    t = np.arange(int(1.5 * SR)) / SR
    x = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    sf.write(tmp_path / "a.ogg", x, SR, format="OGG", subtype="VORBIS")
    sf.write(tmp_path / "b.mp3", x, SR, format="MP3", subtype="MPEG_LAYER_III")
    files = list_audio_files(tmp_path)
    ds = AudioFileDataset(files, max_length_s=4.0, min_length_s=1.0)
    assert [f.name for f in ds.files] == ["a.ogg", "b.mp3"]
    for i in range(2):
        wave = ds[i]["waveform"]
        assert abs(len(wave) - len(x)) < 0.1 * SR  # mp3 adds encoder padding
        assert 0.15 < np.sqrt(np.mean(wave**2)) < 0.27  # rms of 0.3 sin = 0.212


def test_corrupt_and_empty_files_are_dropped_at_scan(tmp_path, caplog):
    good = write(tmp_path / "good.wav", ramp(SR))
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.flac").write_bytes(os.urandom(4000))
    sf.write(tmp_path / "zero_frames.wav", np.zeros(0, np.float32), SR)
    with caplog.at_level(logging.WARNING, logger="robustdistill.data"):
        ds = AudioFileDataset(list_audio_files(tmp_path), max_length_s=4.0, min_length_s=0.5)
    assert ds.files == [good]
    (message,) = [r.getMessage() for r in warnings_of(caplog, "dropped")]
    assert "dropped 3 of 4 items: 1 shorter than min_length_s=0.50 s, 1 empty, 1 unreadable; " \
        "first: " in message
    assert "empty.wav" in message and "garbage.flac" in message


def test_file_corrupted_after_scan_is_replaced_by_next_item(tmp_path, caplog):
    files = [write(tmp_path / f"{i}.wav", ramp(SR, offset=i)) for i in range(3)]
    ds = AudioFileDataset(files, max_length_s=4.0, min_length_s=0.5)
    files[1].write_bytes(b"RIFF....not audio any more")
    with caplog.at_level(logging.WARNING, logger="robustdistill.data"):
        item = ds[(1, 0)]
    assert item["index"] == 2
    np.testing.assert_array_equal(item["waveform"], ramp(SR, offset=2))
    assert len(warnings_of(caplog, "1.wav")) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robustdistill.data"):
        assert ds[(1, 1)]["index"] == 2  # known bad: skipped without a second warning
    assert warnings_of(caplog, "1.wav") == []
    assert ds[(0, 0)]["index"] == 0


def test_nan_audio_is_skipped_at_read_time_and_all_bad_raises(tmp_path, caplog):
    nan_wave = ramp(SR)
    nan_wave[100] = np.nan
    nan_file = write(tmp_path / "nan.wav", nan_wave)
    good = write(tmp_path / "good.wav", ramp(SR, offset=1))
    ds = AudioFileDataset([nan_file, good], max_length_s=4.0, min_length_s=0.5)
    assert len(ds) == 2  # a header scan cannot see NaN samples
    with caplog.at_level(logging.WARNING, logger="robustdistill.data"):
        item = ds[0]
    assert item["index"] == 1
    assert any("NaN" in r.getMessage() for r in warnings_of(caplog, "nan.wav"))

    only_nan = AudioFileDataset([nan_file], max_length_s=4.0, min_length_s=0.5)
    with pytest.raises(AudioError, match="could be read.*NaN"):
        only_nan[0]


# ------------------------------------------------------------------------------------------
# collate, sampler, loader
# ------------------------------------------------------------------------------------------


def test_collate_pads_with_exact_zeros():
    items = [
        {"waveform": np.array([1.0, 2.0, 3.0], np.float32), "index": 4},
        {"waveform": np.array([-1.0, -2.0, -3.0, -4.0, -5.0], np.float32), "index": 0},
        {"waveform": np.array([7.0], np.float32), "index": 9},
    ]
    batch = collate_waveforms(items)
    expected = torch.tensor(
        [[1.0, 2.0, 3.0, 0.0, 0.0], [-1.0, -2.0, -3.0, -4.0, -5.0], [7.0, 0.0, 0.0, 0.0, 0.0]]
    )
    assert batch["waveforms"].dtype == torch.float32
    assert torch.equal(batch["waveforms"], expected)
    assert batch["lengths"].dtype == torch.long and batch["lengths"].tolist() == [3, 5, 1]
    assert batch["indices"].dtype == torch.long and batch["indices"].tolist() == [4, 0, 9]
    with pytest.raises(ValueError, match="empty"):
        collate_waveforms([])
    with pytest.raises(ValueError, match=r"\(S,\)"):
        collate_waveforms([{"waveform": np.zeros((2, 3)), "index": 0}])


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sampler_ranks_are_disjoint_equal_and_cover_all_but_the_remainder(world_size):
    n = 10
    per_rank = n // world_size
    samplers = [
        ShardedRandomSampler(n, seed=3, rank=r, world_size=world_size) for r in range(world_size)
    ]
    for epoch in (0, 1):
        keys = []
        for s in samplers:
            s.set_epoch(epoch)
            rank_keys = list(s)
            assert len(rank_keys) == len(s) == per_rank
            assert all(e == epoch for _, e in rank_keys)
            keys += [i for i, _ in rank_keys]
        assert len(keys) == len(set(keys)) == per_rank * world_size  # disjoint
        assert set(keys) <= set(range(n))
    # Position p of the epoch's permutation goes to rank p % world_size.
    perm = np.random.default_rng([3, 1]).permutation(n)[: per_rank * world_size]
    assert [i for i, _ in samplers[0]] == perm[0::world_size].tolist()


def test_sampler_order_is_a_function_of_seed_and_epoch():
    a, b = ShardedRandomSampler(50, seed=5), ShardedRandomSampler(50, seed=5)
    b.set_epoch(0)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert [i for i, _ in a] != [i for i, _ in b]
    assert sorted(i for i, _ in a) == list(range(50))
    torch.manual_seed(123)
    np.random.seed(123)  # the global RNGs play no part
    c = ShardedRandomSampler(50, seed=5)
    c.set_epoch(1)
    assert list(c) == list(a)
    assert [i for i, _ in ShardedRandomSampler(5, shuffle=False)] == [0, 1, 2, 3, 4]
    assert list(ShardedRandomSampler(7, shuffle=False, rank=1, world_size=2)) == [
        (1, 0),
        (3, 0),
        (5, 0),
    ]


def test_sampler_set_start_resumes_exactly_and_state_round_trips():
    s = ShardedRandomSampler(23, seed=1, rank=1, world_size=2)
    s.set_epoch(4)
    full = list(s)
    s.set_start(5)
    assert list(s) == full[5:] and len(s) == 11 - 5
    restored = ShardedRandomSampler(23, seed=1, rank=1, world_size=2)
    restored.load_state_dict(s.state_dict())
    assert list(restored) == full[5:]
    s.set_epoch(5)
    assert s.start == 0 and len(s) == 11
    s.set_start(11)
    assert list(s) == [] and len(s) == 0
    with pytest.raises(ValueError, match="outside"):
        s.set_start(12)
    with pytest.raises(ValueError, match="seed"):
        ShardedRandomSampler(23, seed=2, rank=1, world_size=2).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="num_samples 1 < world_size 2"):
        ShardedRandomSampler(1, world_size=2)


def test_loader_resumes_mid_epoch_with_identical_batches(tmp_path):
    files = [write(tmp_path / f"{i}.wav", ramp(SR + 1000 * i, offset=i)) for i in range(9)]
    ds = AudioFileDataset(files, max_length_s=1.05, min_length_s=0.5, seed=2)
    sampler = ShardedRandomSampler(len(ds), seed=2)
    sampler.set_epoch(3)
    batches = list(build_dataloader(ds, batch_size=2, sampler=sampler, drop_last=True))
    assert len(batches) == 4
    for batch in batches:
        assert batch["waveforms"].shape[1] <= round(1.05 * SR)
        assert torch.equal(
            batch["lengths"],
            torch.minimum(
                torch.tensor(ds.lengths)[batch["indices"]], torch.tensor(round(1.05 * SR))
            ),
        )
    resumed = ShardedRandomSampler(len(ds), seed=2)
    resumed.set_epoch(3)
    resumed.set_start(2 * 2)  # two batches consumed
    rest = list(build_dataloader(ds, batch_size=2, sampler=resumed, drop_last=True))
    assert len(rest) == 2
    for a, b in zip(rest, batches[2:], strict=True):
        assert torch.equal(a["indices"], b["indices"]) and torch.equal(
            a["waveforms"], b["waveforms"]
        )


def test_loader_with_workers_gives_the_same_batches(tmp_path):
    files = [write(tmp_path / f"{i}.wav", ramp(SR + 700 * i, offset=i)) for i in range(6)]
    ds = AudioFileDataset(files, max_length_s=1.02, min_length_s=0.5, seed=4)
    sampler = ShardedRandomSampler(len(ds), seed=4)
    main = list(build_dataloader(ds, 3, sampler))
    workers = list(build_dataloader(ds, 3, sampler, num_workers=2))
    for a, b in zip(main, workers, strict=True):
        assert torch.equal(a["waveforms"], b["waveforms"]) and torch.equal(
            a["indices"], b["indices"]
        )



def test_kept_workers_give_each_epochs_batches_and_a_stream_cannot_keep_them(tmp_path):
    """persistent_workers: the workers' copy of the dataset is the one they started with;
    a map-style set's epochs come from the sampler (main process), a stream's would not."""
    files = [write(tmp_path / f"{i}.wav", ramp(SR + 700 * i, offset=i)) for i in range(6)]
    ds = AudioFileDataset(files, max_length_s=0.5, min_length_s=0.5, seed=4)
    sampler = ShardedRandomSampler(len(ds), seed=4)
    kept = build_dataloader(ds, 3, sampler, num_workers=2, persistent_workers=True)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        main = list(build_dataloader(ds, 3, sampler))
        for a, b in zip(main, kept, strict=True):
            assert torch.equal(a["waveforms"], b["waveforms"])
            assert torch.equal(a["indices"], b["indices"])

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield {"waveform": np.zeros(8, np.float32), "index": 0}

    with pytest.raises(ValueError, match="streaming dataset cannot keep its workers"):
        build_dataloader(Stream(), 2, num_workers=2, persistent_workers=True)

# ------------------------------------------------------------------------------------------
# datasets (Hugging Face)
# ------------------------------------------------------------------------------------------


def wav_bytes(waveform: np.ndarray, sr: int = SR) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, waveform, sr, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.fixture
def no_torchcodec(monkeypatch):
    """Make any ``import torchcodec`` fail, as it does on this machine's CPU torch."""
    monkeypatch.setitem(sys.modules, "torchcodec", None)


def test_hf_dataset_from_saved_paths_decodes_without_torchcodec(tmp_path, no_torchcodec, caplog):
    from datasets import Audio, Dataset

    files = [write(tmp_path / "wav" / f"{i}.wav", ramp(SR + 500 * i, offset=i)) for i in range(4)]
    files.append(write(tmp_path / "wav" / "short.wav", ramp(SR // 4)))
    table = Dataset.from_dict({"audio": [str(f) for f in files], "speaker": [1, 2, 3, 4, 5]})
    table.cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "saved"))

    with caplog.at_level(logging.WARNING, logger="robustdistill.data"):
        ds = HFAudioDataset.from_hub_or_disk(str(tmp_path / "saved"), max_length_s=1.0, seed=3)
    assert len(ds) == 4 and ds.rows == [0, 1, 2, 3]
    assert "row 4 (0.25 s)" in warnings_of(caplog, "dropped 1 of 5")[0].getMessage()
    for epoch in (0, 1):
        item = ds[(2, epoch)]
        start = int(np.random.default_rng([3, epoch, 2]).integers(0, 1000 + 1))
        np.testing.assert_array_equal(
            item["waveform"], ramp(SR + 1000, offset=2)[start : start + SR]
        )

    with pytest.raises(ValueError, match="audio_column 'speech'"):
        HFAudioDataset.from_hub_or_disk(str(tmp_path / "saved"), audio_column="speech")
    with pytest.raises(ValueError, match="single dataset"):
        load_hf_split(str(tmp_path / "saved"), split="validation")


def test_hf_dataset_with_embedded_bytes_and_a_corrupt_row(tmp_path, no_torchcodec, caplog):
    from datasets import Audio, Dataset

    cells = [{"bytes": wav_bytes(ramp(SR, offset=i), 8000), "path": f"{i}.wav"} for i in range(3)]
    cells[1] = {"bytes": b"not audio at all", "path": "bad.wav"}
    table = Dataset.from_dict({"audio": cells}).cast_column("audio", Audio(decode=False))
    with caplog.at_level(logging.WARNING, logger="robustdistill.data"):
        ds = HFAudioDataset(table, max_length_s=None, min_length_s=0.5)
    assert ds.rows == [0, 2] and ds.lengths.tolist() == [2 * SR, 2 * SR]  # 8 kHz -> 16 kHz
    assert "1 unreadable" in warnings_of(caplog, "dropped 1 of 3")[0].getMessage()
    wave = ds[1]["waveform"]
    np.testing.assert_array_equal(wave, load_audio(cells[2]["bytes"]))
    assert wave.shape == (2 * SR,)


def test_hf_dataset_through_load_dataset_on_local_parquet(tmp_path, no_torchcodec):
    from datasets import Audio, Dataset

    files = [write(tmp_path / "wav" / f"{i}.wav", ramp(SR + 10 * i, offset=i)) for i in range(3)]
    table = Dataset.from_dict({"audio": [str(f) for f in files]})
    (tmp_path / "pq").mkdir()
    table.cast_column("audio", Audio(decode=False)).to_parquet(
        str(tmp_path / "pq" / "train.parquet")
    )
    ds = HFAudioDataset.from_hub_or_disk(str(tmp_path / "pq"), max_length_s=None, min_length_s=0.5)
    assert len(ds) == 3
    np.testing.assert_array_equal(ds[2]["waveform"], ramp(SR + 20, offset=2))


def streaming_table(num_items: int):
    from datasets import Audio, Dataset

    # Item i: 1 s + i samples of a ramp starting at i (its first sample identifies it).
    cells = [
        {"bytes": wav_bytes(ramp(SR + i, offset=i)), "path": f"{i}.wav"} for i in range(num_items)
    ]
    return Dataset.from_dict({"audio": cells}).cast_column("audio", Audio(decode=False))


def first_values(batches) -> list[int]:
    return [int(round(float(w[0]))) for b in batches for w in b["waveforms"]]


def test_streaming_shards_by_rank_and_resumes_exactly(no_torchcodec):
    stream = streaming_table(12).to_iterable_dataset(num_shards=4)
    seen = []
    for rank in range(2):
        ds = StreamingAudioDataset(
            stream, max_length_s=None, min_length_s=0.5, rank=rank, world_size=2
        )
        seen.append([int(round(float(x["waveform"][0]))) for x in ds])
    assert len(seen[0]) == len(seen[1]) == 6
    assert sorted(seen[0] + seen[1]) == list(range(12))

    ds = StreamingAudioDataset(stream, max_length_s=0.5, min_length_s=0.5, seed=3)
    ds.set_epoch(1)
    reference = list(build_dataloader(ds, batch_size=2))
    ds.set_epoch(1)
    loader = ds.track(build_dataloader(ds, batch_size=2))  # records what was consumed
    consumed = [next(loader), next(loader)]
    state = ds.state_dict()
    assert state["epoch"] == 1 and state["consumed"] == [[2, 2, 4]]

    resumed = StreamingAudioDataset(stream, max_length_s=0.5, min_length_s=0.5, seed=3)
    resumed.load_state_dict(state)
    rest = list(resumed.track(build_dataloader(resumed, batch_size=2)))
    assert first_values(consumed + rest) == first_values(reference)
    for a, b in zip(consumed + rest, reference, strict=True):
        assert torch.equal(a["waveforms"], b["waveforms"]) and torch.equal(
            a["indices"], b["indices"]
        )
    # The loaded state applies once: the next pass is the whole epoch again.
    assert first_values(build_dataloader(resumed, batch_size=2)) == first_values(reference)
    resumed.set_epoch(2)  # a new epoch forgets the old stream position
    assert resumed.state_dict() == {"epoch": 2, "num_workers": 0, "skipped": 0,
                                    "skipped_complete": True, "consumed": [[0, 0, 0]]}


def test_streaming_skips_bad_items_with_a_log(caplog, no_torchcodec):
    from datasets import Audio, Dataset

    cells = [{"bytes": wav_bytes(ramp(SR, offset=i)), "path": f"{i}.wav"} for i in range(4)]
    cells[1] = {"bytes": b"corrupt", "path": "bad.wav"}
    cells[2] = {"bytes": wav_bytes(ramp(SR // 10, offset=2)), "path": "short.wav"}
    stream = Dataset.from_dict({"audio": cells}).cast_column("audio", Audio(decode=False))
    ds = StreamingAudioDataset(stream.to_iterable_dataset(), max_length_s=None, min_length_s=0.5)
    with caplog.at_level(logging.WARNING, logger="robustdistill.data"):
        items = list(ds)
    assert [x["index"] for x in items] == [0, 3] and ds.skipped == 2
    assert len(warnings_of(caplog, "skipping streamed audio")) == 2
    with pytest.raises(ValueError, match="sampler"):
        build_dataloader(ds, 2, sampler=ShardedRandomSampler(4))


# ------------------------------------------------------------------------------------------
# DataConfig and build_datasets
# ------------------------------------------------------------------------------------------


def test_data_config_parses_with_hf_argument_parser():
    from transformers import HfArgumentParser

    parser = HfArgumentParser(DataConfig)
    (cfg,) = parser.parse_args_into_dataclasses(
        ["--train_dir", "x", "--max_length_s", "2.5", "--synthetic_seconds", "1", "3"]
    )
    assert cfg.train_dir == "x" and cfg.max_length_s == 2.5 and cfg.source == "folder"
    (cfg,) = parser.parse_dict({"synthetic_items": 4, "synthetic_seconds": [1, 2]})
    assert cfg.synthetic_seconds == [1.0, 2.0] and cfg.source == "synthetic"
    with pytest.raises(ValueError, match="max_lenght_s"):
        parser.parse_dict({"max_lenght_s": 3.0})
    assert DataConfig().source is None


def test_synthetic_items_beside_a_train_dir_names_the_way_out():
    """configs/demo.yaml sets synthetic_items 64: `--data.train_dir DIR` over it was refused
    without naming the key to turn it off (and `--data.synthetic_items null` is not an int)."""
    with pytest.raises(ValueError, match=r"DataConfig\.synthetic_items: synthetic audio cannot "
                                         r"be combined with train_dir; allowed: synthetic_items "
                                         r"0 with train_dir \(--data\.synthetic_items 0 "):
        DataConfig(train_dir="a", synthetic_items=64)


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"train_dir": "a", "train_dataset": "b"}, "train_dataset"),
        ({"min_length_s": 5.0, "max_length_s": 4.0}, "min_length_s"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_length_s": 0.0}, "max_length_s"),
        ({"num_workers": -1}, "num_workers"),
        ({"train_dir": "a", "synthetic_items": 3}, "synthetic_items"),
        ({"train_dir": "a", "validation_split": "dev"}, "validation_split"),
        ({"train_dir": "a", "streaming": True}, "streaming"),
        (
            {"validation_dir": "v", "validation_split": "dev", "train_dataset": "d"},
            "validation_split",
        ),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"synthetic_seconds": [3.0, 2.0]}, "synthetic_seconds"),
    ],
)
def test_data_config_rejects_bad_settings_naming_the_field(kwargs, field_name):
    with pytest.raises(ValueError, match=rf"DataConfig\.{field_name}:"):
        DataConfig(**kwargs)


def test_build_datasets_synthetic_with_hold_out(tmp_path, caplog):
    cfg = DataConfig(
        synthetic_items=10,
        synthetic_seconds=[1.0, 2.0],
        synthetic_dir=str(tmp_path),
        max_length_s=1.5,
        validation_fraction=0.2,
    )
    with caplog.at_level(logging.INFO, logger="robustdistill.data"):
        train, val = build_datasets(cfg, seed=0)
    assert (len(train), len(val)) == (8, 2)
    assert not set(train.files) & set(val.files)
    assert sorted(train.files + val.files) == sorted(tmp_path.glob("*.wav"))
    assert val.random_crop is False and train.random_crop is True
    assert any("holding out 2 of 10" in r.getMessage() for r in caplog.records)
    train2, val2 = build_datasets(cfg, seed=5)  # the hold-out does not depend on the seed
    assert val2.files == val.files
    with pytest.raises(ValueError, match="no training audio"):
        build_datasets(DataConfig())


def test_build_datasets_folder_and_validation_dir(tmp_path):
    train_files = [write(tmp_path / "train" / "s1" / f"{i}.wav", ramp(SR * 2)) for i in range(5)]
    for i in range(6):
        write(tmp_path / "dev" / f"{i}.wav", ramp(SR * 2, offset=i))
    cfg = DataConfig(
        train_dir=str(tmp_path / "train"),
        validation_dir=str(tmp_path / "dev"),
        max_validation_items=3,
    )
    train, val = build_datasets(cfg, seed=0)
    assert train.files == train_files
    assert [f.name for f in val.files] == ["0.wav", "2.wav", "5.wav"]  # evenly spaced
    assert train[0]["waveform"].shape == (2 * SR,)


def test_build_datasets_from_saved_dataset_dict_with_validation_split(tmp_path, no_torchcodec):
    from datasets import DatasetDict

    DatasetDict({"train": streaming_table(6), "dev": streaming_table(3)}).save_to_disk(
        str(tmp_path / "dd")
    )
    cfg = DataConfig(train_dataset=str(tmp_path / "dd"), validation_split="dev", min_length_s=0.5)
    train, val = build_datasets(cfg, seed=0)
    assert isinstance(train, HFAudioDataset) and (len(train), len(val)) == (6, 3)
    with pytest.raises(ValueError, match="split 'test' not in"):
        build_datasets(DataConfig(train_dataset=str(tmp_path / "dd"), train_split="test"))

    cfg = DataConfig(
        train_dataset=str(tmp_path / "dd"),
        streaming=True,
        min_length_s=0.5,
        max_validation_items=2,
        shuffle_buffer=0,
    )
    stream, val = build_datasets(cfg, seed=0)
    assert isinstance(stream, StreamingAudioDataset) and len(val) == 2
    val_ids = [int(round(float(val[i]["waveform"][0]))) for i in range(2)]
    train_ids = [int(round(float(x["waveform"][0]))) for x in stream]
    assert sorted(val_ids + train_ids) == list(range(6)) and len(train_ids) == 4


def first_ids(items) -> list[int]:
    return [int(round(float(x["waveform"][0]))) for x in items]


@pytest.mark.parametrize("with_paths", [True, False])
def test_streaming_hold_out_is_excluded_on_every_rank_and_worker(
    tmp_path, no_torchcodec, with_paths
):
    # 4 parquet shards of 8 rows: the first 8 examples (shard 0) are held out. Skipping them
    # would skip 8 / 4 = 2 rows of each shard once the stream is split by rank or worker.
    table = streaming_table(32)
    if not with_paths:
        table = table.map(lambda ex: {"audio": {**ex["audio"], "path": None}})
    (tmp_path / "pq").mkdir()
    for shard in range(4):
        table.select(range(8 * shard, 8 * shard + 8)).to_parquet(
            str(tmp_path / "pq" / f"train-{shard:05d}-of-00004.parquet")
        )
    cfg = DataConfig(
        train_dataset=str(tmp_path / "pq"),
        streaming=True,
        min_length_s=0.5,
        max_length_s=2.0,
        max_validation_items=8,
        shuffle_buffer=0,
    )
    per_rank = []
    for rank in range(2):
        train, val = build_datasets(cfg, seed=0, rank=rank, world_size=2)
        per_rank.append(first_ids(train))
    assert first_ids(val[i] for i in range(len(val))) == list(range(8))
    assert sorted(per_rank[0] + per_rank[1]) == list(range(8, 32))
    # Each rank reads 2 whole shards (one of them the held-out shard 0): 8 and 16 items.
    assert sorted(map(len, per_rank)) == [8, 16]

    train, _ = build_datasets(cfg, seed=0)
    batches = list(build_dataloader(train, batch_size=1, num_workers=2))
    assert sorted(first_values(batches)) == list(range(8, 32))

    # Exact resume of a rank's filtered stream.
    train, _ = build_datasets(cfg, seed=0, rank=1, world_size=2)
    reference = list(build_dataloader(train, batch_size=2))
    loader = train.track(build_dataloader(train, batch_size=2))
    consumed = [next(loader), next(loader)]
    state = train.state_dict()
    resumed, _ = build_datasets(cfg, seed=0, rank=1, world_size=2)
    resumed.load_state_dict(state)
    rest = list(resumed.track(build_dataloader(resumed, batch_size=2)))
    assert first_values(consumed + rest) == first_values(reference) == per_rank[1]


@pytest.mark.parametrize("streaming", [False, True])
def test_validation_split_of_a_single_saved_dataset_is_refused(tmp_path, no_torchcodec, streaming):
    from datasets import NamedSplit

    table = streaming_table(6)
    table._split = NamedSplit("test")  # its own split name is served, as is "train"
    table.save_to_disk(str(tmp_path / "single"))
    cfg = DataConfig(
        train_dataset=str(tmp_path / "single"),
        validation_split="test",
        min_length_s=0.5,
        streaming=streaming,
    )
    with pytest.raises(ValueError, match=r"single\s+dataset \(one split\)"):
        build_datasets(cfg)
    cfg = DataConfig(
        train_dataset=str(tmp_path / "single"),
        min_length_s=0.5,
        streaming=streaming,
        max_validation_items=2,
        shuffle_buffer=0,
    )
    _, val = build_datasets(cfg)  # the hold-out still works
    assert len(val) == (2 if streaming else 1)


def test_validation_dir_inside_train_dir_is_refused(tmp_path):
    for i in range(6):
        write(tmp_path / ("dev" if i >= 4 else "train") / f"{i}.wav", ramp(SR, offset=i))
    cfg = DataConfig(train_dir=str(tmp_path), validation_dir=str(tmp_path / "dev"))
    with pytest.raises(ValueError, match="validation_dir .*dev shares 2 of its 2"):
        build_datasets(cfg)
    cfg = DataConfig(train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "dev"))
    train, val = build_datasets(cfg)
    assert (len(train), len(val)) == (4, 2)


# ------------------------------------------------------------------------------------------
# Synthetic audio
# ------------------------------------------------------------------------------------------


def test_synthetic_corpus_is_deterministic_and_in_range(tmp_path):
    paths = write_synthetic_corpus(tmp_path / "a", 4, (2.0, 3.0), seed=11)
    again = write_synthetic_corpus(tmp_path / "b", 4, (2.0, 3.0), seed=11)
    other = write_synthetic_corpus(tmp_path / "c", 1, (2.0, 3.0), seed=12)
    assert [p.name for p in paths] == [f"synthetic_{i:05d}.wav" for i in range(4)]
    for p, q in zip(paths, again, strict=True):
        assert p.read_bytes() == q.read_bytes()
    assert paths[0].read_bytes() != other[0].read_bytes()
    for p in paths:
        info = sf.info(p)
        assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
        assert 2.0 <= info.duration <= 3.0
    assert not list((tmp_path / "a").glob(".*tmp"))  # no temporary file left behind
    with pytest.raises(ValueError, match="seconds_range"):
        write_synthetic_corpus(tmp_path, 1, (3.0, 2.0))


def test_synthetic_waveform_is_speech_like():
    wave = synthetic_waveform(3.0, np.random.default_rng(0))
    assert wave.dtype == np.float32 and wave.shape == (3 * SR,)
    assert np.all(np.isfinite(wave)) and 0.3 < np.abs(wave).max() <= 1.0
    np.testing.assert_array_equal(wave, synthetic_waveform(3.0, np.random.default_rng(0)))

    frames = wave[: len(wave) // 320 * 320].reshape(-1, 320)  # 20 ms frames
    rms_db = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12)
    loud = rms_db > rms_db.max() - 10
    assert 0.15 < loud.mean() < 0.8  # syllables and pauses, not a steady tone
    assert (rms_db < rms_db.max() - 30).mean() > 0.05  # pauses near the noise floor

    # Voiced frames are periodic with a pitch period between 1/250 and 1/90 s.
    start = int(np.argmax(rms_db)) * 320
    segment = wave[start : start + 640].astype(np.float64)
    segment -= segment.mean()
    corr = np.correlate(segment, segment, "full")[len(segment) - 1 :]
    corr /= corr[0]
    lag = 40 + int(np.argmax(corr[40:200]))
    assert SR / 250 <= lag <= SR / 90 or SR / 250 <= lag / 2 <= SR / 90
    assert corr[lag] > 0.5


# ------------------------------------------------------------------------------------------
# Real data (skipped when ../shared/data is absent)
# ------------------------------------------------------------------------------------------


def test_librispeech_mini_train_clean_100():
    root = LIBRISPEECH / "train-clean-100"
    if not root.is_dir():
        pytest.skip("../shared/data/librispeech-mini is absent (real audio for this test)")
    cfg = DataConfig(train_dir=str(root), max_validation_items=4)
    train, val = build_datasets(cfg, seed=0)
    assert len(train) == 251 - 4 and len(val) == 4  # a fixed-seed hold-out of 4 of 251 files
    for path, length in zip(train.files[:5], train.lengths[:5], strict=True):
        info = sf.info(path)
        assert info.samplerate == SR and info.channels == 1 and length == info.frames
    sampler = ShardedRandomSampler(len(train), seed=0)
    batch = next(iter(build_dataloader(train, batch_size=4, sampler=sampler)))
    assert batch["waveforms"].shape[0] == 4 and batch["waveforms"].shape[1] <= 4 * SR
    assert torch.all(batch["lengths"] <= 4 * SR) and torch.all(batch["lengths"] >= SR)


def test_hf_read_time_failures_keep_their_reason(no_torchcodec):
    """A row that fails only when decoded is recorded with its own reason (what run summaries
    count), as a file of a folder is: silent, non-finite, not all "invalid"."""
    from datasets import Audio, Dataset

    silent = wav_bytes(np.zeros(SR, dtype=np.float32))
    nan = ramp(SR, offset=1)
    nan[5] = np.nan
    cells = [{"bytes": wav_bytes(ramp(SR, offset=0)), "path": "0.wav"},
             {"bytes": silent, "path": "silent.wav"},
             {"bytes": wav_bytes(nan), "path": "nan.wav"}]
    table = Dataset.from_dict({"audio": cells}).cast_column("audio", Audio(decode=False))
    ds = HFAudioDataset(table, max_length_s=None, min_length_s=0.5)
    item = ds[1]  # rows 1 and 2 fail at read time; row 0 replaces them
    assert item["index"] == 0
    assert item["skipped"] == [("row 1", "silent"), ("row 2", "non-finite")]
    assert ds.skipped == {"row 1": "silent", "row 2": "non-finite"}


def test_an_audio_column_of_decoded_arrays_is_refused_in_one_line(no_torchcodec):
    """``{"array", "sampling_rate"}`` cells are not encoded audio: casting them to
    ``Audio(decode=False)`` would need torchcodec; the column is refused, named, instead."""
    from datasets import Dataset

    table = Dataset.from_dict({"speech": [{"array": ramp(SR).tolist(), "sampling_rate": SR}]})
    with pytest.raises(ValueError, match="audio_column 'speech' holds decoded arrays"):
        HFAudioDataset(table, "speech", max_length_s=None, min_length_s=0.5)
    with pytest.raises(ValueError, match="audio_column 'speech' holds decoded arrays"):
        StreamingAudioDataset(table.to_iterable_dataset(), "speech", max_length_s=None,
                              min_length_s=0.5)


def test_audio_below_symlinked_folders_is_listed_once_and_loops_end(tmp_path):
    """A corpus folder made of links to subsets (LibriSpeech train-960 -> train-clean-100, ...)
    is searched through its links; a link back up the tree (a loop) or a second link to a
    folder already searched adds nothing, and a link to itself is skipped."""
    store = tmp_path / "store"
    a = write(store / "clean-100" / "spk" / "a.wav", ramp(SR))
    b = write(store / "other-500" / "b.wav", ramp(SR))
    corpus = tmp_path / "train-960"
    (corpus / "real").mkdir(parents=True)
    c = write(corpus / "real" / "c.WAV", ramp(SR))
    (corpus / "clean-100").symlink_to(store / "clean-100")
    (corpus / "other-500").symlink_to(store / "other-500")
    (corpus / "again").symlink_to(store / "other-500")  # the same folder a second time
    (corpus / "real" / "up").symlink_to(corpus)  # a loop
    (corpus / "self").symlink_to(corpus / "self")  # a link to itself
    files = list_audio_files(corpus)
    assert files == sorted(files)
    assert sorted(f.resolve() for f in files) == sorted(p.resolve() for p in (a, b, c))
    assert corpus / "clean-100" / "spk" / "a.wav" in files
