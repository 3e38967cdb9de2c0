"""IML-KD training: exact resume, frame alignment of the maps, configs, scoring, models."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import nan_instance_loss_at, speaker_kd_config
from safetensors.torch import load_file

from downstream.config import ConfigError, from_dict
from robustdistill.speaker.config import LossConfig, SpeakerKDConfig
from robustdistill.speaker.data import Utterance
from robustdistill.speaker.evaluation import evaluate_embeddings, evaluate_student
from robustdistill.speaker.models import AttentiveStatsPool, MelLSTMEncoder, SpeakerModel
from robustdistill.speaker.targets import map_targets
from robustdistill.speaker.train import build_student, train_system


def _setup(tmp_path, out: str, epochs: int, resume: bool = False) -> SpeakerKDConfig:
    return speaker_kd_config(tmp_path, out, epochs, resume)


def _count_updates(monkeypatch) -> list:
    """Record every optimizer update of the training runs from now on (one per batch). A
    resume from epoch N's checkpoint updates for the epochs after N only; a rerun from scratch
    ends with the same weights and log (same seed) but updates for every epoch."""
    from accelerate.optimizer import AcceleratedOptimizer

    updates, step = [], AcceleratedOptimizer.step
    monkeypatch.setattr(AcceleratedOptimizer, "step",
                        lambda self, *a, **k: updates.append(1) or step(self, *a, **k))
    return updates


def test_resume_equals_uninterrupted(tiny, tmp_path, monkeypatch):
    teacher, crops = tiny
    steps = _count_updates(monkeypatch)
    straight = train_system(_setup(tmp_path, "a", 3), teacher, crops)
    straight_steps = len(steps)
    train_system(_setup(tmp_path, "b", 3), teacher, crops, stop_after_epochs=1)
    steps.clear()
    resumed = train_system(_setup(tmp_path, "b", 3, resume=True), teacher, crops)
    # the resume trains epochs 2 and 3 only (equal weights alone would not show it)
    assert straight_steps > 0 and len(steps) * 3 == straight_steps * 2
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]  # the whole run's log
    a = load_file(tmp_path / "a" / "checkpoints" / "epoch_3" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "epoch_3" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [e["loss"] for e in straight["epochs"]] == [e["loss"] for e in resumed["epochs"]]
    # the maps were computed in the first epoch and read from the cache afterwards
    assert straight["epochs"][0]["cache_misses"] > 0 == straight["epochs"][0]["cache_hits"]
    assert straight["epochs"][1]["cache_misses"] == 0 < straight["epochs"][1]["cache_hits"]
    # the run's cache totals span its epochs before the resume too (they counted since the
    # resume: the first epoch's hits were missing)
    assert resumed["cache"] == {"hits": sum(e["cache_hits"] for e in resumed["epochs"]),
                                "misses": sum(e["cache_misses"] for e in resumed["epochs"])}
    assert resumed["epochs"][0]["cache_hits"] > 0


def _baseline_setup(tmp_path, out, epochs, resume=False):
    cfg = _setup(tmp_path, out, epochs, resume)
    cfg.loss.method = "none"  # no IG maps: the checkpoint logic is what is tested
    return cfg


def test_a_kill_while_saving_a_checkpoint_resumes_from_the_one_before(tiny, tmp_path,
                                                                      monkeypatch):
    """A kill inside save_state leaves only ``.tmp-epoch_N``: resume picks epoch N - 1,
    replays epoch N exactly, and the log holds each epoch once."""
    import accelerate

    teacher, crops = tiny
    straight = train_system(_baseline_setup(tmp_path, "a", 3), teacher, crops)
    real_save = accelerate.Accelerator.save_state

    def killed_in_epoch_2(self, output_dir=None, **kwargs):
        if "epoch_2" in str(output_dir):
            Path(output_dir).mkdir(parents=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt("killed while saving")
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(accelerate.Accelerator, "save_state", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_system(_baseline_setup(tmp_path, "b", 3), teacher, crops)
    monkeypatch.undo()
    run = tmp_path / "b"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        ".tmp-epoch_2", "epoch_1"]
    assert [json.loads(line)["epoch"] for line in
            (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]  # logged, not saved
    updates = _count_updates(monkeypatch)
    resumed = train_system(_baseline_setup(tmp_path, "b", 3, resume=True), teacher, crops)
    assert len(updates) == 2 * 2  # epochs 2 and 3 (2 batches each), from epoch_1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_2", "epoch_3"]  # training.keep_checkpoints 2
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in straight["epochs"]]
    assert [json.loads(line)["epoch"] for line in
            (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    a = load_file(tmp_path / "a" / "checkpoints" / "epoch_3" / "model.safetensors")
    b = load_file(run / "checkpoints" / "epoch_3" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_finished_run_keeps_its_log_and_evaluates_again(tiny, tmp_path):
    teacher, crops = tiny
    rng = np.random.default_rng(1)
    sets = {"held": [Utterance(f"t{i % 2}", f"u{i}",
                               (0.1 * rng.standard_normal(3200)).astype(np.float32))
                     for i in range(4)]}
    first = train_system(_baseline_setup(tmp_path, "f", 2), teacher, crops, sets)
    for stop in (None, 1):  # stop_after_epochs on a finished run used to crash
        again = train_system(_baseline_setup(tmp_path, "f", 2, resume=True), teacher, crops,
                             sets, stop_after_epochs=stop)
        assert again["epochs"] == first["epochs"]
        assert again["eval"] == first["eval"]
        saved = json.loads((tmp_path / "f" / "result.json").read_text())
        assert [e["epoch"] for e in saved["epochs"]] == [1, 2]


def test_map_targets_same_hop_is_shifted_identity_and_keeps_mass():
    (m,) = map_targets([(160, 480)], num_student_frames=5, student_hop=160, student_centre=0)
    assert torch.equal(m, torch.eye(5)[1:4])
    (m2,) = map_targets([(0, 640)], num_student_frames=3, student_hop=320, student_centre=200)
    # teacher frames hold [0, 80), [80, 240), [240, 400), [400, 560), [560, 640); student
    # frames (centres 200, 520, 840) hold [0, 360), [360, 680), [680, ...): frame 2 of the
    # teacher is split 3/4 : 1/4, the third student frame lies past the segment
    p = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2]])
    assert torch.allclose(p @ m2, torch.tensor([[0.525, 0.475, 0.0]]))


def test_loss_config_terms_per_method():
    assert set(LossConfig(method="none").weights()) == {"ce"}
    assert set(LossConfig(method="logit_kd").weights()) == {"ce", "class_level"}
    assert set(LossConfig(method="embedding_kd").weights()) == {"ce", "instance"}
    assert set(LossConfig(method="imlkd").weights()) == {
        "ce", "map", "instance", "class_level", "batch_level"}
    with pytest.raises(ConfigError, match="loss.method"):
        from_dict(SpeakerKDConfig, {"loss": {"method": "vanilla"}})
    with pytest.raises(ConfigError, match="n_step"):
        from_dict(SpeakerKDConfig, {"ig": {"n_step": 4}})


def test_evaluate_embeddings_perfect_and_random():
    speakers = ["a", "a", "b", "b", "c", "c"]
    emb = np.eye(3)[[0, 0, 1, 1, 2, 2]]
    result = evaluate_embeddings(emb, speakers, SpeakerKDConfig().data)
    assert result["eer"] == 0.0 and result["target_trials"] == 3
    assert result["nontarget_trials"] == 12


def test_attentive_pooling_ignores_padding():
    pool = AttentiveStatsPool(4)
    x = torch.randn(1, 5, 4)
    padded = torch.cat([x, torch.randn(1, 3, 4) * 100], dim=1)
    assert torch.allclose(pool(x, torch.tensor([5])), pool(padded, torch.tensor([5])), atol=1e-6)


def test_student_frames_align_with_teacher_frames():
    model = SpeakerModel(MelLSTMEncoder(8, 1), num_speakers=3, embedding_dim=4, teacher_dim=6)
    out = model(torch.randn(2, 3200))
    assert out.embedding.shape == (2, 4) and out.map_logits.shape == (2, 1 + 3200 // 160)
    assert model.project(out.embedding).shape == (2, 6)
    # a shorter utterance in a padded batch has the same embedding as on its own
    wav = torch.randn(1, 1600)
    model.eval()
    alone = model(wav).embedding
    batch = model(torch.cat([torch.nn.functional.pad(wav, (0, 1600)), torch.randn(1, 3200)]),
                  torch.tensor([1600, 3200])).embedding[:1]
    assert torch.allclose(alone, batch, atol=1e-5)


@pytest.mark.parametrize(("encoder", "batched"), [("lstm", True), ("hubert", False),
                                                  ("wavlm-layer", True),
                                                  ("data2vec-audio", False)])
def test_verification_embeds_each_utterance_as_it_is_alone(encoder, batched, tmp_path,
                                                           monkeypatch):
    """The metrics do not depend on which utterances share a batch: every embedding scored is
    the utterance's lone one. The LSTM and a layer-norm WavLM with an attention mask ignore
    padding and are batched; a group-norm upstream (HuBERT Base shape) and data2vec-audio (its
    positional convolutions see the padding, mask or not) would not, so their utterances go one
    at a time (batched, their embeddings move by 1e-2 and more)."""
    import robustdistill.speaker.evaluation as speaker_evaluation
    from robustdistill.speaker.models import UpstreamEncoder
    from robustdistill.teachers import make_random_teacher

    torch.manual_seed(0)
    if encoder == "lstm":
        enc = MelLSTMEncoder(8, 1)
    elif encoder == "wavlm-layer":  # as WavLM Large: normalised input, an attention mask
        from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

        from robustdistill.teachers import PRESETS

        WavLMModel(WavLMConfig(**PRESETS["tiny"], feat_extract_norm="layer",
                               do_stable_layer_norm=True)).save_pretrained(tmp_path / encoder)
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(
            tmp_path / encoder)
        enc = UpstreamEncoder(str(tmp_path / encoder), frozen=True)
    else:
        enc = UpstreamEncoder(str(make_random_teacher(encoder, "tiny", tmp_path / encoder)),
                              frozen=True)
    assert speaker_evaluation.ignores_padding(enc) is batched
    model = SpeakerModel(enc, num_speakers=3, embedding_dim=8).eval()
    rng = np.random.default_rng(0)
    utts = [Utterance(f"s{i % 2}", f"u{i}",
                      (0.1 * rng.standard_normal(int(n))).astype(np.float32))
            for i, n in enumerate(rng.integers(1_600, 8_000, 6))]
    scored, calls, real = [], [], speaker_evaluation.embed_utterances

    def spy(embed_fn, utterances, batch_size=16):
        def counted(wav, lengths):
            calls.append(len(lengths))
            return embed_fn(wav, lengths)
        scored.append(out := real(counted, utterances, batch_size))
        return out

    monkeypatch.setattr(speaker_evaluation, "embed_utterances", spy)
    evaluate_student(model, {"set": utts}, SpeakerKDConfig().data)
    with torch.no_grad():
        alone = torch.cat([torch.nn.functional.normalize(
            model(torch.from_numpy(u.audio)[None]).embedding, dim=-1) for u in utts])
    np.testing.assert_allclose(scored[0], alone.double().numpy(), atol=1e-5)
    assert calls == ([6] if batched else [1] * 6)


class _DeviceProbe(torch.nn.Module):
    """Records the devices of the tensors it is given; its parameter lives on ``meta`` (no GPU
    in the tests: a meta model stands in for a CUDA one). As an encoder it stops the forward
    (``raise_after``); as a student it returns CPU embeddings."""

    output_size = 4
    samples_per_frame = 160

    def __init__(self, raise_after: bool = False):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(1, device="meta"))
        self.raise_after = raise_after
        self.seen = []

    def forward(self, waveforms, lengths):
        self.seen.append((waveforms.device.type, lengths.device.type))
        if self.raise_after:
            raise StopIteration
        return SimpleNamespace(embedding=torch.ones(waveforms.shape[0], 4))


def test_inputs_and_default_lengths_follow_the_model_device():
    encoder = _DeviceProbe(raise_after=True)
    with pytest.raises(StopIteration):
        SpeakerModel(encoder, num_speakers=2, embedding_dim=4)(torch.empty(2, 3200, device="meta"))
    assert encoder.seen == [("meta", "meta")]
    student = _DeviceProbe()
    utts = [Utterance(f"s{i % 2}", f"u{i}", np.ones(1600, np.float32)) for i in range(4)]
    evaluate_student(student, {"set": utts}, SpeakerKDConfig().data)
    assert student.seen and set(student.seen) == {("meta", "meta")}


def test_test_speakers_seen_in_training_are_refused(tiny, tmp_path):
    teacher, crops = tiny
    leak = {"test": [Utterance("s1", "x", np.zeros(3200, np.float32))]}
    with pytest.raises(ValueError, match="also training speakers"):
        train_system(_setup(tmp_path, "c", 1), teacher, crops, leak)


def test_upstream_student_trains_with_imlkd(tiny, tiny_wavlm_dir, tmp_path):
    """A student of the other kind (an Upstream + featurizer): 20 ms frames, teacher maps moved
    onto them; one epoch runs, every IML-KD term is computed (positive) and counts in the
    loss with its weight, and the maps were attributed (IG ran and filled the cache)."""
    teacher, crops = tiny
    cfg = _setup(tmp_path, "up", 1)
    cfg.student.kind, cfg.student.upstream = "upstream", str(tiny_wavlm_dir)
    cfg.loss.map, cfg.loss.instance, cfg.loss.batch_level = 0.5, 2.0, 3.0  # not all 1
    result = train_system(cfg, teacher, crops)
    (epoch,) = result["epochs"]
    weights = cfg.loss.weights()
    assert set(weights) == {"ce", "map", "instance", "class_level", "batch_level"}
    assert all(np.isfinite(v) for v in epoch.values())
    assert all(epoch[k] > 0 for k in weights), epoch
    # the logged loss is the mean of the per-batch weighted sums: linear, so it equals the
    # weighted sum of the logged per-term means (a term computed but left out fails this)
    assert epoch["loss"] == pytest.approx(sum(w * epoch[k] for k, w in weights.items()),
                                          rel=1e-6)
    assert epoch["loss"] > epoch["ce"] * weights["ce"]
    assert epoch["cache_misses"] > 0 and epoch["ig_relative_gap"] >= 0
    assert result["map_frames"]


def test_table_format_and_run_reuse_key():
    from robustdistill.speaker.table import _run_key, format_table

    def run(eer, dcf):
        return {"params": 10, "eval": {"s": {"eer": eer, "min_dcf": dcf}}}

    results = {"teacher": run(0.01, 0.1),
               "systems": {"none": [run(0.10, 0.5), run(0.20, 0.7)]}}
    lines = format_table(results).splitlines()
    assert lines[2] == "| GE2E teacher (Resemblyzer) | 10 | - | 1.00 | 0.100 |"
    # mean and sample std (ddof 1) over seeds: EER (10, 20) % -> 15.00 ± 7.07
    assert lines[3] == "| student, no KD | 10 | 2 | 15.00 ± 7.07 | 0.600 ± 0.141 |"
    base = {"loss": {"method": "none"}, "ig": {"n_steps": 8}, "table": {"seeds": [0]}}
    other = {"loss": {"method": "none"}, "ig": {"n_steps": 32}, "table": {"seeds": [1]}}
    assert _run_key(base) == _run_key(other)  # maps do not matter without map loss
    base["loss"]["method"] = other["loss"]["method"] = "imlkd"
    assert _run_key(base) != _run_key(other)
    # a table continued with --training.resume true (after an interrupted run) reuses the runs
    # it had finished, and the table command without it reuses them again (it used to retrain
    # them, then refuse: their folders hold checkpoints)
    done = {"loss": {"method": "none"}, "training": {"output_dir": "a", "resume": False,
                                                     "epochs": 3}}
    again = {"loss": {"method": "none"}, "training": {"output_dir": "b", "resume": True,
                                                      "epochs": 3}}
    assert _run_key(done) == _run_key(again)
    again["training"]["epochs"] = 4
    assert _run_key(done) != _run_key(again)


def test_a_finished_run_exports_its_embedder_and_it_reloads_exactly(tiny, tmp_path):
    """``RUN/student``: the trained encoder, pooling and embedding only (no classifier, map head
    or projection), equal to the final checkpoint's and giving the trained model's embeddings;
    an interrupted run exports nothing."""
    from robustdistill.speaker.models import SpeakerEmbedder

    teacher, crops = tiny
    train_system(_baseline_setup(tmp_path, "cut", 2), teacher, crops, stop_after_epochs=1)
    assert not (tmp_path / "cut" / "student").exists()
    result = train_system(_baseline_setup(tmp_path, "r", 2), teacher, crops)
    student = tmp_path / "r" / "student"
    config = json.loads((student / "config.json").read_text())
    assert config["model_type"] == "robustdistill-speaker-lstm"
    assert (config["hidden_size"], config["num_layers"], config["embedding_dim"]) == (8, 1, 8)
    exported = load_file(student / "model.safetensors")
    final = load_file(tmp_path / "r" / "checkpoints" / "epoch_2" / "model.safetensors")
    assert exported.keys() == {k for k in final if k.startswith(("encoder.", "pool.",
                                                                   "embedding."))}
    assert all(torch.equal(exported[k], final[k]) for k in exported)
    assert sum(v.numel() for k, v in exported.items()
               if not k.startswith("encoder.mel.")) == result["params"]
    embedder = SpeakerEmbedder.from_pretrained(student)
    trained = build_student(_baseline_setup(tmp_path, "r", 2), 3, 8)
    trained.load_state_dict(final)
    x = torch.from_numpy(np.stack([c.audio for c in crops[:2]]))
    with torch.no_grad():
        torch.testing.assert_close(embedder(x), trained.eval()(x).embedding, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not 'robustdistill-speaker-lstm'"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "config.json").write_text('{"model_type": "wavlm"}')
        (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
        SpeakerEmbedder.from_pretrained(tmp_path / "bad")


def test_a_fresh_run_into_a_folder_with_an_earlier_runs_checkpoints_is_refused(tiny, tmp_path):
    """A fresh start used to append to the earlier run's metrics.jsonl and leave its later
    checkpoints, which a resume then took as this run's (result.json epochs [1, 2, 3, 1, 2, 4])."""
    teacher, crops = tiny
    train_system(_baseline_setup(tmp_path, "r", 3), teacher, crops)
    with pytest.raises(ValueError, match=r"earlier run \(epoch_2, epoch_3\).*"
                                         r"training\.resume true"):
        train_system(_baseline_setup(tmp_path, "r", 2), teacher, crops)
    log = [json.loads(line)["epoch"] for line in
           (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]  # untouched


def test_checkpoints_rotate_to_keep_checkpoints_and_a_rotated_run_resumes_exactly(
        tiny, tmp_path, monkeypatch):
    """Every epoch's checkpoint used to stay (a soak run of 20 epochs: 20 folders, 3.8 MB
    each; the IML-KD table's 12 runs of 30 epochs, 1.4 GB); the ``training.keep_checkpoints``
    newest stay, and a bare ``epoch_N`` of a run older than the manifest is never deleted."""
    from robustdistill.speaker.config import TrainConfig
    from robustdistill.speaker.table import _run_key

    teacher, crops = tiny
    straight = train_system(_baseline_setup(tmp_path, "a", 4), teacher, crops)
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == [
        "epoch_3", "epoch_4"]  # the default, 2
    cfg = _baseline_setup(tmp_path, "b", 4)
    cfg.training.keep_checkpoints = 1
    train_system(cfg, teacher, crops, stop_after_epochs=2)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["epoch_2"]
    (tmp_path / "b" / "checkpoints" / "epoch_0").mkdir()  # no manifest: an older run's
    cfg.training.resume = True
    updates = _count_updates(monkeypatch)
    resumed = train_system(cfg, teacher, crops)
    assert len(updates) == 2 * 2  # epochs 3 and 4 (2 batches each), from epoch_2
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == [
        "epoch_0", "epoch_4"]
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in straight["epochs"]]
    a = load_file(tmp_path / "a" / "checkpoints" / "epoch_4" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "epoch_4" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="training.keep_checkpoints must be >= 1, got 0"):
        TrainConfig(keep_checkpoints=0)
    # what stays on disk does not identify a run: a table's runs of before are reused
    done = {"loss": {"method": "none"}, "training": {"output_dir": "a", "epochs": 3}}
    again = {"loss": {"method": "none"}, "training": {"output_dir": "a", "epochs": 3,
                                                      "keep_checkpoints": 5}}
    assert _run_key(done) == _run_key(again)


def test_a_resume_from_another_folder_reads_the_runs_relative_paths_from_its_own(
        tiny, tmp_path, monkeypatch):
    """data.train_dir ``data`` given in A, the run resumed from B: ``../A/data`` is the same
    folder (refused before 2026-12-07, the saved path read from B) and B's own ``data`` is
    another (accepted before: the run went on with other audio under the same settings)."""
    teacher, crops = tiny
    for folder in ("A", "B"):
        (tmp_path / folder / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "A")
    cfg = _baseline_setup(tmp_path, "d", 1)
    cfg.data.train_dir = "data"  # train_system takes the crops given; the path is recorded
    train_system(cfg, teacher, crops)
    monkeypatch.chdir(tmp_path / "B")
    cfg = _baseline_setup(tmp_path, "d", 2, resume=True)
    cfg.data.train_dir = "data"
    with pytest.raises(ValueError, match=rf"other settings.*data.train_dir data \(in "
                                         rf"{tmp_path / 'A'}\) -> data \(in {tmp_path / 'B'}\)"):
        train_system(cfg, teacher, crops)
    cfg.data.train_dir = "../A/data"
    assert [e["epoch"] for e in train_system(cfg, teacher, crops)["epochs"]] == [1, 2]


def test_a_fresh_run_clears_a_log_left_without_a_checkpoint(tiny, tmp_path):
    teacher, crops = tiny
    run = tmp_path / "k"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 9.0}) + "\n")
    result = train_system(_baseline_setup(tmp_path, "k", 1), teacher, crops)
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert log == result["epochs"] and len(log) == 1 and log[0]["loss"] != 9.0


@pytest.mark.parametrize("key, value", [("loss.method", "logit_kd"), ("training.lr", 0.05),
                                        ("training.batch_size", 3), ("student.margin", 0.3)])
def test_resume_with_other_training_settings_is_refused(tiny, tmp_path, key, value):
    """Resuming used to continue the run with the new settings and write them to result.json
    as if the whole run had used them (a table rerun then reported the old model)."""
    teacher, crops = tiny
    train_system(_baseline_setup(tmp_path, "c", 1), teacher, crops)
    cfg = _baseline_setup(tmp_path, "c", 2, resume=True)
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ValueError, match=rf"epoch_1 was trained with other settings.*{key}"):
        train_system(cfg, teacher, crops)
    # more epochs, a new evaluation set or another cache folder are fine
    cfg = _baseline_setup(tmp_path, "c", 2, resume=True)
    cfg.ig.cache_dir = str(tmp_path / "other_cache")
    cfg.data.max_nontarget = 7
    assert [e["epoch"] for e in train_system(cfg, teacher, crops)["epochs"]] == [1, 2]
    # fewer epochs than the checkpoint's: its 2-epoch model was reported as a 1-epoch run
    with pytest.raises(ValueError, match="epoch_2 has trained 2 epochs, more than "
                                         "training.epochs 1"):
        train_system(_baseline_setup(tmp_path, "c", 1, resume=True), teacher, crops)


def test_a_truncated_newest_checkpoint_is_refused_by_name_before_any_work(tiny, tmp_path):
    """The newest ``epoch_N`` is checked against its manifest before a resume: a
    ``model.safetensors`` cut short was loaded as it was, and the command died with a
    safetensors traceback after the inputs were loaded and ``config.yaml`` rewritten."""
    teacher, crops = tiny
    train_system(_baseline_setup(tmp_path, "t", 2), teacher, crops)
    run = tmp_path / "t"
    weights = run / "checkpoints" / "epoch_2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    config = (run / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"epoch_2: model\.safetensors has 100 bytes.*remove "
                                         "that folder to resume from the checkpoint before it"):
        train_system(_baseline_setup(tmp_path, "t", 3, resume=True), teacher, crops)
    assert (run / "config.yaml").read_text() == config
    assert weights.stat().st_size == 100


@pytest.mark.parametrize("bad", ["loss", "gradient"])
def test_a_nonfinite_step_stops_the_run_before_its_update_and_keeps_the_earlier_epochs(
        tiny, tmp_path, monkeypatch, bad):
    """A NaN loss (or, with a finite loss, a NaN gradient) in epoch 2: the run stops at that
    step with one line naming it and the newest checkpoint; epoch 1's checkpoint and log line
    stay as they were. It was a ``FloatingPointError`` traceback after the whole epoch (its
    NaN steps applied), with nothing naming the checkpoint."""
    from robustdistill.nonfinite import NonFiniteTrainingError
    from robustdistill.speaker import train as speaker_train

    teacher, crops = tiny
    real, calls = speaker_train.instance_loss, []

    def instance_loss(student, target):  # the third call: epoch 2, batch 1 (2 batches an epoch)
        value = real(student, target)
        calls.append(1)
        if len(calls) != 3:
            return value
        if bad == "loss":
            return value * float("nan")
        return value + torch.sqrt((student - student.detach()).abs()).sum()  # d/dx at 0: NaN

    monkeypatch.setattr(speaker_train, "instance_loss", instance_loss)
    cfg = speaker_kd_config(tmp_path, "run", 3, method="embedding_kd")
    run = tmp_path / "run"
    with pytest.raises(speaker_train.NonFiniteLossError) as err:
        train_system(cfg, teacher, crops)
    assert isinstance(err.value, NonFiniteTrainingError)  # what the commands print in one line
    what = ("the loss was NaN/Inf (instance=nan, loss=nan)" if bad == "loss"
            else "the gradient norm was nan (loss ")
    assert str(err.value).startswith(f"stopped at epoch 2, batch 1 of 2: {what}")
    assert (f"with training.lr=0.002 and training.max_grad_norm=5; that step was not applied, "
            f"and nothing after the newest checkpoint, {run / 'checkpoints' / 'epoch_1'} "
            "(epoch 1), was saved. The run is seeded, so --training.resume true would meet this "
            "step again: lower training.lr") in str(err.value)
    assert str(err.value).endswith("in another training.output_dir (a resume with other "
                                   "settings is refused)")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_1"]
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1] and np.isfinite(log[0]["loss"])
    # epoch 1's weights, which the stop left alone, are those of an uninterrupted epoch 1
    monkeypatch.setattr(speaker_train, "instance_loss", real)
    train_system(speaker_kd_config(tmp_path, "ref", 1, method="embedding_kd"), teacher, crops)
    kept = load_file(run / "checkpoints" / "epoch_1" / "model.safetensors")
    ref = load_file(tmp_path / "ref" / "checkpoints" / "epoch_1" / "model.safetensors")
    assert all(torch.equal(kept[k], ref[k]) for k in ref) and kept.keys() == ref.keys()


def test_a_nonfinite_step_in_the_first_epoch_says_no_checkpoint_was_saved(tiny, tmp_path):
    teacher, crops = tiny
    cfg = _baseline_setup(tmp_path, "run", 2)
    cfg.training.lr = 3e37  # the first step moves every weight by about 3e37
    from robustdistill.speaker.train import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"^stopped at epoch 1, batch 2 of 2: the loss "
                                                 r"was NaN/Inf \(ce=nan, loss=nan\), with "
                                                 r"training.lr=3e\+37 .*; that step was not "
                                                 r"applied; no checkpoint of this run was saved: "
                                                 r"lower training.lr, .* and start again \(the "
                                                 r"same folder will do, it holds none\)$"):
        train_system(cfg, teacher, crops)
    assert not (tmp_path / "run" / "checkpoints").exists()


def _nan_in_epoch_2(monkeypatch):
    """Make ``instance_loss``'s third call (epoch 2, batch 1 of 2 with the :func:`tiny` crops)
    NaN; returns the real one."""
    return nan_instance_loss_at(monkeypatch, 3)


def test_a_nonfinite_stop_writes_stopped_json_and_a_run_past_it_removes_it(tiny, tmp_path,
                                                                           monkeypatch):
    """The speaker stop records itself in ``stopped.json``, as ``distill`` and ``train-se``
    do (through :func:`robustdistill.nonfinite.stop_with_record`): the step, epoch and batch,
    what was NaN/Inf, the line, and the checkpoint holding the last saved weights. Until
    2026-12-07 it wrote none: the card and outcome tools could not tell it from a kill. A
    segment that completes an epoch past the stop removes it (a finished run never keeps
    one)."""
    from robustdistill.speaker import train as speaker_train

    teacher, crops = tiny
    real = _nan_in_epoch_2(monkeypatch)
    run = tmp_path / "run"
    with pytest.raises(speaker_train.NonFiniteLossError) as err:
        train_system(speaker_kd_config(tmp_path, "run", 3, method="embedding_kd"), teacher,
                     crops)
    record = json.loads((run / "stopped.json").read_text())
    assert record == {
        "step": 3, "epoch": 2, "batch": 1, "batches_per_epoch": 2, "reason": "non-finite",
        "message": str(err.value), "nonfinite": "the loss was NaN/Inf (instance=nan, loss=nan)",
        "applied": False, "checkpoint": str(run / "checkpoints" / "epoch_1"),
        "checkpoint_epochs": 1, "checkpoint_batches": 0}
    assert not (run / "result.json").exists() and not (run / "student").exists()
    # resumed (the step is finite this time) to its end: the stop no longer describes it
    monkeypatch.setattr(speaker_train, "instance_loss", real)
    result = train_system(speaker_kd_config(tmp_path, "run", 3, resume=True,
                                            method="embedding_kd"), teacher, crops)
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3]
    assert not (run / "stopped.json").exists() and (run / "student" / "config.json").is_file()


def test_a_stop_before_the_first_checkpoint_records_none_and_a_new_start_removes_it(tiny,
                                                                                   tmp_path):
    teacher, crops = tiny
    cfg = _baseline_setup(tmp_path, "run", 2)
    cfg.training.lr = 3e37  # the first step moves every weight by about 3e37
    from robustdistill.speaker.train import NonFiniteLossError

    with pytest.raises(NonFiniteLossError) as err:
        train_system(cfg, teacher, crops)
    record = json.loads((tmp_path / "run" / "stopped.json").read_text())
    assert record == {
        "step": 2, "epoch": 1, "batch": 2, "batches_per_epoch": 2, "reason": "non-finite",
        "message": str(err.value), "nonfinite": "the loss was NaN/Inf (ce=nan, loss=nan)",
        "applied": False, "checkpoint": None, "checkpoint_epochs": None,
        "checkpoint_batches": None}
    # "the same folder will do": a run there with a sane rate ends without the old stop
    train_system(_baseline_setup(tmp_path, "run", 1), teacher, crops)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoints", "config.yaml", "environment.json", "metrics.jsonl", "result.json",
        "student"]


def test_a_table_run_stopped_before_its_first_checkpoint_names_the_tables_other_runs(tiny,
                                                                                      tmp_path):
    """A table run that stops in its first epoch: 'the same folder will do' is true only
    when no other run of the table holds checkpoints (a table with a lower training.lr refuses
    their folders, checked on LibriSpeech); otherwise the line asks for another
    table.output_dir and names them."""
    from robustdistill.speaker.train import NonFiniteLossError

    teacher, crops = tiny
    first = _baseline_setup(tmp_path, "table/none_seed0", 1)
    train_system(first, teacher, crops, folder_key="table.output_dir")
    diverging = _baseline_setup(tmp_path, "table/none_seed1", 2)
    diverging.training.lr = 3e37
    with pytest.raises(NonFiniteLossError) as err:
        train_system(diverging, teacher, crops, folder_key="table.output_dir")
    assert str(err.value).endswith(
        "no checkpoint of this run was saved: lower training.lr, set a smaller "
        "training.max_grad_norm or check the data, and start again in another "
        "table.output_dir (the table's runs none_seed0 there hold checkpoints of these "
        "settings, which a table with other ones refuses)")
    alone = _baseline_setup(tmp_path, "table2/none_seed0", 2)
    alone.training.lr = 3e37
    with pytest.raises(NonFiniteLossError, match=r"\(the same folder will do, it holds none\)$"):
        train_system(alone, teacher, crops, folder_key="table.output_dir")
