"""Speaker verification, SUPERB-style (Yang et al., arXiv:2105.01051), with a light x-vector head.

Training: the head (:class:`XVectorHead`) learns speaker embeddings with an AM-softmax
(arXiv:1801.05599) over the training speakers, on random crops of ``train_crop_seconds`` of the
kept hidden states. Scoring: cosine similarity of the embeddings of whole utterances. Trials are
built from the speaker labels of a split: every same-speaker pair (target trials) and a seeded
sample of different-speaker pairs (non-target trials). Metrics: EER and normalised minDCF
(``p_target = 0.01``, ``C_miss = C_fa = 1``) from :mod:`robustdistill.metrics.verification`.
Test speakers must be unseen in training (checked). Under a test condition every test
utterance is corrupted, so both sides of a trial (enrolment and test) hear it, each with its
own noise segment and room (drawn per utterance: a trial's two sides may share a room or noise
recording or not, whatever their speakers). No score normalisation, no PLDA back end.

Intervals and paired comparisons (since 2026-12-07) resample test **speakers, then utterances
within each drawn speaker**, not trials: trials share utterances and speakers, so they are not
independent, and a trial bootstrap gave intervals about half as wide as they should be. The
fixed trial list enters each resample with multiplicities
(:meth:`SpeakerVerification.item_statistic`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from downstream.base import Batch, EncodedExample, Example, Task, TaskConfig, pad_hidden
from downstream.data import Utterance, check_speaker_disjoint
from robustdistill.metrics.verification import compute_eer, compute_min_dcf

from .head import XVectorHead

__all__ = ["SpeakerVerification", "SpeakerVerificationConfig", "build_trials"]

logger = logging.getLogger(__name__)


@dataclass
class XVectorConfig:
    """Attributes:
    channels: TDNN channels.
    kernel_sizes: kernel size of each TDNN layer.
    dilations: dilation of each TDNN layer.
    embedding_dim: speaker embedding width.
    margin: AM-softmax additive margin m, >= 0 (0: a plain normalised softmax).
    scale: AM-softmax scale s, > 0.
    batch_norm: ``masked`` (training batch norm statistics over real frames only) or
        ``padded`` (torch's BatchNorm1d: the zero-padded frames of utterances shorter than the
        training crop count too; the behaviour before 2026-12-07). Training only: evaluation
        uses the running statistics either way.

    Raises:
        ValueError: (on construction) ``channels``, ``embedding_dim``, a kernel size or a
            dilation below 1, ``scale <= 0`` (an all-zero logit: the head would not train,
            and its random embeddings be scored; a 0-wide embedding scored every trial 0), or
            a ``margin`` below 0 or not a number (a negative margin adds to the target's logit
            instead of taking from it: the loss then asks for no separation between speakers,
            and the run scored the head without a word).
    """

    channels: int = 256
    kernel_sizes: list[int] = field(default_factory=lambda: [5, 3, 3])
    dilations: list[int] = field(default_factory=lambda: [1, 2, 3])
    embedding_dim: int = 128
    margin: float = 0.2
    scale: float = 30.0
    batch_norm: Literal["masked", "padded"] = "masked"

    def __post_init__(self) -> None:
        for name in ("channels", "embedding_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"head.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("kernel_sizes", "dilations"):
            if any(v < 1 for v in getattr(self, name)):
                raise ValueError(f"head.{name} must all be >= 1, got {getattr(self, name)}")
        if not self.scale > 0:
            raise ValueError(f"head.scale must be > 0, got {self.scale}")
        if not self.margin >= 0:  # NaN too
            raise ValueError(f"head.margin (the AM-softmax additive margin) must be >= 0, got "
                             f"{self.margin}")


@dataclass
class TrialsConfig:
    """Attributes:
    max_nontarget: non-target trials sampled per split (all of them when fewer exist).
    p_target: target prior of the minDCF.
    c_miss: cost of a miss.
    c_fa: cost of a false alarm.
    """

    max_nontarget: int = 5000
    p_target: float = 0.01
    c_miss: float = 1.0
    c_fa: float = 1.0


@dataclass
class SpeakerVerificationConfig(TaskConfig):
    """Config of ``speaker_verification`` (see :class:`downstream.base.TaskConfig`).

    Attributes:
        head: see :class:`XVectorConfig`.
        trials: see :class:`TrialsConfig`.
        train_crop_seconds: random crop length (seconds) of training utterances; None: whole.

    Raises:
        ValueError: (on construction) ``train_crop_seconds <= 0`` (it trained on one-frame
            crops).
    """

    head: XVectorConfig = field(default_factory=XVectorConfig)
    trials: TrialsConfig = field(default_factory=TrialsConfig)
    train_crop_seconds: float | None = 3.0

    def __post_init__(self) -> None:
        if self.train_crop_seconds is not None and not self.train_crop_seconds > 0:
            raise ValueError(f"train_crop_seconds must be > 0 (or null: whole utterances), got "
                             f"{self.train_crop_seconds}")


def build_trials(speakers: Sequence[str], max_nontarget: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Trials over the items of a split.

    Args:
        speakers: the speaker of each item.
        max_nontarget: number of non-target pairs to sample (without replacement).
        seed: seeds the sample (together with the speaker list, so the trials are the same for
            every upstream and condition).

    Returns:
        ``(pairs, labels)``: ``(P, 2)`` item indices ``i < j`` and ``(P,)`` int labels
        (1 target: same speaker; 0 non-target). All target pairs are included.

    Raises:
        ValueError: no target or no non-target pair (need two items of one speaker and two
            speakers).
    """
    spk = np.asarray(speakers)
    i, j = np.triu_indices(len(spk), k=1)
    same = spk[i] == spk[j]
    target = np.stack([i[same], j[same]], axis=1)
    nontarget = np.stack([i[~same], j[~same]], axis=1)
    if len(target) == 0 or len(nontarget) == 0:
        raise ValueError(f"trials need same- and different-speaker pairs; got {len(target)} "
                         f"target and {len(nontarget)} non-target pairs from {len(spk)} items")
    if len(nontarget) > max_nontarget:
        rng = np.random.default_rng([seed, zlib.crc32("\n".join(map(str, spk)).encode())])
        keep = np.sort(rng.choice(len(nontarget), size=max_nontarget, replace=False))
        nontarget = nontarget[keep]
    pairs = np.concatenate([target, nontarget])
    labels = np.concatenate([np.ones(len(target), int), np.zeros(len(nontarget), int)])
    return pairs, labels


class SpeakerVerification(Task):
    """Speaker verification: EER (primary, lower is better) and minDCF."""

    name = "speaker_verification"
    config_class = SpeakerVerificationConfig
    primary_metric = "eer"
    higher_is_better = False

    def __init__(self, config: SpeakerVerificationConfig, seed: int = 0) -> None:
        super().__init__(config, seed)
        self._warned_above_half: set[int] = set()  # utterance sets whose EER > 0.5 was told

    def setup(self, splits: dict[str, list[Utterance]]) -> None:
        """Index the training speakers; check speaker labels and disjointness.

        Raises:
            ValueError: utterances without speaker, fewer than two training speakers, dev or
                test speakers seen in training.
        """
        for split, items in splits.items():
            if any(u.speaker is None for u in items):
                raise ValueError(f"{split}: every utterance needs a speaker label")
        check_speaker_disjoint(splits, "train", "test")
        check_speaker_disjoint(splits, "train", "dev")
        self.speakers = sorted({u.speaker for u in splits["train"]})
        if len(self.speakers) < 2:
            raise ValueError(f"need at least two training speakers, got {self.speakers}")
        self.index = {s: i for i, s in enumerate(self.speakers)}
        self.last_trials: dict[str, int] = {}

    def make_example(self, utterance, waveform, split, condition, corruptor) -> Example:
        """The corrupted waveform; the target is the speaker's index in training, None in
        dev and test (scored by trials, not classes)."""
        audio = corruptor.apply(waveform, condition, utterance.key)
        target = self.index[utterance.speaker] if split == "train" else None
        return Example(utterance.key, audio, target, utterance.speaker)

    def collate(self, encoded: Sequence[EncodedExample], train: bool, rng: np.random.Generator
                ) -> Batch:
        """Training: a random crop of ``train_crop_seconds`` per utterance; else whole."""
        crop = self.config.train_crop_seconds
        if not train or crop is None:
            return super().collate(encoded, train, rng)
        frames = max(1, round(crop * self.frames_per_second))
        hidden = []
        for e in encoded:
            start = int(rng.integers(0, e.num_frames - frames + 1)) if e.num_frames > frames else 0
            hidden.append(e.hidden[:, start : start + frames])
        padded, lengths = pad_hidden(hidden)
        return Batch(padded, lengths, [e.example for e in encoded])

    def build_head(self, input_size: int) -> nn.Module:
        """An :class:`XVectorHead` with an AM-softmax over the training speakers."""
        h = self.config.head
        return XVectorHead(input_size, len(self.speakers), h.channels, h.kernel_sizes,
                           h.dilations, h.embedding_dim, h.margin, h.scale, h.batch_norm)

    def training_loss(self, head, features, frame_lengths, examples: list[Example]) -> torch.Tensor:
        """Scalar AM-softmax loss of the head's embeddings with the speaker indices, batch
        mean."""
        targets = torch.tensor([e.target for e in examples], device=features.device)
        return head(features, frame_lengths, targets)

    def evaluate(self, head, batches: Iterable) -> dict[str, float]:
        """Cosine-scored trials over the split: EER and normalised minDCF.

        An EER above 0.5 (a system at chance, or scores reversed) is warned about once per set
        of utterances (the dev split, evaluated at each ``eval_every``; the test split, under
        each condition), not at each evaluation: the EER of every one is in the log's dev and
        test lines and in ``results.json``."""
        embeddings, speakers, keys = [], [], []
        for features, frame_lengths, examples in batches:
            embeddings.append(F.normalize(head.embed(features, frame_lengths), dim=-1).cpu())
            speakers += [e.speaker for e in examples]
            keys += [e.key for e in examples]
        emb = torch.cat(embeddings).double().numpy()
        pairs, labels = build_trials(speakers, self.config.trials.max_nontarget, self.seed)
        scores = np.einsum("pd,pd->p", emb[pairs[:, 0]], emb[pairs[:, 1]])
        self.last_items = [
            {"enroll": keys[i], "test": keys[j], "label": int(lab), "score": float(sc)}
            for (i, j), lab, sc in zip(pairs.tolist(), labels.tolist(), scores.tolist(),
                                       strict=True)
        ]
        tar, non = scores[labels == 1], scores[labels == 0]
        t = self.config.trials
        eer, _ = compute_eer(tar, non, warn=False)  # warned once per split below
        min_dcf, _ = compute_min_dcf(tar, non, t.p_target, t.c_miss, t.c_fa, warn=False)
        split = zlib.crc32("\n".join(sorted(keys)).encode())
        if eer > 0.5 and split not in self._warned_above_half:
            self._warned_above_half.add(split)
            logger.warning(
                "EER %.3f > 0.5 on these %d utterances (non-target trials score above target "
                "trials more often than not): a system at chance, or target and non-target "
                "scores swapped / a distance used as a similarity? Said once for these "
                "utterances; each evaluation's EER is in the dev / test lines and results.json",
                eer, len(keys))
        self.last_trials = {"target": int(len(tar)), "nontarget": int(len(non)),
                            "speakers": len(set(speakers)), "items": len(speakers)}
        return {"eer": eer, "min_dcf": min_dcf}

    item_unit = "trial"
    resample_unit = "speaker"

    @classmethod
    def resample_units(cls, items):
        """The test speakers of the trials, each with its utterances: the connected groups of
        utterances joined by target trials (every same-speaker pair is a target trial, so a
        group is a speaker; an utterance in no target trial, a speaker's only one, is a
        speaker of its own). Records carry no speaker label, so results written before this
        method existed get it too.

        Returns:
            One tuple of utterance keys (sorted) per speaker, the speakers sorted by their
            tuples: the clusters of a two-stage draw (:func:`downstream.stats.resample_indices`;
            utterances numbered in this order).
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        keys = sorted({k for r in items for k in (r["enroll"], r["test"])})
        index = {k: i for i, k in enumerate(keys)}
        pairs = np.array([(index[r["enroll"]], index[r["test"]]) for r in items
                          if r["label"] == 1], dtype=int).reshape(-1, 2)
        links = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                           shape=(len(keys), len(keys)))
        _, speaker = connected_components(links, directed=False)
        groups: dict[int, list[str]] = {}
        for k, group in zip(keys, speaker.tolist(), strict=True):
            groups.setdefault(group, []).append(k)
        return sorted(tuple(g) for g in groups.values())  # keys sorted: each group is too

    @classmethod
    def item_statistic(cls, items, metric):
        """``eer`` over a two-stage resample of the test speakers and their utterances:
        ``f(draw)`` takes ``(M, 2)`` rows ``(copy, utterance)`` of
        :func:`downstream.stats.resample_indices` over :meth:`resample_units` (not trial
        indices); NaN when the resample has no target or no non-target trial.

        Trials share utterances and speakers, so resampling trials as if independent
        understates the spread (about half the width on a 6-speaker test set). The resample
        draws the speakers with replacement, each drawn copy standing for a distinct speaker,
        then each copy's utterances from the speaker's own with replacement (a two-layer
        bootstrap: Wu, Martin, Greenberg & Kacker, "The impact of data dependency on speaker
        recognition evaluation", IEEE/ACM TASLP 25(1), 2017, which finds it more conservative
        than resampling speakers alone; the speaker is the subset of Bolle, Ratha & Pankanti's
        "subsets bootstrap", CVIU 2004). The fixed trial list enters the EER with
        multiplicities, with ``m_k(u)`` the draws of utterance ``u`` in copy ``k`` and
        ``m(u)`` their sum: a target trial ``(u, v)`` counts ``sum_k m_k(u) m_k(v)`` (pairs
        within one copy), a non-target trial ``m(u) m(v)``; pairs between two copies of one
        speaker, or of an utterance with itself, have no score and are left out. The weighted
        EER is the EER of the list with each trial repeated by its count. Before 2026-12-07
        trials were resampled.

        Raises:
            ValueError: a non-target trial inside one group of target-linked utterances
                (inconsistent labels).
        """
        if metric != "eer":
            return None
        units = cls.resample_units(items)
        keys = [k for unit in units for k in unit]
        index = {k: i for i, k in enumerate(keys)}
        scores = np.array([r["score"] for r in items], dtype=np.float64)
        target = np.array([r["label"] for r in items], dtype=int) == 1
        enroll = np.array([index[r["enroll"]] for r in items], dtype=int)
        test = np.array([index[r["test"]] for r in items], dtype=int)
        speaker = np.repeat(np.arange(len(units)), [len(u) for u in units])
        if np.any(~target & (speaker[enroll] == speaker[test])):
            raise ValueError("a non-target trial joins two utterances that target trials "
                             "give the same speaker: inconsistent trial labels")

        def eer(draw):
            draw = np.asarray(draw, dtype=int).reshape(-1, 2)
            counts = np.zeros((int(draw[:, 0].max()) + 1, len(keys)), dtype=np.int64)
            np.add.at(counts, (draw[:, 0], draw[:, 1]), 1)
            total = counts.sum(axis=0)
            weight = np.where(target, (counts[:, enroll] * counts[:, test]).sum(axis=0),
                              total[enroll] * total[test])
            tar = np.repeat(scores[target], weight[target])
            non = np.repeat(scores[~target], weight[~target])
            if tar.size == 0 or non.size == 0:
                return float("nan")
            return float(compute_eer(tar, non, warn=False)[0])
        return eer

    def summary(self) -> dict[str, Any]:
        """Training speakers and the trials of the last evaluated split (the test split)."""
        return {"train_speakers": len(self.speakers), "test_trials": self.last_trials}
