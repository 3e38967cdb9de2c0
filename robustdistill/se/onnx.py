"""ONNX export of an SE student's network, with an onnxruntime parity check.

Like NSNet2's own ONNX release, the graph is the network: log-power features and the GRU
states in, the gain mask and the new states out (the STFT and overlap-add stay outside, in
:mod:`robustdistill.se.stft`). Inputs ``features (B, K, 161)`` and ``h1 .. hL (1, B, H)``;
outputs ``mask (B, K, 161)`` and ``h1_out .. hL_out``; ``B`` and ``K`` are dynamic, so the
same file runs whole files (``K`` frames) or streams (``K = 1`` with the states fed back).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .students import GRUMaskStudent

__all__ = ["export_onnx", "check_onnx_parity"]


class _MaskGraph(nn.Module):
    def __init__(self, student: GRUMaskStudent):
        super().__init__()
        self.student = student

    def forward(self, features, *states):
        mask, new_states, _ = self.student.mask_from_features(features, tuple(states))
        return (mask, *new_states)


def export_onnx(student: GRUMaskStudent, path: str | Path, opset: int = 17) -> Path:
    """Write the student's network to ``path`` (parent folders created).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    student = student.eval()
    n_layers, hidden = student.config.num_layers, student.config.hidden_size
    feats = torch.randn(1, 7, student.stft.num_bins)
    states = tuple(torch.zeros(1, 1, hidden) for _ in range(n_layers))
    in_names = ["features", *(f"h{i + 1}" for i in range(n_layers))]
    out_names = ["mask", *(f"h{i + 1}_out" for i in range(n_layers))]
    axes = {"features": {0: "batch", 1: "frames"}, "mask": {0: "batch", 1: "frames"}}
    for i in range(n_layers):
        axes[f"h{i + 1}"] = {1: "batch"}
        axes[f"h{i + 1}_out"] = {1: "batch"}
    with warnings.catch_warnings():
        # the GRU states are graph inputs, which is what the exporter's batch warning asks for
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(_MaskGraph(student), (feats, *states), str(path),
                          input_names=in_names, output_names=out_names, dynamic_axes=axes,
                          opset_version=opset, dynamo=False)
    return path


def check_onnx_parity(student: GRUMaskStudent, path: str | Path, features: torch.Tensor
                      ) -> float:
    """Largest absolute difference between onnxruntime and torch on ``features (B, K, F)``
    (masks and final states)."""
    import onnxruntime as ort

    student = student.eval()
    b = features.shape[0]
    states = student.initial_state(b)
    with torch.no_grad():
        mask, new_states, _ = student.mask_from_features(features, states)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"features": features.numpy()}
    feed.update({f"h{i + 1}": s.numpy() for i, s in enumerate(states)})
    outs = sess.run(None, feed)
    diffs = [np.abs(outs[0] - mask.numpy()).max()]
    diffs += [np.abs(o - s.numpy()).max() for o, s in zip(outs[1:], new_states, strict=True)]
    return float(max(diffs))
