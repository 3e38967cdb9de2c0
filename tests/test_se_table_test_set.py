"""The SE comparison table never mixes test sets: each entry records the test set it was
scored on (``TestPairs.sha1``), a resume on another one scores the models again, and a merge
of folders scored on different test sets is refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from robustdistill.se.evaluate import TestPairs as Pairs  # not a pytest class


def _pairs(snrs=(-5.0, 0.0), names=("a.flac", "b.flac"), scale=1.0) -> Pairs:
    rng = np.random.default_rng(0)
    clean = [scale * rng.standard_normal(160).astype(np.float32) for _ in names]
    noisy = {s: [x + 10 ** (-s / 20) * 0.1 for x in clean] for s in snrs}
    return Pairs(clean, noisy, list(names), {s: [{"si_sdr": 0.0, "pesq": 1.5, "stoi": 0.7}
                                                    for _ in names] for s in snrs})


def _scores(si_sdr):
    return {"si_sdr": si_sdr, "si_sdr_i": 1.0, "pesq": 2.0, "pesq_i": 0.5, "stoi": 0.8,
            "stoi_i": 0.1, "n": 2, "unscored": {}}


def test_the_test_set_hash_changes_with_snrs_names_and_audio_only():
    base = _pairs().sha1()
    assert _pairs().sha1() == base
    assert _pairs(snrs=(-5.0, 5.0)).sha1() != base
    assert _pairs(names=("a.flac", "c.flac")).sha1() != base
    assert _pairs(scale=0.5).sha1() != base
    reordered = _pairs()
    reordered.noisy = dict(reversed(list(reordered.noisy.items())))  # same set, other order
    assert reordered.sha1() == base
    rescored = _pairs()  # the noisy inputs' scores follow from the audio: not hashed
    rescored.noisy_scores[-5.0][0]["pesq"] = 4.0
    assert rescored.sha1() == base


def test_render_table_names_an_entry_without_an_asked_snr():
    from robustdistill.se.table import render_table

    results = {"mixture_63x_s0": {"parameters": 1, "results": {"0": _scores(1.0)}}}
    with pytest.raises(ValueError, match=r"mixture_63x_s0 has no results at input SNR -5 dB"):
        render_table(results, ["-5", "0"], ["mixture"], [63])


def _folder(tmp_path, name, sha, snrs=("0",)):
    folder = tmp_path / name
    folder.mkdir()
    entry = {"parameters": 1, "results": {s: _scores(1.0) for s in snrs}}
    if sha:
        entry["test_set_sha1"] = sha
    (folder / "results.json").write_text(json.dumps({f"mixture_63x_s{name}": entry}))
    return str(folder)


def test_merge_refuses_folders_scored_on_different_test_sets(tmp_path, capsys):
    from robustdistill.se.table import main

    folders = [_folder(tmp_path, "0", "aaaa"), _folder(tmp_path, "1", "bbbb")]
    with pytest.raises(SystemExit) as stop:
        main(["--merge", *folders, "--out", str(tmp_path / "m"), "--methods", "mixture",
              "--sizes", "63"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "different test sets" in err and "mixture_63x_s0 on aaaa" in err
    assert not (tmp_path / "m" / "table.md").exists()


def test_merge_of_one_test_set_renders_and_unhashed_folders_are_named(tmp_path, caplog):
    from robustdistill.se.table import main

    folders = [_folder(tmp_path, "0", "aaaa"), _folder(tmp_path, "1", "aaaa"),
               _folder(tmp_path, "2", None)]
    with caplog.at_level(logging.WARNING):
        assert main(["--merge", *folders, "--out", str(tmp_path / "m"), "--methods",
                     "mixture", "--sizes", "63"]) == 0
    assert "| mixture 63x | 1 | 3 |" in (tmp_path / "m" / "table.md").read_text()
    assert f"{folders[2]}:mixture_63x_s2 predate test-set hashes" in caplog.text
    assert "s0 predate" not in caplog.text


def test_merge_refuses_an_asked_snr_that_a_result_lacks(tmp_path, capsys):
    """Before: a KeyError traceback from the table's rendering."""
    from robustdistill.se.table import main

    folders = [_folder(tmp_path, "0", "aaaa", ("0", "-5")), _folder(tmp_path, "1", "aaaa")]
    with pytest.raises(SystemExit) as stop:
        main(["--merge", *folders, "--out", str(tmp_path / "m"), "--methods", "mixture",
              "--sizes", "63", "--snrs", "-5", "0"])
    assert stop.value.code == 2
    assert "mixture_63x_s1 (-5 dB)" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # nothing written on a refusal
    # an entry the table does not show (another method) may lack it
    assert main(["--merge", *folders, "--out", str(tmp_path / "m"), "--methods", "mixture",
                 "--sizes", "32", "--snrs", "-5", "0"]) == 0


def test_a_resume_on_another_test_set_scores_again_and_keeps_one_test_set(
        tmp_path, monkeypatch, caplog):
    import robustdistill.se.students as students
    import robustdistill.se.table as table

    pairs = _pairs(snrs=(-5.0, 0.0))
    new = pairs.sha1()
    out = tmp_path / "t"
    for seed in (0, 1, 2):  # trained by an earlier call
        (out / "runs" / f"mixture_63x_s{seed}" / "student").mkdir(parents=True)
        (out / "runs" / f"mixture_63x_s{seed}" / "student" / "model.safetensors").write_text("")
    old = {"parameters": 7, "test_set_sha1": "old", "train_seconds": 12.5,
           "results": {"5": _scores(9.0)}}
    (out / "results.json").write_text(json.dumps({
        "noisy": {"results": {"5": _scores(0.0)}},
        "nsnet2": {**old, "train_seconds": None},
        "mixture_63x_s0": old,                                       # stale: scored again
        "mixture_63x_s1": {**old, "results": {"5": _scores(8.0)}},   # stale, not asked
        "mixture_63x_s2": {**old, "test_set_sha1": new,              # fresh: kept as it is
                           "results": {"-5": _scores(3.0), "0": _scores(4.0)}},
    }))
    monkeypatch.setattr(table, "make_test_pairs", lambda *a, **k: pairs)
    scored = []

    def evaluate(model, p):
        assert p is pairs
        scored.append(model)
        return {"-5": _scores(1.0), "0": _scores(2.0)}

    def no_training(cfg):
        raise AssertionError("a trained student was trained again")

    monkeypatch.setattr(table, "evaluate_model", evaluate)
    monkeypatch.setattr("robustdistill.se.train.train_se", no_training)
    monkeypatch.setattr(students.GRUMaskStudent, "from_pretrained",
                        classmethod(lambda cls, path: f"student {path.parent.name}"))
    monkeypatch.setattr(students, "count_parameters", lambda model: 5)
    with caplog.at_level(logging.WARNING):
        assert table.main(["--out", str(out), "--snrs", "-5", "0", "--skip-teachers",
                           "--methods", "mixture", "--sizes", "63", "--seeds", "0", "2"]) == 0
    assert ("scored on another test set (or before the table recorded one), dropped and "
            "scored again when asked for: mixture_63x_s0, mixture_63x_s1, nsnet2") in caplog.text
    assert scored == ["student mixture_63x_s0"]
    results = json.loads((out / "results.json").read_text())
    assert sorted(results) == ["mixture_63x_s0", "mixture_63x_s2", "noisy"]
    assert {r["test_set_sha1"] for r in results.values()} == {new}
    assert results["mixture_63x_s0"]["results"]["-5"]["si_sdr"] == 1.0
    assert results["mixture_63x_s0"]["train_seconds"] == 12.5  # known from the old entry
    assert results["mixture_63x_s2"]["results"]["-5"]["si_sdr"] == 3.0
    table_md = (out / "table.md").read_text()
    assert "Input SNR 5 dB" not in table_md and "| mixture 63x | 7 | 2 |" in table_md
    # the dropped seed 1, asked for later, keeps the training time its old entry had
    assert table.main(["--out", str(out), "--snrs", "-5", "0", "--skip-teachers",
                       "--methods", "mixture", "--sizes", "63", "--seeds", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["mixture_63x_s1"]["train_seconds"] == 12.5
    assert results["mixture_63x_s1"]["test_set_sha1"] == new


def test_a_trained_students_time_is_kept_beside_it(tmp_path, monkeypatch):
    import robustdistill.se.students as students
    import robustdistill.se.table as table

    pairs = _pairs()
    out = tmp_path / "t"
    monkeypatch.setattr(table, "make_test_pairs", lambda *a, **k: pairs)
    monkeypatch.setattr(table, "evaluate_model", lambda model, p: {"-5": _scores(1.0),
                                                                  "0": _scores(2.0)})

    def train(cfg):
        student = tmp_path / "t" / "runs" / "mixture_63x_s0" / "student"
        student.mkdir(parents=True)
        (student / "model.safetensors").write_text("")

    monkeypatch.setattr("robustdistill.se.train.train_se", train)
    monkeypatch.setattr(students.GRUMaskStudent, "from_pretrained",
                        classmethod(lambda cls, path: "student"))
    monkeypatch.setattr(students, "count_parameters", lambda model: 5)
    monkeypatch.setattr("robustdistill.audio.list_audio_files", lambda folder: [])  # stubbed
    args = ["--out", str(out), "--snrs", "-5", "0", "--skip-teachers", "--methods", "mixture",
            "--sizes", "63", "--seeds", "0"]
    assert table.main(args) == 0
    first = json.loads((out / "results.json").read_text())["mixture_63x_s0"]["train_seconds"]
    kept = json.loads((out / "runs" / "mixture_63x_s0" / "train_seconds.json").read_text())
    assert isinstance(first, float) and kept == {"train_seconds": first}
    (out / "results.json").unlink()  # e.g. a table folder scored again from scratch
    assert table.main(args) == 0
    assert json.loads((out / "results.json").read_text())["mixture_63x_s0"][
        "train_seconds"] == first


def test_a_student_trained_with_other_settings_is_refused_not_shown_as_these(
        tmp_path, monkeypatch, capsys):
    """A rerun in the same --out with another --steps (or batch, crop, pool, KD share) loaded
    the student trained with the old settings and showed it as trained with the new ones."""
    import yaml

    import robustdistill.se.students as students
    import robustdistill.se.table as table
    from robustdistill.se.train import load_se_config

    out = tmp_path / "t"
    run = out / "runs" / "two_step_gram_63x_s0"
    (run / "student").mkdir(parents=True)
    (run / "student" / "model.safetensors").write_text("")
    args = ["--out", str(out), "--snrs", "-5", "0", "--skip-teachers", "--methods",
            "two_step_gram", "--sizes", "63", "--seeds", "0", "--batch-size", "2",
            "--pool-size", "8"]
    trained = load_se_config("configs/se_two_step_gram.yaml", [
        "--output_dir", "elsewhere", "--student.ratio", "63", "--training.max_steps", "4",
        "--training.batch_size", "2", "--training.save_every", "0", "--training.log_every",
        "20", "--training.threads", "3", "--data.crop_seconds", "1.0", "--data.pool_size", "8",
        "--loss.kd_steps", "2"])
    (run / "config.yaml").write_text(yaml.safe_dump(trained.to_dict(), sort_keys=False))
    monkeypatch.setattr(table, "make_test_pairs", lambda *a, **k: _pairs())
    monkeypatch.setattr(table, "evaluate_model", lambda model, p: {"-5": _scores(1.0),
                                                                  "0": _scores(2.0)})
    monkeypatch.setattr("robustdistill.se.train.train_se", lambda cfg: 1 / 0)
    monkeypatch.setattr(students.GRUMaskStudent, "from_pretrained",
                        classmethod(lambda cls, path: "student"))
    monkeypatch.setattr(students, "count_parameters", lambda model: 5)
    with pytest.raises(SystemExit) as stop:
        table.main([*args, "--steps", "8"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "two_step_gram_63x_s0" in err and "training.max_steps 4 -> 8" in err
    assert "loss.kd_steps 2 -> 4" in err and "threads" not in err and "output_dir" not in err
    assert not (out / "results.json").exists()  # refused before any scoring
    # the same settings (its output_dir and threads aside): loaded, not trained again
    assert table.main([*args, "--steps", "4"]) == 0
    assert "two_step_gram_63x_s0" in json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("method, extra, message", [
    ("supervised", ["--steps", "0"], "max_steps must be >= 1"),
    ("two_step_gram", ["--steps", "4", "--kd-fraction", "0.1"], "two_step needs kd_steps >= 1"),
    ("supervised", ["--sizes", "1"], "ratio must be > 1"),
])
def test_bad_table_settings_are_one_line_before_any_work(tmp_path, capsys, method, extra,
                                                         message):
    from robustdistill.se.table import main

    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "t"), "--methods", method, "--seeds", "0",
              "--skip-teachers", *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"python -m robustdistill.se.table: error: {method}_")
    assert message in err
    assert not (tmp_path / "t").exists()


def test_claim_interval_uses_students_t_for_any_number_of_seeds():
    """Over 10 seeds the interval used 2.0 instead of Student's t (2.228 for 10 degrees of
    freedom): too narrow, silently."""
    from robustdistill.se.table import render_table

    diffs = [0.5, 1.5] * 5 + [1.0]  # 11 seeds: mean 1.0, sample std sqrt(0.25 * 10 / 10) = 0.5
    results = {}
    for seed, d in enumerate(diffs):
        results[f"mixture_63x_s{seed}"] = {"parameters": 1, "results": {"-5": _scores(0.0)}}
        results[f"two_step_gram_63x_s{seed}"] = {"parameters": 1,
                                                "results": {"-5": _scores(d)}}
    std = float(np.std(diffs, ddof=1))
    half = 2.228138851986274 * std / np.sqrt(11)  # t(0.975, 10 dof), by hand
    text = render_table(results, ["-5"], ["mixture", "two_step_gram"], [63])
    assert f"95% t-interval [{1.0 - half:.2f}, {1.0 + half:.2f}] dB" in text


def test_a_missing_test_noise_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """It used to end in a FileNotFoundError traceback; runs/data/* gets the split hint."""
    import soundfile as sf

    from robustdistill.se.table import main

    speech = tmp_path / "speech" / "spk"
    speech.mkdir(parents=True)
    sf.write(speech / "a.wav", 0.1 * np.sin(np.arange(16000) / 10.0), 16000)
    monkeypatch.chdir(tmp_path)  # no runs/data here
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "t"), "--methods", "supervised", "--seeds", "0",
              "--skip-teachers", "--test-speech", str(tmp_path / "speech"), "--test-noise",
              "runs/data/noise_test", "--steps", "2",
              "--configs", str(Path(__file__).resolve().parents[1] / "configs")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m robustdistill.se.table: error: test set: ")
    assert err.endswith("runs/data/* is made once by `bash scripts/split_shared_data.sh`")
