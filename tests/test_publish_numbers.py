"""Mutation-found gaps in publishing: card numbers come from the results file (rounding, the
other metrics' table, comparison rows per task, chance notes, the read-back check), results
parsing defaults, and what a push uploads or refuses."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path
from unittest import mock

import pytest

from robustdistill.publish.card import CardError, build_card, write_card
from robustdistill.publish.results import load_task_results

CONDITIONS = ["clean", "snr0", "reverb"]
FAKE_TOKEN = "hf_mutTestTokenNotReal0123456789"


def _entry(upstream: str, accuracy=(0.8, 0.5, 0.6), task="utterance_classification", **extra):
    return {"task": task, "upstream": upstream, "primary_metric": "accuracy",
            "conditions": CONDITIONS,
            "metrics": {c: {"accuracy": a, "loss": round(1.0 - a, 6)}
                        for c, a in zip(CONDITIONS, accuracy, strict=True)},
            "task_summary": {"num_classes": 10}, "num_items": {"train": 100, "test": 50},
            "seed": 0, **extra}


@pytest.fixture()
def student(tmp_path, tiny_wavlm_dir) -> Path:
    out = tmp_path / "student"
    shutil.copytree(tiny_wavlm_dir, out)
    return out


def _write(tmp_path, data, name="results.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _card(student, path, **kwargs):
    return build_card(student, [path], None, license="mit", speed=False, copy_plots=False,
                      **kwargs)


# ---- card.py ---------------------------------------------------------------------------------


def test_model_index_values_are_the_results_files_to_six_decimals(student, tmp_path):
    path = _write(tmp_path, _entry(str(student), accuracy=(0.123456789, 0.5, 0.6)))
    card = _card(student, path)
    got = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert got[("utterance_classification-clean", "accuracy")] == 0.123457
    assert got[("utterance_classification-clean", "loss")] == 0.876543
    assert "| **this model** | 0.1235 [" in card.text  # the text: 4 decimals


def test_other_metrics_table_gives_each_metrics_own_numbers(student, tmp_path):
    card = _card(student, _write(tmp_path, _entry(str(student))))
    assert "| loss | 0.2000 | 0.5000 | 0.4000 |" in card.text  # no interval for a loss


def test_comparison_rows_come_only_from_the_same_task(student, tmp_path):
    data = {"results": [_entry(str(student)),
                        _entry("runs/other_kws", accuracy=(0.3, 0.2, 0.1)),
                        _entry("runs/other_asr", accuracy=(0.9, 0.9, 0.9), task="asr")]}
    card = _card(student, _write(tmp_path, data))
    assert "| `other_kws` | 0.3000" in card.text
    assert "other_asr" not in card.text


def test_an_interval_reaching_chance_is_noted_even_when_the_value_is_above_it(student,
                                                                              tmp_path):
    # 0.15 of 50 items, 10 classes: Wilson 95 % low end 0.07 < chance 0.10
    card = _card(student, _write(tmp_path, _entry(str(student), accuracy=(0.15, 0.5, 0.6))))
    assert "the accuracy interval includes chance level (0.10, 10 classes) under `clean`" \
        in card.text
    assert "`snr0`:" not in card.text


def test_layerwise_default_teacher_layers_are_thirds_of_the_teacher():
    from robustdistill.publish.card_training import _teacher_layers_text

    run = types.SimpleNamespace(teacher_facts=types.SimpleNamespace(num_layers=12))
    assert _teacher_layers_text("layerwise", {}, run) == (
        "4, 8, 12 by default for a 12-layer teacher")
    run.teacher_facts.num_layers = 2
    assert _teacher_layers_text("layerwise", {}, run).startswith("1, 2 by default")


def test_write_card_refuses_a_card_whose_model_index_does_not_read_back(student, tmp_path,
                                                                        monkeypatch):
    from huggingface_hub import ModelCard

    path = _write(tmp_path, _entry(str(student)))
    real_load = ModelCard.load.__func__

    def corrupted_load(cls, *args, **kwargs):
        card = real_load(cls, *args, **kwargs)
        card.data.eval_results[0].metric_value = 0.123
        return card

    monkeypatch.setattr(ModelCard, "load", classmethod(corrupted_load))
    with pytest.raises(CardError, match="does not read back"):
        write_card(student, [path], None, license="mit", speed=False, copy_plots=False)


# ---- results.py ------------------------------------------------------------------------------


def test_results_defaults_and_which_metrics_get_wilson_intervals(tmp_path):
    entry = _entry("m")
    entry["metrics"]["snr0"]["accuracy"] = {"value": 0.5, "mean": 0.7}
    (task,) = load_task_results(_write(tmp_path, entry))
    assert task.higher_is_better is True  # absent from the file: higher is better
    assert task.metrics["snr0"]["accuracy"].value == 0.5  # "value" wins over "mean"
    assert task.metrics["clean"]["accuracy"].interval_source == "Wilson 95 %, n = 50"
    assert task.metrics["clean"]["loss"].interval is None  # not a proportion


# ---- push.py ---------------------------------------------------------------------------------


@pytest.fixture()
def folder(student) -> Path:
    (student / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    (student / "training_config.yaml").write_text("teacher: t\n")
    (student / "heads").mkdir()
    (student / "heads" / "layerwise.safetensors").write_bytes(b"w")
    return student


def test_hidden_files_and_caches_in_subfolders_are_not_uploaded(folder):
    from robustdistill.publish.push import plan_upload

    (folder / "heads" / ".DS_Store").write_bytes(b"x")
    (folder / "onnx" / "__pycache__").mkdir(parents=True)
    (folder / "onnx" / "__pycache__" / "x.pyc").write_bytes(b"x")
    (folder / "onnx" / "model.onnx").write_bytes(b"g")
    plan = plan_upload(folder, "org/x")
    assert plan.files == ["README.md", "config.json", "heads/layerwise.safetensors",
                          "model.safetensors", "onnx/model.onnx", "preprocessor_config.json",
                          "training_config.yaml"]


def test_a_yaml_file_holding_the_token_is_refused(folder, monkeypatch):
    import huggingface_hub

    from robustdistill.publish.push import PushError, push

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    upload = mock.Mock()
    for name in ("upload_folder", "create_repo", "create_branch"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, upload)
    (folder / "training_config.yaml").write_text(f"hub_token: {FAKE_TOKEN}\n")
    with pytest.raises(PushError, match="training_config.yaml contains the Hugging Face token"):
        push(folder, "org/x")
    upload.assert_not_called()


def test_a_nan_metric_is_left_out_with_a_warning_naming_it(tmp_path, caplog):
    import logging

    entry = _entry("s")
    entry["metrics"]["snr0"]["loss"] = float("nan")
    entry["metrics"]["reverb"]["loss"] = {"value": float("nan"), "low": 0.1, "high": 0.2}
    path = _write(tmp_path, entry)
    with caplog.at_level(logging.WARNING):
        (result,) = load_task_results(path)
    assert "loss" not in result.metrics["snr0"] and "loss" not in result.metrics["reverb"]
    assert "loss under snr0 is NaN" in caplog.text and "loss under reverb is NaN" in caplog.text
    assert "under clean" not in caplog.text


def test_a_null_metric_from_strict_json_is_named_like_nan(tmp_path, caplog):
    import logging

    entry = _entry("s")
    entry["metrics"]["snr0"]["loss"] = None  # downstream writes NaN as null
    path = _write(tmp_path, entry)
    with caplog.at_level(logging.WARNING):
        (result,) = load_task_results(path)
    assert "loss" not in result.metrics["snr0"]
    assert "loss under snr0 is NaN" in caplog.text


def _se_entry(upstream: str, seeds=None, **extra):
    entry = {"task": "speech_enhancement", "upstream": upstream, "primary_metric": "pesq",
             "higher_is_better": True, "conditions": CONDITIONS, "item_unit": "utterance",
             "metrics": {c: {"pesq": p, "si_sdr": s} for c, p, s in
                         zip(CONDITIONS, (3.0, 1.8, 2.0), (12.0, 4.0, 1.0), strict=True)},
             "num_items": {"train": 100, "test": 40}, "seed": 0, **extra}
    if seeds is not None:
        entry["seeds"] = seeds
    return entry


def test_unscored_items_are_named_in_a_warning_and_the_card(student, tmp_path, caplog):
    import logging

    unscored = {"clean": {}, "snr0": {"pesq": 2, "si_sdr": 1}, "reverb": {"si_sdr": 3}}
    path = _write(tmp_path, _se_entry(str(student), unscored=unscored))
    with caplog.at_level(logging.WARNING):
        (result,) = load_task_results(path)
    assert result.unscored == {"snr0": {"pesq": 2, "si_sdr": 1}, "reverb": {"si_sdr": 3}}
    assert "pesq under snr0 could not be scored on 2 test utterance" in caplog.text
    assert "si_sdr under snr0 could not be scored on 1 test utterance" in caplog.text
    assert "si_sdr under reverb could not be scored on 3 test utterance" in caplog.text
    assert "under clean" not in caplog.text
    text = _card(student, path).text
    assert ("pesq under `snr0` on 2 of 40; si_sdr under `snr0` on 1 of 40; si_sdr under "
            "`reverb` on 3 of 40.") in text
    # three seeds: the counts are sums over seeds, not "of 40"
    path = _write(tmp_path, _se_entry(str(student), seeds=[0, 1, 2],
                                      unscored={"snr0": {"pesq": 5}}), "three.json")
    text = _card(student, path).text
    assert "pesq under `snr0` on 5 (summed over seeds)." in text


def test_comparison_rows_are_marked_unscored_as_in_results_md(student, tmp_path):
    """Every row of the card's results table, not only this model's, carries results.md's
    ``(n unscored)`` marks (its cells come from ``interval_cell``), with results.md's note."""
    from downstream.table import interval_cell, unscored_note

    teacher = _se_entry("runs/teacher", unscored={"snr0": {"pesq": 3, "si_sdr": 2}})
    mine = _se_entry(str(student))
    text = _card(student, _write(tmp_path, {"results": [mine, teacher]})).text
    cells = [interval_cell(teacher, c, "pesq") for c in CONDITIONS]
    assert cells[1] == "1.8000 (3 unscored)"
    assert "| `teacher` | " + " | ".join(cells) + " |" in text
    assert "| **this model** | 3.0000 | 1.8000 | 2.0000 |" in text
    assert f"**Warning: {unscored_note([teacher])}**" in text
    assert "could not be scored" not in text  # this model's own limitation: none to note
    # this model's marks, in both of its tables
    mine["unscored"] = {"snr0": {"pesq": 1}, "reverb": {"si_sdr": 4}}
    text = _card(student, _write(tmp_path, {"results": [mine]}, "mine.json")).text
    assert "| **this model** | 3.0000 | 1.8000 (1 unscored) | 2.0000 |" in text
    assert "| si_sdr | 12.0000 | 4.0000 | 1.0000 (4 unscored) |" in text
    assert f"**Warning: {unscored_note([mine])}**" in text
    assert "**Warning" not in _card(student, _write(tmp_path, _se_entry(str(student)),
                                                    "none.json")).text


def test_results_without_or_with_a_malformed_unscored_still_card(student, tmp_path, caplog):
    import logging

    for name, extra in (("old.json", {}), ("bad.json", {"unscored": ["pesq"]}),
                        ("odd.json", {"unscored": {"snr0": {"pesq": "2", "si_sdr": 0,
                                                            "stoi": True}}})):
        path = _write(tmp_path, _se_entry(str(student), **extra), name)
        with caplog.at_level(logging.WARNING):
            (result,) = load_task_results(path)
        assert result.unscored == {}
        assert "could not be scored" not in caplog.text
        assert "could not be scored" not in _card(student, path).text
