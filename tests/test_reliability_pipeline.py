"""The bad-audio corpus mixed into real LibriSpeech: distillation (with and without the teacher
cache) finishes, uses every good file, skips each bad one with its reason and counts it in
``final_state.json``; non-finite audio never reaches a model (issue 14)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared_data
from test_reliability_audio import _mixed_folder, deny_unreadable, write_bad_corpus  # noqa: F401
from test_reliability_checkpoints import _config

import robustdistill.trainer as trainer_module
from robustdistill.trainer import train


def _guard_models(monkeypatch) -> list[int]:
    """Check every waveform that reaches the teacher or the student; count the calls."""
    calls = []
    real_forward = trainer_module.Upstream.forward

    def checked(self, waveforms, *args, **kwargs):
        assert torch.isfinite(waveforms).all(), "non-finite audio reached a model"
        calls.append(len(waveforms))
        return real_forward(self, waveforms, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Upstream, "forward", checked)
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("cache", [False, True], ids=["teacher", "teacher_cache"])
def test_distillation_over_real_and_bad_audio_finishes_and_counts_each_bad_file(
        tmp_path, tiny_wavlm_dir, deny_unreadable, monkeypatch, caplog, cache):  # noqa: F811
    require_shared_data()
    kinds = write_bad_corpus(tmp_path / "bad")
    real = _mixed_folder(tmp_path, tmp_path / "bad", n_real=6)
    cfg = _config(tmp_path, tiny_wavlm_dir, "run", max_steps=6, save_every=3,
                  eval_at_start=True)
    cfg.data.synthetic_items, cfg.data.train_dir = 0, str(tmp_path / "mixed")
    cfg.data.max_length_s, cfg.data.validation_fraction = 1.0, 0.2
    if cache:  # crop context: "utterance" would run the teacher over the hour-long file whole
        cfg.teacher_cache.dir, cfg.teacher_cache.context = str(tmp_path / "cache"), "crop"
    seen = _guard_models(monkeypatch)
    used: set[str] = set()
    real_batches = trainer_module._Run._batches

    def batches(self):
        for batch in real_batches(self):
            used.update(Path(self.train_set.names[int(i)]).name for i in batch["indices"])
            yield batch

    real_validate = trainer_module._Run.validate

    def validate(self):
        values = real_validate(self)
        used.update(Path(n).name for n in self.valid_set.names
                    if n not in self.valid_set.skipped)
        return values

    monkeypatch.setattr(trainer_module._Run, "_batches", batches)
    monkeypatch.setattr(trainer_module._Run, "validate", validate)
    with caplog.at_level(logging.INFO):
        train(cfg)
    final = json.loads((tmp_path / "run" / "final_state.json").read_text())
    bad = {name: reason for name, reason in kinds.items() if reason is not None}
    skipped = {Path(name).name: reason for name, reason in final["skipped_audio"]["items"].items()}
    assert skipped == bad
    assert final["skipped_audio"]["count"] == len(bad) >= 10
    assert final["skipped_audio"]["by_reason"] == {
        r: sum(1 for v in bad.values() if v == r) for r in set(bad.values())}
    good = {p.name for p in real} | {n for n, r in kinds.items() if r is None}
    assert used == good  # every good file was used (6 steps of 2 > one epoch of the rest)
    assert seen and final["step"] == 6
    assert "audio item(s) skipped" in caplog.text


def test_enhancement_training_pairs_from_real_and_bad_audio_are_finite(
        tmp_path, deny_unreadable):  # noqa: F811
    """robustdistill.se: the speech index skips broken files (each logged once, with its
    reason) and every (noisy, clean) pair it makes is finite."""
    import numpy as np

    from robustdistill.se.data import PairConfig, PairMaker

    shared = require_shared_data()
    kinds = write_bad_corpus(tmp_path / "bad")
    _mixed_folder(tmp_path, tmp_path / "bad", n_real=4)
    maker = PairMaker(PairConfig(speech_dir=str(tmp_path / "mixed"),
                                 noise_dir=str(shared / "noise"), rir_dir=None,
                                 crop_seconds=2.0, reverb_prob=0.0), seed=0)
    rng = np.random.default_rng(0)
    for _ in range(150):
        noisy, clean = maker.item(rng)
        assert noisy.shape == clean.shape == (32000,)
        assert np.isfinite(noisy).all() and np.isfinite(clean).all() and np.any(clean)
    skipped = {Path(n).name: r for n, r in maker.speech.skipped.items()}
    header_level = {n: r for n, r in kinds.items()
                    if r in ("empty", "unreadable", "permission denied", "too short")
                    and n not in ("truncated.flac", "one_sample.wav")}
    header_level["zero_samples.wav"] = "empty"
    assert {n: skipped[n] for n in header_level} == header_level
    assert skipped["nan.wav"] == skipped["inf.wav"] == "non-finite"  # drawn, then refused
    used = {Path(f).name for f in maker.speech.files}
    assert {"pcm_u8.wav", "hires_96k.wav", "six_channels.wav", "hour_long.wav"} <= used


@pytest.mark.slow
def test_enhancing_a_folder_with_bad_files_skips_them_and_finishes(tmp_path, deny_unreadable):  # noqa: F811,E501
    from robustdistill.se.enhance import main as enhance_main

    require_shared_data()
    kinds = write_bad_corpus(tmp_path / "bad", hour=False)
    real = _mixed_folder(tmp_path, tmp_path / "bad", n_real=2)
    out = tmp_path / "enhanced"
    assert enhance_main([str(tmp_path / "mixed"), str(out), "--model", "nsnet2"]) == 0
    written = {p.name for p in out.iterdir()}
    expected = {p.name for p in real} | {n for n, r in kinds.items() if r in (None, "silent")} | {
        "one_sample.wav"}
    assert written == expected
    import soundfile as sf

    for name in written:
        data, _ = sf.read(out / name)
        assert np.isfinite(data).all(), name


@pytest.mark.slow
def test_prebuilding_the_teacher_cache_over_bad_audio_finishes(
        tmp_path, tiny_wavlm_dir, deny_unreadable):  # noqa: F811
    """``robustdistill cache-teacher`` (context utterance) skips and counts the files that fail
    at read time instead of stopping at the first. Without the hour-long file: context
    utterance runs the teacher over whole files."""
    from robustdistill.teacher_cache import build_cache

    require_shared_data()
    kinds = write_bad_corpus(tmp_path / "bad", hour=False)
    real = _mixed_folder(tmp_path, tmp_path / "bad", n_real=3)
    cfg = _config(tmp_path, tiny_wavlm_dir, "run")
    cfg.data.synthetic_items, cfg.data.train_dir = 0, str(tmp_path / "mixed")
    cfg.data.max_length_s = 1.0
    cfg.teacher_cache.dir = str(tmp_path / "cache")
    result = build_cache(cfg)
    read_time = [n for n, r in kinds.items() if r in ("non-finite", "silent")] + [
        "truncated.flac"]
    usable = len(real) + sum(1 for r in kinds.values() if r is None)
    assert (result["unusable"], result["computed"]) == (len(read_time), usable)
    assert build_cache(cfg)["skipped"] == usable  # a second build finds every entry
