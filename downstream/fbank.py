"""FBANK: SUPERB's anchor row, a frozen "upstream" that is just log mel filterbank features.

SUPERB ("SUPERB: Speech processing Universal PERformance Benchmark", Yang et al.,
arXiv:2105.01051) reports every task on FBANK features as the baseline that self-supervised
upstreams must beat; s3prl's ``fbank`` upstream (``s3prl/upstream/baseline/fbank.yaml``) computes
80 Kaldi log mel filterbank energies per 25 ms window every 10 ms, appends first and second order
deltas (window 5) and normalises each utterance to zero mean and unit variance (CMVN): 240
features at 100 Hz.

:class:`FbankUpstream` computes the same recipe in torch (Kaldi conventions: per-frame DC
removal, pre-emphasis 0.97, Povey window, 512-point power spectrum, triangular filters equally
spaced on Kaldi's mel scale ``1127 ln(1 + f / 700)`` from 20 Hz to Nyquist, log floored at
float32 epsilon, ``snip_edges``: ``1 + (S - 400) // 160`` frames, deltas by Kaldi's regression
formula applied twice with edge frames repeated). Deviations from s3prl's torchaudio-Kaldi path,
by name: no dither (s3prl's default 0 as well in its yaml) and the waveform is used at its float
scale (a constant offset of the log energies, removed by CMVN). It is close to, not bit-exact
with, ``torchaudio.compliance.kaldi.fbank`` (torchaudio is not installed here).

Use it with ``--upstream fbank``. It has one "hidden state" (the featurizer's weights are then
trivially 1) and is padding-independent (each utterance is computed on its own real samples).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from robustdistill.audio import SAMPLE_RATE
from robustdistill.upstream import UpstreamOutput, lengths_to_mask

__all__ = ["FbankConfig", "FbankUpstream", "is_fbank", "kaldi_mel_banks"]


@dataclass
class FbankConfig:
    """Attributes:
    num_mel_bins: mel filters.
    frame_length: window in samples (400 = 25 ms).
    frame_shift: hop in samples (160 = 10 ms).
    n_fft: FFT size (Kaldi: the next power of two of ``frame_length``).
    delta_order: 0, 1 or 2 (SUPERB: 2).
    delta_window: Kaldi's ``N`` (2: a 5-frame window).
    cmvn: per-utterance mean and variance normalisation.
    preemphasis: coefficient.
    low_freq: lowest filter edge in Hz.
    """

    num_mel_bins: int = 80
    frame_length: int = 400
    frame_shift: int = 160
    n_fft: int = 512
    delta_order: int = 2
    delta_window: int = 2
    cmvn: bool = True
    preemphasis: float = 0.97
    low_freq: float = 20.0
    model_type: str = "fbank"

    def to_json_string(self) -> str:
        """Every field (``model_type`` included) as one line of JSON, keys sorted."""
        return json.dumps(asdict(self), sort_keys=True)


def is_fbank(name: str) -> bool:
    """Whether an ``--upstream`` value asks for the FBANK baseline."""
    return str(name).strip().lower() == "fbank"


def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float,
                    high_freq: float) -> torch.Tensor:
    """``(num_bins, n_fft // 2 + 1)`` triangular filters, triangles linear on Kaldi's mel scale
    (the Nyquist bin gets zero weight, as Kaldi).

    Args:
        num_bins: number of filters.
        n_fft: FFT size in samples.
        sample_rate: in Hz.
        low_freq, high_freq: the lowest and highest filter edges, in Hz.

    Returns:
        ``(num_bins, n_fft // 2 + 1)`` float32.

    Raises:
        ValueError: ``low_freq`` negative or ``>= high_freq``.
    """
    if not 0 <= low_freq < high_freq:
        raise ValueError(f"need 0 <= low_freq < high_freq, got {low_freq}, {high_freq}")

    def mel(f):
        return 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)

    lo, hi = mel(low_freq), mel(high_freq)
    delta = (hi - lo) / (num_bins + 1)
    left = lo + torch.arange(num_bins, dtype=torch.float64) * delta
    center, right = left + delta, left + 2 * delta
    freqs = torch.arange(n_fft // 2, dtype=torch.float64) * sample_rate / n_fft
    m = mel(freqs)[None]
    up = (m - left[:, None]) / (center - left)[:, None]
    down = (right[:, None] - m) / (right - center)[:, None]
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.cat([banks, banks.new_zeros(num_bins, 1)], dim=1).float()


def _deltas(x: torch.Tensor, window: int) -> torch.Tensor:
    """Kaldi's regression deltas over time of ``(T, F)``, edge frames repeated."""
    t = x.shape[0]
    denom = 2.0 * sum(n * n for n in range(1, window + 1))
    out = torch.zeros_like(x)
    for n in range(1, window + 1):
        ahead = x[torch.clamp(torch.arange(t) + n, max=t - 1)]
        behind = x[torch.clamp(torch.arange(t) - n, min=0)]
        out += n * (ahead - behind)
    return out / denom


class FbankUpstream(nn.Module):
    """Log mel filterbank (+ deltas, CMVN) with :class:`~robustdistill.upstream.Upstream`'s
    interface (``forward(waveforms, lengths) -> UpstreamOutput`` with one hidden state).

    Args:
        config: see :class:`FbankConfig`.

    Shapes: ``waveforms (B, S)`` float at 16 kHz, ``lengths (B,)`` samples ->
    ``hidden_states[0] (B, T, num_mel_bins * (1 + delta_order))`` at 100 Hz.

    Raises:
        ValueError: ``delta_order`` not 0, 1 or 2, or ``low_freq`` negative or not below the
            Nyquist frequency (8000 Hz).
    """

    is_whisper = False
    use_attention_mask = True  # every utterance is computed on its real samples only
    padding_independent = True
    num_layers = 0

    def __init__(self, config: FbankConfig | None = None) -> None:
        super().__init__()
        self.config = config or FbankConfig()
        cfg = self.config
        if cfg.delta_order not in (0, 1, 2):
            raise ValueError(f"delta_order must be 0, 1 or 2, got {cfg.delta_order}")
        n = torch.arange(cfg.frame_length, dtype=torch.float64)
        hann = 0.5 - 0.5 * torch.cos(2 * math.pi * n / (cfg.frame_length - 1))
        self.register_buffer("window", hann.pow(0.85).float(), persistent=False)
        self.register_buffer("banks", kaldi_mel_banks(cfg.num_mel_bins, cfg.n_fft, SAMPLE_RATE,
                                                      cfg.low_freq, SAMPLE_RATE / 2),
                             persistent=False)

    @property
    def hidden_size(self) -> int:
        """Features per frame: ``num_mel_bins * (1 + delta_order)`` (240 by default)."""
        return self.config.num_mel_bins * (1 + self.config.delta_order)

    @property
    def samples_per_frame(self) -> int:
        """The hop in samples at 16 kHz (``frame_shift``; 160 = 10 ms by default)."""
        return self.config.frame_shift

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``(B,)`` frames: ``1 + (S - frame_length) // frame_shift`` (at least 1)."""
        cfg = self.config
        return torch.clamp((lengths - cfg.frame_length) // cfg.frame_shift + 1, min=1)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """``(S,)`` -> ``(T, hidden_size)`` for one utterance."""
        cfg = self.config
        wave = wave.float()
        if wave.numel() < cfg.frame_length:
            wave = torch.nn.functional.pad(wave, (0, cfg.frame_length - wave.numel()))
        frames = wave.unfold(0, cfg.frame_length, cfg.frame_shift)  # (T, W)
        frames = frames - frames.mean(dim=1, keepdim=True)
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = (frames - cfg.preemphasis * previous) * self.window
        power = torch.fft.rfft(frames, n=cfg.n_fft).abs().pow(2)
        feats = torch.log(torch.clamp(power @ self.banks.T, min=torch.finfo(torch.float32).eps))
        parts = [feats]
        for _ in range(cfg.delta_order):
            parts.append(_deltas(parts[-1], cfg.delta_window))
        out = torch.cat(parts, dim=1)
        if cfg.cmvn:  # in float64: constant (floored) bins must come out as zeros, not noise
            out = out.double()
            out = out - out.mean(dim=0, keepdim=True)
            if out.shape[0] > 1:
                out = out / (out.std(dim=0, unbiased=False, keepdim=True) + 1e-5)
        return out.float()

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> UpstreamOutput:
        """Features of each utterance's real samples.

        Args:
            waveforms: ``(B, S)`` float, 16 kHz, zero-padded.
            lengths: ``(B,)`` real samples (default: all ``S``).

        Returns:
            :class:`~robustdistill.upstream.UpstreamOutput` with one hidden state
            ``(B, T, hidden_size)`` (zero past each utterance's frames), ``frame_lengths``
            ``(B,)``, ``frame_mask`` ``(B, T)`` and no CNN features.
        """
        if lengths is None:
            lengths = torch.full((waveforms.shape[0],), waveforms.shape[1], dtype=torch.long)
        feats = [self.features(w[: int(n)]) for w, n in zip(waveforms, lengths, strict=True)]
        frame_lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long,
                                     device=waveforms.device)
        out = waveforms.new_zeros(len(feats), int(frame_lengths.max()), self.hidden_size)
        for i, f in enumerate(feats):
            out[i, : f.shape[0]] = f
        mask = lengths_to_mask(frame_lengths, out.shape[1])
        return UpstreamOutput((out,), frame_lengths, mask, None)
