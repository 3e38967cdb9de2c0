"""The SE table under bad input: an unusable test speech file is skipped (named, with its
reason) and its speaker's next file taken, instead of a traceback; a recipe's missing data
folder is one line before the teachers are scored or a student trained."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import write_se_data

from robustdistill.se.evaluate import make_test_pairs


def _bad_files(folder) -> None:
    """A text file named .flac, a 100-sample file, a silent one and one silent for its first
    7 s (``max_seconds`` 6 keeps only silence), sorted before ``u*``."""
    (folder / "a_text.flac").write_text("not audio\n" * 50)
    sf.write(folder / "b_short.wav", np.full(100, 0.1, np.float32), 16000)
    sf.write(folder / "c_silent.wav", np.zeros(16000, np.float32), 16000)
    late = np.zeros(8 * 16000, np.float32)
    late[7 * 16000:] = 0.1 * np.sin(np.arange(16000) / 5.0)
    sf.write(folder / "d_late.wav", late, 16000)


def test_unusable_test_speech_is_skipped_and_the_speakers_next_file_taken(tmp_path, caplog):
    write_se_data(tmp_path)
    _bad_files(tmp_path / "speech" / "spk")
    with caplog.at_level(logging.WARNING, logger="robustdistill"):
        pairs = make_test_pairs(tmp_path / "speech", tmp_path / "noise", snrs=(0.0,),
                                per_speaker=2)
    assert pairs.names == ["u0.flac", "u1.flac"]  # was: AudioError on a_text.flac
    for name, reason in (("a_text.flac", "unreadable"), ("b_short.wav", "too short"),
                         ("c_silent.wav", "silent"), ("d_late.wav", "silent")):
        assert f"spk/{name} [{reason}]" in caplog.text
    assert "digital silence in its first 6 s" in caplog.text  # was: STOI 0 averaged in
    assert "4 unusable file(s)" in caplog.text


def test_the_test_set_of_a_clean_folder_is_unchanged_by_skipping(tmp_path):
    write_se_data(tmp_path)
    clean = make_test_pairs(tmp_path / "speech", tmp_path / "noise", snrs=(0.0,), per_speaker=2)
    _bad_files(tmp_path / "speech" / "spk")
    skipped = make_test_pairs(tmp_path / "speech", tmp_path / "noise", snrs=(0.0,),
                              per_speaker=2)
    assert skipped.sha1() == clean.sha1()  # same files, same noise draws


def test_a_test_folder_with_no_usable_speech_is_a_file_not_found_error(tmp_path):
    write_se_data(tmp_path)
    for f in (tmp_path / "speech" / "spk").iterdir():
        f.unlink()
    _bad_files(tmp_path / "speech" / "spk")
    with pytest.raises(FileNotFoundError, match=r"no usable speech below .*4 file\(s\) skipped"):
        make_test_pairs(tmp_path / "speech", tmp_path / "noise", snrs=(0.0,))


def test_table_with_a_bad_test_file_and_a_missing_recipe_folder_is_one_line(
        tmp_path, monkeypatch, capsys):
    import robustdistill.se.table as table

    write_se_data(tmp_path)
    _bad_files(tmp_path / "speech" / "spk")
    configs = tmp_path / "configs"
    configs.mkdir()
    recipe = {"data": {"speech_dir": str(tmp_path / "speech"),
                       "noise_dir": str(tmp_path / "no_noise"), "rir_dir": None,
                       "reverb_prob": 0.0}, "loss": {"schedule": "sum"}}
    (configs / "se_supervised.yaml").write_text(yaml.safe_dump(recipe))

    def no_training(cfg):
        raise AssertionError("a student was trained")

    monkeypatch.setattr(table, "train_se", no_training, raising=False)
    monkeypatch.setattr("robustdistill.se.train.train_se", no_training)
    with pytest.raises(SystemExit) as exit_info:
        table.main(["--out", str(tmp_path / "t"), "--methods", "supervised", "--sizes", "63",
                    "--seeds", "0", "--steps", "2", "--configs", str(configs),
                    "--test-speech", str(tmp_path / "speech"),
                    "--test-noise", str(tmp_path / "noise"), "--snrs", "0", "--skip-teachers"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2  # was: make_test_pairs' AudioError, then DataFolderError
    assert err[-1] == (f"python -m robustdistill.se.table: error: supervised_63x_s0: audio path "
                       f"does not exist: {tmp_path / 'no_noise'}")


@pytest.mark.parametrize("content, message", [
    (None, "does not exist (not a table folder?)"),
    ("{", "is not valid JSON"),
    ("[1, 2]", "is not a table's results.json"),
    ('{"a": {"parameters": 1}}', "is not a table's results.json"),
])
def test_merge_of_a_folder_without_a_table_results_file_is_one_line(tmp_path, capsys, content,
                                                                    message):
    from robustdistill.se.table import main as table_main

    folder = tmp_path / "f"
    folder.mkdir()
    if content is not None:
        (folder / "results.json").write_text(content)
    with pytest.raises(SystemExit) as exit_info:  # was: a FileNotFoundError, JSONDecodeError,
        table_main(["--merge", str(folder), "--out", str(tmp_path / "m")])  # or KeyError
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"python -m robustdistill.se.table: error: --merge: "
                           f"{folder / 'results.json'} ") and message in line
