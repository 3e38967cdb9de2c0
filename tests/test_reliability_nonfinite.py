"""Non-finite loss: a NaN/Inf step is skipped and counted; too many in a row stop the run with
a message and a usable checkpoint (issue 14)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from test_reliability_checkpoints import _config

import robustdistill.trainer as trainer_module
from robustdistill.checkpoints import latest_checkpoint
from robustdistill.objectives import LossTerm
from robustdistill.trainer import NonFiniteTrainingError, train


def _poison_losses_from(monkeypatch, first_bad_step: int, last_bad_step: int = 10**9,
                        value: float = math.nan) -> None:
    """Make every loss term non-finite for steps in [first_bad_step, last_bad_step]."""
    real_loss = trainer_module._Run._loss

    def poisoned(self, batch, rng, step, *args, **kwargs):
        terms = real_loss(self, batch, rng, step, *args, **kwargs)
        if step is None or not first_bad_step <= step <= last_bad_step:
            return terms
        return {name: {part: LossTerm(term.total * value, term.unit, term.weight)
                       for part, term in parts.items()} for name, parts in terms.items()}

    monkeypatch.setattr(trainer_module._Run, "_loss", poisoned)


def test_a_nonfinite_loss_step_is_skipped_and_counted_and_training_goes_on(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    cfg = _config(tmp_path, tiny_wavlm_dir, "run", max_steps=4, max_nonfinite_in_a_row=3)
    _poison_losses_from(monkeypatch, 1, 2, value=math.inf)  # steps 1 and 2 (0-based)
    run = trainer_module._Run(cfg)
    batches = run._batches()
    run.train_step(batches)
    after_first = {k: v.detach().clone() for k, v in run.model.named_parameters()}
    for _ in range(2):
        values = run.train_step(batches)
        assert not math.isfinite(values["loss"])
    for key, value in run.model.named_parameters():  # neither bad step changed a weight
        assert torch.equal(value, after_first[key]), key
    assert (run.progress.skipped_updates, run.progress.nonfinite_losses,
            run.progress.nonfinite_in_a_row) == (2, 2, 2)
    values = run.train_step(batches)  # a finite step resets the run of bad ones
    assert math.isfinite(values["loss"]) and run.progress.nonfinite_in_a_row == 0
    assert any(not torch.equal(v, after_first[k]) for k, v in run.model.named_parameters())


@pytest.mark.slow
def test_too_many_nonfinite_steps_in_a_row_stop_with_a_usable_checkpoint(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    cfg = _config(tmp_path, tiny_wavlm_dir, "run", max_steps=20, save_every=100,
                  max_nonfinite_in_a_row=3)
    _poison_losses_from(monkeypatch, 2)  # from the third step on, every loss is NaN
    with pytest.raises(NonFiniteTrainingError, match=r"3 optimizer steps in a row.*NaN/Inf") as info:
        train(cfg)
    run_dir = tmp_path / "run"
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    assert checkpoint is not None and str(checkpoint) in str(info.value)
    stopped = json.loads((run_dir / "stopped.json").read_text())
    assert (stopped["step"], stopped["skipped_updates"], stopped["nonfinite_losses"]) == (5, 3, 3)
    weights = load_file(str(checkpoint / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    # The checkpoint is usable: resumed without the fault, the run finishes.
    monkeypatch.undo()
    resumed = _config(tmp_path, tiny_wavlm_dir, "run", max_steps=7, save_every=100,
                      resume_from="latest")
    train(resumed)
    final = json.loads((run_dir / "final_state.json").read_text())
    assert final["step"] == 7 and final["skipped_updates"] == 3 and final["nonfinite_losses"] == 3
    assert final["nonfinite_in_a_row"] == 0  # the finite steps after the resume reset it


def test_fp16_without_a_gradient_scaler_still_skips_a_nonfinite_step(
        tmp_path, tiny_wavlm_dir, monkeypatch, fresh_accelerator_state, caplog):
    """fp16 on a CPU: accelerate runs float32 with no GradScaler, so nothing else would keep a
    NaN gradient out of the weights (it did: the step was left to a scaler that is not there)."""
    cfg = _config(tmp_path, tiny_wavlm_dir, "run", max_steps=3, mixed_precision="fp16")
    _poison_losses_from(monkeypatch, 1, 1, value=math.inf)
    run = trainer_module._Run(cfg)
    assert run.accelerator.scaler is None  # the premise: a CPU run has no scaler
    assert "fp16 runs in float32 on cpu" in caplog.text
    batches = run._batches()
    run.train_step(batches)
    before = {k: v.detach().clone() for k, v in run.model.named_parameters()}
    run.train_step(batches)
    for key, value in run.model.named_parameters():
        assert torch.equal(value, before[key]), key
    assert (run.progress.skipped_updates, run.progress.nonfinite_losses) == (1, 1)
