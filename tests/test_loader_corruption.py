"""augmentation.in_loader: the student's input corrupted in the DataLoader's collate function."""

from __future__ import annotations

import itertools
import json
import logging
import os

import numpy as np
import pytest
import torch
from conftest import tiny_run_config

from robustdistill.augment import AugmentationConfig, Corruptor, LoaderCorruption
from robustdistill.augment.corruption import LOADER_STREAM
from robustdistill.config import ConfigError
from robustdistill.trainer import _Run, train


def _corruptor(**options) -> Corruptor:
    cfg = AugmentationConfig(noise_dir=None, rir_dir=None, num_simulated_rooms=2,
                             room_max_order=2, **options)
    return Corruptor.from_config(cfg, seed=0)


def test_each_row_is_its_items_own_corruption_whatever_the_batch():
    """Row b is ``corrupt`` of item b's real samples with the rng of (seed, stream, epoch,
    index): the same in any batch position and any batch, zero past the length."""
    corruptor = _corruptor(p_noise=0.5, p_reverb=0.0, p_noise_reverb=0.5, p_none=0.0)
    rng = np.random.default_rng(1)
    items = [{"waveform": rng.standard_normal(n).astype(np.float32) * 0.1, "index": i,
              "epoch": e} for n, i, e in ((1600, 3, 0), (1200, 7, 2))]
    collate = LoaderCorruption(corruptor, seed=5)
    batch = collate(items)
    assert batch["noisy"].shape == batch["waveforms"].shape == (2, 1600)
    for b, item in enumerate(items):
        n = len(item["waveform"])
        expected, _ = corruptor.corrupt(item["waveform"], np.random.default_rng(
            [5, LOADER_STREAM, item["epoch"], item["index"]]))
        np.testing.assert_array_equal(batch["noisy"][b, :n].numpy(), expected)
        assert not np.allclose(expected, item["waveform"])  # corrupted, not copied
    assert torch.count_nonzero(batch["noisy"][1, 1200:]) == 0
    alone = collate(items[::-1])  # another position: the same rows
    torch.testing.assert_close(alone["noisy"][1], batch["noisy"][0], rtol=0, atol=0)
    again = LoaderCorruption(corruptor, seed=6)(items)  # another seed: other corruptions
    assert not torch.equal(again["noisy"], batch["noisy"])


def test_bad_uses_are_refused():
    with pytest.raises(ValueError, match="curriculum_steps 0"):
        AugmentationConfig(in_loader=True, curriculum_steps=10)
    with pytest.raises(ValueError, match="without curriculum"):
        LoaderCorruption(_corruptor(curriculum_steps=10), seed=0)
    with pytest.raises(ValueError, match="map-style"):
        LoaderCorruption(_corruptor(), seed=0)([{"waveform": np.zeros(800, np.float32),
                                                 "index": 0}])


def _config(tmp_path, teacher_dir, out, **extra):
    return tiny_run_config(tmp_path, teacher_dir, out, **{
        "augmentation.in_loader": "true", "training.max_steps": 3, **extra})


def _losses(cfg, steps=3):
    run = _Run(cfg)
    batches = run._batches()
    values = [run.train_step(batches) for _ in range(steps)]
    for v in values:
        v.pop("data_wait_seconds")
    return values


def test_in_loader_losses_do_not_depend_on_workers_and_differ_from_in_step(
        tmp_path, tiny_wavlm_dir):
    """The corruption is a function of the items, not of the worker that made it; the
    option is in effect (another random stream than the step's)."""
    zero = _losses(_config(tmp_path, tiny_wavlm_dir, "w0", **{"data.num_workers": 0}))
    two = _losses(_config(tmp_path, tiny_wavlm_dir, "w2", **{"data.num_workers": 2}))
    in_step = _losses(_config(tmp_path, tiny_wavlm_dir, "s", **{"augmentation.in_loader": "false"}))
    assert zero == two
    assert [v["loss"] for v in zero] != [v["loss"] for v in in_step]


def _batches(run, count):
    batches = run._batches()
    return [{key: batch[key] for key in ("waveforms", "noisy", "indices")}
            for batch in itertools.islice(batches, count)]


def test_map_style_workers_start_once_and_give_the_batches_of_no_workers(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    """Three epochs (6 training items, batch 2: 3 batches each) with 2 DataLoader workers:
    2 workers started, not 2 per epoch (0.1-0.25 s each epoch, docs/performance.md), and the
    batches, corruption made in the workers included, those of no workers."""
    import robustdistill.data.batching as batching

    started = tmp_path / "workers.txt"

    def record(worker_id):  # in the forked worker
        with started.open("a") as handle:
            handle.write(f"{os.getpid()}\n")

    monkeypatch.setattr(batching, "worker_outlives_sigterm", record)
    two = _Run(_config(tmp_path, tiny_wavlm_dir, "w2", **{"data.num_workers": 2}))
    kept = _batches(two, 9)
    assert len(set(started.read_text().split())) == 2
    assert two.progress.epoch == 2 and two.valid_loader.persistent_workers is False
    zero = _batches(_Run(_config(tmp_path, tiny_wavlm_dir, "w0", **{"data.num_workers": 0})), 9)
    for a, b in zip(kept, zero, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert len({tuple(b["indices"].tolist()) for b in zero}) > 3  # epochs differ


def test_more_workers_than_cpus_are_kept_with_one_line_of_ours(tmp_path, tiny_wavlm_dir,
                                                               monkeypatch, caplog, recwarn):
    """A recipe's data.num_workers 8 on a smaller machine: torch warned twice per loader (a
    UserWarning of three lines, at construction and when the workers start); now one start-up
    line, and the configured number is used (a streamed run resumes only with it)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # a process on 1 CPU
    with caplog.at_level(logging.WARNING, logger="robustdistill"):
        run = _Run(_config(tmp_path, tiny_wavlm_dir, "w2", **{"data.num_workers": 2}))
        _batches(run, 1)
    assert run.loader.num_workers == 2
    lines = [r.getMessage() for r in caplog.records if "num_workers" in r.getMessage()]
    assert lines == ["data.num_workers 2 is more than the 1 CPUs this process may use: kept as "
                     "configured (a streamed run resumes only with the number it started with), "
                     "the workers share the CPUs; --data.num_workers 1 suits this machine if "
                     "data_wait_share is high"]
    assert not [w for w in recwarn if "worker processes" in str(w.message)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_in_loader_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_wavlm_dir,
                                                           monkeypatch, die_at_checkpoint,
                                                           num_workers):
    """Killed while writing its third checkpoint, resumed from the second: the same final
    parameters as a run that was never stopped (every corruption replayed from its item),
    across two epoch ends (3 steps an epoch); with 2 workers, kept across the epochs in the
    uninterrupted run, started again by the resumed one."""
    def sha(out):
        state = json.loads((tmp_path / out / "final_state.json").read_text())
        return state["parameter_sha256_per_rank"][0]

    options = {"training.max_steps": 7, "training.save_every": 1,
               "data.num_workers": num_workers}
    train(_config(tmp_path, tiny_wavlm_dir, "full", **options))
    die_at_checkpoint(3)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, tiny_wavlm_dir, "part", **options))
    monkeypatch.undo()
    train(_config(tmp_path, tiny_wavlm_dir, "part", **options,
                  **{"training.resume_from": "latest"}))
    assert sha("part") == sha("full")


def test_in_loader_refuses_a_streaming_dataset(tmp_path, tiny_wavlm_dir):
    """A `datasets` stream's items carry no epoch: a start-up error, not a crash mid-run."""
    from datasets import Audio, Dataset

    from robustdistill.synthetic import write_synthetic_corpus

    files = write_synthetic_corpus(tmp_path / "wavs", 4, (0.6, 1.0), seed=5)
    table = Dataset.from_dict({"audio": [str(f) for f in files]})
    table.cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "hf"))
    cfg = _config(tmp_path, tiny_wavlm_dir, "stream")
    cfg.data.synthetic_items = None
    cfg.data.train_dataset, cfg.data.streaming = str(tmp_path / "hf"), True
    cfg.data.validation_dir = str(tmp_path / "wavs")
    with pytest.raises(ConfigError, match="map-style"):
        _Run(cfg)
