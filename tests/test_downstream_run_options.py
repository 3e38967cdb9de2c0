"""Mutation-testing follow-ups (round 2) for downstream/runner.py at the run level: which split
trains, selects and is tested, the head's seed, the label, the frozen upstream, the cache key and
the encode batch size (downstream/encoding.py), the saved head's class check
(downstream/head_file.py) and run_seeds."""

# ruff: noqa: F811  (pytest fixtures imported from test_downstream_tasks)
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_downstream_tasks import _uc_config, _write_config, corpus, tiny_upstreams  # noqa: E402,F401

from downstream import encoding, head_file, runner


@pytest.fixture(scope="module")
def spied_run(tmp_path_factory, corpus, tiny_upstreams):
    """One tiny run (tiny HuBERT, seed 3, --task ks, config label sid) with the training call,
    the upstream and the head's initial weights recorded."""
    tmp = tmp_path_factory.mktemp("spied")
    config = _uc_config(corpus)
    config["training"] = {"steps": 2, "batch_size": 4, "eval_every": 1, "learning_rate": 0.01}
    config["label"] = "sid"
    config["disk_cache"] = False
    path = _write_config(tmp / "uc.yaml", config)
    seen: dict = {}
    real_train, real_load = runner.train_head, runner.Upstream.from_pretrained

    def train(task, featurizer, head, train_set, dev_set, options):
        seen["train_keys"] = [e.example.key for e in train_set]
        seen["dev_keys"] = [e.example.key for e in dev_set]
        seen["head_init"] = {k: v.clone() for k, v in head.state_dict().items()}
        seen["task"] = task
        seen["input_size"] = featurizer.output_size
        return real_train(task, featurizer, head, train_set, dev_set, options)

    def load(*args, **kwargs):
        upstream = real_load(*args, **kwargs)
        seen["upstream"] = upstream
        seen["upstream_before"] = {k: v.clone() for k, v in upstream.state_dict().items()}
        return upstream

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "train_head", train)
        mp.setattr(runner.Upstream, "from_pretrained", load)
        results = runner.run_evaluation(runner.RunOptions(
            task="utterance_classification", upstream=tiny_upstreams["hubert"], config=path,
            out=str(tmp / "out"), conditions=["clean"], seed=3, bootstrap_resamples=0,
            label="ks"))
    return results, seen, tmp / "out"


def test_train_dev_and_test_splits_go_where_they_belong(spied_run):
    """Speaker split: eve is dev, fay is test; selection sees dev only, the test items are
    fay's only, and train holds neither."""
    results, seen, out = spied_run
    assert seen["dev_keys"] and all("_eve_" in k for k in seen["dev_keys"])
    assert not any("_eve_" in k or "_fay_" in k for k in seen["train_keys"])
    items = [json.loads(line) for line in (out / "items" / "clean.jsonl").read_text().splitlines()]
    assert len(items) == 6 and all("_fay_" in r["key"] for r in items)
    assert results["num_items"] == {"train": 24, "dev": 6, "test": 6}


def test_the_head_is_initialised_from_the_run_seed(spied_run):
    _, seen, _ = spied_run
    torch.manual_seed(3)
    expected = seen["task"].build_head(seen["input_size"]).state_dict()
    assert all(torch.equal(seen["head_init"][k], v) for k, v in expected.items())
    torch.manual_seed(0)
    other = seen["task"].build_head(seen["input_size"]).state_dict()
    assert not all(torch.equal(seen["head_init"][k], v) for k, v in other.items())


def test_the_config_label_wins_over_the_superb_task_name(spied_run):
    """``RunOptions.label`` is used only when the config sets none."""
    results, _, _ = spied_run
    assert results["label"] == "sid"


def test_the_upstream_is_frozen_in_eval_mode_and_unchanged_by_training(spied_run):
    _, seen, _ = spied_run
    upstream = seen["upstream"]
    assert not upstream.model.training
    assert not any(p.requires_grad for p in upstream.parameters())
    after = upstream.state_dict()
    assert all(torch.equal(after[k], v) for k, v in seen["upstream_before"].items())


def test_encode_batch_size_is_used_when_batching(tmp_path, corpus):
    from downstream.base import get_task
    from downstream.config import load_config
    from downstream.fbank import FbankUpstream

    path = _write_config(tmp_path / "uc.yaml", _uc_config(corpus))
    task_class = get_task("utterance_classification")
    for mode, expected in (("batch", 3), ("auto", 3), ("single", 1)):
        config = load_config(path, task_class.config_class,
                             {"encode_padding": mode, "encode_batch_size": 3})
        options = runner.RunOptions("utterance_classification", "fbank", path, str(tmp_path))
        encoder = encoding.Encoder(task_class(config), FbankUpstream(), None, None, {}, tmp_path,
                                   options)
        assert encoder.batch_size == expected


def test_upstream_fingerprint_follows_the_weight_files(tmp_path):
    """A folder upstream retrained in place must not reuse the old cache."""
    upstream = SimpleNamespace(config=SimpleNamespace(to_json_string=lambda: "{}"))
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    first = encoding._upstream_fingerprint(str(tmp_path), upstream)
    assert first == encoding._upstream_fingerprint(str(tmp_path), upstream)
    (tmp_path / "model.safetensors").write_bytes(b"abcd")
    assert encoding._upstream_fingerprint(str(tmp_path), upstream) != first


def test_a_head_trained_with_another_class_list_is_refused(tmp_path):
    from downstream.data import DataConfig, SourceConfig
    from downstream.featurizer import Featurizer
    from downstream.tasks.utterance_classification.task import (
        UtteranceClassification,
        UtteranceClassificationConfig,
    )

    def make(classes):
        task = UtteranceClassification(UtteranceClassificationConfig(
            data=DataConfig(SourceConfig(root="."))))
        task.classes = classes
        return task, Featurizer(3, 8), task.build_head(8)

    options = runner.RunOptions("utterance_classification", "up", "c.yaml", str(tmp_path))
    task, featurizer, head = make(["hi", "lo"])
    runner.save_head(tmp_path / "head.pt", task, featurizer, head, {"best_step": 1}, options)
    same = make(["hi", "lo"])
    assert runner.load_head(tmp_path / "head.pt", *same, options)["best_step"] == 1
    assert torch.equal(same[2].classifier.weight, head.classifier.weight)  # loaded
    with pytest.raises(ValueError, match="classes differ"):  # same count, other labels
        runner.load_head(tmp_path / "head.pt", *make(["lo", "up"]), options)


def test_a_head_save_that_fails_halfway_leaves_the_earlier_head_whole(tmp_path, monkeypatch):
    """head.pt was written in place: a run killed while saving left a truncated file beside
    the earlier results.json. Now a failed save leaves the earlier head.pt as it was."""
    from downstream.data import DataConfig, SourceConfig
    from downstream.featurizer import Featurizer
    from downstream.tasks.utterance_classification.task import (
        UtteranceClassification,
        UtteranceClassificationConfig,
    )

    task = UtteranceClassification(UtteranceClassificationConfig(
        data=DataConfig(SourceConfig(root="."))))
    task.classes = ["hi", "lo"]
    featurizer, head = Featurizer(3, 8), task.build_head(8)
    options = runner.RunOptions("utterance_classification", "up", "c.yaml", str(tmp_path))
    runner.save_head(tmp_path / "head.pt", task, featurizer, head, {"best_step": 1}, options)
    before = (tmp_path / "head.pt").read_bytes()

    def killed(obj, f):  # half the bytes reach the file, then the process dies
        Path(f).write_bytes(before[: len(before) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(head_file.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.save_head(tmp_path / "head.pt", task, featurizer, head, {"best_step": 2}, options)
    assert (tmp_path / "head.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.pt"]  # no temporary left


@pytest.mark.parametrize("change, named", [
    ({"featurizer": {"layer_norm": True}}, "featurizer.layer_norm"),
    ({"featurizer": {"layers": [1, 2, 3]}}, "featurizer.layers"),  # same count, other layers
    ({"stft": {"hop_length": 80}}, "stft.hop_length"),
    ({"head": {"mask_activation": "relu"}}, "head.mask_activation"),
])
def test_a_head_trained_with_other_model_settings_is_refused(tmp_path, change, named):
    """--evaluate-only with a config whose featurizer, head or STFT settings differ from the
    head's loaded the weights and tested them under the new settings (a head trained without
    layer norm, tested with it: KWS accuracy 0.90 -> 0.65, silently)."""
    from downstream.data import DataConfig, SourceConfig
    from downstream.featurizer import Featurizer, FeaturizerConfig
    from downstream.tasks.speech_enhancement.task import (
        SEHeadConfig,
        SpeechEnhancementConfig,
        SpeechEnhancementTask,
        StftConfig,
    )

    def make(featurizer=None, stft=None, head=None):
        featurizer = {"layers": [0, 1, 2], "layer_norm": False, **(featurizer or {})}
        config = SpeechEnhancementConfig(
            data=DataConfig(SourceConfig(root=".")), featurizer=FeaturizerConfig(**featurizer),
            stft=StftConfig(**(stft or {})), head=SEHeadConfig(hidden_size=4, num_layers=1,
                                                               **(head or {})))
        task = SpeechEnhancementTask(config)
        return task, Featurizer(5, 8, featurizer["layers"], featurizer["layer_norm"]), \
            task.build_head(8)

    options = runner.RunOptions("speech_enhancement", "up", "c.yaml", str(tmp_path))
    runner.save_head(tmp_path / "head.pt", *make(), {"best_step": 1}, options)
    assert runner.load_head(tmp_path / "head.pt", *make(head={"dropout": 0.5}),
                            options)["best_step"] == 1  # training-only settings may differ
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        runner.load_head(tmp_path / "head.pt", *make(**change), options)


def test_training_only_head_settings_may_differ_at_evaluate_only():
    """A speaker-verification head is tested on its embeddings: the AM-softmax margin and scale
    of its training loss do not change them (--evaluate-only with another margin was refused),
    nor does its batch norm statistics mode (evaluation uses the running statistics), so a head
    saved before ``head.batch_norm`` existed loads under the ``masked`` default."""
    from downstream.featurizer import Featurizer

    featurizer = Featurizer(5, 8, [0, 1, 2], False)
    saved = {"featurizer": {"layers": [0, 1, 2], "layer_norm": False},
             "head": {"channels": 128, "margin": 0.2, "scale": 30.0, "dropout": 0.0}}
    now = {"head": {"channels": 128, "margin": 0.4, "scale": 20.0, "dropout": 0.1,
                    "batch_norm": "masked"}}
    assert head_file._model_setting_differences(saved, now, featurizer) == []
    now["head"]["channels"] = 64
    assert head_file._model_setting_differences(saved, now, featurizer) == [
        "head.channels (128 in the head, 64 here)"]


def test_run_seeds_substitutes_the_seed_in_the_head_path_and_refuses_repeats(monkeypatch,
                                                                              tmp_path):
    calls = []
    monkeypatch.setattr(runner, "run_evaluation", lambda o: calls.append(o) or {"seed": o.seed})
    monkeypatch.setattr(runner, "aggregate_seeds", lambda runs, dirs, n: {"runs": runs,
                                                                          "dirs": dirs})
    monkeypatch.setattr(runner, "write_outputs", lambda results, out: None)
    monkeypatch.setattr(runner, "_check_seed_folders", lambda options, seeds: None)  # no config
    options = runner.RunOptions("ks", "up", "c.yaml", str(tmp_path),
                                evaluate_only=str(tmp_path / "seed{seed}" / "head.pt"))
    merged = runner.run_seeds(options, [4, 1])
    assert [(o.seed, o.out, o.evaluate_only) for o in calls] == [
        (4, str(tmp_path / "seed4"), str(tmp_path / "seed4" / "head.pt")),
        (1, str(tmp_path / "seed1"), str(tmp_path / "seed1" / "head.pt"))]
    assert merged["dirs"] == [tmp_path / "seed4", tmp_path / "seed1"]
    assert options.evaluate_only.endswith("seed{seed}/head.pt")  # the caller's options untouched
    for bad in ([], [1, 1]):
        calls.clear()
        with pytest.raises(ValueError, match="distinct seeds"):
            runner.run_seeds(options, bad)
        assert not calls
