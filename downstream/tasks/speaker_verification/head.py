"""The x-vector-style speaker embedding head with an additive-margin softmax.

* x-vector architecture ("X-Vectors: Robust DNN Embeddings for Speaker Recognition", Snyder et
  al., ICASSP 2018), made light as in SUPERB's SV head: a few TDNN layers (dilated 1-D
  convolutions over frames, ReLU, batch norm), statistics pooling (mean and standard deviation
  over real frames), a linear embedding layer.
* Batch norm over real frames only (:class:`MaskedBatchNorm1d`, ``batch_norm: masked``): in
  training, an utterance shorter than the crop is zero-padded, and torch's ``BatchNorm1d``
  would take those padded positions into the batch and running statistics (``batch_norm:
  padded``, the behaviour before 2026-12-07). s3prl's ``sv_voxceleb1`` x-vector has no batch
  norm by default (``batch_norm: False``); with it on, its ``nn.BatchNorm1d`` sees the padding.
  In evaluation both use the running statistics, so an embedding never depends on its batch.
* AM-softmax ("Additive Margin Softmax for Face Verification", Wang et al., arXiv:1801.05599):
  logits ``s * (cos(theta_y) - m)`` for the true class and ``s * cos(theta_j)`` for the others,
  with L2-normalised embeddings and class weights.

Legend: ``B`` batch, ``T`` frames, ``D`` feature width, ``C`` TDNN channels, ``E`` embedding
width, ``K`` training speakers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from downstream.pooling import frame_mask, masked_mean_std

__all__ = ["AMSoftmax", "MaskedBatchNorm1d", "XVectorHead"]

#: ``batch_norm`` values of :class:`XVectorHead`.
BATCH_NORM_MODES = ("masked", "padded")


class AMSoftmax(nn.Module):
    """Additive-margin softmax loss ("Additive Margin Softmax for Face Verification",
    arXiv:1801.05599).

    Args:
        embedding_dim: ``E``.
        num_classes: ``K``.
        margin: additive cosine margin ``m``.
        scale: logit scale ``s``.

    Raises:
        ValueError: ``num_classes`` below 2.
    """

    def __init__(self, embedding_dim: int, num_classes: int, margin: float = 0.2,
                 scale: float = 30.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"AM-softmax needs at least two classes, got {num_classes}")
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)
        self.margin = margin
        self.scale = scale

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, E)`` -> ``(B, K)`` cosine similarities with the class weights."""
        return F.normalize(embeddings, dim=-1) @ F.normalize(self.weight, dim=-1).T

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean AM-softmax loss of ``(B, E)`` embeddings with ``(B,)`` class indices."""
        cosine = self.cosine(embeddings)
        margin = F.one_hot(targets, cosine.shape[-1]).to(cosine.dtype) * self.margin
        return F.cross_entropy(self.scale * (cosine - margin), targets)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` over ``(B, C, T)`` whose training statistics count real frames only.

    In training, the batch mean and (biased) variance of each channel are taken over the
    positions where ``mask`` is True, and the running statistics are updated from them as
    torch's batch norm does (momentum, or a cumulative average when ``momentum`` is None;
    unbiased running variance). Outputs at padded positions are computed too (the caller zeroes
    them). In eval mode, or without a mask, it is ``BatchNorm1d``. Same parameters and buffers
    as ``BatchNorm1d`` (heads saved with either load into the other).

    Raises:
        ValueError: (forward) a mask with fewer than two real positions in training (no
            variance), or that does not broadcast to ``(B, 1, T)``.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, T)`` features and ``(B, 1, T)`` bool / 0-1 mask -> ``(B, C, T)``."""
        if mask is None or not self.training:
            return super().forward(x)
        if mask.shape != (x.shape[0], 1, x.shape[2]):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit features of shape "
                             f"{tuple(x.shape)} (expected (B, 1, T))")
        weight = mask.to(x.dtype)
        count = weight.sum()
        if count < 2:
            raise ValueError(f"batch norm needs at least two real frames, got {int(count)}")
        mean = (x * weight).sum(dim=(0, 2)) / count  # (C,)
        var = (((x - mean[:, None]) ** 2) * weight).sum(dim=(0, 2)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                          else self.momentum)
                self.running_mean.mul_(1 - factor).add_(factor * mean)
                self.running_var.mul_(1 - factor).add_(factor * var * count / (count - 1))
        y = (x - mean[:, None]) * torch.rsqrt(var[:, None] + self.eps)
        if self.affine:
            y = y * self.weight[:, None] + self.bias[:, None]
        return y


class XVectorHead(nn.Module):
    """TDNN layers + statistics pooling + embedding, with an AM-softmax over training speakers.

    Args:
        input_size: ``D``.
        num_speakers: ``K`` training speakers.
        channels: ``C``.
        kernel_sizes: one per TDNN layer (odd sizes keep frames aligned).
        dilations: one per TDNN layer.
        embedding_dim: ``E``.
        margin / scale: AM-softmax ``m`` and ``s``.
        batch_norm: ``"masked"``: training batch norm statistics over real frames only
            (:class:`MaskedBatchNorm1d`); ``"padded"``: torch's ``BatchNorm1d``, whose
            training statistics include the zero-padded frames of utterances shorter than the
            crop (the behaviour before 2026-12-07). Evaluation is the same for both.

    Raises:
        ValueError: kernel_sizes and dilations of different lengths, or empty; an unknown
            ``batch_norm``.
    """

    def __init__(
        self,
        input_size: int,
        num_speakers: int,
        channels: int = 256,
        kernel_sizes: Sequence[int] = (5, 3, 3),
        dilations: Sequence[int] = (1, 2, 3),
        embedding_dim: int = 128,
        margin: float = 0.2,
        scale: float = 30.0,
        batch_norm: str = "masked",
    ) -> None:
        super().__init__()
        if batch_norm not in BATCH_NORM_MODES:
            raise ValueError(f"batch_norm must be one of {', '.join(BATCH_NORM_MODES)}, got "
                             f"{batch_norm!r}")
        self.batch_norm = batch_norm
        if len(kernel_sizes) != len(dilations) or not kernel_sizes:
            raise ValueError(f"need one dilation per kernel size, got {kernel_sizes}, {dilations}")
        layers, width = [], input_size
        for k, d in zip(kernel_sizes, dilations, strict=True):
            layers.append(nn.ModuleList([
                nn.Conv1d(width, channels, k, dilation=d, padding=d * (k - 1) // 2),
                MaskedBatchNorm1d(channels),
            ]))
            width = channels
        self.tdnn = nn.ModuleList(layers)
        self.embedding = nn.Linear(2 * channels, embedding_dim)
        self.loss = AMSoftmax(embedding_dim, num_speakers, margin, scale)

    def embed(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` features -> ``(B, E)`` speaker embeddings (not normalised).

        Padded frames are zeroed after every layer, so they reach real frames only through
        one kernel's border (as the zero padding of a lone utterance), and never enter the
        pooling statistics, nor (``batch_norm="masked"``) the batch norm statistics.
        """
        mask = frame_mask(frame_lengths, features.shape[1]).unsqueeze(1)  # (B, 1, T)
        x = features.transpose(1, 2) * mask  # (B, D, T)
        norm_mask = mask if self.batch_norm == "masked" else None
        for conv, norm in self.tdnn:
            x = norm(F.relu(conv(x)), norm_mask) * mask
        return self.embedding(masked_mean_std(x.transpose(1, 2), frame_lengths))

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        """AM-softmax training loss of a batch with ``(B,)`` speaker indices."""
        return self.loss(self.embed(features, frame_lengths), targets)
