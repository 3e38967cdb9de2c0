"""Model cards: parameter counts, home paths, layer counts, the speaker verification results: pins found by mutation testing (2026-12-06)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml


# ---------------------------------------------------------------------------- cards
def test_parameter_count_switches_to_millions_at_one_million():
    from robustdistill.publish.card import parameter_count

    assert parameter_count(999_999) == "999,999"
    assert parameter_count(1_000_000) == "1.0 M"
    assert parameter_count(23_456_789) == "23.5 M"


def test_card_writes_home_paths_with_a_tilde_and_one_layer_in_the_singular(tmp_path,
                                                                         monkeypatch):
    from robustdistill.publish.card import build_card
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    student = GRUMaskStudent(StudentConfig(hidden_size=16, num_layers=1)).save_pretrained(
        tmp_path / "se")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"seed": 0}))
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path))
    text = build_card(student, [], tmp_path / "run", license="mit", kind="se",
                      speed=False).text
    assert "from the run `~/run`." in text
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    assert str(tmp_path) not in prose
    # the How to use snippet keeps a path from_pretrained can open (it does not expand ~)
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert f'folder = "{student}"' in code
    scope: dict = {}
    exec(code, scope)
    assert scope["enhanced"].shape == (1, 16000)
    assert "- Architecture: `robustdistill-se-gru-mask`, 1 layer, width 16." in text


def test_a_home_folder_of_slash_abbreviates_nothing(monkeypatch):
    """``HOME=/`` (a service account, some containers): no "/" of the card becomes "~"."""
    from robustdistill.publish.card import _abbreviate_home

    monkeypatch.setattr(Path, "home", classmethod(lambda cls: Path("/")))
    text = "EER / minDCF, `/` and /\n"
    assert _abbreviate_home(text) == text


def test_ssl_card_gives_a_small_teachers_exact_parameter_count(tmp_path, tiny_wavlm_dir,
                                                              tiny_hubert_dir):
    from robustdistill.publish.card import build_card
    from robustdistill.publish.provenance import model_facts

    student = tmp_path / "run" / "student"
    shutil.copytree(tiny_wavlm_dir, student)
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(
        {"teacher": str(tiny_hubert_dir), "seed": 0}))
    n = model_facts(tiny_hubert_dir).parameters
    assert n < 1_000_000
    text = build_card(student, [], tmp_path / "run", license="mit", speed=False).text
    assert f"{n:,} parameters)" in text and "0.1 M parameters" not in text
    assert f"the teacher has {n:,}," in text and "(0.0 M)" not in text and "(0.1 M)" not in text


def test_speaker_verification_results_refuse_incomplete_entries_and_unreadable_files(tmp_path):
    from robustdistill.publish.card_evaluation import verification_results, verification_view
    from robustdistill.publish.provenance import RunSummary

    run = RunSummary(run_dir=tmp_path, config={"data": {"fsdd_dir": "x/fsdd"}}, teacher="",
                     teacher_facts=None, recipe="speaker")
    (tmp_path / "result.json").write_text(json.dumps({"eval": {
        "fsdd": {"eer": 0.05, "min_dcf": 0.25}}}))
    rows = verification_results(run)
    assert [(r.name, r.dataset, r.eer, r.min_dcf, r.target_trials) for r in rows] == [
        ("fsdd", "fsdd", 0.05, 0.25, None)]
    # a file that is not JSON, or not an object, is refused naming it (until 2026-12-07 the
    # card said the run "holds no evaluation"); so is an entry the card would have dropped
    # without a word (until 2026-12-08: an incomplete set, a boolean score, an eval list)
    done = tmp_path / "result.json"
    for broken, says in (
            ('{"eval": {"fsdd": {"eer": 0.0', "is not a readable result.json"),
            ("[1, 2]", "holds a JSON list, not a result.json object"),
            ('{"eval": {"half": {"eer": 0.3}}}',
             "is not a result.json as train-speaker writes it: eval.half has no min_dcf"),
            ('{"eval": {"flag": {"eer": true, "min_dcf": 0.1}}}',
             "is not a result.json as train-speaker writes it: eval.flag.eer is true (a JSON "
             "boolean), not a number or null"),
            ('{"eval": [1, 2]}', "is not a result.json as train-speaker writes it: eval is a "
                                 "JSON array, not an object of verification sets")):
        done.write_text(broken)
        with pytest.raises(ValueError, match="^" + re.escape(f"{done} {says}")):
            verification_results(run)
    done.write_text('{"eval": {}}')  # an object without eval entries has none
    assert verification_results(run) == []
    assert verification_view(run)["missing"].startswith("Speaker verification: not "
                                                        "recorded. `result.json`")


def test_library_folders_are_told_from_transformers_ones_without_upgrade_advice(
        tmp_path, tiny_wavlm_dir, caplog):
    """An SE student's folder is read from its own config.json and safetensors; transformers'
    "pip install --upgrade transformers" advice never reaches the log."""
    import logging

    from robustdistill.publish.provenance import is_transformers_config, model_facts
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    student = GRUMaskStudent(StudentConfig(hidden_size=16)).save_pretrained(tmp_path / "se")
    assert is_transformers_config(tiny_wavlm_dir) and not is_transformers_config(student)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("[1, 2")
    assert not is_transformers_config(tmp_path / "bad")
    with caplog.at_level(logging.DEBUG):
        assert model_facts(student).parameters == 8865
    assert "upgrade" not in caplog.text
