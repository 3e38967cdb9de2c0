"""Command-line overrides set a key's value as its YAML line would: a mapping given as a value
replaces the key's whole mapping, a dotted key changes one entry, and ``--objectives.NAME null``
removes an objective (a fresh-user walkthrough found mappings merged and ``null`` turning an
objective on with its defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robustdistill.config import (
    DEFAULT_OBJECTIVES,
    ConfigError,
    ReplacingMapping,
    load_config,
    merge_config,
    parse_overrides,
)
from robustdistill.se.train import load_se_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO = CONFIGS / "demo.yaml"  # objectives: layerwise {teacher_layers, lambda_cos}, enhancement


def test_a_mapping_value_replaces_the_configs_objectives():
    cfg = load_config(DEMO, ["--objectives", "{layerwise: {teacher_layers: [2, 4]}}"])
    assert cfg.objectives == {"layerwise": {"teacher_layers": [2, 4]}}  # no enhancement
    # what the run records is plain YAML (the marker type never reaches config.yaml)
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict()))["objectives"] == cfg.objectives


def test_null_removes_an_objective_and_an_empty_mapping_keeps_its_defaults():
    cfg = load_config(DEMO, ["--objectives.enhancement", "null"])
    assert cfg.objectives == {"layerwise": {"teacher_layers": [2, 4], "lambda_cos": 1.0}}
    cfg = load_config(DEMO, ["--objectives.enhancement", "{}"])  # a whole (empty) mapping
    assert cfg.objectives["enhancement"] == {}
    cfg = load_config(DEMO, ["--objectives.enhancement.hidden_size", "8"])  # one option
    assert cfg.objectives["enhancement"] == {"lambda_enh": 2.0, "hidden_size": 8, "num_layers": 2}
    # inside a mapping, as in a YAML file, null is the objective with its default options
    cfg = load_config(DEMO, ["--objectives", "{layerwise: {}, enhancement: null}"])
    assert cfg.objectives == {"layerwise": {}, "enhancement": {}}


def test_removing_an_unknown_or_absent_objective_is_one_line_naming_the_choices():
    with pytest.raises(ConfigError, match=r"'objectives\.enhancment'; did you mean "
                                          r"'objectives\.enhancement'\? "
                                          r"Known keys: \[.*'gram_kd'.*\]"):
        load_config(DEMO, ["--objectives.enhancment", "null"])
    with pytest.raises(ConfigError, match=r"--objectives\.gram_kd null removes objective "
                                          r"'gram_kd', but .* \(they are: layerwise, enhancement\)"):
        load_config(DEMO, ["--objectives.gram_kd", "null"])
    with pytest.raises(ConfigError, match="objectives must be a non-empty mapping"):
        load_config(DEMO, ["--objectives.layerwise", "null", "--objectives.enhancement", "null"])
    with pytest.raises(ConfigError, match=r"objectives\.layerwise must be a mapping of options"):
        load_config(DEMO, ["--objectives.layerwise", "[2, 4]"])


def test_dotted_objective_keys_change_the_defaults_when_the_config_names_none():
    cfg = load_config(None, ["--teacher", "t", "--objectives.enhancement", "null"])
    assert cfg.objectives == {"layerwise": {}}
    cfg = load_config(None, ["--teacher", "t", "--objectives.layerwise.teacher_layers", "[1]"])
    assert cfg.objectives == {**DEFAULT_OBJECTIVES, "layerwise": {"teacher_layers": [1]}}


def test_the_rule_is_the_same_for_sections_and_for_train_se():
    cfg = load_config(DEMO, ["--training", "{max_steps: 5}"])  # the whole section: defaults
    assert (cfg.training.max_steps, cfg.training.learning_rate, cfg.training.cpu) == (5, 2e-4,
                                                                                      False)
    cfg = load_config(DEMO, ["--training.max_steps", "5"])  # one key: the rest of demo.yaml
    assert (cfg.training.max_steps, cfg.training.learning_rate, cfg.training.cpu) == (5, 5e-4,
                                                                                      True)
    recipe = CONFIGS / "se_supervised.yaml"  # training: max_steps 2000, save_every 500
    whole = load_se_config(recipe, ["--training", "{batch_size: 4}"]).training
    one = load_se_config(recipe, ["--training.batch_size", "4"]).training
    assert (whole.batch_size, whole.max_steps, whole.save_every) == (4, 600, 0)  # defaults
    assert (one.batch_size, one.max_steps, one.save_every) == (4, 2000, 500)


def test_later_overrides_win_and_a_conflict_is_one_line():
    cfg = load_config(DEMO, ["--objectives", "{layerwise: {}}",
                             "--objectives.layerwise.teacher_layers", "[1, 2]"])
    assert cfg.objectives == {"layerwise": {"teacher_layers": [1, 2]}}
    cfg = load_config(DEMO, ["--objectives.layerwise.teacher_layers", "[1, 2]",
                             "--objectives", "{enhancement: {}}"])
    assert cfg.objectives == {"enhancement": {}}
    with pytest.raises(ConfigError, match=r"--training\.max_steps is below an earlier "
                                          r"override's value 5, which is not a mapping"):
        load_config(DEMO, ["--training", "5", "--training.max_steps", "3"])


def test_null_after_an_objectives_mapping_removes_the_objective_from_it():
    # in command-line order: the dotted null removes NAME from the earlier mapping value
    cfg = load_config(DEMO, ["--objectives", "{layerwise: {teacher_layers: [2, 4]}, enhancement: {}}",
                             "--objectives.enhancement", "null"])
    assert cfg.objectives == {"layerwise": {"teacher_layers": [2, 4]}}
    cfg = load_config(DEMO, ["--objectives", "{layerwise: {}, enhancement: {}}",
                             "--objectives.enhancement=null", "--objectives.layerwise.lambda_cos", "2"])
    assert cfg.objectives == {"layerwise": {"lambda_cos": 2.0}}
    # absent from that mapping (though in the config): the documented error, nothing added
    with pytest.raises(ConfigError, match=r"--objectives\.enhancement null removes objective "
                                          r"'enhancement', but .* \(they are: layerwise\)"):
        load_config(DEMO, ["--objectives", "{layerwise: {teacher_layers: [2, 4]}}",
                           "--objectives.enhancement", "null"])
    with pytest.raises(ConfigError, match=r"'objectives\.enhancment'; did you mean "
                                          r"'objectives\.enhancement'"):
        load_config(DEMO, ["--objectives", "{enhancement: {}}", "--objectives.enhancment", "null"])
    # a later mapping value still replaces everything before it, the null included
    cfg = load_config(DEMO, ["--objectives", "{layerwise: {}}", "--objectives.layerwise", "null",
                             "--objectives", "{enhancement: {}}"])
    assert cfg.objectives == {"enhancement": {}}
    # and a later dotted value after the null puts the objective back, with those options
    cfg = load_config(DEMO, ["--objectives", "{layerwise: {}, enhancement: {}}",
                             "--objectives.enhancement", "null", "--objectives.enhancement", "{}"])
    assert cfg.objectives == {"layerwise": {}, "enhancement": {}}


def test_parse_overrides_marks_mapping_values_and_merge_config_returns_plain_dicts():
    given = parse_overrides(["--a", "{x: 1}", "--b.c", "{y: 2}", "--d.e", "3"])
    assert given == {"a": {"x": 1}, "b": {"c": {"y": 2}}, "d": {"e": 3}}
    assert isinstance(given["a"], ReplacingMapping) and isinstance(given["b"]["c"], ReplacingMapping)
    assert not isinstance(given["b"], ReplacingMapping)  # made by the dotted key: merged
    base = {"a": {"w": 0}, "b": {"c": {"z": 0}, "k": 1}, "d": {"f": 4}}
    merged = merge_config(base, given)
    assert merged == {"a": {"x": 1}, "b": {"c": {"y": 2}, "k": 1}, "d": {"f": 4, "e": 3}}
    assert type(merged["a"]) is dict and type(merged["b"]["c"]) is dict
    assert type(merge_config({}, given)["b"]["c"]) is dict
    assert base == {"a": {"w": 0}, "b": {"c": {"z": 0}, "k": 1}, "d": {"f": 4}}  # untouched
