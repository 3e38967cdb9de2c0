# ruff: noqa: F811  (pytest fixtures imported from test_downstream_tasks)
"""What ``evaluate``, ``compare``, ``aggregate`` and ``downstream.report`` do with their output
folder and bad start-up arguments (a fresh-user walkthrough): a folder holding another
upstream's evaluation is refused instead of overwritten, a re-run leaves no stale per-item
files, and a file given as ``--out``, an unusable ``--device``, a missing or broken results
file, negative resamples and ``--seed`` with ``--seeds`` end in one line, not a traceback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from test_downstream_tasks import _uc_config, _write_config, corpus, tiny_upstreams  # noqa: F401

from downstream import folders, results, runner
from downstream.cli import aggregate_main, compare_main, evaluate_main, resolve_task
from downstream.report import main as report_main


def _evaluate(corpus, upstream, config, out, *extra, conditions=("clean", "snr0")):
    argv = ["--task", "ks", "--upstream", upstream, "--config", config, "--out", str(out),
            "--conditions", *conditions, "--test-noise-dir", str(corpus / "noise"),
            "--bootstrap-resamples", "50", *extra]
    assert evaluate_main(argv) == 0
    return json.loads((out / "results.json").read_text())


def _refused(main, argv, capsys) -> str:
    """The one-line error of a refused command (argparse's exit status 2)."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, corpus, tiny_upstreams):
    """KWS evaluations of two upstreams (tiny WavLM, FBANK), each in its own folder."""
    root = tmp_path_factory.mktemp("runs")
    config = _write_config(root / "uc.yaml", _uc_config(corpus))
    _evaluate(corpus, tiny_upstreams["wavlm"], config, root / "kws_student")
    _evaluate(corpus, "fbank", config, root / "kws_fbank")
    return root, config


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------- compare --out
def test_compare_refuses_an_evaluation_folder_as_out(two_runs, tmp_path, capsys):
    root, _ = two_runs
    student = _copy(root / "kws_student", tmp_path / "kws_student")
    fbank = _copy(root / "kws_fbank", tmp_path / "kws_fbank")
    before = (student / "results.json").read_text()
    line = _refused(compare_main, [str(student / "results.json"), str(fbank / "results.json"),
                                   "--out", str(student)], capsys)
    assert "holds the evaluation of" in line and "kws_student" in line
    assert str(tmp_path / "ks_compare") in line  # a folder of its own is suggested
    assert (student / "results.json").read_text() == before  # nothing replaced
    assert folders.folder_results(student)[0] == "evaluation"


def test_compare_replaces_its_own_earlier_output_and_says_why(two_runs, tmp_path, caplog):
    root, _ = two_runs
    inputs = [str(root / "kws_student" / "results.json"), str(root / "kws_fbank" / "results.json")]
    out = tmp_path / "kws_compare"
    assert compare_main([*inputs, "--out", str(out)]) == 0
    assert folders.folder_results(out)[0] == "comparison"
    with caplog.at_level(logging.WARNING, logger="downstream.compare"):
        assert compare_main([*inputs, str(out / "results.json"), "--out", str(out)]) == 0
    assert "this comparison's own output" in caplog.text
    assert len(json.loads((out / "results.json").read_text())["results"]) == 2
    # a comparison of one result is a {"results": [...]} file too, so a later compare may
    # replace it and evaluate refuses it
    single = tmp_path / "single"
    assert compare_main([inputs[0], "--out", str(single)]) == 0
    assert len(json.loads((single / "results.json").read_text())["results"]) == 1
    assert folders.folder_results(single)[0] == "comparison"
    assert compare_main([*inputs, "--out", str(single)]) == 0


def test_compare_of_one_file_given_twice_compares_it_once(two_runs, tmp_path, caplog):
    root, _ = two_runs
    a = str(root / "kws_student" / "results.json")
    with caplog.at_level(logging.WARNING, logger="downstream.compare"):
        assert compare_main([a, a, "--out", str(tmp_path / "cmp")]) == 0
    assert "given twice" in caplog.text
    data = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert len(data["results"]) == 1 and "comparisons" not in data  # no self-comparison


def test_an_old_single_result_comparison_still_counts_as_one(two_runs, tmp_path):
    # compare used to write one input's result as a flat file; its source_dir names the folder
    # it came from, while an evaluation stores none (or its own folder, or seed_dirs)
    root, _ = two_runs
    result = json.loads((root / "kws_student" / "results.json").read_text())
    results.write_outputs([{**result, "source_dir": str(root / "kws_student")}], tmp_path / "old")
    assert folders.folder_results(tmp_path / "old")[0] == "comparison"
    results.write_outputs([{**result, "source_dir": str(tmp_path / "own")}], tmp_path / "own")
    assert folders.folder_results(tmp_path / "own")[0] == "evaluation"
    assert folders.folder_results(tmp_path / "none") == (None, [])


# ---------------------------------------------------------------------------- evaluate --out
def test_evaluate_refuses_a_folder_of_another_upstream_or_a_comparison(
        two_runs, corpus, tmp_path, capsys):
    root, config = two_runs
    evo = _copy(root / "kws_student", tmp_path / "evo")
    before = {p.name: p.read_bytes() for p in [evo / "results.json", evo / "head.pt"]}
    argv = ["--task", "ks", "--upstream", "fbank", "--config", config, "--out", str(evo),
            "--conditions", "clean"]
    line = _refused(evaluate_main, argv, capsys)
    assert "holds the results of upstream" in line and "'fbank'" in line
    assert {p.name: p.read_bytes() for p in [evo / "results.json", evo / "head.pt"]} == before
    # another label of the same task folder (sid, not ks) is another task's result
    line = _refused(evaluate_main, ["--task", "sid", *argv[2:4], "--config", config, "--out",
                                    str(root / "kws_fbank"), "--conditions", "clean"], capsys)
    assert "on task 'ks'" in line
    cmp = tmp_path / "cmp"
    assert compare_main([str(root / "kws_fbank" / "results.json"), "--out", str(cmp)]) == 0
    line = _refused(evaluate_main, [*argv[:7], str(cmp), *argv[8:]], capsys)
    assert "holds a comparison" in line
    # --seeds checks OUT and its seed folders before the first seed runs
    line = _refused(evaluate_main, [*argv[:7], str(evo), "--seeds", "0", "1"], capsys)
    assert "holds the results of upstream" in line
    assert not (evo / "seed0").exists()


def test_evaluate_rerun_of_the_same_upstream_leaves_no_stale_items(two_runs, corpus, tmp_path,
                                                                   caplog):
    root, config = two_runs
    evo = _copy(root / "kws_fbank", tmp_path / "evo")
    assert sorted(p.name for p in (evo / "items").iterdir()) == ["clean.jsonl", "snr0.jsonl"]
    with caplog.at_level(logging.INFO, logger="downstream.runner"):
        res = _evaluate(corpus, "fbank", config, evo, conditions=("clean",))
    assert res["conditions"] == ["clean"]
    assert sorted(p.name for p in (evo / "items").iterdir()) == ["clean.jsonl"]
    assert "snr0.jsonl" in caplog.text
    # --seeds into a folder that held a single run: its items/ are not the aggregate's
    _evaluate(corpus, "fbank", config, evo, "--seeds", "0", "1", conditions=("clean",))
    assert not list((evo / "items").iterdir())
    assert (evo / "seed0" / "items" / "clean.jsonl").is_file()


def test_bootstrap_resamples_zero_gives_no_interval_and_negative_is_refused(
        two_runs, corpus, tmp_path, capsys):
    root, config = two_runs
    res = _evaluate(corpus, "fbank", config, tmp_path / "none", "--bootstrap-resamples", "0",
                    conditions=("clean",))
    assert res["intervals"] == {"clean": {}} and res["interval_method"] is None
    assert "resamples" not in (tmp_path / "none" / "results.md").read_text()
    argv = ["--task", "ks", "--upstream", "fbank", "--config", config, "--out",
            str(tmp_path / "neg"), "--bootstrap-resamples", "-5"]
    assert "must be >= 0 (0: no intervals), got -5" in _refused(evaluate_main, argv, capsys)
    with pytest.raises(ValueError, match="bootstrap-resamples"):
        runner.run_evaluation(runner.RunOptions("ks", "fbank", config, str(tmp_path / "neg"),
                                                bootstrap_resamples=-5))
    a = str(root / "kws_fbank" / "results.json")
    assert "must be >= 1, got 0" in _refused(
        compare_main, [a, "--out", str(tmp_path / "c"), "--bootstrap-resamples", "0"], capsys)
    assert "must be >= 0" in _refused(
        aggregate_main, [a, "--out", str(tmp_path / "g"), "--bootstrap-resamples", "-1"], capsys)
    assert not (tmp_path / "neg").exists() and not (tmp_path / "c").exists()


def test_seed_and_seeds_together_are_refused(two_runs, tmp_path, capsys):
    _, config = two_runs
    argv = ["--task", "ks", "--upstream", "fbank", "--config", config, "--out",
            str(tmp_path / "o")]
    for seed in ("3", "0"):  # 0 is the default: still refused when given
        line = _refused(evaluate_main, [*argv, "--seed", seed, "--seeds", "0", "1"], capsys)
        assert "--seeds: not allowed with argument --seed" in line
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- start-up errors
def test_out_that_is_a_file_is_one_line(two_runs, tmp_path, capsys):
    root, config = two_runs
    afile = tmp_path / "afile"
    afile.write_text("x")
    a = str(root / "kws_fbank" / "results.json")
    for main, argv in (
            (evaluate_main, ["--task", "ks", "--upstream", "fbank", "--config", config,
                             "--out", str(afile), "--conditions", "clean"]),
            (evaluate_main, ["--task", "ks", "--upstream", "fbank", "--config", config,
                             "--out", str(afile / "sub"), "--conditions", "clean"]),
            (compare_main, [a, "--out", str(afile)]),
            (aggregate_main, [a, "--out", str(afile)])):
        line = _refused(main, argv, capsys)
        assert f"'{afile}' is an existing file, not a folder" in line
    assert afile.read_text() == "x"


def test_unusable_device_is_one_line_before_any_work(two_runs, tmp_path, capsys):
    _, config = two_runs
    argv = ["--task", "ks", "--upstream", "fbank", "--config", config, "--out",
            str(tmp_path / "o"), "--conditions", "clean"]
    line = _refused(evaluate_main, [*argv, "--device", "gpu"], capsys)
    assert "--device 'gpu' is not a torch device" in line
    with pytest.raises(ValueError, match="not a torch device"):
        runner.check_device("gpu")
    runner.check_device("cpu")
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, or cuda:0 on a CPU
    line = _refused(evaluate_main, [*argv, "--device", missing], capsys)
    assert f"--device '{missing}' cannot be used here" in line
    if not torch.cuda.is_available():
        line = _refused(evaluate_main, [*argv, "--device", "cuda", "--seeds", "0", "1"], capsys)
        assert "--device 'cuda' cannot be used here" in line
    assert not (tmp_path / "o").exists()


def test_report_of_a_missing_or_broken_file_is_one_line(two_runs, tmp_path, capsys):
    root, _ = two_runs
    line = _refused(report_main, [str(tmp_path / "missing.json")], capsys)
    assert "results file not found" in line
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert "broken.json: not valid JSON" in _refused(report_main, [str(broken)], capsys)
    other = tmp_path / "other.json"
    other.write_text('{"a": 1}')
    assert "not a downstream results file" in _refused(report_main, [str(other)], capsys)
    assert report_main([str(root / "kws_fbank" / "results.json")]) == 0
    assert "| fbank |" in capsys.readouterr().out


# ---------------------------------------------------------------------------- docs
def test_label_examples_in_the_config_reference_are_task_names():
    """The ``label`` help quotes names ``--task`` accepts (it said ``kws``; the SUPERB name
    and the shipped configs' label is ``ks``)."""
    import re

    from downstream.base import TaskConfig
    from robustdistill.config_reference import config_keys

    (row,) = [k for s in config_keys(TaskConfig) for k in s.keys if k[0] == "label"]
    examples = re.findall(r"`(\w+)`", row[3].split(":")[0])
    assert examples and all(resolve_task(name)[1] == name for name in examples), examples


def test_a_mapping_override_replaces_as_the_reference_says(tmp_path):
    from downstream.base import task_config_path
    from downstream.cli import parse_overrides
    from downstream.config import load_config
    from downstream.tasks.utterance_classification.task import UtteranceClassification
    from robustdistill.config_reference import reference_document

    path = task_config_path("utterance_classification", "kws_fsdd_cpu")
    # a mapping replaces the config's, as the key's line in the YAML file would (and as
    # distill's --key '{...}' does): dev and test keep all their items
    replaced = load_config(path, UtteranceClassification.config_class,
                           parse_overrides(["data.max_items_per_split={train: 40}"]))
    assert replaced.data.max_items_per_split == {"train": 40}
    # a dotted key changes one entry
    dotted = load_config(path, UtteranceClassification.config_class,
                         parse_overrides(["data.max_items_per_split.train=40"]))
    assert dotted.data.max_items_per_split == {"train": 40, "dev": 50, "test": 50}
    assert "a mapping value replaces the config's mapping, as in a YAML file" \
        in reference_document()


def test_running_one_seed_again_says_the_aggregate_is_stale(two_runs, corpus, tmp_path, caplog):
    """One seed run again into ``OUT/seed<N>`` (the documented one-seed-at-a-time layout) may
    remove per-item files ``OUT/results.json`` still lists, and changes that seed's figures:
    the run says to aggregate again (an ``--seeds`` run, which aggregates itself, does not)."""
    _, config = two_runs
    out = tmp_path / "kws"
    with caplog.at_level(logging.WARNING):
        _evaluate(corpus, "fbank", config, out, "--seeds", "0", "1", conditions=("clean",))
    assert "aggregate again" not in caplog.text
    assert folders.aggregate_listing(out / "seed0") == out / "results.json"
    assert folders.aggregate_listing(out / "seed7") is None  # a seed the aggregate lacks
    assert folders.aggregate_listing(out) is None
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _evaluate(corpus, "fbank", config, out / "seed0", conditions=("clean",))
    assert (f"{out / 'results.json'} aggregates an earlier run of {out / 'seed0'}: aggregate "
            "again before comparing it") in caplog.text
