"""``robustdistill train-speaker export``: the student of a ``train-speaker`` checkpoint as the
model folder a finished run writes to ``RUN/student``, so that a run stopped at a NaN/Inf step
or by a SIGTERM (checkpoints only) can be carded. Until 2026-12-07 no command wrote one: such
a card needed a hand-written script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import nan_instance_loss_at, sigterm_speaker_run, speaker_kd_config
from safetensors.torch import load_file

from robustdistill.speaker.models import EMBEDDER_PARTS
from robustdistill.speaker.train import train_system

PROG = "robustdistill train-speaker"


def _export(capsys, *args: str) -> dict:
    """``train-speaker export ARGS``: exit 0; what it printed (JSON)."""
    from robustdistill.speaker.cli import main

    assert main(["export", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _refused(capsys, *args: str, action: str = "export") -> str:
    """``train-speaker ACTION ARGS`` refused: exit 2, one line and no traceback; that line."""
    from robustdistill.speaker.cli import main

    with pytest.raises(SystemExit) as stop:
        main([action, *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def _embedder_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The embedder's tensors (encoder, pooling, embedding) of a checkpoint's model."""
    return {k: v for k, v in load_file(checkpoint / "model.safetensors").items()
            if k.startswith(EMBEDDER_PARTS)}


def _assert_equal_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_exporting_a_finished_runs_last_checkpoint_gives_its_student_exactly(tiny, tmp_path,
                                                                            capsys):
    """The export of ``epoch_2`` of a finished 2-epoch IML-KD run is ``RUN/student``: every
    tensor equal (and both files byte for byte), the same ``config.json``; ``epoch_1`` gives
    that epoch's weights. K and the teacher's width come from the checkpoint's shapes."""
    teacher, crops = tiny
    run = tmp_path / "run"
    train_system(speaker_kd_config(tmp_path, "run", 2), teacher, crops)
    done = _export(capsys, "--run", str(run), "--out", str(tmp_path / "last"))
    assert done == {"student": str(tmp_path / "last"),
                    "checkpoint": str(run / "checkpoints" / "epoch_2"), "epochs_done": 2,
                    "batches_done": 0, "num_speakers": 3, "teacher_dim": 8}
    _assert_equal_tensors(load_file(tmp_path / "last" / "model.safetensors"),
                          load_file(run / "student" / "model.safetensors"))
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "last" / name).read_bytes() == (run / "student" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == ["config.json",
                                                                    "model.safetensors"]
    # an earlier checkpoint, by name; default folder RUN/exports/NAME/student
    done = _export(capsys, "--run", str(run), "--checkpoint", "epoch_1")
    first = run / "exports" / "epoch_1" / "student"
    assert done["student"] == str(first) and done["epochs_done"] == 1
    exported = load_file(first / "model.safetensors")
    _assert_equal_tensors(exported, _embedder_tensors(run / "checkpoints" / "epoch_1"))
    final = load_file(run / "student" / "model.safetensors")
    assert any(not torch.equal(exported[k], final[k]) for k in exported)
    # again, with no --out: the refusal names the default folder (it named an --out never given)
    line = _refused(capsys, "--run", str(run), "--checkpoint", "epoch_1")
    assert line.startswith(f"robustdistill train-speaker: error: the default folder "
                           f"{str(first)!r} is not empty"), line


def test_an_upstream_students_export_equals_its_student_folder(tiny, tiny_wavlm_dir, tmp_path,
                                                               capsys, monkeypatch):
    """An upstream student (relative ``student.upstream``, from the folder the run started
    in): the export run from another folder writes the same ``upstream/`` and tensors."""
    teacher, crops = tiny
    monkeypatch.chdir(tiny_wavlm_dir.parent)
    cfg = speaker_kd_config(tmp_path, "up", 1, method="none")
    cfg.student.kind, cfg.student.upstream = "upstream", tiny_wavlm_dir.name
    train_system(cfg, teacher, crops)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "up"
    _export(capsys, "--run", str(run), "--out", str(tmp_path / "x"))
    for name in ("model.safetensors", "config.json", "upstream/model.safetensors",
                 "upstream/config.json"):
        assert (tmp_path / "x" / name).read_bytes() == (run / "student" / name).read_bytes(), name


def _nan_in_epoch_2(monkeypatch) -> None:
    """``instance_loss``'s third call (epoch 2, batch 1 of 2 with the tiny crops) NaN."""
    nan_instance_loss_at(monkeypatch, 3)


def test_a_run_stopped_by_a_nan_exports_its_newest_checkpoint_and_the_card_accepts_it(
        tiny, tmp_path, monkeypatch, capsys):
    """A NaN loss in epoch 2: ``stopped.json`` names ``epoch_1``, the export's default;
    ``card --run`` takes those weights, refuses others, and its refusal names the command."""
    from safetensors.torch import save_file

    from robustdistill.cli import main as robustdistill
    from robustdistill.speaker import train as speaker_train

    teacher, crops = tiny
    _nan_in_epoch_2(monkeypatch)
    run = tmp_path / "run"
    with pytest.raises(speaker_train.NonFiniteLossError):
        train_system(speaker_kd_config(tmp_path, "run", 3, method="embedding_kd"), teacher,
                     crops)
    assert json.loads((run / "stopped.json").read_text())["checkpoint"] == str(
        run / "checkpoints" / "epoch_1")
    model = tmp_path / "model"
    done = _export(capsys, "--run", str(run), "--out", str(model))
    assert (done["checkpoint"], done["epochs_done"]) == (str(run / "checkpoints" / "epoch_1"), 1)
    _assert_equal_tensors(load_file(model / "model.safetensors"),
                          _embedder_tensors(run / "checkpoints" / "epoch_1"))
    card = ["card", "--model", str(model), "--run", str(run), "--license", "mit", "--kind",
            "speaker", "--no-speed"]
    assert robustdistill(card) == 0
    readme = (model / "README.md").read_text()
    assert "the weights are those of its newest checkpoint, `epoch_1` (epoch 1)" in readme
    # other weights: refused, naming the command that writes the checkpoint's student
    tensors = load_file(model / "model.safetensors")
    tensors["embedding.bias"] = tensors["embedding.bias"] + 1.0
    save_file(tensors, str(model / "model.safetensors"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        robustdistill(card)
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "(the nearest, epoch_1: 1 tensor differs, e.g. 'embedding.bias')" in line
    assert line.endswith(f"written by robustdistill train-speaker export --run {run} "
                         "--checkpoint NAME --out DIR"), line


def test_a_mid_epoch_checkpoint_of_a_sigterm_is_exported(tiny, tmp_path, monkeypatch, capsys):
    """A SIGTERM in batch 2 of 3 of epoch 2: ``epoch_1_batch_2`` is the newest checkpoint and
    the default; the older ``epoch_1`` can be named by its folder."""
    run = sigterm_speaker_run(tiny, tmp_path, monkeypatch, 3, 5)  # epoch 2, batch 2
    capsys.readouterr()
    done = _export(capsys, "--run", str(run), "--out", str(tmp_path / "a"))
    assert (done["checkpoint"], done["epochs_done"], done["batches_done"]) == (
        str(run / "checkpoints" / "epoch_1_batch_2"), 1, 2)
    _assert_equal_tensors(load_file(tmp_path / "a" / "model.safetensors"),
                          _embedder_tensors(run / "checkpoints" / "epoch_1_batch_2"))
    done = _export(capsys, "--run", str(run), "--checkpoint", str(run / "checkpoints" / "epoch_1"),
                   "--out", str(tmp_path / "b"))
    assert done["checkpoint"] == str(run / "checkpoints" / "epoch_1")
    _assert_equal_tensors(load_file(tmp_path / "b" / "model.safetensors"),
                          _embedder_tensors(run / "checkpoints" / "epoch_1"))


def test_export_errors_are_one_line_before_anything_is_written(tiny, tmp_path, capsys):
    teacher, crops = tiny
    run = tmp_path / "run"
    train_system(speaker_kd_config(tmp_path, "run", 2, method="none"), teacher, crops)
    out = tmp_path / "out"
    cases = [
        (["--run", str(tmp_path / "nope")], f"run folder {tmp_path / 'nope'} does not exist"),
        (["--run", str(tmp_path)], f"{tmp_path / 'config.yaml'} not found: {tmp_path} is not "
                                   "a train-speaker run folder"),
        (["--run", str(run), "--checkpoint", "epoch_7"],
         f"no complete checkpoint epoch_7 in {run / 'checkpoints'} (complete: epoch_1, "
         "epoch_2)"),
        (["--run", str(run), "--checkpoint", str(tmp_path / "epoch_1")],
         f"--checkpoint {tmp_path / 'epoch_1'} is not in {run / 'checkpoints'} (complete: "
         "epoch_1, epoch_2)"),
        (["--run", str(run), "--out", str(run / "student")],
         "is the folder a finished run exports its student to"),
        (["--run", str(run), "--out", str(run)], f"--out {str(run)!r} is not empty ("),
        (["--config", "configs/imlkd_speaker.yaml", "--run", str(run)],
         "export reads RUN/config.yaml, the run's own: --config is not read by export"),
        (["--run", str(run), "--loss.method", "imlkd"],
         "unrecognized arguments: --loss.method imlkd (export builds the student as "
         "RUN/config.yaml describes it"),
        ([], "export needs --run RUN"),
    ]
    for args, message in cases:
        line = _refused(capsys, *args, "--out", str(out)) if "--out" not in args else \
            _refused(capsys, *args)
        assert line.startswith(f"{PROG}: error: ") and message in line, (args, line)
        assert not out.exists() and not (run / "exports").exists()
    # robustdistill export (distill runs) names this command for a train-speaker run
    from robustdistill.cli import main as robustdistill

    with pytest.raises(SystemExit):
        robustdistill(["export", "--run", str(run), "--out", str(out)])
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"is {run} a distillation run? (its checkpoints are train-speaker's: robustdistill "
        f"train-speaker export --run {run})")
    assert not out.exists()
    # the export-only options are refused by the other actions
    line = _refused(capsys, "--config", "configs/imlkd_speaker.yaml", "--run", str(run),
                    action="train")
    assert line.endswith("error: --run is read by export only, not by train")
    assert _refused(capsys, action="train").endswith(
        "the following arguments are required: --config")

    # a config.yaml of another method than the checkpoints: refused by name
    config = run / "config.yaml"
    good = config.read_text()
    config.write_text(good.replace("method: none", "method: imlkd"))
    line = _refused(capsys, "--run", str(run), "--out", str(out))
    assert f"{run / 'checkpoints' / 'epoch_2'} was trained with other settings than {config} " \
           "gives: loss.method none -> imlkd" in line, line
    # a checkpoint of another shape (its stored settings say so too: the same-size edit keeps
    # its manifest whole): the tensors that do not fit are named
    settings = run / "checkpoints" / "epoch_2" / "speaker_run.json"
    saved = settings.read_text()
    config.write_text(good.replace("hidden_size: 8", "hidden_size: 9"))
    settings.write_text(saved.replace('"student.hidden_size": 8', '"student.hidden_size": 9'))
    line = _refused(capsys, "--run", str(run), "--out", str(out))
    assert f"{run / 'checkpoints' / 'epoch_2'} does not fit the student {config} describes " \
           "(other shapes: embedding.weight (8, 16) (student: (8, 18)), encoder.lstm.bias_hh_l0 " \
           "(32,) (student: (36,)), encoder.lstm.bias_ih_l0 (32,) (student: (36,)) ...): a " \
           "checkpoint of another run?" in line, line
    config.write_text(good)
    settings.write_text(saved)
    # a damaged checkpoint (cut short): named, with the ones to export instead
    weights = run / "checkpoints" / "epoch_2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    line = _refused(capsys, "--run", str(run), "--out", str(out))
    assert "damaged checkpoint: " in line and "export an earlier one with --checkpoint NAME " \
           "(complete: epoch_1, epoch_2)" in line, line
    assert not out.exists() and not (run / "exports").exists()
    # a folder with files is refused; --overwrite replaces them
    out.mkdir()
    (out / "README.md").write_text("old card\n")
    line = _refused(capsys, "--run", str(run), "--checkpoint", "epoch_1", "--out", str(out))
    assert f"--out {str(out)!r} is not empty (README.md)" in line, line
    _export(capsys, "--run", str(run), "--checkpoint", "epoch_1", "--out", str(out),
            "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_a_run_stopped_before_its_first_checkpoint_has_nothing_to_export(tiny, tmp_path,
                                                                        capsys):
    from robustdistill.speaker.train import NonFiniteLossError

    teacher, crops = tiny
    cfg = speaker_kd_config(tmp_path, "run", 2, method="none")
    cfg.training.lr = 3e37
    with pytest.raises(NonFiniteLossError):
        train_system(cfg, teacher, crops)
    line = _refused(capsys, "--run", str(tmp_path / "run"), "--out", str(tmp_path / "out"))
    assert line.endswith(f"{tmp_path / 'run' / 'checkpoints'} holds no complete checkpoint: "
                         "nothing to export (a run stopped before its first checkpoint saved "
                         "no weights)"), line
    assert not (tmp_path / "out").exists()


def _run_files(run: Path) -> dict[str, bytes]:
    """Every file of the run folder but ``exports/``: relative path -> bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.relative_to(run).parts[0] != "exports"}


def test_an_out_among_the_runs_own_files_is_refused_and_never_emptied(tiny, tmp_path, capsys):
    """``--out RUN/checkpoints/epoch_N --overwrite`` emptied that checkpoint (its optimizer
    state and manifest gone: the run could no longer resume or export it); any ``--out``
    inside the run but under ``RUN/exports/`` is refused, every file left as it was."""
    teacher, crops = tiny
    run = tmp_path / "run"
    train_system(speaker_kd_config(tmp_path, "run", 2, method="none"), teacher, crops)
    before = _run_files(run)
    for out in (run / "checkpoints" / "epoch_2", run / "checkpoints" / "epoch_1",
                run / "checkpoints", run / "checkpoints" / "epoch_1" / "student",
                run / "mine", run / "exports"):
        for extra in ((), ("--overwrite",)):
            line = _refused(capsys, "--run", str(run), "--checkpoint", "epoch_1", "--out",
                            str(out), *extra)
            assert line == (f"{PROG}: error: --out {str(out)!r} is inside the run folder {run}, "
                            "whose files (checkpoints/, config.yaml, ...) are the trainer's: give "
                            "a folder under RUN/exports/ or outside the run"), (out, extra, line)
    assert _run_files(run) == before
    assert not (run / "mine").exists() and not (run / "exports").exists()
    # under RUN/exports/: written, and written again with --overwrite
    for extra in ((), ("--overwrite",)):
        done = _export(capsys, "--run", str(run), "--checkpoint", "epoch_1", "--out",
                       str(run / "exports" / "e1"), *extra)
        assert done["student"] == str(run / "exports" / "e1")
    _assert_equal_tensors(load_file(run / "exports" / "e1" / "model.safetensors"),
                          _embedder_tensors(run / "checkpoints" / "epoch_1"))
    assert _run_files(run) == before


def test_a_checkpoint_from_before_a_resume_from_another_folder_is_exported(
        tiny, tiny_wavlm_dir, tmp_path, capsys, monkeypatch):
    """``student.upstream`` relative, started in ``P`` as ``NAME`` and resumed from ``P/..``
    as ``P.name/NAME`` (the same folder: the resume accepts it; ``config.yaml`` then holds the
    new spelling): ``epoch_1``, saved by the first start, is exported from a third folder,
    its tensors and ``upstream/`` those of the run (the new spelling read from the folder of
    the first start named no folder and was looked up on the hub)."""
    teacher, crops = tiny
    home = tiny_wavlm_dir.parent
    repo = Path(__file__).resolve().parents[1]  # the data folders: one place from any folder
    data = {key: str((repo / getattr(speaker_kd_config(tmp_path, "up", 1).data, key)).resolve())
            for key in ("train_dir", "test_other_dir", "fsdd_dir")}
    monkeypatch.chdir(home)
    cfg = speaker_kd_config(tmp_path, "up", 1, method="none")
    for key, folder in data.items():
        setattr(cfg.data, key, folder)
    cfg.student.kind, cfg.student.upstream = "upstream", tiny_wavlm_dir.name
    train_system(cfg, teacher, crops)
    monkeypatch.chdir(home.parent)
    cfg = speaker_kd_config(tmp_path, "up", 2, resume=True, method="none")
    for key, folder in data.items():
        setattr(cfg.data, key, folder)
    cfg.student.kind = "upstream"
    cfg.student.upstream = f"{home.name}/{tiny_wavlm_dir.name}"
    train_system(cfg, teacher, crops)
    run = tmp_path / "up"
    assert f"upstream: {home.name}/{tiny_wavlm_dir.name}" in (run / "config.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    done = _export(capsys, "--run", str(run), "--checkpoint", "epoch_1", "--out",
                   str(tmp_path / "e1"))
    assert done["checkpoint"] == str(run / "checkpoints" / "epoch_1")
    exported = load_file(tmp_path / "e1" / "model.safetensors")  # the upstream's: upstream/
    saved = _embedder_tensors(run / "checkpoints" / "epoch_1")
    assert len(exported) > 3 and set(exported) == {k for k in saved
                                                   if not k.startswith("encoder.upstream.")}
    _assert_equal_tensors(exported, {k: saved[k] for k in exported})
    _export(capsys, "--run", str(run), "--out", str(tmp_path / "e2"))
    for name in ("model.safetensors", "config.json", "upstream/model.safetensors",
                 "upstream/config.json"):
        assert (tmp_path / "e2" / name).read_bytes() == (run / "student" / name).read_bytes()
    assert (tmp_path / "e1" / "upstream" / "config.json").read_bytes() == (
        run / "student" / "upstream" / "config.json").read_bytes()


def test_a_whisper_students_refusal_leaves_an_overwritten_out_as_it_was(tiny_whisper_dir,
                                                                        tmp_path, capsys):
    """A Whisper-upstream student cannot be exported (its encoder alone reloads random): the
    refusal comes before ``--overwrite`` empties ``--out`` (it deleted the folder's files and
    then wrote nothing). The run is one complete checkpoint of such a student, by hand."""
    import yaml
    from safetensors.torch import save_file

    from downstream.config import from_dict, to_dict
    from robustdistill.checkpoints import write_manifest
    from robustdistill.speaker.config import SpeakerKDConfig
    from robustdistill.speaker.train import build_student

    run = tmp_path / "run"
    cfg = from_dict(SpeakerKDConfig, {
        "student": {"kind": "upstream", "upstream": str(tiny_whisper_dir), "embedding_dim": 8},
        "training": {"output_dir": str(run)}})
    checkpoint = run / "checkpoints" / "epoch_1"
    checkpoint.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    model = build_student(cfg, 3, 8)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(checkpoint / "model.safetensors"))
    write_manifest(checkpoint, 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("the card of other weights\n")
    line = _refused(capsys, "--run", str(run), "--out", str(out), "--overwrite")
    assert line == (f"{PROG}: error: {checkpoint}: speaker students on a Whisper upstream are "
                    "not exported: its encoder saved alone would reload with random weights")
    assert [p.name for p in out.iterdir()] == ["README.md"]
    assert (out / "README.md").read_text() == "the card of other weights\n"


def _tensor_data_offset(weights: Path, key: str) -> int:
    """The byte offset of ``key``'s data in a ``.safetensors`` file."""
    import struct

    with open(weights, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    return 8 + size + header[key]["data_offsets"][0]


def test_weights_the_trainer_never_saves_are_refused_naming_the_tensor(tiny, tmp_path, capsys):
    """The manifest records sizes only: a NaN written over ``embedding.weight`` (same size)
    was exported silently, and a copy converted to bfloat16 (its manifest written again) was
    upcast silently. Both are one line naming the tensor; nothing is written."""
    import struct

    from safetensors.torch import save_file

    from robustdistill.checkpoints import write_manifest

    teacher, crops = tiny
    run = tmp_path / "run"
    train_system(speaker_kd_config(tmp_path, "run", 2, method="none"), teacher, crops)
    weights = run / "checkpoints" / "epoch_2" / "model.safetensors"
    good = weights.read_bytes()
    offset = _tensor_data_offset(weights, "embedding.weight") + 4 * 5
    with open(weights, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<f", float("nan")))
    assert len(weights.read_bytes()) == len(good)
    out = tmp_path / "out"
    line = _refused(capsys, "--run", str(run), "--out", str(out))
    assert line == (f"{PROG}: error: damaged checkpoint: {weights} holds NaN/Inf in "
                    "embedding.weight, which the trainer never saves (a NaN/Inf step stops the "
                    "run before its checkpoint); export an earlier one with --checkpoint NAME "
                    "(complete: epoch_1, epoch_2)"), line
    assert not out.exists()
    weights.write_bytes(good)
    state = load_file(weights)
    state["embedding.weight"] = state["embedding.weight"].to(torch.bfloat16)
    save_file(state, str(weights), metadata={"format": "pt"})
    write_manifest(weights.parent, 2)
    line = _refused(capsys, "--run", str(run), "--out", str(out))
    assert line == (f"{PROG}: error: damaged checkpoint: {weights} holds embedding.weight as "
                    "bfloat16, not float32 as the trainer saves it (converted?); export an "
                    "earlier one with --checkpoint NAME (complete: epoch_1, epoch_2)"), line
    assert not out.exists()
    # the earlier, untouched checkpoint still exports
    assert _export(capsys, "--run", str(run), "--checkpoint", "epoch_1", "--out",
                   str(out))["epochs_done"] == 1


def test_a_newest_checkpoint_without_its_manifest_is_named_when_skipped(tiny, tmp_path, capsys,
                                                                        caplog):
    """The default is the newest *complete* checkpoint: one whose ``checkpoint.json`` is lost
    was skipped silently (only the JSON's ``checkpoint`` showed it); the log names it and the
    one exported."""
    teacher, crops = tiny
    run = tmp_path / "run"
    train_system(speaker_kd_config(tmp_path, "run", 2, method="none"), teacher, crops)
    (run / "checkpoints" / "epoch_2" / "checkpoint.json").unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="robustdistill.speaker"):
        done = _export(capsys, "--run", str(run), "--out", str(tmp_path / "out"))
    assert done["checkpoint"] == str(run / "checkpoints" / "epoch_1")
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "epoch_2 is not complete (no checkpoint.json): exporting epoch_1, the newest complete "
        "checkpoint"]
    _assert_equal_tensors(load_file(tmp_path / "out" / "model.safetensors"),
                          _embedder_tensors(run / "checkpoints" / "epoch_1"))
    # an older incomplete one is no news: nothing is logged
    (run / "checkpoints" / "epoch_2").rename(run / "checkpoints" / "epoch_0")
    caplog.clear()
    with caplog.at_level("WARNING", logger="robustdistill.speaker"):
        _export(capsys, "--run", str(run), "--out", str(tmp_path / "out2"))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_missing_relative_upstream_names_the_folder_it_was_read_from(
        tiny, tiny_wavlm_dir, tmp_path, capsys, monkeypatch):
    """A relative ``student.upstream`` moved away was "We couldn't connect to
    'https://huggingface.co'..." alone: the line names the folder it was looked for in, the
    one config.yaml's start ran in."""
    import shutil

    teacher, crops = tiny
    home = tmp_path / "home"
    shutil.copytree(tiny_wavlm_dir, home / "m")
    monkeypatch.chdir(home)
    cfg = speaker_kd_config(tmp_path, "up", 1, method="none")
    cfg.student.kind, cfg.student.upstream = "upstream", "m"
    train_system(cfg, teacher, crops)
    (home / "m").rename(home / "moved")
    monkeypatch.chdir(tmp_path)
    line = _refused(capsys, "--run", str(tmp_path / "up"), "--out", str(tmp_path / "out"))
    assert line.startswith(f"{PROG}: error: student.upstream 'm': no folder {home / 'm'} (a "
                           f"relative student.upstream is read from {home}, the folder "
                           "config.yaml's start ran in), nor a model id that loads: "), line
    assert not (tmp_path / "out").exists()


def test_another_trainers_run_names_the_command_that_exports_it(tmp_path, capsys):
    """A ``distill`` run given to ``train-speaker export`` is named with ``robustdistill
    export --run RUN`` (as ``export`` names this command for a speaker run); a ``train-se``
    run is said to be one (no command exports its checkpoints); anything else keeps the
    question."""
    import shutil

    repo = Path(__file__).resolve().parents[1]
    for recipe, hint in (
            ("demo.yaml", "{run} is a distillation run: robustdistill export --run {run})"),
            ("se_supervised.yaml", "{run} is a train-se run: train-se writes its student to "
                                   "RUN/student when it finishes (resume it to finish); no "
                                   "command exports a train-se checkpoint)")):
        run = tmp_path / recipe.removesuffix(".yaml")
        run.mkdir()
        shutil.copy(repo / "configs" / recipe, run / "config.yaml")
        line = _refused(capsys, "--run", str(run), "--out", str(tmp_path / "out"))
        assert line.startswith(f"{PROG}: error: {run / 'config.yaml'}: unknown config key ")
        assert line.endswith(hint.format(run=run)), line
    (run / "config.yaml").write_text("student: {kind: lstm, nope: 1}\n")
    line = _refused(capsys, "--run", str(run), "--out", str(tmp_path / "out"))
    assert line.endswith(f"(is {run} a train-speaker run?)"), line
    assert not (tmp_path / "out").exists()


def test_an_upstream_students_folder_keeps_the_input_settings_it_was_trained_with(
        tiny_wavlm_dir, tmp_path):
    """``upstream/`` had no ``preprocessor_config.json``, so ``from_pretrained`` (the card's
    usage, ``evaluate``) read a student whose source preprocessor departs from the
    ``transformers`` convention (``facebook/wav2vec2-base``: ``do_normalize`` with a group-norm
    CNN; here also ``return_attention_mask``) without normalisation or mask: other embeddings.
    The folder now holds the settings the upstream was built with, and reloads to the same
    embeddings of a padded batch."""
    import shutil

    from robustdistill.speaker.models import SpeakerEmbedder, UpstreamEncoder

    source = tmp_path / "source"
    shutil.copytree(tiny_wavlm_dir, source)
    config = json.loads((source / "config.json").read_text())
    assert config["feat_extract_norm"] == "group"  # the convention: neither setting
    pre = json.loads((source / "preprocessor_config.json").read_text())
    pre.update(do_normalize=True, return_attention_mask=True)
    (source / "preprocessor_config.json").write_text(json.dumps(pre))
    torch.manual_seed(0)
    embedder = SpeakerEmbedder(UpstreamEncoder(str(source), frozen=True), 8).eval()
    assert embedder.encoder.upstream.normalize and embedder.encoder.upstream.use_attention_mask
    embedder.save_pretrained(tmp_path / "student")
    saved = json.loads((tmp_path / "student" / "upstream" / "preprocessor_config.json")
                       .read_text())
    assert (saved["do_normalize"], saved["return_attention_mask"]) == (True, True)
    loaded = SpeakerEmbedder.from_pretrained(tmp_path / "student")
    assert loaded.encoder.upstream.normalize and loaded.encoder.upstream.use_attention_mask
    waves = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(1)) + 0.05
    lengths = torch.tensor([8000, 5000])
    with torch.no_grad():
        assert torch.allclose(loaded(waves, lengths), embedder(waves, lengths), atol=1e-6)
