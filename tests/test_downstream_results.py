"""Mutation-testing additions for downstream.results / downstream.report: paired comparisons
on hand-made per-item records (direction, significance, pairing by item), multi-seed
intervals, and the report's per-condition cells."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from downstream.intervals import item_intervals
from downstream.items import write_items
from downstream.paired import paired_comparisons
from downstream.report import report
from downstream.tasks.utterance_classification.task import UtteranceClassification


def _result(tmp_path, name, task, metric, per_condition, higher=True):
    """A results dict whose per-item records ``per_condition[cond]`` are written to disk."""
    folder = tmp_path / name
    (folder / "items").mkdir(parents=True)
    metrics = {}
    for cond, items in per_condition.items():
        write_items(folder / "items" / f"{cond}.jsonl", items)
        value = np.mean([r["correct"] for r in items]) if "correct" in items[0] else 0.0
        metrics[cond] = {metric: float(value)}
    return {"task": task, "upstream": f"/models/{name}", "primary_metric": metric,
            "higher_is_better": higher, "conditions": list(per_condition), "metrics": metrics,
            "source_dir": str(folder), "test_set_sha1": "same"}


def _uc_items(correct, keys=None):
    keys = keys or [f"u{i}" for i in range(len(correct))]
    return [{"key": k, "target": "a", "prediction": "a" if c else "b", "correct": int(c)}
            for k, c in zip(keys, correct, strict=True)]


def test_paired_comparison_direction_significance_and_mcnemar(tmp_path):
    # a is right on all 10 items; b only on the first 2 (also right for a). Every resample has
    # acc(a) - acc(b) >= 0, and it is 0 only if all 10 draws hit the first 2 items.
    a = _result(tmp_path, "a", "utterance_classification", "accuracy",
                {"clean": _uc_items([1] * 10)})
    b = _result(tmp_path, "b", "utterance_classification", "accuracy",
                {"clean": _uc_items([1, 1] + [0] * 8)})
    c = _result(tmp_path, "c", "utterance_classification", "accuracy",
                {"clean": _uc_items([1, 1] + [0] * 8)})
    rows, notes = paired_comparisons([a, b, c], resamples=200)
    assert notes == []
    by_pair = {(r["a"], r["b"]): r for r in rows}
    ab = by_pair[("a", "b")]
    assert ab["difference"] == pytest.approx(0.8)  # metric(a) - metric(b)
    assert 0 < ab["low"] <= ab["high"] <= 1.0
    assert ab["significant"] is True
    # exact McNemar: 8 items right only for a, none only for b: p = 2 / 2**8
    assert (ab["a_only"], ab["b_only"]) == (8, 0)
    assert ab["mcnemar_p"] == pytest.approx(2 / 2**8)
    bc = by_pair[("b", "c")]  # identical records: difference 0, not significant
    assert bc["difference"] == 0 and bc["significant"] is False and bc["p_value"] == 1.0
    ca = paired_comparisons([c, a], resamples=50)[0][0]
    assert ca["difference"] == pytest.approx(-0.8) and ca["high"] < 0 and ca["significant"]


def test_records_in_another_order_are_not_paired(tmp_path):
    keys = [f"u{i}" for i in range(4)]
    a = _result(tmp_path, "a", "utterance_classification", "accuracy",
                {"clean": _uc_items([1, 0, 1, 0], keys)})
    b = _result(tmp_path, "b", "utterance_classification", "accuracy",
                {"clean": _uc_items([1, 0, 1, 0], keys[::-1])})
    rows, notes = paired_comparisons([a, b], resamples=20)
    assert rows == []
    assert len(notes) == 1 and "different items" in notes[0]


def test_speaker_trials_are_paired_by_enroll_and_test(tmp_path):
    def trials(tests):
        return [{"enroll": "e1", "test": t, "label": lab, "score": s}
                for t, lab, s in zip(tests, [1, 0, 0], [0.9, 0.1, 0.2], strict=True)]

    a = _result(tmp_path, "a", "speaker_verification", "eer", {"clean": trials(["t1", "t2", "t3"])},
                higher=False)
    b = _result(tmp_path, "b", "speaker_verification", "eer", {"clean": trials(["t1", "t4", "t5"])},
                higher=False)
    rows, notes = paired_comparisons([a, b], resamples=20)
    assert rows == [] and "different items" in notes[0]  # same enroll keys, other test keys
    same = _result(tmp_path, "c", "speaker_verification", "eer",
                   {"clean": trials(["t1", "t2", "t3"])}, higher=False)
    rows, notes = paired_comparisons([a, same], resamples=20)
    assert notes == [] and len(rows) == 1 and rows[0]["difference"] == 0.0


def test_multi_seed_intervals_average_the_seeds(tmp_path, caplog):
    # seed 0: all right (accuracy 1), seed 1: all wrong (0). The run's metric is the mean over
    # seeds, 0.5, and every stratified resample also gives exactly 0.5.
    groups = [_uc_items([1] * 4), _uc_items([0] * 4)]
    out = item_intervals(UtteranceClassification, groups, {"accuracy": 0.5}, resamples=30)
    assert out == {"accuracy": [pytest.approx(0.5), pytest.approx(0.5)]}
    # a reported value the records do not reproduce gets no interval (and a warning)
    with caplog.at_level(logging.WARNING, logger="downstream.intervals"):
        assert item_intervals(UtteranceClassification, groups, {"accuracy": 0.75},
                              resamples=30) == {}
    assert "reported 0.75" in caplog.text


def test_report_cells_per_condition_and_scaled_std(tmp_path):
    def res(name, clean, snr0):
        return {"upstream": f"/m/{name}", "primary_metric": "accuracy",
                "conditions": ["clean", "snr0"], "seeds": [0, 1],
                "metrics": {"clean": {"accuracy": clean}, "snr0": {"accuracy": snr0}},
                "metrics_std": {"clean": {"accuracy": 0.02}, "snr0": {"accuracy": 0.05}}}

    rows = [{"a": "t", "b": "s", "condition": "clean", "difference": 0.1, "low": 0.05,
             "high": 0.15, "significant": True},
            {"a": "t", "b": "s", "condition": "snr0", "difference": -0.05, "low": -0.2,
             "high": 0.1, "significant": False}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": [res("t", 0.9, 0.6), res("s", 0.8, 0.65)],
                                "comparisons": rows}))
    lines = report(path, scale=100.0, digits=1).splitlines()
    assert "| t | 90.0 ± 2.0 | 60.0 ± 5.0 |" in lines
    assert "| s | 80.0 ± 2.0 | 65.0 ± 5.0 |" in lines
    assert "| t - s | +10.0 [+5.0, +15.0]* | -5.0 [-20.0, +10.0] |" in lines


def _strict_json(text):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_results_json_is_strict_json_and_nan_reads_back_as_nan(tmp_path):
    from downstream.load import load_results
    from downstream.results import write_outputs

    a = _result(tmp_path, "a", "utterance_classification", "accuracy",
                {"clean": _uc_items([1, 0, 1, 0]), "snr0": _uc_items([1, 1, 0, 0])})
    a["metrics"]["snr0"]["accuracy"] = float("nan")
    a["metrics_std"] = {"clean": {"accuracy": np.float32("nan")}}
    a["intervals"] = {"clean": {"accuracy": [float("-inf"), 0.75]}}
    rows = [{"a": "a", "b": "b", "condition": "clean", "metric": "accuracy", "difference": 0.0,
             "low": 0.0, "high": 0.0, "p_value": float("nan"), "significant": False}]
    write_outputs([a], tmp_path / "out", (rows, []))
    text = (tmp_path / "out" / "results.json").read_text()
    stored = _strict_json(text)  # NaN / Infinity would raise here
    assert stored["metrics"]["snr0"]["accuracy"] is None
    assert stored["comparisons"][0]["p_value"] is None
    assert stored["intervals"]["clean"]["accuracy"] == [None, 0.75]
    (loaded,) = load_results(tmp_path / "out" / "results.json")
    assert np.isnan(loaded["metrics"]["snr0"]["accuracy"])
    assert loaded["metrics"]["clean"]["accuracy"] == 0.5
    assert np.isnan(loaded["metrics_std"]["clean"]["accuracy"])
    assert np.isnan(loaded["intervals"]["clean"]["accuracy"][0])
    assert loaded["upstream"] == "/models/a"  # non-numeric fields are not touched


def test_compare_leaves_out_its_own_earlier_output(tmp_path, caplog):
    # `compare runs/kws_*/results.json --out runs/kws_compare`, run twice: the glob now matches
    # the first comparison's results.json, whose upstreams would each appear twice.
    from downstream.compare import compare
    from downstream.results import write_outputs

    for name, correct in (("a", [1, 1, 0, 0]), ("b", [1, 0, 0, 0])):
        result = _result(tmp_path, name, "utterance_classification", "accuracy",
                         {"clean": _uc_items(correct)})
        write_outputs([result], tmp_path / f"kws_{name}")
    inputs = [tmp_path / "kws_a" / "results.json", tmp_path / "kws_b" / "results.json"]
    out = tmp_path / "kws_compare"
    assert len(compare(inputs, out, 20)) == 2
    with caplog.at_level(logging.WARNING, logger="downstream.compare"):
        again = compare([*inputs, out / "results.json"], out, 20)
    assert [r["upstream"] for r in again] == ["/models/a", "/models/b"]
    assert "own output" in caplog.text
    with pytest.raises(ValueError, match="besides the output's own"):
        compare([out / "results.json"], out, 20)


def test_compare_leaves_out_another_comparisons_copies_of_the_runs_given(tmp_path, caplog):
    # `compare runs/kws_*/results.json --out runs/kws_compare` once, then the same glob with
    # another --out: kws_compare/results.json is an input like the evaluations, and every
    # upstream appeared twice (#3, #4 copies of #1, #2), each compared with itself.
    from downstream.compare import compare
    from downstream.load import load_results
    from downstream.results import write_outputs

    for name, correct in (("a", [1, 1, 0, 0]), ("b", [1, 0, 0, 0])):
        result = _result(tmp_path, name, "utterance_classification", "accuracy",
                         {"clean": _uc_items(correct)})
        write_outputs([{**result, "seed": 0}], tmp_path / f"kws_{name}")
    first = tmp_path / "kws_compare"
    compare([tmp_path / "kws_a" / "results.json", tmp_path / "kws_b" / "results.json"], first, 20)
    glob = sorted(tmp_path.glob("kws_*/results.json"))
    assert [p.parent.name for p in glob] == ["kws_a", "kws_b", "kws_compare"]
    with caplog.at_level(logging.WARNING, logger="downstream.compare"):
        again = compare(glob, tmp_path / "elsewhere", 20)
    assert [r["upstream"] for r in again] == ["/models/a", "/models/b"]
    assert f"leaving out {first / 'results.json'}: every result in it is given by" in caplog.text
    stored = json.loads((tmp_path / "elsewhere" / "results.json").read_text())
    assert len(stored["results"]) == 2 and len(stored["comparisons"]) == 1  # a vs b only

    # the evaluation's own file wins over a comparison's (older) copy, whatever the order;
    # a run only the comparison holds stays
    a = load_results(tmp_path / "kws_a" / "results.json")[0]
    write_outputs([{**a, "metrics": {"clean": {"accuracy": 0.75}}}], tmp_path / "kws_a")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="downstream.compare"):
        mixed = compare([first / "results.json", tmp_path / "kws_a" / "results.json"],
                        tmp_path / "mixed", 20)
    assert [(r["upstream"], r["metrics"]["clean"]["accuracy"]) for r in mixed] == \
        [("/models/b", 0.25), ("/models/a", 0.75)]
    assert "leaving out the result of '/models/a' (seed 0" in caplog.text
    assert "its figures differ: an older copy" in caplog.text

    # the same run's results.json under two names (a copy): compared once, with a warning
    copy = tmp_path / "kws_a" / "copy.json"
    copy.write_text((tmp_path / "kws_a" / "results.json").read_text())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="downstream.compare"):
        once = compare([tmp_path / "kws_a" / "results.json", copy], tmp_path / "once", 20)
    assert len(once) == 1 and f"leaving out {copy}" in caplog.text
    # a comparison alone is still compared (read back, e.g. with new intervals)
    assert len(compare([first / "results.json"], tmp_path / "alone", 20)) == 2


def test_report_of_a_compare_with_an_undefined_difference(tmp_path):
    # PESQ failing on every utterance of a condition: the paired difference, its interval and
    # p-value are NaN, stored as null; the report shows "-" where it used to show "nan", and
    # that the comparison left out the 3 utterances neither upstream scored.
    from downstream.compare import compare
    from downstream.results import write_outputs

    paths = []
    for name, pesq in (("a", [2.0, 2.5, 3.0]), ("b", [1.5, 2.0, 2.5])):
        folder = tmp_path / name
        (folder / "items").mkdir(parents=True)
        write_items(folder / "items" / "clean.jsonl",
                    [{"key": f"u{i}", "pesq": v} for i, v in enumerate(pesq)])
        write_items(folder / "items" / "snr-5.jsonl",
                    [{"key": f"u{i}", "pesq": float("nan")} for i in range(3)])
        write_outputs([{"task": "speech_enhancement", "upstream": f"/models/{name}",
                        "primary_metric": "pesq", "higher_is_better": True,
                        "conditions": ["clean", "snr-5"], "test_set_sha1": "same",
                        "metrics": {"clean": {"pesq": float(np.mean(pesq))},
                                    "snr-5": {"pesq": float("nan")}}}], folder)
        paths.append(folder / "results.json")
    compare(paths, tmp_path / "cmp", 20)
    lines = report(tmp_path / "cmp" / "results.json").splitlines()
    assert "| a - b | +0.5 [+0.5, +0.5]* | - [-, -] (3 left out) |" in lines
    assert "| a | 2.5 | - |" in lines


def test_nan_featurizer_weights_read_back_as_nan(tmp_path):
    from downstream.compare import compare
    from downstream.load import load_results
    from downstream.results import write_outputs

    a = _result(tmp_path, "a", "utterance_classification", "accuracy",
                {"clean": _uc_items([1, 0, 1, 0])})
    a["featurizer"] = {"layers": None, "weights": {"0": float("nan"), "1": 0.5}}
    write_outputs([a], tmp_path / "out")
    (loaded,) = load_results(tmp_path / "out" / "results.json")
    assert loaded["featurizer"]["layers"] is None  # a real null stays one
    assert np.isnan(loaded["featurizer"]["weights"]["0"])
    compare([tmp_path / "out" / "results.json"], tmp_path / "cmp", 20)  # the table formats it
    assert "0: nan, 1: 0.500" in (tmp_path / "cmp" / "results.md").read_text()


def _evidence_script():
    """``scripts/evidence_downstream.py`` as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "evidence_downstream.py"
    spec = importlib.util.spec_from_file_location("evidence_downstream", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evidence_script_formats_a_null_metric_as_nan():
    module = _evidence_script()
    assert module.fmt(None) == "nan"  # strict JSON stores NaN as null
    assert module.fmt(None, None, None) == "nan [nan, nan]"
    assert module.fmt(0.5, 0.25, 0.75) == "0.500 [0.250, 0.750]"
    assert module.fmt(12.34) == "12.3"


def _evidence_result(upstream, value):
    """A compare entry as the evidence script reads it: accuracy on ``clean``, two seeds."""
    return {"upstream": upstream, "seeds": [0, 1], "conditions": ["clean"],
            "primary_metric": "accuracy", "higher_is_better": True,
            "metrics": {"clean": {"accuracy": value}},
            "intervals": {"clean": {"accuracy": [value - 0.1, value + 0.1]}}}


def _evidence_comparison(a, b, difference, excluded=0):
    """A significant accuracy row of compare on ``clean`` (interval difference +- 0.1)."""
    return {"metric": "accuracy", "condition": "clean", "significant": True, "a": a, "b": b,
            "difference": difference, "low": difference - 0.1, "high": difference + 0.1,
            "excluded_items": excluded}


def _evidence_table(tmp_path, results, comparisons, names, pairs, notes=None):
    """The evidence script's lines for one task folder holding this compare output."""
    (tmp_path / "kws" / "compare").mkdir(parents=True)
    payload = {"results": results, "comparisons": comparisons}
    if notes is not None:
        payload["comparison_notes"] = notes
    (tmp_path / "kws" / "compare" / "results.json").write_text(json.dumps(payload))
    return _evidence_script().task_table(tmp_path / "kws", names, pairs)


def test_evidence_script_tells_apart_upstreams_with_the_same_folder_name(tmp_path):
    from downstream.entries import upstream_labels

    # two upstreams share the folder name `student` (compare names them by path), the third is
    # `student_init` (named by folder name); the rows' names are compare's own
    results = [_evidence_result("runs/ev/plain/student", 0.6),
               _evidence_result("runs/ev/robust/student", 0.8),
               _evidence_result("runs/ev/robust/student_init", 0.2)]
    plain, robust, init = upstream_labels(results)
    assert plain != robust  # what the script must not merge into one "student"
    comparisons = [_evidence_comparison(robust, init, 0.6),
                   _evidence_comparison(plain, robust, -0.2),
                   _evidence_comparison(plain, init, 0.4)]
    # robust before plain: a mapping by folder name would give both rows one label
    names = {"robust": "runs/ev/robust/student", "plain": "runs/ev/plain/student",
             "random": "runs/ev/robust/student_init"}
    lines = _evidence_table(tmp_path, results, comparisons, names,
                            [("robust", "random"), ("robust", "plain"), ("plain", "random")])
    assert lines[4:7] == ["| robust | 0.800 [0.700, 0.900] |", "| plain | 0.600 [0.500, 0.700] |",
                          "| random | 0.200 [0.100, 0.300] |"]
    assert lines[-1] == ("Significant paired differences (a - b, same test items): "
                         "robust - random, clean: +0.600 [+0.500, +0.700]; "
                         "robust - plain, clean: +0.200 [+0.100, +0.300]; "
                         "plain - random, clean: +0.400 [+0.300, +0.500].")


def test_evidence_script_shows_both_results_of_one_upstream_path(tmp_path):
    from downstream.entries import upstream_labels

    # the same student compared twice (a re-run beside the first run): both rows are shown,
    # numbered as compare numbers them (`PATH #1`, `PATH #2`), not the last one silently
    results = [_evidence_result("runs/ev/plain/student", 0.6),
               _evidence_result("runs/ev/robust/student_init", 0.2),
               _evidence_result("runs/ev/plain/student", 0.7)]
    first, init, second = upstream_labels(results)
    assert (first, second) == ("runs/ev/plain/student #1", "runs/ev/plain/student #3")
    comparisons = [_evidence_comparison(first, init, 0.4), _evidence_comparison(first, second, -0.1),
                   _evidence_comparison(init, second, -0.5)]
    names = {"plain": "runs/ev/plain/student", "random": "runs/ev/robust/student_init"}
    lines = _evidence_table(tmp_path, results, comparisons, names, [("plain", "random")])
    assert lines[4:7] == ["| plain #1 | 0.600 [0.500, 0.700] |",
                          "| plain #3 | 0.700 [0.600, 0.800] |",
                          "| random | 0.200 [0.100, 0.300] |"]
    assert lines[-1] == ("Significant paired differences (a - b, same test items): "
                         "plain #1 - random, clean: +0.400 [+0.300, +0.500]; "
                         "plain #3 - random, clean: +0.500 [+0.400, +0.600].")


def test_evidence_script_shows_items_left_out_and_compares_notes_on_the_pairs(tmp_path):
    results = [_evidence_result("/m/a", 0.8), _evidence_result("/m/b", 0.5),
               _evidence_result("/m/c", 0.4)]
    comparisons = [_evidence_comparison("a", "b", 0.3, excluded=2),
                   _evidence_comparison("a", "c", 0.4),
                   _evidence_comparison("b", "c", 0.1, excluded=5)]
    notes = ["a vs b: accuracy compared on the test items both scored only; left out, as one or "
             "both could not score them: clean 2 of 10",
             "a vs c: compared on seed 1 only, the seeds both ran (a: 0, 1; c: 1)",
             "b vs c: compared on seed 1 only, the seeds both ran (b: 0, 1; c: 1)",
             "b vs c clean: test items differ", "a vs c clean: test items differ"]
    names = {"A": "/m/a", "B": "/m/b", "C": "/m/c"}
    lines = _evidence_table(tmp_path, results, comparisons, names, [("A", "B"), ("C", "A")],
                            notes)
    text = "\n".join(lines)
    assert ("Significant paired differences (a - b, same test items): "
            "A - B, clean: +0.300 [+0.200, +0.400] (2 left out); "
            "C - A, clean: -0.400 [-0.500, -0.300].") in lines
    assert '"(n left out)": the paired difference leaves out the n test items' in text
    # compare's notes on the pairs asked for, as results.md lists them; B - C was not asked for
    assert lines[-5:] == ["Notes of `downstream.cli compare` on these pairs (its names: A = a, "
                          "B = b, C = c):", "", f"- {notes[0]}", f"- {notes[1]}", f"- {notes[4]}"]
    # no excluded items and no notes (or an output written before they existed): as before
    plain = _evidence_table(tmp_path / "old", results,
                            [{k: v for k, v in c.items() if k != "excluded_items"}
                             for c in comparisons], names, [("A", "B")])
    assert plain[-1].endswith("A - B, clean: +0.300 [+0.200, +0.400].")
    assert "left out" not in "\n".join(plain) and "Notes" not in "\n".join(plain)


def test_evidence_script_reads_compares_real_notes(tmp_path):
    from downstream.seeds import aggregate_seeds

    # a: seeds 0-2, right on all 4 items of seed 1; b: seed 1 alone, all wrong; c: seed 5 alone
    a = aggregate_seeds([_seed_run(tmp_path, "a", s, c) for s, c in
                         ((0, [0] * 4), (1, [1] * 4), (2, [0] * 4))],
                        [tmp_path / "a" / f"seed{s}" for s in (0, 1, 2)], resamples=10)
    b, c = (aggregate_seeds([_seed_run(tmp_path, name, s, [0] * 4)],
                            [tmp_path / name / f"seed{s}"], resamples=10)
            for name, s in (("b", 1), ("c", 5)))
    rows, notes = paired_comparisons([a, b, c], resamples=20)
    lines = _evidence_table(tmp_path, [a, b, c], rows, {"a": "/models/a", "b": "/models/b"},
                            [("b", "a")], notes)
    assert lines[-5].endswith(": b - a, clean: -1.000 [-1.000, -1.000].")
    assert lines[-3] == "Notes of `downstream.cli compare` on these pairs:"
    assert lines[-1] == "- a vs b: compared on seed 1 only, the seeds both ran (a: 0, 1, 2; b: 1)"
    assert sum(line.startswith("- ") for line in lines) == 1  # not a vs c nor b vs c


def test_evidence_script_gives_compares_note_when_it_tested_no_pair(tmp_path):
    """compare skipped the pair (different test sets): no row, the note says why. Before, the
    script blamed the metric ("pairs the primary metric only") and left the note out."""
    from downstream.seeds import aggregate_seeds

    a, b = (aggregate_seeds([_seed_run(tmp_path, name, s, [0] * 4)],
                            [tmp_path / name / f"seed{s}"], resamples=10)
            for name, s in (("a", 0), ("b", 5)))
    rows, notes = paired_comparisons([a, b], resamples=20)
    assert rows == [] and len(notes) == 1
    lines = _evidence_table(tmp_path, [a, b], rows, {"a": "/models/a", "b": "/models/b"},
                            [("a", "b")], notes)
    assert "primary metric only" not in "\n".join(lines)
    assert lines[-6:] == ["", "No paired difference was computed for these pairs.", "",
                          "Notes of `downstream.cli compare` on these pairs:", "",
                          f"- {notes[0]}"]
    # a pair compare tested without a significant difference is still "none"
    (tmp_path / "kws").rename(tmp_path / "kws_1")
    insignificant = [{**_evidence_comparison("a", "b", 0.0), "significant": False}]
    lines = _evidence_table(tmp_path, [_evidence_result("/m/a", 0.5),
                                       _evidence_result("/m/b", 0.5)],
                            insignificant, {"A": "/m/a", "B": "/m/b"}, [("A", "B")])
    assert lines[-1] == "Significant paired differences (a - b, same test items): none."


def test_evidence_script_lists_a_pair_of_one_upstreams_results_once(tmp_path):
    from downstream.entries import upstream_labels

    results = [_evidence_result("runs/ev/plain/student", 0.6),
               _evidence_result("runs/ev/plain/student", 0.7)]
    first, second = upstream_labels(results)
    lines = _evidence_table(tmp_path, results, [_evidence_comparison(first, second, -0.1)],
                            {"plain": "runs/ev/plain/student"}, [("plain", "plain")])
    assert lines[-1] == ("Significant paired differences (a - b, same test items): "
                         "plain #1 - plain #2, clean: -0.100 [-0.200, +0.000].")


def _seed_run(tmp_path, name, seed, correct, test_set=None):
    """One single-seed run on disk (items + the fields aggregate_seeds reads); its test-set hash
    depends on the seed, as the runner's does."""
    r = _result(tmp_path, f"{name}/seed{seed}", "utterance_classification", "accuracy",
                {"clean": _uc_items(correct)})
    r.update(seed=seed, label="kws", upstream=f"/models/{name}",
             test_set_sha1=test_set or f"test-set-of-seed-{seed}",
             featurizer={"weights": {"0": 1.0}}, timing={"total_s": 1.0})
    return r


def test_different_seed_sets_are_compared_on_the_shared_seeds(tmp_path):
    from downstream.seeds import aggregate_seeds

    # a: three seeds, each right on items 0-3 of 4 only for seed 1; b: seed 1 alone, all wrong.
    runs = [_seed_run(tmp_path, "a", s, c) for s, c in
            ((0, [0, 0, 0, 0]), (1, [1, 1, 1, 1]), (2, [0, 0, 0, 0]))]
    a = aggregate_seeds(runs, [tmp_path / "a" / f"seed{s}" for s in (0, 1, 2)], resamples=10)
    assert a["per_seed_test_set_sha1"] == {str(s): f"test-set-of-seed-{s}" for s in (0, 1, 2)}
    b = _seed_run(tmp_path, "b", 1, [0, 0, 0, 0])
    rows, notes = paired_comparisons([a, b], resamples=20)
    # on seed 1 alone a is right on all 4 items and b on none (over all of a's seeds: 1 / 3)
    assert len(rows) == 1 and rows[0]["seeds"] == [1]
    assert rows[0]["difference"] == pytest.approx(1.0)
    assert len(notes) == 1 and "seed 1 only" in notes[0] and "a: 0, 1, 2; b: 1" in notes[0]
    # the same seed on another test set (another noise folder, say), or no shared seed: skipped
    for other in (_seed_run(tmp_path, "c", 1, [0] * 4, test_set="other"),
                  _seed_run(tmp_path, "d", 5, [0] * 4)):
        rows, notes = paired_comparisons([a, other], resamples=20)
        assert rows == [] and "different test sets" in notes[0]
    # a multi-seed result written before per-seed hashes were recorded: skipped, as before
    old = {k: v for k, v in a.items() if k != "per_seed_test_set_sha1"}
    rows, notes = paired_comparisons([old, b], resamples=20)
    assert rows == [] and "different test sets" in notes[0]

# ---------------------------------------------------------------------------- unscored items
def _se_items(pesq, si_sdr):
    """SE-like records: ``key`` and two per-utterance scores (NaN where undefined)."""
    return [{"key": f"u{i}", "pesq": p, "si_sdr": s}
            for i, (p, s) in enumerate(zip(pesq, si_sdr, strict=True))]


def test_items_files_are_strict_json_and_nan_reads_back(tmp_path):
    from downstream.items import read_items

    nan, inf = float("nan"), float("inf")
    records = [{"key": "u0", "pesq": nan, "si_sdr": np.float32(3.5), "scores": [1.0, nan]},
               {"key": "u1", "pesq": 2.0, "si_sdr": -inf, "nested": {"x": np.float64("nan")}},
               {"key": "u2", "pesq": 1.5, "si_sdr": 4, "ok": True}]
    path = tmp_path / "clean.jsonl"
    write_items(path, records)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    parsed = [_strict_json(line) for line in lines]  # a bare NaN / -Infinity would raise here
    assert parsed[0] == {"key": "u0", "pesq": None, "si_sdr": 3.5, "scores": [1.0, None]}
    assert parsed[1]["si_sdr"] is None and parsed[1]["nested"] == {"x": None}
    back = read_items(path)
    assert np.isnan(back[0]["pesq"]) and back[0]["si_sdr"] == 3.5
    assert back[0]["scores"][0] == 1.0 and np.isnan(back[0]["scores"][1])
    assert np.isnan(back[1]["si_sdr"]) and np.isnan(back[1]["nested"]["x"])  # inf: NaN
    assert back[2] == {"key": "u2", "pesq": 1.5, "si_sdr": 4, "ok": True}


def test_old_items_files_with_bare_nan_still_read(tmp_path):
    from downstream.items import read_items
    from downstream.tasks.speech_enhancement.task import SpeechEnhancementTask

    path = tmp_path / "snr0.jsonl"
    path.write_text('{"key": "u0", "pesq": NaN, "si_sdr": 1.0}\n\n'
                    '{"key": "u1", "pesq": 3.0, "si_sdr": Infinity}\n')
    old = read_items(path)
    assert np.isnan(old[0]["pesq"]) and old[1]["si_sdr"] == float("inf")
    write_items(tmp_path / "new.jsonl", old)  # rewritten strict: the statistics are unchanged
    new = read_items(tmp_path / "new.jsonl")
    for metric in ("pesq", "si_sdr"):
        idx = np.arange(2)
        a = SpeechEnhancementTask.item_statistic(old, metric)(idx)
        b = SpeechEnhancementTask.item_statistic(new, metric)(idx)
        assert a == b  # 3.0 (pesq of u1 only), 1.0 (si_sdr of u0 only)


def test_paired_comparison_of_items_with_nan_is_unchanged_by_null(tmp_path):
    # the same records written the old way (bare NaN) and the new way (null) give the same test
    pesq_a, pesq_b = [2.0, float("nan"), 3.0, 2.5], [1.5, 2.0, float("nan"), 2.0]
    results = []
    for name, pesq in (("a", pesq_a), ("b", pesq_b)):
        r = _result(tmp_path, name, "speech_enhancement", "pesq",
                    {"clean": _se_items(pesq, [1.0] * 4)})
        results.append(r)
    new_rows, _ = paired_comparisons(results, resamples=100)
    for name, pesq in (("a", pesq_a), ("b", pesq_b)):
        path = tmp_path / name / "items" / "clean.jsonl"
        path.write_text("".join(json.dumps(rec) + "\n" for rec in _se_items(pesq, [1.0] * 4)))
        assert "NaN" in path.read_text()
    old_rows, _ = paired_comparisons(results, resamples=100)
    assert new_rows == old_rows
    # over the items both scored (u0, u3), not each upstream's own finite items (which gave
    # (2 + 3 + 2.5) / 3 - (1.5 + 2 + 2) / 3 over different utterances)
    assert new_rows[0]["difference"] == pytest.approx(((2.0 - 1.5) + (2.5 - 2.0)) / 2)
    assert new_rows[0]["excluded_items"] == 2


def test_unscored_counts_by_hand():
    from downstream.items import unscored_counts

    nan = float("nan")
    items = [{"key": "u0", "pesq": nan, "si_sdr": 1.0, "stoi": 0.9},
             {"key": "u1", "pesq": 2.0, "si_sdr": nan, "stoi": 0.8},
             {"key": "u2", "pesq": None, "si_sdr": float("-inf"), "stoi": 0.7},
             {"key": "u3", "pesq": np.float32("nan"), "si_sdr": 2.0}]  # no stoi key: not counted
    assert unscored_counts(items, ["pesq", "si_sdr", "stoi", "noisy_pesq"]) == {
        "pesq": 3, "si_sdr": 2}
    assert list(unscored_counts(items, ["si_sdr", "pesq"])) == ["si_sdr", "pesq"]
    assert unscored_counts(_uc_items([1, 0, 1]), ["accuracy", "macro_accuracy"]) == {}
    assert unscored_counts([], ["pesq"]) == {}


def _aggregate_run(tmp_path, seed, per_condition):
    folder = tmp_path / f"seed{seed}"
    (folder / "items").mkdir(parents=True)
    metrics = {}
    for cond, items in per_condition.items():
        write_items(folder / "items" / f"{cond}.jsonl", items)
        metrics[cond] = {m: float(np.nanmean([r[m] for r in items])) for m in ("pesq", "si_sdr")}
    return {"task": "speech_enhancement", "upstream": "/m/a", "label": "se",
            "primary_metric": "pesq", "higher_is_better": True,
            "conditions": list(per_condition), "metrics": metrics, "seed": seed,
            "item_unit": "utterance", "featurizer": {"weights": {"0": 0.5, "1": 0.5}},
            "timing": {"total_s": 1.0}, "num_items": {"test": 4}}, folder


def test_aggregate_seeds_sums_unscored_and_tables_show_it(tmp_path):
    from downstream.load import load_results
    from downstream.results import write_outputs
    from downstream.seeds import aggregate_seeds
    from downstream.table import results_table

    nan = float("nan")
    # seed 0: clean all scored; snr0: 2 PESQ failures, 1 silent output (SI-SDR undefined)
    # seed 1: clean 1 PESQ failure; snr0: 1 PESQ failure, 0 SI-SDR
    r0, d0 = _aggregate_run(tmp_path, 0, {
        "clean": _se_items([3.0, 3.5, 4.0, 2.5], [10.0, 12.0, 11.0, 9.0]),
        "snr0": _se_items([nan, 1.5, nan, 2.0], [nan, 3.0, 4.0, 5.0])})
    r1, d1 = _aggregate_run(tmp_path, 1, {
        "clean": _se_items([3.0, nan, 4.0, 2.5], [10.0, 12.0, 11.0, 9.0]),
        "snr0": _se_items([1.0, 1.5, nan, 2.0], [2.0, 3.0, 4.0, 5.0])})
    merged = aggregate_seeds([r0, r1], [d0, d1], resamples=20)
    assert merged["unscored"] == {"clean": {"pesq": 1}, "snr0": {"pesq": 3, "si_sdr": 1}}
    write_outputs([merged], tmp_path / "agg")
    (loaded,) = load_results(tmp_path / "agg" / "results.json")
    assert loaded["unscored"] == merged["unscored"]
    table = (tmp_path / "agg" / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| a |")
               and "(3 unscored)" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].endswith("(1 unscored)") and cells[2].endswith("(3 unscored)")
    assert "summed over seeds" in table and "could not be computed" in table
    si_row = [line for line in table.splitlines() if line.startswith("| a |")][1]
    assert "unscored" not in si_row.split("|")[2] and si_row.split("|")[3].strip().endswith(
        "(1 unscored)")
    # a result without the key (written before it existed) renders as before: no mark, no note
    old = {k: v for k, v in loaded.items() if k != "unscored"}
    assert "unscored" not in results_table([old])


def test_report_marks_unscored_primary_cells_and_old_files_are_unchanged(tmp_path):
    def res(name, unscored=None):
        out = {"upstream": f"/m/{name}", "primary_metric": "pesq", "conditions": ["clean", "snr0"],
               "item_unit": "utterance",
               "metrics": {"clean": {"pesq": 3.0, "si_sdr": 10.0},
                           "snr0": {"pesq": 1.5, "si_sdr": None}}}
        if unscored is not None:
            out["unscored"] = unscored
        return out

    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": [
        res("a", {"clean": {}, "snr0": {"pesq": 2, "si_sdr": 200}}), res("b", {"clean": {}})]}))
    lines = report(path, digits=2).splitlines()
    assert "| a | 3.00 | 1.50 (2 unscored) |" in lines  # only the primary metric is shown
    assert "| b | 3.00 | 1.50 |" in lines
    assert any(line.startswith("Note: ") and "test utterances" in line for line in lines)
    path.write_text(json.dumps({"results": [res("a"), res("b")]}))  # an old file
    old = report(path, digits=2)
    assert "| a | 3.00 | 1.50 |" in old.splitlines() and "unscored" not in old
    # only a metric the report does not show is unscored: no mark, so no note explaining one
    path.write_text(json.dumps({"results": [res("a", {"snr0": {"si_sdr": 3}}), res("b")]}))
    assert "unscored" not in report(path, digits=2)


def test_the_same_seeds_in_another_order_are_the_same_test_set(tmp_path):
    from downstream.seeds import aggregate_seeds
    from downstream.table import results_table

    def aggregate(name, order, correct):
        runs = [_seed_run(tmp_path, name, s, correct[s]) for s in order]
        return aggregate_seeds(runs, [tmp_path / name / f"seed{s}" for s in order], resamples=10)

    # a right on everything of seed 0 only; b right on nothing; b aggregated as 2, 1, 0
    a = aggregate("a", (0, 1, 2), {0: [1] * 4, 1: [0] * 4, 2: [0] * 4})
    b = aggregate("b", (2, 1, 0), {0: [0] * 4, 1: [0] * 4, 2: [0] * 4})
    assert a["test_set_sha1"] != b["test_set_sha1"]  # hashes of the seeds in run order
    rows, notes = paired_comparisons([a, b], resamples=20)
    assert notes == [] and len(rows) == 1 and rows[0]["seeds"] == [0, 1, 2]
    assert rows[0]["difference"] == pytest.approx(1 / 3)  # seed by seed, in a's order
    assert "different test sets" not in results_table([a, b])
    # one seed aggregated beside the plain run of that seed: the same test set too
    one = aggregate("c", (0,), {0: [0] * 4})
    plain = _seed_run(tmp_path, "d", 0, [1] * 4)
    rows, notes = paired_comparisons([one, plain], resamples=20)
    assert notes == [] and rows[0]["difference"] == pytest.approx(-1.0)
    assert "different test sets" not in results_table([one, plain])


def test_an_aggregate_without_per_seed_hashes_beside_a_new_one_of_the_same_runs(tmp_path):
    from downstream.seeds import aggregate_seeds
    from downstream.table import results_table

    runs = [_seed_run(tmp_path, "a", s, [1, 0, 1, 0]) for s in (0, 1)]
    new = aggregate_seeds(runs, [tmp_path / "a" / f"seed{s}" for s in (0, 1)], resamples=10)
    old = {k: v for k, v in new.items() if k != "per_seed_test_set_sha1"}  # written before
    assert "different test sets" not in results_table([new, old])  # equal combined hashes
    rows, notes = paired_comparisons([new, old], resamples=20)
    assert notes == [] and len(rows) == 1


def test_a_seed_without_a_recorded_hash_keeps_the_restricted_seed_note(tmp_path):
    from downstream.seeds import aggregate_seeds
    from downstream.table import results_table

    runs = [_seed_run(tmp_path, "a", s, [1] * 4) for s in (0, 1)]
    del runs[1]["test_set_sha1"]  # seed 1's hash not recorded (a run from before the hash)
    a = aggregate_seeds(runs, [tmp_path / "a" / f"seed{s}" for s in (0, 1)], resamples=10)
    b = aggregate_seeds([_seed_run(tmp_path, "b", 0, [0] * 4)], [tmp_path / "b" / "seed0"],
                        resamples=10)
    rows, notes = paired_comparisons([a, b], resamples=20)
    assert rows[0]["seeds"] == [0]  # seed 1 cannot be paired
    assert len(notes) == 1 and "seed 0 only" in notes[0]  # a's table value is over 0 and 1
    assert "different test sets" in results_table([a, b])


def _shared_utterance_trials(seed=0, speakers=6, per_speaker=5):
    """Every trial of ``speakers x per_speaker`` utterances, scored ``label * (1 + g_s) + o_e +
    o_t`` plus small noise: each utterance's offset ``o`` (sd 0.3) moves all its trials
    together, and each speaker's ``g_s`` (sd 0.3) all its target trials."""
    rng = np.random.default_rng(seed)
    keys = [f"s{s}/u{u}" for s in range(speakers) for u in range(per_speaker)]
    offset = dict(zip(keys, rng.normal(0.0, 0.3, len(keys)), strict=True))
    gain = rng.normal(0.0, 0.3, speakers)
    items = []
    for i, e in enumerate(keys):
        for t in keys[i + 1:]:
            label = int(e.split("/")[0] == t.split("/")[0])
            items.append({"enroll": e, "test": t, "label": label,
                          "score": float(label * (1 + gain[int(e[1:].split("/")[0])])
                                         + offset[e] + offset[t] + 0.1 * rng.normal())})
    return items


def _old_sv_result(tmp_path, name, items, resamples=300):
    """A speaker verification results.json as runs wrote it before 2026-12-07: intervals from
    a bootstrap over trials, no ``resample_unit``."""
    from downstream.stats import bootstrap_interval
    from robustdistill.metrics.verification import compute_eer

    folder = tmp_path / name
    (folder / "items").mkdir(parents=True)
    write_items(folder / "items" / "clean.jsonl", items)
    scores = np.array([r["score"] for r in items])
    labels = np.array([r["label"] for r in items])

    def trial_eer(idx):
        s, lab = scores[idx[0]], labels[idx[0]]
        return float("nan") if lab.min() == lab.max() else compute_eer(s[lab == 1],
                                                                        s[lab == 0])[0]
    eer = trial_eer([np.arange(len(items))])
    result = {"task": "speaker_verification", "label": "asv", "upstream": f"/models/{name}",
              "primary_metric": "eer", "higher_is_better": False, "conditions": ["clean"],
              "metrics": {"clean": {"eer": eer}}, "seed": 0, "test_set_sha1": "same",
              "intervals": {"clean": {"eer": list(bootstrap_interval(
                  trial_eer, [len(items)], resamples, 0))}},
              "interval_method": f"percentile bootstrap over test trials, 95 %, {resamples} "
                                 "resamples", "item_unit": "trial"}
    (folder / "results.json").write_text(json.dumps(result))
    return folder / "results.json", {**result, "source_dir": str(folder)}


def test_sv_intervals_resample_speakers_and_are_wider_than_the_trial_bootstrap(tmp_path):
    from downstream.compare import compare
    from downstream.items import read_items
    from downstream.tasks.speaker_verification.task import SpeakerVerification

    items = _shared_utterance_trials()
    a_path, old = _old_sv_result(tmp_path, "a", items)
    noisier = [{**r, "score": r["score"] + 0.5 * np.sin(7.0 * k)}
               for k, r in enumerate(items)]
    b_path, _ = _old_sv_result(tmp_path, "b", noisier)
    compare([a_path, b_path], tmp_path / "cmp", resamples=300)
    data = json.loads((tmp_path / "cmp" / "results.json").read_text())
    trial = old["intervals"]["clean"]["eer"]
    new = data["results"][0]["intervals"]["clean"]["eer"]
    # 6 speakers x 5 utterances, 435 trials: the new bootstrap draws 6 speakers and their
    # utterances, the trial bootstrap 435 trials, though trials sharing an utterance or a
    # speaker move together
    assert new[1] - new[0] > 1.5 * (trial[1] - trial[0])
    assert new[0] <= old["metrics"]["clean"]["eer"] <= new[1]
    assert new == item_intervals(SpeakerVerification, [read_items(a_path.parent / "items"
                                                                  / "clean.jsonl")],
                                 old["metrics"]["clean"], resamples=300, seed=0)["eer"]
    assert data["results"][0]["resample_unit"] == "speaker"
    assert "over test speakers" in data["results"][0]["interval_method"]
    assert data["comparisons"][0]["resample_unit"] == "speaker"
    assert "resamples test speakers" in (tmp_path / "cmp" / "results.md").read_text()
    # the file compared is left as it was (its own intervals until aggregated again)
    assert json.loads(a_path.read_text())["intervals"] == old["intervals"]


def test_sv_paired_comparison_draws_the_same_speakers_for_both(tmp_path, monkeypatch):
    from downstream.tasks.speaker_verification.task import SpeakerVerification

    items = _shared_utterance_trials(seed=1)
    _, a = _old_sv_result(tmp_path, "a", items, resamples=10)
    # B's scores are a monotone map of A's: the same EER on every common resample
    _, b = _old_sv_result(tmp_path, "b", [{**r, "score": 3.0 * r["score"] - 1.0}
                                          for r in items], resamples=10)
    drawn: dict[str, list[np.ndarray]] = {}
    original = SpeakerVerification.item_statistic.__func__

    def spy(cls, records, metric):
        stat = original(cls, records, metric)
        log = drawn.setdefault(records[0]["upstream_tag"], [])

        def logged(idx):
            log.append(np.array(idx))
            return stat(idx)
        return logged

    monkeypatch.setattr(SpeakerVerification, "item_statistic", classmethod(spy))
    import downstream.paired as paired_module  # paired_comparisons looks item_groups up there
    real_groups = paired_module.item_groups

    def tagged(result, cond, seeds=None):
        return [[{**r, "upstream_tag": result["upstream"]} for r in g]
                for g in real_groups(result, cond, seeds)]
    monkeypatch.setattr(paired_module, "item_groups", tagged)
    rows, notes = paired_comparisons([a, b], resamples=40)
    assert notes == [] and len(rows) == 1
    row = rows[0]
    assert row["resample_unit"] == "speaker" and row["resamples"] == 40
    assert (row["difference"], row["low"], row["high"], row["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    draws_a, draws_b = drawn["/models/a"], drawn["/models/b"]
    assert len(draws_a) == len(draws_b) == 41  # the whole set, then 40 resamples
    # (copy, utterance) rows: 6 speaker copies x 5 utterances each
    assert all(x.shape == (30, 2) and x[:, 0].max() == 5 and x[:, 1].max() < 30
               for x in draws_a)
    assert all(np.array_equal(x, y) for x, y in zip(draws_a, draws_b, strict=True))
    assert any(len(set(x[:, 1].tolist())) < 30 for x in draws_a[1:])  # real resamples


def test_sv_records_grouping_utterances_into_other_speakers_are_not_paired(tmp_path):
    items = _shared_utterance_trials(seed=2)
    _, a = _old_sv_result(tmp_path, "a", items, resamples=10)
    # B labels one cross-speaker pair a target trial: speakers s0 and s1 become one
    relabelled = [{**r, "label": 1} if (r["enroll"], r["test"]) == ("s0/u0", "s1/u0") else r
                  for r in items]
    _, b = _old_sv_result(tmp_path, "b", relabelled, resamples=10)
    rows, notes = paired_comparisons([a, b], resamples=10)
    assert rows == [] and "different speakers" in notes[0]


def test_compare_results_md_names_each_resample_count_for_what_it_is(tmp_path):
    """``compare --bootstrap-resamples 50`` over evaluations with 1000-resample intervals: the
    results.md said "1000 resamples" only, as if the paired tests had used them too."""
    from downstream.cli import compare_main
    from downstream.intervals import interval_method
    from downstream.results import write_outputs

    for name, correct in (("a", [1, 1, 1, 0]), ("b", [1, 0, 0, 0])):
        result = _result(tmp_path, name, "utterance_classification", "accuracy",
                         {"clean": _uc_items(correct)})
        result["interval_method"] = interval_method(UtteranceClassification, 1000)
        write_outputs([result], tmp_path / f"kws_{name}")
    assert compare_main([str(tmp_path / "kws_a" / "results.json"),
                         str(tmp_path / "kws_b" / "results.json"), "--out",
                         str(tmp_path / "cmp"), "--bootstrap-resamples", "50"]) == 0
    lines = (tmp_path / "cmp" / "results.md").read_text().splitlines()
    assert ("Cells: value [95 % interval, each evaluation's own: percentile bootstrap over test "
            "utterances, 95 %, 1000 resamples]") in lines
    assert ("## paired comparisons (accuracy: a minus b, same test items; paired bootstrap: "
            "50 resamples)") in lines
    (row,) = json.loads((tmp_path / "cmp" / "results.json").read_text())["comparisons"]
    assert (row["bootstrap_resamples"], row["resamples"]) == (50, 50)


def test_results_md_names_rows_with_fewer_finite_resamples(tmp_path):
    from downstream.table import results_table

    a = _result(tmp_path, "a", "utterance_classification", "accuracy",
                {"clean": _uc_items([1, 0])})
    b = {**a, "upstream": "/models/b"}
    row = {"a": "a", "b": "b", "condition": "clean", "metric": "accuracy", "difference": 0.5,
           "low": 0.0, "high": 1.0, "p_value": 0.5, "significant": False}
    text = results_table([a, b], ([{**row, "resamples": 37, "bootstrap_resamples": 40}], []))
    assert "; paired bootstrap: 40 resamples)" in text
    assert "- a vs b clean: 37 of 40 resamples gave a finite difference" in text.splitlines()
    # a row written before bootstrap_resamples existed: its finite count stands in
    old = results_table([a, b], ([{**row, "resamples": 40}], []))
    assert "; paired bootstrap: 40 resamples)" in old and "gave a finite" not in old


def test_the_documented_readers_stay_importable_from_downstream_results():
    """downstream/README.md names ``load_results`` and ``read_items`` as the readers of the
    results files; since the split they live in ``downstream.load`` / ``downstream.items`` and
    ``downstream.results`` keeps them importable (the same objects)."""
    from downstream import items, load, results

    assert results.load_results is load.load_results
    assert results.read_items is items.read_items
