"""train-se under bad data and bad values: non-finite steps are skipped (and stop the run when
they persist), unusable speech files are dropped at indexing, config values are type-checked,
and start-up audio errors are one-line messages."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import free_port, se_train_args, write_se_data
from safetensors.torch import load_file

from robustdistill.audio import AudioError
from robustdistill.config import ConfigError
from robustdistill.se import run_checkpoints
from robustdistill.se import train as se_train
from robustdistill.se.data import PairConfig, PairMaker, SpeechIndex
from robustdistill.se.losses import SELoss

REPO = Path(__file__).resolve().parents[1]


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"checkpoint_{step}" / "model.safetensors")


def _nan_loss_at(monkeypatch, steps: set[int]) -> None:
    """SELoss returns a NaN loss at ``steps`` whose gradients stay finite (a NaN constant)."""
    forward = SELoss.forward

    def patched(self, step, *args, **kwargs):
        total, parts = forward(self, step, *args, **kwargs)
        return (total + torch.tensor(float("nan")) if step in steps else total), parts

    monkeypatch.setattr(SELoss, "forward", patched)


def test_a_nan_loss_skips_the_update_even_with_finite_gradients(tmp_path, monkeypatch, caplog):
    write_se_data(tmp_path)
    _nan_loss_at(monkeypatch, {1, 2})
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert se_train.main(se_train_args(tmp_path, out, 5, "--training.keep_checkpoints",
                                           "10")) == 0
    final = json.loads((out / "final_state.json").read_text())
    assert (final["skipped_updates"], final["nonfinite_losses"]) == (2, 2)
    assert "step 1: non-finite loss" in caplog.text and "update skipped" in caplog.text
    # steps 1 and 2 (0-based) changed nothing: checkpoints 1, 2 and 3 hold the same weights
    one, three, four = _weights(out, 1), _weights(out, 3), _weights(out, 4)
    assert all(torch.equal(one[k], three[k]) for k in one)
    assert not all(torch.equal(three[k], four[k]) for k in three)


def test_nonfinite_steps_in_a_row_stop_the_run_keeping_the_last_finite_weights(
        tmp_path, monkeypatch, capsys):
    write_se_data(tmp_path)
    batch = PairMaker.batch

    def inf_from_step_2(self, step, *args, **kwargs):
        noisy, clean, idx = batch(self, step, *args, **kwargs)
        return (noisy * float("inf") if step >= 2 else noisy), clean, idx

    monkeypatch.setattr(PairMaker, "batch", inf_from_step_2)
    out = tmp_path / "run"
    rc = se_train.main(se_train_args(tmp_path, out, 10, "--training.max_nonfinite_in_a_row",
                                     "3", "--training.keep_checkpoints", "10"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and "stopped at step 5" in err[-1]
    assert "max_nonfinite_in_a_row=3" in err[-1]
    stopped = json.loads((out / "stopped.json").read_text())
    assert stopped["skipped_updates"] == 3 and stopped["nonfinite_in_a_row"] == 3
    assert not (out / "student").exists() and not (out / "final_state.json").exists()
    last_good, saved = _weights(out, 2), _weights(out, 5)
    assert all(torch.isfinite(v).all() and torch.equal(v, last_good[k])
               for k, v in saved.items())
    state = json.loads((out / "checkpoints" / "checkpoint_5" / "training_state.json")
                       .read_text())
    assert state["skipped_updates"] == 3


def _speech_folder(root: Path, good: int, silent: int) -> Path:
    folder = root / "speech"
    folder.mkdir()
    t = np.arange(8000) / 16000
    for i in range(good):
        sf.write(folder / f"good{i}.wav", (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32),
                 16000)
    for i in range(silent):
        sf.write(folder / f"zero{i}.wav", np.zeros(8000, np.float32), 16000)
    return folder


def _maker(tmp_path: Path, speech: Path) -> PairMaker:
    (tmp_path / "noise").mkdir(exist_ok=True)
    sf.write(tmp_path / "noise" / "n.wav",
             (0.05 * np.random.default_rng(0).standard_normal(20000)).astype(np.float32), 16000)
    return PairMaker(PairConfig(speech_dir=str(speech), noise_dir=str(tmp_path / "noise"),
                                rir_dir=None, reverb_prob=0.0, crop_seconds=0.25))


def test_silent_files_are_dropped_at_indexing_and_never_drawn(tmp_path, caplog):
    speech = _speech_folder(tmp_path, good=1, silent=8)
    with caplog.at_level(logging.WARNING):
        maker = _maker(tmp_path, speech)
    assert [Path(f).name for f in maker.speech.files] == ["good0.wav"]
    assert set(maker.speech.skipped.values()) == {"silent"} and len(maker.speech.skipped) == 8
    assert "zero3.wav" in caplog.text
    for step in range(40):  # the old code drew silent files 10 times in a row and stopped
        _, clean, _ = maker.batch(step, 2)
        assert bool((clean.abs().amax(dim=1) > 0).all())


def test_silent_crops_inside_a_good_file_are_drawn_again_never_failing(tmp_path):
    speech = tmp_path / "speech"
    speech.mkdir()
    x = np.zeros(160000, np.float32)  # 10 s, speech only in its first 0.1 s
    x[:1600] = 0.1 * np.sin(2 * np.pi * 200 * np.arange(1600) / 16000)
    sf.write(speech / "mostly_silent.wav", x, 16000)
    maker = _maker(tmp_path, speech)
    for step in range(30):
        _, clean, _ = maker.batch(step, 2)
        assert bool((clean.abs().amax(dim=1) > 0).all())


def test_a_folder_with_no_usable_speech_names_its_files(tmp_path):
    speech = _speech_folder(tmp_path, good=0, silent=2)
    with pytest.raises(AudioError, match=r"zero0\.wav \[silent\].*zero1\.wav \[silent\]"):
        SpeechIndex(speech)


def test_a_corrupt_float_file_is_dropped_and_the_run_stays_finite(tmp_path):
    write_se_data(tmp_path)
    x = (0.1 * np.random.default_rng(1).standard_normal(24000)).astype(np.float32)
    x[100] = 1e30  # finite, but it overflows the mixing and the loss
    bad = tmp_path / "speech" / "spk" / "corrupt.wav"
    sf.write(bad, x, 16000, subtype="FLOAT")
    out = tmp_path / "run"
    assert se_train.main(se_train_args(tmp_path, out, 3, "--training.save_every", "0")) == 0
    final = json.loads((out / "final_state.json").read_text())
    assert final["skipped_speech_files"] == {str(bad): "invalid"}
    assert final["skipped_updates"] == 0
    student = load_file(out / "student" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in student.values())


def test_main_reports_a_folder_without_usable_speech_in_one_line(tmp_path, capsys):
    write_se_data(tmp_path)
    for f in (tmp_path / "speech" / "spk").iterdir():
        sf.write(f, np.zeros(8000, np.float32), 16000)
    rc = se_train.main(se_train_args(tmp_path, tmp_path / "run", 2))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) >= 1
    assert err[-1].startswith("robustdistill train-se: error: no usable speech file")
    assert "u0.flac [silent]" in err[-1]


def test_a_missing_data_folder_is_one_line_but_a_later_file_error_keeps_its_traceback(
        tmp_path, capsys, monkeypatch):
    write_se_data(tmp_path)
    args = se_train_args(tmp_path, tmp_path / "run", 2)
    missing = ["--data.noise_dir", str(tmp_path / "no_such_noise")]
    with pytest.raises(SystemExit) as info:
        se_train.main(args + missing)
    assert info.value.code == 2
    assert "no_such_noise" in capsys.readouterr().err.strip().splitlines()[-1]

    def gone(*_args, **_kwargs):  # a checkpoint folder deleted while the run trains
        raise FileNotFoundError("checkpoints/checkpoint_1 vanished")

    monkeypatch.setattr(run_checkpoints, "save_checkpoint", gone)  # what save_run_checkpoint calls
    with pytest.raises(FileNotFoundError, match="vanished"):
        se_train.main(args)


def test_a_missing_teacher_package_is_one_line_with_its_install_hint(tmp_path, capsys,
                                                                      monkeypatch):
    from robustdistill.se.teachers import TeacherUnavailable

    def unavailable(name):
        raise TeacherUnavailable(f"package for {name!r} is not installed: pip install it-0.1")

    monkeypatch.setattr(se_train, "load_teacher", unavailable)
    write_se_data(tmp_path)
    args = se_train_args(tmp_path, tmp_path / "run", 2, "--loss.output_kd_weight", "1",
                         "--loss.teacher", "nsnet2")
    with pytest.raises(SystemExit) as info:
        se_train.main(args)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "is not installed: pip install it-0.1")


@pytest.mark.parametrize(("override", "key"), [
    (["--training.learning_rate", "fast"], "training.learning_rate"),
    (["--seed", "abc"], "seed"),
    (["--seed", "-1"], "seed"),
    (["--training.batch_size", "2.5"], "training.batch_size"),
    (["--training.max_steps", "three"], "training.max_steps"),
    (["--training.cpu", "no"], "training.cpu"),
    (["--training.report_to", "tensorbord"], "report_to"),
    (["--training", "5"], "'training' must be a mapping"),
    (["--data.sample_rate", "8000"], "data.sample_rate"),
    (["--training.max_nonfinite_in_a_row", "0"], "max_nonfinite_in_a_row must be >= 1"),
])
def test_bad_config_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        se_train.load_se_config(None, ["--student.ratio", "63", *override])
    assert key in str(info.value) and "\n" not in str(info.value)


def test_a_recipe_that_is_not_a_mapping_is_a_one_line_usage_error(tmp_path, capsys):
    recipe = tmp_path / "list.yaml"
    recipe.write_text("- a\n- b\n")
    with pytest.raises(SystemExit) as info:
        se_train.main(["--config", str(recipe)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "the top level must be a mapping, got list")


def test_an_empty_section_takes_its_defaults(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("student: {ratio: 63}\ntraining:\n")
    cfg = se_train.load_se_config(recipe, ["--training.learning_rate", "1"])
    assert cfg.training.learning_rate == 1.0 and isinstance(cfg.training.learning_rate, float)
    assert cfg.training.max_nonfinite_in_a_row == 20


def test_a_nan_loss_on_one_process_only_is_skipped_on_both(tmp_path):
    """DDP all-reduces gradients, so a NaN loss with finite gradients on rank 1 alone must
    still skip the update on rank 0: the ranks would differ otherwise."""
    write_se_data(tmp_path)
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(
        "import os, sys, torch\n"
        "from robustdistill.se import train\n"
        "from robustdistill.se.losses import SELoss\n"
        "forward = SELoss.forward\n"
        "def patched(self, step, *a, **k):\n"
        "    total, parts = forward(self, step, *a, **k)\n"
        "    bad = step == 1 and os.environ.get('RANK') == '1'\n"
        "    return (total + torch.tensor(float('nan')) if bad else total), parts\n"
        "SELoss.forward = patched\n"
        "sys.exit(train.main(sys.argv[1:]))\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--main_process_port", str(free_port()), str(script),
           *se_train_args(tmp_path, out, 3, "--training.save_every", "0")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((out / "final_state.json").read_text())
    assert final["num_processes"] == 2 and final["ranks_identical"], final
    assert final["skipped_updates"] == 1 and final["nonfinite_losses"] == 1


def test_scan_cache_decodes_only_new_or_changed_files_and_keeps_failures(tmp_path, monkeypatch):
    import os

    import numpy as np
    import soundfile as sf

    import robustdistill.se.data as se_data

    speech = tmp_path / "speech"
    speech.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(speech / f"u{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32),
                 16000)
    sf.write(speech / "silent.wav", np.zeros(8000, np.float32), 16000)
    decoded = []
    real_scan = se_data.scan_speech_file
    monkeypatch.setattr(se_data, "scan_speech_file",
                        lambda path: decoded.append(Path(path).name) or real_scan(path))
    cache = tmp_path / "scan_cache"
    first = se_data.SpeechIndex(speech, scan_cache_dir=cache)
    assert sorted(decoded) == ["silent.wav", "u0.wav", "u1.wav", "u2.wav"]
    decoded.clear()
    second = se_data.SpeechIndex(speech, scan_cache_dir=cache)
    assert decoded == []  # every check read back, the failure included
    assert (second.files, second.loudest, second.skipped) == (
        first.files, first.loudest, first.skipped)
    assert second.skipped == {str(speech / "silent.wav"): "silent"}
    louder = (0.5 * rng.standard_normal(8000)).astype(np.float32)
    sf.write(speech / "u1.wav", louder, 16000)
    os.utime(speech / "u1.wav", ns=(1, 1))  # another modification time
    third = se_data.SpeechIndex(speech, scan_cache_dir=cache)
    assert decoded == ["u1.wav"]
    stored, _ = sf.read(speech / "u1.wav", dtype="float32")  # 16-bit: as decoded
    assert third.loudest[1] == int(np.abs(stored).argmax()) != first.loudest[1]


def test_an_unreadable_or_unwritable_scan_cache_costs_a_rescan_not_the_run(
        tmp_path, monkeypatch, caplog):
    import numpy as np
    import soundfile as sf

    import robustdistill.se.data as se_data

    speech = tmp_path / "speech"
    speech.mkdir()
    sf.write(speech / "u0.wav", (0.1 * np.random.default_rng(0).standard_normal(8000))
             .astype(np.float32), 16000)
    cache = tmp_path / "scan_cache"
    se_data.SpeechIndex(speech, scan_cache_dir=cache)
    (entry,) = cache.iterdir()
    real_read = Path.read_text

    def deny(self, *args, **kwargs):
        if self == entry:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", deny)

    def refuse(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(se_data, "atomic_write_text", refuse)
    with caplog.at_level(logging.WARNING):
        index = se_data.SpeechIndex(speech, scan_cache_dir=cache)
    assert [str(f) for f in index.files] == [str(speech / "u0.wav")]
    assert "is unreadable" in caplog.text and "could not write" in caplog.text


def test_a_read_error_is_not_kept_in_the_scan_cache(tmp_path, monkeypatch):
    import numpy as np
    import soundfile as sf

    import robustdistill.se.data as se_data

    speech = tmp_path / "speech"
    speech.mkdir()
    for i in range(2):
        sf.write(speech / f"u{i}.wav", (0.1 * np.random.default_rng(i).standard_normal(8000))
                 .astype(np.float32), 16000)
    real_scan = se_data.scan_speech_file

    def flaky(path):
        if Path(path).name == "u1.wav":
            raise se_data.AudioError(f"{path}: cannot decode (I/O error)", "unreadable")
        return real_scan(path)

    monkeypatch.setattr(se_data, "scan_speech_file", flaky)
    first = se_data.SpeechIndex(speech, scan_cache_dir=tmp_path / "c")
    assert list(first.skipped.values()) == ["unreadable"]
    monkeypatch.setattr(se_data, "scan_speech_file", real_scan)
    second = se_data.SpeechIndex(speech, scan_cache_dir=tmp_path / "c")
    assert second.skipped == {} and len(second.files) == 2


def _cached_names(cache: Path) -> list[str]:
    (entry,) = cache.glob("*.json")
    return sorted(Path(name).name for name in json.loads(entry.read_text())["files"])


def test_the_scan_cache_forgets_files_no_longer_in_the_folder(tmp_path, monkeypatch):
    """A corpus reorganised again and again: the cache holds the files there now, not every
    path it ever saw; a deletion alone (every other check read back) is written too."""
    import numpy as np
    import soundfile as sf

    import robustdistill.se.data as se_data

    speech, cache = tmp_path / "speech", tmp_path / "scan_cache"
    rng = np.random.default_rng(0)
    for i in range(3):
        (speech / "a").mkdir(parents=True, exist_ok=True)
        sf.write(speech / "a" / f"u{i}.wav", (0.1 * rng.standard_normal(8000))
                 .astype(np.float32), 16000)
    decoded = _count_decodes(monkeypatch)
    se_data.SpeechIndex(speech, scan_cache_dir=cache)
    for layout in ("b", "c", "d"):  # every file moved to another folder: all new paths
        (speech / layout).mkdir()
        for f in sorted(speech.rglob("*.wav")):
            f.rename(speech / layout / f.name)
        decoded.clear()
        index = se_data.SpeechIndex(speech, scan_cache_dir=cache)
        assert len(decoded) == 3 and len(index) == 3
        (entry,) = cache.glob("*.json")
        assert sorted(json.loads(entry.read_text())["files"]) == sorted(
            str(Path(f).resolve()) for f in index.files)
    (speech / "d" / "u1.wav").unlink()
    decoded.clear()
    index = se_data.SpeechIndex(speech, scan_cache_dir=cache)
    assert decoded == [] and len(index) == 2
    assert _cached_names(cache) == ["u0.wav", "u2.wav"]


def test_concurrent_scan_cache_writers_each_leave_every_current_file(tmp_path):
    """Two processes index the folder at once from the same old cache (holding a deleted
    file): whichever rename lands last, the cache holds exactly the files there now."""
    import numpy as np
    import soundfile as sf

    import robustdistill.se.data as se_data

    speech, cache = tmp_path / "speech", tmp_path / "scan_cache"
    speech.mkdir()
    rng = np.random.default_rng(0)
    for name in ("gone", "u0", "u1"):
        sf.write(speech / f"{name}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32),
                 16000)
    se_data.SpeechIndex(speech, scan_cache_dir=cache)
    (entry,) = cache.glob("*.json")
    before = entry.read_text()
    (speech / "gone.wav").unlink()
    sf.write(speech / "new.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    for last in (0, 1):
        entry.write_text(before)
        writers = [se_data.SpeechScanCache(cache, speech) for _ in range(2)]
        for w in writers:  # both read the old cache before either writes
            for f in sorted(speech.glob("*.wav")):
                w.scan(f)
        writers[1 - last].save()
        writers[last].save()
        assert _cached_names(cache) == ["new.wav", "u0.wav", "u1.wav"]
        assert not [p for p in cache.iterdir() if p.suffix != ".json"]  # no temporary file


def _count_decodes(monkeypatch) -> list[str]:
    """The names of the speech files decoded whole from now on (the scan cache's misses)."""
    import robustdistill.se.data as se_data

    decoded: list[str] = []
    real_scan = se_data.scan_speech_file
    monkeypatch.setattr(se_data, "scan_speech_file",
                        lambda path: decoded.append(Path(path).name) or real_scan(path))
    return decoded


def test_train_se_keeps_the_speech_checks_in_the_run_folder_by_default(tmp_path, monkeypatch):
    """Without data.scan_cache_dir a resume of the run decodes no speech file again."""
    import yaml

    write_se_data(tmp_path)
    decoded = _count_decodes(monkeypatch)
    out = tmp_path / "run"
    assert se_train.main(se_train_args(tmp_path, out, 1)) == 0
    assert sorted(decoded) == ["u0.flac", "u1.flac", "u2.flac"]
    (cache,) = (out / se_train.SCAN_CACHE_FOLDER).iterdir()
    assert len(json.loads(cache.read_text())["files"]) == 3
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["scan_cache_dir"] is None
    decoded.clear()
    assert se_train.main(se_train_args(tmp_path, out, 2)) == 0  # resumes from step 1
    assert decoded == []
    assert json.loads((out / "final_state.json").read_text())["step"] == 2
    assert not any(se_train.SCAN_CACHE_FOLDER in p.parts for p in (out / "student").rglob("*"))


@pytest.mark.parametrize("off", ["off", "''"])
def test_train_se_scan_cache_off_decodes_every_file_at_every_start(tmp_path, monkeypatch, off):
    monkeypatch.chdir(tmp_path)  # a cache misread as the relative folder "off" would land here
    write_se_data(tmp_path)
    decoded = _count_decodes(monkeypatch)
    out = tmp_path / "run"
    for steps in (1, 2):
        decoded.clear()
        assert se_train.main(se_train_args(tmp_path, out, steps,
                                           "--data.scan_cache_dir", off)) == 0
        assert sorted(decoded) == ["u0.flac", "u1.flac", "u2.flac"]
    assert not (out / se_train.SCAN_CACHE_FOLDER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise", "run", "speech"]


def test_an_explicit_scan_cache_dir_is_used_as_given(tmp_path, monkeypatch):
    write_se_data(tmp_path)
    decoded = _count_decodes(monkeypatch)
    out, shared = tmp_path / "run", tmp_path / "shared_cache"
    assert se_train.main(se_train_args(tmp_path, out, 1, "--data.scan_cache_dir",
                                       str(shared))) == 0
    assert len(decoded) == 3 and len(list(shared.glob("*.json"))) == 1
    assert not (out / se_train.SCAN_CACHE_FOLDER).exists()
    decoded.clear()  # another run over the same speech folder reads the same cache
    assert se_train.main(se_train_args(tmp_path, tmp_path / "run2", 1,
                                       "--data.scan_cache_dir", str(shared))) == 0
    assert decoded == []


@pytest.mark.parametrize("setting", [None, "off", "own"])
def test_the_se_table_runs_share_one_scan_cache_unless_the_recipe_sets_one(
        tmp_path, monkeypatch, setting):
    """Each table run is a train-se run of its own folder: by default they share
    ``<table out>/scan_cache``, so only the first decodes the speech folder; a recipe's
    ``data.scan_cache_dir`` (a folder, or off) is kept."""
    import yaml

    from robustdistill.se import table

    write_se_data(tmp_path)
    recipe = {"student": {"ratio": 63},
              "data": {"speech_dir": str(tmp_path / "speech"),
                       "noise_dir": str(tmp_path / "noise"), "rir_dir": None,
                       "reverb_prob": 0.0},
              "loss": {"schedule": "sum"}, "training": {"report_to": "none"}}
    if setting is not None:
        recipe["data"]["scan_cache_dir"] = (setting if setting == "off"
                                            else str(tmp_path / "own_cache"))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "se_supervised.yaml").write_text(yaml.safe_dump(recipe))
    decoded = _count_decodes(monkeypatch)
    per_run = []
    real_train = se_train.train_se

    def counting(cfg):
        start = len(decoded)
        out = real_train(cfg)
        per_run.append(len(decoded) - start)
        return out

    monkeypatch.setattr(se_train, "train_se", counting)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the table sets --threads
    out = tmp_path / "table"
    assert table.main(["--out", str(out), "--configs", str(tmp_path / "configs"),
                       "--methods", "supervised", "--sizes", "63", "--seeds", "0", "1",
                       "--steps", "1", "--batch-size", "2", "--crop-seconds", "0.25",
                       "--pool-size", "2", "--snrs", "0", "--per-speaker", "1",
                       "--max-seconds", "0.5", "--test-speech", str(tmp_path / "speech"),
                       "--test-noise", str(tmp_path / "noise"), "--skip-teachers"]) == 0
    shared = out / se_train.SCAN_CACHE_FOLDER
    runs = [out / "runs" / f"supervised_63x_s{seed}" for seed in (0, 1)]
    assert not any((run / se_train.SCAN_CACHE_FOLDER).exists() for run in runs)
    if setting is None:
        assert per_run == [3, 0]  # the second run reads the first's checks
        assert len(list(shared.glob("*.json"))) == 1
    elif setting == "off":
        assert per_run == [3, 3] and not shared.exists()
    else:
        assert per_run == [3, 0] and not shared.exists()
        assert len(list((tmp_path / "own_cache").glob("*.json"))) == 1


@pytest.mark.parametrize(("value", "ok"), [("wandb", True), ("none", True),
                                           ("tensorbord", False)])
def test_train_se_report_to_takes_accelerates_trackers(value, ok):
    from robustdistill.se.train import TrainingOptions

    if ok:
        assert TrainingOptions(report_to=value).report_to == value
    else:
        with pytest.raises(ValueError, match="report_to must be one of"):
            TrainingOptions(report_to=value)


def test_a_crop_failure_on_one_process_is_printed_by_that_process(tmp_path, capsys,
                                                                   monkeypatch):
    """A speech crop that can no longer be read is one process's own (not agreed across
    processes): a process other than rank 0 prints it (the others only see a lost peer)."""
    from robustdistill.audio import AudioError

    def fail(cfg):
        raise AudioError("10 speech crops in a row could not be read: x.wav", "unreadable")

    monkeypatch.setattr(se_train, "train_se", fail)
    monkeypatch.setenv("RANK", "1")
    rc = se_train.main(se_train_args(tmp_path, tmp_path / "run", 2))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1] == ("robustdistill train-se: error: 10 speech crops in a row "
                                   "could not be read: x.wav")
