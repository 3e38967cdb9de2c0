"""Training and evaluating the featurizer weights + head on encoded examples (the upstream is
frozen and already run): AdamW for ``training.steps`` steps, the head with the best dev metric
kept."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .base import Task, iterate_batches
from .featurizer import Featurizer

logger = logging.getLogger(__name__)

__all__ = ["evaluate_head", "format_metrics", "train_head"]


def _features(task: Task, featurizer: Featurizer, encoded, batch_size: int, device: str
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
    for batch in iterate_batches(task, encoded, batch_size):
        yield featurizer(batch.hidden.to(device)), batch.frame_lengths.to(device), batch.examples


def evaluate_head(task: Task, featurizer: Featurizer, head: nn.Module, encoded, options
              ) -> dict[str, float]:
    featurizer.eval()
    head.eval()
    with torch.no_grad():
        batch_size = task.config.training.eval_batch_size
        metrics = task.evaluate(head, _features(task, featurizer, encoded, batch_size,
                                                options.device))
    if task.primary_metric not in metrics:
        raise KeyError(f"{task.name}.evaluate() did not return {task.primary_metric!r}")
    return {k: float(v) for k, v in metrics.items()}


def _optimizer(task: Task, featurizer: Featurizer, head: nn.Module) -> torch.optim.Optimizer:
    cfg = task.config.training
    decay = [p for p in head.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in head.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": list(featurizer.parameters()), "weight_decay": 0.0,
         "lr": cfg.learning_rate if cfg.featurizer_learning_rate is None
         else cfg.featurizer_learning_rate},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate)


def _better(task: Task, value: float, best: float | None) -> bool:
    """Whether a dev metric beats the best so far. A NaN (e.g. a PESQ that failed on every dev
    utterance) never wins, but it never locks selection either: the first finite value after
    a NaN replaces it."""
    if not np.isfinite(value):
        return best is None
    if best is None or not np.isfinite(best):
        return True
    return value > best if task.higher_is_better else value < best


def train_head(task: Task, featurizer: Featurizer, head: nn.Module, train_set, dev_set, options
           ) -> dict[str, Any]:
    """AdamW on featurizer weights + head for ``training.steps`` steps; keep the best dev head
    (a later evaluation replaces it only when strictly better, as s3prl's ``>``: on a tie the
    earlier head stays).

    Returns:
        ``{"best_step", "best_metric", "history": [{"step", "train_loss", <dev metrics>}]}``;
        the featurizer and head are left holding the selected (best dev) state.
    """
    cfg = task.config.training
    rng = np.random.default_rng(options.seed)
    optimizer = _optimizer(task, featurizer, head)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def batches():
        while True:
            yield from iterate_batches(task, train_set, cfg.batch_size, train=True, rng=rng)

    stream = batches()
    history, losses = [], []
    best_metric, best_step, best_state = None, 0, None
    bar = tqdm(range(1, cfg.steps + 1), desc=f"train {task.name}", leave=False)
    for step in bar:
        featurizer.train()
        head.train()
        batch = next(stream)
        features = featurizer(batch.hidden.to(options.device))
        loss = task.training_loss(head, features, batch.frame_lengths.to(options.device),
                                  batch.examples)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {step}: {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            dev = evaluate_head(task, featurizer, head, dev_set, options)
            history.append({"step": step, "train_loss": float(np.mean(losses)), **dev})
            losses = []
            logger.info("step %d dev %s", step, format_metrics(dev))
            if _better(task, dev[task.primary_metric], best_metric):
                best_metric, best_step = dev[task.primary_metric], step
                best_state = (copy.deepcopy(featurizer.state_dict()),
                              copy.deepcopy(head.state_dict()))
    if best_state is not None:
        featurizer.load_state_dict(best_state[0])
        head.load_state_dict(best_state[1])
    return {"best_step": best_step, "best_metric": best_metric, "history": history}


def format_metrics(metrics: dict[str, float]) -> str:
    return json.dumps({k: round(v, 4) for k, v in metrics.items()})
