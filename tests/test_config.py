"""Configs: the shipped recipes load, typos are errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustdistill.config import ConfigError, load_config, parse_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["demo", "distilhubert", "robust_wavlm_base_plus"])
def test_recipes_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.teacher and cfg.objectives


def test_robust_recipe_values():
    cfg = load_config(CONFIGS / "robust_wavlm_base_plus.yaml")
    assert cfg.teacher == "microsoft/wavlm-base-plus"
    assert cfg.objectives["enhancement"]["lambda_enh"] == 2.0
    assert (cfg.training.max_steps, cfg.data.batch_size, cfg.training.learning_rate) == (
        200_000, 24, 2e-4)
    assert (cfg.augmentation.snr_min, cfg.augmentation.snr_max) == (0.0, 20.0)


def test_overrides_are_typed_and_nested():
    cfg = load_config(CONFIGS / "demo.yaml", ["--training.max_steps", "7",
                                              "--training.mixed_precision=no",
                                              "--objectives.layerwise.teacher_layers", "[1, 2]"])
    assert cfg.training.max_steps == 7 and cfg.training.mixed_precision == "no"
    assert cfg.objectives["layerwise"]["teacher_layers"] == [1, 2]
    assert parse_overrides(["--a.b", "null"]) == {"a": {"b": None}}
    # YAML 1.2 floats: an exponent needs no dot and no sign
    assert parse_overrides(["--x", "5e-4", "--y", "1.0e5", "--z", "1", "--w", "'5e-4'"]) == {
        "x": 5e-4, "y": 1e5, "z": 1, "w": "5e-4"}


@pytest.mark.parametrize("override, message", [
    (["--training.max_step", "3"], r"'training\.max_step'; did you mean 'training\.max_steps'\?"),
    (["--trainig.max_steps", "3"], r"'trainig'; did you mean 'training'\?"),
    (["--data.batch_sise", "3"], r"'data\.batch_sise'; did you mean 'data\.batch_size'\?"),
    (["--objectives.layerwise.lambda_cosine", "1"],
     r"'objectives\.layerwise\.lambda_cosine'; did you mean 'objectives\.layerwise\.lambda_cos'"),
    (["--objectives.layerwize", "{}"],
     r"'objectives\.layerwize'; did you mean 'objectives\.layerwise'\?"),
    (["--training.mixed_precision", "fp8"], "mixed_precision"),
    (["--augmentation.p_noise", "0.9"], "sum to 1|p_"),
    (["--training.max_eval_batches", "0"], "max_eval_batches"),
    (["--training.lr_schedule", "cosin"], "lr_schedule.*cosine"),
    (["--training.lr_schedule", "reduce_lr_on_plateau"], "lr_schedule"),
    (["--training.lr_schedule", "constant", "--training.warmup_ratio", "0.1"],
     "constant_with_warmup"),
])
def test_typos_and_bad_values_are_errors_that_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "demo.yaml", override)


def test_missing_teacher_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="teacher"):
        load_config(None, ["--output_dir", "x"])
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.yaml")
