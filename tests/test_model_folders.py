"""The commands that write a model folder (``create-student``, ``make-teacher``, ``export``
and the trainer's own export) never leave files of other weights beside new ones: a folder that
holds files is refused (or emptied with ``--overwrite``), the run's own ``student/`` and
``heads/`` are written clean, every export's heads record the weights they were saved with and
go where no other export's heads are, and ``card`` ships only heads of its model's weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from robustdistill import cli
from robustdistill.checkpoints import write_manifest
from robustdistill.export import (
    export_from_checkpoint,
    export_heads_dir,
    export_run_student,
    heads_match,
    run_export_of_step,
    weights_sha256,
)
from robustdistill.files import OutputFolderError, check_output_folder
from robustdistill.publish.card import CardError, copy_run_files
from robustdistill.publish.card_training import heads_dir_for

# ---- helpers ---------------------------------------------------------------------------------


def _run(tmp_path: Path) -> Path:
    """A run folder as ``export`` reads it: ``student_init/`` (tiny random WavLM),
    ``config.yaml`` and ``checkpoints/checkpoint_{0,1}`` (steps 30 and 60) whose student
    weights and ``layerwise`` head differ."""
    from transformers import AutoModel

    from robustdistill.teachers import make_random_teacher

    run = tmp_path / "run"
    init = make_random_teacher("wavlm", "tiny", run / "student_init", seed=0)
    state = AutoModel.from_pretrained(init).state_dict()
    (run / "config.yaml").write_text("objectives:\n  layerwise: {teacher_layers: [1]}\n")
    for index, step in enumerate((30, 60)):
        folder = run / "checkpoints" / f"checkpoint_{index}"
        folder.mkdir(parents=True)
        weights = {f"student.model.{k}": v.contiguous() + (index if v.is_floating_point() else 0)
                   for k, v in state.items()}
        weights["objectives.layerwise.heads.0.weight"] = torch.full((4, 3), float(step))
        save_file(weights, str(folder / "model.safetensors"))
        write_manifest(folder, step)
    return run


def _error(capsys, command: str, argv: list[str]) -> str:
    """The one error line of ``robustdistill COMMAND ARGV`` (exit 2, no traceback)."""
    with pytest.raises(SystemExit) as stop:
        cli.main([command, *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith(f"robustdistill {command}: error:")]
    return line


def _carded(folder: Path) -> Path:
    """``folder`` with what ``card`` writes beside a student: a card, a plot, heads."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# the distilled model\n")
    (folder / "robustness_ks.png").write_bytes(b"png")
    (folder / "heads").mkdir(exist_ok=True)
    (folder / "heads" / "layerwise.safetensors").write_bytes(b"heads")
    return folder


# ---- defect 1: a folder that holds files is refused, or emptied with --overwrite -------------


def test_create_student_refuses_a_folder_that_holds_files_and_overwrite_empties_it(
        tmp_path, capsys, tiny_wavlm_dir):
    out = _carded(tmp_path / "st")
    (out / "model.safetensors").write_bytes(b"distilled")
    line = _error(capsys, "create-student", ["--teacher", str(tiny_wavlm_dir), "--out", str(out)])
    assert "is not empty" in line and "README.md" in line and "--overwrite" in line
    assert (out / "model.safetensors").read_bytes() == b"distilled"  # untouched
    assert cli.main(["create-student", "--teacher", str(tiny_wavlm_dir), "--out", str(out),
                     "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    # an empty folder is fine without --overwrite
    (tmp_path / "empty").mkdir()
    assert cli.main(["create-student", "--teacher", str(tiny_wavlm_dir), "--out",
                     str(tmp_path / "empty")]) == 0


def test_overwrite_never_deletes_the_teacher_or_the_current_folder(tmp_path, capsys,
                                                                   tiny_wavlm_dir, monkeypatch):
    line = _error(capsys, "create-student", ["--teacher", str(tiny_wavlm_dir), "--out",
                                             str(tiny_wavlm_dir), "--overwrite"])
    assert "--overwrite would delete" in line
    line = _error(capsys, "create-student", ["--teacher", str(tiny_wavlm_dir), "--out",
                                             str(tiny_wavlm_dir.parent), "--overwrite"])
    assert "an input of this command" in line
    assert (tiny_wavlm_dir / "config.json").is_file()
    here = tmp_path / "here"
    (here / "sub").mkdir(parents=True)
    (here / "keep.txt").write_text("keep")
    monkeypatch.chdir(here / "sub")
    with pytest.raises(OutputFolderError, match="the current folder"):
        check_output_folder(here, "--out", overwrite=True)
    assert (here / "keep.txt").is_file()


def test_make_teacher_refuses_a_folder_that_holds_files_and_overwrite_empties_it(tmp_path,
                                                                                 capsys):
    out = tmp_path / "teacher"
    assert cli.main(["make-teacher", "--family", "wavlm", "--preset", "tiny", "--out",
                     str(out)]) == 0
    (out / "README.md").write_text("a WavLM teacher")
    line = _error(capsys, "make-teacher", ["--family", "hubert", "--preset", "tiny", "--out",
                                           str(out)])
    assert "is not empty" in line and "README.md" in line
    assert '"wavlm"' in (out / "config.json").read_text()
    assert cli.main(["make-teacher", "--family", "hubert", "--preset", "tiny", "--out", str(out),
                     "--overwrite"]) == 0
    assert '"hubert"' in (out / "config.json").read_text()
    assert not (out / "README.md").exists()
    (tmp_path / "afile").write_text("keep me")
    line = _error(capsys, "make-teacher", ["--preset", "tiny", "--out",
                                           str(tmp_path / "afile" / "t")])
    assert "is an existing file, not a folder" in line


def test_export_out_that_holds_files_is_refused_before_anything_is_written(tmp_path, capsys):
    run = _run(tmp_path)
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = _error(capsys, "export", ["--run", str(run), "--out", str(out)])
    assert "is not empty (notes.txt)" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "heads").exists()  # nothing beside it either
    assert cli.main(["export", "--run", str(run), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "heads", "model.safetensors", "preprocessor_config.json"]
    # --out RUN --overwrite would delete the run: refused
    line = _error(capsys, "export", ["--run", str(run), "--out", str(run), "--overwrite"])
    assert "--overwrite would delete" in line
    assert (run / "checkpoints" / "checkpoint_1" / "model.safetensors").is_file()


def test_export_overwrite_never_deletes_the_runs_student_init(tmp_path, capsys):
    """``student_init`` is read to build the student: an --out that is it (or holds it) is
    refused before anything is emptied, and the run can still be exported. Since 2026-12-08
    a folder of the user's inside the run is refused too (``files.check_outside_run``: only
    ``RUN/student`` or under ``RUN/exports/``), which this test still let through."""
    run = _run(tmp_path)
    init = run / "student_init"
    before = sorted(p.name for p in init.iterdir())
    line = _error(capsys, "export", ["--run", str(run), "--out", str(init), "--overwrite"])
    # inside the run: refused by the run rule (before 2026-12-08: as an input --overwrite
    # would delete); the run itself, which holds it, still as such an input
    assert f"--out {str(init)!r} is inside the run folder {run}," in line
    line = _error(capsys, "export", ["--run", str(run), "--out", str(run), "--overwrite"])
    assert f"is or holds {str(run)!r}, an input" in line and "--overwrite would delete" in line
    assert sorted(p.name for p in init.iterdir()) == before
    assert cli.main(["export", "--run", str(run)]) == 0
    # elsewhere in the run: refused (one line), nothing written; under RUN/exports/: fine
    line = _error(capsys, "export", ["--run", str(run), "--out", str(run / "mine"), "--overwrite"])
    assert f"--out {str(run / 'mine')!r} is inside the run folder {run}," in line
    assert not (run / "mine").exists()
    assert cli.main(["export", "--run", str(run), "--out", str(run / "exports" / "mine"),
                     "--overwrite"]) == 0
    assert (run / "exports" / "mine" / "model.safetensors").is_file()


def test_export_overwrite_never_deletes_the_onnx_check_audio(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    run = _run(tmp_path)
    out = tmp_path / "od"
    (out / "audio").mkdir(parents=True)
    sf.write(out / "audio" / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    line = _error(capsys, "export", ["--run", str(run), "--out", str(out), "--overwrite", "--onnx",
                                     "--onnx-check-audio", str(out / "audio")])
    assert "audio" in line and "--overwrite would delete" in line
    assert sorted(p.name for p in out.rglob("*")) == ["a.wav", "audio"]  # nothing written


def test_export_without_out_names_the_export_not_overwrite_as_what_would_delete(tmp_path,
                                                                               capsys):
    """The run's own student folder is always written again: check audio inside it is refused
    without blaming an --overwrite that was not given."""
    import numpy as np
    import soundfile as sf

    run = _run(tmp_path)
    (run / "student" / "audio").mkdir(parents=True)
    sf.write(run / "student" / "audio" / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    line = _error(capsys, "export", ["--run", str(run), "--onnx",
                                     "--onnx-check-audio", str(run / "student" / "audio")])
    assert "which the export (it writes the run's own folder again) would delete" in line
    assert "--overwrite" not in line
    assert (run / "student" / "audio" / "a.wav").is_file()


def test_export_into_the_runs_own_student_removes_a_card_of_other_weights(tmp_path, caplog):
    run = _run(tmp_path)
    export_from_checkpoint(run, run / "checkpoints" / "checkpoint_0", run / "student")
    _carded(run / "student")
    with caplog.at_level(logging.WARNING, logger="robustdistill.export"):
        student = export_from_checkpoint(run)  # the newest: the run's own folder, again
    assert sorted(p.name for p in student.iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    warned = caplog.text
    for name in ("student/README.md", "student/heads/", "student/robustness_ks.png"):
        assert name in warned
    assert heads_match(run / "heads", student) == (True, "")


# ---- defect 1: the trainer's re-export ---------------------------------------------------------


class _Objective(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((2, 2), value))

    def head_config(self) -> dict:
        return {}


class _Distiller(torch.nn.Module):
    """What ``export_run_student`` reads of a ``Distiller``."""

    def __init__(self, model, value: float):
        super().__init__()
        self.student = torch.nn.Module()
        self.student.model = model
        self.objectives = torch.nn.ModuleDict({"layerwise": _Objective(value)})


def test_the_trainers_export_writes_clean_folders_and_records_the_step(tmp_path, caplog,
                                                                       tiny_wavlm_dir):
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(tiny_wavlm_dir)
    extractor = AutoFeatureExtractor.from_pretrained(tiny_wavlm_dir)
    run = tmp_path / "run"
    export_run_student(_Distiller(model, 1.0), extractor, run, {}, step=60)
    _carded(run / "student")
    (run / "heads" / "old_objective.safetensors").write_bytes(b"gone")
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # trained on: other weights
    with caplog.at_level(logging.WARNING, logger="robustdistill.export"):
        export_run_student(_Distiller(model, 2.0), extractor, run, {}, step=90)
    assert sorted(p.name for p in (run / "student").iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    assert sorted(p.name for p in (run / "heads").iterdir()) == [
        "layerwise.json", "layerwise.safetensors"]
    for name in ("student/README.md", "student/robustness_ks.png", "heads/old_objective"):
        assert name in caplog.text
    record = json.loads((run / "heads" / "layerwise.json").read_text())["student_weights"]
    assert record == {"sha256": weights_sha256(run / "student"), "step": 90, "checkpoint": None}


def test_run_export_of_step_is_the_exported_step_of_these_weights_and_heads(tmp_path,
                                                                            tiny_wavlm_dir):
    """What lets a resumed run with no step to train keep RUN/student and its card."""
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(tiny_wavlm_dir)
    extractor = AutoFeatureExtractor.from_pretrained(tiny_wavlm_dir)
    run = tmp_path / "run"
    assert not run_export_of_step(run, 60, ["layerwise"])  # nothing exported yet
    export_run_student(_Distiller(model, 1.0), extractor, run, {}, step=60)
    _carded(run / "student")  # files beside the export do not matter
    assert run_export_of_step(run, 60, ["layerwise"])
    assert not run_export_of_step(run, 90, ["layerwise"])  # another step
    assert not run_export_of_step(run, 60, ["layerwise", "enhancement"])  # a head missing
    (run / "student" / "model.safetensors").write_bytes(b"other weights")
    assert not run_export_of_step(run, 60, ["layerwise"])


# ---- defect 2: each export's heads belong to its own weights ----------------------------------


def test_exports_of_two_checkpoints_keep_their_own_heads_and_the_card_ships_them(tmp_path):
    run = _run(tmp_path)
    step30 = export_from_checkpoint(run, run / "checkpoints" / "checkpoint_0",
                                    tmp_path / "X" / "step30")
    step60 = export_from_checkpoint(run, run / "checkpoints" / "checkpoint_1",
                                    tmp_path / "X" / "step60")
    assert not (tmp_path / "X" / "heads").exists()  # no shared ../heads
    for folder, step in ((step30, 30), (step60, 60)):
        assert export_heads_dir(folder) == folder / "heads"
        head = load_file(str(folder / "heads" / "layerwise.safetensors"))["heads.0.weight"]
        assert torch.equal(head, torch.full((4, 3), float(step)))
        record = json.loads((folder / "heads" / "layerwise.json").read_text())
        assert record["student_weights"]["step"] == step
        assert heads_dir_for(folder, run) == folder / "heads"
    assert heads_match(step60 / "heads", step30) == (False, "step 60, checkpoint_1")
    # a folder named student keeps the run layout: PARENT/student + PARENT/heads
    pair = export_from_checkpoint(run, out_dir=tmp_path / "d2" / "student")
    assert (tmp_path / "d2" / "heads" / "layerwise.safetensors").is_file()
    assert heads_dir_for(pair, run) == tmp_path / "d2" / "heads"


def test_the_card_never_ships_heads_recorded_with_other_weights(tmp_path, caplog):
    run = _run(tmp_path)
    export_from_checkpoint(run)  # RUN/student + RUN/heads of step 60
    early = export_from_checkpoint(run, run / "checkpoints" / "checkpoint_0",
                                   tmp_path / "early")
    # a bare copy of the step-30 student: RUN/heads (step 60) are not its heads
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (bare / name).write_bytes((early / name).read_bytes())
    with caplog.at_level(logging.WARNING, logger="robustdistill.publish.card_training"):
        assert heads_dir_for(bare, run) is None
    assert "saved with other weights (step 60, checkpoint_1)" in caplog.text
    written = copy_run_files(run, bare)
    assert not (bare / "heads").exists() and all("heads" not in str(p) for p in written)
    # a copy of the run's own student finds RUN/heads by their record
    final = tmp_path / "final"
    final.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (final / name).write_bytes((run / "student" / name).read_bytes())
    assert heads_dir_for(final, run) == run / "heads"
    # heads of other weights inside the model folder would be published: refused
    (early / "heads" / "layerwise.json").write_text(
        (run / "heads" / "layerwise.json").read_text())
    with pytest.raises(CardError, match="other weights"):
        heads_dir_for(early, run)


def test_heads_without_a_record_are_used_only_beside_their_own_student(tmp_path):
    """Heads exported before they carried a record: ``RUN/heads`` for ``RUN/student`` (or a
    copy of its weights) as before, never for other weights."""
    run = _run(tmp_path)
    export_from_checkpoint(run)
    for recipe in (run / "heads").glob("*.json"):
        data = json.loads(recipe.read_text())
        del data["student_weights"]
        recipe.write_text(json.dumps(data))
    assert heads_match(run / "heads", run / "student") == (None, "")
    assert heads_dir_for(run / "student", run) == run / "heads"
    other = export_from_checkpoint(run, run / "checkpoints" / "checkpoint_0", tmp_path / "o")
    (other / "heads" / "layerwise.safetensors").unlink()
    (other / "heads" / "layerwise.json").unlink()
    assert heads_dir_for(other, run) is None


# ---- defect 3: every output path is checked before anything is written ------------------------


@pytest.mark.parametrize("default", [True, False])
def test_a_file_where_the_heads_go_is_one_line_and_nothing_is_written(tmp_path, capsys,
                                                                      default):
    run = _run(tmp_path)
    parent = run if default else tmp_path / "d2"
    parent.mkdir(exist_ok=True)
    (parent / "heads").write_text("a file")
    argv = ["--run", str(run)] + ([] if default else ["--out", str(parent / "student")])
    line = _error(capsys, "export", argv)
    assert "heads" in line and "is an existing file, not a folder" in line
    assert not (parent / "student").exists()


@pytest.mark.slow
def test_a_resumed_run_warns_at_start_and_exports_clean_folders(tmp_path, caplog,
                                                                tiny_wavlm_dir):
    """Resuming a finished run (no step to train) keeps RUN/student and its card; resuming with
    more steps re-exports RUN/student: the card written for the earlier step is named at the
    start and removed at the export, never left beside the new weights."""
    from robustdistill.config import load_config
    from robustdistill.trainer import train

    run = tmp_path / "run"

    def config(*extra: str):
        return load_config(None, [
            "--teacher", str(tiny_wavlm_dir), "--output_dir", str(run),
            "--data.synthetic_items", "8", "--data.synthetic_dir", str(tmp_path / "corpus"),
            "--data.batch_size", "2", "--data.max_length_s", "1.0", "--data.min_length_s", "0.5",
            "--augmentation.num_simulated_rooms", "2", "--augmentation.room_max_order", "3",
            "--objectives", "{layerwise: {teacher_layers: [1, 2]}}", "--training.cpu", "true",
            "--training.report_to", "[]", "--training.save_every", "2", *extra])

    train(config("--training.max_steps", "2"))
    _carded(run / "student")
    carded = sorted(p.name for p in (run / "student").iterdir())
    weights = weights_sha256(run / "student")
    # a finished run resumed: no step to train, the same weights: student/ is kept, card included
    with caplog.at_level(logging.INFO):
        train(config("--training.max_steps", "2", "--training.resume_from", "latest"))
    assert "removes them" not in caplog.text and "removed what was written" not in caplog.text
    assert "nothing left to train" in caplog.text
    assert sorted(p.name for p in (run / "student").iterdir()) == carded
    assert weights_sha256(run / "student") == weights
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train(config("--training.max_steps", "3", "--training.resume_from", "latest"))
    start = [r.getMessage() for r in caplog.records if r.name == "robustdistill.trainer"]
    assert any("README.md" in m and "removes them" in m for m in start)
    assert sorted(p.name for p in (run / "student").iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    record = json.loads((run / "heads" / "layerwise.json").read_text())["student_weights"]
    assert record["step"] == 3 and heads_dir_for(run / "student", run) == run / "heads"
