"""Mutation-testing additions for the per-item ``unscored`` / paired-comparison changes of
``downstream.results`` and ``downstream.report``, the card's language, tags and verification
section (``robustdistill.publish``), and ``train-speaker``'s argument checks: each test pins a
behaviour a hand-planted mutant changed without any other test failing."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest

from downstream.entries import upstream_labels
from downstream.items import write_items
from downstream.paired import paired_comparisons
from downstream.report import report
from downstream.table import unscored_count, unscored_note

NAN = float("nan")
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------- downstream helpers
def _pesq_records(pesq):
    return [{"key": f"u{i}", "pesq": p, "si_sdr": 5.0, "stoi": 0.8} for i, p in enumerate(pesq)]


def _multi_seed(tmp_path, name, per_seed, test_set, hashes):
    """A merged SE result of seeds ``per_seed`` (``{seed: pesq list}``, in that order), its
    items on disk, with ``per_seed_test_set_sha1`` = ``hashes`` (``{seed: hash or None}``)."""
    folder = tmp_path / name
    seeds = list(per_seed)
    for s, pesq in per_seed.items():
        (folder / f"s{s}" / "items").mkdir(parents=True)
        write_items(folder / f"s{s}" / "items" / "clean.jsonl", _pesq_records(pesq))
    finite = [p for v in per_seed.values() for p in v if math.isfinite(p)]
    return {"task": "speech_enhancement", "upstream": f"/models/{name}",
            "primary_metric": "pesq", "higher_is_better": True, "item_unit": "utterance",
            "conditions": ["clean"], "metrics": {"clean": {"pesq": float(np.mean(finite))}},
            "source_dir": str(folder), "seed": seeds, "seeds": seeds,
            "seed_dirs": [f"s{s}" for s in seeds], "test_set_sha1": test_set,
            "per_seed_test_set_sha1": {str(s): h for s, h in hashes.items()}}


def test_seeds_without_a_recorded_test_set_hash_are_never_paired(tmp_path):
    # Both results ran seeds 0 and 1, but only seed 0's test-set hash is recorded (seed 1's
    # run had none): a seed whose test set is unknown on either side is not compared.
    a = _multi_seed(tmp_path, "a", {0: [3.0, 2.0], 1: [1.0, 1.0]}, "ha", {0: "h0", 1: None})
    b = _multi_seed(tmp_path, "b", {0: [1.0, 1.0], 1: [0.0, 0.0], 2: [1.0, 1.0]}, "hb",
                    {0: "h0", 1: None, 2: "h2"})
    (row,), notes = paired_comparisons([a, b], resamples=20)
    assert row["seeds"] == [0]
    assert row["difference"] == pytest.approx(1.5)  # seed 0: 2.5 - 1.0
    assert "compared on seed 0 only" in notes[0]
    # no hash recorded for any seed of either: nothing can be paired
    a = _multi_seed(tmp_path, "c", {0: [3.0, 2.0], 1: [1.0, 1.0]}, "hc", {0: None, 1: None})
    b = _multi_seed(tmp_path, "d", {0: [1.0, 1.0], 1: [0.0, 0.0], 2: [1.0, 1.0]}, "hd",
                    {0: None, 1: None, 2: None})
    rows, notes = paired_comparisons([a, b], resamples=20)
    assert rows == [] and notes == ["c vs d: different test sets (test_set_sha1), no paired test"]


def test_shared_seeds_read_only_those_seeds_of_the_second_result(tmp_path):
    # a ran seeds 0, 1; b ran 2, 1 (in that order). Only seed 1 is shared:
    # a = 3, 2 (mean 2.5), b = 1, 1 -> 1.5; b's seed 2 (0, 0) must not be read in.
    a = _multi_seed(tmp_path, "a", {0: [9.0, 9.0], 1: [3.0, 2.0]}, "ha", {0: "h0", 1: "h1"})
    b = _multi_seed(tmp_path, "b", {2: [0.0, 0.0], 1: [1.0, 1.0]}, "hb", {2: "h2", 1: "h1"})
    (row,), notes = paired_comparisons([a, b], resamples=20)
    assert row["seeds"] == [1] and row["excluded_items"] == 0
    assert row["difference"] == pytest.approx(1.5)
    assert "compared on seed 1 only" in notes[0] and "(a: 0, 1; b: 2, 1)" in notes[0]


def test_one_seed_without_a_jointly_scored_item_makes_the_multi_seed_difference_undefined(
        tmp_path):
    # seed 0: a failed PESQ on both utterances (no item both scored); seed 1: 2.5 - 1 = 1.5.
    # The metric of seed 0, so the mean over seeds, is undefined: NaN, not seed 1's 1.5.
    a = _multi_seed(tmp_path, "a", {0: [NAN, NAN], 1: [3.0, 2.0]}, "same", {0: "h0", 1: "h1"})
    b = _multi_seed(tmp_path, "b", {0: [1.0, 1.0], 1: [1.0, 1.0]}, "same", {0: "h0", 1: "h1"})
    (row,), notes = paired_comparisons([a, b], resamples=20)
    assert row["excluded_items"] == 2 and row["resamples"] == 0
    assert all(math.isnan(row[k]) for k in ("difference", "low", "high", "p_value"))
    assert row["significant"] is False
    assert "clean 2 of 4 (seed x item records, summed over seeds)" in notes[-1]


def test_a_names_key_by_label_wins_over_one_by_full_path():
    # the documented precedence: label, then full upstream id, then unique folder name
    assert upstream_labels([{"upstream": "/models/x"}],
                           {"x": "by label", "/models/x": "by path"}) == ["by label"]
    fbank = [{"upstream": "fbank"}, {"upstream": "fbank"}]
    assert upstream_labels(fbank) == ["fbank #1", "fbank #2"]
    assert upstream_labels(fbank, {"fbank #1": "F1", "fbank": "F"}) == ["F1", "F"]


def test_report_comparison_rows_follow_a_rename_by_full_path(tmp_path):
    results = [{"upstream": "/m/a", "primary_metric": "accuracy", "conditions": ["clean"],
                "metrics": {"clean": {"accuracy": 0.9}}},
               {"upstream": "/m/b", "primary_metric": "accuracy", "conditions": ["clean"],
                "metrics": {"clean": {"accuracy": 0.8}}}]
    row = {"a": "a", "b": "b", "condition": "clean", "difference": 0.1, "low": 0.05,
           "high": 0.15, "significant": True}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": results, "comparisons": [row]}))
    text = report(path, scale=100, names={"/m/a": "A", "/m/b": "B"})
    assert "| A | 90.0 |" in text and "| B | 80.0 |" in text
    assert "| A - B | +10.0 [+5.0, +15.0]* |" in text


def test_a_boolean_unscored_count_counts_nothing():
    result = {"unscored": {"snr0": {"pesq": True, "si_sdr": 2}}}
    assert unscored_count(result, "snr0", "pesq") == 0
    assert unscored_count(result, "snr0", "si_sdr") == 2
    assert unscored_count(result, "clean", "si_sdr") == 0


def test_unscored_note_says_summed_over_seeds_only_for_several_seeds():
    one = {"seeds": [3], "item_unit": "utterance", "unscored": {"snr0": {"pesq": 1}}}
    note = unscored_note([one])
    assert note == ('"(n unscored)" counts the test utterances of that condition on which the '
                    "metric could not be computed (e.g. PESQ failed, or SI-SDR is undefined "
                    "for a silent output); the value leaves them out, which favours a model "
                    "that fails on them.")
    assert "summed over seeds" in unscored_note([dict(one, seeds=[3, 4])])


# ----------------------------------------------------------------- publish: provenance
def _run(config, recipe="ssl", run_dir="."):
    from robustdistill.publish.provenance import RunSummary

    return RunSummary(run_dir=Path(run_dir), config=config, teacher="", teacher_facts=None,
                      recipe=recipe)


@pytest.mark.parametrize("data, languages", [
    # the dataset's config names the corpus: English
    ({"train_dataset": "org/speech", "dataset_config": "librispeech_clean"}, ("en",)),
    # a LibriSpeech-named dataset whose config is Multilingual LibriSpeech: unknown
    ({"train_dataset": "org/librispeech", "dataset_config": "mls_german"}, ()),
    # "fsdd" only as a word of the name
    ({"train_dir": "/data/fsdd_wavs"}, ("en",)),
    ({"train_dir": "/data/FSDD"}, ("en",)),
    ({"train_dir": "/data/hfsdd2"}, ()),
])
def test_training_language_reads_the_dataset_config_and_whole_corpus_names(data, languages):
    from robustdistill.publish.provenance import training_language

    assert training_language(_run({"data": data})).languages == languages


def test_synthetic_data_needs_items_and_no_real_source():
    from robustdistill.publish.provenance import is_synthetic_data, training_language

    assert is_synthetic_data({"data": {"synthetic_items": 64}})
    assert not is_synthetic_data({"data": {"synthetic_items": 0}})
    assert not is_synthetic_data({"data": {"train_dataset": "openslr/librispeech_asr",
                                           "synthetic_items": 64}})
    assert not is_synthetic_data({"data": {"train_dir": "x", "synthetic_items": 64}})
    empty = training_language(_run({"data": {"synthetic_items": 0}}))
    assert empty == type(empty)((), "the run's config does not record its training speech")


def test_synthetic_seconds_not_a_pair_is_not_recorded():
    from robustdistill.publish.provenance import _describe_data

    for seconds in ([2.0], [1.0, 2.0, 3.0], "2-5"):
        train, _ = _describe_data({"synthetic_items": 8, "synthetic_seconds": seconds})
        assert train.startswith("8 generated speech-like signals of a length not recorded "
                                "(`robustdistill.synthetic`), no real speech")
    train, _ = _describe_data({"synthetic_items": 8, "synthetic_seconds": [2, 5.5]})
    assert train.startswith("8 generated speech-like signals of 2-5.5 s ")


# ------------------------------------------------------------ publish: card and results
def test_task_config_replaces_whitespace_of_the_label():
    from robustdistill.publish.card_results import task_config
    from robustdistill.publish.results import TaskResult

    task = TaskResult(task="utterance_classification", label=" keyword \t spotting ",
                      upstream="u", primary_metric="accuracy", higher_is_better=True,
                      conditions=["snr0"], metrics={}, dataset="fsdd")
    assert task_config(task, "snr0") == "keyword_spotting-snr0"


def test_speaker_card_without_verification_or_downstream_results_says_nothing_is_measured():
    from types import SimpleNamespace

    from robustdistill.publish.card import _limitations

    student = SimpleNamespace(receptive_field=None)
    items = _limitations(None, [], student, [], None, (), "speaker")
    assert items[1:] == ["No downstream results were given: its usefulness is not measured "
                         "here.", "It expects 16 kHz mono audio."]
    from robustdistill.publish.card_evaluation import VerificationResult

    rows = [VerificationResult("fsdd", "fsdd", 0.1, 0.2)]
    items = _limitations(None, [], student, [], None, rows, "speaker")
    assert items[1] == ("No downstream (SUPERB) results were given: it is measured only by the "
                        "speaker verification of the Evaluation section.")


def test_a_language_given_for_generated_audio_is_kept_with_a_warning(caplog):
    from robustdistill.publish.card import _language

    synthetic = _run({"data": {"synthetic_items": 64}})
    with caplog.at_level(logging.WARNING, logger="robustdistill.publish.card"):
        assert _language("de", synthetic) == (["de"], None)
    assert "language ['de'] given for a run trained on generated audio, not speech" \
        in caplog.text
    caplog.clear()
    english = _run({"data": {"train_dir": "/data/LibriSpeech/train-clean-100"}})
    with caplog.at_level(logging.WARNING, logger="robustdistill.publish.card"):
        assert _language(["fr"], english) == (["fr"], None)
    assert caplog.text == ""


def test_verification_trial_counts_that_are_not_integers_are_refused(tmp_path):
    """A trial count that is not an integer is refused naming it (until 2026-12-08 the card
    said "not recorded" for it); an absent count is not recorded; an empty count of skipped
    files is no skipped file."""
    from robustdistill.publish.card_evaluation import verification_results, verification_view

    run = _run({"data": {"fsdd_dir": "x/fsdd"}}, "speaker", tmp_path)
    done = tmp_path / "result.json"
    for counts, field, value in (({"target_trials": 12.0, "nontarget_trials": 30},
                                  "target_trials", "12.0 (a JSON number)"),
                                 ({"target_trials": 12, "nontarget_trials": "many"},
                                  "nontarget_trials", '"many" (a JSON string)')):
        done.write_text(json.dumps({"eval": {"fsdd": {"eer": 0.1, "min_dcf": 0.2, **counts}}}))
        with pytest.raises(ValueError, match="^" + re.escape(
                f"{done} is not a result.json as train-speaker writes it: eval.fsdd.{field} "
                f"is {value}, not an integer; the card cannot tell")):
            verification_results(run)
    done.write_text(json.dumps({"eval": {"fsdd": {"eer": 0.1, "min_dcf": 0.2}},
                                "skipped_files": {"fsdd": {}}}))
    (row,) = verification_results(run)
    assert (row.target_trials, row.nontarget_trials) == (None, None)
    view = verification_view(run)
    assert "| `fsdd` | 10.00 % | 0.200 | not recorded | not recorded |" in view["table"]
    testing = dict(view["lines"])["Testing data"]
    assert "skipped" not in testing
    assert testing.endswith("(checked before training)")


# ------------------------------------------------------------------ train-speaker checks
def test_gap_loads_one_crop_per_utterance_and_ignores_the_cache_folder(tmp_path, monkeypatch):
    # gap writes no map cache: an ig.cache_dir that is a file does not stop it
    from robustdistill.speaker import cli as cli_mod

    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    calls = {}

    def load_ig_inputs(cfg, crops_per_utterance=None):
        calls["load"] = crops_per_utterance
        return "teacher", ["crop"]

    def completeness_by_steps(cfg, steps, num_crops, inputs=None):
        calls["gap"] = (steps, num_crops, inputs)
        return {}

    monkeypatch.setattr(cli_mod, "load_ig_inputs", load_ig_inputs)
    monkeypatch.setattr(cli_mod, "completeness_by_steps", completeness_by_steps)
    assert cli_mod.main(["gap", "--config", str(REPO / "configs" / "imlkd_speaker.yaml"),
                         "--ig.cache_dir", str(afile), "--steps", "8,2,8", "--crops",
                         "3"]) == 0
    assert calls == {"load": 1, "gap": ([2, 8], 3, ("teacher", ["crop"]))}


def test_train_without_the_map_cache_does_not_check_its_folder(tmp_path, monkeypatch):
    from robustdistill.speaker import cli as cli_mod

    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    trained = []
    monkeypatch.setattr(cli_mod, "load_run_inputs", lambda cfg: ("t", ["c"], {}, {}))
    monkeypatch.setattr(cli_mod, "train_system",
                        lambda cfg, *args, **kwargs: trained.append(cfg.ig.use_cache) or {})
    argv = ["train", "--config", str(REPO / "configs" / "imlkd_speaker.yaml"),
            "--ig.cache_dir", str(afile), "--training.output_dir", str(tmp_path / "out")]
    assert cli_mod.main([*argv, "--ig.use_cache", "false"]) == 0
    assert trained == [False]
    with pytest.raises(SystemExit) as stop:  # with the cache on, the file is refused
        cli_mod.main(argv)
    assert stop.value.code == 2 and trained == [False]


def test_load_ig_inputs_takes_the_crops_per_utterance_asked_for(monkeypatch):
    from types import SimpleNamespace

    from robustdistill.speaker import ig as ig_mod
    from robustdistill.speaker.config import SpeakerKDConfig

    asked = []
    monkeypatch.setattr(ig_mod, "load_teacher", lambda cfg: SimpleNamespace(fingerprint="f"))
    monkeypatch.setattr(ig_mod, "load_train_crops",
                        lambda folder, seconds, per, **kw: asked.append(per) or [])
    cfg = SpeakerKDConfig()
    assert cfg.data.crops_per_utterance == 2
    teacher, crops = ig_mod.load_ig_inputs(cfg, 1)
    assert teacher.cached_fingerprint == "f" and crops == []
    ig_mod.load_ig_inputs(cfg)
    assert asked == [1, 2]


def test_completeness_by_steps_attributes_only_the_first_num_crops(monkeypatch):
    import torch

    from downstream.config import from_dict
    from robustdistill.speaker import ig as ig_mod
    from robustdistill.speaker.config import SpeakerKDConfig
    from robustdistill.speaker.data import Crop
    from robustdistill.speaker.ge2e import GE2E

    torch.manual_seed(0)
    teacher = GE2E(hidden_size=8, embedding_size=8, num_layers=1).eval().requires_grad_(False)
    teacher.cached_fingerprint = teacher.fingerprint
    rng = np.random.default_rng(0)
    crops = [Crop(f"s{i % 2}", f"k{i}", (0.1 * rng.standard_normal(3200)).astype(np.float32))
             for i in range(4)]
    cfg = from_dict(SpeakerKDConfig, {"ig": {"durations": [None], "n_steps": 2,
                                             "use_cache": False}})
    seen = []
    real = ig_mod.attribute_segments

    def counting(model, audio, *args, **kwargs):
        seen.append(len(audio))
        return real(model, audio, *args, **kwargs)

    monkeypatch.setattr(ig_mod, "attribute_segments", counting)
    out = ig_mod.completeness_by_steps(cfg, [4, 2], 2, (teacher, crops))
    assert seen == [2, 2] and sorted(out) == [2, 4]
    assert out[4]["map_l1_to_max_steps"] == 0.0
