"""Mutation-testing follow-ups (round 2) for downstream/base.py (encoding, batching, padding,
training-config checks), downstream/config.py (strict YAML) and downstream/cli.py (flags)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from downstream.base import (
    EncodedExample,
    Example,
    TrainingConfig,
    encode_examples,
    iterate_batches,
    padding_independent,
)


# ---------------------------------------------------------------------------- base.py
def _fbank():
    from downstream.fbank import FbankUpstream
    from downstream.featurizer import Featurizer

    upstream = FbankUpstream()
    return upstream, Featurizer(upstream.num_layers + 1, upstream.hidden_size)


def test_encode_examples_returns_input_order_and_only_real_frames():
    """Batches are sorted by length, results come back in input order, and a short
    utterance batched with a long one keeps exactly its own frames (no padding frames)."""
    upstream, featurizer = _fbank()
    rng = np.random.default_rng(0)
    long = Example("long", rng.standard_normal(8000).astype(np.float32), 0)
    short = Example("short", rng.standard_normal(3200).astype(np.float32), 1)
    mid = Example("mid", rng.standard_normal(4800).astype(np.float32), 2)
    batched = encode_examples(upstream, featurizer, [long, short, mid], 2, torch.float32)
    assert [e.example.key for e in batched] == ["long", "short", "mid"]
    for example, encoded in zip([long, short, mid], batched, strict=True):
        alone = encode_examples(upstream, featurizer, [example], 1, torch.float32)[0].hidden
        assert encoded.hidden.shape == alone.shape
        torch.testing.assert_close(encoded.hidden, alone)
    assert batched[1].num_frames < batched[2].num_frames < batched[0].num_frames


def test_iterate_batches_orders_eval_in_order_and_train_by_the_rng():
    class Keys:
        def collate(self, encoded, train, rng):
            return ([e.example.key for e in encoded], train)

    encoded = [EncodedExample(Example(f"k{i}", np.zeros(1), 0), torch.zeros(1, 1, 1))
               for i in range(5)]
    assert list(iterate_batches(Keys(), encoded, 2)) == [
        (["k0", "k1"], False), (["k2", "k3"], False), (["k4"], False)]
    order = np.random.default_rng(5).permutation(5)
    got = list(iterate_batches(Keys(), encoded, 2, train=True, rng=np.random.default_rng(5)))
    assert got == [([f"k{i}" for i in order[s:s + 2]], True) for s in (0, 2, 4)]
    assert [k for keys, _ in got for k in keys] != [f"k{i}" for i in range(5)]
    with pytest.raises(ValueError, match="rng"):
        list(iterate_batches(Keys(), encoded, 2, train=True))


def test_padding_independence_needs_the_attention_mask_and_honours_an_own_flag():
    from transformers import WavLMConfig

    layer, group = WavLMConfig(feat_extract_norm="layer"), WavLMConfig(feat_extract_norm="group")
    assert padding_independent(SimpleNamespace(use_attention_mask=True, config=layer))
    assert not padding_independent(SimpleNamespace(use_attention_mask=False, config=layer))
    assert not padding_independent(SimpleNamespace(use_attention_mask=True, config=group))
    # an upstream's own attribute decides, even against the CNN rule
    assert not padding_independent(SimpleNamespace(padding_independent=False,
                                                   use_attention_mask=True, config=layer))
    assert padding_independent(SimpleNamespace(padding_independent=True,
                                               use_attention_mask=False, config=group))


@pytest.mark.parametrize("field", ["steps", "batch_size", "eval_every", "eval_batch_size"])
def test_training_counts_must_be_positive(field):
    with pytest.raises(ValueError, match=f"training.{field} must be >= 1"):
        TrainingConfig(**{field: 0})
    TrainingConfig(**{field: 1})


def test_a_learning_rate_whose_first_adamw_step_overflows_is_refused():
    """``-o training.learning_rate=1.0e+38`` ended in torch's "value cannot be converted to
    type float without overflow" traceback at the head's first step."""
    with pytest.raises(ValueError, match=r"^training.learning_rate must be at most 3.403e\+37, "
                                         r"the largest whose first AdamW step .* got 1e\+38$"):
        TrainingConfig(learning_rate=1e38)
    with pytest.raises(ValueError, match=r"^training.featurizer_learning_rate must be at most "
                                         r"3.403e\+37"):
        TrainingConfig(featurizer_learning_rate=1e38)
    assert TrainingConfig(learning_rate=3.4e37).learning_rate == 3.4e37


def test_evaluate_overrides_read_numbers_and_booleans_as_the_config_files_do():
    """``-o training.learning_rate=1e38`` was refused as "expected float, got '1e38'": YAML 1.1
    (``yaml.safe_load``) reads an exponent without a dot as a string, where the config files
    and distill's ``--section.key`` overrides read it as a number (YAML 1.2); ``no`` was
    False there and the string "no" in a file. A value that is not YAML was a traceback."""
    from downstream.base import get_task, task_config_path
    from downstream.cli import parse_overrides
    from downstream.config import load_config
    from robustdistill.config import parse_overrides as distill_overrides

    given = parse_overrides(["training.learning_rate=1e38", "a.b=5e-4", "a.c=no", "a.d=true"])
    assert given == {"training": {"learning_rate": 1e38}, "a": {"b": 5e-4, "c": "no", "d": True}}
    assert given["a"] == distill_overrides(["--b", "5e-4", "--c", "no", "--d", "true"])
    task = get_task("utterance_classification")
    path = task_config_path("utterance_classification", "kws_fsdd_cpu")
    with pytest.raises(ValueError, match=r"training.learning_rate must be at most 3.403e\+37, "
                                         r"the largest whose first AdamW step .* got 1e\+38$"):
        load_config(path, task.config_class, parse_overrides(["training.learning_rate=1e38"]))
    assert load_config(path, task.config_class, parse_overrides(
        ["training.learning_rate=3e-4"])).training.learning_rate == 3e-4
    with pytest.raises(ValueError, match=r"^override training.steps: invalid YAML at line 1, "
                                         r"column 4: "):
        parse_overrides(["training.steps=[1,"])


def test_learning_rate_must_be_positive():
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="learning_rate must be > 0"):
            TrainingConfig(learning_rate=bad)


# ---------------------------------------------------------------------------- config.py
def _uc(data):
    from downstream.config import from_dict
    from downstream.tasks.utterance_classification.task import UtteranceClassificationConfig

    return from_dict(UtteranceClassificationConfig, {"data": {"source": {"root": "."}}, **data})


def test_strict_config_types():
    from downstream.config import ConfigError

    with pytest.raises(ConfigError, match="training.steps: expected int, got True"):
        _uc({"training": {"steps": True}})
    with pytest.raises(ConfigError, match="cache_dtype: 'float61' is not one of"):
        _uc({"cache_dtype": "float61"})
    with pytest.raises(ConfigError, match="encode_padding: 'singel' is not one of"):
        _uc({"encode_padding": "singel"})
    with pytest.raises(ConfigError, match=r"featurizer.layers\[1\]: expected int"):
        _uc({"featurizer": {"layers": [1, "two"]}})
    config = _uc({"training": {"learning_rate": 1, "steps": 3}, "featurizer": {"layers": [0, 2]}})
    assert config.training.learning_rate == 1.0 and isinstance(config.training.learning_rate,
                                                                float)
    assert config.featurizer.layers == [0, 2] and config.training.steps == 3


def test_unknown_nested_key_names_the_dotted_path_and_the_suggestion():
    from downstream.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown config key 'training.step' "
                                          r"\(did you mean 'training.steps'\?\)"):
        _uc({"training": {"step": 3}})


def test_overrides_win_over_the_file(tmp_path):
    from downstream.config import load_config
    from downstream.tasks.utterance_classification.task import UtteranceClassificationConfig

    path = tmp_path / "c.yaml"
    path.write_text("data: {source: {root: .}}\ntraining: {steps: 9, batch_size: 3}\n")
    config = load_config(path, UtteranceClassificationConfig, {"training": {"steps": 2}})
    assert (config.training.steps, config.training.batch_size) == (2, 3)


# ---------------------------------------------------------------------------- cli.py
@pytest.fixture
def captured(monkeypatch):
    from downstream import runner

    calls = []

    def fake(options, seeds=None):
        calls.append((options, seeds))
        return {"task": options.task, "primary_metric": "accuracy", "metrics": {}}

    monkeypatch.setattr(runner, "run_evaluation", fake)
    monkeypatch.setattr(runner, "run_seeds", fake)
    return calls


BASE = ["--upstream", "fbank", "--config", "c.yaml", "--out", "o"]


def test_evaluate_flags_reach_the_run_options(captured):
    from downstream.cli import evaluate_main

    assert evaluate_main(["--task", "KS", *BASE, "--seed", "5", "--device", "meta",
                          "--bootstrap-resamples", "17", "--test-rir-dir", "rirs",
                          "--test-noise-dir", "noise", "--conditions", "clean", "snr5",
                          "--evaluate-only", "h.pt", "-o", "training.steps=3",
                          "-o", "label="]) == 0
    (options, seeds), = captured
    assert seeds is None
    assert (options.task, options.label) == ("utterance_classification", "ks")
    assert (options.seed, options.device, options.bootstrap_resamples) == (5, "meta", 17)
    assert (options.test_rir_dir, options.test_noise_dir) == ("rirs", "noise")
    assert options.conditions == ["clean", "snr5"] and options.evaluate_only == "h.pt"
    assert options.overrides == {"training": {"steps": 3}, "label": None}


def test_superb_names_and_seeds(captured):
    from downstream.cli import evaluate_main, resolve_task

    assert {n: resolve_task(n) for n in ("asv", "sv", "se", "pr", "Sid ")} == {
        "asv": ("speaker_verification", "asv"), "sv": ("speaker_verification", "sv"),
        "se": ("speech_enhancement", "se"), "pr": ("asr", "pr"),
        "Sid ": ("utterance_classification", "sid")}
    assert resolve_task("speaker_verification") == ("speaker_verification", None)
    assert evaluate_main(["--task", "asv", *BASE, "--seeds", "2", "0"]) == 0
    (options, seeds), = captured
    assert seeds == [2, 0] and options.task == "speaker_verification" and options.label == "asv"


def test_a_bare_config_name_finds_the_tasks_shipped_config(tmp_path, monkeypatch):
    from pathlib import Path

    from downstream.base import task_config_path

    monkeypatch.chdir(tmp_path)  # not the repository: an installed package's situation
    shipped = Path(__file__).resolve().parents[1] / "downstream" / "tasks"
    found = task_config_path("utterance_classification", "kws_fsdd_cpu")
    assert found == shipped / "utterance_classification" / "kws_fsdd_cpu.yaml"
    assert task_config_path("utterance_classification", "kws_fsdd_cpu.yaml") == found
    # a file in the working directory wins over a shipped one of the same name
    (tmp_path / "kws_fsdd_cpu.yaml").write_text("a: 1\n")
    assert task_config_path("utterance_classification", "kws_fsdd_cpu.yaml") == Path(
        "kws_fsdd_cpu.yaml")
    with pytest.raises(FileNotFoundError, match="kws_fsdd.yaml, kws_fsdd_cpu.yaml"):
        task_config_path("utterance_classification", "kws_typo")
    # a path with a folder is never looked up elsewhere
    assert task_config_path("utterance_classification", "sub/kws_fsdd_cpu.yaml") == Path(
        "sub/kws_fsdd_cpu.yaml")
