"""train-se checkpoints and resume, its command's errors, and the SE table's merge: pins found by mutation testing (2026-12-06), each failing on a planted bug the other tests let through."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from conftest import se_train_args, write_se_data

from robustdistill.checkpoints import CheckpointError, verify_checkpoint
from robustdistill.se.train import load_se_config, train_se


# ---------------------------------------------------------------------------- train-se
def test_se_refuses_to_resume_from_an_altered_checkpoint(tmp_path):
    """The newest checkpoint is verified against its manifest before it is loaded."""
    write_se_data(tmp_path)
    out = tmp_path / "r"
    train_se(load_se_config(None, se_train_args(tmp_path, out, 2)))
    state = out / "checkpoints" / "checkpoint_2" / "training_state.json"
    state.write_text(state.read_text() + " ")  # still valid JSON, one byte longer
    with pytest.raises(CheckpointError):
        train_se(load_se_config(None, se_train_args(tmp_path, out, 3)))


def test_se_start_removes_tmp_leftovers_it_never_writes_again(tmp_path):
    """A ``.tmp-`` folder a kill left goes at the next start even when no checkpoint of that
    number is written again."""
    write_se_data(tmp_path)
    out = tmp_path / "r"
    leftover = out / "checkpoints" / ".tmp-checkpoint_7"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half")
    train_se(load_se_config(None, se_train_args(tmp_path, out, 2)))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint_1", "checkpoint_2"]


def test_se_resume_from_legacy_checkpoints_replaces_an_unfinished_legacy_folder(tmp_path):
    """An old run killed between ``save_state`` and ``step.json`` left ``checkpoint_3``
    without ``step.json``: the run resumes from ``checkpoint_2`` and writes a complete
    ``checkpoint_3`` over the unfinished one."""
    write_se_data(tmp_path)
    out = tmp_path / "r"
    train_se(load_se_config(None, se_train_args(tmp_path, out, 2)))
    ckpts = out / "checkpoints"
    for path in ckpts.iterdir():  # as the trainer before the manifest left them
        (path / "checkpoint.json").unlink()
        (path / "training_state.json").unlink()
        (path / "step.json").write_text(json.dumps({"step": int(path.name.split("_")[1])}))
    shutil.copytree(ckpts / "checkpoint_2", ckpts / "checkpoint_3")
    (ckpts / "checkpoint_3" / "step.json").unlink()  # killed before its step.json
    train_se(load_se_config(None, se_train_args(tmp_path, out, 4, "--training.keep_checkpoints",
                                           "5")))
    assert verify_checkpoint(ckpts / "checkpoint_3")["step"] == 3
    assert verify_checkpoint(ckpts / "checkpoint_4")["step"] == 4
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_se_starting_a_finished_run_again_writes_no_checkpoint(tmp_path, monkeypatch):
    """Nothing is saved (and the last checkpoint never deleted to be written again)."""
    import robustdistill.checkpoints as checkpoints_module

    write_se_data(tmp_path)
    out = tmp_path / "r"
    train_se(load_se_config(None, se_train_args(tmp_path, out, 2)))
    published = []
    real = checkpoints_module.publish_checkpoint
    monkeypatch.setattr(checkpoints_module, "publish_checkpoint",
                        lambda tmp, final: published.append(final) or real(tmp, final))
    train_se(load_se_config(None, se_train_args(tmp_path, out, 2)))
    assert published == []


def test_se_resumed_run_shows_each_step_once_in_tensorboard(tmp_path, monkeypatch,
                                                           die_at_checkpoint):
    """Killed while saving step 3 (step 3 already logged): the resumed run's TensorBoard
    hides the killed run's step 3 (``purge_step``), so every step appears once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_se_data(tmp_path)
    out = tmp_path / "r"
    args = se_train_args(tmp_path, out, 4, "--training.report_to", "tensorboard")
    die_at_checkpoint(3)
    with pytest.raises(KeyboardInterrupt):
        train_se(load_se_config(None, args))
    monkeypatch.undo()
    time.sleep(1.1)  # see _resume_later in test_reliability_checkpoints.py
    train_se(load_se_config(None, args))
    accumulator = EventAccumulator(str(out / "logs" / "se"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3, 4]


def test_se_main_refuses_both_ratio_and_hidden_size_as_a_usage_error(tmp_path, capsys):
    from robustdistill.se.train import main

    with pytest.raises(SystemExit) as stop:
        main(["--student.ratio", "63", "--student.hidden_size", "8",
              "--output_dir", str(tmp_path / "r")])
    assert stop.value.code == 2
    assert "set exactly one of student.ratio and student.hidden_size" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_se_main_names_a_missing_data_folder_and_the_split_script_for_runs_data(
        tmp_path, capsys):
    from robustdistill.se.train import main

    write_se_data(tmp_path)
    missing = tmp_path / "runs" / "data" / "speech_train"
    args = se_train_args(tmp_path, tmp_path / "r", 1)
    args[args.index("--data.speech_dir") + 1] = str(missing)
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "bash scripts/split_shared_data.sh" in err
    args[args.index("--data.speech_dir") + 1] = str(tmp_path / "elsewhere")
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "elsewhere") in err and "split_shared_data" not in err

def test_se_killed_before_its_first_checkpoint_starts_again_logging_each_step_once(
        tmp_path, monkeypatch, die_at_checkpoint):
    """Killed while publishing its first checkpoint (steps 1-2 logged, no checkpoint): the
    next start begins at step 0 and its ``metrics.jsonl`` equals an uninterrupted run's byte for
    byte, TensorBoard showing each step once (before 2026-12-07 the killed run's lines stayed:
    steps 1, 2, 1, 2, 3, 4)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_se_data(tmp_path)
    full, part = tmp_path / "full", tmp_path / "part"
    extra = ("--training.save_every", "2", "--training.report_to", "tensorboard")
    train_se(load_se_config(None, se_train_args(tmp_path, full, 4, *extra)))
    die_at_checkpoint(1)
    with pytest.raises(KeyboardInterrupt):
        train_se(load_se_config(None, se_train_args(tmp_path, part, 4, *extra)))
    monkeypatch.undo()
    assert [json.loads(x)["step"] for x in (part / "metrics.jsonl").read_text().splitlines()
            ] == [1, 2]
    time.sleep(1.1)  # a new TensorBoard event file name (see test_reliability_checkpoints.py)
    train_se(load_se_config(None, se_train_args(tmp_path, part, 4, *extra)))
    assert (part / "metrics.jsonl").read_bytes() == (full / "metrics.jsonl").read_bytes()
    assert (json.loads((part / "final_state.json").read_text())["parameter_sha256"]
            == json.loads((full / "final_state.json").read_text())["parameter_sha256"])
    accumulator = EventAccumulator(str(part / "logs" / "se"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3, 4]


def test_se_main_refuses_a_truncated_newest_checkpoint_in_one_line(tmp_path, capsys):
    """A newest checkpoint whose ``model.safetensors`` was cut short is refused by name, in
    one usage line (exit 2) saying how to go on; it was a ``CheckpointError`` traceback."""
    from robustdistill.se.train import main

    write_se_data(tmp_path)
    out = tmp_path / "r"
    assert main(se_train_args(tmp_path, out, 2)) == 0
    weights = out / "checkpoints" / "checkpoint_2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(se_train_args(tmp_path, out, 3))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert "checkpoint_2: model.safetensors has 100 bytes" in err[-1]
    assert "remove that folder to resume from the checkpoint before it" in err[-1]
    assert weights.stat().st_size == 100 and (out / "checkpoints" / "checkpoint_1").is_dir()


def test_se_resume_past_max_steps_is_refused_in_one_line(tmp_path, capsys):
    """A run whose checkpoint is at step 2 started again with ``max_steps 1``: refused, as
    ``distill`` refuses it. It exited 0 writing ``final_state.json`` with step 1 beside the
    2-step student, and said nothing."""
    from robustdistill.se.train import main

    write_se_data(tmp_path)
    out = tmp_path / "r"
    assert main(se_train_args(tmp_path, out, 2)) == 0
    final = (out / "final_state.json").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(se_train_args(tmp_path, out, 1))
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "checkpoint_2 is at step 2, past training.max_steps 1: a resume cannot shorten a " \
           "run" in line and "allowed: training.max_steps >= 2" in line
    assert (out / "final_state.json").read_text() == final and json.loads(final)["step"] == 2


@pytest.mark.parametrize(("extra", "change"), [
    (["--seed", "1"], "seed 0 -> 1"),
    (["--training.batch_size", "3"], "training.batch_size 2 -> 3"),
    (["--data.crop_seconds", "0.5"], "data.crop_seconds 0.25 -> 0.5"),
    (["--data.snr_range", "[0, 10]"], "data.snr_range [-5.0, 20.0] -> [0.0, 10.0]"),
    (["--data.pool_size", "4"], "data.pool_size 0 -> 4"),
])
def test_se_resume_that_would_draw_other_batches_is_refused_in_one_line(tmp_path, capsys,
                                                                         extra, change):
    """A resume with another seed, batch size or data setting draws other crops, noises and
    SNRs from its first step on (each batch is a function of ``(seed, step, rank)`` and the
    data settings): refused before any work, naming the change and what is allowed, as
    ``distill`` refuses its seed, batch and crop. Until 2026-12-07 it resumed with a warning
    and ended as a run whose weights no run with either setting gives (seed 0 -> 1 on real
    LibriSpeech: final SHA-256 3e40c7f0... instead of the uninterrupted 8bc66771...)."""
    from robustdistill.se.train import main

    write_se_data(tmp_path)
    out = tmp_path / "r"
    assert main(se_train_args(tmp_path, out, 1)) == 0
    state = {p: p.read_bytes() for p in (out / "checkpoints").rglob("*") if p.is_file()}
    config = (out / "config.yaml").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(se_train_args(tmp_path, out, 2, *extra))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].endswith(
        f"checkpoint_1 was trained with other settings that fix its batches (the crops, noises, "
        f"SNRs and rooms each step draws); resuming would not continue that run: {change} "
        "(allowed: the run's seed, training.batch_size and data settings, with other changes "
        "such as the data folders' places, a learning rate, a loss weight or a larger "
        "training.max_steps said and recorded in environment.json; or another output_dir)")
    # nothing was written: the run goes on as it was with its own settings
    assert {p: p.read_bytes() for p in (out / "checkpoints").rglob("*") if p.is_file()} == state
    assert (out / "config.yaml").read_text() == config
    assert len(json.loads((out / "environment.json").read_text())) == 1
    assert not (out / "final_state.json").exists() or json.loads(
        (out / "final_state.json").read_text())["step"] == 1


def test_se_resume_may_move_the_data_folders_with_a_warning(tmp_path, caplog):
    """The speech, noise and RIR folders may change at a resume (data moved to another place),
    as ``distill`` allows its folders: said, and kept in ``environment.json``."""
    import shutil

    write_se_data(tmp_path)
    shutil.copytree(tmp_path / "noise", tmp_path / "moved")
    out = tmp_path / "r"
    train_se(load_se_config(None, se_train_args(tmp_path, out, 1)))
    with caplog.at_level("WARNING", logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(
            tmp_path, out, 2, "--data.noise_dir", str(tmp_path / "moved"))))
    change = f"data.noise_dir {tmp_path / 'noise'} -> {tmp_path / 'moved'}"
    assert json.loads((out / "environment.json").read_text())[-1]["config_changes"] == [change]
    assert change in caplog.text
    assert json.loads((out / "final_state.json").read_text())["step"] == 2


def test_se_resume_on_another_process_count_is_refused_before_the_teacher_loads(
        tmp_path, monkeypatch):
    """Each rank draws its own batches from ``(seed, step, rank)``: a resume on another number
    of processes would train on other batches (nothing refused it; ``distill`` does). The
    checkpoint records its count; a resume on another one is refused before the teacher
    loads, and one on the same count goes on."""
    from accelerate import Accelerator

    from robustdistill.se import train as se_train

    write_se_data(tmp_path)
    out = tmp_path / "r"
    train_se(load_se_config(None, se_train_args(tmp_path, out, 1)))
    state = json.loads((out / "checkpoints" / "checkpoint_1" / "training_state.json").read_text())
    assert state["num_processes"] == 1
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    monkeypatch.setattr(se_train, "load_teacher", lambda *a: pytest.fail("teacher loaded"))
    with pytest.raises(se_train.ResumeSettingsError,
                       match=r"checkpoint_1 was trained on 1 process\(es\), this resume runs 2: "):
        train_se(load_se_config(None, se_train_args(tmp_path, out, 2)))
    monkeypatch.undo()
    train_se(load_se_config(None, se_train_args(tmp_path, out, 2)))
    assert json.loads((out / "final_state.json").read_text())["step"] == 2


def test_se_resume_names_every_refused_change_at_once(tmp_path, capsys):
    """Several changes that move the batches are named together, sorted, in one line."""
    from robustdistill.se.train import main

    write_se_data(tmp_path)
    out = tmp_path / "r"
    assert main(se_train_args(tmp_path, out, 1)) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(se_train_args(tmp_path, out, 2, "--seed", "3", "--training.batch_size", "1",
                           "--training.learning_rate", "0.002"))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "resuming would not continue that run: seed 0 -> 3; training.batch_size 2 -> 1 " \
           "(allowed:" in line
    assert "learning_rate" not in line.split("(allowed:")[0]  # allowed: not named as refused


def test_se_resume_changing_only_cadence_and_free_keys_equals_the_uninterrupted_run(
        tmp_path, caplog):
    """What may change at a resume changes no weight: another logging and checkpoint cadence,
    kept checkpoints, threads and trackers, and the noise folder named through a link, resume
    to the uninterrupted run's parameters; the cadence changes are said and recorded, the free
    keys (``training.threads``, ``report_to``, ``max_steps``) and the same folder are not."""
    write_se_data(tmp_path)
    (tmp_path / "noise_link").symlink_to(tmp_path / "noise")
    full, part = tmp_path / "full", tmp_path / "part"
    train_se(load_se_config(None, se_train_args(tmp_path, full, 4)))
    train_se(load_se_config(None, se_train_args(tmp_path, part, 2)))
    with caplog.at_level("WARNING", logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(
            tmp_path, part, 4, "--training.log_every", "2", "--training.save_every", "2",
            "--training.keep_checkpoints", "1", "--training.threads", "1",
            "--data.noise_dir", str(tmp_path / "noise_link"))))
    a = json.loads((full / "final_state.json").read_text())
    b = json.loads((part / "final_state.json").read_text())
    assert a["parameter_sha256"] == b["parameter_sha256"]
    recorded = ["training.keep_checkpoints 2 -> 1", "training.log_every 1 -> 2",
                "training.save_every 1 -> 2"]
    assert json.loads((part / "environment.json").read_text())[-1]["config_changes"] == recorded
    assert "resumed with settings other than the run's config.yaml: " + "; ".join(recorded) \
        in caplog.text


def test_se_resume_with_other_loss_heads_is_refused_before_the_teacher_loads(
        tmp_path, capsys, monkeypatch):
    """A KD term whose trainable heads the checkpoint lacks (cosine bottlenecks) cannot be
    loaded into: refused in one line naming the changes, before the teacher is loaded. It
    loaded the teacher, then ended in a ``FileNotFoundError: .../pytorch_model_1.bin``
    traceback from accelerate's ``load_state``."""
    from robustdistill.se import train as se_train

    write_se_data(tmp_path)
    out = tmp_path / "r"
    assert se_train.main(se_train_args(tmp_path, out, 1)) == 0

    def no_teacher(name):
        raise AssertionError("the teacher was loaded before the refusal")

    monkeypatch.setattr(se_train, "load_teacher", no_teacher)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        se_train.main(se_train_args(tmp_path, out, 2, "--loss.teacher", "nsnet2",
                                    "--loss.cosine_weight", "10"))
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith(f"output_dir {str(out)!r} holds a run of other loss heads "
                         "(loss.cosine_weight 0.0 -> 10.0; loss.teacher None -> nsnet2): "
                         "checkpoint_1 cannot be loaded into this one; resume with the run's "
                         "loss settings, or give another output_dir")


# ---------------------------------------------------------------------------- SE table
def _scores(si_sdr):
    return {"si_sdr": si_sdr, "si_sdr_i": si_sdr + 5, "pesq": 2.0, "pesq_i": 0.5, "stoi": 0.8,
            "stoi_i": 0.1}


def _table_folders(tmp_path, snrs_per_seed):
    folders = []
    for seed, snrs in enumerate(snrs_per_seed):
        folder = tmp_path / f"s{seed}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({f"mixture_63x_s{seed}": {
            "parameters": 100, "results": {s: _scores(float(s)) for s in snrs}}}))
        folders.append(str(folder))
    return folders


def test_se_table_merge_orders_snrs_numerically_and_keeps_only_shared_ones(tmp_path):
    from robustdistill.se.table import main as table_main

    folders = _table_folders(tmp_path, [["5", "10", "-5"], ["10", "5"]])
    assert table_main(["--merge", *folders, "--out", str(tmp_path / "m"), "--methods",
                       "mixture", "--sizes", "63"]) == 0
    text = (tmp_path / "m" / "table.md").read_text()
    assert text.index("Input SNR 5 dB") < text.index("Input SNR 10 dB")
    assert "Input SNR -5 dB" not in text


def test_se_table_merge_keeps_the_snrs_asked_for(tmp_path):
    from robustdistill.se.table import main as table_main

    folders = _table_folders(tmp_path, [["0", "-5"], ["0", "-5"]])
    assert table_main(["--merge", *folders, "--out", str(tmp_path / "m"), "--methods",
                       "mixture", "--sizes", "63", "--snrs", "0"]) == 0
    text = (tmp_path / "m" / "table.md").read_text()
    assert "Input SNR 0 dB" in text and "Input SNR -5 dB" not in text


def test_se_table_default_snrs_are_minus_5_0_5(tmp_path, monkeypatch):
    import robustdistill.se.table as table

    asked = []

    def stop(speech, noise, snrs, *rest):
        asked.append(snrs)
        raise KeyboardInterrupt

    monkeypatch.setattr(table, "make_test_pairs", stop)
    with pytest.raises(KeyboardInterrupt):
        table.main(["--out", str(tmp_path / "t")])
    assert asked == [(-5.0, 0.0, 5.0)]


@pytest.mark.parametrize(("key", "value"), [("keep_checkpoints", "0"), ("log_every", "0"),
                                            ("max_steps", "0"), ("save_every", "-1")])
def test_se_training_counts_below_their_minimum_are_refused_at_load(key, value):
    """``keep_checkpoints 0`` used to be accepted (and kept every checkpoint); ``log_every 0``
    failed after the first step (division by zero)."""
    from robustdistill.config import ConfigError

    with pytest.raises(ConfigError, match=f"{key} must be >= "):
        load_se_config(None, ["--student.ratio", "63", f"--training.{key}", value])
    with pytest.raises(ConfigError, match=r"unknown config key 'training\.max_step'"):
        load_se_config(None, ["--training.max_step", "3"])


def test_se_table_merge_refuses_results_that_share_no_snr_and_names_dropped_ones(
        tmp_path, caplog):
    import logging

    from robustdistill.se.table import main as table_main

    with pytest.raises(SystemExit):
        table_main(["--merge", *_table_folders(tmp_path / "a", [["0"], ["5"]]),
                    "--out", str(tmp_path / "m1")])
    with caplog.at_level(logging.WARNING):
        assert table_main(["--merge", *_table_folders(tmp_path / "b", [["0", "5"], ["0"]]),
                           "--out", str(tmp_path / "m2"), "--methods", "mixture",
                           "--sizes", "63"]) == 0
    assert "SNRs 5 dB are not in every merged result" in caplog.text


def test_se_resume_may_turn_the_rir_check_off_with_a_warning_as_the_rir_folder(tmp_path, caplog):
    """``data.rir_check`` changes which files of ``data.rir_dir`` are rooms, as a folder given
    other files does: allowed with a warning as the folder is (``_RESUME_FOLDERS``), not
    refused (a run from before the key existed resumes with ``None -> True`` said)."""
    write_se_data(tmp_path)
    out = tmp_path / "r"
    train_se(load_se_config(None, se_train_args(tmp_path, out, 1)))
    with caplog.at_level("WARNING", logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(tmp_path, out, 2,
                                                    "--data.rir_check", "false")))
    change = "data.rir_check True -> False"
    assert json.loads((out / "environment.json").read_text())[-1]["config_changes"] == [change]
    assert change in caplog.text
    assert json.loads((out / "final_state.json").read_text())["step"] == 2
