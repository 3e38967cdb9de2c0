# ruff: noqa: F811  (pytest fixtures imported from test_downstream_tasks)
"""Downstream evaluation v2 (issue 7): one noise draw across SNRs, per-item results and
intervals, test-set identity, padding-independent encoding, model-selection and PESQ fixes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from downstream.conditions import TestCorruptor, parse_condition
from robustdistill.augment import NoiseBank, RirBank


def _banks():
    rng = np.random.default_rng(0)
    noise = NoiseBank(tuple(rng.standard_normal(8000).astype(np.float32) for _ in range(3)),
                      ("a", "b", "c"))
    rirs = RirBank((np.array([1.0, 0.5, 0.25], np.float32), np.array([1.0, -0.3], np.float32)),
                   ("r1", "r2"))
    return noise, rirs


def test_one_noise_draw_across_snrs_and_rooms():
    """snr-5 and snr20 of an utterance hold the same noise segment (only the gain differs), and
    reverb / reverb+snr use the same room: a curve varies the SNR only."""
    noise, rirs = _banks()
    corruptor = TestCorruptor(noise, rirs, seed=3)
    clean = np.sin(np.arange(1600) / 5.0).astype(np.float32)
    for key in ("utt1", "utt2", "spk/utt3"):
        residuals = {snr: corruptor.apply(clean, parse_condition(f"snr{snr}"), key).astype(
            np.float64) - clean for snr in (-5, 0, 20)}
        # same segment: the residuals are multiples (up to float32 rounding of the mix), with
        # the gain the SNRs imply
        for snr in (0, 20):
            a, b = residuals[-5], residuals[snr]
            assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) == pytest.approx(1.0, abs=1e-6)
            assert (a @ b) / (b @ b) == pytest.approx(10 ** ((snr + 5) / 20), rel=1e-5)
        reverb = corruptor.apply(clean, parse_condition("reverb"), key).astype(np.float64)
        both = corruptor.apply(clean, parse_condition("reverb+snr0"), key).astype(np.float64)
        noisy_part = both - reverb  # same room: the difference is the noise alone
        cos = noisy_part @ residuals[0] / np.linalg.norm(noisy_part) / np.linalg.norm(residuals[0])
        assert cos == pytest.approx(1.0, abs=1e-5)
    # the draw depends on seed and key only, and changes with either
    a = corruptor.draw("utt1", 1600)
    assert np.array_equal(a.noise, TestCorruptor(noise, rirs, seed=3).draw("utt1", 1600).noise)
    assert not np.array_equal(a.noise, TestCorruptor(noise, rirs, seed=4).draw("utt1", 1600).noise)
    assert not np.array_equal(a.noise, corruptor.draw("utt2", 1600).noise)
    # the noise does not depend on whether a room bank is loaded
    assert np.array_equal(a.noise, TestCorruptor(noise, None, seed=3).draw("utt1", 1600).noise)


def test_corruption_fingerprint_covers_seed_and_files():
    noise, rirs = _banks()
    base = TestCorruptor(noise, rirs, seed=0).fingerprint()
    assert base == TestCorruptor(noise, rirs, seed=0).fingerprint()
    assert base != TestCorruptor(noise, rirs, seed=1).fingerprint()
    assert base != TestCorruptor(noise, None, seed=0).fingerprint()
    changed = NoiseBank((noise.waveforms[0] * 0.5, *noise.waveforms[1:]), noise.names)
    assert base != TestCorruptor(changed, rirs, seed=0).fingerprint()


# ---------------------------------------------------------------------------- statistics
def test_bootstrap_and_mcnemar_hand_values():
    from downstream.stats import bootstrap_interval, mcnemar, paired_bootstrap

    correct = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1], dtype=float)

    def acc(idx):
        return float(np.mean([correct[i].mean() for i in idx]))

    low, high = bootstrap_interval(acc, [10], resamples=2000, seed=0)
    # binomial standard error of 0.6 with n = 10 is 0.155: the interval is about +-0.3
    assert 0.2 <= low <= 0.4 and 0.8 <= high <= 1.0
    assert bootstrap_interval(acc, [10], 50, seed=1) == bootstrap_interval(acc, [10], 50, seed=1)
    same = paired_bootstrap(acc, acc, [10], resamples=200)
    assert same["difference"] == 0 and same["low"] == same["high"] == 0 and same["p_value"] == 1
    # a is right on 5 items where b is wrong and never the reverse: exact two-sided p = 2 / 2**5
    a, b = [1] * 5 + [1, 0, 0], [0] * 5 + [1, 0, 0]
    assert mcnemar(a, b) == {"a_only": 5, "b_only": 0, "p_value": pytest.approx(0.0625)}
    assert mcnemar(a, a)["p_value"] == 1.0
    better = np.array(a, float)
    worse = np.array(b, float)
    test = paired_bootstrap(lambda i: better[i[0]].mean(), lambda i: worse[i[0]].mean(), [8],
                            resamples=500)
    assert test["difference"] == pytest.approx(5 / 8)
    assert test["low"] > 0 and test["p_value"] < 0.01
    with pytest.raises(ValueError, match="paired"):
        mcnemar([1, 0], [1])


def test_nan_first_dev_metric_does_not_lock_selection():
    from downstream.training import _better

    class Up:
        higher_is_better = True

    class Down:
        higher_is_better = False

    nan = float("nan")
    assert _better(Up, nan, None)  # something must be kept
    assert _better(Up, 0.1, nan) and _better(Down, 5.0, nan)  # a finite value replaces a NaN
    assert not _better(Up, nan, 0.1) and not _better(Up, nan, nan)
    assert _better(Up, 0.2, 0.1) and not _better(Up, 0.1, 0.2)
    assert _better(Down, 0.1, 0.2) and not _better(Down, 0.2, 0.1)


def test_pesq_improvement_pairs_utterances(monkeypatch):
    """The improvement is the mean of per-utterance differences, not a difference of means
    over different subsets (a failed PESQ on one utterance dropped it from one mean only)."""
    import downstream.tasks.speech_enhancement.task as se
    from downstream.base import Example
    from downstream.data import DataConfig, SourceConfig

    scores = {("u1", "enh"): 2.0, ("u1", "noisy"): 1.0,
              ("u2", "enh"): float("nan"), ("u2", "noisy"): 3.0}

    def fake_metrics(signal, reference, key=""):
        kind = "enh" if signal[0] == 1.0 else "noisy"
        return {"pesq": scores[(key, kind)], "stoi": 0.5, "si_sdr": 1.0}

    monkeypatch.setattr(se, "speech_metrics", fake_metrics)
    task = se.SpeechEnhancementTask(se.SpeechEnhancementConfig(DataConfig(SourceConfig(root="x"))))
    examples = [Example(k, np.zeros(320, np.float32), np.ones(320, np.float32) * 0.5)
                for k in ("u1", "u2")]
    monkeypatch.setattr(task, "enhance",
                        lambda head, f, lengths, ex: [np.ones(320, np.float32)] * len(ex))
    metrics = task.evaluate(None, [(None, None, examples)])
    assert metrics["pesq"] == 2.0 and metrics["noisy_pesq"] == 2.0  # means over 1 and 2 items
    assert metrics["pesq_improvement"] == 1.0  # the only pair: 2 - 1 (old code: 2 - 2 = 0)
    assert [r["key"] for r in task.items()] == ["u1", "u2"]


# ---------------------------------------------------------------------------- end to end
from test_downstream_tasks import _uc_config, _write_config, corpus, tiny_upstreams  # noqa: E402,F401


def _run(corpus, upstream, config, out, *extra, conditions=("clean", "snr0", "reverb")):
    from downstream.cli import evaluate_main

    argv = ["--task", "utterance_classification", "--upstream", upstream, "--config", config,
            "--out", str(out), "--conditions", *conditions,
            "--test-noise-dir", str(corpus / "noise"), "--test-rir-dir", str(corpus / "rir"),
            "--bootstrap-resamples", "200", *extra]
    assert evaluate_main(argv) == 0
    import json

    return json.loads((out / "results.json").read_text())


def test_items_intervals_head_reuse_and_overrides(tmp_path, corpus, tiny_upstreams, capsys):
    import json

    from downstream.items import read_items

    config = _write_config(tmp_path / "uc.yaml", _uc_config(corpus))
    out = tmp_path / "run"
    res = _run(corpus, tiny_upstreams["wavlm"], config, out, "-o", "label=kws",
               "-o", "training.steps=4")
    assert res["label"] == "kws" and res["config"]["training"]["steps"] == 4
    assert [h["step"] for h in res["dev"]["history"]] == [3, 4]
    for cond in res["conditions"]:
        items = read_items(out / "items" / f"{cond}.jsonl")
        assert len(items) == res["num_items"]["test"] == 6
        assert res["metrics"][cond]["accuracy"] == pytest.approx(
            np.mean([r["correct"] for r in items]))
        assert {r["prediction"] for r in items} <= {"hi", "lo"}
        low, high = res["intervals"][cond]["accuracy"]
        assert low <= res["metrics"][cond]["accuracy"] <= high
    assert "[" in (out / "results.md").read_text()  # the table shows intervals
    # the dev-best head is saved and reproduces the test results without training; new
    # conditions can be evaluated with it
    again = _run(corpus, tiny_upstreams["wavlm"], config, tmp_path / "again", "-o", "label=kws",
                 "-o", "training.steps=4", "--evaluate-only", str(out / "head.pt"),
                 conditions=("clean", "snr0", "reverb", "snr-5"))
    assert "train_s" in again["timing"] and again["dev"]["loaded_from"] == str(out / "head.pt")
    for cond in res["conditions"]:
        assert again["metrics"][cond] == res["metrics"][cond]
        assert read_items(tmp_path / "again" / "items" / f"{cond}.jsonl") == read_items(
            out / "items" / f"{cond}.jsonl")
    assert "snr-5" in again["metrics"]
    assert not [k for k in again["timing"] if k.startswith("encode_train")]
    # a head of another task is refused with a clear error
    saved = json.loads((out / "results.json").read_text())
    assert saved["dev"]["best_step"] in (3, 4)
    from downstream.cli import evaluate_main

    capsys.readouterr()
    # with this (classification) config the CLI stops at the config's head keys ...
    with pytest.raises(SystemExit):
        evaluate_main(["--task", "speaker_verification", "--upstream", tiny_upstreams["wavlm"],
                       "--config", config, "--out", str(tmp_path / "bad"),
                       "--conditions", "clean", "--evaluate-only", str(out / "head.pt")])
    assert "unknown config key 'head.projector_dim'" in capsys.readouterr().err
    # ... so the head file's own task check is asked directly (it reads options.task only)
    from types import SimpleNamespace

    from downstream.head_file import load_head

    with pytest.raises(ValueError, match=r"head.pt holds a '(ks|utterance_classification)' head, "
                                         r"not 'speaker_verification'"):
        load_head(out / "head.pt", None, None, None,
                  SimpleNamespace(task="speaker_verification", device="cpu"))
    with pytest.raises(SystemExit):
        evaluate_main(["--task", "ks", "--upstream", tiny_upstreams["wavlm"], "--config", config,
                       "--out", str(tmp_path / "bad2"), "-o", "training.steps"])
    assert "override 'training.steps' must look like section.key=value" in capsys.readouterr().err


def test_test_set_hash_covers_seed_conditions_and_noise():
    from downstream.runner import test_set_hash

    base = test_set_hash(["a", "b"], 0, ["clean", "snr0"], "n1")
    assert base == test_set_hash(["a", "b"], 0, ["clean", "snr0"], "n1")
    for other in (test_set_hash(["a", "c"], 0, ["clean", "snr0"], "n1"),
                  test_set_hash(["a", "b"], 1, ["clean", "snr0"], "n1"),
                  test_set_hash(["a", "b"], 0, ["clean", "snr5"], "n1"),
                  test_set_hash(["a", "b"], 0, ["clean", "snr0"], "n2")):
        assert other != base


def test_seeds_and_paired_compare(tmp_path, corpus, tiny_upstreams, capsys):
    import json

    from downstream.cli import compare_main

    config = _write_config(tmp_path / "uc.yaml", _uc_config(corpus))
    paths = {}
    for kind, upstream in tiny_upstreams.items():
        out = tmp_path / kind
        res = _run(corpus, upstream, config, out, "--task", "ks", "--seeds", "0", "1",
                   conditions=("clean", "snr0"))
        assert res["seeds"] == [0, 1] and res["label"] == "ks"
        per_seed = [json.loads((out / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
        for cond in ("clean", "snr0"):
            values = [r["metrics"][cond]["accuracy"] for r in per_seed]
            assert res["metrics"][cond]["accuracy"] == pytest.approx(np.mean(values))
            assert res["metrics_std"][cond]["accuracy"] == pytest.approx(np.std(values, ddof=1))
            assert len(res["intervals"][cond]["accuracy"]) == 2
        paths[kind] = str(out / "results.json")
    merged = tmp_path / "cmp"
    assert compare_main([*paths.values(), "--out", str(merged), "--bootstrap-resamples",
                         "100"]) == 0
    data = json.loads((merged / "results.json").read_text())
    assert len(data["comparisons"]) == 2  # one pair x two conditions
    row = data["comparisons"][0]
    assert {"difference", "low", "high", "p_value", "mcnemar_p", "significant"} <= set(row)
    first = json.loads(Path(paths["wavlm"]).read_text())
    second = json.loads(Path(paths["hubert"]).read_text())
    cond = row["condition"]
    assert row["difference"] == pytest.approx(
        first["metrics"][cond]["accuracy"] - second["metrics"][cond]["accuracy"])
    assert "paired comparisons" in (merged / "results.md").read_text()
    from downstream.report import report

    text = report(merged / "results.json", scale=100, names={"tiny_wavlm": "W"})
    assert "| W |" in text and "| W - tiny_hubert |" in text
    assert f"{row['difference'] * 100:+.1f} [" in text
    # KWS and SID share the folder and metric: compare refuses to mix their labels
    other = dict(second, label="sid")
    sid = tmp_path / "sid.json"
    sid.write_text(json.dumps(other))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        compare_main([paths["wavlm"], str(sid), "--out", str(tmp_path / "mixed")])
    assert ("cannot combine results of different tasks: [('utterance_classification', 'ks', "
            "'accuracy'), ('utterance_classification', 'sid', 'accuracy')]"
            in capsys.readouterr().err)


def test_group_norm_upstream_features_do_not_depend_on_batch(tiny_upstreams):
    """A group-norm CNN without attention mask normalises over the padding: batched encoding
    changes a short utterance's features; the runner's auto mode encodes one at a time."""
    import torch

    from downstream.base import Example, encode_examples, padding_independent
    from downstream.featurizer import Featurizer
    from robustdistill.upstream import Upstream

    upstream = Upstream.from_pretrained(tiny_upstreams["hubert"], frozen=True)
    assert not padding_independent(upstream)
    rng = np.random.default_rng(0)
    short = Example("short", rng.standard_normal(4000).astype(np.float32), 0)
    long = Example("long", rng.standard_normal(16000).astype(np.float32), 0)
    featurizer = Featurizer(upstream.num_layers + 1, upstream.hidden_size)
    alone = encode_examples(upstream, featurizer, [short], 1, torch.float32)[0].hidden
    batched = encode_examples(upstream, featurizer, [short, long], 2, torch.float32)[0].hidden
    single = encode_examples(upstream, featurizer, [short, long], 1, torch.float32)[0].hidden
    assert not torch.allclose(alone, batched, atol=1e-4)  # the problem is real
    torch.testing.assert_close(alone, single)


def _tiny_wavlm_with_mask(path: Path, norm: str) -> Path:
    """A tiny WavLM whose feature extractor returns an attention mask (WavLM Base layout)."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    torch.manual_seed(0)
    WavLMModel(WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32, 32), conv_kernel=(8, 8, 8), conv_stride=(4, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm=norm,
    )).save_pretrained(path)
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True).save_pretrained(path)
    return path


def test_attention_mask_makes_only_layer_norm_cnn_padding_independent(tmp_path):
    """With an attention mask, a group-norm CNN still normalises over the padded length (batched
    features differ): only a layer-norm CNN is padding-independent; FBANK keeps its own flag."""
    import torch

    from downstream.base import Example, encode_examples, padding_independent
    from downstream.fbank import FbankUpstream
    from downstream.featurizer import Featurizer
    from robustdistill.upstream import Upstream

    rng = np.random.default_rng(0)
    short = Example("short", rng.standard_normal(4000).astype(np.float32), 0)
    long = Example("long", rng.standard_normal(16000).astype(np.float32), 0)
    for norm, expected in (("group", False), ("layer", True)):
        upstream = Upstream.from_pretrained(_tiny_wavlm_with_mask(tmp_path / norm, norm),
                                            frozen=True)
        assert upstream.use_attention_mask
        assert padding_independent(upstream) is expected
        featurizer = Featurizer(upstream.num_layers + 1, upstream.hidden_size)
        alone = encode_examples(upstream, featurizer, [short], 1, torch.float32)[0].hidden
        batched = encode_examples(upstream, featurizer, [short, long], 2, torch.float32)[0].hidden
        assert torch.allclose(alone, batched, atol=1e-4) is expected
    assert padding_independent(FbankUpstream())


def test_runner_auto_padding_mode(tmp_path, corpus, tiny_upstreams):
    from downstream.base import get_task
    from downstream.config import load_config
    from downstream.encoding import Encoder
    from downstream.runner import RunOptions
    from robustdistill.upstream import Upstream

    config_path = _write_config(tmp_path / "uc.yaml", _uc_config(corpus))
    task_class = get_task("utterance_classification")
    for mode, kind, expected in (("auto", "hubert", 1), ("batch", "hubert", 8),
                                 ("single", "wavlm", 1)):
        config = load_config(config_path, task_class.config_class, {"encode_padding": mode})
        upstream = Upstream.from_pretrained(tiny_upstreams[kind], frozen=True)
        options = RunOptions("utterance_classification", tiny_upstreams[kind], config_path,
                             str(tmp_path))
        encoder = Encoder(task_class(config), upstream, None, None, {}, tmp_path, options)
        assert encoder.batch_size == expected


def test_se_reverb_reference_is_direct_path_plus_early_reflections():
    from downstream.data import DataConfig, SourceConfig, Utterance
    from downstream.tasks.speech_enhancement.task import (
        SpeechEnhancementConfig,
        SpeechEnhancementTask,
        early_reverb_reference,
    )
    from robustdistill.metrics import si_sdr

    sr = 16_000
    rng = np.random.default_rng(0)
    clean = rng.standard_normal(sr).astype(np.float32)
    rir = np.zeros(4000, np.float32)
    rir[0], rir[160], rir[800], rir[801], rir[2000] = 1.0, 0.5, 0.25, 0.4, 0.3  # 0, 10, 50, 100 ms
    early = early_reverb_reference(clean, rir, 50.0)
    expected = clean.copy()
    expected[160:] += 0.5 * clean[:-160]
    expected[800:] += 0.25 * clean[:-800]  # tap at exactly 50 ms is kept, 50.06 ms is not
    np.testing.assert_allclose(early, expected, atol=1e-5)
    np.testing.assert_allclose(early_reverb_reference(clean, rir, 0.0), clean, atol=1e-6)

    bank = RirBank((rir / np.sqrt(np.sum(rir**2)),), ("room",))
    corruptor = TestCorruptor(None, bank, seed=0)
    task = SpeechEnhancementTask(SpeechEnhancementConfig(DataConfig(SourceConfig(root="x"))))
    utt = Utterance("u", "u.wav")
    reverb = task.make_example(utt, clean, "test", parse_condition("reverb"), corruptor)
    assert reverb.extras["reference"] == "early"
    # the reverberant input is much closer to the early reference than to the dry speech
    assert si_sdr(reverb.waveform, reverb.target) > si_sdr(reverb.waveform, clean) + 3
    np.testing.assert_allclose(reverb.target, early_reverb_reference(clean, bank.rirs[0]))
    assert task.make_example(utt, clean, "test", parse_condition("clean"), corruptor).target \
        is clean
    dry = SpeechEnhancementTask(SpeechEnhancementConfig(DataConfig(SourceConfig(root="x")),
                                                        reverb_reference="dry"))
    assert dry.make_example(utt, clean, "test", parse_condition("reverb"), corruptor).target \
        is clean


def test_fbank_baseline_upstream_end_to_end(tmp_path, corpus):
    config = _write_config(tmp_path / "uc.yaml", _uc_config(corpus))
    res = _run(corpus, "fbank", config, tmp_path / "fbank", conditions=("clean", "snr0"))
    assert res["upstream_info"] == {"model_type": "fbank", "num_layers": 0, "hidden_size": 240,
                                    "parameters": 0}
    assert list(res["featurizer"]["weights"]) == ["0"]
    assert 0.0 <= res["metrics"]["snr0"]["accuracy"] <= 1.0


def test_report_intervals_use_the_value_digits(tmp_path):
    """Interval bounds (result and paired-difference) have ``digits`` decimals like the values:
    PESQ at scale 1 keeps its [2.12, 2.49], not [2, 2]."""
    import json

    from downstream.report import report

    def result(upstream, value, low, high):
        return {"upstream": upstream, "primary_metric": "pesq", "conditions": ["snr5"],
                "metrics": {"snr5": {"pesq": value}}, "intervals": {"snr5": {"pesq": [low, high]}}}

    path = tmp_path / "results.json"
    path.write_text(json.dumps({
        "results": [result("teacher", 2.31, 2.12, 2.49), result("student", 2.05, 1.904, 2.206)],
        "comparisons": [{"a": "teacher", "b": "student", "condition": "snr5", "difference": 0.26,
                         "low": 0.11, "high": 0.41, "significant": True}]}))
    lines = report(path, scale=1.0, digits=2).splitlines()
    assert "| teacher | 2.31 [2.12, 2.49] |" in lines
    assert "| student | 2.05 [1.90, 2.21] |" in lines
    assert "| teacher - student | +0.26 [+0.11, +0.41]* |" in lines
    lines = report(path, scale=100.0, digits=1).splitlines()
    assert "| student | 205.0 [190.4, 220.6] |" in lines
    assert "| teacher - student | +26.0 [+11.0, +41.0]* |" in lines


def test_featurizer_learning_rate_zero_freezes_layer_weights_and_negative_is_rejected():
    """``featurizer_learning_rate: 0`` keeps the layer weights at their initial (uniform) values
    while the head trains; None means the head's rate; a negative or NaN rate is a config
    error naming the field, before any encoding."""
    import torch

    from downstream.base import TrainingConfig
    from downstream.config import ConfigError, from_dict
    from downstream.data import DataConfig, SourceConfig
    from downstream.featurizer import Featurizer
    from downstream.tasks.utterance_classification.task import (
        UtteranceClassification,
        UtteranceClassificationConfig,
    )
    from downstream.training import _optimizer

    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="featurizer_learning_rate"):
            TrainingConfig(featurizer_learning_rate=bad)
    with pytest.raises(ConfigError, match="training.*featurizer_learning_rate"):
        from_dict(UtteranceClassificationConfig, {"data": {"source": {"root": "."}},
                                                  "training": {"featurizer_learning_rate": -1}})

    torch.manual_seed(0)
    stacked = torch.randn(4, 3, 5, 8) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    for featurizer_lr, expected_lr in ((None, 1e-3), (0.05, 0.05), (0.0, 0.0)):
        config = UtteranceClassificationConfig(
            data=DataConfig(SourceConfig(root=".")),
            training=TrainingConfig(featurizer_learning_rate=featurizer_lr))
        task = UtteranceClassification(config)
        task.classes = ["a", "b"]
        featurizer, head = Featurizer(3, 8), task.build_head(8)
        before = [p.detach().clone() for p in head.parameters()]
        optimizer = _optimizer(task, featurizer, head)
        assert optimizer.param_groups[-1]["params"] == [featurizer.weights]
        assert optimizer.param_groups[-1]["lr"] == expected_lr
        for _ in range(3):
            loss = featurizer(stacked).pow(2).mean() + sum(p.pow(2).sum()
                                                           for p in head.parameters())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            assert featurizer.weights.grad.abs().max() > 0
            optimizer.step()
        assert torch.equal(featurizer.weights.detach(), torch.zeros(3)) == (expected_lr == 0.0)
        assert not all(torch.equal(a, b) for a, b in zip(before, head.parameters(), strict=True))


# ---------------------------------------------------------------------------- --test-rir-channels
def _stereo_rir_dir(root: Path) -> Path:
    """``room.wav``: stereo, direct paths 4 samples apart (channel 0: 1.0 at 10, 0.5 at 30;
    channel 1: 0.8 at 14, -0.4 at 40); ``mono.wav``: 1.0 at 3, 0.3 at 7. 16 kHz float."""
    import soundfile as sf

    root.mkdir()
    stereo = np.zeros((64, 2), np.float32)
    stereo[[10, 30], 0] = [1.0, 0.5]
    stereo[[14, 40], 1] = [0.8, -0.4]
    mono = np.zeros(32, np.float32)
    mono[[3, 7]] = [1.0, 0.3]
    sf.write(root / "room.wav", stereo, 16000, subtype="FLOAT")
    sf.write(root / "mono.wav", mono, 16000, subtype="FLOAT")
    return root


def _taps(length: int, taps: dict[int, float]) -> np.ndarray:
    """Aligned, unit-energy RIR with ``taps`` (index -> value), by hand."""
    h = np.zeros(length)
    for i, v in taps.items():
        h[i] = np.float32(v)
    return h / np.sqrt(np.sum(h**2))


#: what each test room must be after alignment on its direct path and energy normalisation
_CH0 = _taps(54, {0: 1.0, 20: 0.5})
_CH1 = _taps(50, {0: 0.8, 26: -0.4})
_MEAN = _taps(54, {0: 0.5, 4: 0.4, 20: 0.25, 30: -0.2})  # the two channels averaged
_MONO = _taps(29, {0: 1.0, 4: 0.3})


def _is(rir, expected) -> bool:
    return rir.shape == expected.shape and np.allclose(rir, expected, atol=1e-6)


def test_test_rir_channels_one_draws_one_aligned_channel_never_the_mean(tmp_path):
    rir_dir = _stereo_rir_dir(tmp_path / "rir")
    one = TestCorruptor.from_dirs(None, rir_dir, seed=2, rir_channels="one")
    seen = set()
    for i in range(40):
        drawn = one.draw(f"utt{i}", 1600)
        if Path(drawn.rir_name).name == "mono.wav":
            assert _is(drawn.rir, _MONO) and drawn.rir_channel is None
            continue
        assert Path(drawn.rir_name).name == "room.wav"
        expected = (_CH0, _CH1)[drawn.rir_channel]
        assert _is(drawn.rir, expected) and not _is(drawn.rir, _MEAN)
        seen.add(drawn.rir_channel)
    assert seen == {0, 1}
    # the default is the down-mix, drawn as before: one file per (seed, key), its mean
    mean = TestCorruptor.from_dirs(None, rir_dir, seed=2, rir_channels="mean")
    assert mean.rir_bank.channels == ()
    for i in range(40):
        drawn = mean.draw(f"utt{i}", 1600)
        index = int(mean.rng(f"utt{i}", "room").integers(0, 2))
        assert drawn.rir_name == mean.rir_bank.names[index] and drawn.rir_channel is None
        assert np.array_equal(drawn.rir, mean.rir_bank.rirs[index])
        assert _is(drawn.rir, _MEAN if Path(drawn.rir_name).name == "room.wav" else _MONO)
    with pytest.raises(ValueError, match="--test-rir-channels"):
        TestCorruptor.from_dirs(None, rir_dir, rir_channels="first")


def test_test_rir_channel_is_the_same_under_every_condition(tmp_path):
    from robustdistill.augment import mix_at_snr, reverberate

    rir_dir = _stereo_rir_dir(tmp_path / "rir")
    noise, _ = _banks()
    corruptor = TestCorruptor.from_dirs(None, rir_dir, seed=5, rir_channels="one")
    corruptor.noise_bank = noise
    alone = TestCorruptor.from_dirs(None, rir_dir, seed=5, rir_channels="one")
    clean = np.sin(np.arange(1600) / 5.0).astype(np.float32)
    for key in ("utt1", "utt2", "spk/utt3", "utt4"):
        drawn = corruptor.draw(key, clean.size)
        again = alone.draw(key, clean.size)  # no noise bank: the room does not depend on it
        assert (again.rir_name, again.rir_channel) == (drawn.rir_name, drawn.rir_channel)
        assert np.array_equal(again.rir, drawn.rir)
        reverb = reverberate(clean, drawn.rir)
        assert np.array_equal(corruptor.apply(clean, parse_condition("reverb"), key), reverb)
        for snr in (-5.0, 10.0):
            assert np.array_equal(
                corruptor.apply(clean, parse_condition(f"reverb+snr{snr:g}"), key),
                mix_at_snr(reverb, drawn.noise, snr).astype(np.float32))


def test_test_rir_channels_in_fingerprint_cli_and_cache(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from downstream import encoding, runner
    from downstream.cli import evaluate_main
    from downstream.conditions import CLEAN

    rir_dir = _stereo_rir_dir(tmp_path / "rir")
    mean = TestCorruptor.from_dirs(None, rir_dir, seed=0).fingerprint()
    one = TestCorruptor.from_dirs(None, rir_dir, seed=0, rir_channels="one").fingerprint()
    assert mean != one
    assert mean == TestCorruptor(None, RirBank.from_folder(rir_dir), seed=0).fingerprint()
    (rir_dir / "room.wav").unlink()  # mono files only: same rooms, still another mode
    assert (TestCorruptor.from_dirs(None, rir_dir, seed=0).fingerprint()
            != TestCorruptor.from_dirs(None, rir_dir, seed=0, rir_channels="one").fingerprint())
    hashes = {runner.test_set_hash(["a"], 0, ["reverb"], f) for f in (mean, one)}
    assert len(hashes) == 2

    captured = []

    def fake_run(options):
        captured.append(options)
        return {"task": "ks", "primary_metric": "accuracy", "metrics": {}}

    monkeypatch.setattr(runner, "run_evaluation", fake_run)
    base = ["--task", "ks", "--upstream", "fbank", "--config", "c.yaml", "--out", "o"]
    for extra, expected in (([], "mean"), (["--test-rir-channels", "one"], "one")):
        assert evaluate_main(base + extra) == 0
        assert captured.pop().test_rir_channels == expected
    with pytest.raises(SystemExit):
        evaluate_main([*base, "--test-rir-channels", "first"])

    def cache_path(channels):
        encoder = object.__new__(encoding.Encoder)
        encoder.cache_dir = tmp_path / "cache"
        encoder.options = runner.RunOptions("ks", "fbank", "c.yaml", "o",
                                            test_rir_dir=str(rir_dir), test_rir_channels=channels)
        encoder._upstream_id = "up"
        encoder.task = SimpleNamespace(name="ks", config=SimpleNamespace(cache_dtype="float16"))
        encoder.featurizer = SimpleNamespace(layers=None)
        encoder.batch_size = 1
        return encoder._cache_path("test", CLEAN, [])

    assert cache_path("mean") != cache_path("one")
    # the default keeps the key of caches written before the option existed
    import hashlib

    digest = hashlib.sha1()
    for part in ("up", "ks", "test", "clean", 0, None, "float16", None, str(rir_dir), 1):
        digest.update(repr(part).encode())
    assert cache_path("mean").name == f"test-clean-{digest.hexdigest()[:16]}.pt"
