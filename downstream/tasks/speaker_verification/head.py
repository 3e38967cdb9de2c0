"""The x-vector-style speaker embedding head with an additive-margin softmax.

* x-vector architecture ("X-Vectors: Robust DNN Embeddings for Speaker Recognition", Snyder et
  al., ICASSP 2018), made light as in SUPERB's SV head: a few TDNN layers (dilated 1-D
  convolutions over frames, ReLU, batch norm), statistics pooling (mean and standard deviation
  over real frames), a linear embedding layer.
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

__all__ = ["AMSoftmax", "XVectorHead"]


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

    Raises:
        ValueError: kernel_sizes and dilations of different lengths, or empty.
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
    ) -> None:
        super().__init__()
        if len(kernel_sizes) != len(dilations) or not kernel_sizes:
            raise ValueError(f"need one dilation per kernel size, got {kernel_sizes}, {dilations}")
        layers, width = [], input_size
        for k, d in zip(kernel_sizes, dilations, strict=True):
            layers.append(nn.ModuleList([
                nn.Conv1d(width, channels, k, dilation=d, padding=d * (k - 1) // 2),
                nn.BatchNorm1d(channels),
            ]))
            width = channels
        self.tdnn = nn.ModuleList(layers)
        self.embedding = nn.Linear(2 * channels, embedding_dim)
        self.loss = AMSoftmax(embedding_dim, num_speakers, margin, scale)

    def embed(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` features -> ``(B, E)`` speaker embeddings (not normalised).

        Padded frames are zeroed after every layer, so they reach real frames only through
        one kernel's border, and never enter the statistics.
        """
        mask = frame_mask(frame_lengths, features.shape[1]).unsqueeze(1)  # (B, 1, T)
        x = features.transpose(1, 2) * mask  # (B, D, T)
        for conv, norm in self.tdnn:
            x = norm(F.relu(conv(x))) * mask
        return self.embedding(masked_mean_std(x.transpose(1, 2), frame_lengths))

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        """AM-softmax training loss of a batch with ``(B,)`` speaker indices."""
        return self.loss(self.embed(features, frame_lengths), targets)
