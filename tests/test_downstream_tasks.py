"""End to end: each task trains a few steps on generated audio with a tiny upstream and writes
valid results (all conditions present), results.md and robustness.png; compare merges them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from downstream.cli import compare_main, evaluate_main  # noqa: E402
from downstream.conditions import DEFAULT_CONDITIONS  # noqa: E402

SR = 16_000


def _tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def _save_tiny(kind: str, path: Path) -> Path:
    import torch
    from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

    torch.manual_seed(0)
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(32, 32, 32), conv_kernel=(8, 8, 8), conv_stride=(4, 4, 4),
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    if kind == "wavlm":
        WavLMModel(WavLMConfig(**shape)).save_pretrained(path)
    else:
        HubertModel(HubertConfig(**shape)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_upstreams(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstreams")
    return {k: str(_save_tiny(k, root / f"tiny_{k}")) for k in ("wavlm", "hubert")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """``{label}_{speaker}_{take}.wav``: label = tone frequency class, 6 speakers x 2 x 3."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    audio = root / "audio"
    audio.mkdir()
    for s, speaker in enumerate(["ann", "bob", "cat", "dan", "eve", "fay"]):
        for label, freq in (("lo", 300.0), ("hi", 1200.0)):
            for take in range(3):
                wave = _tone(freq * (1 + 0.05 * s), 0.4 + 0.1 * take, rng)
                sf.write(audio / f"{label}_{speaker}_{take}.wav", wave, SR)
    (audio / "README.txt").write_text("not audio")
    noise = root / "noise"
    noise.mkdir()
    sf.write(noise / "white.wav", rng.standard_normal(SR).astype(np.float32) * 0.1, SR)
    rir = root / "rir"
    rir.mkdir()
    decay = np.exp(-np.arange(2000) / 300.0) * rng.standard_normal(2000)
    decay[0] = 1.0
    sf.write(rir / "room.wav", decay.astype(np.float32), SR)
    return root


def _write_config(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _uc_config(corpus: Path) -> dict:
    return {
        "data": {
            "source": {"root": str(corpus / "audio"),
                       "pattern": r"(?P<label>[a-z]+)_(?P<speaker>[a-z]+)_(?P<take>\d)\.wav$"},
            "split": {"by": "speaker", "dev": ["eve"], "test": ["fay"]},
        },
        "training": {"steps": 6, "batch_size": 4, "eval_every": 3, "learning_rate": 0.01},
        "head": {"projector_dim": 16},
    }


def _check_outputs(out: Path, task: str, upstream: str, primary: str, evals=(3, 6)) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == task
    assert results["upstream"] == upstream
    assert results["conditions"] == list(DEFAULT_CONDITIONS)
    assert set(results["metrics"]) == set(DEFAULT_CONDITIONS)
    for cond in DEFAULT_CONDITIONS:
        assert np.isfinite(results["metrics"][cond][primary])
    weights = results["featurizer"]["weights"]
    assert list(weights) == ["0", "1", "2"]  # tiny upstream: 2 layers + input
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-6)
    assert results["seed"] == 0
    assert [h["step"] for h in results["dev"]["history"]] == list(evals)
    assert results["dev"]["best_step"] in evals
    assert (out / "robustness.png").stat().st_size > 1000
    table = (out / "results.md").read_text()
    assert f"## {primary}" in table and "snr-5" in table
    return results


def _evaluate(corpus, upstream, task, config, out):
    argv = ["--task", task, "--upstream", upstream, "--config", config, "--out", str(out),
            "--test-noise-dir", str(corpus / "noise"), "--test-rir-dir", str(corpus / "rir")]
    assert evaluate_main(argv) == 0


def test_utterance_classification_end_to_end(tmp_path, corpus, tiny_upstreams):
    config = _write_config(tmp_path / "uc.yaml", _uc_config(corpus))
    out = tmp_path / "uc_wavlm"
    _evaluate(corpus, tiny_upstreams["wavlm"], "utterance_classification", config, out)
    results = _check_outputs(out, "utterance_classification", tiny_upstreams["wavlm"], "accuracy")
    # speaker-disjoint split: 4 train speakers x 6, 1 dev, 1 test speaker
    assert results["num_items"] == {"train": 24, "dev": 6, "test": 6}
    assert results["task_summary"]["classes"] == ["hi", "lo"]
    for cond in DEFAULT_CONDITIONS:
        acc = results["metrics"][cond]["accuracy"]
        assert acc * 6 == pytest.approx(round(acc * 6))  # a count out of 6 test items
    # the noisy conditions really changed the audio: the cache holds one file per condition
    cached = sorted(p.name.split("-")[0] for p in (out / "cache").glob("*.pt"))
    assert cached.count("test") == len(DEFAULT_CONDITIONS)

    assert "encode_test_snr-5_s" in results["timing"]

    # a second run into the same folder reuses the cached hidden states (no upstream pass)
    # and, being seeded, gives identical numbers
    _evaluate(corpus, tiny_upstreams["wavlm"], "utterance_classification", config, out)
    second = json.loads((out / "results.json").read_text())
    assert not [k for k in second["timing"] if k.startswith("encode_")]
    assert second["metrics"] == results["metrics"]
    assert second["featurizer"]["weights"] == results["featurizer"]["weights"]


def test_an_unreadable_cached_file_is_encoded_again_not_a_failed_run(
        tmp_path, corpus, tiny_upstreams, caplog):
    """A hidden-state cache file cut in half (a copy stopped halfway, a crash before it reached
    the disk) is logged, encoded again and rewritten; the run's numbers are those of the first
    run. It was a ``PytorchStreamReader`` traceback after the upstream had loaded and every
    file was decoded."""
    config = _write_config(tmp_path / "uc.yaml", _uc_config(corpus))
    out = tmp_path / "uc"
    _evaluate(corpus, tiny_upstreams["wavlm"], "utterance_classification", config, out)
    first = json.loads((out / "results.json").read_text())
    cached = next((out / "cache").glob("train-clean-*.pt"))
    whole = cached.read_bytes()
    cached.write_bytes(whole[: len(whole) // 2])
    with caplog.at_level("WARNING", logger="downstream.encoding"):
        _evaluate(corpus, tiny_upstreams["wavlm"], "utterance_classification", config, out)
    assert f"cached hidden states {cached} are unreadable" in caplog.text
    second = json.loads((out / "results.json").read_text())
    assert second["metrics"] == first["metrics"]
    assert [k for k in second["timing"] if k.startswith("encode_")] == [
        "encode_train_clean_s", "encode_s_per_utterance"]  # that file alone, encoded again
    assert cached.stat().st_size == len(whole)


def test_speaker_verification_end_to_end(tmp_path, corpus, tiny_upstreams):
    config = {
        "data": {
            "source": {"root": str(corpus / "audio"),
                       "pattern": r"_(?P<speaker>[a-z]+)_\d\.wav$"},
            "split": {"by": "speaker", "dev": ["eve", "fay"], "test": ["cat", "dan"]},
        },
        "training": {"steps": 4, "batch_size": 4, "eval_every": 3},
        "head": {"channels": 16, "embedding_dim": 8},
        "train_crop_seconds": 0.2,
    }
    path = _write_config(tmp_path / "sv.yaml", config)
    out = tmp_path / "sv"
    _evaluate(corpus, tiny_upstreams["hubert"], "speaker_verification", path, out)
    results = _check_outputs(out, "speaker_verification", tiny_upstreams["hubert"], "eer",
                             evals=(3, 4))
    # 2 test speakers x 6 items: 2 * C(6, 2) = 30 target, 6 * 6 = 36 non-target trials
    assert results["task_summary"]["test_trials"] == {
        "target": 30, "nontarget": 36, "speakers": 2, "items": 12}
    assert results["task_summary"]["train_speakers"] == 2
    for cond in DEFAULT_CONDITIONS:
        assert 0.0 <= results["metrics"][cond]["eer"] <= 1.0
        assert 0.0 <= results["metrics"][cond]["min_dcf"] <= 1.0 + 1e-9


def test_compare_merges_two_upstreams(tmp_path, corpus, tiny_upstreams):
    config = _write_config(tmp_path / "uc.yaml", _uc_config(corpus))
    paths = []
    for kind, upstream in tiny_upstreams.items():
        out = tmp_path / kind
        argv = ["--task", "utterance_classification", "--upstream", upstream, "--config", config,
                "--out", str(out), "--conditions", "clean", "snr0",
                "--test-noise-dir", str(corpus / "noise")]
        assert evaluate_main(argv) == 0
        paths.append(str(out / "results.json"))
    merged = tmp_path / "merged"
    assert compare_main([*paths, "--out", str(merged)]) == 0
    data = json.loads((merged / "results.json").read_text())
    assert [r["upstream"] for r in data["results"]] == list(tiny_upstreams.values())
    table = (merged / "results.md").read_text()
    assert "| tiny_wavlm |" in table and "| tiny_hubert |" in table
    assert "different test sets" not in table  # same data and seed: identical test audio
    assert (merged / "robustness.png").stat().st_size > 1000
    # a merged file can itself be compared again
    assert compare_main([str(merged / "results.json"), "--out", str(tmp_path / "again")]) == 0
    # results on different test sets are flagged
    other = json.loads(Path(paths[1]).read_text())
    other["test_set_sha1"] = "0" * 40
    Path(paths[1]).write_text(json.dumps(other))
    assert compare_main([*paths, "--out", str(tmp_path / "flagged")]) == 0
    assert "different test sets" in (tmp_path / "flagged" / "results.md").read_text()


def test_missing_noise_dir_fails_before_running(tmp_path, corpus, tiny_upstreams):
    config = _write_config(tmp_path / "uc.yaml", _uc_config(corpus))
    argv = ["--task", "utterance_classification", "--upstream", tiny_upstreams["wavlm"],
            "--config", config, "--out", str(tmp_path / "x"), "--conditions", "clean", "snr5"]
    with pytest.raises(SystemExit) as exc:
        evaluate_main(argv)
    assert exc.value.code == 2
    assert not (tmp_path / "x").exists()


def test_classification_pooling_first_is_exact():
    """Mean pooling before the (linear) featurizer and projector gives the frame-level logits."""
    import torch

    from downstream.base import EncodedExample, Example
    from downstream.data import DataConfig, SourceConfig
    from downstream.featurizer import Featurizer
    from downstream.tasks.utterance_classification import UtteranceClassificationConfig
    from downstream.tasks.utterance_classification.task import UtteranceClassification

    torch.manual_seed(0)
    config = UtteranceClassificationConfig(data=DataConfig(SourceConfig(root="x")))
    task = UtteranceClassification(config)
    task.classes = ["a", "b", "c"]
    encoded = [EncodedExample(Example(str(i), np.zeros(1), 0), torch.randn(3, t, 8))
               for i, t in enumerate((5, 9, 2))]
    featurizer = Featurizer(3, 8)
    with torch.no_grad():
        featurizer.weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
    head = task.build_head(8)
    rng = np.random.default_rng(0)
    fast = task.collate(encoded, train=True, rng=rng)
    assert fast.hidden.shape == (3, 3, 1, 8)
    slow = super(UtteranceClassification, task).collate(encoded, train=True, rng=rng)
    logits_fast = head(featurizer(fast.hidden), fast.frame_lengths)
    logits_slow = head(featurizer(slow.hidden), slow.frame_lengths)
    torch.testing.assert_close(logits_fast, logits_slow, rtol=1e-5, atol=1e-5)
