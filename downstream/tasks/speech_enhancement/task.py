"""Speech enhancement: a BLSTM mask on the noisy magnitude STFT, SUPERB-style.

SUPERB's SE task ("SUPERB: Speech processing Universal PERformance Benchmark", arXiv:2105.01051;
the BLSTM mask head of its SUPERB-SG extension, arXiv:2203.06849): the frozen upstream hears the
noisy waveform; the featurizer's weighted sum of its hidden states (50 Hz) is repeated to the STFT
frame rate (100 Hz: n_fft 512, hop 160, window 400 Hann) and a BLSTM predicts a sigmoid mask on
the noisy magnitude. The loss is the mean squared error between ``log1p`` magnitudes (masked
noisy vs clean) over real frames; the waveform is rebuilt with the noisy phase (``torch.istft``).

Data: noisy/clean pairs are made from clean speech when the examples are made: training and dev
utterances get training noise (``train_noise_dir``; white noise when none is given) at an SNR
drawn uniformly from ``train_snr_db``, optionally reverberated with ``train_rir_dir``; the draw
is seeded by the run seed, split and utterance key. The runner encodes each example once, so each
training utterance has one fixed mixture for the whole run. Test inputs are the clean test speech
under the robustness-matrix condition (clean, test noise at each SNR, test reverberation). The
target (and metric reference) is the dry clean speech, except for reverberated utterances
(train or test), where it is by default the direct path + the first 50 ms of reflections of the
same room (``reverb_reference: early``, :func:`early_reverb_reference`): SI-SDR against dry
speech is meaningless under reverberation and a magnitude mask cannot undo early reflections.

Metrics (per utterance, averaged): PESQ wide-band (``pesq``), STOI (``pystoi``), SI-SDR
(zero-mean, :func:`robustdistill.metrics.si_sdr`), each for the enhanced output and the noisy
input, and the improvement (enhanced minus noisy; SI-SDRi from
:func:`robustdistill.metrics.si_sdr_improvement`). PESQ failures (e.g. no speech found) and
undefined SI-SDRs (a silent estimate or reference, ``SilentSignalError``) are logged, recorded
as NaN in the utterance's record (``null`` in ``items/<condition>.jsonl``) and left out of the
mean; the runner counts them per condition and metric in results.json's ``unscored``
(:func:`downstream.items.unscored_counts`), shown beside the value in the tables and cards.
Under the ``clean`` test condition the "noisy" input is the clean speech itself, so its scores
are the ceiling (PESQ 4.64, STOI 1, SI-SDR about 180 dB, the limit set by torchmetrics' eps) and
the improvements there only show how much the head degrades clean speech.

Tensor legend: ``B`` batch, ``T`` upstream frames (50 Hz), ``D`` featurizer width, ``F`` STFT
bins (257), ``K`` STFT frames (100 Hz), ``S`` samples (16 kHz).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np
import torch
from pesq import PesqError, pesq
from pystoi import stoi
from scipy.signal import fftconvolve
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from robustdistill.audio import SAMPLE_RATE
from robustdistill.augment import NoiseBank, RirBank, mix_at_snr, reverberate
from robustdistill.metrics import si_sdr, si_sdr_improvement
from robustdistill.metrics.enhancement import SilentSignalError

from ...base import Batch, EncodedExample, Example, Task, TaskConfig, pad_hidden
from ...conditions import Condition, TestCorruptor
from ...data import Utterance

logger = logging.getLogger(__name__)

#: Per-utterance scores; each metric is their mean over the utterances where it is finite.
_SE_METRICS = ("pesq", "stoi", "si_sdr", "noisy_pesq", "noisy_stoi", "noisy_si_sdr",
               "si_sdr_improvement", "pesq_improvement", "stoi_improvement")

__all__ = ["SPEECH_METRICS", "MaskHead", "SEHeadConfig", "SpeechEnhancementConfig",
           "SpeechEnhancementTask", "StftConfig", "early_reverb_reference", "speech_metrics"]


@dataclass
class StftConfig:
    """The STFT the mask is applied on (SUPERB SE settings).

    Attributes:
        n_fft: FFT size in samples (``F = n_fft // 2 + 1`` bins).
        hop_length: hop in samples (160 = 10 ms: twice the 50 Hz upstream frame rate); None:
            the upstream's frame hop (s3prl's SE: one STFT frame per upstream frame).
        win_length: Hann window length in samples.

    Raises:
        ValueError: (on construction) ``hop_length`` outside ``(0, win_length]`` or
            ``win_length`` outside ``(0, n_fft]``.
    """

    n_fft: int = 512
    hop_length: int | None = 160
    win_length: int = 400

    def __post_init__(self) -> None:
        if self.hop_length is not None and not 0 < self.hop_length <= self.win_length:
            raise ValueError(f"stft needs 0 < hop_length <= win_length, got {self.hop_length}, "
                             f"{self.win_length}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError("stft needs 0 < win_length <= n_fft, got "
                             f"{self.win_length}, {self.n_fft}")


@dataclass
class SEHeadConfig:
    """The BLSTM mask head.

    Attributes:
        hidden_size: LSTM units per direction.
        num_layers: BLSTM layers.
        dropout: dropout between BLSTM layers.
        output_dropout: dropout on the BLSTM output before the mask layer (s3prl's SepRNN
            applies its dropout there too).
        mask_activation: ``"sigmoid"`` (mask in [0, 1]) or ``"relu"`` (s3prl's SE: an
            unbounded non-negative mask).

    Raises:
        ValueError: (on construction) ``hidden_size`` or ``num_layers`` below 1, or
            ``dropout`` or ``output_dropout`` outside ``[0, 1)`` (1 zeroes every training
            input of the mask layer: nothing trains).
    """

    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    output_dropout: float = 0.0
    mask_activation: Literal["sigmoid", "relu"] = "sigmoid"

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError("head.hidden_size and head.num_layers must be >= 1")
        for name in ("dropout", "output_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"head.{name} must lie in [0, 1), got {getattr(self, name)}")


@dataclass
class SpeechEnhancementConfig(TaskConfig):
    """Speech enhancement settings (see the module docstring).

    Attributes:
        stft: see :class:`StftConfig`.
        head: see :class:`SEHeadConfig`.
        train_noise_dir: training/dev noise recordings (should differ from the test noise);
            None: white Gaussian noise.
        train_rir_dir: training/dev RIRs, used with probability ``train_reverb_prob``.
        train_rir_check: skip the ``train_rir_dir`` files that do not look like room impulse
            responses (:func:`~robustdistill.augment.rir_implausibility`; default); False keeps
            every readable, non-silent file.
        train_snr_db: ``[low, high]`` dB range of training/dev SNRs.
        train_reverb_prob: probability that a training/dev utterance is reverberated.
        train_crop_seconds: random crop of each training utterance (None: whole utterances).
        reverb_reference: the target / metric reference of a reverberated utterance.
            ``"early"`` (default): the dry speech convolved with the first
            ``early_reflection_ms`` of the same RIR after its direct path (direct path + early
            reflections, the usual dereverberation target, e.g. the REVERB challenge and
            ITU-T P.863's early/late split at 50 ms), so SI-SDR / PESQ / STOI measure removing
            the late reverberation (which a magnitude mask can partly do) and the noise, not
            the impossible inversion of early reflections. ``"dry"``: the dry speech (the
            previous behaviour; under reverberation its SI-SDR measured -15 to -57 dB for the
            unprocessed input and said nothing about the head). Noise-only conditions are
            unaffected.
        early_reflection_ms: length of the early part kept in the ``"early"`` reference, in
            milliseconds after the direct path.
        loss: ``"log1p_mse"`` (ours: mean squared error of ``log1p`` magnitudes over real
            frames and bins) or ``"npsm_mse"`` (s3prl's SE: squared error on the linear
            magnitude against the non-negative phase-sensitive target
            ``|S| * max(0, cos(angle(Y) - angle(S)))`` (Kolbaek et al., arXiv:1703.06284),
            summed over bins and frames, divided by the utterance's frames, averaged over the
            batch).

    Raises:
        ValueError: (on construction) a negative ``early_reflection_ms``, ``train_snr_db``
            not ``[low, high]`` with ``low <= high``, ``train_reverb_prob`` outside ``[0, 1]``
            or > 0 without ``train_rir_dir``, or ``train_crop_seconds <= 0``.
    """

    stft: StftConfig = field(default_factory=StftConfig)
    head: SEHeadConfig = field(default_factory=SEHeadConfig)
    train_noise_dir: str | None = None
    train_rir_dir: str | None = None
    train_rir_check: bool = True
    train_snr_db: list[float] = field(default_factory=lambda: [-5.0, 20.0])
    train_reverb_prob: float = 0.0
    train_crop_seconds: float | None = 3.0
    reverb_reference: Literal["early", "dry"] = "early"
    early_reflection_ms: float = 50.0
    loss: Literal["log1p_mse", "npsm_mse"] = "log1p_mse"

    def __post_init__(self) -> None:
        if self.early_reflection_ms < 0:
            raise ValueError(f"early_reflection_ms must be >= 0, got {self.early_reflection_ms}")
        if len(self.train_snr_db) != 2 or not self.train_snr_db[0] <= self.train_snr_db[1]:
            raise ValueError(f"train_snr_db must be [low, high], got {self.train_snr_db}")
        if not 0.0 <= self.train_reverb_prob <= 1.0:
            raise ValueError(f"train_reverb_prob must lie in [0, 1], got {self.train_reverb_prob}")
        if self.train_reverb_prob > 0 and self.train_rir_dir is None:
            raise ValueError("train_reverb_prob > 0 needs train_rir_dir")
        if self.train_crop_seconds is not None and self.train_crop_seconds <= 0:
            raise ValueError(f"train_crop_seconds must be > 0, got {self.train_crop_seconds}")


class MaskHead(nn.Module):
    """BLSTM -> linear -> sigmoid: a ``(B, K, F)`` magnitude mask from ``(B, T, D)`` features.

    STFT frame ``j`` (centred at ``j * hop`` samples) reads feature frame
    ``floor(j / upsample)``: the 50 Hz features are repeated ``upsample`` times to the STFT
    frame rate (any ratio: 1.25 for a 256-sample hop, 0.4 for an upstream with 4 ms frames,
    whose features are then read every 2.5 frames) and cut to ``K`` STFT frames; where an
    utterance has more STFT frames than repeated features (the STFT's centred last frames),
    its own last real feature frame is repeated, so an utterance's mask does not depend on the
    other utterances of its batch. (s3prl's ``_match_length`` pads a
    batch with the batch's last frame, which is zero padding for all but the longest
    utterance; its test loader uses batches of one, where the two agree.)

    The pairing is by index, not by nearest centre: a wav2vec 2.0-style upstream's frame ``k``
    reads samples ``[320 k, 320 k + 400)`` (centred at ``320 k + 200``), so with a 160-sample
    hop STFT frame ``2 k`` (centred at ``320 k``) reads frame ``k``, 200 samples later, not
    frame ``k - 1``, 120 samples earlier; frame ``2 k + 1`` is 40 samples from its feature's
    centre. s3prl's SE (one STFT frame per upstream frame) and RobustDistiller's head
    (``repeat_interleave(feat, 2)``) pair the same way; the BLSTM can learn the fixed offset.
    A Whisper upstream's frame ``k`` is centred at ``320 k``: there STFT frame ``2 k`` is on it.

    Args:
        input_size: ``D``.
        num_bins: ``F``.
        upsample: STFT frames per upstream frame, ``upstream hop / STFT hop`` (2 for 20 ms
            frames and a 10 ms hop); an int or an exact :class:`fractions.Fraction`.
        config: see :class:`SEHeadConfig`.

    Raises:
        ValueError: ``upsample`` not above 0.
    """

    def __init__(self, input_size: int, num_bins: int, upsample: int | Fraction,
                 config: SEHeadConfig):
        super().__init__()
        if not upsample > 0:
            raise ValueError(f"upsample must be > 0, got {upsample}")
        self.upsample = upsample
        self.lstm = nn.LSTM(input_size, config.hidden_size, config.num_layers, batch_first=True,
                            bidirectional=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.output_dropout = nn.Dropout(config.output_dropout)
        self.proj = nn.Linear(2 * config.hidden_size, num_bins)
        self.activation = torch.sigmoid if config.mask_activation == "sigmoid" else torch.relu

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor,
                stft_lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` features with ``(B,)`` real frames, and ``(B,)`` STFT frame counts ->
        ``(B, max K, F)`` mask in ``[0, 1]`` (sigmoid) or ``[0, inf)`` (relu); values past each
        length are padding."""
        k = int(stft_lengths.max())
        # STFT frame j of utterance b reads feature frame min(floor(j / upsample), T_b - 1)
        ratio = Fraction(self.upsample)
        steps = torch.arange(k, device=features.device) * ratio.denominator // ratio.numerator
        last = (frame_lengths.to(features.device) - 1).clamp(min=0)
        index = torch.minimum(steps[None, :], last[:, None])  # (B, K)
        x = features.gather(1, index.unsqueeze(-1).expand(-1, -1, features.shape[-1]))
        packed = pack_padded_sequence(x, stft_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=k)
        return self.activation(self.proj(self.output_dropout(out)))


class SpeechEnhancementTask(Task):
    """SUPERB speech enhancement with noisy/clean pairs made from clean speech (module doc)."""

    name = "speech_enhancement"
    config_class = SpeechEnhancementConfig
    primary_metric = "pesq"
    higher_is_better = True

    def __init__(self, config: SpeechEnhancementConfig, seed: int = 0) -> None:
        super().__init__(config, seed)
        self.noise_bank: NoiseBank | None = None
        self.rir_bank: RirBank | None = None
        self.frames_per_second = 50.0  # set by the runner from the upstream
        cfg = config.stft
        self.window = torch.hann_window(cfg.win_length)

    @property
    def hop_length(self) -> int:
        """STFT hop in samples: ``stft.hop_length``, or the upstream's frame hop when None."""
        hop = self.config.stft.hop_length
        return hop if hop is not None else int(round(SAMPLE_RATE / self.frames_per_second))

    # ---- data -------------------------------------------------------------------------------
    def setup(self, splits: dict[str, list[Utterance]]) -> None:
        """Load the training noise / RIR banks once.

        Raises:
            FileNotFoundError, robustdistill.audio.AudioError: unusable folders.
        """
        cfg = self.config
        if cfg.train_noise_dir:
            self.noise_bank = NoiseBank.from_folder(cfg.train_noise_dir)
        else:
            logger.warning("no train_noise_dir: training/dev pairs use white Gaussian noise")
        if cfg.train_rir_dir and cfg.train_reverb_prob > 0:
            self.rir_bank = RirBank.from_folder(cfg.train_rir_dir, check=cfg.train_rir_check,
                                                check_option="train_rir_check: false")

    def make_example(self, utterance: Utterance, waveform: np.ndarray, split: str,
                     condition: Condition, corruptor: TestCorruptor) -> Example:
        """Noisy input + clean target: training noise for train/dev, the condition for test."""
        clean = waveform.astype(np.float32, copy=False)
        info: dict = {}
        target = clean
        if split == "test":
            noisy = corruptor.apply(clean, condition, utterance.key)
            info = {"snr_db": condition.snr_db, "reverb": condition.reverb}
            if condition.reverb and self.config.reverb_reference == "early":
                rir = corruptor.draw(utterance.key, clean.shape[0]).rir
                target = early_reverb_reference(clean, rir, self.config.early_reflection_ms)
        else:
            noisy, info = self._training_mixture(clean, utterance.key, split)
            if info.pop("rir", None) is not None:
                target = info.pop("target")
        info["reference"] = (self.config.reverb_reference if info.get("reverb") else "dry")
        return Example(utterance.key, noisy, target, utterance.speaker, info)

    def _training_mixture(self, clean: np.ndarray, key: str, split: str):
        cfg = self.config
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode()), zlib.crc32(split.encode())])
        out, reverb, extra = clean, False, {}
        if self.rir_bank is not None and rng.random() < cfg.train_reverb_prob:
            rir = self.rir_bank.rirs[int(rng.integers(0, len(self.rir_bank)))]
            out = reverberate(out, rir)
            reverb = True
            if cfg.reverb_reference == "early":
                extra = {"rir": rir, "target": early_reverb_reference(
                    clean, rir, cfg.early_reflection_ms)}
        snr = float(rng.uniform(*cfg.train_snr_db))
        if self.noise_bank is not None:
            noise, _ = self.noise_bank.draw(out.shape[0], rng)
            if not np.any(noise):
                noise = rng.standard_normal(out.shape[0]).astype(np.float32)
        else:
            noise = rng.standard_normal(out.shape[0]).astype(np.float32)
        return mix_at_snr(out, noise, snr), {"snr_db": snr, "reverb": reverb, **extra}

    def collate(self, encoded: Sequence[EncodedExample], train: bool, rng: np.random.Generator
                ) -> Batch:
        """Pad; at training time crop each utterance to ``train_crop_seconds`` at a random
        frame, cutting its hidden states, noisy input and clean target consistently."""
        crop = self.config.train_crop_seconds
        if not train or crop is None:
            return super().collate(encoded, train, rng)
        spf = int(round(SAMPLE_RATE / self.frames_per_second))
        frames = max(1, int(crop * self.frames_per_second))
        hidden, examples = [], []
        for e in encoded:
            n = e.num_frames
            start = int(rng.integers(0, n - frames + 1)) if n > frames else 0
            h = e.hidden[:, start : start + frames]
            s0, s1 = start * spf, (start + h.shape[1]) * spf
            ex = e.example
            examples.append(dataclasses.replace(ex, waveform=ex.waveform[s0:s1],
                                                target=ex.target[s0:s1]))
            hidden.append(h)
        padded, lengths = pad_hidden(hidden)
        return Batch(padded, lengths, examples)

    # ---- model ------------------------------------------------------------------------------
    def build_head(self, input_size: int) -> nn.Module:
        """A :class:`MaskHead` over ``n_fft // 2 + 1`` STFT bins; STFT frame ``j`` reads the
        feature frame at its time (``upsample = upstream hop / STFT hop``, exact, not rounded:
        a rounded 1.25 or 2.5 read frames seconds away from their STFT frame)."""
        stft = self.config.stft
        upsample = Fraction(int(round(SAMPLE_RATE / self.frames_per_second)), self.hop_length)
        return MaskHead(input_size, stft.n_fft // 2 + 1, upsample, self.config.head)

    def _stft(self, waves: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
        """``B`` waves of ``S_i`` samples -> complex ``(B, max K, F)`` STFT, zero after each
        utterance's ``K_i = S_i // hop + 1`` frames, and ``(B,)`` frame counts.

        Each wave is transformed on its own (centred, reflect padding at both of its ends), so
        its frames do not depend on the batch: a batch's zero padding would otherwise be
        reflected into the last frames of its shorter utterances.
        """
        cfg = self.config.stft
        window = self.window.to(device)
        # reflect padding needs more samples than n_fft // 2: a shorter wave is zero-padded
        specs = [torch.stft(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).to(device),
                            cfg.n_fft, self.hop_length, cfg.win_length, window, center=True,
                            pad_mode="reflect" if len(w) > cfg.n_fft // 2 else "constant",
                            return_complex=True).transpose(0, 1) for w in waves]
        lengths = torch.tensor([s.shape[0] for s in specs], device=device)
        out = specs[0].new_zeros(len(specs), int(lengths.max()), specs[0].shape[1])
        for i, s in enumerate(specs):
            out[i, : s.shape[0]] = s
        return out, lengths

    def _masked(self, head, features, frame_lengths, examples):
        noisy_spec, k = self._stft([e.waveform for e in examples], features.device)
        mask = head(features, frame_lengths, k)
        return noisy_spec, mask, k

    def training_loss(self, head: nn.Module, features: torch.Tensor, frame_lengths: torch.Tensor,
                      examples: list[Example]) -> torch.Tensor:
        """``loss: log1p_mse``: MSE between ``log1p`` magnitudes of masked noisy and clean
        speech over real frames. ``loss: npsm_mse``: s3prl's SE loss (see
        :class:`SpeechEnhancementConfig`)."""
        noisy_spec, mask, k = self._masked(head, features, frame_lengths, examples)
        clean_spec, _ = self._stft([e.target for e in examples], features.device)
        valid = (torch.arange(mask.shape[1], device=k.device)[None] < k[:, None]).unsqueeze(-1)
        if self.config.loss == "npsm_mse":
            phase = torch.cos(torch.angle(noisy_spec) - torch.angle(clean_spec))
            target = clean_spec.abs() * torch.relu(phase)
            squared = (mask * noisy_spec.abs() - target) ** 2 * valid
            return (squared.sum(dim=(1, 2)) / k).mean()
        estimate = torch.log1p(mask * noisy_spec.abs())
        target = torch.log1p(clean_spec.abs())
        squared = (estimate - target) ** 2 * valid
        return squared.sum() / (valid.sum() * mask.shape[-1])

    def enhance(self, head: nn.Module, features: torch.Tensor, frame_lengths: torch.Tensor,
                examples: list[Example]) -> list[np.ndarray]:
        """Enhanced ``(S_i,)`` float32 waveforms (noisy phase, ``torch.istft``) from ``(B, T, D)``
        features with ``(B,)`` real frames."""
        cfg = self.config.stft
        noisy_spec, mask, k = self._masked(head, features, frame_lengths, examples)
        out = []
        for i, e in enumerate(examples):
            spec = (mask[i, : k[i]] * noisy_spec[i, : k[i]]).transpose(0, 1)  # (F, K)
            wave = torch.istft(spec, cfg.n_fft, self.hop_length, cfg.win_length,
                               self.window.to(spec.device), center=True, length=len(e.waveform))
            out.append(wave.float().cpu().numpy())
        return out

    def evaluate(self, head: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor,
                                                                  list[Example]]]
                 ) -> dict[str, float]:
        """Mean PESQ (wb), STOI, SI-SDR of enhanced and noisy speech, and the improvements.

        Every score is per utterance (records in ``last_items``: ``key`` and every name of
        ``_SE_METRICS``, NaN where undefined); a mean is over the utterances where that score
        is finite (the others are counted as ``unscored`` by the runner), and an improvement is the mean of per-utterance
        differences (enhanced minus noisy of the **same** utterance, both finite), never a
        difference of means over different subsets.
        """
        self.last_items = []
        for features, frame_lengths, examples in batches:
            enhanced_waves = self.enhance(head, features, frame_lengths, examples)
            for e, enhanced in zip(examples, enhanced_waves, strict=True):
                record: dict = {"key": e.key}
                for prefix, signal in (("", enhanced), ("noisy_", e.waveform)):
                    for name, value in speech_metrics(signal, e.target, e.key).items():
                        record[prefix + name] = value
                try:
                    record["si_sdr_improvement"] = float(
                        si_sdr_improvement(enhanced, e.waveform, e.target))
                except SilentSignalError as err:  # SI-SDR undefined (logged)
                    logger.warning("SI-SDR improvement undefined on %s (%s); left out of the "
                                   "mean", e.key, err)
                    record["si_sdr_improvement"] = float("nan")
                for name in ("pesq", "stoi"):
                    record[f"{name}_improvement"] = record[name] - record[f"noisy_{name}"]
                self.last_items.append(record)
        everything = np.arange(len(self.last_items))
        return {name: self.item_statistic(self.last_items, name)(everything)
                for name in _SE_METRICS}

    @classmethod
    def item_statistic(cls, items, metric):
        """Any per-utterance score (``pesq``, ``noisy_stoi``, ``pesq_improvement``...): the
        mean over the resampled utterances where it is finite (NaN PESQ failures and undefined
        SI-SDRs left out; :func:`downstream.items.unscored_counts` counts them); NaN when
        none is finite. Each upstream's mean so covers its own scored utterances; a paired
        comparison of two upstreams first keeps the utterances both scored
        (:func:`downstream.paired.jointly_scored`), so that both means are over the same
        ones."""
        if metric not in _SE_METRICS:
            return None
        values = np.array([r[metric] for r in items], dtype=np.float64)

        def mean(idx):
            v = values[idx]
            v = v[np.isfinite(v)]
            return float(v.mean()) if v.size else float("nan")
        return mean

    def summary(self) -> dict:
        """The training noise (file names or ``"white"``), RIR file names and SNR range (dB)."""
        return {
            "train_noise": list(self.noise_bank.names) if self.noise_bank else "white",
            "train_rirs": list(self.rir_bank.names) if self.rir_bank else [],
            "train_snr_db": list(self.config.train_snr_db),
        }


def early_reverb_reference(clean: np.ndarray, rir: np.ndarray, early_ms: float = 50.0,
                           sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Direct path + early reflections of reverberant speech: the dereverberation reference.

    Args:
        clean: ``(S,)`` dry speech.
        rir: ``(K,)`` RIR as held by a :class:`~robustdistill.augment.RirBank` (direct path at
            index 0, unit energy: what :func:`~robustdistill.augment.reverberate` convolves
            with).
        early_ms: milliseconds of the RIR kept after the direct path.
        sample_rate: Hz.

    Returns:
        ``(S,)`` float32 ``(clean * rir[:early + 1])[:S]``: time-aligned with the reverberant
        speech, same scale (the truncated RIR is not renormalised).

    Raises:
        ValueError: negative ``early_ms`` or empty inputs.
    """
    if early_ms < 0:
        raise ValueError(f"early_ms must be >= 0, got {early_ms}")
    clean = np.asarray(clean, dtype=np.float32)
    rir = np.asarray(rir, dtype=np.float32)
    if clean.size == 0 or rir.size == 0:
        raise ValueError("early_reverb_reference needs non-empty speech and RIR")
    taps = rir[: int(round(early_ms * sample_rate / 1000.0)) + 1]
    return fftconvolve(clean, taps, mode="full")[: clean.size].astype(np.float32)


#: Shortest pair :func:`speech_metrics` scores: one 256-sample STOI frame at 10 kHz, i.e.
#: 410 samples at 16 kHz (pystoi fails with an AxisError on fewer).
MIN_METRIC_SAMPLES = 410


#: The scores :func:`speech_metrics` gives, in its order.
SPEECH_METRICS = ("pesq", "stoi", "si_sdr")

#: pystoi's value (with a ``RuntimeWarning``) when the reference keeps fewer than 30 STOI
#: frames (384 ms at its 10 kHz) once its silent frames are removed: no score, but a mean
#: would take it as one.
_STOI_UNDEFINED = 1e-5


def _stoi(estimate: np.ndarray, reference: np.ndarray, key: str) -> float:
    """STOI of ``estimate`` against ``reference`` (``(S,)`` float64, 16 kHz), or NaN (logged)
    when it is undefined: a silent reference, or one with fewer than 30 STOI frames of speech
    (about 0.4 s; a short crop, or speech in only a fraction of it)."""
    if not np.any(reference):
        reason = "the reference is silent"
    else:
        with warnings.catch_warnings():  # said below, once per pair with its key
            warnings.filterwarnings("ignore", "Not enough STFT frames", RuntimeWarning)
            value = float(stoi(reference, estimate, SAMPLE_RATE))
        if value != _STOI_UNDEFINED:
            return value
        reason = "fewer than 30 STOI frames, about 0.4 s, of speech in the reference"
    logger.warning("STOI undefined on %s (%s); left out of the mean", key, reason)
    return float("nan")


def speech_metrics(estimate: np.ndarray, reference: np.ndarray, key: str = "",
                   metrics: Sequence[str] = SPEECH_METRICS) -> dict[str, float]:
    """PESQ (wide-band, ITU-T P.862.2), STOI and SI-SDR (dB) of one 16 kHz utterance.

    Args:
        estimate: ``(S,)`` float, the enhanced (or noisy) speech.
        reference: ``(S,)`` float, the clean speech.
        key: utterance id for the log message when PESQ fails.
        metrics: the scores computed, some of :data:`SPEECH_METRICS` (default: all; PESQ is
            the slow one, about 0.13 s per 2 s pair on one CPU thread, STOI about 0.02 s).

    Returns:
        ``{"pesq", "stoi", "si_sdr"}`` (those of ``metrics``); ``pesq`` is NaN (logged) when
        PESQ cannot score the pair (e.g. no speech detected), ``si_sdr`` is NaN (logged) when
        either signal is silent (SI-SDR undefined; torchmetrics would report 0 dB for a
        silent estimate), ``stoi`` is NaN (logged) when the reference is silent (all zeros,
        e.g. an utterance whose first ``max_seconds`` are silence) or holds fewer than 30
        STOI frames (about 0.4 s) of speech (e.g. a short crop): pystoi returns 1e-5 for
        both, which was averaged in as a score before.

    Length: at least ``MIN_METRIC_SAMPLES`` (410 samples, 25.6 ms: one 256-sample STOI frame
    at STOI's 10 kHz; pystoi crashes on less). PESQ needs 0.25 s (4000 samples) and scores
    shorter pairs NaN (logged, code -6); STOI needs 30 of its frames (about 0.4 s) of speech
    and is NaN (logged) for fewer.

    Raises:
        ValueError: not 1-D, different lengths, fewer than ``MIN_METRIC_SAMPLES`` samples
            (empty included), NaN / Inf samples, or a name in ``metrics`` that is not one of
            :data:`SPEECH_METRICS`.
    """
    unknown = [name for name in metrics if name not in SPEECH_METRICS]
    if unknown:
        raise ValueError(f"unknown speech metric(s) {unknown}; known: {list(SPEECH_METRICS)}")
    estimate = np.asarray(estimate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if estimate.ndim != 1 or reference.ndim != 1:
        raise ValueError(f"expected (S,) mono signals, got estimate {estimate.shape} and "
                         f"reference {reference.shape}")
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate {estimate.shape} and reference {reference.shape} differ")
    if estimate.size < MIN_METRIC_SAMPLES:
        raise ValueError(f"{key or 'utterance'}: {estimate.size} samples is too short for "
                         f"STOI/PESQ (at least {MIN_METRIC_SAMPLES} samples at {SAMPLE_RATE} Hz)")
    scores: dict[str, float] = {}
    if "pesq" in metrics:
        score = pesq(SAMPLE_RATE, reference, estimate, "wb", on_error=PesqError.RETURN_VALUES)
        if score < 0:
            logger.warning("PESQ failed on %s (code %s); left out of the mean", key, score)
            score = float("nan")
        scores["pesq"] = float(score)
    if "stoi" in metrics:
        scores["stoi"] = _stoi(estimate, reference, key)
    if "si_sdr" in metrics:
        try:
            scores["si_sdr"] = float(si_sdr(estimate, reference))
        except SilentSignalError as err:  # a silent signal: undefined, not 0 dB
            logger.warning("SI-SDR undefined on %s (%s); left out of the mean", key, err)
            scores["si_sdr"] = float("nan")
    return scores
