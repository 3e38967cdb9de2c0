"""Mutation-testing additions for robustdistill.data: per-worker crop streams of a streaming
dataset, the seed-independent hold-out, and the grid of crops read window by window."""

from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import torch

from robustdistill.audio import load_audio
from robustdistill.data import AudioFileDataset, DataConfig, StreamingAudioDataset, build_datasets

SR = 16_000


def _wav_bytes(wave: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, SR, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_streaming_crops_are_keyed_by_worker(monkeypatch):
    """DataLoader workers share a rank's shards; each worker's crops come from
    ``default_rng([seed, epoch, rank, worker, position])``, so two workers' first items of
    the same length get different crops instead of the same start."""
    from datasets import Audio, Dataset

    monkeypatch.setitem(sys.modules, "torchcodec", None)
    # Item i holds i + k / (4 SR): the first value of a crop gives its item and start.
    cells = [{"bytes": _wav_bytes((i + np.arange(SR) / (4 * SR)).astype(np.float32)),
              "path": f"{i}.wav"} for i in range(4)]
    table = Dataset.from_dict({"audio": cells}).cast_column("audio", Audio(decode=False))
    ds = StreamingAudioDataset(table.to_iterable_dataset(num_shards=2), max_length_s=0.5,
                               min_length_s=0.5, seed=3)
    starts = {}
    for worker in (0, 1):
        info = types.SimpleNamespace(id=worker, num_workers=2, seed=0, dataset=ds)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        items = list(ds)
        assert [x["index"] for x in items] == [0, 1]
        for x in items:
            first = float(x["waveform"][0])
            start = round((first - round(first)) * 4 * SR)
            expected = int(np.random.default_rng([3, 0, 0, worker, x["index"]]).integers(
                0, SR // 2 + 1))
            assert start == expected and x["waveform"].shape == (SR // 2,)
            starts[worker, x["index"]] = start
    assert starts[0, 0] != starts[1, 0] and starts[0, 1] != starts[1, 1]


def test_hold_out_depends_on_the_corpus_only(tmp_path):
    """The held-out validation items are a fixed-seed draw: the same for any run seed and any
    max_validation_items that does not bind."""
    held = []
    for seed, cap in ((0, 1000), (5, 3), (7, 50)):
        cfg = DataConfig(synthetic_items=12, synthetic_seconds=[1.0, 1.2],
                         synthetic_dir=str(tmp_path / "corpus"), max_length_s=1.0,
                         validation_fraction=0.25, max_validation_items=cap)
        train, val = build_datasets(cfg, seed=seed)
        assert (len(train), len(val)) == (9, 3)
        held.append([p.name for p in val.files])
    assert held[0] == held[1] == held[2]


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """A 121 s float WAV (read window by window) whose sample k holds k / 2**21."""
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, (np.arange(121 * SR) / 2**21).astype(np.float32), SR, subtype="FLOAT")
    return path


def test_windowed_crops_land_on_the_crop_grid(long_file):
    """Long files read crop by crop draw the start exactly as _crop_at does, grid included."""
    full = load_audio(long_file)
    ds = AudioFileDataset([long_file], max_length_s=1.0, min_length_s=0.5, seed=4)
    ds.crop_grid = 320
    for epoch in range(3):
        k = int(np.random.default_rng([4, epoch, 0]).integers(0, (len(full) - SR) // 320 + 1))
        item = ds[(0, epoch)]
        assert np.array_equal(item["waveform"], full[320 * k: 320 * k + SR])
