"""The SUPERB featurizer: a learned softmax-weighted sum of an upstream's hidden states.

Implements the layer-weighting of "SUPERB: Speech processing Universal PERformance Benchmark"
(Yang et al., arXiv:2105.01051), as s3prl's ``Featurizer``: one scalar per layer, softmax over
layers, optional per-layer layer normalisation (no affine parameters) before the sum. The
learned weights are part of every downstream result (``results.json``) since they show which
layers a task uses.

Tensor legend: ``B`` batch, ``N`` selected layers, ``T`` frames, ``D`` hidden width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Featurizer", "FeaturizerConfig"]


@dataclass
class FeaturizerConfig:
    """How the featurizer reads the upstream.

    Attributes:
        layers: indices into the upstream's ``L + 1`` hidden states (0 = input of the first
            transformer layer, ``L`` = last layer; negative indices count from the end).
            None: all ``L + 1``.
        layer_norm: layer-normalise each selected hidden state over ``D`` before weighting.
    """

    layers: list[int] | None = None
    layer_norm: bool = False


class Featurizer(nn.Module):
    """Softmax-weighted sum of chosen hidden states (SUPERB, arXiv:2105.01051).

    Args:
        num_hidden_states: how many hidden states the upstream returns (``L + 1``).
        hidden_size: their width ``D``.
        layers: which of them to use (see :class:`FeaturizerConfig`); None: all.
        layer_norm: per-layer layer norm (no affine) before the weighted sum.

    Raises:
        ValueError: empty, duplicate or out-of-range layer indices.
    """

    def __init__(
        self,
        num_hidden_states: int,
        hidden_size: int,
        layers: Sequence[int] | None = None,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_hidden_states < 1:
            raise ValueError(f"num_hidden_states must be >= 1, got {num_hidden_states}")
        self.num_hidden_states = num_hidden_states
        self.layers = resolve_layers(layers, num_hidden_states)
        self.hidden_size = hidden_size
        self.layer_norm = layer_norm
        # zeros -> uniform weights at the start, as in s3prl
        self.weights = nn.Parameter(torch.zeros(len(self.layers)))

    @property
    def output_size(self) -> int:
        """Width ``D`` of the featurizer output."""
        return self.hidden_size

    def normalized_weights(self) -> torch.Tensor:
        """``(N,)`` softmax of the layer logits; sums to one."""
        return torch.softmax(self.weights, dim=0)

    def select(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack the selected layers of an upstream output: ``L + 1`` x ``(B, T, D)`` ->
        ``(B, N, T, D)`` (the form the feature cache stores).

        Raises:
            ValueError: not ``num_hidden_states`` hidden states.
        """
        if len(hidden_states) != self.num_hidden_states:
            raise ValueError(
                f"expected {self.num_hidden_states} hidden states, got {len(hidden_states)}"
            )
        return torch.stack([hidden_states[i] for i in self.layers], dim=1)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """Weighted sum over layers.

        Args:
            stacked: ``(B, N, T, D)`` selected hidden states (from :meth:`select` or the cache);
                any float dtype, computed in float32.

        Returns:
            ``(B, T, D)`` float32.

        Raises:
            ValueError: wrong number of layers or width.
        """
        if stacked.dim() != 4 or stacked.shape[1] != len(self.layers):
            raise ValueError(
                f"expected (B, {len(self.layers)}, T, D) hidden states, got {tuple(stacked.shape)}"
            )
        if stacked.shape[-1] != self.hidden_size:
            raise ValueError(f"expected width {self.hidden_size}, got {stacked.shape[-1]}")
        stacked = stacked.float()
        if self.layer_norm:
            stacked = F.layer_norm(stacked, (stacked.shape[-1],))
        weights = self.normalized_weights().view(1, -1, 1, 1)
        return (stacked * weights).sum(dim=1)

    def layer_weights(self) -> dict[str, float]:
        """``{"<layer index>": weight}`` for results.json (weights sum to one)."""
        values = self.normalized_weights().detach().cpu().tolist()
        return {str(layer): float(w) for layer, w in zip(self.layers, values, strict=True)}


def resolve_layers(layers: Sequence[int] | None, num_hidden_states: int) -> list[int]:
    """Normalise layer indices to ``[0, num_hidden_states)``.

    Raises:
        ValueError: empty list, out-of-range or duplicate indices.
    """
    if layers is None:
        return list(range(num_hidden_states))
    if len(layers) == 0:
        raise ValueError("featurizer.layers must not be empty (use null for all layers)")
    resolved = []
    for layer in layers:
        index = layer + num_hidden_states if layer < 0 else layer
        if not 0 <= index < num_hidden_states:
            raise ValueError(
                f"featurizer layer {layer} out of range for {num_hidden_states} hidden states"
            )
        resolved.append(index)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"featurizer.layers has duplicates: {list(layers)}")
    return resolved
