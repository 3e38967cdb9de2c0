"""The configuration reference (``distill --help``, docs/config.md) matches what is accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustdistill.cli import main
from robustdistill.config import DistillConfig, load_config
from robustdistill.config_reference import config_keys, reference_document

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_docs_config_md_is_current():
    assert DOC.read_text() == reference_document(), (
        "docs/config.md is out of date: python -m robustdistill.config_reference > "
        "docs/config.md")


def test_every_listed_key_is_accepted_with_its_listed_default():
    """Overriding each key with the default the reference gives yields the default config:
    every key exists under that name, and every default is what the code uses."""
    base = load_config(None, ["--teacher", "t"]).to_dict()
    listed = 0
    for section in config_keys(DistillConfig):
        for key, _, default, _ in section.keys:
            if default == "required":
                continue
            value = json.dumps(json.loads(default))  # as YAML, which JSON is
            cfg = load_config(None, ["--teacher", "t", f"--{key}", value])
            assert cfg.to_dict() == base, key
            listed += 1
    assert listed == sum(len(s.keys) for s in config_keys(DistillConfig)) - 1  # teacher


def test_every_key_of_the_config_is_listed():
    def flatten(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k != "objectives":
                yield from flatten(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    listed = {key for section in config_keys(DistillConfig) for key, *_ in section.keys}
    assert listed == set(flatten(DistillConfig(teacher="t").to_dict()))


def test_distill_help_prints_each_key_with_its_default(capsys):
    with pytest.raises(SystemExit) as done:
        main(["distill", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "  --training.max_steps (int, default 200000)\n      optimizer steps\n" in out
    assert "  --teacher (str, required)\n" in out


def _load_se(overrides):
    from robustdistill.se.train import load_se_config

    return load_se_config(None, overrides).to_dict()


def _load_speaker(overrides, tmp_path):
    from downstream.config import load_config as load_downstream
    from downstream.config import to_dict
    from robustdistill.config import parse_overrides
    from robustdistill.speaker.config import SpeakerKDConfig

    recipe = tmp_path / "empty.yaml"
    recipe.write_text("{}\n")
    return to_dict(load_downstream(recipe, SpeakerKDConfig, parse_overrides(overrides)))


@pytest.mark.parametrize("command", ["train-se", "train-speaker"])
def test_se_and_speaker_keys_are_documented_and_accepted_with_their_defaults(command,
                                                                             tmp_path):
    from robustdistill.config_reference import root_config

    def load(overrides):
        return (_load_se(overrides) if command == "train-se"
                else _load_speaker(overrides, tmp_path))

    base = load([])
    for section in config_keys(root_config(command)):
        for key, _, default, help_ in section.keys:
            assert help_, f"{command}: {key} has no help (metadata or Attributes: docstring)"
            assert default != "required", key
            assert load([f"--{key}", json.dumps(json.loads(default))]) == base, key


@pytest.mark.parametrize("command", ["train-se", "train-speaker"])
def test_se_and_speaker_help_lists_their_keys(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    key = "data.snr_range" if command == "train-se" else "ig.n_steps"
    assert f"  --{key} (" in out


def test_downstream_task_keys_are_documented_and_accepted_with_their_defaults(tmp_path):
    from downstream.config import load_config as load_downstream
    from downstream.config import to_dict
    from robustdistill.config import parse_overrides
    from robustdistill.config_reference import downstream_tasks

    recipe = tmp_path / "task.yaml"
    recipe.write_text("data: {source: {root: corpus}}\n")
    tasks = downstream_tasks()
    assert set(tasks) == {"asr", "speaker_verification", "speech_enhancement",
                          "utterance_classification"}
    for task, config_class in tasks.items():
        base = to_dict(load_downstream(recipe, config_class))
        sections = config_keys(config_class)
        assert [s.note for s in sections if s.name == "data.dev_source"] == [
            "optional: null leaves it out; the keys of `data.source`"]
        for section in sections:
            for key, _, default, help_ in section.keys:
                assert help_, f"{task}: {key} has no help"
                if default == "required" or key == "data.source.root":
                    continue  # the recipe's one source (null would leave none)
                overridden = load_downstream(recipe, config_class, parse_overrides(
                    [f"--{key}", json.dumps(json.loads(default))]))
                assert to_dict(overridden) == base, (task, key)
