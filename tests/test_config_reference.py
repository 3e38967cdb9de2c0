"""The configuration reference (``distill --help``, docs/config.md) matches what is accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustdistill.cli import main
from robustdistill.config import DistillConfig, load_config
from robustdistill.config_reference import config_keys, config_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_docs_config_md_is_current():
    assert DOC.read_text() == config_reference(markdown=True), (
        "docs/config.md is out of date: python -m robustdistill.config_reference > "
        "docs/config.md")


def test_every_listed_key_is_accepted_with_its_listed_default():
    """Overriding each key with the default the reference gives yields the default config:
    every key exists under that name, and every default is what the code uses."""
    base = load_config(None, ["--teacher", "t"]).to_dict()
    listed = 0
    for _, keys in config_keys():
        for key, _, default, _ in keys:
            if default == "required":
                continue
            value = json.dumps(json.loads(default))  # as YAML, which JSON is
            cfg = load_config(None, ["--teacher", "t", f"--{key}", value])
            assert cfg.to_dict() == base, key
            listed += 1
    assert listed == sum(len(k) for _, k in config_keys()) - 1  # all but `teacher`


def test_every_key_of_the_config_is_listed():
    def flatten(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k != "objectives":
                yield from flatten(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    listed = {key for _, keys in config_keys() for key, *_ in keys}
    assert listed == set(flatten(DistillConfig(teacher="t").to_dict()))


def test_distill_help_prints_each_key_with_its_default(capsys):
    with pytest.raises(SystemExit) as done:
        main(["distill", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "  --training.max_steps (int, default 200000)\n      optimizer steps\n" in out
    assert "  --teacher (str, required)\n" in out
