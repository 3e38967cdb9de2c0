"""The GE2E speaker encoder (Resemblyzer's pretrained weights) as our own module.

"Generalized End-to-End Loss for Speaker Verification" (Wan et al., arXiv:1710.10467): a 3-layer
LSTM over 40-band mel frames (25 ms window, 10 ms hop, 16 kHz), whose last hidden state goes
through a linear layer and a ReLU and is L2-normalised into a 256-d embedding. The weights are the
``resemblyzer`` package's ``pretrained.pt`` (1,423,616 parameters, a torch state dict loaded with
``weights_only=True``); none of resemblyzer's code runs here. Its front end is reproduced exactly:
``librosa.feature.melspectrogram`` defaults (centred Hann STFT, zero padding, power 2, Slaney mel
filters), **not** a log-mel, after a volume normalisation to -30 dBFS that only ever raises the
level. Resemblyzer's webrtcvad silence trimming is *not* reproduced (our crops are already
speech; documented deviation, see ``docs/imlkd.md``).

Legend: ``B`` batch, ``N`` samples (16 kHz), ``T`` mel frames (100 per second), ``F`` = 40 mel
bands, ``E`` = 256 embedding width, ``K`` enrolled speakers.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GE2E",
    "MelSpectrogram",
    "mel_filters",
    "normalize_volume",
    "partial_slices",
    "resemblyzer_weights_path",
]

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms
N_FFT = 400  # 25 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s partial utterances


def resemblyzer_weights_path() -> Path:
    """Path of the installed ``resemblyzer/pretrained.pt`` (found without importing the package).

    Raises:
        FileNotFoundError: resemblyzer is not installed or ships no ``pretrained.pt``.
    """
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the resemblyzer package is not installed (pip install "
                                "resemblyzer==0.1.4); it ships the GE2E weights pretrained.pt")
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise FileNotFoundError(f"GE2E weights not found at {path}")
    return path


def normalize_volume(waveform: torch.Tensor, target_dbfs: float = -30.0) -> torch.Tensor:
    """Raise (never lower) a waveform's RMS level to ``target_dbfs`` dB full scale.

    Resemblyzer's ``normalize_volume(..., increase_only=True)``: the level is measured on
    int16 scale, ``20 log10(rms * 32767 / 32767)``.

    Args:
        waveform: ``(N,)`` or ``(B, N)`` float in [-1, 1]; each row normalised on its own.

    Returns:
        same shape; an all-zero row is returned unchanged.
    """
    rms = waveform.pow(2).mean(dim=-1, keepdim=True).sqrt()
    change_db = target_dbfs - 20.0 * torch.log10(rms.clamp_min(1e-12))
    gain = torch.where((change_db > 0) & (rms > 0), 10.0 ** (change_db / 20.0),
                       torch.ones_like(rms))
    return waveform * gain


def _hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    freqs = np.asarray(freqs, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mels = freqs / f_sp
    log_region = freqs >= min_log_hz
    mels[log_region] = min_log_hz / f_sp + np.log(freqs[log_region] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    freqs = f_sp * mels
    log_region = mels >= min_log_mel
    freqs[log_region] = min_log_hz * np.exp(logstep * (mels[log_region] - min_log_mel))
    return freqs


def mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS
                ) -> np.ndarray:
    """Slaney-normalised triangular mel filters, as ``librosa.filters.mel(sr, n_fft, n_mels)``
    (``fmin = 0``, ``fmax = sr / 2``, ``htk=False``, ``norm="slaney"``).

    Args:
        sample_rate: in Hz (default 16 kHz).
        n_fft: FFT size in samples (default 400).
        n_mels: number of mel bands (default 40).

    Returns:
        ``(n_mels, n_fft // 2 + 1)`` float32.
    """
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0],
                                   _hz_to_mel(np.array([sample_rate / 2.0]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]  # in float64, as librosa
    return weights


class MelSpectrogram(nn.Module):
    """Resemblyzer's / librosa's mel power spectrogram in torch (differentiable, batched).

    ``librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)``:
    centred STFT with zero padding of ``n_fft // 2`` on both sides, periodic Hann window, power
    2, Slaney-normalised mel filters (:func:`mel_filters`, equal to ``librosa.filters.mel``;
    librosa itself is not needed).

    Forward: ``(B, N)`` waveforms -> ``(B, T, F)`` with ``T = 1 + N // 160``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filters", torch.from_numpy(mel_filters()), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` 16 kHz waveforms -> ``(B, T, 40)`` float32 mel power (``T = 1 + N // 160``).

        Raises:
            ValueError: ``waveforms`` is not ``(batch, samples)``.
        """
        if waveforms.dim() != 2:
            raise ValueError(f"expected (batch, samples) waveforms, got {tuple(waveforms.shape)}")
        spec = torch.stft(waveforms.float(), N_FFT, HOP, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, n_fft // 2 + 1, T)
        return torch.matmul(self.filters, power).transpose(1, 2)


def partial_slices(num_samples: int, rate: float = 1.3, min_coverage: float = 0.75
                   ) -> list[tuple[int, int]]:
    """Frame ranges of the 1.6 s partial utterances of an utterance (Resemblyzer's
    ``compute_partial_slices``): a partial every ``1 / rate`` s; the last one is kept if at
    least ``min_coverage`` of it lies inside the audio (always at least one).

    Args:
        num_samples: length of the utterance in samples (16 kHz).
        rate: partials per second.
        min_coverage: fraction of the last partial that must lie inside the audio.

    Returns:
        ``[(start_frame, stop_frame), ...]`` in 10 ms mel frames; the waveform must be
        zero-padded to ``stop_frame * 160`` samples of the last one.

    Raises:
        ValueError: ``min_coverage`` outside (0, 1], or a ``rate`` whose step between
            partials, ``round(100 / rate)`` frames, is not in ``1..160`` (a rate outside
            about [0.623, 200) per second).
    """
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must lie in (0, 1], got {min_coverage}")
    n_frames = int(np.ceil((num_samples + 1) / HOP))
    frame_step = int(np.round((SAMPLE_RATE / rate) / HOP))
    if not 0 < frame_step <= PARTIAL_FRAMES:
        raise ValueError(f"rate {rate} gives a partial step of {frame_step} frames; "
                         f"need 1..{PARTIAL_FRAMES}")
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    slices = [(i, i + PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    start, stop = slices[-1][0] * HOP, slices[-1][1] * HOP
    if (num_samples - start) / (stop - start) < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


class GE2E(nn.Module):
    """GE2E speaker encoder: LSTM(40 -> 256) x 3, linear 256 -> 256, ReLU, L2 norm.

    Paper: "Generalized End-to-End Loss for Speaker Verification" (arXiv:1710.10467).

    ``similarity_weight`` / ``similarity_bias`` are GE2E's learned scale and offset of the
    cosine similarity (``S = w cos + b``, section 2.1 of arXiv:1710.10467); they turn cosines to
    speaker centroids into logits.

    Args:
        hidden_size / embedding_size / num_layers: the shape (Resemblyzer: 256 / 256 / 3).
    """

    def __init__(self, hidden_size: int = 256, embedding_size: int = 256, num_layers: int = 3
                 ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, embedding_size)
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))
        self.mel = MelSpectrogram()

    @classmethod
    def from_resemblyzer(cls, path: str | Path | None = None) -> GE2E:
        """The pretrained encoder, frozen and in eval mode.

        Args:
            path: a ``pretrained.pt``; default: the installed resemblyzer package's.

        Raises:
            FileNotFoundError: no weights file.
            RuntimeError: the state dict does not match (missing or unexpected keys).
        """
        path = Path(path) if path is not None else resemblyzer_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model_state", state)
        model = cls()
        model.load_state_dict(state, strict=True)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    @property
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of the weights: names the teacher in cache keys."""
        import hashlib

        h = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def embed_mels(self, mels: torch.Tensor) -> torch.Tensor:
        """``(B, T, F)`` mel frames -> ``(B, E)`` L2-normalised embeddings (non-negative).

        Raises:
            ValueError: ``mels`` is not ``(batch, frames, 40)``.
        """
        if mels.dim() != 3 or mels.shape[-1] != N_MELS:
            raise ValueError(f"expected (batch, frames, {N_MELS}) mels, got {tuple(mels.shape)}")
        _, (hidden, _) = self.lstm(mels)
        raw = F.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` equal-length 16 kHz waveforms (already volume-normalised) -> ``(B, E)``."""
        return self.embed_mels(self.mel(waveforms))

    def scores(self, embeddings: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """GE2E logits ``w cos(e, c_k) + b``: ``(B, E)``, ``(K, E)`` -> ``(B, K)``."""
        cos = F.normalize(embeddings, dim=-1) @ F.normalize(centroids, dim=-1).T
        return self.similarity_weight * cos + self.similarity_bias

    @torch.no_grad()
    def embed_utterance(self, waveform: torch.Tensor, rate: float = 1.3,
                        min_coverage: float = 0.75) -> torch.Tensor:
        """Utterance embedding as Resemblyzer's ``embed_utterance``: the L2-normalised mean of
        the embeddings of 1.6 s partials (zero-padded at the end).

        Args:
            waveform: ``(N,)`` 16 kHz (volume normalisation is the caller's choice).
            rate: partials per second (one every ``1 / rate`` s); see :func:`partial_slices`.
            min_coverage: fraction of the last partial that must lie inside the audio.

        Returns:
            ``(E,)``.

        Raises:
            ValueError: ``waveform`` not 1-D or empty, or a ``rate`` / ``min_coverage``
                :func:`partial_slices` rejects.
        """
        if waveform.dim() != 1 or waveform.numel() == 0:
            raise ValueError(f"expected a non-empty (samples,) waveform, got {tuple(waveform.shape)}")
        slices = partial_slices(waveform.numel(), rate, min_coverage)
        need = slices[-1][1] * HOP
        if need >= waveform.numel():
            waveform = F.pad(waveform, (0, need - waveform.numel()))
        mel = self.mel(waveform.unsqueeze(0))[0]
        partials = torch.stack([mel[a:b] for a, b in slices])
        mean = self.embed_mels(partials).mean(0)
        return mean / mean.norm().clamp_min(1e-12)


def num_frames(num_samples: int) -> int:
    """Mel frames of ``num_samples`` samples (centred STFT): ``1 + N // 160``."""
    return 1 + num_samples // HOP


def frames_per_second() -> float:
    """Mel frame rate in Hz (100)."""
    return SAMPLE_RATE / HOP


assert math.isclose(frames_per_second(), 100.0)
