"""Paired comparisons on the items both upstreams scored (a NaN PESQ on one side leaves the
utterance out of both), and report rows labelled as results.md labels them."""

from __future__ import annotations

import json
import logging
import math
import re

import pytest

from downstream.compare import compare
from downstream.entries import upstream_labels
from downstream.items import write_items
from downstream.paired import jointly_scored, paired_comparisons
from downstream.report import report
from downstream.table import results_table

NAN = float("nan")


def _se_records(pesq, si_sdr=None):
    """SE-like per-utterance records ``u0, u1...`` with the given PESQ (NaN: failed)."""
    si_sdr = si_sdr or [5.0] * len(pesq)
    return [{"key": f"u{i}", "pesq": p, "si_sdr": s, "stoi": 0.8}
            for i, (p, s) in enumerate(zip(pesq, si_sdr, strict=True))]


def _se_result(tmp_path, name, per_condition, upstream=None, seeds=None):
    """A one-seed (``per_condition[cond]``: records) or multi-seed (``per_condition[cond]``:
    one record list per seed) SE result, its items written to ``tmp_path/name``."""
    folder = tmp_path / name
    metrics = {}
    for cond, records in per_condition.items():
        groups = records if seeds else [records]
        for k, group in enumerate(groups):
            items = folder / (f"s{seeds[k]}" if seeds else ".") / "items"
            items.mkdir(parents=True, exist_ok=True)
            write_items(items / f"{cond}.jsonl", group)
        finite = [r["pesq"] for g in groups for r in g if math.isfinite(r["pesq"])]
        metrics[cond] = {"pesq": sum(finite) / len(finite) if finite else NAN}
    result = {"task": "speech_enhancement", "upstream": upstream or f"/models/{name}",
              "primary_metric": "pesq", "higher_is_better": True, "item_unit": "utterance",
              "conditions": list(per_condition), "metrics": metrics, "source_dir": str(folder),
              "test_set_sha1": "same"}
    if seeds:
        result.update({"seed": seeds, "seeds": seeds, "seed_dirs": [f"s{s}" for s in seeds]})
    else:
        result["seed"] = 0
    return result


def test_a_pesq_failure_on_one_side_leaves_the_utterance_out_of_both():
    # a failed (NaN) on u2. Jointly scored: u0, u1, u3, u4 with a - b = 1.0, 0.5, 0.5, 0.5.
    # The old, unpaired means compared a over 4 utterances with b over 5:
    # 2.25 - 2.1 = 0.15.
    a = _se_records([2.0, 3.0, NAN, 1.5, 2.5])
    b = _se_records([1.0, 2.5, 4.0, 1.0, 2.0])
    ja, jb, excluded = jointly_scored([a], [b], "pesq")
    assert excluded == 1
    assert [r["key"] for r in ja[0]] == [r["key"] for r in jb[0]] == ["u0", "u1", "u3", "u4"]


def test_paired_difference_is_the_mean_over_jointly_scored_items(tmp_path):
    a = _se_result(tmp_path, "a", {"clean": _se_records([2.0, 3.0, 1.0]),
                                   "snr0": _se_records([2.0, 3.0, NAN, 1.5, 2.5])})
    b = _se_result(tmp_path, "b", {"clean": _se_records([1.0, 2.0, 1.0]),
                                   "snr0": _se_records([1.0, 2.5, 4.0, 1.0, 2.0])})
    rows, notes = paired_comparisons([a, b], resamples=200)
    by_cond = {r["condition"]: r for r in rows}
    snr0 = by_cond["snr0"]
    assert snr0["difference"] == pytest.approx(0.625)  # mean of 1.0, 0.5, 0.5, 0.5
    assert snr0["excluded_items"] == 1
    # every resample draws from the jointly scored items only: each paired difference lies
    # in [0.5, 1.0] (with u2 in B's resamples alone it could fall to about -0.5)
    assert 0.5 - 1e-12 <= snr0["low"] <= snr0["high"] <= 1.0 + 1e-12
    assert snr0["significant"] is True and snr0["p_value"] == 0.0
    # a condition where both scored everything: nothing left out, plain difference of means
    assert by_cond["clean"]["excluded_items"] == 0
    assert by_cond["clean"]["difference"] == pytest.approx(2.0 - 4.0 / 3.0)
    assert notes == ["a vs b: pesq compared on the test utterances both scored only; left "
                     "out, as one or both could not score them: snr0 1 of 5"]
    # the unpaired per-upstream values (results table) still average each upstream alone
    assert a["metrics"]["snr0"]["pesq"] == pytest.approx(2.25)


def test_items_neither_scored_and_other_metrics_nan(tmp_path):
    # u1 failed for both (left out, counted); u3's SI-SDR is NaN for a but PESQ is the
    # compared (primary) metric, so u3 stays.
    a = _se_result(tmp_path, "a", {"snr0": _se_records([2.0, NAN, 3.0, 1.0],
                                                       [1.0, 1.0, 1.0, NAN])})
    b = _se_result(tmp_path, "b", {"snr0": _se_records([1.0, NAN, 1.0, 1.0])})
    (row,), _ = paired_comparisons([a, b], resamples=20)
    assert row["excluded_items"] == 1
    assert row["difference"] == pytest.approx((1.0 + 2.0 + 0.0) / 3)


def test_multi_seed_pairs_within_each_seed_and_sums_left_out_items(tmp_path):
    # seed 0: a fails u1 -> a - b over u0, u2: 1, 2 (mean 1.5); seed 1: b fails u0 -> u1
    # only: 1. The multi-seed difference is the mean over seeds: 1.25 (2 items left out).
    a = _se_result(tmp_path, "a", {"clean": [_se_records([1.0, NAN, 3.0]),
                                             _se_records([2.0, 2.0])]}, seeds=[0, 1])
    b = _se_result(tmp_path, "b", {"clean": [_se_records([0.0, 1.0, 1.0]),
                                             _se_records([NAN, 1.0])]}, seeds=[0, 1])
    (row,), notes = paired_comparisons([a, b], resamples=50)
    assert row["difference"] == pytest.approx(1.25)
    assert row["excluded_items"] == 2
    assert "clean 2 of 5 (seed x item records, summed over seeds)" in notes[0]


def test_no_jointly_scored_item_gives_an_undefined_difference(tmp_path):
    a = _se_result(tmp_path, "a", {"clean": _se_records([2.0, 3.0]),
                                   "snr0": _se_records([NAN, 3.0])})
    b = _se_result(tmp_path, "b", {"clean": _se_records([1.0, 2.0]),
                                   "snr0": _se_records([1.0, NAN])})
    rows, notes = paired_comparisons([a, b], resamples=20)
    by_cond = {r["condition"]: r for r in rows}
    assert by_cond["clean"]["difference"] == pytest.approx(1.0)
    snr0 = by_cond["snr0"]
    assert snr0["excluded_items"] == 2 and snr0["significant"] is False
    assert all(math.isnan(snr0[k]) for k in ("difference", "low", "high", "p_value"))
    assert notes[-1].endswith("snr0 2 of 2")


@pytest.mark.parametrize("records, metric", [
    ([{"key": "u0", "target": "a", "prediction": "a", "correct": 1}], "accuracy"),
    ([{"key": "u0", "target": "a", "prediction": "b", "correct": 0}], "macro_accuracy"),
    ([{"enroll": "e", "test": "t", "label": 1, "score": NAN}], "eer"),
    ([{"key": "u0", "reference": "a b", "hypothesis": "a", "word_errors": 1, "words": 2,
       "char_errors": 2, "chars": 3}], "wer"),
])
def test_tasks_without_per_item_metric_values_leave_nothing_out(records, metric):
    ja, jb, excluded = jointly_scored([records], [records], metric)
    assert excluded == 0 and ja == [records] and jb == [records]


def test_results_md_and_report_say_how_many_items_were_left_out(tmp_path):
    paths = []
    for name, pesq in (("a", [2.0, 3.0, NAN, 1.5, 2.5]), ("b", [1.0, 2.5, 4.0, 1.0, 2.0])):
        result = _se_result(tmp_path, name, {"snr0": _se_records(pesq)})
        (tmp_path / name / "results.json").write_text(json.dumps(result, allow_nan=True))
        paths.append(tmp_path / name / "results.json")
    compare(paths, tmp_path / "cmp", resamples=50)
    data = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert data["comparisons"][0]["excluded_items"] == 1
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "| items left out |" in md and "| +0.6250 [" in md
    assert "| a | b | snr0 | +0.6250 [" in md and " | 1 | yes |" in md
    assert "snr0 1 of 5" in md
    text = report(tmp_path / "cmp" / "results.json", digits=3)
    assert re.search(r"\| a - b \| \+0\.625 \[\+0\.\d+, \+[01]\.\d+\]\* \(1 left out\) \|", text)
    assert 'Note: "(n left out)"' in text


def test_report_without_left_out_items_is_unchanged(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({
        "results": [{"upstream": "t", "primary_metric": "pesq", "conditions": ["c"],
                     "metrics": {"c": {"pesq": 2.0}}},
                    {"upstream": "s", "primary_metric": "pesq", "conditions": ["c"],
                     "metrics": {"c": {"pesq": 1.0}}}],
        "comparisons": [{"a": "t", "b": "s", "condition": "c", "difference": 1.0, "low": 0.5,
                         "high": 1.5, "significant": True, "excluded_items": 0}]}))
    text = report(path)
    assert "| t - s | +1.0 [+0.5, +1.5]* |" in text and "left out" not in text


# ----------------------------------------------------------------------------- report labels
def _minimal(upstream, value):
    return {"upstream": upstream, "primary_metric": "accuracy", "conditions": ["clean"],
            "metrics": {"clean": {"accuracy": value}}}


def _write(tmp_path, results, comparisons=()):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": results, "comparisons": list(comparisons)}))
    return path


def test_report_tells_apart_upstreams_with_the_same_folder_name(tmp_path):
    results = [_minimal("runs/a/student", 0.9), _minimal("runs/b/student", 0.8),
               _minimal("fbank", 0.5), _minimal("fbank", 0.4), _minimal("/m/teacher", 0.95)]
    labels = upstream_labels(results)
    assert labels == ["runs/a/student", "runs/b/student", "fbank #3", "fbank #4", "teacher"]
    row = {"a": labels[0], "b": labels[1], "condition": "clean", "difference": 0.1,
           "low": 0.05, "high": 0.15, "significant": True}
    lines = report(_write(tmp_path, results, [row]), scale=100).splitlines()
    assert "| runs/a/student | 90.0 |" in lines and "| runs/b/student | 80.0 |" in lines
    assert "| fbank #3 | 50.0 |" in lines and "| fbank #4 | 40.0 |" in lines
    assert "| teacher | 95.0 |" in lines
    assert "| runs/a/student - runs/b/student | +10.0 [+5.0, +15.0]* |" in lines
    # the same labels as results.md
    table = results_table([dict(r, task="t", higher_is_better=True) for r in results])
    for label in labels:
        assert f"| {label} |" in table


def test_report_names_match_labels_paths_and_unambiguous_folder_names(tmp_path, caplog):
    results = [_minimal("runs/a/student", 0.9), _minimal("runs/b/student", 0.8),
               _minimal("/m/whisper-tiny.en", 0.95)]
    row = {"a": "runs/a/student", "b": "whisper-tiny.en", "condition": "clean",
           "difference": -0.05, "low": -0.1, "high": 0.0, "significant": False}
    path = _write(tmp_path, results, [row])
    text = report(path, scale=100, names={"runs/a/student": "A", "whisper-tiny.en": "teacher"})
    assert "| A | 90.0 |" in text and "| runs/b/student | 80.0 |" in text
    assert "| teacher | 95.0 |" in text  # an unambiguous folder name (as before)
    assert "| A - teacher |" in text
    # the full upstream path works for a unique folder name too
    assert "| T | 95.0 |" in report(path, scale=100, names={"/m/whisper-tiny.en": "T"})
    # a folder name two upstreams share renames neither (it used to rename both alike)
    with caplog.at_level(logging.WARNING, logger="downstream.entries"):
        text = report(path, scale=100, names={"student": "S"})
    assert "| S |" not in text and "| runs/a/student | 90.0 |" in text
    assert "2 upstreams have the folder name 'student'" in caplog.text
    assert "match no upstream" not in caplog.text  # warned once, as a shared folder name
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="downstream.entries"):
        report(path, scale=100, names={"runs/a/studnet": "A", "whisper-tiny.en": "T"})
    assert "names ['runs/a/studnet'] match no upstream" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="downstream.entries"):  # two keys, one row
        text = report(path, scale=100, names={"whisper-tiny.en": "T", "/m/whisper-tiny.en": "U"})
    assert "| T | 95.0 |" in text and "match no upstream" not in caplog.text
