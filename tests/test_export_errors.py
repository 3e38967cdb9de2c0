"""``robustdistill export`` errors: a missing run or checkpoint, a damaged newest checkpoint
(refused and named, as ``--resume`` refuses it), unusable ``--onnx-check-audio`` files
(skipped by name; one line when none is usable), and ``python -m robustdistill``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from robustdistill import cli
from robustdistill.checkpoints import MANIFEST, CheckpointError, write_manifest
from robustdistill.export import export_from_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, manifests: bool = True) -> Path:
    """A run folder as export reads it: ``student_init/`` (tiny random WavLM) and
    ``checkpoints/checkpoint_{1,2}`` holding its weights (with manifests unless told)."""
    from transformers import AutoModel

    from robustdistill.teachers import make_random_teacher

    run = tmp_path / "run"
    init = make_random_teacher("wavlm", "tiny", run / "student_init", seed=0)
    state = AutoModel.from_pretrained(init).state_dict()
    for step in (1, 2):
        folder = run / "checkpoints" / f"checkpoint_{step}"
        folder.mkdir(parents=True)
        save_file({f"student.model.{k}": v.contiguous() for k, v in state.items()},
                  str(folder / "model.safetensors"))
        if manifests:
            write_manifest(folder, step)
    return run


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(1000)


def _one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.export_main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("robustdistill export: error:")]
    return line


def test_missing_run_or_checkpoint_is_one_line(tmp_path, capsys):
    assert "run folder" in _one_line_error(capsys, ["--run", str(tmp_path / "nope")])
    run = _run(tmp_path)
    line = _one_line_error(capsys, ["--run", str(run), "--checkpoint", str(tmp_path / "gone")])
    assert "gone" in line and "does not exist" in line
    # --onnx-check-audio alone would be ignored silently: refused before any work
    assert "add --onnx" in _one_line_error(capsys, ["--run", str(run), "--onnx-check-audio",
                                                    str(tmp_path)])
    assert not (run / "student").exists()
    (run / "student_init" / "config.json").unlink()
    assert "student_init" in _one_line_error(capsys, ["--run", str(run)])


def test_truncated_newest_checkpoint_is_named_and_nothing_is_written(tmp_path, capsys):
    run = _run(tmp_path)
    _truncate(run / "checkpoints" / "checkpoint_2" / "model.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint_2.*model.safetensors"):
        export_from_checkpoint(run)
    line = _one_line_error(capsys, ["--run", str(run)])
    assert "damaged checkpoint" in line and "checkpoint_2" in line and "--checkpoint" in line
    assert not (run / "student").exists()
    # the earlier, intact checkpoint still exports on request, into its own folder under
    # exports/ (the run's student/ stays the trainer's export)
    out = export_from_checkpoint(run, run / "checkpoints" / "checkpoint_1")
    assert out == run / "exports" / "checkpoint_1" / "student"
    assert (out / "model.safetensors").is_file() and not (run / "student").exists()


def test_truncated_checkpoint_without_manifest_is_a_checkpoint_error(tmp_path, capsys):
    run = _run(tmp_path, manifests=False)
    _truncate(run / "checkpoints" / "checkpoint_2" / "model.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint_2.*cannot be read"):
        export_from_checkpoint(run)
    assert "cannot be read" in _one_line_error(capsys, ["--run", str(run)])


def test_onnx_check_audio_skips_bad_files_and_refuses_none_usable(tmp_path, capsys, caplog):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run = _run(tmp_path)
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "a_not_audio.wav").write_bytes(b"RIFFjunk")
    (audio / "b_empty.wav").write_bytes(b"")
    sf.write(audio / "c_silent.wav", np.zeros(16000, np.float32), 16000)
    none_usable = _one_line_error(capsys, ["--run", str(run), "--out", str(tmp_path / "x"),
                                           "--onnx", "--onnx-check-audio", str(audio)])
    assert "no usable audio file" in none_usable
    (tmp_path / "none").mkdir()
    no_audio = _one_line_error(capsys, ["--run", str(run), "--out", str(tmp_path / "y"),
                                        "--onnx", "--onnx-check-audio", str(tmp_path / "none")])
    assert "no audio files" in no_audio
    assert not (tmp_path / "y").exists()  # found before the student is written
    sf.write(audio / "d_good.wav",
             (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    with caplog.at_level(logging.WARNING, logger="robustdistill.publish.onnx"):
        assert cli.export_main(["--run", str(run), "--out", str(tmp_path / "s" / "student"),
                                "--onnx", "--onnx-check-audio", str(audio)]) == 0
    skipped = " ".join(r.getMessage() for r in caplog.records)
    for name in ("a_not_audio.wav", "b_empty.wav", "c_silent.wav"):
        assert name in skipped
    report = (tmp_path / "s" / "student" / "onnx" / "parity.json").read_text()
    assert '"num_waveforms": 1' in report and '"passed": true' in report


def test_an_error_inside_the_onnx_export_keeps_its_traceback(tmp_path, monkeypatch):
    # Only the user's errors (check audio, a foreign graph) are one line; a ValueError from the
    # exporter itself is a bug to report, with its traceback.
    from robustdistill.publish import onnx

    run = _run(tmp_path)

    def broken(model_dir, *args, **kwargs):
        raise ValueError("unsupported operator inside the exporter")

    monkeypatch.setattr(onnx, "export_onnx", broken)
    with pytest.raises(ValueError, match="unsupported operator"):
        cli.export_main(["--run", str(run), "--out", str(tmp_path / "s"), "--onnx"])


def test_python_dash_m_robustdistill_runs_the_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "robustdistill", "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "robustdistill export --run" in done.stdout
    done = subprocess.run([sys.executable, "-m", "robustdistill", "export", "--run",
                           str(tmp_path / "nope")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "run folder" in done.stderr


def test_newest_checkpoint_without_manifest_is_passed_over_for_a_complete_one(tmp_path):
    """checkpoint_2 without its manifest (a save killed before it finished): export takes the
    newest complete checkpoint, checkpoint_1, not the newest folder."""
    from safetensors.torch import load_file

    run = _run(tmp_path)
    newest = run / "checkpoints" / "checkpoint_2"
    state = load_file(str(newest / "model.safetensors"))
    save_file({k: v + 1.0 for k, v in state.items()}, str(newest / "model.safetensors"))
    (newest / MANIFEST).unlink()
    out = export_from_checkpoint(run)
    exported = load_file(str(out / "model.safetensors"))
    for key, value in state.items():  # checkpoint_1 holds the same weights as 2 did
        assert torch.equal(exported[key[len("student.model."):]], value), key


def test_a_checkpoint_with_a_damaged_file_beside_the_weights_is_refused(tmp_path, capsys):
    """The manifest lists every file; one cut short (here the optimizer state) makes the
    checkpoint damaged even though model.safetensors itself reads."""
    run = _run(tmp_path, manifests=False)
    for step in (1, 2):
        folder = run / "checkpoints" / f"checkpoint_{step}"
        (folder / "optimizer.bin").write_bytes(b"x" * 2000)
        write_manifest(folder, step)
    _truncate(run / "checkpoints" / "checkpoint_2" / "optimizer.bin")
    with pytest.raises(CheckpointError, match=r"damaged checkpoint: .*checkpoint_2: "
                                              r"optimizer.bin has 1000 bytes"):
        export_from_checkpoint(run)
    assert not (run / "student").exists()


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_checkpoint_weights_of_another_student_are_refused(tmp_path, change):
    """Keys the student does not have, or lacks, are a CheckpointError naming them (a
    checkpoint of another architecture is never exported half-loaded)."""
    from safetensors.torch import load_file

    run = _run(tmp_path)
    path = run / "checkpoints" / "checkpoint_2" / "model.safetensors"
    state = load_file(str(path))
    if change == "extra":
        state["student.model.extra_layer.weight"] = torch.zeros(2)
        message = r"unexpected \['extra_layer.weight'\]"
    else:
        dropped = sorted(state)[0]
        del state[dropped]
        message = rf"missing \['{dropped[len('student.model.'):]}'\]"
    save_file(state, str(path))
    write_manifest(path.parent, 2)  # a complete checkpoint, of other weights
    with pytest.raises(CheckpointError, match=r"checkpoint_2 does not match the student in "
                                              rf".*student_init: .*{message}"):
        export_from_checkpoint(run, run / "checkpoints" / "checkpoint_2")


def _run_files(run: Path) -> dict[str, bytes]:
    """Every file of the run folder but ``student/``, ``heads/`` and ``exports/`` (what
    ``export`` writes): relative path -> bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.relative_to(run).parts[0] not in ("student", "heads", "exports")}


def test_an_out_among_the_runs_own_files_is_refused_and_never_emptied(tmp_path, capsys):
    """``export --checkpoint .../checkpoint_1 --out RUN/checkpoints/checkpoint_2 --overwrite``
    emptied ``checkpoint_2`` (its weights and manifest replaced by a student and heads): an
    ``--out`` inside the run is its own ``RUN/student`` (heads in ``RUN/heads``) or a folder
    under ``RUN/exports/``; any other is refused, with or without ``--overwrite``, every file
    left as it was. The same rule as ``train-speaker export`` (``files.check_outside_run``)."""
    run = _run(tmp_path)
    (run / "config.yaml").write_text("objectives: {}\n")
    before = _run_files(run)
    first = str(run / "checkpoints" / "checkpoint_1")
    for out in (run / "checkpoints" / "checkpoint_2", run / "checkpoints" / "checkpoint_1",
                run / "checkpoints", run / "student_init", run / "heads", run / "mine",
                run / "exports", run / "checkpoints" / "checkpoint_2" / "student"):
        for extra in ([], ["--overwrite"]):
            line = _one_line_error(capsys, ["--run", str(run), "--checkpoint", first, "--out",
                                            str(out), *extra])
            assert line == (f"robustdistill export: error: --out {str(out)!r} is inside the "
                            f"run folder {run}, whose files (checkpoints/, config.yaml, ...) "
                            "are the trainer's: give RUN/student, a folder under RUN/exports/ "
                            "or one outside the run"), (out, extra, line)
    assert _run_files(run) == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml",
                                                     "student_init"]
    # the run's own folders and RUN/exports/: written (again, with --overwrite)
    assert cli.export_main(["--run", str(run)]) == 0
    assert sorted(p.name for p in (run / "heads").iterdir()) == []  # no objective heads
    assert (run / "student" / "model.safetensors").is_file()
    for extra in ([], ["--overwrite"]):
        assert cli.export_main(["--run", str(run), "--checkpoint", first, "--out",
                                str(run / "exports" / "c1"), *extra]) == 0
    assert cli.export_main(["--run", str(run), "--checkpoint", first, "--out",
                            str(run / "student"), "--overwrite"]) == 0
    assert (run / "exports" / "c1" / "model.safetensors").read_bytes() == (
        run / "student" / "model.safetensors").read_bytes()
    assert _run_files(run) == before


def test_a_default_folder_linked_into_the_run_is_named_as_such_and_never_emptied(tmp_path,
                                                                                  capsys):
    """``RUN/student`` a link to ``RUN/checkpoints/checkpoint_2`` (or ``RUN/exports`` one to
    ``RUN/checkpoints``): ``export --run RUN [--checkpoint ...]``, with no ``--out``, is
    refused as the student folder (not "--out", which was not given) and names where the link
    leads (the refusal's "give RUN/student" read as a contradiction for ``RUN/student``
    itself); the checkpoint stays as it was. A plain ``--out`` inside the run names no link."""
    run = _run(tmp_path)
    (run / "config.yaml").write_text("objectives: {}\n")
    (run / "student").symlink_to(Path("checkpoints") / "checkpoint_2")
    before = _run_files(run)
    line = _one_line_error(capsys, ["--run", str(run), "--overwrite"])
    assert line == (f"robustdistill export: error: student folder {str(run / 'student')!r} is "
                    f"inside the run folder {run} (through a link: RUN/checkpoints/"
                    "checkpoint_2), whose files (checkpoints/, config.yaml, ...) are the "
                    "trainer's: give RUN/student, a folder under RUN/exports/ or one outside "
                    "the run")
    (run / "student").unlink()
    (run / "exports").symlink_to("checkpoints")
    first = str(run / "checkpoints" / "checkpoint_1")
    line = _one_line_error(capsys, ["--run", str(run), "--checkpoint", first])
    default = run / "exports" / "checkpoint_1" / "student"
    assert line == (f"robustdistill export: error: student folder {str(default)!r} is inside "
                    f"the run folder {run} (through a link: RUN/checkpoints/checkpoint_1/"
                    "student), whose files (checkpoints/, config.yaml, ...) are the trainer's: "
                    "give RUN/student, a folder under RUN/exports/ or one outside the run")
    out = run / "student" / ".." / "checkpoints" / "checkpoint_2"  # no link: no note
    line = _one_line_error(capsys, ["--run", str(run), "--out", str(out), "--overwrite"])
    assert line.startswith(f"robustdistill export: error: --out {str(out)!r} is inside the "
                           f"run folder {run}, whose files")
    assert _run_files(run) == before
