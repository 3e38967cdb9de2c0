"""Frame-by-frame streaming inference with carried state, and the real-time factor.

:class:`StreamingEnhancer` feeds any :class:`~robustdistill.se.teachers.base.FrameModel` one
hop at a time (chunks of any size in, whole hops out), carrying the recurrent state, the last
``win - hop`` input samples and the overlap-add tail. Its output stream equals the whole-file
output delayed by ``win - hop`` samples: ``stream[win - hop + n] == whole[n]``.
"""

from __future__ import annotations

import time

import torch

from .teachers.base import FrameModel

__all__ = ["StreamingEnhancer", "enhance_streaming", "real_time_factor"]


class StreamingEnhancer:
    """Stateful streaming wrapper.

    Args:
        model: a frame model (put in ``eval`` mode by the caller).
        batch_size: number of parallel streams ``B``.

    Output delay: ``model.stft.win_length - model.stft.hop_length`` samples (10 ms for the
    students and NSNet2, 24 ms for DTLN); the algorithmic latency is one window.
    """

    def __init__(self, model: FrameModel, batch_size: int = 1):
        self.model = model
        self.win, self.hop = model.stft.win_length, model.stft.hop_length
        self.batch_size = batch_size
        self.reset()

    @property
    def delay(self) -> int:
        """Samples between an input sample and its output sample in the stream."""
        return self.win - self.hop

    def reset(self) -> None:
        """Start a new stream (zero state and buffers)."""
        b = self.batch_size
        self.state = self.model.initial_state(b)
        self._history = torch.zeros(b, self.win - self.hop)
        self._pending = torch.zeros(b, 0)
        self._ola = torch.zeros(b, self.win)

    @torch.no_grad()
    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Feed ``(B, n)`` (or ``(n,)`` when ``B == 1``) samples; returns ``(B, m)`` output
        samples, ``m`` a multiple of the hop (possibly 0).

        Raises:
            ValueError: wrong batch size or number of dimensions.
        """
        x = chunk.unsqueeze(0) if chunk.dim() == 1 else chunk
        if x.dim() != 2 or x.shape[0] != self.batch_size:
            raise ValueError(f"expected ({self.batch_size}, samples), got {tuple(chunk.shape)}")
        self._pending = torch.cat([self._pending, x.float()], dim=1)
        outs = []
        while self._pending.shape[1] >= self.hop:
            new, self._pending = self._pending[:, : self.hop], self._pending[:, self.hop:]
            frame = torch.cat([self._history, new], dim=1)
            self._history = frame[:, self.hop:]
            out, self.state, _ = self.model.process_frames(frame[:, None], self.state)
            self._ola = self._ola + out[:, 0]
            outs.append(self._ola[:, : self.hop])
            self._ola = torch.cat([self._ola[:, self.hop:], torch.zeros(x.shape[0], self.hop)],
                                  dim=1)
        return torch.cat(outs, dim=1) if outs else torch.zeros(x.shape[0], 0)

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        """End the stream: zero-pad the last partial hop, then feed ``win - hop`` zeros so
        every real sample is covered by all its frames; returns the remaining output,
        ``(B, m)`` samples with ``m`` a multiple of the hop. The stream is then reset."""
        pad = (-self._pending.shape[1]) % self.hop + self.win - self.hop
        out = self.push(torch.zeros(self.batch_size, pad))
        self.reset()
        return out


def enhance_streaming(model: FrameModel, x: torch.Tensor, chunk: int = 160) -> torch.Tensor:
    """Stream ``(B, N)`` through ``model`` in chunks of ``chunk`` samples; returns ``(B, N)``
    aligned with the input (the stream's delay removed)."""
    s = StreamingEnhancer(model, x.shape[0])
    parts = [s.push(x[:, i: i + chunk]) for i in range(0, x.shape[1], chunk)]
    y = torch.cat([*parts, s.flush()], dim=1)
    return y[:, s.delay: s.delay + x.shape[1]]


@torch.no_grad()
def real_time_factor(model: FrameModel, seconds: float = 5.0, threads: int = 1,
                     seed: int = 0) -> float:
    """Processing time / audio duration when streaming hop by hop on ``threads`` CPU threads.

    Args:
        model: the frame model (``eval`` mode).
        seconds: audio duration (white noise at the model's rate).
        threads: ``torch.set_num_threads`` during the measurement (restored after).

    Returns:
        The real-time factor (< 1 is faster than real time).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(seed)
        x = 0.1 * torch.randn(1, int(seconds * model.stft.sample_rate), generator=g)
        s = StreamingEnhancer(model)
        s.push(x[:, : 10 * model.stft.hop_length])  # warm-up
        s.reset()
        start = time.perf_counter()
        for i in range(0, x.shape[1], model.stft.hop_length):
            s.push(x[:, i: i + model.stft.hop_length])
        return (time.perf_counter() - start) / seconds
    finally:
        torch.set_num_threads(old)
