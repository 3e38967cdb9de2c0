"""Trainer behaviour that a second mutation audit found unpinned (session 13)."""

from __future__ import annotations

import pytest
import torch
from test_trainer import _config
from test_trainer_pinned import _no_dropout, _step_gradient

from robustdistill.trainer import _Run


def test_each_rank_scales_its_loss_by_the_number_of_processes(tmp_path, tiny_wavlm_dir,
                                                              monkeypatch):
    """DDP averages the ranks' gradients, so each rank's loss is its sums over every rank's
    units times the world size. Two ranks with this very batch (counts and sums reduce to
    twice this rank's; the DDP average of two equal gradients is that gradient) must give
    the one-process gradient and means: without the world-size factor it would be half."""
    def run_of(out):
        cfg = _config(tmp_path, tiny_wavlm_dir, out, max_steps=1, max_grad_norm=0.0)
        run = _Run(cfg)
        _no_dropout(run)
        return run

    one_values, one = _step_gradient(run_of("one"))
    twin = run_of("twin")
    monkeypatch.setattr(type(twin.accelerator), "num_processes", property(lambda self: 2))
    monkeypatch.setattr(twin.accelerator, "reduce", lambda tensor, reduction="sum": tensor * 2)
    two_values, two = _step_gradient(twin)
    assert two.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-9)
    assert two_values["grad_norm"] == pytest.approx(one_values["grad_norm"], rel=1e-5)
    assert two_values["loss"] == pytest.approx(one_values["loss"], rel=1e-9)
    assert two_values["audio_seconds"] == pytest.approx(2 * one_values["audio_seconds"])


def test_each_micro_batch_is_corrupted_from_its_own_seed_step_rank_and_index(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    """Corruption draws come from ``(seed, step, rank, micro-batch)`` (module docstring): the
    two micro-batches of a step get different draws (one generator for both would give every
    micro-batch the same noise choices and SNRs), a later step others again, and
    so does another rank."""
    import copy

    import numpy as np

    run = _Run(_config(tmp_path, tiny_wavlm_dir, "rng", max_steps=2,
                       gradient_accumulation_steps=2))
    real = run.corruptor.corrupt_batch
    seen = []

    def recording(clean, lengths, rng, step):
        seen.append((step, copy.deepcopy(rng).random(4).tolist()))
        return real(clean, lengths, rng, step)

    monkeypatch.setattr(run.corruptor, "corrupt_batch", recording)
    batches = run._batches()
    run.train_step(batches)
    run.train_step(batches)
    # the same step on rank 1 (the loader already built: only the rank in the seed changes)
    monkeypatch.setattr(type(run.accelerator), "process_index", property(lambda self: 1))
    run.train_step(batches)
    expected = [(step, np.random.default_rng([3, step, rank, i]).random(4).tolist())
                for step, rank in ((0, 0), (1, 0), (2, 1)) for i in (0, 1)]  # seed 3
    assert seen == expected


def _tiny_cnn_frames(samples: int) -> int:
    """Frames of the tiny WavLM's CNN (3 layers, kernel 8, stride 4), by hand."""
    for _ in range(3):
        samples = (samples - 8) // 4 + 1
    return samples


@pytest.mark.parametrize("split", ["train", "validation"])
def test_logged_means_divide_each_terms_sums_by_its_own_units_over_every_batch(
        tmp_path, tiny_wavlm_dir, monkeypatch, split):
    """Every logged term is its sums over the step's micro-batches (or every validation
    batch) divided by the real units of its own kind over those batches: ``frames`` for the
    layer-wise terms, STFT frames (``n // hop + 1`` per crop) for enhancement."""
    import robustdistill.trainer as trainer_module

    seen = []
    real_loss = trainer_module._Run._loss

    def recording(self, batch, rng, step, *args, **kwargs):
        terms = real_loss(self, batch, rng, step, *args, **kwargs)
        seen.append((batch["lengths"].tolist(),
                     {f"{n}/{p}": (float(t.total.detach()), t.unit) for n, parts in terms.items()
                      for p, t in parts.items()}))
        return terms

    monkeypatch.setattr(trainer_module._Run, "_loss", recording)
    cfg = _config(tmp_path, tiny_wavlm_dir, "units", max_steps=1, gradient_accumulation_steps=3)
    cfg.data.validation_fraction = 0.4
    cfg.data.synthetic_seconds = [0.55, 1.0]  # unequal crops: units are not proportional
    cfg.data.synthetic_dir = str(tmp_path / "unequal")
    run = _Run(cfg)
    values = run.train_step(run._batches()) if split == "train" else run.validate()
    assert len(seen) == 3  # three micro-batches; validation: 5 items in batches of 2
    hop = run.objectives["enhancement"].stft["hop_length"]
    lengths = [n for batch_lengths, _ in seen for n in batch_lengths]
    units = {"frames": sum(_tiny_cnn_frames(n) for n in lengths),
             "stft_frames": sum(n // hop + 1 for n in lengths)}
    names = seen[0][1].keys()
    assert {unit for _, unit in seen[0][1].values()} == set(units)
    for name in names:
        unit = seen[0][1][name][1]
        total = sum(terms[name][0] for _, terms in seen)
        assert values[name] == pytest.approx(total / units[unit], rel=1e-6), name


def test_the_gradient_of_a_term_is_that_of_its_sum_over_its_own_units(tmp_path,
                                                                       tiny_wavlm_dir):
    """The enhancement head learns from its term alone: its gradient in a step is that of
    ``lambda_enh * sum / STFT frames`` (``n // hop + 1`` per crop), not of the sum over the
    step's transformer frames, whatever the logged means say."""
    from robustdistill.random_streams import keyed_rng

    def run_of(out):
        run = _Run(_config(tmp_path, tiny_wavlm_dir, out, max_steps=1, max_grad_norm=0.0))
        _no_dropout(run)
        return run

    _, grads = _step_gradient(run_of("step"))
    again = run_of("by_hand")  # same seed: same weights and the same first batch
    batch = next(again._batches())
    terms = again._loss(batch, keyed_rng(3, 0, 0, 0), 0)  # seed 3, step 0, rank 0, micro-batch 0
    term = terms["enhancement"]["l1"]
    hop = again.objectives["enhancement"].stft["hop_length"]
    stft_frames = sum(int(n) // hop + 1 for n in batch["lengths"])
    (term.weight * term.total / stft_frames).backward()
    head = [k for k, _ in again.model.named_parameters() if k.startswith("objectives.enhancement")]
    assert head
    for key, param in again.model.named_parameters():
        if key in head:
            torch.testing.assert_close(grads[key], param.grad, rtol=1e-5, atol=1e-10)
