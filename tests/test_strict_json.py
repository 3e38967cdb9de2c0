"""Every JSON file and JSON-lines record the library writes is strict JSON (RFC 8259): a
non-finite number is ``null``, never the bare ``NaN`` / ``Infinity`` that ``jq`` and
JavaScript refuse; readers take ``null`` as they took NaN, and still read older files with
bare ``NaN``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_reliability_checkpoints import _config
from test_reliability_nonfinite import _poison_losses_from

from robustdistill.checkpoints import TRAINING_STATE, latest_checkpoint
from robustdistill.metrics_log import read_records
from robustdistill.strict_json import nan_for_null, null_for_nonfinite, strict_dumps
from robustdistill.trainer import NonFiniteTrainingError, TrainingProgress, train


def _refuse(word: str):
    raise ValueError(f"not strict JSON: {word}")


def _strict(text: str):
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``."""
    return json.loads(text, parse_constant=_refuse)


def test_strict_dumps_writes_null_for_every_nonfinite_value():
    nan, inf = float("nan"), float("inf")
    value = {"nan": nan, "inf": inf, "-inf": -inf, "f32": np.float32("nan"),
             "f64": np.float64(-np.inf), "tensor": torch.tensor(float("nan")),
             "nested": {"list": [1.5, nan, {"deep": inf}], "tuple": (nan, 2)},
             "array": np.array([0.25, np.nan], dtype=np.float32),
             "finite": {"float": 0.1, "f32": np.float32(0.5), "int": 3, "bool": True,
                        "text": "NaN", "none": None}}
    with pytest.raises(ValueError):  # the premise: json.dumps alone writes bare NaN
        _strict(json.dumps({"x": nan}))
    text = strict_dumps(value)
    back = _strict(text)
    assert back == {"nan": None, "inf": None, "-inf": None, "f32": None, "f64": None,
                    "tensor": None,
                    "nested": {"list": [1.5, None, {"deep": None}], "tuple": [None, 2]},
                    "array": [0.25, None],
                    "finite": {"float": 0.1, "f32": 0.5, "int": 3, "bool": True,
                               "text": "NaN", "none": None}}
    assert strict_dumps({"a": [nan]}, indent=1) == '{\n "a": [\n  null\n ]\n}'
    with pytest.raises(TypeError, match="allow_nan"):
        strict_dumps({"a": 1.0}, allow_nan=True)
    # the inverse, on a numeric subtree: null is NaN again
    again = nan_for_null(back["nested"])
    assert again["list"][0] == 1.5 and math.isnan(again["list"][1])
    assert math.isnan(again["list"][2]["deep"]) and again["tuple"][1] == 2
    assert null_for_nonfinite(np.float32(2.0)) == 2.0 and null_for_nonfinite("x") == "x"


def test_a_distillation_that_hits_nan_writes_strict_json_and_resumes_from_it(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    """Steps 3 and 4 have a NaN loss and the run stops at step 5: each metrics.jsonl line is
    strict JSON, the NaN records keep every key of a finite record with ``null`` values, and
    stopped.json, environment.json and the checkpoint's state (``best_validation_loss``
    infinite before any validation) are strict too; the run resumes from that checkpoint."""
    cfg = _config(tmp_path, tiny_wavlm_dir, "run", max_steps=6, save_every=100,
                  max_nonfinite_in_a_row=3)
    _poison_losses_from(monkeypatch, 2)  # from the third step on, every loss is NaN
    with pytest.raises(NonFiniteTrainingError):
        train(cfg)
    run_dir = tmp_path / "run"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [_strict(line) for line in lines]  # a bare NaN would raise here
    assert [(r["step"], r["split"]) for r in records] == [(s, "train") for s in (1, 2, 3, 4)]
    finite, bad = records[0], records[2:]
    terms = [k for k in finite if k == "loss" or "/" in k]
    assert "layerwise/layer1" in terms and "enhancement/l1" in terms
    for record in bad:
        assert record.keys() == finite.keys()  # the non-finite terms are still named
        assert all(record[k] is None for k in [*terms, "grad_norm"]), record
        assert record["lr"] > 0 and record["audio_seconds"] > 0  # finite values stay
    assert all(finite[k] is not None and math.isfinite(finite[k]) for k in terms)
    read = read_records(run_dir / "metrics.jsonl")  # the library's reader: null is NaN
    assert math.isnan(read[2]["loss"]) and read[0]["loss"] == finite["loss"]
    stopped = _strict((run_dir / "stopped.json").read_text())
    assert (stopped["step"], stopped["nonfinite_in_a_row"]) == (5, 3)
    _strict((run_dir / "environment.json").read_text())
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    state = _strict((checkpoint / TRAINING_STATE).read_text())
    assert state["progress"]["best_validation_loss"] is None  # infinite: no validation yet
    monkeypatch.undo()
    train(_config(tmp_path, tiny_wavlm_dir, "run", max_steps=6, save_every=100,
                  resume_from="latest"))
    final = _strict((run_dir / "final_state.json").read_text())
    assert final["step"] == 6 and final["skipped_updates"] == 3
    assert math.isfinite(final["best_validation_loss"])  # the validation at step 6
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        _strict(line)


def test_training_progress_reads_a_null_best_validation_loss_as_infinite():
    """A checkpoint's ``best_validation_loss`` before any validation: ``null`` now,
    ``Infinity`` in a checkpoint written before strict JSON; both are math.inf."""
    for text in ('{"step": 4, "best_validation_loss": null}',
                 '{"step": 4, "best_validation_loss": Infinity}'):
        progress = TrainingProgress()
        progress.load_state_dict(json.loads(text))
        assert progress.step == 4 and progress.best_validation_loss == math.inf
        assert min(progress.best_validation_loss, 2.5) == 2.5
    progress.load_state_dict({"best_validation_loss": 1.25})
    assert progress.best_validation_loss == 1.25


def test_metrics_records_read_null_and_a_legacy_bare_nan_alike(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 3, "split": "train", "loss": NaN, "grad_norm": Infinity}\n'
                    '\n'
                    '{"step": 4, "split": "train", "loss": null, "grad_norm": null}\n'
                    '{"step": 5, "split": "validation", "loss": 1.5, "unscored": {"stoi": 2}}\n')
    old, new, valid = read_records(path)
    assert math.isnan(old["loss"]) and old["grad_norm"] == math.inf
    assert math.isnan(new["loss"]) and math.isnan(new["grad_norm"])
    assert valid == {"step": 5, "split": "validation", "loss": 1.5, "unscored": {"stoi": 2}}
    path.write_text('{"step": 1}\n{"step": 2, "lo\n')  # cut by a kill
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not JSON"):
        read_records(path)


def _se_entry(pesq):
    scores = {"si_sdr": 5.0, "si_sdr_i": 1.0, "pesq": pesq, "pesq_i": pesq, "stoi": 0.8,
              "stoi_i": 0.1, "n": 2, "unscored": {"pesq": 2, "pesq_i": 2}}
    return {"parameters": 1, "test_set_sha1": "aaaa", "results": {"0": scores}}


def test_se_table_merge_reads_null_scores_as_nan_and_legacy_nan_too(tmp_path):
    """Seed 0's PESQ is ``null`` (strict), seed 1's a bare ``NaN`` (an older file): both are
    unscored, the table shows n/a for PESQ and the other columns' means, and the merged
    results.json is strict (before: ``math.isnan(None)`` raised a TypeError)."""
    from robustdistill.se.table import main

    folders = []
    for seed, text in ((0, strict_dumps({"mixture_63x_s0": _se_entry(float("nan"))})),
                       (1, json.dumps({"mixture_63x_s1": _se_entry(float("nan"))}))):
        folder = tmp_path / str(seed)
        folder.mkdir()
        (folder / "results.json").write_text(text)
        folders.append(str(folder))
    assert "null" in (tmp_path / "0" / "results.json").read_text()
    assert "NaN" in (tmp_path / "1" / "results.json").read_text()
    assert main(["--merge", *folders, "--out", str(tmp_path / "m"), "--methods", "mixture",
                 "--sizes", "63"]) == 0
    table = (tmp_path / "m" / "table.md").read_text()
    assert "| mixture 63x | 1 | 2 | 5.00 ± 0.00 | 1.00 ± 0.00 | n/a | n/a | 0.800 ± 0.000 |" \
        in table
    merged = _strict((tmp_path / "m" / "results.json").read_text())
    assert merged["mixture_63x_s1"]["results"]["0"]["pesq"] is None
    assert merged["mixture_63x_s0"]["results"]["0"]["si_sdr"] == 5.0


def test_speaker_files_read_null_as_nan_and_legacy_nan_too(tmp_path):
    """``result.json``'s EER, a mid-epoch checkpoint's loss sums and ``metrics.jsonl``'s epoch
    records: ``null`` (strict) and a bare ``NaN`` (older) read alike; the log is rewritten
    strict."""
    from robustdistill.publish.provenance import evaluated_sets, read_run_result
    from robustdistill.speaker.run_folder import EPOCH_PROGRESS, epoch_progress, logged_epochs

    for text in ('{"eval": {"fsdd": {"eer": null, "min_dcf": 0.5, "target_trials": 4}}}',
                 '{"eval": {"fsdd": {"eer": NaN, "min_dcf": 0.5, "target_trials": 4}}}'):
        (tmp_path / "result.json").write_text(text)
        result = read_run_result(tmp_path)
        assert math.isnan(result["eval"]["fsdd"]["eer"]) and evaluated_sets(result) == ["fsdd"]
        assert result["eval"]["fsdd"]["target_trials"] == 4
    checkpoint = tmp_path / "epoch_0_batch_2"
    checkpoint.mkdir()
    for text in ('{"batches": 2, "sums": {"ce": null, "instance": 0.5}, "ig_gaps": [null]}',
                 '{"batches": 2, "sums": {"ce": NaN, "instance": 0.5}, "ig_gaps": [NaN]}'):
        (checkpoint / EPOCH_PROGRESS).write_text(text)
        progress = epoch_progress(checkpoint)
        assert math.isnan(progress["sums"]["ce"]) and progress["sums"]["instance"] == 0.5
        assert math.isnan(progress["ig_gaps"][0]) and progress["batches"] == 2
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"epoch": 1, "ig_relative_gap": NaN}\n{"epoch": 2, "ig_relative_gap": null}\n'
                   '{"epoch": 3, "ig_relative_gap": 0.1}\n')
    kept = logged_epochs(log, 2)
    assert [r["epoch"] for r in kept] == [1, 2] and all(math.isnan(r["ig_relative_gap"])
                                                       for r in kept)
    assert [_strict(line) for line in log.read_text().splitlines()] == [
        {"epoch": 1, "ig_relative_gap": None}, {"epoch": 2, "ig_relative_gap": None}]


def test_a_speaker_run_with_an_infinite_setting_resumes_and_the_table_reuses_it(tiny, tmp_path):
    """``training.max_grad_norm: .inf`` (no clipping; the config allows it) is ``null`` in the
    checkpoint's strict ``speaker_run.json`` and in ``result.json``'s config: a resume is no
    change of settings and ends as the uninterrupted run, and the table reuses the finished
    run (before: "training.max_grad_norm None -> inf", resume refused; the table retrained)."""
    from conftest import speaker_kd_config
    from safetensors.torch import load_file

    from robustdistill.run_settings import config_changes
    from robustdistill.speaker.table import finished_run
    from robustdistill.speaker.train import train_system

    def config(out, resume=False):
        cfg = speaker_kd_config(tmp_path, out, 2, resume, method="none")
        cfg.training.max_grad_norm = math.inf
        return cfg

    teacher, crops = tiny
    straight = train_system(config("a"), teacher, crops)
    train_system(config("b"), teacher, crops, stop_after_epochs=1)
    settings = _strict((tmp_path / "b" / "checkpoints" / "epoch_1" / "speaker_run.json")
                       .read_text())
    assert settings["training.max_grad_norm"] is None
    resumed = train_system(config("b", resume=True), teacher, crops)
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in straight["epochs"]]
    a = load_file(tmp_path / "a" / "checkpoints" / "epoch_2" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "epoch_2" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    result = _strict((tmp_path / "a" / "result.json").read_text())
    assert result["config"]["training"]["max_grad_norm"] is None
    # as an evaluated run's (the tiny run was given no sets; its config names the default two)
    result["eval"] = {"test_other": {"eer": 0.2, "min_dcf": 0.4},
                      "fsdd": {"eer": 0.25, "min_dcf": 0.5}}
    (tmp_path / "a" / "result.json").write_text(strict_dumps(result))
    reused = finished_run(config("a"))
    assert reused is not None and reused["epochs"] == straight["epochs"]
    assert reused["eval"] == result["eval"]
    # a real change is still one: a finite clip against the infinite one
    assert config_changes({"training.max_grad_norm": None}, {"training.max_grad_norm": 5.0}) \
        == ["training.max_grad_norm None -> 5.0"]
    assert config_changes({"x": None, "y": [1.0, None]}, {"x": math.inf, "y": [1.0, -math.inf]}) \
        == []


def test_the_card_leaves_out_a_stop_the_run_was_resumed_past(tmp_path, tiny_wavlm_dir,
                                                            monkeypatch, die_at_checkpoint):
    """Stopped at step 5 by 3 NaN steps, resumed without them and killed while saving step 8
    (a SIGTERM or a kill writes no outcome file): ``stopped.json`` still says step 5, but the
    run went on to step 6. The card of the step-6 checkpoint is "step 6 of the 10-step run",
    and without a step it says no stop (before: "the checkpoint at step 6; the run stopped at
    step 5 ...", "trained for only 5 steps"); that of the step-5 checkpoint still says the
    stop, true of its weights, and that it was trained for only 2 steps (steps 3-5 skipped)."""
    from types import SimpleNamespace

    from robustdistill.publish.card import _limitations
    from robustdistill.publish.card_training import run_view
    from robustdistill.publish.provenance import summarise_run

    student = SimpleNamespace(receptive_field=None)
    settings = dict(max_steps=10, save_every=2, eval_every=100, max_nonfinite_in_a_row=3)
    _poison_losses_from(monkeypatch, 2, 4)  # steps 3, 4 and 5
    with pytest.raises(NonFiniteTrainingError):
        train(_config(tmp_path, tiny_wavlm_dir, "run", **settings))
    monkeypatch.undo()
    run_dir = tmp_path / "run"
    stop = ("the run stopped at step 5 of its 10 configured steps (3 optimizer steps in a row "
            "had a NaN/Inf loss or gradient; their updates were skipped)")
    at_stop = (f"these weights are the checkpoint at step 5, which holds the weights of step 2; "
               f"{stop}")
    assert run_view(summarise_run(run_dir), None)["result"] == (
        f"{stop}; its last checkpoint holds the weights of step 2")
    assert run_view(summarise_run(run_dir, step=5), None)["result"] == at_stop
    only = ("It was trained for only 2 steps (a CPU-sized run; steps 3-5 were skipped for a "
            "NaN/Inf loss or gradient, and the run stopped at step 5); the papers' recipes")
    for step in (None, 5):  # before: "trained for only 5 steps", the skipped ones counted
        (line,) = [item for item in _limitations(summarise_run(run_dir, step=step), [],
                                                 student, []) if "trained for only" in item]
        assert line.startswith(only)
    die_at_checkpoint(2)  # the resumed run's checkpoints: step 6 saved, step 8 killed
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, tiny_wavlm_dir, "run", resume_from="latest", **settings))
    assert _strict((run_dir / "stopped.json").read_text())["step"] == 5  # still there
    summary = summarise_run(run_dir, step=6)
    assert summary.stopped == {}
    assert run_view(summary, None)["result"] == (
        "these weights are the checkpoint at step 6 of the 10-step run")
    assert run_view(summarise_run(run_dir), None)["result"] == "no final state recorded"
    assert run_view(summarise_run(run_dir, step=5), None)["result"] == at_stop  # still true


def test_the_evidence_report_reads_a_null_validation_loss_as_nan(tmp_path):
    """``scripts/evidence_report.py``'s validation curve from a ``metrics.jsonl`` whose NaN
    validation loss is ``null`` (before: ``None`` reached ``f"{v:.4f}"``, a TypeError) or a
    bare ``NaN`` (older log)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "evidence_report.py"
    spec = importlib.util.spec_from_file_location("evidence_report", path)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    for nan in ("null", "NaN"):
        (tmp_path / "metrics.jsonl").write_text(
            '{"step": 0, "split": "validation", "loss": 1.5, "layerwise/l2": 0.5}\n'
            '{"step": 3, "split": "train", "loss": 1.0}\n'
            f'{{"step": 4, "split": "validation", "loss": {nan}, "layerwise/l2": {nan}}}\n')
        steps, losses, parts = report.validation_curve(tmp_path)
        assert steps == [0, 4] and losses[0] == 1.5 and math.isnan(losses[1])
        assert parts["layerwise/l2"][0] == 0.5 and math.isnan(parts["layerwise/l2"][1])
        assert ", ".join(f"{s}: {v:.4f}" for s, v in zip(steps, losses, strict=True)) == (
            "0: 1.5000, 4: nan")
