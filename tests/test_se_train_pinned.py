"""Mutation-testing gaps (round 2) in SE student training and its data: what the teacher is
fed (the noisy batch, the pool), the run's seed reaching the data, the loss heads being
optimised, checkpoint retention and the newest checkpoint, the last logged step, the SNR's sign
and where it is measured, noise in the padding, short and 8 kHz speech files, the shared pool
and per-rank batches, the pooled teacher outputs, the SE table, and the SSL enhancer's layer."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import robustdistill.se.train as se_train
from robustdistill.se.data import PairConfig, PairMaker
from robustdistill.se.table import render_table
from robustdistill.se.teacher_pool import (
    PooledTeacher,
    pooled_teacher,
    release_pooled,
    shared_pools,
)
from robustdistill.se.teachers.base import SEOutput
from robustdistill.se.train import load_se_config, train_se


def _write_data(root, speech_samples=(24000, 24000, 24000), rate=16000):
    rng = np.random.default_rng(0)
    (root / "speech" / "spk").mkdir(parents=True)
    (root / "noise").mkdir()
    for i, n in enumerate(speech_samples):
        t = np.arange(n) / rate
        x = 0.1 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))
        sf.write(root / "speech" / "spk" / f"u{i}.wav", x.astype(np.float32), rate,
                 subtype="FLOAT")
    sf.write(root / "noise" / "n.wav", (0.05 * rng.standard_normal(20000)).astype(np.float32),
             16000, subtype="FLOAT")


def _pairs_cfg(root, **kw):
    base = dict(speech_dir=str(root / "speech"), noise_dir=str(root / "noise"), rir_dir=None,
                reverb_prob=0.0, crop_seconds=0.5, snr_range=(0, 0))
    return PairConfig(**{**base, **kw})


def _snr_db(clean, noisy):
    return 10 * np.log10(np.sum(clean ** 2) / np.sum((noisy - clean) ** 2))


# ---------------------------------------------------------------------------- pairs
def test_pairs_are_mixed_at_the_drawn_snr_not_its_negative(tmp_path):
    _write_data(tmp_path)
    noisy, clean, _ = PairMaker(_pairs_cfg(tmp_path, snr_range=(10, 10)), 1).batch(0, 3)
    for n, c in zip(noisy.numpy(), clean.numpy(), strict=True):
        assert _snr_db(c, n) == pytest.approx(10.0, abs=1e-3)


def test_a_short_file_is_padded_its_snr_measured_on_speech_and_its_padding_noisy(tmp_path):
    """A 0.2 s file in 0.5 s crops: the speech fills the first 3200 samples, the SNR holds over
    them, and the padding gets noise at the same gain (not silence)."""
    _write_data(tmp_path, speech_samples=(3200,))
    noisy, clean, _ = PairMaker(_pairs_cfg(tmp_path, snr_range=(5, 5)), 2).batch(0, 2)
    for n, c in zip(noisy.numpy(), clean.numpy(), strict=True):
        assert np.all(c[3200:] == 0) and np.any(c[:3200])
        assert _snr_db(c[:3200], n[:3200]) == pytest.approx(5.0, abs=1e-3)
        noise_real = np.mean((n[:3200] - c[:3200]) ** 2)
        noise_pad = np.mean(n[3200:] ** 2)
        assert 0.5 < noise_pad / noise_real < 2.0


def test_8khz_speech_is_resampled_to_the_crop_rate(tmp_path):
    """A 100 Hz tone recorded at 8 kHz stays a 100 Hz tone filling the whole 16 kHz crop."""
    root = tmp_path
    (root / "speech").mkdir()
    (root / "noise").mkdir()
    t = np.arange(16000) / 8000
    sf.write(root / "speech" / "tone.wav", (0.3 * np.sin(2 * np.pi * 100 * t)).astype(np.float32),
             8000, subtype="FLOAT")
    sf.write(root / "noise" / "n.wav", np.random.default_rng(0).standard_normal(20000)
             .astype(np.float32) * 0.05, 16000, subtype="FLOAT")
    _, clean, _ = PairMaker(_pairs_cfg(root), 0).batch(0, 2)
    for c in clean.numpy():
        assert np.mean(c[-1000:] ** 2) > 0.01  # no zero tail: the crop is all speech
        spectrum = np.abs(np.fft.rfft(c))
        assert np.argmax(spectrum) * 16000 / len(c) == pytest.approx(100.0, abs=2.0)


def test_the_pool_is_the_same_for_every_run_seed(tmp_path):
    _write_data(tmp_path)
    cfg = _pairs_cfg(tmp_path, pool_size=4, snr_range=(-5, 5))
    a, b = PairMaker(cfg, 1).pool(), PairMaker(cfg, 2).pool()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_pool_batches_keep_noisy_and_clean_of_the_same_item(tmp_path):
    _write_data(tmp_path)
    maker = PairMaker(_pairs_cfg(tmp_path, pool_size=4, snr_range=(-5, 5)), 3)
    pool_noisy, pool_clean = maker.pool()
    for step in range(3):
        noisy, clean, idx = maker.batch(step, 6)
        assert len(set(idx.tolist())) > 1
        for k, i in enumerate(idx.tolist()):
            assert torch.equal(noisy[k], pool_noisy[i]) and torch.equal(clean[k], pool_clean[i])


def test_each_process_rank_draws_its_own_batch(tmp_path):
    _write_data(tmp_path)
    maker = PairMaker(_pairs_cfg(tmp_path, snr_range=(-5, 5)), 3)
    r0, r1 = maker.batch(0, 2, rank=0), maker.batch(0, 2, rank=1)
    assert not torch.equal(r0[0], r1[0])
    assert torch.equal(maker.batch(0, 2, rank=1)[0], r1[0])


# ---------------------------------------------------------------------------- training
class _FakeTeacher(nn.Module):
    """Records its inputs; enhanced = half the input; ``gru2`` activations (nsnet2's width 400)
    with ``frames`` frames."""

    def __init__(self, frames=None):
        super().__init__()
        self.seen = []
        self.frames = frames
        self.direction = torch.randn(400, generator=torch.Generator().manual_seed(0))

    def forward(self, x, return_activations=False):
        self.seen.append(x.detach().clone())
        acts = {}
        if self.frames:
            level = x.abs().mean(1)[:, None, None]
            acts["gru2"] = (self.direction * (1 + level)).expand(x.shape[0], self.frames, 400)
        return SEOutput(0.5 * x, acts)


def _common(root, *extra):
    return ["--student.hidden_size", "8", "--data.speech_dir", str(root / "speech"),
            "--data.noise_dir", str(root / "noise"), "--data.rir_dir", "null",
            "--data.reverb_prob", "0", "--data.crop_seconds", "0.25",
            "--data.snr_range", "[-5, 5]", "--training.batch_size", "2",
            "--training.report_to", "none", *extra]


def test_teacher_sees_the_noisy_batch_of_the_runs_seed(tmp_path, monkeypatch):
    _write_data(tmp_path)
    fake = _FakeTeacher()
    monkeypatch.setattr(se_train, "load_teacher", lambda name: fake)
    cfg = load_se_config(None, _common(tmp_path, "--output_dir", str(tmp_path / "r"),
                                       "--seed", "5", "--training.max_steps", "2",
                                       "--loss.teacher", "nsnet2",
                                       "--loss.output_kd_weight", "1"))
    train_se(cfg)
    maker = PairMaker(cfg.data, seed=5)
    assert len(fake.seen) == 2
    for step, x in enumerate(fake.seen):
        noisy, clean, _ = maker.batch(step, 2)
        assert torch.equal(x, noisy) and not torch.equal(x, clean)


def test_pooled_teacher_sees_the_noisy_pool(tmp_path, monkeypatch):
    _write_data(tmp_path)
    fake = _FakeTeacher()
    monkeypatch.setattr(se_train, "load_teacher", lambda name: fake)
    cfg = load_se_config(None, _common(tmp_path, "--output_dir", str(tmp_path / "r"),
                                       "--training.max_steps", "1", "--data.pool_size", "3",
                                       "--loss.teacher", "nsnet2",
                                       "--loss.output_kd_weight", "1"))
    train_se(cfg)
    noisy_pool, clean_pool = PairMaker(cfg.data, seed=0).pool()
    (x,) = fake.seen
    assert torch.equal(x, noisy_pool) and not torch.equal(x, clean_pool)


def test_the_kd_projections_are_trained(tmp_path, monkeypatch):
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    _write_data(tmp_path)
    frames = GRUMaskStudent(StudentConfig(hidden_size=8))(
        torch.zeros(1, 4000), return_activations=True).activations["gru2"].shape[1]
    monkeypatch.setattr(se_train, "load_teacher", lambda name: _FakeTeacher(frames))
    made = []
    real = se_train.SELoss

    def capture(*args):
        loss = real(*args)
        made.append((loss, copy.deepcopy(loss.state_dict())))
        return loss

    monkeypatch.setattr(se_train, "SELoss", capture)
    train_se(load_se_config(None, _common(tmp_path, "--output_dir", str(tmp_path / "r"),
                                          "--training.max_steps", "2", "--loss.teacher",
                                          "nsnet2", "--loss.cosine_weight", "1")))
    ((loss, before),) = made
    after = loss.state_dict()
    assert before and before.keys() == after.keys()
    assert all(not torch.equal(before[k], after[k]) for k in before), "projections not trained"


def test_a_mixture_at_alpha_0_still_loads_its_teacher_and_starts_its_heads_as_before(
        tmp_path, monkeypatch):
    """``mixture`` with ``alpha`` 0 (a cosine term on, its KD factor 0 throughout) loads its
    teacher as it always did: loading one draws from torch's global generator (NSNet2's and
    DTLN's layers are initialised before their weights are read), so the loss heads made after
    it start with the weights the same recipe at ``alpha`` 0.5 starts with; at ``alpha`` 0
    they never train, and ``final_state.json``'s per-rank hash is theirs. Only ``two_step``'s
    phase 2 goes without a teacher (a commit of 2026-12-07 also dropped it here, which changed
    these heads and ``final_state.json``)."""
    from robustdistill.se.final_state import parameter_hash
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    _write_data(tmp_path)
    frames = GRUMaskStudent(StudentConfig(hidden_size=8))(
        torch.zeros(1, 4000), return_activations=True).activations["gru2"].shape[1]
    loads = []

    def load_teacher(name):
        loads.append(name)
        torch.randn(64)  # as a real teacher's layer initialisation does
        return _FakeTeacher(frames)

    monkeypatch.setattr(se_train, "load_teacher", load_teacher)
    made = []
    real = se_train.SELoss

    def capture(*args):
        loss = real(*args)
        made.append(copy.deepcopy(loss.state_dict()))
        return loss

    monkeypatch.setattr(se_train, "SELoss", capture)
    for alpha in ("0", "0.5"):
        train_se(load_se_config(None, _common(
            tmp_path, "--output_dir", str(tmp_path / alpha), "--training.max_steps", "2",
            "--loss.teacher", "nsnet2", "--loss.schedule", "mixture", "--loss.alpha", alpha,
            "--loss.cosine_weight", "1")))
    assert loads == ["nsnet2", "nsnet2"]
    zero, half = made
    assert zero and zero.keys() == half.keys()
    assert all(torch.equal(zero[k], half[k]) for k in zero)
    heads = real(load_se_config(None, _common(tmp_path, "--loss.teacher", "nsnet2",
                                              "--loss.cosine_weight", "1")).loss,
                 *se_train._widths(StudentConfig(hidden_size=8), "nsnet2"))
    heads.load_state_dict(zero)
    final = json.loads((tmp_path / "0" / "final_state.json").read_text())
    assert final["parameter_sha256_per_rank"][0].endswith("/" + parameter_hash(heads))


def test_checkpoints_keep_the_newest_and_the_last_step_is_logged(tmp_path):
    _write_data(tmp_path)
    out = tmp_path / "r"
    train_se(load_se_config(None, _common(tmp_path, "--output_dir", str(out),
                                          "--training.max_steps", "4", "--training.log_every",
                                          "3", "--training.save_every", "1",
                                          "--training.keep_checkpoints", "2")))
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["checkpoint_3", "checkpoint_4"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 4]


def test_newest_legacy_checkpoint_is_the_highest_complete_step(tmp_path):
    """Runs before the manifest: ``step.json`` (written after save_state) marks completion."""
    for step in (2, 9, 10, 11):
        (tmp_path / f"checkpoint_{step}").mkdir()
        if step != 11:  # 11 was interrupted before its step.json
            (tmp_path / f"checkpoint_{step}" / "step.json").write_text(f'{{"step": {step}}}')
    path, state = se_train._newest_checkpoint(tmp_path)
    assert path.name == "checkpoint_10" and state == {"step": 10}


# ---------------------------------------------------------------------------- teacher pool
class _Echo(nn.Module):
    def forward(self, x, return_activations=False):
        return SEOutput(2 * x, {"a": x[:, :12].reshape(x.shape[0], 3, 4) + 1.0})


def test_pooled_teacher_outputs_are_those_of_the_indexed_items():
    inputs = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    pool = PooledTeacher(_Echo(), inputs, ("a",), keep_enhanced=True, chunk=2)
    idx = torch.tensor([3, 1, 3, 0])
    out = pool(idx)
    direct = _Echo()(inputs[idx])
    assert torch.equal(out.enhanced, direct.enhanced)
    torch.testing.assert_close(out.activations["a"], direct.activations["a"], rtol=2e-3, atol=0)


def test_pooled_teacher_cache_tells_whether_the_enhanced_output_is_kept():
    inputs = torch.randn(3, 40, generator=torch.Generator().manual_seed(1))
    key = ("test_mut2_spk_cache_key", id(inputs))
    without = pooled_teacher(key, _Echo(), inputs, ("a",), keep_enhanced=False)
    with_enh = pooled_teacher(key, _Echo(), inputs, ("a",), keep_enhanced=True)
    assert without.enhanced is None
    assert with_enh.enhanced is not None and torch.equal(with_enh.enhanced, 2 * inputs)


def test_a_released_pool_leaves_the_cache_unless_shared():
    """release_pooled drops a pool from the process's cache (the next run of its key computes
    it again), but not inside shared_pools (the table's later runs reuse it)."""
    inputs = torch.randn(4, 40, generator=torch.Generator().manual_seed(2))
    key = ("test_released_pool", id(inputs))
    pooled = pooled_teacher(key, _Echo(), inputs, ("a",), keep_enhanced=True)
    assert len(pooled) == 4 and pooled.nbytes == 4 * 40 * 4 + 4 * 12 * 2  # float32, float16
    with shared_pools():
        assert release_pooled(pooled) is False
    assert pooled_teacher(key, _Echo(), inputs, ("a",), keep_enhanced=True) is pooled
    assert release_pooled(pooled) is True
    again = pooled_teacher(key, _Echo(), inputs, ("a",), keep_enhanced=True)
    assert again is not pooled and torch.equal(again.enhanced, pooled.enhanced)
    release_pooled(again)


# ---------------------------------------------------------------------------- table
def _scores(si_sdr):
    return {"si_sdr": si_sdr, "si_sdr_i": si_sdr + 5, "pesq": 2.0, "pesq_i": 0.5, "stoi": 0.8,
            "stoi_i": 0.1}


def test_se_table_rows_per_method_and_size_and_the_paired_claim_check():
    results = {"noisy": {"results": {"-5": _scores(-5.0)}}}
    for key, value in {"mixture_63x_s0": 1.0, "mixture_63x_s1": 3.0, "mixture_16x_s0": 10.0,
                       "two_step_gram_63x_s0": 2.5, "two_step_gram_63x_s1": 3.5}.items():
        results[key] = {"parameters": 100 if "63x" in key else 400,
                        "results": {"-5": _scores(value)}}
    text = render_table(results, ["-5"], ["mixture", "two_step_gram"], [63, 16])
    lines = text.splitlines()
    # mean and sample standard deviation over the two seeds of its own size only
    assert "| mixture 63x | 100 | 2 | 2.00 ± 1.41 | 7.00 ± 1.41 |" in text
    assert "| mixture 16x | 400 | 1 | 10.00 | 15.00 |" in text
    assert "| two_step_gram 63x | 100 | 2 | 3.00 ± 0.71 |" in text
    # paired differences +1.5, +0.5: mean +1.00, t(1) 12.706 x 0.7071 / sqrt 2 = 6.353
    half = 12.706 * np.std([1.5, 0.5], ddof=1) / math.sqrt(2)
    claim = lines[-1]
    assert "+1.50, +0.50 dB; mean +1.00 dB" in claim
    assert f"[{1 - half:.2f}, {1 + half:.2f}] dB" in claim


def test_se_table_names_the_unscored_utterances():
    results = {"noisy": {"results": {"-5": _scores(-5.0)}},
               "mixture_63x_s0": {"parameters": 100, "results": {"-5": {
                   **_scores(1.0), "n": 24, "unscored": {"pesq": 2, "si_sdr": 1}}}},
               "mixture_63x_s1": {"parameters": 100, "results": {"-5": {
                   **_scores(2.0), "n": 24, "unscored": {}}}}}
    text = render_table(results, ["-5"], ["mixture"], [63])
    assert ("Unscored utterances, left out of the means above" in text
            and "mixture_63x_s0 at -5 dB: pesq 2 of 24, si_sdr 1 of 24." in text)
    assert "mixture_63x_s1" not in text  # nothing unscored: not listed
    del results["mixture_63x_s0"]["results"]["-5"]["unscored"]  # written before the count
    assert "Unscored" not in render_table(results, ["-5"], ["mixture"], [63])
    # the noisy row's own failures are named; a run the table does not show is not
    results["noisy"]["results"]["-5"].update(n=24, unscored={"pesq": 1})
    results["mixture_16x_s0"] = {"parameters": 400, "results": {"-5": {
        **_scores(1.0), "n": 24, "unscored": {"pesq": 5}}}}
    text = render_table(results, ["-5"], ["mixture"], [63])
    assert "noisy at -5 dB: pesq 1 of 24." in text and "mixture_16x" not in text


def test_se_table_merge_takes_the_snrs_of_the_merged_results(tmp_path, capsys):
    """Seed folders run with ``--snrs -5 0`` merge without repeating ``--snrs`` (it used to
    look for the default 5 dB column and fail with KeyError '5')."""
    from robustdistill.se.table import main as table_main

    for seed, value in ((0, 1.0), (1, 3.0)):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({f"mixture_63x_s{seed}": {
            "parameters": 100, "results": {"0": _scores(value), "-5": _scores(value - 1)}}}))
    assert table_main(["--merge", str(tmp_path / "s0"), str(tmp_path / "s1"),
                       "--out", str(tmp_path / "m"), "--methods", "mixture",
                       "--sizes", "63"]) == 0
    text = (tmp_path / "m" / "table.md").read_text()
    assert text.index("Input SNR -5 dB") < text.index("Input SNR 0 dB")
    assert "Input SNR 5 dB" not in text
    assert "| mixture 63x | 100 | 2 | 1.00 ± 1.41 |" in text  # -5 dB: values 0 and 2


# ---------------------------------------------------------------------------- SSL enhancer
def test_ssl_enhancer_masks_from_the_last_hidden_layer(tmp_path):
    from conftest import write_ssl_enhancement_run

    from robustdistill.se.ssl_head import SSLHeadEnhancer

    run = tmp_path / "run"
    torch.manual_seed(0)
    head = write_ssl_enhancement_run(run)
    model = SSLHeadEnhancer.from_run(run)
    x = 0.1 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(2))
    out = model(x, return_activations=True)
    with torch.no_grad():
        up = model.upstream(x, torch.tensor([8000]))
        window = torch.hann_window(400)
        spec = torch.stft(x, 512, 160, 400, window, center=True, pad_mode="constant",
                          return_complex=True)
        frames = spec.shape[-1]
        mask = head.eval()(up.hidden_states[-1], up.frame_lengths, frames,
                           torch.tensor([frames]))
        y = torch.istft(spec * mask.transpose(1, 2), 512, 160, 400, window, center=True,
                        length=8000)
    torch.testing.assert_close(out.activations["mask"], mask, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.enhanced, y, rtol=0, atol=1e-6)
