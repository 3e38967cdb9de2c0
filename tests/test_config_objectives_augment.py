"""Mutation-testing additions for the augmentation config's ranges and the objective registry
and config parsing: boundaries that are allowed, values that are refused with the field named,
duplicate registration, option errors naming the objective, model facts and empty objectives
refused in a config, and the default objectives."""

from __future__ import annotations

import math

import pytest

from robustdistill.augment.config import AugmentationConfig
from robustdistill.config import ConfigError, DistillConfig, build_config
from robustdistill.objectives import OBJECTIVES, build_objective, register_objective

# ---- AugmentationConfig ----------------------------------------------------------------------


def test_augmentation_boundaries_that_are_allowed():
    cfg = AugmentationConfig(snr_min=5.0, snr_max=5.0, rt60_min=0.5, rt60_max=0.5,
                             rir_direct_path_db=0.0, room_max_order=1, num_simulated_rooms=1,
                             noise_file_prob=1.0, p_noise=1.0, p_reverb=0.0,
                             p_noise_reverb=0.0, p_none=0.0)
    assert (cfg.snr_min, cfg.snr_max, cfg.rt60_min, cfg.rt60_max) == (5.0, 5.0, 0.5, 0.5)
    assert AugmentationConfig(noise_file_prob=0.0).noise_file_prob == 0.0


@pytest.mark.parametrize(("overrides", "message"), [
    ({"p_none": 0.255}, r"must sum to 1, got 1\.005"),
    ({"p_none": 0.25 + 2e-6}, "must sum to 1"),
    ({"snr_max": math.inf}, "snr_min and snr_max must be finite"),
    ({"snr_min": -math.inf}, "snr_min and snr_max must be finite"),
    ({"snr_min": 20.5}, r"snr_min \(20\.5\) must not exceed snr_max \(20\.0\)"),
    ({"rt60_min": 0.5, "rt60_max": 0.4}, r"rt60_max \(0\.4\) must not be below rt60_min"),
    ({"room_max_order": 0}, "room_max_order must be >= 1"),
    ({"rir_channels": "left"}, "rir_channels must be 'one' or 'mean'"),
    ({"noise_file_prob": -0.1}, "noise_file_prob"),
])
def test_augmentation_values_refused_with_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        AugmentationConfig(**overrides)


def test_probabilities_within_1e6_of_one_are_accepted():
    assert AugmentationConfig(p_none=0.25 + 5e-7).p_none == 0.25 + 5e-7


# ---- the objective registry --------------------------------------------------------------------

FACTS = {"teacher_hidden_size": 4, "teacher_num_layers": 2, "student_hidden_size": 4,
         "student_conv_dim": None}


def test_an_objective_name_cannot_be_registered_twice():
    original = OBJECTIVES["layerwise"]
    try:
        with pytest.raises(ValueError, match="objective 'layerwise' is registered twice"):
            @register_objective("layerwise")
            class Impostor(original):  # noqa: F841
                pass
        assert OBJECTIVES["layerwise"] is original
    finally:
        OBJECTIVES["layerwise"] = original
        original.name = "layerwise"


def test_a_bad_option_error_names_the_objective():
    with pytest.raises(TypeError, match=r"^objective 'enhancement': .*lambda_enhh"):
        build_objective("enhancement", **FACTS, lambda_enhh=1.0)


# ---- objectives in a config --------------------------------------------------------------------


def test_an_empty_objectives_mapping_is_refused():
    with pytest.raises(ConfigError, match="objectives must be a non-empty mapping"):
        build_config({"teacher": "t", "objectives": {}})


def test_default_objectives_are_layerwise_and_enhancement():
    assert build_config({"teacher": "t"}).objectives == {"layerwise": {}, "enhancement": {}}
    assert DistillConfig(teacher="t").objectives == {"layerwise": {}, "enhancement": {}}
