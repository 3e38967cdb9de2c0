"""Trainer behaviour that mutation testing found unpinned: clipping on the accumulated
gradient only, the learning-rate schedule per optimizer step (warm-up, accumulation, skipped
steps), every trajectory field compared on resume, non-finite losses with finite gradients,
validation (fixed corruption, max_eval_batches, at the end, best = min), the logged loss's
term weights, checkpoint numbering after resuming from an older checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_trainer import _config

import robustdistill.trainer as trainer_module
from robustdistill.config import ConfigError
from robustdistill.objectives import LossTerm
from robustdistill.trainer import _Run, train


def _no_dropout(run) -> None:
    for module in run.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0


def _clipped_gradient(tmp_path, teacher_dir, out, max_grad_norm):
    """One step of 2 accumulated micro-batches; the gradients the optimizer is given."""
    cfg = _config(tmp_path, teacher_dir, out, max_steps=1, gradient_accumulation_steps=2,
                  max_grad_norm=max_grad_norm)
    run = _Run(cfg)
    _no_dropout(run)
    return _step_gradient(run)


def _step_gradient(run) -> tuple[dict, dict[str, torch.Tensor]]:
    """One step's values and the gradients the optimizer is given (no step taken)."""
    grads = {}

    def record(*args, **kwargs):
        grads.update({k: v.grad.detach().clone() for k, v in run.model.named_parameters()
                      if v.grad is not None})

    run.optimizer.optimizer.step = record
    values = run.train_step(run._batches())
    assert grads
    return values, grads


def test_clipping_acts_once_on_the_accumulated_gradient(tmp_path, tiny_wavlm_dir):
    """Clipped update = the unclipped accumulated gradient scaled to max_grad_norm (the
    direction of the step's whole gradient); clipping a micro-batch's gradient alone would
    change the direction."""
    free, g = _clipped_gradient(tmp_path, tiny_wavlm_dir, "free", 0.0)
    norm = free["grad_norm"]
    assert math.isfinite(norm) and norm > 0
    total = torch.sqrt(sum((u.double() ** 2).sum() for u in g.values()))
    assert float(total) == pytest.approx(norm, rel=1e-5)
    limit = norm / 20
    clipped, c = _clipped_gradient(tmp_path, tiny_wavlm_dir, "clipped", limit)
    assert clipped["grad_norm"] == pytest.approx(norm, rel=1e-5)  # the pre-clip norm
    assert c.keys() == g.keys()
    for key in g:
        torch.testing.assert_close(c[key], g[key] * (limit / norm), rtol=1e-4, atol=1e-12)


def _lr_per_step(run, steps):
    batches = run._batches()
    seen = []
    for _ in range(steps):
        seen.append(run.optimizer.param_groups[0]["lr"])
        run.train_step(batches)
    return seen


def test_linear_warm_up_and_decay_follow_optimizer_steps_not_micro_batches(tmp_path,
                                                                           tiny_wavlm_dir):
    """warmup_ratio 0.5 of 4 steps = 2 warm-up steps: lr 0, 1/2, 1, 1/2 of the peak at
    optimizer steps 0-3, whatever the number of micro-batches per step."""
    for accumulation in (1, 2):
        cfg = _config(tmp_path, tiny_wavlm_dir, f"lr{accumulation}", max_steps=4,
                      warmup_ratio=0.5, gradient_accumulation_steps=accumulation)
        run = _Run(cfg)
        assert _lr_per_step(run, 4) == pytest.approx([0.0, 5e-4, 1e-3, 5e-4], abs=1e-12)
        assert run.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_a_skipped_non_finite_step_still_advances_the_schedule(tmp_path, tiny_wavlm_dir,
                                                               monkeypatch):
    """docs/reliability.md: a skipped step's scheduler still steps, so the learning rate stays
    on the step count."""
    real_loss = trainer_module._Run._loss

    def poisoned(self, batch, rng, step, *args, **kwargs):
        terms = real_loss(self, batch, rng, step, *args, **kwargs)
        if step != 1:
            return terms
        return {n: {p: LossTerm(t.total * math.nan, t.unit, t.weight) for p, t in parts.items()}
                for n, parts in terms.items()}

    monkeypatch.setattr(trainer_module._Run, "_loss", poisoned)
    cfg = _config(tmp_path, tiny_wavlm_dir, "skip", max_steps=4, warmup_ratio=0.5)
    run = _Run(cfg)
    assert _lr_per_step(run, 3) == pytest.approx([0.0, 5e-4, 1e-3], abs=1e-12)
    assert run.progress.skipped_updates == 1
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4, abs=1e-12)  # step 3


def test_a_non_finite_loss_with_finite_gradients_is_still_skipped(tmp_path, tiny_wavlm_dir,
                                                                  monkeypatch):
    """An Inf loss term that carries no gradient (a constant added to it) leaves every
    gradient finite: the step is skipped for its loss alone."""
    real_loss = trainer_module._Run._loss

    def inf_constant(self, batch, rng, step, *args, **kwargs):
        terms = real_loss(self, batch, rng, step, *args, **kwargs)
        if step != 0:
            return terms
        name = sorted(terms)[0]
        part = sorted(terms[name])[0]
        term = terms[name][part]
        terms[name][part] = LossTerm(term.total + math.inf, term.unit, term.weight)
        return terms

    monkeypatch.setattr(trainer_module._Run, "_loss", inf_constant)
    run = _Run(_config(tmp_path, tiny_wavlm_dir, "inf", max_steps=2))
    before = {k: v.detach().clone() for k, v in run.model.named_parameters()}
    values = run.train_step(run._batches())
    assert not math.isfinite(values["loss"]) and math.isfinite(values["grad_norm"])
    assert (run.progress.skipped_updates, run.progress.nonfinite_losses) == (1, 1)
    for key, value in run.model.named_parameters():
        assert torch.equal(value, before[key]), key


@pytest.fixture
def checkpoint(tmp_path, tiny_wavlm_dir):
    train(_config(tmp_path, tiny_wavlm_dir, "first", max_steps=1, save_every=1,
                  export_student="false", eval_at_start="false"))
    return tmp_path / "first" / "checkpoints" / "checkpoint_0"


@pytest.mark.parametrize(("change", "message"), [
    ({"data.max_length_s": 0.9}, r"data\.max_length_s 1\.0 -> 0\.9"),
    ({"data.min_length_s": 0.55}, r"data\.min_length_s 0\.5 -> 0\.55"),
    ({"training.gradient_accumulation_steps": 2},
     r"training\.gradient_accumulation_steps 1 -> 2"),
    ({"data.validation_fraction": 0.4}, r"training items \d+ -> \d+"),
])
def test_resume_refuses_every_change_of_the_trajectory(tmp_path, tiny_wavlm_dir, checkpoint,
                                                       change, message):
    cfg = _config(tmp_path, tiny_wavlm_dir, "other", max_steps=4)
    for key, value in change.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    with pytest.raises(ConfigError, match=message):
        _Run(cfg).resume(str(checkpoint))


def test_resume_refuses_a_checkpoint_of_another_number_of_processes(tmp_path, tiny_wavlm_dir,
                                                                    checkpoint):
    state = checkpoint / "training_state.json"
    text = state.read_text()
    assert '"num_processes": 1' in text
    state.write_text(text.replace('"num_processes": 1', '"num_processes": 2'))  # same size
    run = _Run(_config(tmp_path, tiny_wavlm_dir, "again", max_steps=4))
    with pytest.raises(ConfigError, match=r"written by 2 process\(es\); this run has 1"):
        run.resume(str(checkpoint))


def test_resuming_an_older_checkpoint_numbers_new_ones_after_the_newest(tmp_path,
                                                                        tiny_wavlm_dir):
    cfg = _config(tmp_path, tiny_wavlm_dir, "run", max_steps=3, save_every=1,
                  keep_checkpoints=5, export_student="false", eval_at_start="false")
    train(cfg)
    folder = tmp_path / "run" / "checkpoints"
    run = _Run(cfg)
    assert run.resume(str(folder / "checkpoint_0")) and run.progress.step == 1
    assert run.save_checkpoint().name == "checkpoint_3"  # not checkpoint_1, which exists


def test_validation_corruption_does_not_depend_on_the_step(tmp_path, tiny_wavlm_dir):
    """The same weights validate to the same values at any step (fixed corruption)."""
    run = _Run(_config(tmp_path, tiny_wavlm_dir, "val", max_steps=10))
    first = run.validate()
    run.progress.step = 7
    assert run.validate() == first


def test_max_eval_batches_caps_the_validation_batches(tmp_path, tiny_wavlm_dir, monkeypatch):
    calls = []
    real_loss = trainer_module._Run._loss

    def counting(self, batch, rng, step, *args, **kwargs):
        calls.append(step)
        return real_loss(self, batch, rng, step, *args, **kwargs)

    monkeypatch.setattr(trainer_module._Run, "_loss", counting)
    cfg = _config(tmp_path, tiny_wavlm_dir, "cap", max_steps=2)
    cfg.data.validation_fraction = 0.4
    run = _Run(cfg)
    assert len(run.valid_loader) >= 2
    run.validate()
    assert len(calls) == len(run.valid_loader)
    calls.clear()
    run.cfg.training.max_eval_batches = 1
    run.validate()
    assert len(calls) == 1


def test_validation_runs_at_the_end_and_best_is_the_minimum(tmp_path, tiny_wavlm_dir):
    cfg = _config(tmp_path, tiny_wavlm_dir, "end", max_steps=3, eval_every=2,
                  eval_at_start="false", export_student="false")
    train(cfg)
    records = [json.loads(x) for x in (tmp_path / "end" / "metrics.jsonl").read_text().splitlines()]
    valid = {r["step"]: r["loss"] for r in records if r["split"] == "validation"}
    assert sorted(valid) == [2, 3]  # every eval_every steps and at max_steps
    final = json.loads((tmp_path / "end" / "final_state.json").read_text())
    assert final["best_validation_loss"] == min(valid.values())


def test_logged_loss_weighs_each_term_mean_by_its_weight(tmp_path, tiny_wavlm_dir,
                                                         monkeypatch):
    weights = {}
    real_loss = trainer_module._Run._loss

    def recording(self, batch, rng, step, *args, **kwargs):
        terms = real_loss(self, batch, rng, step, *args, **kwargs)
        weights.update({f"{n}/{p}": t.weight for n, parts in terms.items()
                        for p, t in parts.items()})
        return terms

    monkeypatch.setattr(trainer_module._Run, "_loss", recording)
    cfg = _config(tmp_path, tiny_wavlm_dir, "weights", max_steps=1)
    cfg.objectives["enhancement"]["lambda_enh"] = 3.0
    run = _Run(cfg)
    values = run.train_step(run._batches())
    assert weights["enhancement/l1"] == 3.0
    expected = sum(w * values[k] for k, w in weights.items())
    assert values["loss"] == pytest.approx(expected, rel=1e-12)
    valid = run.validate()
    assert valid["loss"] == pytest.approx(sum(w * valid[k] for k, w in weights.items()),
                                          rel=1e-12)
