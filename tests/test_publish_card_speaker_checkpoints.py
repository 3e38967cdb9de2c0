"""``card --run RUN --kind speaker`` of a ``train-speaker`` run that exported no student
(``RUN/student``): stopped by a SIGTERM, by a NaN/Inf step, or not finished. The weights must
be the student of one of the run's complete checkpoints (``train-speaker export --run RUN
--checkpoint NAME`` writes it), and the card's Result line says which one and how far into
training it is. Until 2026-12-08 a SIGTERM-stopped run's card was "not checked" and said "last
logged epoch 12 of 200" for an export of ``epoch_11`` too, and a NaN-stopped run's card took
only the stop's checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import nan_instance_loss_at, sigterm_speaker_run, speaker_kd_config
from safetensors.torch import load_file, save_file

from robustdistill.publish.card import build_card
from robustdistill.publish.card_results import CardError
from robustdistill.publish.provenance import summarise_run
from robustdistill.publish.run_weights import check_run_weights
from robustdistill.speaker.train import train_system

PROG = "robustdistill train-speaker"


def _export(capsys, run: Path, out: Path, *checkpoint: str) -> Path:
    """``train-speaker export --run RUN [--checkpoint NAME] --out OUT``: exit 0; ``out``."""
    from robustdistill.speaker.cli import main

    assert main(["export", "--run", str(run), *(("--checkpoint", *checkpoint) if checkpoint
                                               else ()), "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def _result_line(text: str) -> str:
    training = text[text.index("## Training"):text.index("## Limitations")]
    return next(line for line in training.splitlines() if line.startswith("- Result: "))


def _evaluation(text: str) -> str:
    start = text.index("## Evaluation\n")
    return text[start:text.index("\n## ", start + 5)]


def _losses(run: Path) -> dict[int, float]:
    """``metrics.jsonl``'s mean training loss per epoch."""
    return {r["epoch"]: r["loss"] for r in map(json.loads,
                                               (run / "metrics.jsonl").read_text().splitlines())}


def _card(model: Path, run: Path):
    return build_card(model, [], run, license="mit", kind="speaker", speed=False)


def _sigterm_run(tiny, tmp_path: Path, monkeypatch) -> Path:
    """A 4-epoch run of 3 batches an epoch stopped by a SIGTERM in batch 2 of epoch 3: it saved
    ``epoch_1``, ``epoch_2`` and ``epoch_2_batch_2``, logged epochs 1 and 2, and exported no
    student and no ``result.json``."""
    run = sigterm_speaker_run(tiny, tmp_path, monkeypatch, 4, 8)  # epoch 3, batch 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_1", "epoch_2", "epoch_2_batch_2"]
    assert not (run / "student").exists() and not (run / "result.json").exists()
    assert sorted(_losses(run)) == [1, 2]
    return run


def test_a_sigterm_runs_card_names_the_checkpoint_its_weights_are(tiny, tmp_path, monkeypatch,
                                                                   capsys):
    """The default export (the newest, mid-epoch ``epoch_2_batch_2``) and an export of the
    older ``epoch_1``: each card says which checkpoint and how far into training it is, the
    loss of its own last whole epoch, and no verification (the run evaluated nothing)."""
    run = _sigterm_run(tiny, tmp_path, monkeypatch)
    loss = _losses(run)
    newest = _export(capsys, run, tmp_path / "newest")
    older = _export(capsys, run, tmp_path / "older", "epoch_1")
    summary = summarise_run(run)
    assert check_run_weights(newest, summary) == (
        f"the card's weights are the student of {run / 'checkpoints' / 'epoch_2_batch_2'}, the "
        "newest checkpoint of a run that exported no final student")
    assert check_run_weights(older, summary) == (
        f"the card's weights are the student of {run / 'checkpoints' / 'epoch_1'}, a "
        "checkpoint of a run that exported no final student")
    card = _card(newest, run)
    assert _result_line(card.text) == (
        "- Result: the weights of checkpoint `epoch_2_batch_2`: 2 epochs and 2 batches of epoch "
        f"3 (of 4 configured); last logged epoch 2, mean training loss {loss[2]:.4f} in that epoch")
    card = _card(older, run)
    assert _result_line(card.text) == (
        f"- Result: the weights of checkpoint `epoch_1`: 1 epoch (of 4 configured); mean "
        f"training loss {loss[1]:.4f} in epoch 1, their last whole epoch; the run went on to log 2 epochs: "
        "the training after this checkpoint is not in these weights")
    assert f"{loss[2]:.4f}" not in card.text and "last logged epoch 2" not in card.text
    assert _evaluation(card.text) == (
        "## Evaluation\n\nSpeaker verification: not run on these weights, the student of the "
        f"checkpoint `epoch_1` of the run `{run}`: `robustdistill train-speaker` evaluates a "
        "run's student once training finishes (`result.json`), and this run exported none.\n")
    assert card.data.eval_results is None


def test_weights_of_no_checkpoint_of_a_sigterm_run_are_refused_in_one_line(
        tiny, tmp_path, monkeypatch, capsys):
    """One changed value, or a tensor left out, and the card is refused in one line (exit 2)
    listing the run's checkpoints and naming the command that exports one."""
    from robustdistill.cli import main as robustdistill

    run = _sigterm_run(tiny, tmp_path, monkeypatch)
    model = _export(capsys, run, tmp_path / "model", "epoch_1")
    tensors = load_file(model / "model.safetensors")
    tensors["embedding.bias"] = tensors["embedding.bias"] + 1e-3
    save_file(tensors, str(model / "model.safetensors"))
    card = ["card", "--model", str(model), "--run", str(run), "--license", "mit", "--kind",
            "speaker", "--no-speed"]
    with pytest.raises(SystemExit) as stop:
        robustdistill(card)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1] == (
        f"robustdistill card: error: the weights in {model} are not the student of any "
        f"complete checkpoint of {run} (epoch_1, epoch_2, epoch_2_batch_2), a run that was "
        "stopped or has not finished and exported no final student (the nearest, epoch_1: 1 "
        "tensor differs, e.g. 'embedding.bias'): the card would describe another "
        "training; pass the run that trained them as --run, or card the student of one of "
        "these checkpoints, written by robustdistill train-speaker export --run "
        f"{run} --checkpoint NAME --out DIR")
    assert not (model / "README.md").exists()
    del tensors["embedding.bias"]  # the rest of epoch_1's, exactly: still not its student
    tensors["embedding.weight"] = load_file(
        run / "checkpoints" / "epoch_1" / "model.safetensors")["embedding.weight"]
    save_file(tensors, str(model / "model.safetensors"))
    # missing from every checkpoint's set alike: the newest is named
    with pytest.raises(CardError, match=r"\(the nearest, epoch_2_batch_2: 1 tensor differs, "
                                        r"e.g. 'embedding.bias'\)"):
        _card(model, run)


def test_a_checkpoint_card_never_shows_the_finished_runs_verification(tiny, tmp_path, capsys):
    """A finished run whose ``student/`` was removed: ``result.json``'s verification is of the
    final student, so a card of ``epoch_1``'s export shows none of it (before, it was "not
    checked" and gave those EER values as this model's)."""
    teacher, crops = tiny
    run = tmp_path / "run"
    train_system(speaker_kd_config(tmp_path, "run", 2, method="none"), teacher, crops)
    stored = json.loads((run / "result.json").read_text())
    stored["eval"] = {"test_other": {"eer": 0.123456, "min_dcf": 0.5678, "target_trials": 10,
                                     "nontarget_trials": 50}}
    (run / "result.json").write_text(json.dumps(stored))
    final = _card(run / "student", run)  # the finished run's own student: unchanged
    assert "| `test_other` | 12.35 % | 0.568 | 10 | 50 |" in final.text
    assert len(final.data.eval_results) == 2
    model = _export(capsys, run, tmp_path / "model", "epoch_1")
    (run / "student").rename(tmp_path / "student_moved")
    card = _card(model, run)
    assert "12.35" not in card.text and card.data.eval_results is None
    assert _result_line(card.text).startswith(
        "- Result: the weights of checkpoint `epoch_1`: 1 epoch (of 2 configured); mean training "
        "loss ")
    assert ("verification after training on `../shared/data/librispeech-mini/test-other` "
            "(LibriSpeech test-other), speakers unseen in training (of the run's final "
            "student, not of these weights)") in card.text
    # the opening and the intended use point at Evaluation's verification only when it
    # has some (until 2026-12-08 they did for a checkpoint's card too, which has none)
    assert "verification results on speakers unseen in training are under Evaluation;" in \
        final.text and "check its verification metrics (EER, minDCF, under Evaluation) on " \
        "audio like yours first." in final.text
    assert "under Evaluation" not in card.text
    assert "(no verification of these weights is recorded: see Evaluation; downstream " \
           "results, when given, under Downstream results)" in card.text
    assert "measure its verification (EER, minDCF) on audio like yours first." in card.text


def test_a_nan_stopped_runs_older_checkpoint_is_named_and_the_stops_kept(tiny, tmp_path,
                                                                         monkeypatch, capsys):
    """A NaN loss in epoch 3 (``stopped.json`` names ``epoch_2``): the export of ``epoch_2``
    keeps the stop's wording; that of ``epoch_1`` is named as such, with the stop's checkpoint
    as the newest then (before, it was refused: only the stop's checkpoint was compared)."""
    from robustdistill.speaker import train as speaker_train

    teacher, crops = tiny
    nan_instance_loss_at(monkeypatch, 5)  # the fifth call: epoch 3, batch 1 of 2
    run = tmp_path / "run"
    with pytest.raises(speaker_train.NonFiniteLossError):
        train_system(speaker_kd_config(tmp_path, "run", 4, method="embedding_kd"), teacher,
                     crops)
    monkeypatch.undo()
    loss = _losses(run)
    stop = ("- Result: the run stopped at epoch 3 of its 4 configured epochs (batch 1 of 2: the "
            "loss was NaN/Inf (instance=nan, loss=nan)); ")
    newest = _export(capsys, run, tmp_path / "newest")
    assert _result_line(_card(newest, run).text) == (
        f"{stop}the weights are those of its newest checkpoint, `epoch_2` (epoch 2), nothing "
        f"after it was saved; last logged epoch 2 of 4, mean training loss {loss[2]:.4f} in "
        "that epoch")
    older = _export(capsys, run, tmp_path / "older", "epoch_1")
    assert _result_line(_card(older, run).text) == (
        f"{stop}its newest checkpoint then was `epoch_2` (epoch 2); the weights of checkpoint "
        f"`epoch_1`: 1 epoch (of 4 configured); mean training loss {loss[1]:.4f} in epoch 1, "
        "their last whole epoch; the run went on to log 2 epochs: the training after this checkpoint is "
        "not in these weights")
    assert check_run_weights(older, summarise_run(run)) == (
        f"the card's weights are the student of {run / 'checkpoints' / 'epoch_1'}, a "
        "checkpoint of a run that exported no final student")


def test_an_upstream_students_upstream_is_compared_too(tiny, tiny_wavlm_dir, tmp_path, capsys):
    """An upstream student's export keeps the upstream in ``upstream/`` (its model's own
    names): the card compares it with the checkpoint's ``encoder.upstream.model.*`` too, so a
    folder whose ``upstream/`` is another model (here the untrained one the run started from)
    or is missing is refused, while the export itself is accepted. Until 2026-12-08 only
    ``model.safetensors`` was compared and both were carded as ``epoch_1``'s student."""
    teacher, crops = tiny
    cfg = speaker_kd_config(tmp_path, "up", 2, method="none")
    cfg.student.kind, cfg.student.upstream = "upstream", str(tiny_wavlm_dir)
    train_system(cfg, teacher, crops, stop_after_epochs=1)  # an unfinished run: epoch_1 only
    run = tmp_path / "up"
    assert not (run / "student").exists()
    export = _export(capsys, run, tmp_path / "e1")
    summary = summarise_run(run)
    assert check_run_weights(export, summary) == (
        f"the card's weights are the student of {run / 'checkpoints' / 'epoch_1'}, the newest "
        "checkpoint of a run that exported no final student")
    trained = load_file(export / "upstream" / "model.safetensors")
    untrained = load_file(tiny_wavlm_dir / "model.safetensors")
    assert any(not trained[k].equal(untrained[k]) for k in trained)  # fine-tuned in epoch 1
    swapped = tmp_path / "swapped"
    shutil.copytree(export, swapped)
    save_file({k: untrained[k] for k in trained}, swapped / "upstream" / "model.safetensors")
    with pytest.raises(CardError) as err:
        check_run_weights(swapped, summary)
    changed = sorted(k for k in trained if not trained[k].equal(untrained[k]))
    assert f"(the nearest, epoch_1: {len(changed)} tensors differ, e.g. " \
           f"'encoder.upstream.model.{changed[0]}')" in str(err.value)
    shutil.rmtree(swapped / "upstream")
    with pytest.raises(CardError, match=rf"epoch_1: {len(trained)} tensors differ"):
        check_run_weights(swapped, summary)


def test_a_finished_run_resumed_with_more_epochs_is_carded_by_its_checkpoints(
        tiny, tmp_path, monkeypatch, capsys):
    """A run finished at 1 epoch (``student/``, ``result.json``), resumed to 4 epochs and
    stopped by a SIGTERM in epoch 4: its ``student/`` (whose ``epoch_1`` is rotated away) is
    refused in one line, since ``config.yaml`` and ``metrics.jsonl`` now describe 3 epochs of
    4; an export of the newest checkpoint is carded as that checkpoint. Until 2026-12-08 the
    stale student was carded as "last logged epoch 3 of 4" with epoch 3's loss, and the
    checkpoint's export was refused as "not the final student"."""
    from robustdistill.interrupts import handled
    from robustdistill.speaker.models import SpeakerModel

    teacher, crops = tiny
    cfg = speaker_kd_config(tmp_path, "run", 1, method="none")
    cfg.training.batch_size = 2  # 3 batches an epoch
    train_system(cfg, teacher, crops)
    run = tmp_path / "run"
    assert (run / "student").is_dir() and len(json.loads((run / "result.json").read_text())[
        "epochs"]) == 1
    cfg.training.epochs, cfg.training.resume = 4, True
    forward, calls = SpeakerModel.forward, []

    def wrapped(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 7:  # epoch 4, batch 1
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(SpeakerModel, "forward", wrapped)
    with pytest.raises(SystemExit), handled(PROG):
        train_system(cfg, teacher, crops)
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_2", "epoch_3", "epoch_3_batch_1"]
    loss = _losses(run)
    assert sorted(loss) == [1, 2, 3]
    summary = summarise_run(run)
    with pytest.raises(CardError) as err:
        check_run_weights(run / "student", summary)
    assert str(err.value) == (
        f"the weights in {run / 'student'} are {run / 'student'}, the student {run} exported "
        "when it finished 1 epoch; the run was resumed since (its newest checkpoint is "
        "epoch_3_batch_1), and its config.yaml and metrics.jsonl describe that longer "
        "training: the card would mix the two; card the student once the resumed run "
        "finishes, or card the student of a checkpoint, written by robustdistill train-speaker "
        f"export --run {run} --checkpoint NAME --out DIR")
    newest = _export(capsys, run, tmp_path / "newest")
    assert check_run_weights(newest, summary) == (
        f"the card's weights are the student of {run / 'checkpoints' / 'epoch_3_batch_1'}, the "
        "newest checkpoint of a run resumed after it exported RUN/student (1 epoch)")
    card = _card(newest, run)
    assert _result_line(card.text) == (
        "- Result: the weights of checkpoint `epoch_3_batch_1`: 3 epochs and 1 batch of epoch 4 "
        f"(of 4 configured); last logged epoch 3, mean training loss {loss[3]:.4f} in that epoch")
    assert "this run exported none since it was resumed (its `student/` and `result.json` are " \
           "those of an earlier finish)." in _evaluation(card.text)
    assert card.data.eval_results is None
