"""Speech enhancement task: metrics, mask head shapes, and a few training steps end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import HubertConfig, HubertModel

from downstream.base import Example
from downstream.conditions import TestCorruptor, parse_conditions
from downstream.config import load_config
from downstream.data import load_splits
from downstream.decoding import decode_all
from downstream.items import read_items
from downstream.runner import RunOptions, run_evaluation
from downstream.tasks.speech_enhancement import SpeechEnhancementTask, speech_metrics
from downstream.tasks.speech_enhancement.task import MaskHead, SEHeadConfig
from robustdistill.synthetic import write_synthetic_corpus

SR = 16_000


@pytest.fixture(autouse=True)
def one_thread():
    """Small LSTMs on a shared 2-core machine run ~50x slower with 2 intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("se")
    write_synthetic_corpus(root / "speech", 12, seconds_range=(1.5, 2.5), seed=1)
    rng = np.random.default_rng(0)
    (root / "noise").mkdir()
    sf.write(root / "noise" / "hum.wav", 0.1 * rng.standard_normal(SR * 3), SR)
    (root / "rir").mkdir()
    t = np.arange(int(0.3 * SR)) / SR
    sf.write(root / "rir" / "room.wav", rng.standard_normal(t.size) * np.exp(-t / 0.05), SR)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, conv_dim=(32, 32, 32), conv_kernel=(8, 8, 8),
                       conv_stride=(4, 4, 4), num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    HubertModel(cfg).save_pretrained(root / "up")
    config = root / "se.yaml"
    config.write_text(f"""
data:
  source: {{root: {root / "speech"}}}
  split: {{by: item, dev: 0.25, test: 0.25}}
training: {{steps: 4, batch_size: 4, eval_every: 2, eval_batch_size: 4}}
head: {{hidden_size: 16, num_layers: 1}}
train_noise_dir: {root / "noise"}
train_crop_seconds: 1.0
disk_cache: false
""")
    return root


def test_metrics_hand_values():
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    clean = (np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    same = speech_metrics(clean, clean)
    assert same["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert same["si_sdr"] > 100
    # A residual exactly orthogonal to the zero-mean clean speech, of zero mean itself, with
    # 1/10 of its energy: SI-SDR(g * clean + e, clean) = 10 log10(g^2 ||c||^2 / ||e||^2),
    # exactly (float64 throughout): 10 dB for g = 1, 10 + 20 log10(2) dB for g = 2.
    ref = clean.astype(np.float64) - clean.mean(dtype=np.float64)
    noise = rng.standard_normal(clean.size)
    noise -= noise.mean()
    noise -= (noise @ ref) / (ref @ ref) * ref
    noise *= np.sqrt((ref @ ref) / (noise @ noise) / 10.0)
    assert speech_metrics(ref + noise, ref, metrics=["si_sdr"])["si_sdr"] == pytest.approx(
        10.0, abs=1e-9)
    assert speech_metrics(2 * ref + noise, ref, metrics=["si_sdr"])["si_sdr"] == pytest.approx(
        10.0 + 20 * np.log10(2.0), abs=1e-9)
    # A scaled copy has the same SI-SDR (scale invariance), with any DC offset on either side.
    assert speech_metrics(0.5 * (ref + noise) + 0.3, ref - 0.2, metrics=["si_sdr"])[
        "si_sdr"] == pytest.approx(10.0, abs=1e-9)
    # Zero-mean SI-SDR (robustdistill.metrics.si_sdr, arXiv:1811.02508): a DC offset is removed
    # and does not count as distortion (torchmetrics' default, zero_mean=False, gives 0 dB).
    offset = clean + np.float32(np.sqrt(np.mean(clean**2)))
    assert speech_metrics(offset, clean)["si_sdr"] > 100
    with pytest.raises(ValueError, match="differ"):
        speech_metrics(clean[:-1], clean)


def test_mask_head_upsamples_to_stft_frames():
    head = MaskHead(8, 257, 2, SEHeadConfig(hidden_size=4, num_layers=1))
    mask = head(torch.randn(2, 10, 8), torch.tensor([10, 7]), torch.tensor([21, 15]))
    assert mask.shape == (2, 21, 257)
    assert float(mask.detach().min()) >= 0 and float(mask.detach().max()) <= 1


def test_ideal_mask_reconstruction_is_exact():
    """A head that outputs mask 1 must give back the noisy input exactly (istft round trip)."""
    task = SpeechEnhancementTask.__new__(SpeechEnhancementTask)
    from downstream.tasks.speech_enhancement.task import SpeechEnhancementConfig, StftConfig

    task.config = SpeechEnhancementConfig.__new__(SpeechEnhancementConfig)
    task.config.stft = StftConfig()
    task.window = torch.hann_window(400)

    class Ones(torch.nn.Module):
        def forward(self, features, frame_lengths, k):
            return torch.ones(features.shape[0], int(k.max()), 257)

    wave = np.random.default_rng(0).standard_normal(12345).astype(np.float32)
    ex = Example("a", wave, wave)
    (out,) = task.enhance(Ones(), torch.zeros(1, 39, 4), torch.tensor([39]), [ex])
    np.testing.assert_allclose(out, wave, atol=1e-5)


def test_trains_and_writes_results(setup_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = setup_dirs
    results = run_evaluation(RunOptions(
        task="speech_enhancement", upstream=str(root / "up"), config=str(root / "se.yaml"),
        out=str(tmp_path / "out"), conditions=["clean", "snr0", "reverb"],
        test_noise_dir=str(root / "noise"), test_rir_dir=str(root / "rir"),
    ))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["task"] == "speech_enhancement" and saved["primary_metric"] == "pesq"
    assert set(saved["metrics"]) == {"clean", "snr0", "reverb"}
    for name, metrics in saved["metrics"].items():
        for key in ("pesq", "stoi", "si_sdr", "noisy_pesq", "si_sdr_improvement"):
            assert key in metrics, (name, key)
        assert metrics["si_sdr_improvement"] == pytest.approx(
            metrics["si_sdr"] - metrics["noisy_si_sdr"])
    # The clean condition's noisy input is the clean speech itself.
    assert saved["metrics"]["clean"]["noisy_stoi"] == pytest.approx(1.0, abs=1e-6)
    # snr0's noisy input, rebuilt here from the run's own splits and test noise (seed 0): each
    # item's noisy_si_sdr is the zero-mean SI-SDR of that input against its clean speech, the
    # noise sits at exactly 0 dB, and the condition's figure is the mean over the items.
    config = load_config(root / "se.yaml", SpeechEnhancementTask.config_class)
    waveforms, _ = decode_all(load_splits(config.data, 0), config.data.max_seconds)
    corruptor = TestCorruptor.from_dirs(root / "noise", None, 0)
    (snr0,) = parse_conditions(["snr0"])
    items = {r["key"]: r for r in read_items(tmp_path / "out" / "items" / "snr0.jsonl")}
    assert sorted(items) == sorted(u.key for u, _ in waveforms["test"]) and items
    for utterance, wave in waveforms["test"]:
        clean = wave.astype(np.float32)
        noisy = corruptor.apply(clean, snr0, utterance.key).astype(np.float64)
        clean = clean.astype(np.float64)
        assert 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2)) == pytest.approx(
            0.0, abs=1e-4)
        c, x = clean - clean.mean(), noisy - noisy.mean()
        target = (x @ c) / (c @ c) * c
        expected = 10 * np.log10((target @ target) / ((x - target) @ (x - target)))
        assert items[utterance.key]["noisy_si_sdr"] == pytest.approx(expected, abs=1e-6)
    assert saved["metrics"]["snr0"]["noisy_si_sdr"] == pytest.approx(
        np.mean([r["noisy_si_sdr"] for r in items.values()]), abs=1e-9)
    assert sum(saved["featurizer"]["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert [h["step"] for h in results["dev"]["history"]] == [2, 4]


def test_train_crop_keeps_whole_utterance_not_longer_than_crop():
    """An utterance no longer than ``train_crop_seconds`` is kept whole from frame 0 (a 1-frame
    one stays 1 frame); a longer one is cut to exactly the crop at a start in [0, n - crop]."""
    from downstream.base import EncodedExample
    from downstream.data import DataConfig, SourceConfig
    from downstream.tasks.speech_enhancement.task import SpeechEnhancementConfig

    task = SpeechEnhancementTask(SpeechEnhancementConfig(
        data=DataConfig(source=SourceConfig(root=".")), train_crop_seconds=3.0))  # 150 frames
    rng = np.random.default_rng(0)

    def encoded(frames: int) -> EncodedExample:
        wave = rng.standard_normal(320 * (frames - 1) + 400).astype(np.float32)
        return EncodedExample(Example("k", wave, wave[::-1].copy()), torch.randn(2, frames, 4))

    for frames in (1, 100, 150):
        e = encoded(frames)
        for seed in range(8):
            batch = task.collate([e], True, np.random.default_rng(seed))
            assert batch.frame_lengths.tolist() == [frames]
            torch.testing.assert_close(batch.hidden[0, :, :frames], e.hidden)
            np.testing.assert_array_equal(batch.examples[0].waveform,
                                          e.example.waveform[: 320 * frames])
            np.testing.assert_array_equal(batch.examples[0].target,
                                          e.example.target[: 320 * frames])
    e = encoded(160)
    starts = set()
    for seed in range(40):
        batch = task.collate([e], True, np.random.default_rng(seed))
        assert batch.frame_lengths.tolist() == [150]
        start = next(s for s in range(11)
                     if torch.equal(batch.hidden[0, :, :150], e.hidden[:, s:s + 150]))
        np.testing.assert_array_equal(batch.examples[0].waveform,
                                      e.example.waveform[320 * start: 320 * (start + 150)])
        starts.add(start)
    assert starts <= set(range(11)) and len(starts) > 1


def test_silent_outputs_are_counted_as_unscored_in_results(setup_dirs, tmp_path, monkeypatch):
    """A head that outputs silence on one test utterance under snr0: SI-SDR is undefined there
    (NaN, left out of the mean), and results.json, results.md and the strict-JSON items file
    say so."""
    from downstream.items import read_items

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = setup_dirs
    enhance = SpeechEnhancementTask.enhance

    def silent_first_under_snr0(self, head, features, frame_lengths, examples):
        out = enhance(self, head, features, frame_lengths, examples)
        if examples[0].extras.get("snr_db") == 0.0:  # test snr0 (train/dev SNRs are drawn)
            out[0] = np.zeros_like(out[0])
        return out

    monkeypatch.setattr(SpeechEnhancementTask, "enhance", silent_first_under_snr0)
    run_evaluation(RunOptions(
        task="speech_enhancement", upstream=str(root / "up"), config=str(root / "se.yaml"),
        out=str(tmp_path / "out"), conditions=["clean", "snr0"],
        test_noise_dir=str(root / "noise"), bootstrap_resamples=20,
    ))
    text = (tmp_path / "out" / "items" / "snr0.jsonl").read_text()

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    records = [json.loads(line, parse_constant=refuse) for line in text.splitlines()]
    assert len(records) == 3  # 12 utterances, test 0.25
    assert records[0]["si_sdr"] is None and records[0]["si_sdr_improvement"] is None
    assert all(r["si_sdr"] is not None for r in records[1:])
    saved = json.loads((tmp_path / "out" / "results.json").read_text(), parse_constant=refuse)
    pesq_failed = sum(r["pesq"] is None for r in records)  # PESQ of silence may fail too
    expected = {"si_sdr": 1, "si_sdr_improvement": 1}
    if pesq_failed:
        expected.update({"pesq": pesq_failed, "pesq_improvement": pesq_failed})
    assert saved["unscored"]["snr0"] == expected
    assert saved["unscored"]["clean"] == {}
    assert saved["metrics"]["snr0"]["si_sdr"] == pytest.approx(
        np.mean([r["si_sdr"] for r in records[1:]]))
    back = read_items(tmp_path / "out" / "items" / "snr0.jsonl")
    assert np.isnan(back[0]["si_sdr"])
    table = (tmp_path / "out" / "results.md").read_text()
    assert "(1 unscored)" in table and "could not be computed" in table
