"""Causal STFT framing and overlap-add shared by the SE teachers and students.

Framing is causal: frame ``k`` holds the input samples ``[k*hop - (win - hop), k*hop + hop)``
(zeros before the start), so it is complete as soon as sample ``k*hop + hop - 1`` has arrived.
After overlap-add the first ``win - hop`` output samples are dropped, so the whole-file output
is time-aligned with the input, and a streaming implementation emits each hop ``win - hop``
samples late. The algorithmic latency of such a system is one window (``win`` samples): a
sample enters with the newest hop and leaves once every frame covering it is synthesised.
Frames continue until the last sample is covered by ``win / hop`` frames, so every sample is
reconstructed. This is DTLN's real-time loop (arXiv 2005.07551). The NSNet2 reference
(``featurelib.stft(nodelay=True)``) drops the ``win/hop - 1`` leading frames that hold the left
padding, so its first frame is ``[0, win)`` and its first hop is not fully reconstructed; we
keep those frames (the networks are the same; the recurrent state starts one frame earlier).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["StftConfig", "make_window", "frame_signal", "overlap_add", "num_frames"]

WindowName = Literal["sqrt_hann", "sqrt_hann_symmetric", "ones"]


def make_window(name: WindowName, length: int) -> torch.Tensor:
    """An analysis/synthesis window of ``length`` samples, float32.

    ``"sqrt_hann"``: square root of the periodic Hann window (its square overlap-adds to the
    constant ``win / (2 hop)``: exactly 1 at 50% overlap, exactly 2 at 75%; perfect
    reconstruction up to that gain). ``"sqrt_hann_symmetric"``: ``sqrt(numpy.hanning(length))``,
    the window of the NSNet2 reference code at 16 kHz (its squares overlap-add to that constant
    only within about 0.5%: 0.9951 to 1.0000 for 320 samples at 50% overlap).
    ``"ones"``: rectangular (DTLN).

    Raises:
        ValueError: unknown name or ``length < 2``.
    """
    if length < 2:
        raise ValueError(f"window length must be >= 2 samples, got {length}")
    if name == "sqrt_hann":
        return torch.hann_window(length, periodic=True, dtype=torch.float64).sqrt().float()
    if name == "sqrt_hann_symmetric":
        return torch.from_numpy(np.sqrt(np.hanning(length))).float()
    if name == "ones":
        return torch.ones(length)
    raise ValueError(f"unknown window {name!r}: use 'sqrt_hann', 'sqrt_hann_symmetric' or 'ones'")


@dataclass(frozen=True)
class StftConfig:
    """STFT geometry.

    Attributes:
        sample_rate: Hz.
        win_length: window length in samples (NSNet2: 320 = 20 ms at 16 kHz).
        hop_length: hop in samples (NSNet2: 160 = 10 ms); must divide ``win_length``.
        n_fft: FFT size (>= ``win_length``); ``n_fft // 2 + 1`` bins.
        window: see :func:`make_window`.

    Raises:
        ValueError: (on construction) ``sample_rate <= 0``, a ``hop_length`` that is not
            positive or does not divide ``win_length``, ``n_fft < win_length``, or a window
            :func:`make_window` rejects.
    """

    sample_rate: int = 16000
    win_length: int = 320
    hop_length: int = 160
    n_fft: int = 320
    window: WindowName = "sqrt_hann"

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0 Hz, got {self.sample_rate}")
        if self.hop_length <= 0 or self.win_length % self.hop_length:
            raise ValueError(f"hop_length {self.hop_length} must divide win_length "
                             f"{self.win_length}")
        if self.n_fft < self.win_length:
            raise ValueError(f"n_fft {self.n_fft} < win_length {self.win_length}")
        make_window(self.window, self.win_length)

    @property
    def num_bins(self) -> int:
        """``n_fft // 2 + 1`` frequency bins."""
        return self.n_fft // 2 + 1

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency in samples: one window (no lookahead frames)."""
        return self.win_length

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency in milliseconds."""
        return 1000.0 * self.win_length / self.sample_rate


def num_frames(num_samples: int, win_length: int, hop_length: int) -> int:
    """Causal frames needed so that every one of ``num_samples`` samples is covered by
    ``win / hop`` frames: ``ceil(N / hop) + win / hop - 1``."""
    return -(-num_samples // hop_length) + win_length // hop_length - 1


def frame_signal(x: torch.Tensor, win_length: int, hop_length: int) -> torch.Tensor:
    """Causal frames of a batch of waveforms.

    Args:
        x: ``(B, N)`` waveforms.
        win_length, hop_length: samples.

    Returns:
        ``(B, K, win_length)`` with ``K = ceil(N / hop) + win / hop - 1`` (see
        :func:`num_frames`); frame ``k`` holds samples ``[k*hop - (win - hop), k*hop + hop)``
        (zeros outside ``[0, N)``).

    Raises:
        ValueError: ``x`` not 2-D or empty.
    """
    if x.dim() != 2 or x.shape[-1] == 0:
        raise ValueError(f"expected (batch, samples) waveforms, got shape {tuple(x.shape)}")
    k = num_frames(x.shape[-1], win_length, hop_length)
    right = (k - 1) * hop_length + hop_length - x.shape[-1]
    padded = F.pad(x, (win_length - hop_length, right))
    return padded.unfold(-1, win_length, hop_length)


def overlap_add(frames: torch.Tensor, hop_length: int, num_samples: int) -> torch.Tensor:
    """Overlap-add causal frames back to ``(B, num_samples)`` aligned with the input.

    Args:
        frames: ``(B, K, W)`` windowed time frames (synthesis window already applied).
        hop_length: samples.
        num_samples: output length ``N`` (``<= K * hop``).

    Returns:
        ``(B, N)``: the sum of the frames placed ``hop`` apart, with the first ``W - hop``
        samples (the causal padding) dropped.
    """
    b, k, w = frames.shape
    total = (k - 1) * hop_length + w
    out = F.fold(frames.transpose(1, 2), output_size=(1, total), kernel_size=(1, w),
                 stride=(1, hop_length))
    return out.reshape(b, total)[:, w - hop_length: w - hop_length + num_samples]
