"""Utterance classification with SUPERB's utterance-level head.

As SUPERB's keyword spotting / speaker identification / intent / emotion tasks (Yang et al.,
arXiv:2105.01051; s3prl's ``UtteranceLevel`` model): featurizer output, an optional linear
projection, mean pooling over the real frames, a linear classifier, cross-entropy; accuracy
(torchmetrics). Which of those tasks it is depends only on the config: the labels (from file
names, folders or a manifest) and the split (speaker-disjoint for keyword spotting, per item
for speaker identification).

Speed-up (exact): without per-layer layer norm, the featurizer's weighted sum, the linear
projection and the mean over frames are all affine, so they commute; :meth:`collate` therefore
averages each kept hidden state over its real frames first and hands the head one "frame" per
utterance. The logits equal those of the frame-level computation up to float rounding, and a
training step no longer scales with utterance length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from downstream.base import Batch, EncodedExample, Example, Task, TaskConfig
from downstream.data import Utterance
from downstream.pooling import masked_mean

__all__ = ["MeanPoolClassifier", "UtteranceClassification", "UtteranceClassificationConfig"]


@dataclass
class ClassifierHeadConfig:
    """Attributes:
    projector_dim: width of the linear projection before pooling (s3prl's default 256);
        0 pools the featurizer output directly.
    dropout: dropout on the pooled vector during training.

    Raises:
        ValueError: (on construction) a negative ``projector_dim``, or ``dropout`` outside
            ``[0, 1)``.
    """

    projector_dim: int = 256
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.projector_dim < 0:
            raise ValueError(f"head.projector_dim must be >= 0, got {self.projector_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"head.dropout must lie in [0, 1), got {self.dropout}")


@dataclass
class UtteranceClassificationConfig(TaskConfig):
    """Config of ``utterance_classification`` (see :class:`downstream.base.TaskConfig`).

    Attributes:
        head: see :class:`ClassifierHeadConfig`.
    """

    head: ClassifierHeadConfig = field(default_factory=ClassifierHeadConfig)


class MeanPoolClassifier(nn.Module):
    """``(B, T, D)`` features -> [linear D->P] -> mean over real frames -> linear -> ``(B, C)``
    logits.

    Args:
        input_size: ``D``.
        num_classes: ``C``.
        projector_dim: ``P`` (0: no projection).
        dropout: dropout probability on the pooled vector.
    """

    def __init__(self, input_size: int, num_classes: int, projector_dim: int = 256,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.projector = nn.Linear(input_size, projector_dim) if projector_dim else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(projector_dim or input_size, num_classes)

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` features, ``(B,)`` real frames -> ``(B, C)`` logits (padding ignored)."""
        pooled = masked_mean(self.projector(features), frame_lengths)
        return self.classifier(self.dropout(pooled))


class UtteranceClassification(Task):
    """One label per utterance; accuracy. Classes are the training labels (sorted)."""

    name = "utterance_classification"
    config_class = UtteranceClassificationConfig
    primary_metric = "accuracy"
    higher_is_better = True

    def setup(self, splits: dict[str, list[Utterance]]) -> None:
        """Build the class list from the train labels.

        Raises:
            ValueError: an utterance without a label, fewer than two classes, or dev/test
                labels never seen in training.
        """
        for split, items in splits.items():
            missing = [u.key for u in items if u.label is None]
            if missing:
                raise ValueError(f"{split}: {len(missing)} utterances have no label "
                                 f"(first: {missing[0]}); check the source pattern / manifest")
        self.classes = sorted({u.label for u in splits["train"]})
        if len(self.classes) < 2:
            raise ValueError(f"need at least two classes in train, got {self.classes}")
        for split in ("dev", "test"):
            unseen = sorted({u.label for u in splits[split]} - set(self.classes))
            if unseen:
                raise ValueError(f"{split} labels not in train: {unseen[:10]}")
        self.index = {label: i for i, label in enumerate(self.classes)}

    def target(self, utterance: Utterance) -> int:
        """The index of the utterance's label in :attr:`classes` (set by :meth:`setup`)."""
        return self.index[utterance.label]

    def collate(self, encoded: Sequence[EncodedExample], train: bool, rng: np.random.Generator
                ) -> Batch:
        """Pool over real frames before the featurizer when that is exact (no layer norm):
        ``hidden`` is then ``(B, N, 1, D)`` with ``frame_lengths`` all one."""
        if self.config.featurizer.layer_norm:
            return super().collate(encoded, train, rng)
        pooled = torch.stack([e.hidden.float().mean(dim=1, keepdim=True) for e in encoded])
        lengths = torch.ones(len(encoded), dtype=torch.long)
        return Batch(pooled, lengths, [e.example for e in encoded])

    def build_head(self, input_size: int) -> nn.Module:
        """A :class:`MeanPoolClassifier` over the training classes."""
        head = self.config.head
        return MeanPoolClassifier(input_size, len(self.classes), head.projector_dim, head.dropout)

    def training_loss(self, head, features, frame_lengths, examples: list[Example]) -> torch.Tensor:
        """Scalar cross-entropy of the head's logits with the class indices, batch mean."""
        targets = torch.tensor([e.target for e in examples], device=features.device)
        return F.cross_entropy(head(features, frame_lengths), targets)

    def evaluate(self, head, batches: Iterable) -> dict[str, float]:
        """Accuracy (micro) and class-averaged (macro) accuracy over the split; per-item
        records ``{key, target, prediction, correct}`` (labels as strings) in ``last_items``.
        Macro accuracy is the mean, over the classes among the split's targets, of each one's
        accuracy (balanced accuracy; a class only ever predicted does not count)."""
        predictions, targets, keys = [], [], []
        for features, frame_lengths, examples in batches:
            predictions.append(head(features, frame_lengths).argmax(dim=-1).cpu())
            targets.append(torch.tensor([e.target for e in examples]))
            keys += [e.key for e in examples]
        preds, target = torch.cat(predictions), torch.cat(targets)
        self.last_items = [
            {"key": k, "target": self.classes[t], "prediction": self.classes[p],
             "correct": int(p == t)}
            for k, t, p in zip(keys, target.tolist(), preds.tolist(), strict=True)
        ]
        n = len(self.classes)
        # macro: the per-item statistic over every item, so that the run's number and its
        # interval share one definition (torchmetrics' macro average also counts a class that
        # was predicted but is not among the test targets, as 0)
        every_item = np.arange(len(self.last_items))
        return {
            "accuracy": float(multiclass_accuracy(preds, target, n, average="micro")),
            "macro_accuracy": self.item_statistic(self.last_items, "macro_accuracy")(every_item),
        }

    @classmethod
    def item_statistic(cls, items, metric):
        """``accuracy``: mean of ``correct``; ``macro_accuracy``: mean over the target classes
        present in the resample of their accuracy."""
        correct = np.array([r["correct"] for r in items], dtype=np.float64)
        if metric == "accuracy":
            return lambda idx: float(correct[idx].mean())
        if metric == "macro_accuracy":
            _, label = np.unique([r["target"] for r in items], return_inverse=True)

            def macro(idx):
                sums = np.bincount(label[idx], weights=correct[idx], minlength=label.max() + 1)
                counts = np.bincount(label[idx], minlength=label.max() + 1)
                return float(np.mean(sums[counts > 0] / counts[counts > 0]))
            return macro
        return None

    def summary(self) -> dict[str, Any]:
        """The number of classes and their labels (sorted; index order)."""
        return {"num_classes": len(self.classes), "classes": self.classes}
