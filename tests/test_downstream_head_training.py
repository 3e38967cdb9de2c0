"""Mutation-testing follow-ups (round 2) for downstream/training.py's training loop: which dev
evaluation's state is kept, train/eval modes, seeds of the batch order, gradient clipping,
the optimiser's parameter groups, the saved head's class check and run_seeds."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from downstream.base import EncodedExample, Example, Task, TaskConfig, TrainingConfig
from downstream.data import DataConfig, SourceConfig
from downstream.featurizer import Featurizer
from downstream.runner import RunOptions
from downstream.training import _optimizer, train_head


@dataclass
class _Config(TaskConfig):
    pass


class _Scripted(Task):
    """A task whose dev metric follows a script; it records what the runner does with it."""

    name = "scripted"
    config_class = _Config
    primary_metric = "score"
    higher_is_better = True

    def __init__(self, config, scores, featurizer=None, higher_is_better=True):
        super().__init__(config)
        self.scores = list(scores)
        self.featurizer = featurizer
        self.higher_is_better = higher_is_better
        self.snapshots = []  # (featurizer state, head state) at each dev evaluation
        self.train_modes, self.eval_modes, self.eval_grad = [], [], []
        self.batch_keys = []

    def build_head(self, input_size):
        return nn.Sequential(nn.Linear(input_size, 4), nn.Tanh(), nn.Linear(4, 1))

    def training_loss(self, head, features, frame_lengths, examples):
        self.train_modes.append((head.training, self.featurizer.training))
        self.batch_keys.append([e.key for e in examples])
        target = torch.tensor([float(e.target) for e in examples])
        return (head(features).mean(dim=(1, 2)) - target).pow(2).mean()

    def evaluate(self, head, batches):
        for _ in batches:
            pass
        self.eval_modes.append((head.training, self.featurizer.training))
        self.eval_grad.append(torch.is_grad_enabled())
        self.snapshots.append((copy.deepcopy(self.featurizer.state_dict()),
                               copy.deepcopy(head.state_dict())))
        return {"score": self.scores[len(self.snapshots) - 1]}


def _encoded(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [EncodedExample(Example(f"u{i}", np.zeros(1, np.float32), i % 2),
                           torch.randn(3, 5, 8, generator=gen)) for i in range(n)]


def _setup(scores, steps=6, eval_every=2, higher_is_better=True, **training):
    config = _Config(data=DataConfig(SourceConfig(root=".")),
                     training=TrainingConfig(steps=steps, batch_size=2, eval_every=eval_every,
                                             learning_rate=0.05, **training))
    featurizer = Featurizer(3, 8)
    task = _Scripted(config, scores, featurizer, higher_is_better)
    torch.manual_seed(0)
    head = task.build_head(8)
    return task, featurizer, head


def _equal_states(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("higher, scores, best", [
    (True, [0.2, 0.9, 0.5], 4),   # the middle evaluation wins, not the last one
    (False, [0.5, 0.1, 0.3], 4),  # lower is better (EER, WER)
    (True, [0.5, 0.5, 0.5], 2),   # a tie keeps the earlier head
])
def test_the_dev_best_evaluation_is_kept_and_its_state_restored(higher, scores, best):
    task, featurizer, head = _setup(scores, higher_is_better=higher)
    record = train_head(task, featurizer, head, _encoded(6), _encoded(4, 1),
                        RunOptions("scripted", "x", "c", "o"))
    assert [h["step"] for h in record["history"]] == [2, 4, 6]
    assert [h["score"] for h in record["history"]] == scores
    assert record["best_step"] == best
    assert record["best_metric"] == scores[best // 2 - 1]
    kept = task.snapshots[best // 2 - 1]
    last = task.snapshots[-1]
    assert not _equal_states(kept[1], last[1])  # training did move the head after it
    assert not _equal_states(kept[0], last[0])  # and the layer weights
    assert _equal_states(featurizer.state_dict(), kept[0])
    assert _equal_states(head.state_dict(), kept[1])


def test_training_steps_run_in_train_mode_and_dev_in_eval_mode_without_grad():
    task, featurizer, head = _setup([0.1, 0.2, 0.3])
    train_head(task, featurizer, head, _encoded(6), _encoded(4, 1),
               RunOptions("scripted", "x", "c", "o"))
    assert task.train_modes == [(True, True)] * 6
    assert task.eval_modes == [(False, False)] * 3
    assert task.eval_grad == [False] * 3


@pytest.mark.parametrize("seed", [0, 7])
def test_training_batches_follow_the_run_seed(seed):
    """The batch order is ``default_rng(seed)``'s permutation, so seeds differ."""
    task, featurizer, head = _setup([0.0] * 3, steps=3, eval_every=3)
    train = _encoded(6)
    train_head(task, featurizer, head, train, _encoded(2, 1),
               RunOptions("scripted", "x", "c", "o", seed=seed))
    order = np.random.default_rng(seed).permutation(6)
    assert task.batch_keys == [[f"u{i}" for i in order[s:s + 2]] for s in (0, 2, 4)]


def test_grad_clip_is_applied_to_head_and_layer_weights():
    def final(grad_clip):
        task, featurizer, head = _setup([0.0], steps=3, eval_every=3, grad_clip=grad_clip)
        train_head(task, featurizer, head, _encoded(6), _encoded(2, 1),
                   RunOptions("scripted", "x", "c", "o"))
        return featurizer.weights.detach().clone(), [p.detach().clone() for p in head.parameters()]

    free, clipped = final(None), final(1e-12)
    assert torch.equal(free[0], final(100.0)[0])  # a loose clip changes nothing
    # AdamW normalises the gradient scale, but with eps=1e-8 a 1e-12-norm gradient barely moves
    assert clipped[0].abs().max() < 1e-4 and free[0].abs().max() > 1e-2


def test_zero_grad_between_steps_gradients_do_not_accumulate():
    """The second step's update uses the second batch's gradient only: replaying the two steps
    by hand with a fresh AdamW gives the same weights."""
    task, featurizer, head = _setup([0.0], steps=2, eval_every=2, grad_clip=None)
    twin_f, twin_h = copy.deepcopy(featurizer), copy.deepcopy(head)
    train = _encoded(4)
    train_head(task, featurizer, head, train, _encoded(2, 1),
               RunOptions("scripted", "x", "c", "o"))
    twin_task = _Scripted(task.config, [0.0], twin_f)
    optimizer = _optimizer(twin_task, twin_f, twin_h)
    order = np.random.default_rng(0).permutation(4)
    from downstream.base import pad_hidden

    for s in (0, 2):
        chunk = [train[i] for i in order[s:s + 2]]
        hidden, lengths = pad_hidden([e.hidden for e in chunk])
        loss = twin_task.training_loss(twin_h, twin_f(hidden), lengths, [e.example for e in chunk])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.testing.assert_close(featurizer.weights, twin_f.weights)
    for a, b in zip(head.parameters(), twin_h.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_weight_decay_only_on_matrices_of_the_head():
    task, featurizer, head = _setup([0.0], weight_decay=0.3)
    optimizer = _optimizer(task, featurizer, head)
    groups = [(g["weight_decay"], [tuple(p.shape) for p in g["params"]])
              for g in optimizer.param_groups]
    assert groups == [(0.3, [(4, 8), (1, 4)]), (0.0, [(4,), (1,)]), (0.0, [(3,)])]
    assert [g["lr"] for g in optimizer.param_groups] == [0.05, 0.05, 0.05]
