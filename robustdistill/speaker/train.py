"""Train a speaker student with IML-KD or a baseline, evaluate speaker verification, and build
the comparison table.

IML-KD ("Integrated Multi-Level Knowledge Distillation for Enhanced Speaker Verification",
arXiv:2409.09389) from a frozen GE2E teacher (:mod:`.ge2e`). ``loss.method`` picks the system:

=============== =====================================================================
``none``        AM-softmax only (the student without KD)
``logit_kd``    AM-softmax + ``class_level`` (vanilla logit KD, Hinton et al.)
``embedding_kd`` AM-softmax + ``instance`` (embedding cosine KD)
``imlkd``       AM-softmax + ``map`` + ``instance`` + ``class_level`` + ``batch_level``
=============== =====================================================================

The teacher's logits are GE2E's similarity ``w cos(e, c_k) + b`` to the centroids ``c_k`` of the
training speakers (means of the normalised embeddings of their crops); the student's are its
AM-softmax cosines times the scale, without margin. Training follows the trainer's conventions:
``accelerate`` (``Accelerator``, ``prepare``, ``save_state`` / ``load_state``), one checkpoint
per epoch, exact resume (the batch order of epoch ``e`` is a permutation seeded by
``(seed, e)``), ``metrics.jsonl`` (one JSON object per epoch), ``config.yaml``,
``environment.json`` (software versions at each start).

Usage::

    robustdistill train-speaker train --config configs/imlkd_speaker.yaml --loss.method imlkd
    robustdistill train-speaker table --config configs/imlkd_speaker.yaml   # all systems x seeds

Legend: ``M`` training crops, ``B`` batch, ``N`` samples, ``K`` training speakers, ``E``
embedding width.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from downstream.config import from_dict, load_config, to_dict
from downstream.tasks.speaker_verification.task import build_trials
from robustdistill.checkpoints import (
    MANIFEST,
    CheckpointError,
    checkpoint_index,
    latest_checkpoint,
    remove_incomplete,
    save_checkpoint,
    verify_checkpoint,
)
from robustdistill.config import check_model_path, parse_overrides
from robustdistill.environment import record_environment
from robustdistill.files import file_blocking_folder
from robustdistill.messages import first_line
from robustdistill.metrics.verification import compute_eer, compute_min_dcf
from robustdistill.processes import require_single_process
from robustdistill.run_settings import config_changes

from .attribution import AttributionCache, IGSettings, attribute_segments, segment_bounds
from .data import (
    Crop,
    SpeakerDataError,
    Utterance,
    check_disjoint,
    load_fsdd,
    load_speaker_folders,
    load_train_crops,
    skipped_counts,
)
from .ge2e import GE2E, HOP
from .losses import batch_loss, class_loss, instance_loss, map_kl
from .models import MelLSTMEncoder, SpeakerEmbedder, SpeakerModel, UpstreamEncoder

__all__ = ["SpeakerKDConfig", "evaluate_embeddings", "main", "map_targets", "train_system"]

T = TypeVar("T")
logger = logging.getLogger("robustdistill.speaker")

METHODS = ("none", "logit_kd", "embedding_kd", "imlkd")


def _at_least(section: str, cfg: Any, **minimums: int) -> None:
    """Raise ValueError naming ``section.key`` for the first field below its minimum."""
    for name, minimum in minimums.items():
        if getattr(cfg, name) < minimum:
            raise ValueError(f"{section}.{name} must be >= {minimum}, got {getattr(cfg, name)}")


#: The shortest training crop (s): one 25 ms window, the GE2E teacher's mel frame and an
#: upstream student's first CNN frame (400 samples at 16 kHz).
MIN_CROP_SECONDS = 0.025


@dataclass
class DataConfig:
    """Training crops and verification sets (:mod:`.data`); audio is 16 kHz.

    Attributes:
        train_dir: LibriSpeech-style training folder, flat or nested, files
            ``<speaker>-<chapter>-<utt>.<ext>`` (speaker = first field of the file name).
        crop_seconds: training crop length in seconds (at least :data:`MIN_CROP_SECONDS`, one
            25 ms window); a shorter utterance is zero-padded.
        crops_per_utterance: at most this many fixed, evenly spaced, non-overlapping crops per
            training utterance (>= 1; fewer when the utterance is short).
        test_other_dir: ``<speaker>/<file>`` verification set (LibriSpeech test-other); its
            speakers must not be training speakers. None: skipped.
        fsdd_dir: FSDD folder (``{digit}_{speaker}_{take}.wav``, 8 kHz, resampled to 16 kHz);
            None: skipped.
        fsdd_per_speaker: FSDD utterances per speaker, the first in (take, digit) order (>= 2).
        max_nontarget: non-target trials sampled per set, without replacement (all target
            trials are kept).
        trials_seed: seed of the non-target sample (the same trials for every system).
        p_target: prior of a target trial for minDCF (costs 1 and 1; default 0.01, SUPERB's).

    Raises:
        ValueError: (on construction) an empty ``train_dir``, ``crop_seconds`` below
            :data:`MIN_CROP_SECONDS`,
            ``crops_per_utterance < 1``, ``fsdd_per_speaker < 2``, ``max_nontarget < 1``, a
            negative ``trials_seed`` or ``p_target`` outside ``(0, 1)``; the message names the
            key.
    """

    train_dir: str = "../shared/data/librispeech-mini/train-clean-100"
    crop_seconds: float = 2.0
    crops_per_utterance: int = 2
    test_other_dir: str | None = "../shared/data/librispeech-mini/test-other"
    fsdd_dir: str | None = "../shared/data/fsdd"
    fsdd_per_speaker: int = 20
    max_nontarget: int = 5000
    trials_seed: int = 0
    p_target: float = 0.01

    def __post_init__(self) -> None:
        if not self.train_dir:
            raise ValueError("data.train_dir must name the training folder")
        if not self.crop_seconds >= MIN_CROP_SECONDS:
            raise ValueError(f"data.crop_seconds must be at least {MIN_CROP_SECONDS} s (one "
                             "25 ms analysis window: the teacher's mel frame, an upstream "
                             f"student's first frame), got {self.crop_seconds}")
        _at_least("data", self, crops_per_utterance=1, fsdd_per_speaker=2, max_nontarget=1,
                  trials_seed=0)
        if not 0 < self.p_target < 1:
            raise ValueError(f"data.p_target must lie in (0, 1), got {self.p_target}")


@dataclass
class StudentConfig:
    """The student: encoder -> attentive statistics pooling -> embedding -> AM-softmax.

    Attributes:
        kind: ``"lstm"`` (default: :class:`MelLSTMEncoder`, an LSTM over 40 log-mel bands,
            10 ms frames) or ``"upstream"`` (:class:`UpstreamEncoder`, needs ``upstream``).
        hidden_size: LSTM width (``kind: lstm`` only; GE2E's is 256).
        num_layers: stacked LSTM layers (``kind: lstm`` only; GE2E has 3).
        upstream: local folder (or hub id; ``HF_HUB_OFFLINE=1``: local only) of a
            :class:`~robustdistill.upstream.Upstream`; required by ``kind: upstream``.
        upstream_frozen: freeze the upstream's weights; only its layer weights and the head
            train (``kind: upstream`` only).
        embedding_dim: width ``E`` of the speaker embedding.
        margin: AM-softmax additive cosine margin ``m`` (training loss only).
        scale: AM-softmax logit scale ``s``; also scales the student's class-level KD logits.

    Raises:
        ValueError: (on construction) ``kind`` not ``lstm`` or ``upstream``, ``kind:
            upstream`` without ``upstream``, ``hidden_size``, ``num_layers`` or
            ``embedding_dim`` below 1, a negative ``margin`` or ``scale <= 0``.
    """

    kind: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 2
    upstream: str | None = None
    upstream_frozen: bool = False
    embedding_dim: int = 128
    margin: float = 0.2
    scale: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in ("lstm", "upstream"):
            raise ValueError(f"student.kind must be 'lstm' or 'upstream', got {self.kind!r}")
        if self.kind == "upstream" and not self.upstream:
            raise ValueError("student.kind 'upstream' needs student.upstream (a model folder)")
        _at_least("student", self, hidden_size=1, num_layers=1, embedding_dim=1)
        if not self.margin >= 0:
            raise ValueError(f"student.margin must be >= 0, got {self.margin}")
        if not self.scale > 0:
            raise ValueError(f"student.scale must be > 0, got {self.scale}")


@dataclass
class IGConfig:
    """Integrated-Gradients maps of the teacher (:mod:`.attribution`), for ``imlkd`` training
    and the ``cache`` and ``gap`` commands.

    Attributes:
        durations: segment durations in seconds (> 0), each tiling the crop; null = the whole
            crop; longer than the crop = the whole crop (default, as the paper: 1 s, 2 s, whole).
        n_steps: IG integration steps (>= 2; default 32, the paper's); more steps shrink the
            completeness gap.
        baseline: IG baseline: ``"zero"`` (all-zero mel input, default, the paper's) or
            ``"noise"`` (mel spectrogram of seeded white noise at ``noise_dbfs``).
        noise_dbfs: level of the noise baseline in dB full scale (``baseline: noise`` only).
        method: captum's quadrature (``"gausslegendre"``, default, exact for a polynomial
            integrand of degree < 2 n_steps; ``"riemann_trapezoid"``, ...). captum 0.9's
            ``"riemann_trapezoid"`` weights sum to (n_steps - 1) / n_steps, so its maps come out
            scaled by about that (0.97 at 32 steps for a cubic F); the completeness gap shows it.
        internal_batch_size: captum's chunking of the ``n_steps x segments`` forward passes
            (memory only; not part of the cache key); null: all at once.
        cache_dir: folder of the map cache (shared by runs: keyed by segment audio, teacher
            weights, IG settings and target centroid).
        use_cache: False: no cache, every map is recomputed every epoch (to time the cache).

    Raises:
        ValueError: (on construction) no ``durations`` or one ``<= 0``, ``n_steps < 2``, an
            unknown ``baseline`` or ``method``, ``internal_batch_size < 1``, or an empty
            ``cache_dir`` with ``use_cache`` (it would be the working folder; ``use_cache:
            false`` is no cache).
    """

    durations: list[float | None] = field(default_factory=lambda: [1.0, 2.0, None])
    n_steps: int = 32
    baseline: str = "zero"
    noise_dbfs: float = -60.0
    method: str = "gausslegendre"
    internal_batch_size: int | None = 512
    cache_dir: str = "runs/imlkd_cache"
    use_cache: bool = True

    def __post_init__(self) -> None:
        if not self.durations or any(d is not None and not d > 0 for d in self.durations):
            raise ValueError(f"ig.durations must be positive seconds or null (the whole crop), "
                             f"got {self.durations}")
        if self.internal_batch_size is not None and self.internal_batch_size < 1:
            raise ValueError(f"ig.internal_batch_size must be >= 1 or null, got "
                             f"{self.internal_batch_size}")
        if self.use_cache and not self.cache_dir:
            raise ValueError("ig.cache_dir must name a folder (for no cache: ig.use_cache "
                             "false)")
        try:
            self.settings()
        except ValueError as err:
            raise ValueError(f"ig: {err}") from None

    def settings(self) -> IGSettings:
        """The IG settings of this config (``durations`` and the cache fields are not part
        of them).

        Raises:
            ValueError: ``n_steps`` below 2, an unknown ``baseline`` or ``method``.
        """
        return IGSettings(self.n_steps, self.baseline, self.noise_dbfs, self.method,
                          self.internal_batch_size)


@dataclass
class LossConfig:
    """The system and its loss weights (:mod:`.losses`); a weight applies only to the terms
    ``method`` uses.

    Attributes:
        method: ``"none"`` (AM-softmax only), ``"logit_kd"`` (+ class level),
            ``"embedding_kd"`` (+ instance) or ``"imlkd"`` (default: + map, instance, class
            and batch level); see ``docs/imlkd.md``.
        ce: weight of the AM-softmax cross-entropy on the training speakers (every method).
        map: weight of the integrated-input term, ``KL`` of the teacher's IG frame maps to the
            student's predicted maps, averaged over segments (``imlkd``).
        instance: weight of the instance-level term ``1 - cos`` between the student embedding,
            projected to the teacher's width, and the teacher's (``embedding_kd``, ``imlkd``).
        class_level: weight of the class-level term ``tau^2 KL`` of the softened teacher and
            student logits over the training speakers (``logit_kd``, ``imlkd``).
        batch_level: weight of the batch-level term, ``||G_s - G_t||_F^2 / B^2`` of the
            row-normalised ``B x B`` Gram matrices of the embeddings (``imlkd``).
        tau: temperature of the class-level term (> 0; default 2).

    Raises:
        ValueError: (on construction) an unknown ``method``, ``tau <= 0`` or a negative
            weight.
    """

    method: str = "imlkd"
    ce: float = 1.0
    map: float = 1.0
    instance: float = 1.0
    class_level: float = 1.0
    batch_level: float = 1.0
    tau: float = 2.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"loss.method must be one of {METHODS}, got {self.method!r}")
        if not self.tau > 0:
            raise ValueError(f"loss.tau must be > 0, got {self.tau}")
        for name in ("ce", "map", "instance", "class_level", "batch_level"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")

    def weights(self) -> dict[str, float]:
        """The active terms of ``method`` and their weights."""
        w = {"ce": self.ce}
        if self.method in ("logit_kd", "imlkd"):
            w["class_level"] = self.class_level
        if self.method in ("embedding_kd", "imlkd"):
            w["instance"] = self.instance
        if self.method == "imlkd":
            w["map"] = self.map
            w["batch_level"] = self.batch_level
        return w


@dataclass
class TrainConfig:
    """Optimisation (AdamW, constant learning rate) and the run folder.

    Attributes:
        output_dir: run folder (``config.yaml``, ``metrics.jsonl``, ``checkpoints/epoch_N``,
            ``result.json``); ignored by ``table``, which uses ``table.output_dir``.
        epochs: passes over the training crops (one checkpoint each).
        keep_checkpoints: newest complete checkpoints kept (>= 1); older ones are deleted after
            each save, as ``train-se``'s (every epoch's used to stay: 30 epochs of an LSTM
            student are 114 MB a run, of an upstream student its weights and AdamW state 30
            times). Bare ``epoch_N`` folders of runs older than the manifest are resumed from
            but never deleted.
        batch_size: crops per update; a last batch of fewer than 2 crops is skipped.
        lr: AdamW learning rate, constant.
        weight_decay: AdamW weight decay of the weights with >= 2 dimensions (others: 0).
        seed: seeds the model's initialisation and the batch order (a permutation per epoch).
        cpu: force CPU (default True); False: ``accelerate`` picks the device.
        resume: continue from the newest complete checkpoint in ``output_dir/checkpoints``
            (refused when it was trained with other settings); False (default): start at epoch
            0 (refused when ``output_dir`` holds an earlier run's checkpoints).
        max_grad_norm: clip the gradients' total L2 norm to this (> 0).

    Raises:
        ValueError: (on construction) ``epochs < 1``, ``batch_size < 2`` (a batch of one crop
            is skipped, so nothing would train), ``keep_checkpoints < 1``, ``lr <= 0``, a
            negative ``weight_decay`` or ``seed``, ``max_grad_norm <= 0``, or an empty
            ``output_dir``; the message names the key.
    """

    output_dir: str = "runs/imlkd_speaker/run"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    cpu: bool = True
    resume: bool = False
    max_grad_norm: float = 5.0
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("training.output_dir must name a folder")
        _at_least("training", self, epochs=1, batch_size=2, seed=0, keep_checkpoints=1)
        for name in ("lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"training.{name} must be > 0, got {getattr(self, name)}")
        if not self.weight_decay >= 0:
            raise ValueError(f"training.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class TableConfig:
    """What ``robustdistill train-speaker table`` trains and where.

    Attributes:
        methods: systems trained for the table, each a ``loss.method`` (default all four; the
            teacher is always evaluated).
        seeds: ``training.seed`` of each run; every method is trained once per seed.
        output_dir: folder of the runs (``<method>_seed<seed>``), ``results.json`` and
            ``table.md``; a finished run with the same config there is reused.

    Raises:
        ValueError: (on construction) no ``methods``, an unknown or repeated one, no ``seeds``,
            a negative or repeated one (a repeated run would count twice in the mean and
            standard deviation), or an empty ``output_dir``.
    """

    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    output_dir: str = "runs/imlkd_speaker"

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if not self.methods or bad:
            raise ValueError(f"table.methods must be a non-empty list of {METHODS}, got "
                             f"{self.methods}")
        if not self.seeds or min(self.seeds) < 0:
            raise ValueError(f"table.seeds must be a non-empty list of seeds >= 0, got "
                             f"{self.seeds}")
        for key in ("methods", "seeds"):
            values = getattr(self, key)
            if len(set(values)) < len(values):
                raise ValueError(f"table.{key} must not repeat an entry (each run would count "
                                 f"twice in the table), got {values}")
        if not self.output_dir:
            raise ValueError("table.output_dir must name a folder")


@dataclass
class SpeakerKDConfig:
    """The whole recipe (``configs/imlkd_speaker.yaml``).

    Attributes:
        teacher: path of a GE2E ``pretrained.pt``; null: the installed resemblyzer package's.
        data / student / ig / loss / training / table: see their classes.
    """

    teacher: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    ig: IGConfig = field(default_factory=IGConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    table: TableConfig = field(default_factory=TableConfig)


# ---------------------------------------------------------------------------- teacher targets
@dataclass
class TeacherTargets:
    """Frozen teacher outputs for the training crops.

    Attributes:
        embeddings: ``(M, E_t)`` normalised GE2E embeddings of the crops.
        centroids: ``(K, E_t)`` normalised speaker centroids.
        logits: ``(M, K)`` GE2E similarity logits.
    """

    embeddings: torch.Tensor
    centroids: torch.Tensor
    logits: torch.Tensor


@torch.no_grad()
def teacher_targets(teacher: GE2E, crops: list[Crop], labels: torch.Tensor, num_speakers: int,
                    batch_size: int = 64) -> TeacherTargets:
    """Embeddings of every crop, speaker centroids and the logits against them.

    Args:
        teacher: frozen GE2E.
        crops: ``M`` training crops of one length (16 kHz samples).
        labels: ``(M,)`` long speaker index of each crop, in ``[0, num_speakers)``.
        num_speakers: ``K``.
        batch_size: crops per teacher forward pass.

    Returns:
        :class:`TeacherTargets`: ``(M, E_t)`` embeddings, ``(K, E_t)`` centroids (normalised
        sum of each speaker's crop embeddings) and ``(M, K)`` logits.
    """
    emb = torch.cat([teacher(torch.from_numpy(np.stack([c.audio for c in crops[i:i + batch_size]])))
                     for i in range(0, len(crops), batch_size)])
    centroids = torch.zeros(num_speakers, emb.shape[1]).index_add_(0, labels, emb)
    centroids = F.normalize(centroids, dim=-1)
    return TeacherTargets(emb, centroids, teacher.scores(emb, centroids))


def map_targets(bounds: list[tuple[int, int]], num_student_frames: int,
                student_hop: int) -> list[torch.Tensor]:
    """For each segment, the ``(T_seg, T_student)`` 0/1 matrix sending teacher frame ``i``
    (centre at sample ``start + 160 i``) to the student frame holding that sample (the last
    frame for samples past the end). Multiplying a teacher map by it keeps its sum; for a
    student with the teacher's 10 ms hop it is a shifted identity."""
    out = []
    for a, b in bounds:
        t = 1 + (b - a) // HOP
        centre = a + HOP * torch.arange(t)
        j = torch.clamp(torch.div(centre, student_hop, rounding_mode="floor"), max=num_student_frames - 1)
        out.append(F.one_hot(j, num_student_frames).float())
    return out


def _student_map_loss(map_logits: torch.Tensor, teacher_maps: list[torch.Tensor],
                      assign: list[torch.Tensor]) -> torch.Tensor:
    """Per segment: teacher map moved to student frames, student logits restricted to the
    segment's student frames; KL averaged over segments and crops."""
    losses = []
    for maps, matrix in zip(teacher_maps, assign, strict=True):
        matrix = matrix.to(map_logits.device)
        target = maps.to(map_logits.device) @ matrix  # (B, T_student)
        frames = matrix.sum(0) > 0
        losses.append(map_kl(map_logits[:, frames], target[:, frames]))
    return torch.stack(losses).mean()


# ---------------------------------------------------------------------------- model building
def build_student(cfg: SpeakerKDConfig, num_speakers: int, teacher_dim: int) -> SpeakerModel:
    """The student of ``cfg.student``."""
    s = cfg.student
    if s.kind == "lstm":
        encoder = MelLSTMEncoder(s.hidden_size, s.num_layers)
    else:
        encoder = UpstreamEncoder(s.upstream, frozen=s.upstream_frozen)
    return SpeakerModel(encoder, num_speakers, s.embedding_dim, teacher_dim, s.margin, s.scale)


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=cfg.lr)


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def embed_utterances(embed_fn, utterances: list[Utterance], batch_size: int = 16) -> np.ndarray:
    """``(U, E)`` L2-normalised embeddings; ``embed_fn((B, N) padded, (B,) lengths) -> (B, E)``.
    Utterances are batched by similar length."""
    order = sorted(range(len(utterances)), key=lambda i: len(utterances[i].audio))
    out: list[np.ndarray | None] = [None] * len(utterances)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        lengths = torch.tensor([len(utterances[j].audio) for j in idx])
        wav = torch.zeros(len(idx), int(lengths.max()))
        for r, j in enumerate(idx):
            wav[r, : lengths[r]] = torch.from_numpy(utterances[j].audio)
        emb = F.normalize(embed_fn(wav, lengths), dim=-1).double().cpu().numpy()
        for r, j in enumerate(idx):
            out[j] = emb[r]
    return np.stack(out)  # type: ignore[arg-type]


def evaluate_embeddings(embeddings: np.ndarray, speakers: list[str], cfg: DataConfig
                        ) -> dict[str, float]:
    """Cosine-scored trials (every target pair, ``max_nontarget`` non-target pairs): EER and
    minDCF (``p_target``), as fractions; plus the trial counts.

    Args:
        embeddings: ``(U, E)`` L2-normalised embeddings (a dot product is their cosine).
        speakers: the speaker of each of the ``U`` utterances.
        cfg: ``max_nontarget``, ``trials_seed`` and ``p_target``.

    Returns:
        ``{"eer", "min_dcf", "target_trials", "nontarget_trials"}``.

    Raises:
        ValueError: no target or no non-target trial (:func:`build_trials`).
    """
    pairs, labels = build_trials(speakers, cfg.max_nontarget, cfg.trials_seed)
    scores = np.einsum("pd,pd->p", embeddings[pairs[:, 0]], embeddings[pairs[:, 1]])
    tar, non = scores[labels == 1], scores[labels == 0]
    return {"eer": compute_eer(tar, non)[0],
            "min_dcf": compute_min_dcf(tar, non, cfg.p_target, warn=False)[0],  # EER warns
            "target_trials": int(len(tar)), "nontarget_trials": int(len(non))}


def evaluate_teacher(teacher: GE2E, sets: dict[str, list[Utterance]], cfg: DataConfig
                     ) -> dict[str, dict[str, float]]:
    """GE2E utterance embeddings (Resemblyzer's partial averaging) on each set."""
    def embed(wav, lengths):
        return torch.stack([teacher.embed_utterance(w[:n]) for w, n in
                            zip(wav, lengths, strict=True)])

    return {name: evaluate_embeddings(embed_utterances(embed, utts), [u.speaker for u in utts],
                                      cfg) for name, utts in sets.items()}


#: Utterances per forward pass of :func:`evaluate_student` for a student whose embedding of an
#: utterance does not depend on the padding (:func:`ignores_padding`); others get one each.
EVAL_BATCH = 16


def ignores_padding(encoder: torch.nn.Module) -> bool:
    """Whether an encoder's frames of an utterance are those it gives the utterance alone,
    whatever the zero padding a batch adds after it (float rounding aside).

    True for the log-mel LSTM (per-utterance masked mean, packed sequences), a Whisper upstream
    (each utterance cut into its own 30 s windows) and a WavLM, HuBERT or wav2vec 2.0 upstream
    with a layer-norm CNN given an attention mask. False for any other encoder: a group-norm
    CNN (the Base shapes) normalises each channel over the padded input, a transformer without
    an attention mask attends to the padding, and data2vec-audio's stack of positional
    convolutions carries the padding into the real frames even with one (cosines of 0.98-0.99
    between an utterance's batched and lone embeddings on a random HuBERT Base-shaped student).
    """
    if isinstance(encoder, MelLSTMEncoder):
        return True
    if not isinstance(encoder, UpstreamEncoder):
        return False
    from robustdistill.upstream import has_layer_norm_cnn  # transformers: only for upstreams

    upstream = encoder.upstream
    config = upstream.model.config
    return upstream.is_whisper or (upstream.use_attention_mask and has_layer_norm_cnn(config)
                                   and config.model_type in ("wavlm", "hubert", "wav2vec2"))


def evaluate_student(model: SpeakerModel, sets: dict[str, list[Utterance]], cfg: DataConfig
                     ) -> dict[str, dict[str, float]]:
    """Student embeddings of whole utterances on each set, scored by
    :func:`evaluate_embeddings`.

    Each utterance's embedding is the one the student gives it alone: batches of
    :data:`EVAL_BATCH` utterances of similar length when the encoder
    :func:`ignores_padding`, one utterance per forward pass otherwise, so the metrics do not
    depend on which utterances share a batch (they do depend on the whole set: EER and minDCF
    are computed over all of its trials).
    """
    model.eval()
    device = next(model.parameters()).device
    batch = EVAL_BATCH if ignores_padding(getattr(model, "encoder", None)) else 1

    def embed(wav, lengths):
        return model(wav.to(device), lengths.to(device)).embedding

    return {name: evaluate_embeddings(embed_utterances(embed, utts, batch),
                                      [u.speaker for u in utts], cfg)
            for name, utts in sets.items()}


# ---------------------------------------------------------------------------- training
#: Speaker checkpoints are ``checkpoints/epoch_N`` (N epochs done), written and published as
#: the distillation trainer's (:mod:`robustdistill.checkpoints`).
_EPOCH_PREFIX = "epoch_"


def _last_checkpoint(output_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint, ``(folder, epochs done)``; None if there is none.

    Checkpoints with a manifest first (every one :func:`_save_checkpoint` published); else the
    newest bare ``epoch_N`` folder, as runs older than the manifest wrote them.
    """
    folder = output_dir / "checkpoints"
    path = (latest_checkpoint(folder, prefix=_EPOCH_PREFIX)
            or latest_checkpoint(folder, require_manifest=False, prefix=_EPOCH_PREFIX))
    return (path, checkpoint_index(path, _EPOCH_PREFIX)) if path else None


#: The file in each checkpoint holding :func:`_run_settings` of the run that wrote it.
_RUN_SETTINGS = "speaker_run.json"
#: The key in it of the folder the run was in (the relative paths' folder), not a setting.
_STARTED_IN = "_cwd"


def _run_settings(cfg: SpeakerKDConfig) -> dict[str, Any]:
    """What the trained weights depend on, flattened to ``{"section.key": value}``: the
    teacher, the training crops, the student, the active loss terms (and ``ig``'s map settings
    for ``imlkd``) and the optimisation, but not ``training.epochs`` (a resume may extend a
    run), the evaluation sets, the cache folder, the device or the output folder."""
    full = to_dict(cfg)
    out: dict[str, Any] = {"teacher": full["teacher"]}
    for key in ("train_dir", "crop_seconds", "crops_per_utterance"):
        out[f"data.{key}"] = full["data"][key]
    out.update({f"student.{k}": v for k, v in full["student"].items()})
    out["loss.method"] = cfg.loss.method
    out.update({f"loss.{k}": v for k, v in cfg.loss.weights().items()})
    if "class_level" in cfg.loss.weights():
        out["loss.tau"] = cfg.loss.tau
    if cfg.loss.method == "imlkd":
        out.update({f"ig.{k}": v for k, v in cfg.ig.settings().key().items()})
        out["ig.durations"] = full["ig"]["durations"]
    out.update({f"training.{k}": full["training"][k]
                for k in ("batch_size", "lr", "weight_decay", "seed", "max_grad_norm")})
    return out


def check_run_folder(cfg: SpeakerKDConfig, folder_key: str = "training.output_dir"
                     ) -> tuple[Path, int] | None:
    """The checkpoint ``cfg`` resumes from (``(folder, epochs done)``; None: a fresh start),
    checked before any work. ``folder_key`` is the setting the messages offer to change
    (``table.output_dir`` for a run of a table, whose run folders are made from it).

    Raises:
        ValueError: (one line) a fresh run (``training.resume`` false) into a folder holding
            an earlier run's checkpoints (its log and its later checkpoints would mix with
            this run's), a resume whose newest checkpoint does not match its manifest (a
            truncated ``model.safetensors``: refused by name, not replaced by an older one),
            a resume whose checkpoint was trained with other settings
            (:func:`_run_settings`; the run would go on with the new ones and be reported as
            if it had used them throughout), or one whose checkpoint is past
            ``training.epochs`` (its model would be reported as trained for fewer epochs).
    """
    out_dir = Path(cfg.training.output_dir)
    last = _last_checkpoint(out_dir)
    if last is None:
        return None
    if not cfg.training.resume:
        earlier = sorted((p.name for p in (out_dir / "checkpoints").glob(f"{_EPOCH_PREFIX}*")
                          if checkpoint_index(p, _EPOCH_PREFIX) is not None),
                         key=lambda n: checkpoint_index(n, _EPOCH_PREFIX))
        raise ValueError(
            f"{folder_key.split('.')[0]} run folder {str(out_dir)!r} holds checkpoints of an "
            f"earlier run ({', '.join(earlier)}); allowed: --training.resume true to continue "
            f"it, another {folder_key}, or remove that folder to start again")
    if (last[0] / MANIFEST).is_file():  # a bare epoch_N of an older run has none
        try:
            verify_checkpoint(last[0])
        except CheckpointError as err:
            raise ValueError(f"{err}: refusing to resume from it (allowed: remove that folder "
                             "to resume from the checkpoint before it, or another "
                             f"{folder_key})") from err
    if last[1] > cfg.training.epochs:
        raise ValueError(f"{last[0]} has trained {last[1]} epochs, more than training.epochs "
                         f"{cfg.training.epochs}: resuming would report it as a "
                         f"{cfg.training.epochs}-epoch run (allowed: training.epochs >= "
                         f"{last[1]}, or another {folder_key})")
    saved_file = last[0] / _RUN_SETTINGS
    if saved_file.is_file():  # checkpoints written before it was stored are not checked
        saved, now = json.loads(saved_file.read_text()), _run_settings(cfg)
        # relative paths are from the folder that run was in (none before 2026-12-07: here)
        started_in = saved.pop(_STARTED_IN, None)
        # another loss.method has other terms: its weights are not listed one by one; one
        # folder spelt two ways (relative, absolute, a link) is no change (config_changes)
        common = saved.keys() & now.keys()
        changed = config_changes({k: saved[k] for k in common}, {k: now[k] for k in common},
                                 old_folder=started_in if isinstance(started_in, str) else None)
        if changed:
            raise ValueError(f"{last[0]} was trained with other settings; resuming would not "
                             f"continue that run: {'; '.join(changed)} (allowed: the same "
                             f"settings, or another {folder_key})")
    return last


def _save_checkpoint(accelerator, output_dir: Path, epochs_done: int,
                     settings: dict[str, Any], keep: int) -> None:
    """``checkpoints/epoch_N`` through :func:`robustdistill.checkpoints.save_checkpoint`
    (``.tmp-epoch_N``, a manifest, an atomic rename): a kill while saving leaves only the
    ``.tmp-`` folder, which :func:`_last_checkpoint` ignores and the next start deletes. An
    ``epoch_N`` of an older run, beyond the checkpoint this run resumed from, is replaced.
    ``settings`` (:func:`_run_settings`) is stored with it for :func:`check_run_folder`; the
    ``keep`` newest complete checkpoints stay (``training.keep_checkpoints``), with the
    folder the run is in (:data:`_STARTED_IN`: its relative paths are from there)."""
    save_checkpoint(accelerator, output_dir / "checkpoints", epochs_done, epochs_done,
                    state={_RUN_SETTINGS: {**settings, _STARTED_IN: os.getcwd()}}, keep=keep,
                    prefix=_EPOCH_PREFIX, replace=True)


def _logged_epochs(log_path: Path, epochs_done: int) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` up to ``epochs_done`` (the checkpoint a run
    resumes from; 0 for a fresh start); the file is rewritten without later ones, which a run
    killed between its log line and its checkpoint left behind. Lines without an ``epoch``
    (another tool's log in the same folder) are kept, first, and not returned."""
    if not log_path.exists():
        return []
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    ours = [isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in records]
    kept = [r for r, mine in zip(records, ours, strict=True) if mine and r["epoch"] <= epochs_done]
    other = [r for r, mine in zip(records, ours, strict=True) if not mine]
    log_path.write_text("".join(json.dumps(r) + "\n" for r in other + kept))
    return kept


def train_system(cfg: SpeakerKDConfig, teacher: GE2E, crops: list[Crop],
                 eval_sets: dict[str, list[Utterance]] | None = None,
                 stop_after_epochs: int | None = None,
                 skipped_files: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """Train one student (``cfg.loss.method``) and evaluate it.

    Args:
        cfg: the recipe.
        teacher: frozen GE2E.
        crops: training crops, all of one length.
        eval_sets: name -> utterances of speakers unseen in training (None: no evaluation).
        stop_after_epochs: stop (after checkpointing) once this many epochs are done in this
            call, as an interrupted run would (for resume tests).
        skipped_files: ``{set name: {path: reason}}`` of the input files the loaders skipped
            (:func:`load_inputs`); recorded as counts.

    Returns:
        ``{"method", "seed", "config", "epochs": [per-epoch logs], "params", "cache":
        {"hits", "misses"}}`` (the IG map cache lookups of every epoch, before a resume too),
        plus ``"eval": {set: metrics}`` once every epoch is done and
        ``eval_sets`` is given, and ``"skipped_files": {set: {reason: count}}`` when
        ``skipped_files`` names any (also written to ``output_dir/result.json``).

    Raises:
        ValueError: crops of different lengths, a test speaker seen in training, a run folder
            :func:`check_run_folder` refuses (before anything is written), or a launch among
            several processes (it runs in one:
            :func:`robustdistill.processes.require_single_process`).
        FloatingPointError: an epoch whose summed losses are not finite (NaN/Inf); the
            epoch is neither logged nor checkpointed.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    require_single_process("robustdistill train-speaker")
    t = cfg.training
    out_dir = Path(t.output_dir)
    last = check_run_folder(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    lengths = {len(c.audio) for c in crops}
    if len(lengths) != 1:
        raise ValueError(f"training crops must share one length, got {sorted(lengths)}")
    num_samples = lengths.pop()
    speakers = sorted({c.speaker for c in crops})
    for name, utts in (eval_sets or {}).items():
        check_disjoint(speakers, [u.speaker for u in utts], name)
    index = {s: i for i, s in enumerate(speakers)}
    labels = torch.tensor([index[c.speaker] for c in crops])
    targets = teacher_targets(teacher, crops, labels, len(speakers))

    set_seed(t.seed)
    accelerator = Accelerator(cpu=t.cpu)
    model = build_student(cfg, len(speakers), targets.embeddings.shape[1])
    optimizer = _optimizer(model, t)
    model, optimizer = accelerator.prepare(model, optimizer)
    start_epoch = 0
    if accelerator.is_main_process:
        remove_incomplete(out_dir / "checkpoints")  # what a kill while saving left
    log_path = out_dir / "metrics.jsonl"
    history = []
    if last is not None:  # check_run_folder: resuming this run with its own settings
        accelerator.load_state(str(last[0]))
        start_epoch = last[1]
        history = _logged_epochs(log_path, start_epoch)
        logger.info("resumed from %s (epoch %d)", last[0], start_epoch)
    elif accelerator.is_main_process:
        _logged_epochs(log_path, 0)  # a log left by a run killed before its first checkpoint
    if accelerator.is_main_process:
        record_environment(out_dir, start_epoch, unit="epoch")

    weights = cfg.loss.weights()
    settings = cfg.ig.settings()
    cache = AttributionCache(cfg.ig.cache_dir if cfg.ig.use_cache else None)
    teacher.cached_fingerprint = teacher.fingerprint
    bounds = segment_bounds(num_samples, cfg.ig.durations)
    unwrapped = accelerator.unwrap_model(model)
    student_frames = int(unwrapped.encoder.frame_lengths(torch.tensor([num_samples]))[0])
    assign = map_targets(bounds, student_frames, unwrapped.samples_per_frame)
    all_audio = torch.from_numpy(np.stack([c.audio for c in crops]))
    done_here = 0
    for epoch in range(start_epoch, t.epochs):
        model.train()
        order = torch.randperm(len(crops), generator=torch.Generator().manual_seed(
            t.seed * 100_003 + epoch))
        hits0, misses0, t0 = cache.hits, cache.misses, time.perf_counter()
        ig_seconds, sums, deltas, steps = 0.0, {}, [], 0
        for i in range(0, len(order), t.batch_size):
            idx = order[i:i + t.batch_size]
            if len(idx) < 2:  # the batch-level loss and batch norm need two crops
                continue
            parts = {}
            if "map" in weights:
                t_ig = time.perf_counter()
                maps = attribute_segments(teacher, [crops[j].audio for j in idx],
                                          targets.centroids[labels[idx]], bounds, settings, cache)
                ig_seconds += time.perf_counter() - t_ig
                deltas += [abs(m.delta) / max(abs(m.score_gap), 1e-12) for row in maps
                           for m in row]
                teacher_maps = [torch.from_numpy(np.stack([row[s].map for row in maps]))
                                for s in range(len(bounds))]
            out = model(all_audio[idx].to(accelerator.device))
            emb = out.embedding
            parts["ce"] = unwrapped.classifier(emb, labels[idx].to(emb.device))
            if "class_level" in weights:
                parts["class_level"] = class_loss(unwrapped.logits(emb),
                                                  targets.logits[idx].to(emb.device), cfg.loss.tau)
            if "instance" in weights:
                parts["instance"] = instance_loss(unwrapped.project(emb),
                                                  targets.embeddings[idx].to(emb.device))
            if "batch_level" in weights:
                parts["batch_level"] = batch_loss(emb, targets.embeddings[idx].to(emb.device))
            if "map" in weights:
                parts["map"] = _student_map_loss(out.map_logits, teacher_maps, assign)
            loss = sum(weights[k] * v for k, v in parts.items())
            optimizer.zero_grad()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
            optimizer.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            steps += 1
        record = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0,
                  "ig_seconds": ig_seconds, "cache_hits": cache.hits - hits0,
                  "cache_misses": cache.misses - misses0,
                  **{k: v / max(steps, 1) for k, v in sums.items()}}
        if deltas:
            record["ig_relative_gap"] = float(np.mean(deltas))
        if not all(math.isfinite(v) for v in sums.values()):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}: {sums}")
        history.append(record)
        with log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("epoch %s", json.dumps(record))
        _save_checkpoint(accelerator, out_dir, epoch + 1, _run_settings(cfg),
                         t.keep_checkpoints)
        done_here += 1
        if stop_after_epochs is not None and done_here >= stop_after_epochs:
            break
    result = {"method": cfg.loss.method, "seed": t.seed, "config": to_dict(cfg),
              "epochs": history,
              "params": sum(p.numel() for n, p in unwrapped.named_parameters()
                            if not n.startswith(("projection", "map_head", "classifier"))),
              # the whole run's lookups (history holds the epochs before a resume too)
              "cache": {"hits": sum(e.get("cache_hits", 0) for e in history),
                        "misses": sum(e.get("cache_misses", 0) for e in history)}}
    if any((skipped_files or {}).values()):
        result["skipped_files"] = {name: skipped_counts(files)
                                   for name, files in skipped_files.items() if files}
    finished = start_epoch + done_here >= t.epochs
    if eval_sets and finished:
        result["eval"] = evaluate_student(unwrapped, eval_sets, cfg.data)
    if finished and accelerator.is_main_process:
        _export_student(unwrapped, out_dir / "student")
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _export_student(model: SpeakerModel, folder: Path) -> None:
    """``RUN/student``: the trained embedder (:class:`SpeakerEmbedder`), for ``robustdistill
    card --kind speaker`` and for use; a student that cannot be exported (on a Whisper
    upstream) is logged, and the run's results stand."""
    try:
        embedder = SpeakerEmbedder.from_speaker_model(model)
    except ValueError as err:
        logger.warning("student not exported to %s: %s", folder, err)
        return
    embedder.save_pretrained(folder)
    logger.info("student (embedder) written to %s", folder)


# ---------------------------------------------------------------------------- table
def load_eval_sets(cfg: DataConfig, skipped: dict[str, dict[str, str]] | None = None
                   ) -> dict[str, list[Utterance]]:
    """The configured verification sets (``test_other``, ``fsdd``).

    Args:
        cfg: the data section.
        skipped: if given, ``skipped[set name]`` is filled with ``{path: reason}`` of the
            files skipped as unusable (each is also logged).

    Raises:
        FileNotFoundError: a configured folder that does not exist or holds no audio.
        SpeakerDataError: a set unusable once its bad files are skipped (:mod:`.data`).
    """
    skipped = {} if skipped is None else skipped
    sets = {}
    if cfg.test_other_dir:
        sets["test_other"] = load_speaker_folders(
            cfg.test_other_dir, skipped=skipped.setdefault("test_other", {}))
    if cfg.fsdd_dir:
        sets["fsdd"] = load_fsdd(cfg.fsdd_dir, cfg.fsdd_per_speaker,
                                 skipped=skipped.setdefault("fsdd", {}))
    return sets


class TeacherLoadError(ValueError):
    """A ``teacher`` file that is not GE2E weights (not a PyTorch file, or another model)."""


def load_teacher(path: str | Path | None) -> GE2E:
    """The frozen GE2E teacher (:meth:`GE2E.from_resemblyzer`), with one-line errors.

    Args:
        path: a GE2E ``pretrained.pt``; None: the installed resemblyzer package's.

    Raises:
        FileNotFoundError: no such file.
        TeacherLoadError: the file is not GE2E weights (the message names it).
    """
    if path is not None and not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"teacher file not found: {path} (a GE2E pretrained.pt; null: "
                                "the installed resemblyzer package's)")
    try:
        return GE2E.from_resemblyzer(None if path is None else Path(path).expanduser())
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - torch.load of a foreign file raises anything
        raise TeacherLoadError(f"teacher {path or '(resemblyzer)'} is not a GE2E weights file "
                               f"({type(err).__name__}: {first_line(err)[:200]})") from err


def load_inputs(cfg: SpeakerKDConfig, skipped: dict[str, dict[str, str]] | None = None
                ) -> tuple[list[Crop], dict[str, list[Utterance]]]:
    """The training crops and verification sets of ``cfg.data``, checked at start-up: the
    sets' speakers must not be training speakers.

    Args:
        cfg: the recipe.
        skipped: if given, filled with ``{set name: {path: reason}}`` (``train``,
            ``test_other``, ``fsdd``) of the files skipped as unusable.

    Returns:
        ``(crops, sets)``.

    Raises:
        FileNotFoundError: a configured folder that does not exist or holds no audio.
        SpeakerDataError: a set unusable once its bad files are skipped, or a verification
            speaker that is also a training speaker.
    """
    skipped = {} if skipped is None else skipped
    d = cfg.data
    crops = load_train_crops(d.train_dir, d.crop_seconds, d.crops_per_utterance,
                             skipped=skipped.setdefault("train", {}))
    sets = load_eval_sets(d, skipped)
    speakers = {c.speaker for c in crops}
    for name, utts in sets.items():
        try:
            check_disjoint(speakers, [u.speaker for u in utts], name)
        except ValueError as err:
            raise SpeakerDataError(str(err)) from None
    return crops, sets


def load_run_inputs(cfg: SpeakerKDConfig
                    ) -> tuple[GE2E, list[Crop], dict[str, list[Utterance]],
                               dict[str, dict[str, str]]]:
    """What ``train`` and ``table`` work on: ``(teacher, crops, sets, skipped)``
    (:func:`load_teacher`, :func:`load_inputs`; ``skipped`` as filled by the latter).

    Raises:
        FileNotFoundError / TeacherLoadError / SpeakerDataError: as those two.
    """
    skipped: dict[str, dict[str, str]] = {}
    teacher = load_teacher(cfg.teacher)
    crops, sets = load_inputs(cfg, skipped)
    return teacher, crops, sets, skipped


def _mean_std(values: list[float]) -> str:
    a = 100.0 * np.asarray(values)
    return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if len(a) > 1 else f"{a.mean():.2f}"


def _dcf(values: list[float]) -> str:
    a = np.asarray(values)
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if len(a) > 1 else f"{a.mean():.3f}"


def format_table(results: dict[str, Any]) -> str:
    """Markdown table: EER (%) and minDCF, mean ± std over seeds, per set and system."""
    sets = list(results["teacher"]["eval"])
    names = {"teacher": "GE2E teacher (Resemblyzer)", "none": "student, no KD",
             "logit_kd": "student, vanilla logit KD", "embedding_kd": "student, embedding KD",
             "imlkd": "student, IML-KD"}
    head = "| system | params | seeds | " + " | ".join(
        f"{s} EER % | {s} minDCF" for s in sets) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(sets))]
    t = results["teacher"]
    lines.append(f"| {names['teacher']} | {t['params']:,} | - | " + " | ".join(
        f"{100 * t['eval'][s]['eer']:.2f} | {t['eval'][s]['min_dcf']:.3f}" for s in sets) + " |")
    for method, runs in results["systems"].items():
        cells = []
        for s in sets:
            cells.append(_mean_std([r["eval"][s]["eer"] for r in runs]))
            cells.append(_dcf([r["eval"][s]["min_dcf"] for r in runs]))
        lines.append(f"| {names.get(method, method)} | {runs[0]['params']:,} | {len(runs)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _run_key(config: dict | None) -> dict | None:
    """What identifies a run: its config without the ``table`` section, the output folder (the
    run is found there), ``training.resume`` (how the run got to its end, not what it trained:
    a table continued with ``--training.resume true`` reuses the runs it had finished, and
    they are reused again without it), ``training.keep_checkpoints`` (what stays on disk, not
    what was trained; runs written before it existed are reused) and ``ig`` for the systems
    that use no maps."""
    if config is None:
        return None
    drop = {"table"} if config["loss"]["method"] == "imlkd" else {"table", "ig"}
    key = {k: v for k, v in config.items() if k not in drop}
    key["training"] = {k: v for k, v in key.get("training", {}).items()
                       if k not in ("output_dir", "resume", "keep_checkpoints")}
    return key


def _table_runs(cfg: SpeakerKDConfig) -> list[tuple[str, SpeakerKDConfig]]:
    """``(method, run config)`` of every run of the table, seed-major; each run's folder is
    ``table.output_dir/<method>_seed<seed>``."""
    import copy

    runs = []
    for seed in cfg.table.seeds:
        for method in cfg.table.methods:
            run_cfg = copy.deepcopy(cfg)
            run_cfg.loss.method = method
            run_cfg.training.seed = seed
            run_cfg.training.output_dir = str(Path(cfg.table.output_dir) / f"{method}_seed{seed}")
            runs.append((method, run_cfg))
    return runs


def _finished_run(run_cfg: SpeakerKDConfig) -> dict[str, Any] | None:
    """The ``result.json`` of a finished, evaluated run with the same config (:func:`_run_key`)
    in ``run_cfg.training.output_dir``, which the table reuses; else None."""
    done = Path(run_cfg.training.output_dir) / "result.json"
    previous = json.loads(done.read_text()) if done.is_file() else {}
    if previous.get("eval") and _run_key(previous.get("config")) == _run_key(to_dict(run_cfg)):
        return previous
    return None


def run_table(cfg: SpeakerKDConfig,
              inputs: tuple[Any, list[Any], dict[str, Any], dict[str, dict[str, str]]]
              | None = None) -> dict[str, Any]:
    """Teacher + every ``table.methods`` x ``table.seeds``; writes ``results.json`` and
    ``table.md`` in ``table.output_dir``. A run whose ``result.json`` holds an evaluation and
    the same resolved config is reused, not retrained (a rerun of the table only trains what
    is missing).

    Args:
        inputs: ``(teacher, crops, sets, skipped)`` already loaded (:func:`load_run_inputs`),
            so that a caller can report input errors before any training; ``None`` loads them
            here.

    Raises:
        FileNotFoundError / TeacherLoadError / SpeakerDataError: while loading ``inputs``.
    """
    root = Path(cfg.table.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    teacher, crops, sets, skipped = load_run_inputs(cfg) if inputs is None else inputs
    results: dict[str, Any] = {
        "teacher": {"params": sum(p.numel() for p in teacher.parameters()),
                    "eval": evaluate_teacher(teacher, sets, cfg.data)},
        "systems": {}, "train_crops": len(crops),
        "eval_items": {k: len(v) for k, v in sets.items()}}
    if any(skipped.values()):
        results["skipped_files"] = {k: skipped_counts(v) for k, v in skipped.items() if v}
    logger.info("teacher %s", results["teacher"])
    for method, run_cfg in _table_runs(cfg):  # seed-major: an interrupted table has every system
        result = _finished_run(run_cfg)
        if result is not None:
            logger.info("reusing the finished run %s", run_cfg.training.output_dir)
        else:
            result = train_system(run_cfg, teacher, crops, sets, skipped_files=skipped)
        results["systems"].setdefault(method, []).append(result)
        (root / "results.json").write_text(json.dumps(results, indent=1))
    (root / "table.md").write_text(format_table(results))
    return results


def load_ig_inputs(cfg: SpeakerKDConfig, crops_per_utterance: int | None = None
                   ) -> tuple[GE2E, list[Crop]]:
    """What ``cache`` and ``gap`` attribute: the teacher (its fingerprint computed once) and
    the training crops.

    Args:
        cfg: the recipe.
        crops_per_utterance: None: ``cfg.data.crops_per_utterance``.

    Raises:
        FileNotFoundError / TeacherLoadError / SpeakerDataError: as :func:`load_teacher` and
            :func:`~.data.load_train_crops`.
    """
    teacher = load_teacher(cfg.teacher)
    teacher.cached_fingerprint = teacher.fingerprint
    per_utterance = (cfg.data.crops_per_utterance if crops_per_utterance is None
                     else crops_per_utterance)
    crops = load_train_crops(cfg.data.train_dir, cfg.data.crop_seconds, per_utterance)
    return teacher, crops


def _attribution_targets(cfg: SpeakerKDConfig, teacher: GE2E, crops: list[Crop]
                         ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``(centroid of each crop's speaker, segment bounds)``: what the maps of ``crops``
    explain (the teacher runs on every crop)."""
    speakers = sorted({c.speaker for c in crops})
    labels = torch.tensor([speakers.index(c.speaker) for c in crops])
    targets = teacher_targets(teacher, crops, labels, len(speakers))
    return targets.centroids[labels], segment_bounds(len(crops[0].audio), cfg.ig.durations)


def fill_cache(cfg: SpeakerKDConfig, batch_size: int = 32,
               inputs: tuple[GE2E, list[Crop]] | None = None) -> dict[str, Any]:
    """Compute (or find) the teacher's map of every segment of every training crop.

    Args:
        inputs: ``(teacher, crops)`` already loaded (:func:`load_ig_inputs`), so that a caller
            can report input errors before any work; ``None`` loads them here.

    Returns:
        ``{"seconds", "hits", "misses", "maps", "relative_gap_mean", "relative_gap_max"}``;
        the relative gap is ``|delta| / |F(x) - F(baseline)|`` (completeness).

    Raises:
        FileNotFoundError / TeacherLoadError / SpeakerDataError: while loading ``inputs``.
    """
    teacher, crops = load_ig_inputs(cfg) if inputs is None else inputs
    centroids, bounds = _attribution_targets(cfg, teacher, crops)
    cache = AttributionCache(cfg.ig.cache_dir)
    gaps, t0 = [], time.perf_counter()
    for i in range(0, len(crops), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(crops)))
        maps = attribute_segments(teacher, [crops[j].audio for j in idx], centroids[idx],
                                  bounds, cfg.ig.settings(), cache)
        gaps += [abs(m.delta) / max(abs(m.score_gap), 1e-12) for row in maps for m in row]
        logger.info("maps of %d / %d crops, %.0f s", int(idx[-1]) + 1, len(crops),
                    time.perf_counter() - t0)
    return {"seconds": time.perf_counter() - t0, "hits": cache.hits, "misses": cache.misses,
            "maps": len(gaps), "relative_gap_mean": float(np.mean(gaps)),
            "relative_gap_max": float(np.max(gaps))}


GAP_STEPS = "4,8,16,32"  # ``gap --steps`` when not given
GAP_CROPS = 4  # ``gap --crops`` when not given


def parse_gap_steps(text: str) -> list[int]:
    """The ``n_steps`` values of ``gap --steps`` (``"4,8,16,32"``), sorted, each once.

    Raises:
        ValueError: no value, or one that is not an integer ``>= 2`` (captum's quadratures
            need two points); the message names ``--steps``.
    """
    try:
        steps = [int(x) for x in text.split(",")]
    except ValueError:
        steps = []
    if not steps or min(steps) < 2:
        raise ValueError(f"--steps must be comma-separated integers >= 2 (IG n_steps), got "
                         f"{text!r}")
    return sorted(set(steps))


def completeness_by_steps(cfg: SpeakerKDConfig, steps: list[int], num_crops: int,
                          inputs: tuple[GE2E, list[Crop]] | None = None
                          ) -> dict[int, dict[str, float]]:
    """Completeness gap ``|delta| / |F(x) - F(baseline)|`` of the maps of the first
    ``num_crops`` training crops (one per utterance; all of them when there are fewer) at each
    ``n_steps`` (no cache): mean and max over segments, and the mean L1 distance of the maps to
    those of the largest ``n_steps``.

    Args:
        steps: the ``n_steps`` values (each ``>= 2``).
        num_crops: how many crops (``>= 1``).
        inputs: ``(teacher, crops)`` already loaded (:func:`load_ig_inputs` with one crop per
            utterance); ``None`` loads them here.

    Raises:
        ValueError: no ``steps``, one below 2, or ``num_crops < 1`` (before any loading).
        FileNotFoundError / TeacherLoadError / SpeakerDataError: while loading ``inputs``.
    """
    if not steps or min(steps) < 2:
        raise ValueError(f"steps must be IG n_steps values >= 2, got {steps}")
    if num_crops < 1:
        raise ValueError(f"num_crops must be >= 1, got {num_crops}")
    teacher, crops = load_ig_inputs(cfg, 1) if inputs is None else inputs
    crops = crops[:num_crops]
    centroids, bounds = _attribution_targets(cfg, teacher, crops)
    maps, out = {}, {}
    for n in sorted(steps):
        settings = IGSettings(n, cfg.ig.baseline, cfg.ig.noise_dbfs, cfg.ig.method,
                              cfg.ig.internal_batch_size)
        t0 = time.perf_counter()
        rows = attribute_segments(teacher, [c.audio for c in crops], centroids, bounds,
                                  settings, AttributionCache(None))
        gaps = [abs(m.delta) / max(abs(m.score_gap), 1e-12) for row in rows for m in row]
        maps[n] = [m.map for row in rows for m in row]
        out[n] = {"relative_gap_mean": float(np.mean(gaps)),
                  "relative_gap_max": float(np.max(gaps)),
                  "seconds_per_crop": (time.perf_counter() - t0) / len(crops)}
    ref = maps[max(steps)]
    for n in out:
        out[n]["map_l1_to_max_steps"] = float(np.mean([np.abs(a - b).sum()
                                                       for a, b in zip(maps[n], ref, strict=True)]))
    return out


def main(argv: list[str]) -> int:
    """``robustdistill train-speaker {train,table,cache,gap} --config FILE [--section.key value]``.

    ``cache`` computes every training map into ``ig.cache_dir`` once and prints its time and
    completeness gaps; ``gap --steps 4,8,16,32 --crops 4`` prints the completeness gap of a few
    crops' maps at each ``n_steps`` (defaults :data:`GAP_STEPS`, :data:`GAP_CROPS`; all the
    crops when there are fewer). ``--steps`` and ``--crops`` are read by ``gap`` only: the other
    actions refuse them rather than ignore them.

    Start-up problems end in a one-line parser error (exit 2), before any training or
    attribution, in every action: a config that is missing, empty, not valid YAML or holds a
    bad value; ``--steps`` or ``--crops`` given to an action other than ``gap``; ``gap``'s
    ``--steps`` not integers ``>= 2`` or ``--crops`` below 1; ``cache``
    with ``ig.use_cache false``; an output or cache folder that is a file; a missing or foreign
    teacher file (or no resemblyzer package); a missing ``student.upstream`` folder, or one that
    is not a model folder (no readable ``config.json``); a missing
    data folder; a set unusable once its bad files are skipped; a verification speaker seen in
    training; a fresh run into a run folder with an earlier run's checkpoints, or a resume of
    one trained with other settings (:func:`check_run_folder`). An error once the work has
    started (a ``FileNotFoundError`` hours in) keeps its traceback. Unusable audio files are skipped with
    a warning naming each (counted in ``result.json``'s ``skipped_files``)."""
    from robustdistill.config_reference import config_reference

    parser = argparse.ArgumentParser(
        prog="robustdistill train-speaker", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="IML-KD speaker students. Every key of the recipe can be overridden as "
                    "--section.key value; the keys, their types and defaults:",
        epilog=config_reference(SpeakerKDConfig))
    parser.add_argument("action", choices=["train", "table", "cache", "gap"])
    parser.add_argument("--config", required=True,
                        help="YAML recipe (configs/imlkd_speaker.yaml); other --section.key "
                             "value pairs override it")
    parser.add_argument("--steps", help="gap only: the IG n_steps values (each >= 2), "
                        f"comma-separated (default {GAP_STEPS})")
    parser.add_argument("--crops", type=int, help=f"gap only: number of crops (>= 1, default "
                        f"{GAP_CROPS}; all of them when there are fewer)")
    args, rest = parser.parse_known_args(argv)
    # None: not given. Only gap reads them; elsewhere they would be ignored, silently.
    if args.action != "gap" and (given := [f"--{k}" for k in ("steps", "crops")
                                           if getattr(args, k) is not None]):
        parser.error(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} read by gap "
                     f"only, not by {args.action}")
    try:
        require_single_process("robustdistill train-speaker")
        cfg = load_config(args.config, SpeakerKDConfig, parse_overrides(rest))
        if cfg.student.kind == "upstream":
            check_model_path(cfg.student.upstream, "student.upstream",
                             "robustdistill create-student --teacher ID_OR_DIR --out DIR")
            _check_model_folder(cfg.student.upstream, "student.upstream")
        steps: list[int] = []
        num_crops = GAP_CROPS if args.crops is None else args.crops
        if args.action == "gap":
            steps = parse_gap_steps(GAP_STEPS if args.steps is None else args.steps)
            if num_crops < 1:
                raise ValueError(f"--crops must be >= 1, got {num_crops}")
        if args.action == "cache" and not cfg.ig.use_cache:
            raise ValueError("cache fills ig.cache_dir, but ig.use_cache is false")
        for key, folder in _folders_written(cfg, args.action):
            _check_folder(key, folder)
        # a run folder holding another run: refused now, not after the inputs are loaded
        if args.action == "train":
            check_run_folder(cfg)
        if args.action == "table":
            for _, run_cfg in _table_runs(cfg):
                if _finished_run(run_cfg) is None:
                    check_run_folder(run_cfg, "table.output_dir")
    except (ValueError, FileNotFoundError) as err:  # ConfigError is a ValueError
        parser.error(str(err))
    # Inputs are loaded first: an input error ends in one line, not a traceback. The work runs
    # outside that handler, so an error hours in (a cache folder deleted) keeps its traceback.
    if args.action == "gap":
        inputs = _load_or_exit(parser, lambda: load_ig_inputs(cfg, 1))
        print(json.dumps(completeness_by_steps(cfg, steps, num_crops, inputs), indent=1))
        return 0
    if args.action == "cache":
        inputs = _load_or_exit(parser, lambda: load_ig_inputs(cfg))
        print(json.dumps(fill_cache(cfg, inputs=inputs), indent=1))
        return 0
    run_inputs = _load_or_exit(parser, lambda: load_run_inputs(cfg))
    if args.action == "table":
        print(format_table(run_table(cfg, run_inputs)))
        return 0
    teacher, crops, sets, skipped = run_inputs
    result = train_system(cfg, teacher, crops, sets, skipped_files=skipped)
    print(json.dumps(result.get("eval", {}), indent=1))
    return 0


def _folders_written(cfg: SpeakerKDConfig, action: str) -> list[tuple[str, str]]:
    """``(key, folder)`` of each folder ``action`` creates (``gap`` creates none; every run
    of ``train`` and ``table`` opens the map cache, whatever its method)."""
    if action == "gap":
        return []
    out = [("ig.cache_dir", cfg.ig.cache_dir)] if cfg.ig.use_cache else []
    if action == "train":
        out.append(("training.output_dir", cfg.training.output_dir))
    if action == "table":
        out.append(("table.output_dir", cfg.table.output_dir))
    return out


def _check_folder(key: str, folder: str) -> None:
    """Raise ValueError naming ``key`` when ``folder`` or the nearest of its existing parents
    is not a folder (``mkdir`` would fail with a traceback once the work starts)."""
    if (blocking := file_blocking_folder(folder)) is not None:
        raise ValueError(f"{key} {folder!r}: {blocking} is a file, not a folder")


def _check_model_folder(name: str, key: str) -> None:
    """Raise ValueError naming ``key`` when ``name`` is a local folder whose ``config.json``
    ``transformers`` cannot read as a model's (no config, no ``model_type``, an architecture it
    does not know, such as a train-se student): found at start-up, not once the teacher's
    targets are computed and the student is built."""
    if not Path(name).expanduser().is_dir():
        return  # a hub id: resolved when the student is built
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ValueError(f"{key} {name!r} is not a model folder: "
                         f"{first_line(err) or type(err).__name__}") from err


def _load_or_exit(parser: argparse.ArgumentParser, load: Callable[[], T]) -> T:
    """``load()``; an input error (a missing folder or teacher, no usable audio, resemblyzer
    not installed) ends the command in one usage line (exit 2) instead of a traceback."""
    try:
        return load()
    except (FileNotFoundError, TeacherLoadError, SpeakerDataError) as err:
        parser.error(str(err))


_ = from_dict  # re-exported for tests building configs from dicts
