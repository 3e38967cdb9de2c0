"""SUPERB presets (SE, ASR) and the IC / ER / PR configs parse, build their heads and run on
tiny generated examples in the layouts users point them at (Fluent Speech Commands CSVs,
s3prl's IEMOCAP metadata JSON, phone manifests)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from downstream.base import get_task
from downstream.config import load_config
from downstream.data import load_splits

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "downstream" / "tasks"
SR = 16_000


def _wav(path: Path, seconds: float, freq: float, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)
                    + 0.01 * rng.standard_normal(t.size)).astype(np.float32), SR)


def _fluent_commands(root: Path) -> Path:
    """FSC layout: data/{train,valid,test}_data.csv, wavs/speakers/<spk>/<id>.wav."""
    rng = np.random.default_rng(0)
    intents = [("activate", "lights", "none"), ("decrease", "volume", "none"),
               ("bring", "shoes", "none")]
    header = ["", "path", "speakerId", "transcription", "action", "object", "location"]
    for split, speakers in (("train", ["s1", "s2"]), ("valid", ["s3"]), ("test", ["s4"])):
        rows = []
        for spk in speakers:
            for k, (a, o, loc) in enumerate(intents):
                rel = f"wavs/speakers/{spk}/{spk}_{k}.wav"
                _wav(root / rel, 0.3, 300.0 * (k + 1), rng)
                rows.append([len(rows), rel, spk, f"{a} {o}", a, o, loc])
        (root / "data").mkdir(parents=True, exist_ok=True)
        with open(root / "data" / f"{split}_data.csv", "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    return root


def _fsc_overrides(root: Path) -> dict:
    return {"data": {name: {"manifest": str(root / "data" / f"{split}_data.csv"),
                            "audio_root": str(root)}
                     for name, split in (("source", "train"), ("train_source", "train"),
                                         ("dev_source", "valid"), ("test_source", "test"))},
            "training": {"steps": 2, "batch_size": 2, "eval_every": 1}, "head": {"projector_dim": 8}}


def test_ic_fluent_commands_layout_runs(tmp_path):
    from test_downstream_tasks import _save_tiny

    from downstream.cli import evaluate_main

    root = _fluent_commands(tmp_path / "fsc")
    config = TASKS / "utterance_classification" / "ic_fluent_commands.yaml"
    task_class = get_task("utterance_classification")
    cfg = load_config(config, task_class.config_class, _fsc_overrides(root))
    splits = load_splits(cfg.data, seed=0)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [6, 3, 3]  # official lists
    assert splits["test"][0].label == "activate|lights|none"
    assert {u.speaker for u in splits["dev"]} == {"s3"}
    upstream = _save_tiny("hubert", tmp_path / "up")
    argv = ["--task", "ic", "--upstream", str(upstream), "--config", str(config),
            "--out", str(tmp_path / "out"), "--conditions", "clean"]
    for section, value in _fsc_overrides(root)["data"].items():
        argv += ["-o", f"data.{section}.manifest={value['manifest']}",
                 "-o", f"data.{section}.audio_root={value['audio_root']}"]
    argv += ["-o", "training.steps=2", "-o", "training.batch_size=2", "-o",
             "training.eval_every=1", "-o", "head.projector_dim=8"]
    assert evaluate_main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["label"] == "ic" and results["task_summary"]["num_classes"] == 3


def test_er_iemocap_metadata_layout(tmp_path):
    rng = np.random.default_rng(1)
    wav_root = tmp_path / "IEMOCAP_wav"
    meta = tmp_path / "meta"
    for split, sessions in (("train", ["Ses02F", "Ses03M"]), ("test", ["Ses01F"])):
        labels = []
        for spk in sessions:
            for k, emotion in enumerate(["neu", "hap", "ang", "sad"] * 3):
                rel = f"{spk}_impro01/{spk}_impro01_F{k:03d}.wav"
                _wav(wav_root / rel, 0.2, 200.0 + 50 * k, rng)
                labels.append({"path": rel, "label": emotion, "speaker": spk})
        meta.mkdir(exist_ok=True)
        (meta / f"{split}_meta_data.json").write_text(json.dumps({"labels": labels}))
    config = TASKS / "utterance_classification" / "er_iemocap.yaml"
    cfg = load_config(config, get_task("utterance_classification").config_class, {"data": {
        "source": {"manifest": str(meta / "train_meta_data.json"), "audio_root": str(wav_root)},
        "test_source": {"manifest": str(meta / "test_meta_data.json"),
                        "audio_root": str(wav_root)}}})
    assert cfg.label == "er"
    splits = load_splits(cfg.data, seed=0)
    assert len(splits["test"]) == 12 and {u.speaker for u in splits["test"]} == {"Ses01F"}
    # dev: round(20 % of the 6 training items of each class) = 1 per class
    assert sorted(u.label for u in splits["dev"]) == ["ang", "hap", "neu", "sad"]
    assert len(splits["train"]) + len(splits["dev"]) == 24
    assert not {u.key for u in splits["train"]} & {u.key for u in splits["dev"]}
    assert Path(splits["train"][0].audio).is_file()


@pytest.mark.parametrize("name", ["superb_se", "superb_asr", "pr_librispeech"])
def test_superb_presets_build_and_train_one_step(name):
    folder = {"superb_se": "speech_enhancement", "superb_asr": "asr",
              "pr_librispeech": "asr"}[name]
    task_class = get_task(folder)
    cfg = load_config(TASKS / folder / f"{name}.yaml", task_class.config_class)
    if folder == "speech_enhancement":
        assert (cfg.head.hidden_size, cfg.head.num_layers, cfg.head.mask_activation) == (896, 3,
                                                                                           "relu")
    if name == "superb_asr":
        assert (cfg.head.project_dim, cfg.head.hidden_size, cfg.head.num_layers) == (1024, 1024, 2)
    cfg.head.hidden_size = 8  # the preset's shape is checked above; train a narrow copy (fast)
    if folder == "asr" and cfg.head.project_dim:
        cfg.head.project_dim = 8
    task = task_class(cfg, seed=0)
    task.frames_per_second = 50.0
    head = task.build_head(16)
    from downstream.base import Example

    torch.manual_seed(0)
    if folder == "speech_enhancement":
        assert task.hop_length == 320 and cfg.loss == "npsm_mse"
        wave = np.random.default_rng(0).standard_normal(3200).astype(np.float32)
        examples = [Example("a", wave, wave * 0.5)]
        features = torch.randn(1, 10, 16)
        loss = task.training_loss(head, features, torch.tensor([10]), examples)
        # one STFT frame per upstream frame: 3200 // 320 + 1 = 11 frames, mask from 10 + padding
        mask = head(features, torch.tensor([10]), torch.tensor([11]))
        assert mask.shape == (1, 11, 257) and bool((mask >= 0).all())
    else:
        text = "HH AH L OW" if name == "pr_librispeech" else "HELLO WORLD"
        examples = [Example("a", np.zeros(1), text)]
        features = torch.randn(1, 40, 16)
        loss = task.training_loss(head, features, torch.tensor([40]), examples)
    assert torch.isfinite(loss)
    loss.backward()


def test_fbank_upstream_kaldi_recipe():
    """FBANK (SUPERB's anchor row): 240 features at 100 Hz, Kaldi frame count, a pure tone
    peaks in the mel filter holding its frequency, deltas by Kaldi's formula, CMVN, and no
    dependence on batch padding."""
    from downstream.fbank import FbankConfig, FbankUpstream, _deltas, kaldi_mel_banks

    up = FbankUpstream()
    assert up.hidden_size == 240 and up.samples_per_frame == 160
    t = np.arange(8000) / SR
    tone = torch.from_numpy((0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32))
    out = up(tone[None], torch.tensor([8000]))
    assert out.hidden_states[0].shape == (1, 1 + (8000 - 400) // 160, 240)  # 48 frames
    raw = FbankUpstream(FbankConfig(delta_order=0, cmvn=False)).features(tone)
    banks = kaldi_mel_banks(80, 512, SR, 20.0, 8000.0)
    centre = banks.argmax(dim=1) * SR / 512  # filter centre frequencies
    assert abs(float(centre[raw.mean(0).argmax()]) - 1000.0) < 60.0
    feats = out.hidden_states[0][0]
    torch.testing.assert_close(feats.mean(0), torch.zeros(240), atol=1e-4, rtol=0)
    # Kaldi deltas, N = 2: (1 * (c[t+1] - c[t-1]) + 2 * (c[t+2] - c[t-2])) / 10
    x = torch.arange(6.0)[:, None] ** 2
    d = _deltas(x, 2)
    assert float(d[3, 0]) == pytest.approx((1 * (16 - 4) + 2 * (25 - 1)) / 10)
    assert float(d[0, 0]) == pytest.approx((1 * (1 - 0) + 2 * (4 - 0)) / 10)  # edges repeated
    # padding-independent: a short utterance batched with a long one gets its own features
    short = tone[:3000]
    batch = torch.zeros(2, 8000)
    batch[0, :3000], batch[1] = short, tone
    both = up(batch, torch.tensor([3000, 8000]))
    alone = up(short[None], torch.tensor([3000]))
    n = int(alone.frame_lengths[0])
    assert int(both.frame_lengths[0]) == n
    torch.testing.assert_close(both.hidden_states[0][0, :n], alone.hidden_states[0][0])
