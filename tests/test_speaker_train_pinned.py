"""Mutation-testing gaps (round 2) in the IML-KD training loop and its evaluation: which teacher
targets each KD term is paired with, the loss weights, the per-epoch batch order, evaluation at
the end of a (resumed) run, minDCF, utterance embedding order and lengths, the teacher's
unpadded utterances, the optimizer's decay groups, the parameter count, the table's seeds and
run reuse, and the newest checkpoint. Expected values by hand or by a plain re-implementation."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import robustdistill.speaker.evaluation as evaluation_mod
import robustdistill.speaker.inputs as inputs_mod
import robustdistill.speaker.run_folder as run_folder_mod
import robustdistill.speaker.table as table_mod
import robustdistill.speaker.train as train_mod
from downstream.config import from_dict, to_dict
from downstream.tasks.speaker_verification.task import build_trials
from robustdistill.speaker.config import DataConfig, LossConfig, SpeakerKDConfig, TrainConfig
from robustdistill.speaker.data import Crop, Utterance
from robustdistill.speaker.evaluation import embed_utterances, evaluate_embeddings, evaluate_teacher
from robustdistill.speaker.losses import batch_loss, class_loss, instance_loss
from robustdistill.speaker.targets import teacher_targets
from robustdistill.speaker.train import train_system


def _tones(n=6):
    """Crops the tiny random teacher embeds far apart (on white-noise crops its embeddings are
    all alike, cosine > 0.999, so a wrong pairing would hardly change a KD term)."""
    rng = np.random.default_rng(0)
    t = np.arange(3200) / 16000
    return [Crop(f"s{i % 3}", f"k{i}", (0.3 * (0.2 + i / 3) * np.sin(2 * np.pi * (200 + 350 * i) * t)
                                        + 0.02 * (i + 1) * rng.standard_normal(3200))
                 .astype(np.float32)) for i in range(n)]


def _cfg(tmp_path, out, epochs=1, batch_size=4, method="imlkd", **loss):
    return from_dict(SpeakerKDConfig, {
        "student": {"hidden_size": 8, "num_layers": 1, "embedding_dim": 8},
        "ig": {"durations": [0.1, None], "n_steps": 2, "cache_dir": str(tmp_path / "cache")},
        "loss": {"method": method, **loss},
        "training": {"output_dir": str(tmp_path / out), "epochs": epochs,
                     "batch_size": batch_size, "seed": 3},
    })


def _capture_student(monkeypatch):
    """Wrap build_student: keep the built model and a copy of its initial weights, and record
    the waveforms of every forward."""
    seen = {"inputs": []}
    real = train_mod.build_student

    def build(*args, **kwargs):
        model = real(*args, **kwargs)
        seen["model"], seen["init"] = model, copy.deepcopy(model.state_dict())
        model.register_forward_pre_hook(
            lambda m, args: seen["inputs"].append(args[0].detach().clone()))
        return model

    monkeypatch.setattr(train_mod, "build_student", build)
    return seen


def test_loss_weights_are_the_configured_ones_per_term():
    w = LossConfig(method="imlkd", ce=1.5, map=3.0, instance=0.5, class_level=0.25,
                   batch_level=2.0).weights()
    assert w == {"ce": 1.5, "map": 3.0, "instance": 0.5, "class_level": 0.25, "batch_level": 2.0}
    assert LossConfig(method="logit_kd", class_level=0.25, instance=9.0).weights() == {
        "ce": 1.0, "class_level": 0.25}
    assert LossConfig(method="embedding_kd", instance=0.5, class_level=9.0).weights() == {
        "ce": 1.0, "instance": 0.5}


def test_kd_terms_pair_each_crop_with_its_own_teacher_targets(tiny, tmp_path, monkeypatch):
    """One batch holding every crop (in the epoch's shuffled order): the logged terms of the
    only step equal the losses of the initial student against the teacher targets of the same
    crops, and the logged total is the weighted sum."""
    teacher, _ = tiny
    crops = _tones()
    seen = _capture_student(monkeypatch)
    weights = {"ce": 1.0, "map": 3.0, "instance": 0.5, "class_level": 0.25, "batch_level": 2.0}
    cfg = _cfg(tmp_path, "pairs", batch_size=6, tau=3.0, **weights)
    (record,) = train_system(cfg, teacher, crops)["epochs"]

    (batch,) = seen["inputs"]
    audio = torch.from_numpy(np.stack([c.audio for c in crops]))
    order = [int(torch.nonzero((audio == row).all(1))[0]) for row in batch]
    assert sorted(order) == list(range(6)) and order != list(range(6))  # a shuffled batch
    speakers = sorted({c.speaker for c in crops})
    labels = torch.tensor([speakers.index(c.speaker) for c in crops])
    targets = teacher_targets(teacher, crops, labels, len(speakers))
    assert (targets.embeddings @ targets.embeddings.T).min() < 0.5  # distinct targets

    model = copy.deepcopy(seen["model"])
    model.load_state_dict(seen["init"])
    with torch.no_grad():
        emb = model(audio).embedding  # natural crop order: each term pairs crop i with i
        expected = {
            "ce": model.classifier(emb, labels),
            "instance": instance_loss(model.project(emb), targets.embeddings),
            "class_level": class_loss(model.logits(emb), targets.logits, 3.0),
            "batch_level": batch_loss(emb, targets.embeddings),
        }
    for name, value in expected.items():
        assert record[name] == pytest.approx(float(value), rel=1e-5, abs=1e-7), name
    total = sum(weights[k] * record[k] for k in weights)
    assert record["loss"] == pytest.approx(total, rel=1e-5)


def test_each_epoch_sees_every_crop_once_in_a_new_order(tiny, tmp_path, monkeypatch):
    teacher, crops = tiny
    seen = _capture_student(monkeypatch)
    train_system(_cfg(tmp_path, "order", epochs=2, batch_size=2, method="none"), teacher, crops)
    audio = torch.from_numpy(np.stack([c.audio for c in crops]))
    order = [int(torch.nonzero((audio == row).all(1))[0]) for b in seen["inputs"] for row in b]
    first, second = order[:6], order[6:]
    assert sorted(first) == sorted(second) == list(range(6))
    assert first != second


def test_the_last_call_of_a_run_evaluates_even_when_stopped_or_resumed(tiny, tmp_path):
    teacher, crops = tiny
    rng = np.random.default_rng(1)
    sets = {"held": [Utterance(f"t{i % 2}", f"u{i}", (0.1 * rng.standard_normal(2400 + 160 * i))
                               .astype(np.float32)) for i in range(4)]}
    # stopped before the end: no evaluation
    part = train_system(_cfg(tmp_path, "ev", epochs=2, method="none"), teacher, crops, sets,
                        stop_after_epochs=1)
    assert "eval" not in part
    cfg = _cfg(tmp_path, "ev", epochs=2, method="none")
    cfg.training.resume = True
    resumed = train_system(cfg, teacher, crops, sets, stop_after_epochs=1)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]  # the whole run
    assert set(resumed["eval"]) == {"held"}
    assert resumed["eval"]["held"]["target_trials"] == 2
    assert resumed["eval"]["held"]["nontarget_trials"] == 4
    assert json.loads((tmp_path / "ev" / "result.json").read_text())["eval"] == resumed["eval"]


def _plain_min_dcf(tar, non, p):
    best = 1.0
    for th in np.concatenate([tar, non, [np.inf]]):
        p_miss, p_fa = np.mean(tar < th), np.mean(non >= th)
        best = min(best, (p * p_miss + (1 - p) * p_fa) / min(p, 1 - p))
    return best


def test_min_dcf_uses_the_configured_target_prior():
    speakers = [f"s{i // 3}" for i in range(12)]
    emb = F.normalize(torch.randn(12, 3, generator=torch.Generator().manual_seed(2))
                      + torch.tensor([[0.8, 0, 0]]) * torch.tensor(
                          [i // 3 % 2 for i in range(12)])[:, None], dim=-1).numpy()
    cfg = DataConfig(p_target=0.05)
    got = evaluate_embeddings(emb, speakers, cfg)
    pairs, labels = build_trials(speakers, cfg.max_nontarget, cfg.trials_seed)
    scores = (emb[pairs[:, 0]] * emb[pairs[:, 1]]).sum(1)
    tar, non = scores[labels == 1], scores[labels == 0]
    expected = _plain_min_dcf(tar, non, 0.05)
    assert 0 < expected < 1
    assert got["min_dcf"] == pytest.approx(expected, abs=1e-9)


def test_embed_utterances_keeps_utterance_order_and_real_lengths():
    lengths = [700, 300, 500, 100, 900, 200, 400]
    utts = [Utterance("s", f"u{j}", np.full(n, j + 1.0, np.float32))
            for j, n in enumerate(lengths)]
    calls = []

    def embed_fn(wav, lens):
        calls.append(wav.shape)
        # (real length, mean over the real samples, 1): the padding must not count
        return torch.stack([lens.float() / 100, wav.sum(1) / lens, torch.ones(len(lens))], 1)

    got = embed_utterances(embed_fn, utts, batch_size=3)
    expected = F.normalize(torch.tensor([[n / 100, j + 1.0, 1.0] for j, n in enumerate(lengths)],
                                        dtype=torch.float64), dim=-1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert len(calls) == 3 and calls[0] == (3, 300)  # batched by similar length


def test_teacher_embeds_each_utterance_without_its_batch_padding(tiny, monkeypatch):
    teacher, _ = tiny
    rng = np.random.default_rng(3)
    utts = [Utterance(f"t{i % 2}", f"u{i}", (0.1 * rng.standard_normal(n)).astype(np.float32))
            for i, n in enumerate([30000, 60000, 40000, 20000])]
    captured = {}

    def fake_eval(emb, speakers, cfg):
        captured["emb"], captured["speakers"] = emb, speakers
        return {}

    monkeypatch.setattr(evaluation_mod, "evaluate_embeddings", fake_eval)
    evaluate_teacher(teacher, {"set": utts}, DataConfig())
    expected = np.stack([F.normalize(teacher.embed_utterance(torch.from_numpy(u.audio)), dim=-1)
                         .double().numpy() for u in utts])
    np.testing.assert_allclose(captured["emb"], expected, atol=1e-5)
    assert captured["speakers"] == ["t0", "t1", "t0", "t1"]


def test_weight_decay_only_on_matrices(tmp_path):
    model = train_mod.build_student(_cfg(tmp_path, "x"), 3, 8)
    opt = train_mod._optimizer(model, TrainConfig(weight_decay=0.1))
    decay, other = opt.param_groups
    assert decay["weight_decay"] == 0.1 and other["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in other["params"])
    assert len(decay["params"]) + len(other["params"]) == len(list(model.parameters()))


def test_reported_params_exclude_the_training_only_heads(tiny, tmp_path):
    teacher, crops = tiny
    result = train_system(_cfg(tmp_path, "params", epochs=1), teacher, crops)
    model = train_mod.build_student(_cfg(tmp_path, "x"), 3, 8)
    expected = sum(p.numel() for m in (model.encoder, model.pool, model.embedding)
                   for p in m.parameters())
    assert result["params"] == expected
    assert expected < sum(p.numel() for p in model.parameters())


def test_last_checkpoint_is_the_highest_epoch_number(tmp_path):
    for e in (2, 9, 10):
        (tmp_path / "checkpoints" / f"epoch_{e}").mkdir(parents=True)
    path, epoch = run_folder_mod._last_checkpoint(tmp_path)
    assert epoch == 10 and path.name == "epoch_10"


def test_run_table_trains_every_method_and_seed_and_reuses_only_evaluated_runs(
        tiny, tmp_path, monkeypatch):
    teacher, crops = tiny
    calls = []

    def fake_train(cfg, teacher, crops, sets, **kwargs):
        calls.append((cfg.loss.method, cfg.training.seed, cfg.training.output_dir))
        result = {"method": cfg.loss.method, "seed": cfg.training.seed, "config": to_dict(cfg),
                  "params": 5, "eval": {"test_other": {"eer": 0.1 * (1 + cfg.training.seed),
                                                       "min_dcf": 0.5}}}
        Path(cfg.training.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.training.output_dir) / "result.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(inputs_mod.GE2E, "from_resemblyzer", staticmethod(lambda path: teacher))
    monkeypatch.setattr(inputs_mod, "load_train_crops", lambda *a, **k: crops)
    monkeypatch.setattr(inputs_mod, "load_eval_sets", lambda *a, **k: {})
    monkeypatch.setattr(table_mod, "evaluate_teacher",
                        lambda *a: {"test_other": {"eer": 0.01, "min_dcf": 0.1}})
    monkeypatch.setattr(table_mod, "train_system", fake_train)
    cfg = from_dict(SpeakerKDConfig, {"table": {"methods": ["none", "imlkd"], "seeds": [0, 1],
                                                "output_dir": str(tmp_path / "t")},
                                      "data": {"fsdd_dir": None},  # test_other only
                                      "training": {"seed": 7}})
    results = table_mod.run_table(cfg)
    root = tmp_path / "t"
    assert calls == [(m, s, str(root / f"{m}_seed{s}")) for s in (0, 1) for m in ("none", "imlkd")]
    assert [r["seed"] for r in results["systems"]["none"]] == [0, 1]
    assert "| student, no KD | 5 | 2 | 15.00 ± 7.07 |" in (root / "table.md").read_text()
    # a rerun reuses every evaluated run ...
    calls.clear()
    table_mod.run_table(cfg)
    assert calls == []
    # ... but not one whose result holds no evaluation (a run that was interrupted)
    done = root / "imlkd_seed1" / "result.json"
    unevaluated = json.loads(done.read_text())
    del unevaluated["eval"]
    done.write_text(json.dumps(unevaluated))
    table_mod.run_table(cfg)
    assert calls == [("imlkd", 1, str(root / "imlkd_seed1"))]


@pytest.mark.parametrize("folder_key", ["training.output_dir", "table.output_dir"])
def test_run_folder_refusals_offer_the_folder_setting_the_user_sets(tmp_path, folder_key):
    """A table's run folders are made from table.output_dir: its refusals used to offer
    "another training.output_dir", a setting the table overwrites."""
    (tmp_path / "checkpoints" / "epoch_3").mkdir(parents=True)
    cfg = from_dict(SpeakerKDConfig, {"training": {"output_dir": str(tmp_path), "epochs": 2}})
    with pytest.raises(ValueError, match=rf"another {folder_key}, or remove that folder"):
        run_folder_mod.check_run_folder(cfg, folder_key)
    cfg.training.resume = True
    with pytest.raises(ValueError, match=rf"more than training.epochs 2:.*another {folder_key}\)"):
        run_folder_mod.check_run_folder(cfg, folder_key)


def test_a_resume_reads_a_relative_train_dir_from_the_folder_the_run_started_in(
        tmp_path, monkeypatch):
    """A checkpoint keeps the folder its run was in (``_cwd`` in ``speaker_run.json``): a
    resume from another folder that names the same ``data.train_dir`` otherwise is no change,
    and one whose same relative spelling names another folder is refused (before 2026-12-07
    both were judged from the current folder: the first refused, the second silently taken)."""
    for folder in ("A", "B"):
        (tmp_path / folder / "speech").mkdir(parents=True)
    run = tmp_path / "run"
    cfg = from_dict(SpeakerKDConfig, {"data": {"train_dir": "speech"}, "training": {
        "output_dir": str(run), "epochs": 2, "resume": True}})
    epoch = run / "checkpoints" / "epoch_1"
    epoch.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "A")
    (epoch / run_folder_mod._RUN_SETTINGS).write_text(json.dumps(
        {**run_folder_mod.weight_settings(cfg), run_folder_mod._STARTED_IN: str(tmp_path / "A")}))
    assert run_folder_mod.check_run_folder(cfg) == (epoch, 1)  # resumed where it started
    monkeypatch.chdir(tmp_path / "B")
    with pytest.raises(ValueError, match=re.escape(
            f"data.train_dir speech (in {tmp_path / 'A'}) -> speech (in {tmp_path / 'B'})")):
        run_folder_mod.check_run_folder(cfg)
    cfg.data.train_dir = "../A/speech"  # the same folder, from here
    assert run_folder_mod.check_run_folder(cfg) == (epoch, 1)
    # the same spelling naming nothing from here (the data left in A): refused since
    # 2026-12-08 (a folder setting compares by place), saying the folder is missing here
    (tmp_path / "B" / "speech").rmdir()
    cfg.data.train_dir = "speech"
    with pytest.raises(ValueError, match=re.escape(
            f"data.train_dir speech (in {tmp_path / 'A'}) -> speech (in {tmp_path / 'B'}, "
            "not there at this start)")):
        run_folder_mod.check_run_folder(cfg)
    # the checkpoint writer records the folder the run is in
    saved = {}
    monkeypatch.setattr(run_folder_mod, "save_checkpoint",
                        lambda *args, state, **kwargs: saved.update(state))
    run_folder_mod.save_epoch_checkpoint(None, run, 2, {"seed": 0}, keep=2)
    assert saved[run_folder_mod._RUN_SETTINGS] == {"seed": 0, run_folder_mod._STARTED_IN: str(tmp_path / "B")}
