"""Bad input found by the adversarial sweep of 2026-12-07 (every command over a folder of broken
files and configs; docs/reliability.md, "Bad audio" and "Bad configs and arguments"):

* a dangling symbolic link named ``.wav`` (its target deleted, or on a volume not mounted)
  was left out of every data folder without a word; it is now listed, and its reader names it
  and counts it as ``unreadable``; so is a loop of links (later: ``Path.resolve`` raised on it
  in ``train-se``'s validation and ``enhance``);
* a file name that is not UTF-8 crashed ``train-se`` (its speech index) and ``enhance`` with
  ``UnicodeEncodeError`` tracebacks (soundfile encodes a ``str`` path strictly), and
  ``evaluate`` once the head was trained (item keys are hashed and written as UTF-8);
* a local model folder that cannot be read (``model.safetensors`` cut short, a
  ``config.json`` that is not JSON) was a traceback in ``distill`` (teacher, student_init),
  ``cache-teacher``, ``evaluate`` and ``export-s3prl``;
* YAML's ``.nan`` / ``.inf`` passed the type check of every float key: ``data.max_length_s
  .nan`` was a traceback, ``training.max_grad_norm .nan`` turned clipping off silently;
  ``train-se``'s negative ``learning_rate`` was torch's traceback and its ``max_grad_norm 0``
  clipped every gradient to zero (nothing trained); ``distill``'s negative ``max_grad_norm``
  turned clipping off silently;
* a WAV header claiming 1 Hz was resampled to 16 kHz (billions of samples: the command died
  of memory); sample rates below 1 kHz are refused as ``invalid``;
* a noise recording shorter than the crop was looped without a word (10 ms: a 100 Hz buzz);
  a warning now says so once per file;
* ``distill --resume`` from a damaged newest checkpoint was a traceback (a ``checkpoint.json``
  that is not JSON, a file cut short); it is one line naming it and how to go on.

Found in its review: the finite check refused ``train-speaker``'s documented
``training.max_grad_norm: .inf`` (no clipping), so a run started with it could be neither
resumed nor reused by the table; ``train-se``'s scan cache of a speech folder whose real name is
not UTF-8 and its held-out test pairs' hash of such a file name were tracebacks; those pairs
looped a short noise without the warning. Later: a dataset's drop summary counted every item
that was not too short as "unreadable" (``final_state.json`` had the real reasons).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustdistill.audio import AudioError, list_audio_files, load_audio, probe_audio

SR = 16_000
NOT_UTF8 = "bad\udcff"  # the str Python gives a file name holding the byte 0xff


def _speech(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32)


def _write(path: Path, x: np.ndarray, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(os.fsencode(path), x, SR, subtype=subtype)
    return path


def _not_utf8_ok(tmp_path: Path) -> None:
    try:
        (tmp_path / NOT_UTF8).touch()
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    (tmp_path / NOT_UTF8).unlink()


# ---------------------------------------------------------------- dangling symbolic links
def _link_loop(folder: Path) -> list[Path]:
    """``loop_a.wav -> loop_b.wav -> loop_a.wav`` in ``folder``: opening either fails (ELOOP)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loop_a.wav").symlink_to(folder / "loop_b.wav")
    (folder / "loop_b.wav").symlink_to(folder / "loop_a.wav")
    return [folder / "loop_a.wav", folder / "loop_b.wav"]


def test_a_dangling_link_and_a_link_loop_are_listed_and_skipped_by_name(tmp_path, caplog):
    """Both were left out of every folder without a word (the loop was left out because
    ``Path.resolve`` raised on it in ``train-se``'s validation and ``enhance``); a link without
    an audio suffix that cannot be followed (a subset folder on a volume not mounted) is named
    in a warning, as not searched."""
    import logging

    good = _write(tmp_path / "data" / "good.wav", _speech())
    (tmp_path / "data" / "gone.wav").symlink_to(tmp_path / "elsewhere" / "gone.wav")
    loop = _link_loop(tmp_path / "data")
    (tmp_path / "data" / "train-other-500").symlink_to(tmp_path / "unmounted" / "train-other")
    with caplog.at_level(logging.WARNING, logger="robustdistill.audio"):
        files = list_audio_files(tmp_path / "data")
    assert files == [tmp_path / "data" / "gone.wav", good, *loop]
    assert caplog.messages == [f"{tmp_path / 'data'}: 1 symbolic link(s) that cannot be "
                               f"followed, not searched: {tmp_path / 'data' / 'train-other-500'}"]
    with pytest.raises(AudioError, match=r"gone\.wav: cannot open \(No such file") as err:
        probe_audio(files[0])
    assert err.value.reason == "unreadable"
    for read in (probe_audio, load_audio):
        with pytest.raises(AudioError, match=r"loop_a\.wav: cannot open \(") as err:
            read(loop[0])
        assert err.value.reason == "unreadable"

    from robustdistill.data.files import AudioFileDataset

    dataset = AudioFileDataset(files, max_length_s=0.5, min_length_s=0.1, seed=0,
                               random_crop=False)
    assert dataset.files == [good]
    assert {str(k): v for k, v in dataset.skipped.items()} == {
        str(p): "unreadable" for p in (tmp_path / "data" / "gone.wav", *loop)}


def test_the_drop_summary_counts_the_items_by_their_reasons(tmp_path, caplog):
    """It said "N unreadable" for every item dropped but too short (a 1 Hz header is
    ``invalid``, a 0-byte file ``empty``); the reasons are those of ``skipped`` (and so of
    ``final_state.json``)."""
    import logging
    import struct

    from robustdistill.data.files import AudioFileDataset

    good = _write(tmp_path / "good.wav", _speech(1.0))
    data = bytearray(good.read_bytes())
    data[24:28], data[28:32] = struct.pack("<I", 1), struct.pack("<I", 2)  # 1 Hz, 2 bytes/s
    (tmp_path / "one_hz.wav").write_bytes(bytes(data))
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.flac").write_text("not audio\n")
    _write(tmp_path / "short.wav", _speech(0.05))
    files = list_audio_files(tmp_path)
    with caplog.at_level(logging.WARNING, logger="robustdistill.data"):
        dataset = AudioFileDataset(files, max_length_s=0.5, min_length_s=0.1, seed=0)
    assert dataset.files == [good]
    assert dataset.skipped_counts() == {"empty": 1, "invalid": 1, "unreadable": 1,
                                        "too short": 1}
    (message,) = caplog.messages
    assert message.startswith("AudioFileDataset: dropped 4 of 5 items: 1 shorter than "
                              "min_length_s=0.10 s, 1 empty, 1 invalid, 1 unreadable; first: ")
    assert all(f"{tmp_path / n} (" in message
               for n in ("empty.wav", "one_hz.wav", "short.wav", "text.flac"))


def test_the_drop_summary_leaves_out_a_zero_too_short_count(tmp_path, caplog):
    """A folder whose only bad items are unreadable said "0 shorter than min_length_s=0.50 s,
    2 unreadable" (review of the reasons' summary: zero counts are left out, this one too)."""
    import logging

    from robustdistill.data.files import AudioFileDataset

    good = _write(tmp_path / "good.wav", _speech(1.0))
    (tmp_path / "empty.wav").write_bytes(b"")
    loop = _link_loop(tmp_path)
    with caplog.at_level(logging.WARNING, logger="robustdistill.data"):
        dataset = AudioFileDataset(list_audio_files(tmp_path), max_length_s=0.5,
                                   min_length_s=0.1, seed=0)
    assert dataset.files == [good]
    (message,) = caplog.messages
    assert message.startswith("AudioFileDataset: dropped 3 of 4 items: 1 empty, "
                              "2 unreadable; first: ")
    assert all(f"{p} (" in message for p in (tmp_path / "empty.wav", *loop))


def test_listing_a_folder_checks_for_broken_links_only_among_what_is_not_a_file(
        tmp_path, monkeypatch):
    """The warning about links without an audio suffix that cannot be followed re-checked
    every listed file (an ``lstat`` each: 25 % slower over a folder of 20 000 ``.flac`` and
    20 000 ``.txt``); the walk already knows which entries are broken links."""
    import robustdistill.audio as audio

    for i in range(3):
        (tmp_path / f"{i}.txt").write_text("transcript\n")
        _write(tmp_path / f"{i}.wav", _speech(0.1))
    (tmp_path / "notes.txt").symlink_to(tmp_path / "gone" / "notes.txt")
    loop = _link_loop(tmp_path)
    checked: list[str] = []

    def counting(path: str) -> bool:
        checked.append(os.path.basename(path))
        return real(path)

    real = audio._dangling
    monkeypatch.setattr(audio, "_dangling", counting)
    files = list_audio_files(tmp_path)
    assert files == sorted([tmp_path / f"{i}.wav" for i in range(3)] + loop)
    assert sorted(checked) == sorted(["notes.txt", *(p.name for p in loop)])


def test_distill_names_and_counts_a_link_loop_in_its_training_folder(tmp_path, tiny_wavlm_dir):
    import json

    from conftest import tiny_run_config

    from robustdistill.trainer import train

    for i in range(8):
        _write(tmp_path / "train" / f"{i}.wav", _speech(1.0, seed=i))
    loop = _link_loop(tmp_path / "train")
    cfg = tiny_run_config(tmp_path, tiny_wavlm_dir, "run", **{
        "data.synthetic_items": 0, "data.train_dir": str(tmp_path / "train"),
        "training.max_steps": 2})
    train(cfg)
    final = json.loads((tmp_path / "run" / "final_state.json").read_text())
    assert final["step"] == 2
    assert final["skipped_audio"]["items"] == {str(p): "unreadable" for p in loop}
    assert final["skipped_audio"]["by_reason"] == {"unreadable": 2}


def test_train_se_names_and_counts_a_link_loop_in_its_validation_folder(tmp_path, caplog):
    import logging

    from conftest import se_train_args, write_se_data
    from test_se_validation import _rows, _validation_args, _write_validation_data

    from robustdistill.se.train import load_se_config, train_se

    write_se_data(tmp_path)
    _write_validation_data(tmp_path)
    loop = _link_loop(tmp_path / "vspeech" / "spk9")
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):  # Path.resolve raised RuntimeError at start-up
        train_se(load_se_config(None, se_train_args(tmp_path, run, 2,
                                                    *_validation_args(tmp_path))))
    for path in loop:
        assert f"skipping speech file {path} [unreadable]: {path}: cannot open (" in caplog.text
    assert f"2 of 4 speech files below {tmp_path / 'vspeech'} dropped" in caplog.text
    assert len(_rows(run, "validation")) == 2


def test_enhance_names_and_counts_a_link_loop_in_its_input_folder(tmp_path, gru_student_dir,
                                                                  caplog):
    import logging

    from robustdistill.se.enhance import main

    _write(tmp_path / "in" / "good.wav", _speech(1.0))
    loop = _link_loop(tmp_path / "in" / "sub")
    for out in (tmp_path / "out", tmp_path / "in" / "enhanced"):  # the second: inside the input
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="robustdistill.se.enhance"):
            assert main([str(tmp_path / "in"), str(out), "--model", str(gru_student_dir)]) == 0
        assert [p.name for p in out.rglob("*.wav")] == ["good.wav"]
        for path in loop:
            assert f"skipping {path} [unreadable]: {path}: cannot open (" in caplog.text
        assert f"1 file(s) enhanced into {out}; 2 skipped (unreadable: 2)" in caplog.text


def test_evaluate_data_counts_a_dangling_link(tmp_path):
    from downstream.data import SourceConfig, load_source
    from downstream.decoding import decode_all

    for i in range(2):
        _write(tmp_path / "ks" / f"{i}_a_0.wav", _speech(seed=i))
    (tmp_path / "ks" / "1_a_1.wav").symlink_to(tmp_path / "nowhere.wav")
    utterances = load_source(SourceConfig(
        root=str(tmp_path / "ks"), pattern=r"(?P<label>\d)_(?P<speaker>[a-z]+)_\d+\.wav$"))
    assert sorted(u.key for u in utterances) == ["0_a_0.wav", "1_a_0.wav", "1_a_1.wav"]
    waveforms, skipped = decode_all({"train": utterances[:1], "dev": utterances[:1],
                                     "test": utterances}, None)
    assert sorted(u.key for u, _ in waveforms["test"]) == ["0_a_0.wav", "1_a_0.wav"]
    assert skipped == {"train": 0, "dev": 0, "test": 1}


def test_evaluate_names_the_file_not_a_descriptor_when_a_header_is_not_audio(tmp_path, caplog):
    """Decoded over a file descriptor, libsndfile said "Error opening 6: Format not
    recognised.": the skip names the file once, and no descriptor."""
    import logging

    from downstream.data import SourceConfig, load_source
    from downstream.decoding import decode_all

    _write(tmp_path / "ks" / "0_a_0.wav", _speech())
    text = tmp_path / "ks" / "1_a_0.wav"
    text.write_text("this is not audio\n" * 20)
    utterances = load_source(SourceConfig(
        root=str(tmp_path / "ks"), pattern=r"(?P<label>\d)_(?P<speaker>[a-z]+)_\d+\.wav$"))
    with caplog.at_level(logging.WARNING):
        waveforms, skipped = decode_all({"train": utterances[:1], "dev": utterances[:1],
                                         "test": utterances}, None)
    assert skipped == {"train": 0, "dev": 0, "test": 1}
    assert (f"skipping 1_a_0.wav: {text}: cannot decode audio (Format not recognised.)"
            in caplog.text)
    assert "Error opening" not in caplog.text
    with pytest.raises(AudioError, match=r"not readable as audio \(Format not recognised\.\)$"):
        probe_audio(text)


# ---------------------------------------------------------------- file names that are not UTF-8
def test_train_se_speech_index_reads_a_file_name_that_is_not_utf8(tmp_path):
    _not_utf8_ok(tmp_path)
    from robustdistill.se.data import SpeechIndex

    x = np.linspace(-0.5, 0.5, SR, dtype=np.float32)  # a ramp: each sample tells its place
    _write(tmp_path / "speech" / f"{NOT_UTF8}.wav", x, subtype="FLOAT")
    nan = _speech(1.0, seed=1)
    nan[10] = np.nan
    _write(tmp_path / "speech" / f"{NOT_UTF8}_nan.wav", nan, subtype="FLOAT")
    index = SpeechIndex(tmp_path / "speech", SR, scan_cache_dir="off")
    assert [p.name for p in index.files] == [f"{NOT_UTF8}.wav"]
    assert index.skipped == {str(tmp_path / "speech" / f"{NOT_UTF8}_nan.wav"): "non-finite"}
    crop, real = index.crop(0, SR // 2, np.random.default_rng(0))
    assert real == SR // 2
    start = int(np.argmin(np.abs(x - crop[0])))
    np.testing.assert_array_equal(crop, x[start:start + SR // 2])


def test_train_se_scan_cache_of_a_speech_folder_whose_real_name_is_not_utf8(tmp_path):
    """``train-se``'s scan cache (on by default: ``<output_dir>/scan_cache``) is named by the
    SHA-1 of the speech folder's resolved path: a folder (or a link to one) whose real name is
    not UTF-8 was a ``UnicodeEncodeError`` traceback at start-up; a UTF-8 folder's cache file
    keeps its name (the same bytes)."""
    import hashlib

    _not_utf8_ok(tmp_path)
    from robustdistill.se.data import SpeechIndex

    _write(tmp_path / NOT_UTF8 / "a.wav", _speech(1.0))
    (tmp_path / "speech").symlink_to(tmp_path / NOT_UTF8)  # a YAML config names only the link
    for _ in range(2):  # written, then read back
        index = SpeechIndex(tmp_path / "speech", SR, scan_cache_dir=tmp_path / "cache")
        assert [p.name for p in index.files] == ["a.wav"] and not index.skipped
    digest = hashlib.sha1(os.fsencode(tmp_path / NOT_UTF8)).hexdigest()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{digest}.json"]
    _write(tmp_path / "utf8" / "a.wav", _speech(1.0))
    SpeechIndex(tmp_path / "utf8", SR, scan_cache_dir=tmp_path / "cache2")
    digest = hashlib.sha1(str((tmp_path / "utf8").resolve()).encode()).hexdigest()
    assert [p.name for p in (tmp_path / "cache2").iterdir()] == [f"{digest}.json"]


def test_se_test_pairs_of_a_file_name_that_is_not_utf8_have_utf8_names_and_a_hash(tmp_path):
    """``train-se``'s held-out pairs kept a name that is not UTF-8 as it was: their
    :meth:`TestPairs.sha1` (the table's test set identity) was a ``UnicodeEncodeError``; the
    name is now ``\\xff`` text, and a UTF-8 name is unchanged."""
    _not_utf8_ok(tmp_path)
    from robustdistill.se.evaluate import make_test_pairs

    _write(tmp_path / "speech" / "s1" / f"{NOT_UTF8}.wav", _speech(1.0, seed=1))
    _write(tmp_path / "speech" / "s2" / "ok ü.wav", _speech(1.0, seed=2))
    _write(tmp_path / "noise" / "n.wav", _speech(2.0, seed=3))
    pairs = make_test_pairs(tmp_path / "speech", tmp_path / "noise", snrs=(0.0,),
                            per_speaker=1)
    assert pairs.names == ["bad\\xff.wav", "ok ü.wav"]
    assert len(pairs.sha1()) == 40


def test_enhance_writes_a_file_name_that_is_not_utf8(tmp_path, gru_student_dir):
    _not_utf8_ok(tmp_path)
    from robustdistill.se.enhance import main

    _write(tmp_path / "in" / f"{NOT_UTF8}.wav", _speech(1.0))
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                 str(gru_student_dir)]) == 0
    y, rate = sf.read(os.fsencode(tmp_path / "out" / f"{NOT_UTF8}.wav"))
    assert rate == SR and y.shape == (SR,) and np.isfinite(y).all() and np.any(y)


def test_evaluate_item_keys_of_a_file_name_that_is_not_utf8_are_utf8_text(tmp_path):
    _not_utf8_ok(tmp_path)
    from downstream.data import SourceConfig, load_source

    x = _speech(1.0)
    _write(tmp_path / "ks" / NOT_UTF8 / "3_a_0.wav", x)
    (u,) = load_source(SourceConfig(
        root=str(tmp_path / "ks"), pattern=r"(?P<label>\d)_(?P<speaker>[a-z]+)_\d+\.wav$"))
    assert u.key == "bad\\xff/3_a_0.wav"  # hashable and JSON-writable as UTF-8
    u.key.encode("utf-8")
    assert (u.label, u.speaker) == ("3", "a")
    np.testing.assert_allclose(load_audio(u.audio), x, atol=1e-4)  # opened by its real name


# ---------------------------------------------------------------- unreadable model folders
@pytest.fixture
def broken_models(tmp_path, tiny_wavlm_dir) -> dict[str, Path]:
    """Copies of a tiny WavLM: weights cut in half, a config.json that is not JSON."""
    cut = shutil.copytree(tiny_wavlm_dir, tmp_path / "cut")
    weights = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    bad_config = shutil.copytree(tiny_wavlm_dir, tmp_path / "bad_config")
    (bad_config / "config.json").write_text('{"model_type": "wavlm", ')
    return {"cut": cut, "bad_config": bad_config}


def test_an_unreadable_model_folder_is_one_error_naming_it(broken_models):
    from robustdistill.upstream import ModelFolderError, Upstream

    with pytest.raises(ModelFolderError, match=r"cut: not a readable model folder \(Error "
                                                r"while deserializing header"):
        Upstream.from_pretrained(broken_models["cut"])
    with pytest.raises(ModelFolderError, match=r"bad_config: not a readable model folder "
                                                r"\(It looks like the config file"):
        Upstream.from_pretrained(broken_models["bad_config"])


def test_distill_and_evaluate_report_an_unreadable_model_folder_in_one_line(
        tmp_path, broken_models, tiny_wavlm_dir, capsys):
    from robustdistill.cli import main
    from robustdistill.config import ConfigError, DistillConfig
    from robustdistill.teachers import load_teacher

    with pytest.raises(ConfigError, match=r"^teacher .*cut: not a readable model folder"):
        load_teacher(DistillConfig(teacher=str(broken_models["cut"])))
    _write(tmp_path / "ks" / "0_a_0.wav", _speech())
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--task", "ks", "--upstream", str(broken_models["bad_config"]),
              "--config", "kws_fsdd_cpu", "--out", str(tmp_path / "out"),
              "-o", f"data.source.root={tmp_path / 'ks'}", "--conditions", "clean"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not a readable model folder (It looks like the config file" in err
    assert "Traceback" not in err


def test_a_student_init_that_cannot_be_read_is_a_config_error(tmp_path, broken_models,
                                                               tiny_wavlm_dir):
    from conftest import tiny_run_config

    from robustdistill.config import ConfigError
    from robustdistill.trainer import train

    cfg = tiny_run_config(tmp_path, tiny_wavlm_dir, "run", student_init=str(broken_models["cut"]))
    with pytest.raises(ConfigError, match=r"^student_init .*cut: not a readable model folder"):
        train(cfg)


def test_train_speaker_refuses_an_upstream_with_cut_weights_at_start_up(broken_models,
                                                                         tiny_wavlm_dir):
    from robustdistill.speaker.cli import _check_model_folder

    _check_model_folder(str(tiny_wavlm_dir), "student.upstream")  # a whole folder passes
    with pytest.raises(ValueError, match=r"student.upstream '.*cut' is not a model folder: "
                                         r"Error while deserializing header"):
        _check_model_folder(str(broken_models["cut"]), "student.upstream")


# ---------------------------------------------------------------- non-finite and bad numbers
@pytest.mark.parametrize(("override", "message"), [
    (["--data.max_length_s", ".nan"], "data.max_length_s must be a finite number, got nan"),
    (["--training.max_grad_norm", ".nan"], "training.max_grad_norm must be a finite number"),
    (["--augmentation.snr_max", ".inf"], "augmentation.snr_max must be a finite number, got inf"),
    (["--training.max_grad_norm", "-1"], "training.max_grad_norm must be >= 0"),
])
def test_distill_refuses_nan_inf_and_a_negative_clipping_norm(override, message):
    from robustdistill.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, ["--teacher", "t", *override])
    load_config(None, ["--teacher", "t", "--training.max_grad_norm", "0"])  # 0: no clipping


@pytest.mark.parametrize(("key", "value", "message"), [
    ("learning_rate", ".nan", "training.learning_rate: expected a finite number, got nan"),
    ("learning_rate", "-1", "learning_rate must be a number >= 0, got -1.0"),
    ("max_grad_norm", "0", "max_grad_norm must be a number > 0, got 0.0"),
    ("max_grad_norm", ".inf", "training.max_grad_norm: expected a finite number, got inf"),
])
def test_train_se_refuses_a_learning_rate_or_clipping_norm_that_trains_nothing(key, value,
                                                                             message):
    from robustdistill.config import ConfigError
    from robustdistill.se.train import load_se_config

    with pytest.raises((ConfigError, ValueError), match=message):
        load_se_config(None, [f"--training.{key}", value])
    load_se_config(None, ["--training.learning_rate", "0"])  # 0: an untrained baseline


def test_train_speaker_config_file_keeps_inf_as_no_clipping_and_refuses_other_nonfinite(
        tmp_path):
    """``train-speaker``'s ``training.max_grad_norm: .inf`` (no clipping: its only way off, as
    the key must be > 0) is read from a config file, so a run started with it (strict JSON
    stores it as ``null``, docs/reliability.md) can be resumed and reused by the table with the
    same file; ``.nan`` and ``-.inf`` there, and ``.inf`` in any other float key, are refused."""
    import math

    from downstream.config import load_config
    from robustdistill.config import ConfigError
    from robustdistill.speaker.config import SpeakerKDConfig

    path = tmp_path / "spk.yaml"
    path.write_text("training:\n  max_grad_norm: .inf\n")
    assert load_config(path, SpeakerKDConfig).training.max_grad_norm == math.inf
    for key, value in (("max_grad_norm", ".nan"), ("max_grad_norm", "-.inf"), ("lr", ".inf"),
                       ("weight_decay", ".inf")):
        path.write_text(f"training:\n  {key}: {value}\n")
        with pytest.raises(ConfigError, match=f"training.{key}: expected a finite number"):
            load_config(path, SpeakerKDConfig)


# ------------------------------------------------- a learning rate torch's Adam cannot apply
def test_the_largest_adam_learning_rate_is_where_torch_overflows():
    """``lr / (1 - beta1)``, Adam's first step, is a float32 scalar in torch: at the limit the
    step runs (every weight moves by about ``lr``), just above it torch raises."""
    import torch

    from robustdistill.nonfinite import largest_adam_learning_rate

    assert largest_adam_learning_rate(0.9) == pytest.approx(3.4028235e37, rel=1e-6)
    assert largest_adam_learning_rate(0.0) == pytest.approx(3.4028235e38, rel=1e-6)
    for beta1 in (0.9, 0.5):
        most = largest_adam_learning_rate(beta1)
        for lr, fits in ((most, True), (most * 1.001, False)):
            weight = torch.nn.Parameter(torch.zeros(2))
            weight.grad = torch.tensor([1.0, -1.0])
            step = torch.optim.AdamW([weight], lr=lr, betas=(beta1, 0.999)).step
            if fits:
                step()
                assert weight.detach().abs().min() == pytest.approx(lr, rel=1e-3)
            else:
                with pytest.raises(RuntimeError, match="without overflow"):
                    step()


def test_every_trainer_refuses_a_learning_rate_whose_first_adam_step_overflows(tmp_path):
    """``--training.learning_rate 1e38`` passed the config checks of ``distill`` and
    ``train-se`` (``--training.lr`` of ``train-speaker``) and ended in torch's "value cannot be
    converted to type float without overflow" traceback at the first step; the limit follows
    ``distill``'s ``adam_betas[0]``."""
    from downstream.config import load_config as load_speaker_config
    from robustdistill.config import ConfigError, load_config
    from robustdistill.se.train import load_se_config
    from robustdistill.speaker.config import SpeakerKDConfig

    with pytest.raises(ConfigError, match=r"^config section 'training': training.learning_rate "
                                          r"must be at most 3.403e\+37, the largest whose first "
                                          r"AdamW step .*adam_betas\[0\] = 0.9\) fits in "
                                          r"float32; got 1e\+38$"):
        load_config(None, ["--teacher", "t", "--training.learning_rate", "1e38"])
    assert load_config(None, ["--teacher", "t", "--training.learning_rate", "3.4e37"])
    assert load_config(None, ["--teacher", "t", "--training.learning_rate", "1e38",
                              "--training.adam_betas", "[0.0, 0.98]"])  # limit 3.4e38
    with pytest.raises(ValueError, match=r"learning_rate must be at most 3.403e\+37, the largest "
                                         r"whose first Adam step .* got 1e\+38$"):
        load_se_config(None, ["--training.learning_rate", "1e38"])
    assert load_se_config(None, ["--training.learning_rate", "3.4e37"])
    path = tmp_path / "spk.yaml"
    path.write_text("training:\n  lr: 1.0e+38\n")
    with pytest.raises(ValueError, match=r"training.lr must be at most 3.403e\+37, the largest "
                                         r"whose first AdamW step .* got 1e\+38$"):
        load_speaker_config(path, SpeakerKDConfig)
    path.write_text("training:\n  lr: 3.4e+37\n")
    assert load_speaker_config(path, SpeakerKDConfig).training.lr == 3.4e37


def test_train_se_with_a_learning_rate_adam_cannot_apply_is_one_line_and_writes_nothing(
        tmp_path, capsys):
    """On real folders, so that without the check the run reaches its first step (torch's
    overflow traceback there)."""
    from conftest import require_shared_data

    from robustdistill import cli

    data = require_shared_data()
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        cli.main(["train-se", "--config",
                  str(Path(__file__).resolve().parents[1] / "configs" / "se_supervised.yaml"),
                  "--data.speech_dir", str(data / "librispeech-mini" / "train-clean-100"),
                  "--data.noise_dir", str(data / "noise"), "--data.rir_dir", str(data / "rir"),
                  "--data.crop_seconds", "0.5", "--training.batch_size", "2",
                  "--training.learning_rate", "1e38", "--training.max_steps", "3",
                  "--output_dir", str(out)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "overflow" not in err
    assert err.strip().splitlines()[-1] == (
        "robustdistill train-se: error: training: learning_rate must be at most 3.403e+37, the "
        "largest whose first Adam step (learning_rate / (1 - beta1), beta1 = 0.9) fits in "
        "float32; got 1e+38")
    assert not out.exists()


# ---------------------------------------------------------------- noise shorter than the crop
def test_a_noise_recording_shorter_than_the_segment_is_looped_and_said_once(caplog):
    import logging

    from robustdistill.augment.noise import NoiseBank

    short = np.array([0.1, -0.2, 0.3], np.float32)
    bank = NoiseBank((short, np.ones(100, np.float32)), ("short.wav", "long.wav"))
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING, logger="robustdistill.augment.noise"):
        draws = [bank.draw(8, rng) for _ in range(20)]
    segment = next(seg for seg, index in draws if index == 0)
    start = int(np.flatnonzero(short == segment[0])[0])
    np.testing.assert_array_equal(segment, np.take(short, np.arange(start, start + 8),
                                                   mode="wrap"))  # looped
    said = [r.getMessage() for r in caplog.records if "looped" in r.getMessage()]
    assert said == ["noise short.wav (3 samples) is shorter than the 8-sample segment drawn: "
                    "looped (said once per file; a longer recording, or none this short, is "
                    "better)"]


def test_se_test_pairs_say_once_that_they_loop_a_short_noise_and_mix_as_before(tmp_path,
                                                                                caplog):
    """``train-se``'s held-out pairs (:func:`robustdistill.se.evaluate.make_test_pairs`) drew
    their noise without :meth:`NoiseBank.draw`, so a recording shorter than the utterance was
    looped without the warning the other readers give; the same segments are drawn."""
    import logging

    from robustdistill.augment.noise import NoiseBank, mix_at_snr, noise_segment
    from robustdistill.se.evaluate import make_test_pairs

    for speaker, seed in (("s1", 1), ("s2", 2)):
        _write(tmp_path / "speech" / speaker / "a.wav", _speech(1.0, seed))
    rng = np.random.default_rng(9)
    _write(tmp_path / "noise" / "short.wav", (0.1 * rng.standard_normal(SR // 4)).astype(
        np.float32))
    with caplog.at_level(logging.WARNING, logger="robustdistill.augment.noise"):
        pairs = make_test_pairs(tmp_path / "speech", tmp_path / "noise", snrs=(0.0,),
                                per_speaker=1)
    said = [r.getMessage() for r in caplog.records if "looped" in r.getMessage()]
    assert len(said) == 1 and "short.wav (4000 samples) is shorter than the 16000-sample" \
        in said[0]
    bank = NoiseBank.from_folder(tmp_path / "noise")
    for i, x in enumerate(pairs.clean):  # the draws of before: index, then segment, per item
        g = np.random.default_rng([0, i])
        k = int(g.integers(len(bank)))
        expected = mix_at_snr(x, noise_segment(bank.waveforms[k], x.size, g), 0.0)
        np.testing.assert_array_equal(pairs.noisy[0.0][i], expected)


# ---------------------------------------------------------------- damaged checkpoints
def test_a_damaged_checkpoint_is_refused_by_name_in_one_line_at_resume(tmp_path,
                                                                        tiny_wavlm_dir):
    from conftest import tiny_run_config

    import robustdistill.trainer as trainer_module
    from robustdistill.checkpoints import MANIFEST, CheckpointError, verify_checkpoint
    from robustdistill.config import ConfigError

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / MANIFEST).write_text('{"files": {"model.safetensors": 1')  # cut short
    with pytest.raises(CheckpointError, match=rf"damaged: {MANIFEST} is damaged, not a "
                                              r"manifest of this trainer \(JSONDecodeError"):
        verify_checkpoint(damaged)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / MANIFEST).write_text('{"files": {"model.safetensors": 10}}')
    (cut / "model.safetensors").write_bytes(b"abc")
    run = trainer_module._Run(tiny_run_config(tmp_path, tiny_wavlm_dir, "run"))
    for folder, what in ((damaged, f"{MANIFEST} is damaged"),
                         (cut, "model.safetensors has 3 bytes")):
        with pytest.raises(trainer_module.DamagedCheckpointError,
                           match=rf"{folder.name}: {what}.*refusing to resume from it") as err:
            run.resume(str(folder))
        assert isinstance(err.value, ConfigError)  # distill prints it in one line, exit 2


# ---------------------------------------------------------------- a corrupt sample rate
def test_a_header_claiming_1_hz_is_refused_not_resampled_to_billions_of_samples(tmp_path):
    import struct

    from robustdistill.audio import MIN_SAMPLE_RATE, prepare_waveform
    from robustdistill.data.files import AudioFileDataset

    good = _write(tmp_path / "good.wav", _speech(1.0))
    data = bytearray(good.read_bytes())
    data[24:28] = struct.pack("<I", 1)  # the fmt chunk's sample rate: 1 Hz
    data[28:32] = struct.pack("<I", 2)  # its byte rate
    corrupt = tmp_path / "one_hz.wav"
    corrupt.write_bytes(bytes(data))
    assert sf.info(str(corrupt)).samplerate == 1  # libsndfile takes it as it is
    for read, said in ((probe_audio, "its header says 1 Hz, below 1000 Hz: a corrupt header"),
                       (load_audio, "a sample rate of 1 Hz is below 1000 Hz: a corrupt header")):
        with pytest.raises(AudioError, match=rf"one_hz\.wav: {said}") as err:
            read(corrupt)  # load_audio asked soxr for 256 million samples
        assert err.value.reason == "invalid"
    with pytest.raises(AudioError, match="a sample rate of 999 Hz is below 1000 Hz"):
        prepare_waveform(_speech(0.1), MIN_SAMPLE_RATE - 1, name="array")
    assert prepare_waveform(_speech(0.1), MIN_SAMPLE_RATE).size == 25_600  # the lowest taken
    dataset = AudioFileDataset([corrupt, good], max_length_s=0.5, min_length_s=0.1, seed=0,
                               random_crop=False)
    assert dataset.files == [good] and dataset.skipped == {str(corrupt): "invalid"}


def test_train_se_drops_a_speech_file_whose_channels_cancel_in_the_mono_mix(tmp_path):
    from robustdistill.se.data import scan_speech_file

    x = _speech(1.0)
    anti = _write(tmp_path / "anti.wav", np.stack([x, -x], axis=1), subtype="FLOAT")
    with pytest.raises(AudioError, match=r"anti\.wav: its channels cancel when averaged to "
                                         r"mono") as err:
        scan_speech_file(anti)  # every crop of it was silent: no usable pair
    assert err.value.reason == "silent"
    half = _write(tmp_path / "half.wav", np.stack([x, -0.5 * x], axis=1), subtype="FLOAT")
    assert scan_speech_file(half) == int(np.argmax(np.abs(x)))  # still the loudest frame
