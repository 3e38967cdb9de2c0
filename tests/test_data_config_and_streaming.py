"""Mutation-testing additions for robustdistill.data: DataConfig's range checks, the streaming
dataset's argument checks, shuffle reseeding, boundary length, resume state and set_epoch, the
identity of a held-out streamed example (path and all its bytes), datasets' sleep at the end of
a shuffled Parquet stream, Hugging Face loading of decoded columns and single saved datasets,
and the map-style hold-out size."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from robustdistill.data import (
    DataConfig,
    StreamingAudioDataset,
    build_dataloader,
    build_datasets,
    load_hf_split,
)

SR = 16_000


@pytest.fixture
def no_torchcodec(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec", None)


def ramp(num_samples: int, offset: float = 0.0) -> np.ndarray:
    return (offset + np.arange(num_samples) / (4 * num_samples)).astype(np.float32)


def wav_bytes(waveform: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, waveform, SR, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def table(cells):
    from datasets import Audio, Dataset

    return Dataset.from_dict({"audio": cells}).cast_column("audio", Audio(decode=False))


def ramp_table(num_items: int, first: int = 0):
    return table([{"bytes": wav_bytes(ramp(SR + i, offset=i)), "path": f"{i}.wav"}
                  for i in range(first, first + num_items)])


def ids(items) -> list[int]:
    return [int(round(float(x["waveform"][0]))) for x in items]


def batch_ids(batches) -> list[int]:
    return [int(round(float(w[0]))) for b in batches for w in b["waveforms"]]


# ---- DataConfig ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "field_name"), [
    ({"synthetic_items": -1}, "synthetic_items"),
    ({"min_length_s": -0.5}, "min_length_s"),
    ({"validation_fraction": 0.0}, "validation_fraction"),
    ({"max_validation_items": 0}, "max_validation_items"),
    ({"shuffle_buffer": -1}, "shuffle_buffer"),
    ({"train_dataset": "d", "validation_split": "train"}, "validation_split"),
    ({"audio_column": ""}, "audio_column"),
    ({"synthetic_seconds": [0.0, 2.0]}, "synthetic_seconds"),
    ({"synthetic_seconds": [1.0, 2.0, 3.0]}, "synthetic_seconds"),
    ({"train_dir": "a", "dataset_config": "clean"}, "dataset_config"),
])
def test_data_config_rejects_out_of_range_values_naming_the_field(kwargs, field_name):
    with pytest.raises(ValueError, match=rf"^DataConfig\.{field_name}:"):
        DataConfig(**kwargs)


def test_data_config_boundaries_that_are_allowed():
    cfg = DataConfig(min_length_s=0.0, validation_fraction=1e-6, max_validation_items=1,
                     shuffle_buffer=0, synthetic_seconds=[1.5, 1.5], max_length_s=1.0)
    assert cfg.synthetic_seconds == [1.5, 1.5]
    assert DataConfig(min_length_s=2.0, max_length_s=2.0).min_length_s == 2.0


# ---- StreamingAudioDataset -------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rank": 2, "world_size": 2}, "rank < world_size"),
    ({"rank": -1, "world_size": 2}, "rank < world_size"),
    ({"min_length_s": 3.0, "max_length_s": 2.0}, "min_length_s 3.0 > max_length_s 2.0"),
    ({"seed": -1}, "seed, shuffle_buffer and num_workers must be >= 0"),
    ({"shuffle_buffer": -2}, "seed, shuffle_buffer and num_workers must be >= 0"),
    ({"num_workers": -1}, "seed, shuffle_buffer and num_workers must be >= 0"),
])
def test_streaming_dataset_rejects_bad_arguments(kwargs, message, no_torchcodec):
    with pytest.raises(ValueError, match=message):
        StreamingAudioDataset(ramp_table(2).to_iterable_dataset(), **kwargs)


def test_shuffle_buffer_order_depends_on_seed_and_epoch_and_repeats(no_torchcodec):
    stream = ramp_table(16).to_iterable_dataset(num_shards=4)

    def order(seed, epoch):
        ds = StreamingAudioDataset(stream, max_length_s=None, min_length_s=0.5, seed=seed,
                                   shuffle_buffer=8)
        ds.set_epoch(epoch)
        return ids(ds)

    first = order(0, 0)
    assert sorted(first) == list(range(16))
    assert order(0, 0) == first  # deterministic
    assert order(0, 1) != first  # the epoch reseeds the shuffle
    assert order(1, 0) != first  # so does the seed


def test_an_item_of_exactly_min_length_is_kept(no_torchcodec):
    cells = [{"bytes": wav_bytes(ramp(SR // 2 + d, offset=i)), "path": f"{i}.wav"}
             for i, d in enumerate((0, -1, 1))]
    ds = StreamingAudioDataset(table(cells).to_iterable_dataset(), max_length_s=None,
                               min_length_s=0.5)
    assert [x["index"] for x in ds] == [0, 2] and ds.skipped == 1


def test_resume_restores_the_skip_count_and_set_epoch_drops_a_loaded_state(no_torchcodec):
    cells = [{"bytes": wav_bytes(ramp(SR, offset=i)), "path": f"{i}.wav"} for i in range(8)]
    cells[1] = {"bytes": b"not audio", "path": "bad.wav"}
    stream = table(cells).to_iterable_dataset(num_shards=1)
    ds = StreamingAudioDataset(stream, max_length_s=None, min_length_s=0.5)
    batches = ds.track(build_dataloader(ds, 1))
    consumed = [next(batches) for _ in range(3)]  # items 0, 2, 3: the bad one was skipped
    assert batch_ids(consumed) == [0, 2, 3]
    state = ds.state_dict()
    assert state == {"epoch": 0, "num_workers": 0, "skipped": 1, "skipped_complete": True,
                     "consumed": [[3, 3, 4]]}

    resumed = StreamingAudioDataset(stream, max_length_s=None, min_length_s=0.5)
    resumed.load_state_dict(state)
    assert resumed.skipped == 1
    assert ids(resumed) == [4, 5, 6, 7] and resumed.skipped == 1

    fresh = StreamingAudioDataset(stream, max_length_s=None, min_length_s=0.5)
    fresh.load_state_dict(state)
    fresh.set_epoch(0)  # (re)starting an epoch discards the loaded mid-epoch state
    assert ids(fresh) == [0, 2, 3, 4, 5, 6, 7]
    assert fresh.state_dict()["consumed"] == [[0, 0, 0]]

    older = StreamingAudioDataset(stream, max_length_s=None, min_length_s=0.5)
    older.load_state_dict({"epoch": 0, "position": 4, "skipped": 1, "stream": {}})  # before
    assert ids(older) == [4, 5, 6, 7]  # replay: continues at the saved position
    other = StreamingAudioDataset(stream, max_length_s=None, min_length_s=0.5, num_workers=2)
    with pytest.raises(ValueError, match="saved with 0 DataLoader worker.*read by 2"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="DataLoader has 0 worker.*num_workers=2"):
        next(other.track(build_dataloader(other, 1)))  # its state would name the wrong workers


@pytest.mark.parametrize(("shuffle_buffer", "num_workers"), [(4, 0), (0, 2), (4, 2)])
def test_a_stream_resumed_after_any_batch_gives_the_uninterrupted_batches(
        shuffle_buffer, num_workers, no_torchcodec):
    """Exact replay: 18 rows in 3 shards shared by 2 workers (one reads two shards: the other
    runs out turns earlier), an unreadable and a too-short row; cut after every batch of epoch
    1 (shards reordered),
    resume in a new dataset and loader: the batches (crops, indices, workers) equal the
    uninterrupted epoch's. Before replay, the shuffle buffer's examples were lost and a run
    with workers restarted the epoch."""
    cells = [{"bytes": wav_bytes(ramp(SR + i, offset=i)), "path": f"{i}.wav"}
             for i in range(18)]
    cells[1] = {"bytes": b"not audio", "path": "bad.wav"}
    cells[8] = {"bytes": wav_bytes(ramp(SR // 10, offset=8)), "path": "short.wav"}
    stream = table(cells).to_iterable_dataset(num_shards=3)

    def dataset():
        return StreamingAudioDataset(stream, max_length_s=0.5, min_length_s=0.5, seed=3,
                                     shuffle_buffer=shuffle_buffer, num_workers=num_workers)

    def batches(ds):
        return ds.track(build_dataloader(ds, 2, num_workers=num_workers))

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in ("waveforms", "indices", "workers"))

    ds = dataset()
    ds.set_epoch(1)
    reference = list(batches(ds))
    assert sorted(batch_ids(reference)) == [
        i for i in range(18) if i not in (1, 8)]
    assert ds.skipped == 2  # with workers too (before 2026-12-07: 0, the workers' counts)
    if num_workers:  # one worker runs out 2 or more turns before the other
        workers = [int(b["workers"][0]) for b in reference]
        assert abs(workers.count(0) - workers.count(1)) >= 2
    for cut in range(len(reference) + 1):
        ds = dataset()
        ds.set_epoch(1)
        taken = batches(ds)
        first = [next(taken) for _ in range(cut)]
        state = json.loads(json.dumps(ds.state_dict()))  # as training_state.json keeps it
        resumed = dataset()
        resumed.load_state_dict(state)
        rest = list(batches(resumed))
        assert len(first) + len(rest) == len(reference), cut
        assert resumed.skipped == 2, cut  # each skip once, a batch given again or not
        assert all(same(a, b) for a, b in zip(first + rest, reference, strict=True)), cut


def test_a_stream_read_by_workers_counts_the_skips_of_the_examples_consumed(no_torchcodec):
    """Two workers, one shard each, unreadable and too-short rows inside and at the end of
    each worker's stream: the skips before a worker's last consumed batch are counted as it is
    taken, the ones after its last item when the epoch ends; the state keeps the count."""
    cells = [{"bytes": wav_bytes(ramp(SR + i, offset=i)), "path": f"{i}.wav"}
             for i in range(8)]
    for i in (1, 3):  # worker 0's stream: 0, bad, 2, bad (after its last item)
        cells[i] = {"bytes": b"not audio", "path": f"bad{i}.wav"}
    for i in (5, 7):  # worker 1's stream: 4, short, 6, short (after its last item)
        cells[i] = {"bytes": wav_bytes(ramp(SR // 10, offset=i)), "path": f"short{i}.wav"}
    stream = table(cells).to_iterable_dataset(num_shards=2)

    def dataset():
        return StreamingAudioDataset(stream, max_length_s=None, min_length_s=0.5,
                                     num_workers=2)

    ds = dataset()
    taken = ds.track(build_dataloader(ds, 2, num_workers=2))
    first = next(taken)  # worker 0: positions 0 and 2, the bad one between
    assert first["indices"].tolist() == [0, 2] and ds.skipped == 1
    state = ds.state_dict()
    assert (state["skipped"], state["skipped_complete"]) == (1, True)
    assert [b["indices"].tolist() for b in taken] == [[0, 2]] and ds.skipped == 4
    resumed = dataset()
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert len(list(resumed.track(build_dataloader(resumed, 2, num_workers=2)))) == 1
    assert resumed.skipped == 4
    older = dataset()  # a state saved with workers before they were counted: not complete
    older.load_state_dict({k: v for k, v in state.items() if k != "skipped_complete"})
    assert not older.skipped_complete


# ---- the streaming hold-out and its identity of examples -------------------------------------


def _parquet_dataset(tmp_path, cells) -> str:
    folder = tmp_path / "pq"
    folder.mkdir()
    table(cells).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return str(folder)


def test_a_training_copy_of_a_held_out_file_under_another_path_stays_in_training(
        tmp_path, no_torchcodec):
    """Identity is (path, bytes): the same audio bytes under another path are another
    example, kept for training."""
    cells = [{"bytes": wav_bytes(ramp(SR + i, offset=i)), "path": f"{i}.wav"} for i in range(4)]
    cells += [{"bytes": cells[0]["bytes"], "path": "copy/0.wav"},
              {"bytes": cells[1]["bytes"], "path": "copy/1.wav"}]
    cfg = DataConfig(train_dataset=_parquet_dataset(tmp_path, cells), streaming=True,
                     min_length_s=0.5, max_validation_items=2,
                     shuffle_buffer=0)
    train, val = build_datasets(cfg)
    assert ids(val[i] for i in range(len(val))) == [0, 1]
    assert sorted(ids(train)) == [0, 1, 2, 3]  # 2, 3 and the two copies of 0 and 1


def test_held_out_identity_uses_all_the_bytes(tmp_path, no_torchcodec):
    """Path-less cells that differ only in their last sample are different examples."""
    base = ramp(SR)
    changed = base.copy()
    changed[-1] = 0.9
    cells = [{"bytes": wav_bytes(base), "path": None},
             {"bytes": wav_bytes(ramp(SR, offset=2)), "path": None},
             {"bytes": wav_bytes(changed), "path": None},
             {"bytes": wav_bytes(base), "path": None}]  # an exact duplicate of the held-out one
    cfg = DataConfig(train_dataset=_parquet_dataset(tmp_path, cells), streaming=True,
                     min_length_s=0.5, max_validation_items=1, shuffle_buffer=0)
    train, val = build_datasets(cfg)
    kept = [x["waveform"] for x in train]
    assert len(val) == 1 and len(kept) == 2
    assert kept[1][-1] == pytest.approx(0.9)


def test_streaming_validation_split_is_read_from_that_split(tmp_path, no_torchcodec):
    from datasets import DatasetDict

    DatasetDict({"train": ramp_table(5), "dev": ramp_table(3, first=10)}).save_to_disk(
        str(tmp_path / "dd"))
    cfg = DataConfig(train_dataset=str(tmp_path / "dd"), validation_split="dev",
                     streaming=True, min_length_s=0.5, shuffle_buffer=0)
    train, val = build_datasets(cfg)
    assert ids(val[i] for i in range(len(val))) == [10, 11, 12]
    assert sorted(ids(train)) == [0, 1, 2, 3, 4]


# ---- datasets' sleep at the end of a shuffled Parquet stream ----------------------------------


class _Sleeps:
    """Calls of ``time.sleep`` of a positive duration, recorded instead of slept, in shared
    memory so that DataLoader workers (forked) record too: one row per process (the main one,
    then each worker's), so that no two processes add to the same numbers."""

    def __init__(self, processes: int = 4) -> None:
        self.rows = torch.zeros(processes, 2, dtype=torch.float64).share_memory_()

    def __call__(self, seconds: float) -> None:
        if seconds > 0:
            worker = torch.utils.data.get_worker_info()
            self.rows[0 if worker is None else worker.id + 1] += torch.tensor([1.0, seconds])

    def tolist(self) -> list[float]:
        """``[calls, their total seconds]`` over all processes."""
        return self.rows.sum(0).tolist()

    def zero_(self) -> None:
        self.rows.zero_()


@pytest.fixture
def sleeps(monkeypatch):
    """``time.sleep`` (the one ``datasets.iterable_dataset`` calls) replaced by a
    :class:`_Sleeps` recorder."""
    import datasets.iterable_dataset

    recorder = _Sleeps()
    monkeypatch.setattr(datasets.iterable_dataset.time, "sleep", recorder)
    return recorder


def _parquet_shards(tmp_path, num_files: int = 3, per_file: int = 4) -> str:
    """A folder of ``num_files`` Parquet files, read by datasets' Parquet builder (the one
    whose streams sleep when they end)."""
    folder = tmp_path / "shards"
    folder.mkdir()
    for f in range(num_files):
        first = f * per_file
        ramp_table(per_file, first=first).to_parquet(
            str(folder / f"train-{f:05d}-of-{num_files:05d}.parquet"))
    return str(folder)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_shuffled_parquet_stream_ends_without_datasets_sleep(
        tmp_path, sleeps, num_workers, no_torchcodec):
    """datasets 5.x sleeps ``config.SLEEP_TIME_ON_THREADS_SHUTDOWN`` (5 s) whenever a
    shuffled Parquet stream ends (its shard interleaver's ``finally``), in every process
    reading one (here 3 files; 2 workers read 2 and 1): a stall per epoch. The dataset skips
    it at a natural end (the same batches, in the same order); ``stream_end_sleep`` keeps it.
    The first half fails when datasets changes that sleep: then re-read it and update
    ``_no_sleep_at_stream_end``."""
    import datasets

    from robustdistill.data.streaming import _datasets_sleep_skippable

    if not _datasets_sleep_skippable():
        pytest.fail(f"datasets {datasets.__version__} is not a version whose end-of-stream "
                    "sleep was checked (5.x, config.SLEEP_TIME_ON_THREADS_SHUTDOWN): re-read "
                    "its iterable_dataset.py and update _SLEEP_SKIP_VERIFIED_MAJOR")
    stream = load_hf_split(_parquet_shards(tmp_path), streaming=True)
    streams = max(num_workers, 1)  # each worker reads (and ends) its own stream
    seconds = datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN
    assert seconds == 5  # datasets 5.2.0's

    def epoch(keep: bool) -> list[dict]:
        ds = StreamingAudioDataset(stream, max_length_s=0.5, min_length_s=0.5, seed=3,
                                   shuffle_buffer=4, num_workers=num_workers,
                                   stream_end_sleep=keep)
        ds.set_epoch(1)
        return list(ds.track(build_dataloader(ds, 2, num_workers=num_workers)))

    kept = epoch(keep=True)  # datasets' own behaviour: the detector of a change in datasets
    assert sleeps.tolist() == [streams, streams * seconds]
    sleeps.zero_()
    skipped = epoch(keep=False)
    assert sleeps.tolist() == [0, 0]
    assert seconds == datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN  # restored
    assert sorted(batch_ids(skipped)) == list(range(12))
    assert len(skipped) == len(kept) and all(
        torch.equal(a[k], b[k]) for a, b in zip(skipped, kept, strict=True)
        for k in ("waveforms", "indices", "workers"))


def test_a_stream_closed_before_its_end_keeps_datasets_sleep(tmp_path, sleeps, no_torchcodec):
    """Only a natural end skips the sleep: a stream abandoned part-way (its Parquet scans
    unfinished: a run stopped mid-epoch) sleeps as datasets means it to, and the constant is
    never left at 0 between items."""
    import datasets

    stream = load_hf_split(_parquet_shards(tmp_path), streaming=True)
    ds = StreamingAudioDataset(stream, max_length_s=0.5, min_length_s=0.5, shuffle_buffer=4)
    items = iter(ds)
    next(items)
    assert datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN == 5  # between items
    items.close()
    assert sleeps.tolist() == [1, 5]


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_stream_ended_by_an_exception_inside_next_still_sleeps(
        tmp_path, sleeps, monkeypatch, error, no_torchcodec):
    """An interrupt while the stream waits on a shard's reader thread (here: the 4th wait of
    datasets' interleaver, ``Future.result``) ends datasets' interleaver inside the block that
    zeroes its sleep, the other scans part-way: the dataset sleeps datasets' 5 s itself (once)
    before the exception goes on, and the constant is restored. Without it a KeyboardInterrupt
    there could abort the interpreter at exit (terminate called without an active exception)."""
    import concurrent.futures

    import datasets

    stream = load_hf_split(_parquet_shards(tmp_path), streaming=True)
    ds = StreamingAudioDataset(stream, max_length_s=0.5, min_length_s=0.5, shuffle_buffer=4)
    result, waits = concurrent.futures.Future.result, [0]

    def interrupted(self, timeout=None):
        waits[0] += 1
        if waits[0] == 4:
            raise error("interrupted")
        return result(self, timeout)

    monkeypatch.setattr(concurrent.futures.Future, "result", interrupted)
    with pytest.raises(error, match="interrupted"):
        list(ds)
    assert sleeps.tolist() == [1, 5]
    assert datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN == 5


# ---- Hugging Face loading ----------------------------------------------------------------------


def test_a_decoding_audio_column_is_cast_to_undecoded(tmp_path, no_torchcodec):
    """A column saved as ``Audio()`` (decode=True, torchcodec) is read without torchcodec."""
    from datasets import Audio, Dataset

    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.wav")
        sf.write(files[-1], ramp(SR, offset=i), SR, subtype="FLOAT")
    saved = tmp_path / "saved"
    Dataset.from_dict({"audio": [str(f) for f in files]}).cast_column(
        "audio", Audio()).save_to_disk(str(saved))
    dataset = load_hf_split(str(saved))
    assert dataset.features["audio"].decode is False
    cfg = DataConfig(train_dataset=str(saved), min_length_s=0.5, max_validation_items=1)
    train, val = build_datasets(cfg)
    assert len(train) + len(val) == 3


def test_a_single_saved_dataset_serves_its_own_split_name(tmp_path, no_torchcodec):
    from datasets import NamedSplit

    single = ramp_table(4)
    single._split = NamedSplit("test")
    single.save_to_disk(str(tmp_path / "single"))
    assert len(load_hf_split(str(tmp_path / "single"), split="test")) == 4
    assert len(load_hf_split(str(tmp_path / "single"), split="train")) == 4
    with pytest.raises(ValueError, match="dataset_config 'clean' given for a saved dataset"):
        load_hf_split(str(tmp_path / "single"), config="clean")


# ---- map-style hold-out size -------------------------------------------------------------------


def _folder(tmp_path, count: int) -> str:
    for i in range(count):
        sf.write(tmp_path / f"{i}.wav", ramp(SR, offset=i), SR, subtype="FLOAT")
    return str(tmp_path)


def test_hold_out_leaves_at_least_one_training_item(tmp_path):
    cfg = DataConfig(train_dir=_folder(tmp_path, 2), validation_fraction=0.9)
    train, val = build_datasets(cfg)
    assert (len(train), len(val)) == (1, 1)


def test_hold_out_is_capped_by_max_validation_items(tmp_path):
    cfg = DataConfig(train_dir=_folder(tmp_path, 10), validation_fraction=0.5,
                     max_validation_items=2)
    train, val = build_datasets(cfg)
    assert (len(train), len(val)) == (8, 2)


@pytest.mark.parametrize("streaming", [False, True])
def test_a_folder_of_audio_files_as_a_dataset_without_torchcodec_is_one_clear_error(
        tmp_path, no_torchcodec, streaming):
    # datasets reads a folder of audio files with its audiofolder builder, which encodes each
    # path with torchcodec: an error at load time (a stream's only at its first row, which
    # used to be the first training step, in a DataLoader worker), now one ValueError at start-up
    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", ramp(SR), SR)
    with pytest.raises(ValueError, match=r"without torchcodec .*data\.train_dir"):
        load_hf_split(str(tmp_path), split="train", streaming=streaming)
