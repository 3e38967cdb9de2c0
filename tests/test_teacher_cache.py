"""Teacher feature cache: same losses as teacher-every-step, frame-grid slicing, invalidation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from robustdistill.config import load_config
from robustdistill.data.cropped import _crop, _crop_at, content_key
from robustdistill.teacher_cache import (
    CachedLayers,
    MissingEntryError,
    TeacherFeatureCache,
    build_cache,
    teacher_fingerprint,
)
from robustdistill.teachers import make_random_teacher
from robustdistill.trainer import _Run
from robustdistill.upstream import Upstream


@pytest.fixture(scope="module")
def teacher(tiny_wavlm_dir):
    return Upstream.from_pretrained(tiny_wavlm_dir)


def _config(tmp_path, teacher_dir, out, seconds, **extra):
    overrides = {
        "teacher": str(teacher_dir), "output_dir": str(tmp_path / out), "seed": 5,
        "data.synthetic_items": 8, "data.synthetic_seconds": f"[{seconds}, {seconds}]",
        "data.synthetic_dir": str(tmp_path / f"corpus{seconds}"), "data.batch_size": 2,
        "data.max_length_s": 1.0, "data.min_length_s": 0.5, "data.validation_fraction": 0.25,
        "augmentation.num_simulated_rooms": 2, "augmentation.room_max_order": 3,
        "objectives": "{layerwise: {teacher_layers: [1, 2]}, enhancement: {hidden_size: 8, num_layers: 1}}",
        "training.cpu": True, "training.report_to": "[]", "training.max_steps": 3,
        **extra,
    }
    argv = [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    return load_config(None, argv)


def _losses(cfg, steps=2, grid=None):
    """Training means of the first ``steps`` steps and one validation, from a fresh run."""
    run = _Run(cfg)
    if grid:  # the reference run crops on the same grid as the cached run
        run.train_set.crop_grid = run.valid_set.crop_grid = grid
    batches = run._batches()
    values = [run.train_step(batches) for _ in range(steps)]
    for v in values:
        v.pop("data_wait_seconds")
    return values + [run.validate()], run


@pytest.mark.parametrize(("context", "seconds"), [("crop", 1.5), ("utterance", 0.8)])
def test_cached_losses_equal_teacher_every_step(tmp_path, tiny_wavlm_dir, context, seconds):
    """Same seed, same data: the loss of every step (and validation) with cached float32
    targets equals teacher-every-step's. Crops are all 1 s (no padding: this tiny group-norm
    teacher, like HuBERT Base, depends on padding). Context utterance with 0.8 s utterances:
    the crop is the whole utterance, so both contexts must give the teacher's own values."""
    reference, ref_run = _losses(_config(tmp_path, tiny_wavlm_dir, "ref", seconds),
                                 grid=64)
    cached, run = _losses(_config(tmp_path, tiny_wavlm_dir, "cached", seconds,
                                  **{"teacher_cache.dir": str(tmp_path / "cache"),
                                     "teacher_cache.context": context,
                                     "teacher_cache.dtype": "float32"}))
    assert run.teacher_cache.misses > 0 and ref_run.teacher_cache is None
    for ref, got in zip(reference, cached, strict=True):
        assert ref.keys() == got.keys()
        for key in ref:
            if key in ("loss",) or "/" in key:
                assert got[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), key
    # A second run reads every target from the cache: no miss, the same losses again.
    again, run2 = _losses(_config(tmp_path, tiny_wavlm_dir, "again", seconds,
                                  **{"teacher_cache.dir": str(tmp_path / "cache"),
                                     "teacher_cache.context": context,
                                     "teacher_cache.dtype": "float32",
                                     "teacher_cache.missing": "error"}))
    assert run2.teacher_cache.misses == 0 and run2.teacher_cache.hits > 0
    for first, second in zip(cached, again, strict=True):
        assert first["loss"] == second["loss"]


def test_fp16_cache_changes_losses_by_less_than_fp16_precision(tmp_path, tiny_wavlm_dir):
    reference, _ = _losses(_config(tmp_path, tiny_wavlm_dir, "ref", 1.5), steps=1, grid=64)
    cached, _ = _losses(_config(tmp_path, tiny_wavlm_dir, "fp16", 1.5, **{
        "teacher_cache.dir": str(tmp_path / "cache16"), "teacher_cache.context": "crop"}),
        steps=1)
    for ref, got in zip(reference, cached, strict=True):
        assert got["loss"] == pytest.approx(ref["loss"], rel=2e-3)
        assert got["loss"] != ref["loss"]  # the fp16 rounding is really there


def test_utterance_context_slices_on_the_frame_grid(tmp_path, teacher):
    """A crop starting at 64 k samples gets utterance frames [k, k + frames(crop))."""
    cache = TeacherFeatureCache(tmp_path, teacher, [1, 2], dtype="float32")
    full = torch.randn(20_000) * 0.1
    key = content_key(full.numpy())
    with torch.no_grad():
        whole = teacher(full[None], torch.tensor([20_000])).hidden_states
    starts, n = [640, 3200], 8000
    batch = {"waveforms": torch.stack([full[s : s + n] for s in starts]),
             "lengths": torch.tensor([n, n]), "offsets": torch.tensor(starts),
             "keys": [key, key], "indices": torch.tensor([0, 0])}
    out = cache.targets(batch, full_waveform=lambda i: full.numpy())
    frames = int(teacher.frame_lengths(torch.tensor(n)))
    assert out.hidden_states[1].shape == (2, frames, teacher.hidden_size)
    for b, start in enumerate(starts):
        for layer in (1, 2):
            torch.testing.assert_close(out.hidden_states[layer][b],
                                       whole[layer][0, start // 64 : start // 64 + frames])
    assert (cache.misses, cache.hits) == (1, 1)  # one utterance entry serves both crops
    with pytest.raises(KeyError, match="teacher layer 0 is not in the teacher cache"):
        out.hidden_states[0]
    assert torch.equal(out.hidden_states[-1], out.hidden_states[2])
    batch["offsets"] = torch.tensor([640, 3201])
    with pytest.raises(ValueError, match="not on the teacher's 64-sample frame grid"):
        cache.targets(batch, full_waveform=lambda i: full.numpy())


def test_missing_error_mode_and_unprepared_batches(tmp_path, teacher):
    TeacherFeatureCache(tmp_path, teacher, [2])  # the folder of this spec, with no entry yet
    cache = TeacherFeatureCache(tmp_path, teacher, [2], missing="error")
    batch = {"waveforms": torch.zeros(1, 4000), "lengths": torch.tensor([4000]),
             "offsets": torch.tensor([0]), "keys": ["ab" * 32], "indices": torch.tensor([0])}
    with pytest.raises(FileNotFoundError, match="cache-teacher"):
        cache.targets(batch)
    del batch["keys"]
    with pytest.raises(KeyError, match="prepare_dataset"):
        cache.targets(batch)


def test_cache_is_invalidated_by_teacher_layers_context_and_dtype(tmp_path, tiny_wavlm_dir,
                                                                   teacher):
    base = TeacherFeatureCache(tmp_path, teacher, [1, 2])
    wave = torch.randn(4000) * 0.1
    key = content_key(wave.numpy())
    assert base.ensure(key, lambda: wave) and not base.ensure(key, lambda: wave)
    other_teacher = Upstream.from_pretrained(
        make_random_teacher("wavlm", "tiny", tmp_path / "other", seed=1))
    variants = [TeacherFeatureCache(tmp_path, other_teacher, [1, 2]),
                TeacherFeatureCache(tmp_path, teacher, [2]),
                TeacherFeatureCache(tmp_path, teacher, [1, 2], context="crop"),
                TeacherFeatureCache(tmp_path, teacher, [1, 2], dtype="float32")]
    paths = {base.path, *(v.path for v in variants)}
    assert len(paths) == 5  # every change is a different folder
    for variant in variants:
        assert not variant.entry_path(key, 0, 4000).exists()  # never reads base's entry
    # Same spec (layers in another order): the same folder, the entry is a hit.
    assert TeacherFeatureCache(tmp_path, teacher, [2, 1]).entry_path(key).exists()
    # One weight changed in place changes the fingerprint.
    before = teacher_fingerprint(teacher)
    with torch.no_grad():
        next(teacher.model.parameters()).view(-1)[0] += 1e-3
    try:
        assert teacher_fingerprint(teacher) != before
    finally:
        with torch.no_grad():
            next(teacher.model.parameters()).view(-1)[0] -= 1e-3
    # A folder whose manifest disagrees is refused, not read.
    manifest = base.path / "manifest.json"
    spec = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**spec, "layers": [7]}))
    with pytest.raises(ValueError, match="describes another cache"):
        TeacherFeatureCache(tmp_path, teacher, [1, 2])


def test_missing_error_without_a_cache_of_this_spec_is_refused_at_start_saying_why(
        tmp_path, tiny_wavlm_dir, teacher):
    """missing: error on a folder that holds only another teacher's cache (or nothing) is
    refused when the cache is made, naming what differs; before, it made an empty folder of
    this spec and every run failed at its first lookup with a bare "teacher cache miss"."""
    with pytest.raises(ValueError, match="holds no cache"):
        TeacherFeatureCache(tmp_path, teacher, [1, 2], missing="error")
    assert not list(tmp_path.iterdir())  # nothing written
    built = TeacherFeatureCache(tmp_path, teacher, [1, 2])
    other = Upstream.from_pretrained(make_random_teacher("wavlm", "tiny", tmp_path / "t", seed=1))
    with pytest.raises(ValueError, match=rf"{built.path.name} \(other teacher\)"):
        TeacherFeatureCache(tmp_path, other, [1, 2], missing="error")
    with pytest.raises(ValueError, match=r"other context, layers\)"):
        TeacherFeatureCache(tmp_path, teacher, [2], context="crop", missing="error")
    assert TeacherFeatureCache(tmp_path, teacher, [1, 2], missing="error").path == built.path
    # The folder cache-teacher prints as "path" given as the root: refused in both modes
    # (missing: compute built a second cache inside it, silently recomputing everything).
    for missing in ("compute", "error"):
        with pytest.raises(ValueError, match=rf"give its parent {tmp_path}"):
            TeacherFeatureCache(built.path, teacher, [1, 2], missing=missing)

def test_cached_layers_and_bad_options(teacher, tmp_path):
    layers = CachedLayers(3, {2: torch.ones(1)})
    assert len(layers) == 3 and layers[-1] is layers[2]
    with pytest.raises(KeyError, match=r"cached: \[2\]"):
        layers[1]
    with pytest.raises(ValueError, match="outside"):
        TeacherFeatureCache(tmp_path, teacher, [3])
    with pytest.raises(ValueError, match="context"):
        TeacherFeatureCache(tmp_path, teacher, [1], context="window")


def test_cache_layers_must_hold_every_layer_the_objectives_read(tmp_path, teacher):
    """teacher_cache.layers [1] with objectives reading [1, 2] is refused when the cache is
    made (a one-line start-up error), not by a KeyError traceback at the first step."""
    from types import SimpleNamespace

    from robustdistill.teacher_cache import TeacherCacheConfig

    objectives = [SimpleNamespace(teacher_layers=[1, 2]), SimpleNamespace()]
    cfg = TeacherCacheConfig(dir=str(tmp_path), layers=[1])
    with pytest.raises(ValueError, match=r"leave out teacher layers \[2\]"):
        TeacherFeatureCache.from_config(cfg, teacher, objectives)
    cfg.layers = [0, 1, 2]  # more than the objectives read is fine
    assert TeacherFeatureCache.from_config(cfg, teacher, objectives).layers == [0, 1, 2]
    cfg.layers = [2]  # layer -1 is layer 2 of this 2-layer teacher
    assert TeacherFeatureCache.from_config(
        cfg, teacher, [SimpleNamespace(teacher_layers=[-1])]).layers == [2]

def test_crop_grid_keeps_the_old_draw_and_lands_on_the_grid():
    wave = np.arange(10_000, dtype=np.float32)
    for seed in range(20):
        crop, start = _crop_at(wave, 3000, np.random.default_rng(seed))
        assert np.array_equal(crop, _crop(wave, 3000, np.random.default_rng(seed)))
        crop, start = _crop_at(wave, 3000, np.random.default_rng(seed), grid=320)
        assert start % 320 == 0 and 0 <= start <= 7000 and crop[0] == start
        assert len(crop) == 3000
    assert _crop_at(wave[:100], 3000, np.random.default_rng(0), grid=320)[1] == 0


def test_build_cache_is_resumable_and_training_then_never_misses(tmp_path, tiny_wavlm_dir):
    extra = {"teacher_cache.dir": str(tmp_path / "cache"), "teacher_cache.missing": "error"}
    cfg = _config(tmp_path, tiny_wavlm_dir, "built", 1.5, **extra)
    first = build_cache(cfg, limit=2)
    assert (first["computed"], first["skipped"]) == (4, 0)  # 2 train + 2 validation
    second = build_cache(cfg)
    assert second["skipped"] == 4 and second["computed"] == 8 - 4  # 6 train + 2 validation
    assert second["num_processes"] == 1
    assert second["per_process"] == [{"computed": 4, "skipped": 4, "unusable": 0}]
    _, run = _losses(cfg, steps=3)  # missing: error would raise on any miss
    assert run.teacher_cache.misses == 0 and run.teacher_cache.hits >= 6
    with pytest.raises(ValueError, match="filled lazily"):
        build_cache(_config(tmp_path, tiny_wavlm_dir, "x", 1.5, **{
            **extra, "teacher_cache.context": "crop"}))


def test_a_bf16_run_builds_its_cache_and_trains_in_one_process(
        tmp_path, tiny_wavlm_dir, fresh_accelerator_state):
    """build_cache's Accelerator takes the run's precision (accelerate refuses a second
    Accelerator with another one in the same process; benchmarks/bench_gpu.py does this)."""
    cfg = _config(tmp_path, tiny_wavlm_dir, "bf16", 1.5, **{
        "teacher_cache.dir": str(tmp_path / "cache"), "teacher_cache.context": "utterance",
        "teacher_cache.missing": "error", "training.mixed_precision": "bf16"})
    assert build_cache(cfg)["computed"] == 8
    run = _Run(cfg)
    assert run.accelerator.mixed_precision == "bf16"
    run.train_step(run._batches())
    assert run.teacher_cache.misses == 0


def test_chunk_crops_are_prebuilt_and_equal_teacher_every_step(tmp_path, tiny_wavlm_dir):
    """crop_starts chunks + context crop: every crop is one of an utterance's fixed chunks
    (starts at multiples of the crop length), cache-teacher builds all of them, training then
    never misses, and its losses equal teacher-every-step's on the same chunk grid."""
    extra = {"teacher_cache.dir": str(tmp_path / "cache"), "teacher_cache.context": "crop",
             "teacher_cache.crop_starts": "chunks", "teacher_cache.dtype": "float32"}
    cfg = _config(tmp_path, tiny_wavlm_dir, "chunks", 2.5, **extra,
                  **{"teacher_cache.missing": "error"})
    built = build_cache(cfg)
    # 2.5 s utterances, 1 s crops: chunks start at 0 and 16000 -> 2 per utterance, 8 items
    assert (built["computed"], built["skipped"]) == (16, 0)
    assert build_cache(cfg)["skipped"] == 16  # resumable: nothing left to do
    cached, run = _losses(cfg, steps=3)
    assert run.teacher_cache.misses == 0 and run.teacher_cache.hits >= 6
    assert run.train_set.crop_grid == 16000
    item = run.train_set[0]
    assert item["offset"] in (0, 16000) and len(item["waveform"]) == 16000
    reference, _ = _losses(_config(tmp_path, tiny_wavlm_dir, "ref", 2.5), steps=3, grid=16000)
    for ref, got in zip(reference, cached, strict=True):
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5)


def test_chunk_starts_need_a_whole_number_of_frames_and_whisper_needs_crop_context(
        tmp_path, teacher):
    from types import SimpleNamespace

    cache = TeacherFeatureCache(tmp_path, teacher, [1], context="crop", crop_starts="chunks")
    with pytest.raises(ValueError, match="multiple"):
        cache.prepare_dataset(SimpleNamespace(content_keys=False, crop_grid=1,
                                              _max_samples=16001))
    with pytest.raises(ValueError, match="max_length_s"):
        cache.prepare_dataset(SimpleNamespace(content_keys=False, crop_grid=1,
                                              _max_samples=None))
    with pytest.raises(ValueError, match="crop_starts"):
        TeacherFeatureCache(tmp_path, teacher, [1], crop_starts="random")
    with pytest.raises(ValueError, match="position embedding"):
        TeacherFeatureCache(tmp_path, SimpleNamespace(is_whisper=True), [1])


# ---- targets read in the DataLoader workers (teacher_cache.read_in_workers) -----------------


@pytest.mark.parametrize("workers", [0, 2])
def test_targets_read_in_the_loader_equal_targets_read_in_the_step(tmp_path, tiny_wavlm_dir,
                                                                   workers):
    """The collate function (in the workers when num_workers > 0) reads every row of a built
    cache; the step only moves the targets, and the losses equal those of in-step reads
    bit for bit (the same stored bytes)."""
    base = {"teacher_cache.dir": str(tmp_path / "cache"), "teacher_cache.missing": "error",
            "data.num_workers": workers}
    cfg = _config(tmp_path, tiny_wavlm_dir, "build", 1.5, **base)
    build_cache(cfg, splits=["train", "validation"])
    in_step, run_step = _losses(_config(tmp_path, tiny_wavlm_dir, "step", 1.5, **base,
                                        **{"teacher_cache.read_in_workers": "false"}))
    in_loader, run_loader = _losses(_config(tmp_path, tiny_wavlm_dir, "loader", 1.5, **base))
    batch = next(iter(run_loader.loader))
    assert bool(batch["cached_rows"].all()) and batch["cached_targets"].dtype == torch.float32
    assert "cached_targets" not in next(iter(run_step.loader))
    assert run_loader.teacher_cache.hits == run_step.teacher_cache.hits > 0
    assert run_loader.teacher_cache.loader_hits == run_loader.teacher_cache.hits
    assert run_step.teacher_cache.loader_hits == 0
    assert in_loader == in_step


def test_reader_leaves_missing_and_off_grid_rows_to_the_step(tmp_path, teacher):
    """A row whose entry is missing, whose start is off the grid or whose length is beyond
    the reader's table is not read; the step then computes it (missing: compute), refuses it
    (off the grid) or reads it itself, with the same values as without the reader."""
    cache = TeacherFeatureCache(tmp_path / "c", teacher, [1, 2], dtype="float32")
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4000, 3000)]
    keys = [content_key(w) for w in waves]
    for key, wave in zip(keys[:1], waves[:1], strict=True):  # only the first is cached
        cache.write(cache.entry_path(key), cache.compute(torch.from_numpy(wave)))

    def batch(offsets, lengths):
        padded = torch.zeros(2, max(lengths))
        for b, (w, o, n) in enumerate(zip(waves, offsets, lengths, strict=True)):
            padded[b, :n] = torch.from_numpy(w[o : o + n])
        return {"waveforms": padded, "lengths": torch.tensor(lengths),
                "offsets": torch.tensor(offsets), "keys": keys, "indices": torch.tensor([0, 1])}

    reader = cache.reader(4000)
    plain = batch([640, 0], [2000, 3000])
    read = reader.read(plain)
    assert read["cached_rows"].tolist() == [True, False]  # the second entry is missing
    assert read["cached_targets"].shape == (2, 2, int(teacher.frame_lengths(torch.tensor(
        [3000]))), teacher.hidden_size)
    full = lambda i: waves[i]  # noqa: E731
    expected = cache.targets(plain, full)  # in-step: the first read, the second computed
    got = cache.targets({**plain, **read}, full)
    for layer in (1, 2):
        torch.testing.assert_close(got.hidden_states[layer], expected.hidden_states[layer],
                                   rtol=0, atol=0)
    assert cache.reader(1999).read(plain)["cached_rows"].tolist() == [False, False]
    off_grid = batch([100, 0], [2000, 3000])  # the step above wrote the second entry
    assert reader.read(off_grid)["cached_rows"].tolist() == [False, True]
    with pytest.raises(ValueError, match="frame grid"):
        cache.targets({**off_grid, **reader.read(off_grid)}, full)
    with pytest.raises(ValueError, match="max_samples"):
        cache.reader(0)


@pytest.mark.parametrize("context", ["utterance", "crop"])
def test_an_unreadable_entry_is_computed_again_or_named_never_a_traceback(tmp_path, teacher,
                                                                         context, caplog):
    """A truncated entry (a partial copy; a rename that outlived a crash before its data
    reached the disk) is computed again by a lookup with missing: compute and by
    cache-teacher's resume, left by the loader's reader to the step, and named in the error
    of missing: error; before, every read raised safetensors' own error (no file name), at the
    same batch again after each resume, and cache-teacher counted it as already there."""
    cache = TeacherFeatureCache(tmp_path / "c", teacher, [1, 2], context=context,
                                dtype="float32")
    wave = (np.random.default_rng(1).standard_normal(4000) * 0.1).astype(np.float32)
    key = content_key(wave)
    batch = {"waveforms": torch.from_numpy(wave)[None], "lengths": torch.tensor([4000]),
             "offsets": torch.tensor([0]), "keys": [key], "indices": torch.tensor([0])}
    expected = cache.targets(batch, full_waveform=lambda i: wave).hidden_states[2]
    path = cache.entry_path(key, 0, 4000)
    whole = path.read_bytes()

    def truncate():
        path.write_bytes(whole[: len(whole) // 2])

    truncate()
    assert cache.reader(4000).read(batch)["cached_rows"].tolist() == [False]
    got = cache.targets(batch, full_waveform=lambda i: wave).hidden_states[2]
    assert torch.equal(got, expected) and path.read_bytes() == whole
    assert "unreadable" in caplog.text and str(path) in caplog.text
    truncate()
    strict = TeacherFeatureCache(tmp_path / "c", teacher, [1, 2], context=context,
                                 dtype="float32", missing="error")
    with pytest.raises(FileNotFoundError, match=f"{path}.*unreadable.*cache-teacher"):
        strict.targets(batch, full_waveform=lambda i: wave)
    if context == "utterance":  # cache-teacher's resume rebuilds it, skips a whole one
        assert cache.ensure(key, lambda: wave) and path.read_bytes() == whole
        assert not cache.ensure(key, lambda: wave)
    else:
        chunked = TeacherFeatureCache(tmp_path / "c", teacher, [1, 2], context=context,
                                      dtype="float32", crop_starts="chunks")
        assert chunked.ensure_chunks(key, wave, 4000) == (1, 1) and path.read_bytes() == whole
        assert chunked.ensure_chunks(key, wave, 4000) == (0, 1)


def test_check_entries_refuses_a_cut_entry_and_reads_a_whole_ones_header_once(
        tmp_path, teacher, monkeypatch):
    """missing: error checks each batch's entries before the step's collectives. An entry cut
    within its data (header intact) or padded is refused there like a missing one (the header
    must cover the file exactly), not in one process's forward pass. A whole entry's header is
    read once: later checks only ``stat`` it, and read it again once it is deleted, replaced
    or rewritten (before: every check opened every entry, about 25-45 us a row)."""
    import robustdistill.teacher_cache.store as store_module

    TeacherFeatureCache(tmp_path, teacher, [2])  # the folder of this spec
    cache = TeacherFeatureCache(tmp_path, teacher, [2], missing="error")
    wave = torch.randn(4000) * 0.1
    key = content_key(wave.numpy())
    path = cache.entry_path(key)
    cache.write(path, cache.compute(wave))
    whole = path.read_bytes()
    batch = {"keys": [key, key], "offsets": torch.tensor([0, 320]),
             "lengths": torch.tensor([4000, 3000]), "indices": torch.tensor([3, 3])}
    opened = []
    real = store_module.entry_readable
    monkeypatch.setattr(store_module, "entry_readable", lambda p: opened.append(p) or real(p))
    cache.check_entries(batch)
    cache.check_entries(batch)
    assert opened == [path]  # two rows, two checks: one header read
    for damaged in (whole[:-1], whole[: len(whole) // 2], whole + b"\0"):  # in place
        path.write_bytes(damaged)
        with pytest.raises(MissingEntryError, match=f"{path} of dataset item 3 is unreadable"):
            cache.check_entries(batch)
    cache.write(path, cache.compute(wave))  # rebuilt (renamed into place): whole again
    cache.check_entries(batch)
    path.unlink()
    with pytest.raises(MissingEntryError, match="is missing"):
        cache.check_entries(batch)
    assert len(opened) == 5


# ---- a Whisper teacher: where its frames sit is part of the cache --------------------------


def test_whisper_cache_keeps_the_runs_frame_placement(tmp_path, tiny_whisper_dir):
    """cache-teacher builds with the run's whisper_teacher_frames ("ssl" by default): training
    from the prebuilt cache then equals teacher-every-step, and "native" is another folder."""
    student = {"student.hidden_size": 32, "student.num_layers": 2,
               "student.num_attention_heads": 2, "student.intermediate_size": 64,
               "objectives": "{layerwise: {teacher_layers: [1, 2]}}"}
    extra = {"teacher_cache.dir": str(tmp_path / "cache"), "teacher_cache.context": "crop",
             "teacher_cache.crop_starts": "chunks", "teacher_cache.dtype": "float32",
             "teacher_cache.missing": "error", **student}
    cfg = _config(tmp_path, tiny_whisper_dir, "cached", 2.5, **extra)
    built = build_cache(cfg)
    assert json.loads((Path(built["path"]) / "manifest.json").read_text())["whisper_frames"] == "ssl"
    cached, run = _losses(cfg, steps=2)
    assert run.teacher_cache.misses == 0
    reference, _ = _losses(_config(tmp_path, tiny_whisper_dir, "ref", 2.5, **student), steps=2,
                           grid=16000)
    for ref, got in zip(reference, cached, strict=True):
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    native = _config(tmp_path, tiny_whisper_dir, "native", 2.5, whisper_teacher_frames="native",
                     **extra)
    assert build_cache(native)["path"] != built["path"]


def test_fingerprint_ignores_where_the_teacher_was_loaded_from(tmp_path, tiny_wavlm_dir,
                                                               monkeypatch):
    """The same weights by another path (or under another transformers) keep their cache."""
    import shutil

    import transformers.configuration_utils

    moved = shutil.copytree(tiny_wavlm_dir, tmp_path / "moved")
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "transformers_version": "0.0.1"}))
    here, there = Upstream.from_pretrained(tiny_wavlm_dir), Upstream.from_pretrained(moved)
    assert here.config._name_or_path != there.config._name_or_path
    base = teacher_fingerprint(here)
    assert teacher_fingerprint(there) == base
    # config.to_dict() writes the running transformers' version, whatever config.json said:
    # the fingerprint must not change when transformers is upgraded.
    monkeypatch.setattr(transformers.configuration_utils, "__version__", "0.0.1")
    assert there.config.to_dict()["transformers_version"] == "0.0.1"
    assert teacher_fingerprint(there) == base


def test_targets_beyond_float16_are_refused_not_stored_as_inf(tmp_path, tiny_wavlm_dir):
    teacher = Upstream.from_pretrained(tiny_wavlm_dir)
    with torch.no_grad():  # one huge output channel of the last layer
        teacher.model.encoder.layers[-1].final_layer_norm.bias[0] = 1e5
    wave = torch.randn(4000) * 0.1
    with pytest.raises(ValueError, match=r"teacher layers \[2\].*bfloat16"):
        TeacherFeatureCache(tmp_path, teacher, [1, 2]).compute(wave)
    stored = TeacherFeatureCache(tmp_path, teacher, [1, 2], dtype="bfloat16").compute(wave)
    assert torch.isfinite(stored).all()


def test_utterances_longer_than_the_limit_are_refused_with_context_utterance(tmp_path,
                                                                            tiny_wavlm_dir):
    cfg = _config(tmp_path, tiny_wavlm_dir, "long", 1.5, **{
        "teacher_cache.dir": str(tmp_path / "cache"), "teacher_cache.max_utterance_s": 1.2})
    with pytest.raises(ValueError, match=r"6 utterances are longer than .* 1.2 s"):
        build_cache(cfg)  # 8 utterances of 1.5 s, 6 of them for training
    with pytest.raises(ValueError, match="longest 1.5 s"):
        _Run(cfg)
    crop = _config(tmp_path, tiny_wavlm_dir, "crop", 1.5, **{
        "teacher_cache.dir": str(tmp_path / "cache"), "teacher_cache.max_utterance_s": 1.2,
        "teacher_cache.context": "crop"})
    _Run(crop)  # the teacher sees crops only: no limit


def _entry_of_item_at_step(cfg, cache_path: str, step: int, rank: int = 0, world: int = 1) -> Path:
    """The utterance entry of the first item that process ``rank`` of ``world`` draws for
    ``step`` (1-based, first epoch): the training loop's own sampler order."""
    from robustdistill.data import ShardedRandomSampler, build_datasets

    train_set, _ = build_datasets(cfg.data, cfg.seed)
    sampler = ShardedRandomSampler(len(train_set), cfg.seed, shuffle=True, rank=rank,
                                   world_size=world)
    sampler.set_epoch(0)
    position = list(sampler)[(step - 1) * cfg.data.batch_size][0]
    key = content_key(train_set.full_waveform(position))
    return Path(cache_path) / key[:2] / f"{key}.safetensors"


def test_a_cache_miss_with_missing_error_stops_with_a_checkpoint_and_resumes_exactly(
        tmp_path, tiny_wavlm_dir):
    """missing: error and an entry absent that step 3 needs: the run stops at step 2 with a
    checkpoint, stopped.json and a message naming the entry, its audio and cache-teacher
    (before: a FileNotFoundError from the forward pass, and the steps since the last
    checkpoint were lost); built and resumed, it ends as an uninterrupted run."""
    from conftest import tiny_run_config

    from robustdistill.trainer import DataReadError, train

    def config(out, **extra):
        return tiny_run_config(tmp_path, tiny_wavlm_dir, out, **{
            "training.max_steps": 4, "training.save_every": 0, "teacher_cache.dir":
            str(tmp_path / "cache"), "teacher_cache.missing": "error", **extra})

    built = build_cache(config("full"))
    train(config("full"))
    entry = _entry_of_item_at_step(config("full"), built["path"], step=3)
    entry.unlink()
    message = (rf"stopped at step 2: training batch: teacher cache entry {re.escape(str(entry))} "
               r"of .*\.wav is missing \(missing: error\); build it with `robustdistill "
               r"cache-teacher`.*checkpoint_0 holds the weights of step 2; build it and resume")
    with pytest.raises(DataReadError, match=message):
        train(config("part"))
    part = tmp_path / "part"
    stopped = json.loads((part / "stopped.json").read_text())
    assert stopped["reason"] == "teacher cache miss" and stopped["step"] == 2
    assert build_cache(config("part"))["computed"] == 1
    train(config("part", **{"training.resume_from": "latest"}))
    full_state = json.loads((tmp_path / "full" / "final_state.json").read_text())
    part_state = json.loads((part / "final_state.json").read_text())
    assert part_state["parameter_sha256_per_rank"] == full_state["parameter_sha256_per_rank"]
    assert not (part / "stopped.json").exists()  # the run finished: its stop is over


@pytest.mark.slow
def test_a_cache_miss_on_one_process_stops_every_process_with_a_checkpoint(
        tmp_path, tiny_wavlm_dir):
    """Two CPU processes (gloo), missing: error, and the entry of an item only rank 1 draws
    (at step 3) absent: both processes agree on the miss before the step's collectives, save
    the checkpoint of step 2 together and exit 1 with rank 1's reason (before: rank 1 alone
    raised, rank 0 died on a closed connection, and steps 1-2 were lost)."""
    import os
    import subprocess
    import sys

    from conftest import free_port

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "ddp"
    args = ["--config", str(repo / "configs" / "demo.yaml"), "--teacher", str(tiny_wavlm_dir),
            "--output_dir", str(out), "--data.synthetic_items", "16",
            "--data.synthetic_seconds", "[0.6, 1.2]", "--data.synthetic_dir", str(tmp_path / "c"),
            "--data.max_length_s", "1.0", "--data.min_length_s", "0.5",
            "--data.validation_fraction", "0.25", "--data.batch_size", "2",
            "--augmentation.num_simulated_rooms", "2", "--augmentation.room_max_order", "3",
            "--objectives", "{layerwise: {teacher_layers: [1, 2]}}",
            "--training.max_steps", "4", "--training.eval_at_start", "false",
            "--training.save_every", "0", "--training.report_to", "[]",
            "--training.cpu", "true", "--teacher_cache.dir", str(tmp_path / "cache"),
            "--teacher_cache.missing", "error"]
    cfg = load_config(args[1], args[2:])  # the launched run's config
    built = build_cache(cfg)
    entry = _entry_of_item_at_step(cfg, built["path"], step=3, rank=1, world=2)
    entry.unlink()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--main_process_port", str(free_port()), str(repo / "distill.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert (f"robustdistill distill: error: stopped at step 2: training batch: teacher cache "
            f"entry {entry} of ") in result.stderr, result.stderr[-3000:]
    assert "Connection closed by peer" not in result.stderr
    stopped = json.loads((out / "stopped.json").read_text())
    assert stopped["reason"] == "teacher cache miss" and stopped["step"] == 2
    assert "another process" not in stopped["message"]  # rank 1's own reason, gathered
    assert (out / "checkpoints" / "checkpoint_0" / "random_states_1.pkl").is_file()


@pytest.mark.slow
def test_a_resumed_two_process_build_shares_what_is_left_evenly(tmp_path, tiny_wavlm_dir):
    """An earlier build left the odd training items unbuilt (all of them process 1's by
    position): the second build on two processes shares them out again, 2 and 1 (before:
    process 1 built all 3 while process 0 waited)."""
    import os
    import subprocess
    import sys

    from conftest import free_port

    from robustdistill.data import build_datasets

    args = ["--teacher", str(tiny_wavlm_dir), "--seed", "5", "--data.synthetic_items", "8",
            "--data.synthetic_seconds", "[0.8, 0.8]", "--data.synthetic_dir",
            str(tmp_path / "corpus"), "--data.max_length_s", "1.0", "--data.min_length_s", "0.5",
            "--data.validation_fraction", "0.25", "--objectives",
            "{layerwise: {teacher_layers: [1, 2]}}", "--training.cpu", "true",
            "--teacher_cache.dir", str(tmp_path / "cache")]
    cfg = load_config(None, args)
    built = build_cache(cfg)
    train_set, _ = build_datasets(cfg.data, cfg.seed)
    assert len(train_set) == 6
    for position in (1, 3, 5):
        key = content_key(train_set.full_waveform(position))
        (Path(built["path"]) / key[:2] / f"{key}.safetensors").unlink()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--main_process_port", str(free_port()), "-m", "robustdistill.cli",
           "cache-teacher", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["computed"], summary["skipped"]) == (3, 5)  # 3 of 6 train + 2 validation
    assert [p["computed"] for p in summary["per_process"]] == [2, 1]


def test_cache_teacher_makes_the_recipes_teacher_as_distill_does(tmp_path, capsys):
    """configs/demo.yaml names runs/demo-teacher with make_teacher: wavlm/small; distill
    writes that teacher when it is missing, cache-teacher used to fail with a huggingface.co
    traceback (the missing folder taken for a hub id). Without make_teacher it is one line."""
    from conftest import tiny_run_config

    from robustdistill.teacher_cache import main

    teacher = tmp_path / "made-teacher"
    cfg = tiny_run_config(tmp_path, teacher, "unused", **{
        "make_teacher": "wavlm/tiny", "teacher_cache.dir": str(tmp_path / "cache")})
    built = build_cache(cfg, limit=1)
    assert (teacher / "config.json").is_file() and built["computed"] >= 1
    with pytest.raises(SystemExit):
        main(["--teacher", str(tmp_path / "absent-teacher"), "--teacher_cache.dir",
              str(tmp_path / "cache2"), "--data.synthetic_items", "2", "--data.synthetic_dir",
              str(tmp_path / "corpus")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "teacher folder" in err and "does not exist" in err and "make_teacher" in err


def test_a_batch_that_computed_a_miss_gives_the_freed_heap_back(tmp_path, teacher, monkeypatch):
    """A lazy fill's teacher passes over whole utterances leave their freed pages in glibc's
    heap (48 distill steps on 126 LibriSpeech files held 1,863 MB in the epoch after the
    fill, 1,048 MB with the trim): a ``targets`` call that computed a miss asks the cache's
    HeapTrimmer (128 MB: a heap that does not grow, as with a teacher on a GPU, is left as it
    is, since each trim makes the next step fault its pages in again) to trim, one that only
    read entries does not; the targets are the same either way."""
    import robustdistill.teacher_cache.cache as cache_module

    trims = []
    cache = TeacherFeatureCache(tmp_path, teacher, [1, 2], dtype="float32")
    assert cache._heap.min_growth_bytes == 128 << 20 == cache_module._TRIM_AFTER_GROWTH
    monkeypatch.setattr(cache._heap, "release", lambda: trims.append(1) or True)
    full = torch.randn(12_800) * 0.1
    key = content_key(full.numpy())
    batch = {"waveforms": full[None, 640:7040], "lengths": torch.tensor([6400]),
             "offsets": torch.tensor([640]), "keys": [key], "indices": torch.tensor([0])}
    first = cache.targets(batch, full_waveform=lambda i: full.numpy())
    assert (cache.misses, cache.hits, len(trims)) == (1, 0, 1)
    again = cache.targets(batch, full_waveform=lambda i: full.numpy())
    assert (cache.misses, cache.hits, len(trims)) == (1, 1, 1)
    for layer in (1, 2):
        assert torch.equal(first.hidden_states[layer], again.hidden_states[layer])


def test_a_fill_that_does_not_grow_the_heap_trims_it_once(tmp_path, teacher, monkeypatch):
    """Each trim makes the next step fault its pages in again (0.6 ms a MB): with a teacher
    whose passes leave little in the host heap (a GPU teacher; this tiny one), two batches that
    each computed a miss trim once, at the first (before 2026-12-08's threshold: at each), as
    the resident memory grew by less than 128 MB in between; the targets are unchanged."""
    import robustdistill.memory as memory_module
    import robustdistill.teacher_cache.cache as cache_module

    trims = []
    monkeypatch.setattr(memory_module, "release_free_heap", lambda: trims.append(1) or True)
    monkeypatch.setattr(cache_module, "release_free_heap", lambda: trims.append(1) or True,
                        raising=False)  # where the cache called it at every filling step
    from robustdistill.teacher_cache.store import read_frames

    cache = TeacherFeatureCache(tmp_path, teacher, [1, 2], dtype="float32")
    for seed in (0, 1):
        full = torch.randn(12_800, generator=torch.Generator().manual_seed(seed)) * 0.1
        batch = {"waveforms": full[None, 640:7040], "lengths": torch.tensor([6400]),
                 "offsets": torch.tensor([640]), "keys": [content_key(full.numpy())],
                 "indices": torch.tensor([0])}
        out = cache.targets(batch, full_waveform=lambda i, full=full: full.numpy())
        frames = int(out.frame_lengths[0])  # the crop's, from its entry on disk
        stored = read_frames(cache.entry_path(batch["keys"][0]), 640 // cache.grid, frames)
        assert torch.equal(out.hidden_states[2][0, :frames], stored[1])
    assert (cache.misses, len(trims)) == (2, 1)
