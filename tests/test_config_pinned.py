"""Config behaviour that mutation testing found unpinned: overrides merge into a recipe's
section, model facts and bad teacher_cache values are refused when the config is read,
dashes in override keys, the warm-up ratio's upper bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustdistill.config import ConfigError, load_config, parse_overrides

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_an_override_keeps_the_rest_of_the_recipes_section():
    cfg = load_config(DEMO, ["--training.max_steps", "7",
                             "--objectives.layerwise.teacher_layers", "[1, 2]"])
    assert cfg.training.max_steps == 7
    # demo.yaml's other training and layerwise values survive (not the dataclass defaults)
    assert (cfg.training.learning_rate, cfg.training.warmup_ratio, cfg.training.eval_every,
            cfg.training.cpu) == (5e-4, 0.1, 30, True)
    assert cfg.objectives["layerwise"] == {"teacher_layers": [1, 2], "lambda_cos": 1.0}


def test_dashes_in_override_keys_mean_underscores():
    assert parse_overrides(["--training.max-steps", "3"]) == {"training": {"max_steps": 3}}
    assert load_config(DEMO, ["--training.max-steps=3"]).training.max_steps == 3


def test_model_facts_are_not_objective_options():
    with pytest.raises(ConfigError, match=r"'objectives\.layerwise\.teacher_hidden_size'"):
        load_config(DEMO, ["--objectives.layerwise.teacher_hidden_size", "5"])


@pytest.mark.parametrize(("override", "message"), [
    (["--training.warmup_ratio", "1"], r"warmup_ratio must lie in \[0, 1\)"),
    (["--teacher_cache.missing", "errror"], "teacher_cache.missing"),
    (["--teacher_cache.dtype", "float8"], "teacher_cache.dtype"),
    (["--teacher_cache.layers", "[]"], "teacher_cache.layers"),
    (["--teacher_cache.context", "window"], "teacher_cache.context"),
    (["--teacher_cache.crop_starts", "random"], "teacher_cache.crop_starts"),
    (["--teacher_cache.max_utterance_s", "0"], "teacher_cache.max_utterance_s"),
])
def test_bad_values_are_refused_when_the_config_is_read(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, override)


def test_a_teacher_cache_dir_where_a_file_stands_is_refused_when_the_config_is_read(tmp_path):
    """It was a NotADirectoryError traceback once the teacher and the data were loaded, in
    ``distill`` and ``cache-teacher`` alike."""
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    for where in (afile, afile / "cache"):
        with pytest.raises(ConfigError, match=rf"teacher_cache.dir '{where}': '{afile}' is a "
                                              "file, not a folder"):
            load_config(DEMO, ["--teacher_cache.dir", str(where)])
    assert load_config(DEMO, ["--teacher_cache.dir", str(tmp_path / "new")]).teacher_cache.dir
