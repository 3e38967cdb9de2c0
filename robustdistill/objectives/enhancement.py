"""Speech-enhancement head on student features (RobustDistiller's multi-task objective).

"RobustDistiller: Compressing Universal Speech Representations for Enhanced Environment
Robustness", Guimarães et al., arXiv 2302.09437 (extended in arXiv 2403.08654).
Specification: ``objectives.md`` section 2.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .base import DistillationInputs, LossTerm, Objective, register_objective

__all__ = ["EnhancementHead", "MaskEnhancement", "magnitude_stft", "stft_frame_lengths"]


def magnitude_stft(waveforms: torch.Tensor, n_fft: int = 512, hop_length: int = 160,
                   win_length: int = 400) -> torch.Tensor:
    """Magnitude STFT with a Hann window, centred frames and zero (not reflect) padding.

    Zero padding makes the frames of a zero-padded batch identical to those of each
    utterance alone, so padding never changes the loss.

    Args:
        waveforms: ``(B, S)``, 16 kHz.

    Returns:
        ``(B, F, n_fft // 2 + 1)`` magnitudes, ``F = S // hop_length + 1`` frames.
    """
    window = torch.hann_window(win_length, device=waveforms.device, dtype=torch.float32)
    spec = torch.stft(waveforms.float(), n_fft=n_fft, hop_length=hop_length,
                      win_length=win_length, window=window, center=True, pad_mode="constant",
                      return_complex=True)
    return spec.abs().transpose(1, 2)


def stft_frame_lengths(lengths: torch.Tensor, hop_length: int = 160) -> torch.Tensor:
    """Real STFT frames of :func:`magnitude_stft` for ``(B,)`` sample counts."""
    return torch.div(lengths, hop_length, rounding_mode="floor") + 1


class EnhancementHead(nn.Module):
    """BiLSTM mask estimator: features at 50 Hz -> sigmoid mask over STFT bins at 100 Hz.

    RobustDistiller's ``ReconstructionHead`` (arXiv 2302.09437; reference code
    ``pretrain/robust_distiller/pretrain_expert.py``): ``LSTM(dropout) -> Dropout -> Linear
    -> sigmoid``. Each feature frame (20 ms) is repeated ``upsample`` times to reach the STFT
    frame rate (hop 160 = 10 ms; the reference's ``repeat_interleave(feat, 2)``); STFT frames
    past the last real feature frame repeat it (the reference zero-fills them).

    The pairing is approximate, as in the reference: STFT frame ``j`` (centred at ``160 j``,
    window ``[160 j - 200, 160 j + 200)``) reads feature frame ``j // 2`` of a wav2vec
    2.0-style CNN (samples ``[320 k, 320 k + 400)``, centred at ``320 k + 200``). An odd
    ``j = 2 k + 1`` is 40 samples from its feature's centre; an even ``j = 2 k`` is 200
    samples before it, and 120 samples after the centre of feature ``k - 1`` (the nearest).
    The BiLSTM reads the whole sequence, so it can learn this fixed offset.

    Args:
        input_size: feature width (``D_s`` or CNN channels).
        num_bins: STFT bins (257 for ``n_fft = 512``).
        hidden_size: LSTM width per direction (default 256).
        num_layers: LSTM layers (default 3).
        upsample: STFT frames per feature frame (default 2).
        dropout: LSTM dropout between layers and dropout before the output layer (the
            reference: 0.1 for both; default 0).

    Raises:
        ValueError: ``dropout`` outside ``[0, 1)``.
    """

    def __init__(self, input_size: int, num_bins: int = 257, hidden_size: int = 256,
                 num_layers: int = 3, upsample: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"enhancement dropout must be in [0, 1), got {dropout}")
        self.upsample = upsample
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(2 * hidden_size, num_bins)

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor, num_frames: int,
                frame_lengths: torch.Tensor) -> torch.Tensor:
        """Estimate the mask.

        Args:
            features: ``(B, T, C)``.
            feature_lengths: ``(B,)`` real feature frames; STFT frames past them reuse the
                utterance's last real feature frame, never a padded one.
            num_frames: ``F``, STFT frames of the padded batch.
            frame_lengths: ``(B,)`` real STFT frames; the LSTM never reads past them.

        Returns:
            ``(B, F, num_bins)`` mask in (0, 1).
        """
        source = torch.arange(num_frames, device=features.device) // self.upsample
        last = (feature_lengths.to(features.device) - 1).clamp(min=0)
        index = torch.minimum(source[None, :], last[:, None])  # (B, F)
        x = torch.gather(features, 1, index[..., None].expand(-1, -1, features.shape[-1]))
        packed = pack_padded_sequence(x, frame_lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=num_frames)
        return torch.sigmoid(self.proj(self.dropout(out)))


@register_objective("enhancement")
class MaskEnhancement(Objective):
    """Recover the clean magnitude spectrum from the student's features of noisy speech.

    RobustDistiller's multi-task enhancement objective: "RobustDistiller: Compressing
    Universal Speech Representations for Enhanced Environment Robustness" (arXiv 2302.09437;
    extended in arXiv 2403.08654).

    ``L_enh = mean_{real STFT frames} mean_bins | M * |Y| - |X| |`` with ``Y`` the noisy and
    ``X`` the clean STFT (n_fft 512, hop 160, window 400) and ``M`` the head's mask. The
    training loss adds ``lambda_enh * L_enh`` (default 2).

    Args:
        input: ``"cnn"``: the student's convolutional features (``(B, T, C)``, ``C = 512``
            for the Base CNN), what RobustDistiller's reference code feeds the head
            (``input_dim: 512``; the recipe's setting); ``"last"`` (default, kept for older
            runs): the student's last hidden state.
        lambda_enh: weight of the term in the total loss (default 2).
        hidden_size, num_layers: BiLSTM size (default 256, 3).
        dropout: LSTM and pre-output dropout (reference and recipe: 0.1; default 0).
        n_fft, hop_length, win_length: STFT (default 512, 160, 400).

    Raises:
        ValueError: unknown ``input``, ``"cnn"`` without CNN features (Whisper student), or
            ``dropout`` outside ``[0, 1)``.
    """

    def __init__(self, *, teacher_hidden_size: int, teacher_num_layers: int,
                 student_hidden_size: int, student_conv_dim: int | None = None,
                 input: str = "last", lambda_enh: float = 2.0, hidden_size: int = 256,
                 num_layers: int = 3, n_fft: int = 512, hop_length: int = 160,
                 win_length: int = 400, dropout: float = 0.0) -> None:
        super().__init__()
        if input not in ("last", "cnn"):
            raise ValueError(f"enhancement.input must be 'last' or 'cnn', got {input!r}")
        if input == "cnn" and student_conv_dim is None:
            raise ValueError("enhancement.input='cnn' needs a student with CNN features")
        self.input = input
        self.needs_extract_features = input == "cnn"
        self.lambda_enh = float(lambda_enh)
        self.stft = {"n_fft": n_fft, "hop_length": hop_length, "win_length": win_length}
        in_size = student_hidden_size if input == "last" else student_conv_dim
        upsample = max(1, round(320 / hop_length))
        self.head = EnhancementHead(in_size, n_fft // 2 + 1, hidden_size, num_layers, upsample,
                                    dropout)
        self._config = {"input": input, "input_size": in_size, "hidden_size": hidden_size,
                        "num_layers": num_layers, "dropout": dropout, **self.stft}

    def head_config(self) -> dict:
        """The head's layout: ``input``, its width, BiLSTM size, dropout and STFT settings."""
        return dict(self._config)

    def count_units(self, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """Real STFT frames of a micro-batch, for the trainer's normalisation.

        ``lengths``: ``(B,)`` samples; returns ``{"stft_frames": scalar}`` (sum over the batch
        of ``lengths // hop_length + 1``).
        """
        return {"stft_frames": stft_frame_lengths(lengths, self.stft["hop_length"]).sum()}

    def student_layers_read(self) -> list[int]:
        """``[-1]`` (the last hidden state) for input ``"last"``; none for ``"cnn"`` (it reads
        ``extract_features``, below every transformer layer)."""
        return [-1] if self.input == "last" else []

    def forward(self, inputs: DistillationInputs) -> dict[str, LossTerm]:
        """One term, ``l1``, summed over real STFT frames (unit ``stft_frames``)."""
        noisy = magnitude_stft(inputs.noisy, **self.stft)
        clean = magnitude_stft(inputs.clean, **self.stft)
        lengths = stft_frame_lengths(inputs.lengths, self.stft["hop_length"])
        if self.input == "last":
            features = inputs.student.hidden_states[-1]
        else:
            features = inputs.student.extract_features
        mask = self.head(features, inputs.student.frame_lengths, noisy.shape[1], lengths)
        per_frame = (mask * noisy - clean).abs().mean(dim=-1)
        real = (torch.arange(noisy.shape[1], device=noisy.device)[None] < lengths[:, None])
        return {"l1": LossTerm((per_frame * real).sum(), "stft_frames", self.lambda_enh)}
