"""``robustdistill enhance`` (files, folders, any rate and channel count) and ONNX export."""

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_ssl_enhancement_run

from robustdistill.se.enhance import enhance_waveform, load_enhancer, main
from robustdistill.se.students import GRUMaskStudent


def _noise(n, channels=None, seed=0):
    g = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    return (0.1 * g.standard_normal(shape)).astype(np.float32)


def test_enhance_16k_mono_file_equals_whole_file(tmp_path, gru_student_dir):
    x = _noise(12345)
    sf.write(tmp_path / "in.wav", x, 16000, subtype="FLOAT")
    assert main([str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--model",
                 str(gru_student_dir), "--chunk-seconds", "0.07"]) == 0
    y, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    model = GRUMaskStudent.from_pretrained(gru_student_dir)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)[None]).enhanced[0].numpy()
    assert rate == 16000 and y.shape == x.shape
    np.testing.assert_allclose(y, ref, atol=1e-6, rtol=0)


def test_enhance_keeps_rate_and_channels(tmp_path, gru_student_dir):
    x = _noise(44100, channels=2, seed=1)
    sf.write(tmp_path / "st.flac", x, 44100)
    main([str(tmp_path / "st.flac"), str(tmp_path / "st_out.flac"), "--model", str(gru_student_dir)])
    info = sf.info(tmp_path / "st_out.flac")
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 44100)
    # chunking never changes the result
    model = load_enhancer(gru_student_dir)
    a = enhance_waveform(model, x, 44100, chunk_seconds=0.05)
    b = enhance_waveform(model, x, 44100, chunk_seconds=100)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert not np.allclose(a[:, 0], a[:, 1])  # channels enhanced separately


def test_enhance_folder_mirrors_layout(tmp_path, gru_student_dir):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    sf.write(tmp_path / "in" / "a.wav", _noise(8000), 8000)
    sf.write(tmp_path / "in" / "sub" / "b.wav", _noise(4000, seed=2), 16000)
    main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(gru_student_dir)])
    assert sf.info(tmp_path / "out" / "a.wav").samplerate == 8000
    assert sf.info(tmp_path / "out" / "sub" / "b.wav").frames == 4000


def test_enhance_errors(tmp_path, gru_student_dir):
    with pytest.raises(FileNotFoundError, match=r"no SE student folder .*student\)?$"):
        load_enhancer(tmp_path)
    (tmp_path / "checkpoints" / "checkpoint_1").mkdir(parents=True)  # a run still training
    with pytest.raises(FileNotFoundError, match="holds checkpoints/ but no student/: a training "
                                                "run exports its student when it finishes"):
        load_enhancer(tmp_path)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.wav"), str(tmp_path / "o.wav"), "--model",
              str(gru_student_dir)])
    model = load_enhancer(gru_student_dir)
    with pytest.raises(ValueError, match="NaN"):
        enhance_waveform(model, np.array([0.0, np.nan], np.float32), 16000)


def test_onnx_export_parity(tmp_path, gru_student_dir):
    pytest.importorskip("onnxruntime")
    from robustdistill.se.onnx import check_onnx_parity, export_onnx

    model = GRUMaskStudent.from_pretrained(gru_student_dir)
    path = export_onnx(model, tmp_path / "student.onnx")
    g = torch.Generator().manual_seed(0)
    # dynamic batch and frames: a batch of whole files, and one streaming frame
    assert check_onnx_parity(model, path, torch.randn(3, 40, 161, generator=g)) < 1e-5
    assert check_onnx_parity(model, path, torch.randn(1, 1, 161, generator=g)) < 1e-5


def test_ssl_student_with_enhancement_head(tmp_path, capsys):
    """A distillation run's SSL student + enhancement head enhances through the same CLI; a
    head that outputs a mask of 1 gives back the input (STFT round trip)."""
    from robustdistill.se.ssl_head import SSLHeadEnhancer
    from robustdistill.teachers import make_random_teacher

    def identity_mask(head):
        with torch.no_grad():
            head.proj.weight.zero_()
            head.proj.bias.fill_(50.0)  # sigmoid -> 1: the identity mask

    run = tmp_path / "run"
    write_ssl_enhancement_run(run, identity_mask)
    model = load_enhancer(run)
    assert isinstance(model, SSLHeadEnhancer)
    x = _noise(8000, seed=3)
    y = enhance_waveform(model, x, 16000)
    np.testing.assert_allclose(y, x, atol=1e-5, rtol=0)
    sf.write(tmp_path / "in.wav", _noise(8000, 2, seed=4), 8000)
    main([str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--model", str(run)])
    assert sf.info(tmp_path / "out.wav").channels == 2
    assert isinstance(load_enhancer(run / "student"), SSLHeadEnhancer)  # the run's student/
    other = tmp_path / "other" / "student"  # a transformers folder with no head beside it
    make_random_teacher("wavlm", "tiny", other)
    with pytest.raises(ValueError, match="config.json is not a robustdistill SE student's"):
        load_enhancer(other)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "in.wav"), str(tmp_path / "o2.wav"), "--model", str(other)])
    assert "config.json is not a robustdistill SE student's" in capsys.readouterr().err
    assert not (tmp_path / "o2.wav").exists()


def test_ssl_student_exported_with_heads_inside_enhances(tmp_path, caplog, capsys):
    """``export --out OUT`` puts the heads inside ``OUT``: ``--model OUT`` uses them; heads
    recording other student weights are refused; heads recording none are used with a
    warning."""
    import json
    import shutil

    from robustdistill.export import weights_sha256
    from robustdistill.se.ssl_head import SSLHeadEnhancer

    run = tmp_path / "run"
    write_ssl_enhancement_run(run)
    out = tmp_path / "export"
    shutil.copytree(run / "student", out)
    shutil.copytree(run / "heads", out / "heads")
    recipe_path = out / "heads" / "enhancement.json"
    recipe = json.loads(recipe_path.read_text())
    recipe["student_weights"] = {"sha256": weights_sha256(out), "step": 7, "checkpoint": None}
    recipe_path.write_text(json.dumps(recipe))
    x = _noise(8000, seed=3)
    reference = enhance_waveform(load_enhancer(run), x, 16000)
    model = load_enhancer(out)
    assert isinstance(model, SSLHeadEnhancer)
    np.testing.assert_array_equal(enhance_waveform(model, x, 16000), reference)
    recipe["student_weights"] = {"sha256": "0" * 64, "step": 3, "checkpoint": "checkpoint_0"}
    recipe_path.write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match=r"other student weights \(step 3, checkpoint_0\)"):
        load_enhancer(out)
    sf.write(tmp_path / "in.wav", x, 16000)  # an input that exists: the model is why it stops
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "in.wav"), str(tmp_path / "o.wav"), "--model", str(out)])
    assert "other student weights (step 3, checkpoint_0)" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()
    with caplog.at_level("WARNING"):
        load_enhancer(run)  # written by hand: no record
    assert "records no student weights" in caplog.text


def test_enhance_output_names_are_checked_before_any_work(tmp_path, gru_student_dir, capsys,
                                                         monkeypatch):
    import robustdistill.se.enhance as enhance_module

    sf.write(tmp_path / "in.wav", _noise(4000), 16000)
    ran = []
    monkeypatch.setattr(enhance_module, "enhance_file", lambda *a, **k: ran.append(a))
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "in.wav"), str(tmp_path / "out.mp3x"), "--model",
              str(gru_student_dir)])
    assert stop.value.code == 2 and not ran
    assert "unknown audio file extension '.mp3x'" in capsys.readouterr().err
    monkeypatch.undo()
    # a name ending in "/" is a folder: the input's name inside it
    assert main([str(tmp_path / "in.wav"), str(tmp_path / "new") + "/", "--model",
                 str(gru_student_dir)]) == 0
    assert sf.info(tmp_path / "new" / "in.wav").frames == 4000
