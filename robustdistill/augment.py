"""On-the-fly corruption of the student's input for robust distillation.

Implements the data side of RobustDistiller ("RobustDistiller: Compressing Universal Speech
Representations for Enhanced Environment Robustness", arXiv 2302.09437; extended in
"An Efficient End-to-End Approach to Noise Invariant Speech Features via Multi-Task Learning",
arXiv 2403.08654), as specified in ``docs/objectives.md`` section 2: the teacher sees the clean
crop, the student a corrupted copy of the same crop with the same length and time alignment.

Per utterance one kind is drawn: ``"noise"``, ``"reverb"``, ``"noise+reverb"`` or ``"none"``
(probability 0.25 each by default).

* Noise: a random segment of a noise recording (looped when shorter than the crop) or white
  Gaussian noise (default 70% / 30% when recordings are given, 100% white otherwise), scaled so
  that ``10 * log10(P_speech / P_noise)`` over the whole crop equals an SNR drawn uniformly in
  ``[snr_min, snr_max]`` dB (``P`` = mean square). The mix is not rescaled afterwards, so the
  speech in the student's input keeps exactly the scale of the teacher's clean input (values may
  exceed 1; nothing downstream clips float audio).
* Reverberation: convolution with a room impulse response (RIR) whose direct path (its first
  sample within 20 dB of the largest; see :func:`prepare_rir` for why not the largest itself) is
  moved to index 0 and which is normalised to unit energy (default; ``"peak"``: unit largest
  sample), keeping the first ``len(x)`` samples, so the reverberant speech stays time-aligned
  with the clean speech and has about the same power. RIRs come from a folder or, without one,
  from a bank of shoebox rooms simulated once with pyroomacoustics.
* Noise and reverberation: reverberate first, then add noise; the SNR is then measured against
  the reverberant speech (the signal the student actually hears), as in a real room where the
  noise source is recorded separately from the reverberant talker.

audiomentations is not used: its transforms draw their parameters from Python's global
``random`` state and ``AddBackgroundNoise`` re-reads a noise file on every call (0.43 removed
its cache), which breaks per-utterance seeding from a caller's generator and loading once;
``ApplyImpulseResponse`` also keeps the RIR's direct-path delay, shifting the student's input.

Every random choice comes from a :class:`numpy.random.Generator` that the caller passes in (the
trainer derives it from seed, step, rank and micro-batch), so the same generator state gives
bit-identical output; no global random state is used.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyroomacoustics as pra
import torch
from scipy.signal import fftconvolve

from robustdistill.audio import SAMPLE_RATE, AudioError, list_audio_files, load_audio

__all__ = [
    "KINDS",
    "AugmentationConfig",
    "CorruptionInfo",
    "Corruptor",
    "NoiseBank",
    "RirBank",
    "mix_at_snr",
    "noise_segment",
    "prepare_rir",
    "reverberate",
    "simulate_rir_bank",
]

logger = logging.getLogger(__name__)

#: The corruption kinds, in the order of their probabilities in :meth:`Corruptor.probabilities`.
KINDS = ("noise", "reverb", "noise+reverb", "none")

RirNormalization = Literal["energy", "peak"]


@dataclass
class AugmentationConfig:
    """Settings of the student-input corruption (RobustDistiller, arXiv 2302.09437 / 2403.08654).

    Works with ``transformers.HfArgumentParser``. Validated on construction: a bad value raises
    ``ValueError`` naming the field. Folders are checked when the :class:`Corruptor` is built.
    """

    enabled: bool = field(
        default=True,
        metadata={"help": "Corrupt the student's input; false gives it the clean crop."},
    )
    noise_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of noise recordings (searched recursively; any rate and channel "
            "count). Without it all noise is white Gaussian noise."
        },
    )
    rir_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of room impulse responses (any rate and channel count). Without it "
            "a bank of rooms is simulated once with pyroomacoustics."
        },
    )
    p_noise: float = field(default=0.25, metadata={"help": "Probability of additive noise only."})
    p_reverb: float = field(default=0.25, metadata={"help": "Probability of reverberation only."})
    p_noise_reverb: float = field(
        default=0.25, metadata={"help": "Probability of reverberation followed by noise."}
    )
    p_none: float = field(default=0.25, metadata={"help": "Probability of the clean crop."})
    noise_file_prob: float = field(
        default=0.7,
        metadata={
            "help": "Probability that added noise comes from a noise recording rather than "
            "white Gaussian noise (ignored without noise_dir)."
        },
    )
    snr_min: float = field(default=0.0, metadata={"help": "Lowest SNR in dB (uniform draw)."})
    snr_max: float = field(default=20.0, metadata={"help": "Highest SNR in dB (uniform draw)."})
    num_simulated_rooms: int = field(
        default=24, metadata={"help": "Rooms simulated once when no rir_dir is given."}
    )
    rt60_min: float = field(default=0.2, metadata={"help": "Lowest RT60 (s) of simulated rooms."})
    rt60_max: float = field(default=1.0, metadata={"help": "Highest RT60 (s) of simulated rooms."})
    room_max_order: int = field(
        default=30,
        metadata={
            "help": "Cap on the image-source order of simulated rooms (bounds the bank's build "
            "time; long-RT60 rooms get a shorter tail than Sabine's formula asks for)."
        },
    )
    rir_normalization: RirNormalization = field(
        default="energy",
        metadata={"help": "Scale RIRs to unit energy ('energy') or a unit direct path ('peak')."},
    )
    rir_direct_path_db: float = field(
        default=20.0,
        metadata={
            "help": "A RIR's direct path (moved to index 0) is its first sample within this many "
            "dB of its largest one; 0 aligns on the largest sample."
        },
    )
    curriculum_steps: int = field(
        default=0,
        metadata={
            "help": "Steps over which the lowest SNR moves from snr_max to snr_min and the "
            "reverberation probabilities from 0 to their targets; 0 turns the curriculum off."
        },
    )

    def __post_init__(self) -> None:
        probs = {
            "p_noise": self.p_noise,
            "p_reverb": self.p_reverb,
            "p_noise_reverb": self.p_noise_reverb,
            "p_none": self.p_none,
        }
        for name, value in probs.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative probability, got {value}")
        total = sum(probs.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"p_noise + p_reverb + p_noise_reverb + p_none must sum to 1, got {total:.6g} "
                f"({', '.join(f'{k}={v}' for k, v in probs.items())})"
            )
        if not 0.0 <= self.noise_file_prob <= 1.0:
            raise ValueError(f"noise_file_prob must be in [0, 1], got {self.noise_file_prob}")
        if not (math.isfinite(self.snr_min) and math.isfinite(self.snr_max)):
            raise ValueError(
                f"snr_min and snr_max must be finite, got {self.snr_min}, {self.snr_max}"
            )
        if self.snr_min > self.snr_max:
            raise ValueError(f"snr_min ({self.snr_min}) must not exceed snr_max ({self.snr_max})")
        if self.num_simulated_rooms < 1:
            raise ValueError(f"num_simulated_rooms must be >= 1, got {self.num_simulated_rooms}")
        if not self.rt60_min > 0:
            raise ValueError(f"rt60_min must be > 0 seconds, got {self.rt60_min}")
        if self.rt60_max < self.rt60_min:
            raise ValueError(
                f"rt60_max ({self.rt60_max}) must not be below rt60_min ({self.rt60_min})"
            )
        if self.room_max_order < 1:
            raise ValueError(f"room_max_order must be >= 1, got {self.room_max_order}")
        if self.rir_normalization not in ("energy", "peak"):
            raise ValueError(
                f"rir_normalization must be 'energy' or 'peak', got {self.rir_normalization!r}"
            )
        if not self.rir_direct_path_db >= 0:
            raise ValueError(f"rir_direct_path_db must be >= 0 dB, got {self.rir_direct_path_db}")
        if self.curriculum_steps < 0:
            raise ValueError(f"curriculum_steps must be >= 0, got {self.curriculum_steps}")


@dataclass(frozen=True)
class CorruptionInfo:
    """What was done to one utterance.

    Attributes:
        kind: one of :data:`KINDS`.
        snr_db: the SNR in dB of the added noise; None when no noise was added (a kind without
            noise, or silent speech, which is returned unchanged).
        rir_index: index into the :class:`RirBank` of the RIR used; None without reverberation.
        noise_index: index into the :class:`NoiseBank` of the recording used; None for white
            noise or when no noise was added.
    """

    kind: str
    snr_db: float | None = None
    rir_index: int | None = None
    noise_index: int | None = None


# --------------------------------------------------------------------------------------------
# Plain functions (also used by evaluation at fixed conditions)
# --------------------------------------------------------------------------------------------


def _check_signal(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D float array; AudioError for other shapes, emptiness, NaN/Inf."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D (samples,) waveform, got shape {x.shape}")
    if x.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise AudioError(f"{name}: audio contains NaN or Inf samples")
    return x


def _power(x: np.ndarray) -> float:
    """Mean square of ``x``, computed in float64."""
    # Not np.dot: a threaded BLAS call costs milliseconds on a busy machine.
    return float(np.mean(np.square(x, dtype=np.float64)))


def noise_segment(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample segment of ``noise``, looping the noise when it is shorter.

    Args:
        noise: ``(N,)`` waveform.
        length: wanted number of samples (> 0).
        rng: source of the random start offset.

    Returns:
        ``(length,)`` array of ``noise``'s dtype. When ``N >= length`` the segment is contiguous
        (start uniform in ``[0, N - length]``); otherwise ``noise`` is tiled from a random start.

    Raises:
        AudioError: empty or non-finite noise.
        ValueError: ``length < 1``.
    """
    noise = _check_signal(noise, "noise")
    if length < 1:
        raise ValueError(f"length must be >= 1 sample, got {length}")
    n = noise.size
    if n >= length:
        start = int(rng.integers(0, n - length + 1))
        return noise[start : start + length]
    start = int(rng.integers(0, n))
    return np.take(noise, np.arange(start, start + length), mode="wrap")


def mix_at_snr(
    clean: np.ndarray,
    noise: np.ndarray,
    snr_db: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Add ``noise`` to ``clean`` at exactly ``snr_db``, measured over the whole crop.

    The noise (a segment of it, see :func:`noise_segment`, when its length differs from the
    speech) is scaled so that ``10 * log10(mean(clean**2) / mean(scaled_noise**2)) == snr_db``.
    The mix is not rescaled, so the speech keeps its scale (RobustDistiller, arXiv 2302.09437).

    Args:
        clean: ``(S,)`` speech (or reverberant speech).
        noise: ``(N,)`` noise, any length.
        snr_db: target SNR in dB (any finite value; negative means more noise than speech).
        rng: needed only when ``N != S``, to choose the segment.

    Returns:
        ``(S,)`` float32 ``clean + scaled noise``. Silent speech (zero power) is returned
        unchanged (logged at debug level): no SNR can be defined for it.

    Raises:
        AudioError: empty, non-1-D or non-finite input; silent (zero-power) noise.
        ValueError: non-finite ``snr_db``; ``rng`` missing when a segment must be chosen.
    """
    clean = _check_signal(clean, "speech")
    noise = _check_signal(noise, "noise")
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    if noise.size != clean.size:
        if rng is None:
            raise ValueError(
                f"noise has {noise.size} samples, speech {clean.size}: pass rng to choose a segment"
            )
        noise = noise_segment(noise, clean.size, rng)
    p_speech = _power(clean)
    if p_speech == 0.0:
        logger.debug("silent speech (zero power): returned without noise")
        return clean.astype(np.float32, copy=True)
    p_noise = _power(noise)
    if p_noise == 0.0:
        raise AudioError("noise segment is silent (zero power): cannot scale it to an SNR")
    scale = math.sqrt(p_speech / (p_noise * 10.0 ** (snr_db / 10.0)))
    mixed = clean.astype(np.float64) + scale * noise.astype(np.float64)
    return mixed.astype(np.float32)


def prepare_rir(
    rir: np.ndarray,
    normalization: RirNormalization = "energy",
    direct_path_db: float = 20.0,
) -> np.ndarray:
    """Align a room impulse response on its direct path and normalise it.

    The direct path is taken as the first sample whose magnitude is within ``direct_path_db``
    dB of the largest one; the samples before it are dropped, so convolving keeps the speech
    time-aligned. ``direct_path_db=0`` aligns on the largest sample itself, which is not always
    the direct path: in measured RIRs a cluster of reflections can be stronger (two of the four
    rooms in ``shared/data/rir`` have their largest tap 8-35 ms after the direct sound, with
    12-20% of the energy before it). The sign is chosen so that the largest sample of the first
    16 samples (1 ms at 16 kHz) is positive, keeping the speech's polarity. Idempotent.

    Args:
        rir: ``(K,)`` impulse response at the speech's sample rate.
        normalization: ``"energy"`` (``sum(h**2) == 1``: the reverberant speech has about the
            speech's power) or ``"peak"`` (``max|h| == 1``).
        direct_path_db: onset threshold in dB below the largest sample (>= 0).

    Returns:
        ``(K - onset,)`` float32.

    Raises:
        AudioError: empty, non-finite or all-zero RIR.
        ValueError: unknown ``normalization`` or negative ``direct_path_db``.
    """
    if not direct_path_db >= 0:
        raise ValueError(f"direct_path_db must be >= 0 dB, got {direct_path_db}")
    rir = _check_signal(rir, "RIR").astype(np.float64)
    magnitude = np.abs(rir)
    peak = float(magnitude.max())
    if peak == 0.0:
        raise AudioError("RIR is all zeros")
    onset = int(np.argmax(magnitude >= peak * 10.0 ** (-direct_path_db / 20.0)))
    aligned = rir[onset:]
    head = aligned[:16]
    sign = np.sign(head[np.argmax(np.abs(head))])
    if normalization == "energy":
        aligned = aligned * (sign / math.sqrt(float(np.sum(np.square(aligned)))))
    elif normalization == "peak":
        aligned = aligned * (sign / peak)
    else:
        raise ValueError(f"normalization must be 'energy' or 'peak', got {normalization!r}")
    return aligned.astype(np.float32)


def reverberate(
    clean: np.ndarray,
    rir: np.ndarray,
    normalization: RirNormalization = "energy",
    direct_path_db: float = 20.0,
) -> np.ndarray:
    """Convolve speech with a room impulse response, keeping length and direct-path alignment.

    The RIR is first passed through :func:`prepare_rir` (direct path moved to index 0,
    normalised; a no-op for RIRs of a :class:`RirBank` built with the same settings), then
    ``fftconvolve(clean, rir)[:len(clean)]``.

    Args:
        clean: ``(S,)`` speech.
        rir: ``(K,)`` impulse response at the speech's sample rate (any delay and scale).
        normalization, direct_path_db: see :func:`prepare_rir`.

    Returns:
        ``(S,)`` float32 reverberant speech.

    Raises:
        AudioError: empty, non-1-D or non-finite input; all-zero RIR.
    """
    clean = _check_signal(clean, "speech")
    # Taps beyond len(clean) cannot reach the kept samples: drop them before the FFT.
    h = prepare_rir(rir, normalization, direct_path_db)[: clean.size]
    wet = fftconvolve(clean.astype(np.float32, copy=False), h, mode="full")[: clean.size]
    return wet.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# Banks, loaded or simulated once
# --------------------------------------------------------------------------------------------


def _load_folder(root: str | os.PathLike, sample_rate: int, what: str) -> tuple[list, list]:
    """Load every readable, non-silent audio file below ``root``; skip (and log) the others."""
    files = list_audio_files(root)
    waves, names = [], []
    for path in files:
        try:
            wave = load_audio(path, target_sr=sample_rate)
        except AudioError as err:
            logger.warning("skipping unreadable %s file: %s", what, err)
            continue
        if not np.any(wave):
            logger.warning("skipping silent %s file: %s", what, path)
            continue
        waves.append(wave)
        names.append(str(path))
    if not waves:
        raise AudioError(f"{root}: none of the {len(files)} {what} files could be used")
    logger.info("loaded %d %s files from %s", len(waves), what, root)
    return waves, names


@dataclass(frozen=True)
class NoiseBank:
    """Noise recordings held in memory (mono float32 at the speech's rate).

    Attributes:
        waveforms: one ``(N_i,)`` array per recording.
        names: the file each came from.
    """

    waveforms: tuple[np.ndarray, ...]
    names: tuple[str, ...]

    @classmethod
    def from_folder(cls, root: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> NoiseBank:
        """Load all audio files below ``root`` once (down-mixed, resampled to ``sample_rate`` Hz).

        Unreadable or all-zero files are skipped with a warning.

        Raises:
            FileNotFoundError: ``root`` does not exist or holds no audio file.
            AudioError: no file could be used.
        """
        waves, names = _load_folder(root, sample_rate, "noise")
        return cls(tuple(waves), tuple(names))

    def __len__(self) -> int:
        return len(self.waveforms)

    def draw(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A random recording's random ``(length,)`` segment (see :func:`noise_segment`).

        Returns:
            ``(segment, index)``: the float32 segment and the recording's index in the bank.
        """
        index = int(rng.integers(0, len(self.waveforms)))
        return noise_segment(self.waveforms[index], length, rng), index


@dataclass(frozen=True)
class RirBank:
    """Room impulse responses, aligned and normalised by :func:`prepare_rir`, held in memory.

    Attributes:
        rirs: one ``(K_i,)`` float32 array per RIR, direct path at index 0.
        names: the file each came from, or a description of the simulated room.
    """

    rirs: tuple[np.ndarray, ...]
    names: tuple[str, ...]

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike,
        normalization: RirNormalization = "energy",
        direct_path_db: float = 20.0,
        sample_rate: int = SAMPLE_RATE,
    ) -> RirBank:
        """Load all RIR files below ``root`` once (down-mixed, resampled, aligned, normalised).

        Raises:
            FileNotFoundError: ``root`` does not exist or holds no audio file.
            AudioError: no file could be used.
        """
        waves, names = _load_folder(root, sample_rate, "RIR")
        rirs = tuple(prepare_rir(w, normalization, direct_path_db) for w in waves)
        return cls(rirs, tuple(names))

    def __len__(self) -> int:
        return len(self.rirs)


def simulate_rir_bank(
    num_rooms: int = 24,
    rt60_range: tuple[float, float] = (0.2, 1.0),
    seed: int = 0,
    max_order: int = 30,
    normalization: RirNormalization = "energy",
    direct_path_db: float = 20.0,
    sample_rate: int = SAMPLE_RATE,
) -> RirBank:
    """Simulate a bank of shoebox-room RIRs once with pyroomacoustics' image-source method.

    Each room: dimensions uniform in [3, 10] x [3, 8] x [2.5, 4] m, RT60 uniform in
    ``rt60_range``, wall absorption and image order from Sabine's formula
    (``pra.inverse_sabine``) with the order capped at ``max_order``, source and microphone
    uniform at least 0.5 m from the walls and from each other. Deterministic in ``seed``.
    About 50 ms per room at ``max_order=30`` on one CPU core.

    Returns:
        A :class:`RirBank` of ``num_rooms`` RIRs at ``sample_rate`` Hz.

    Raises:
        ValueError: ``num_rooms < 1``, a bad RT60 range, or an RT60 too short for any room
            (absorption would exceed 1).
    """
    lo, hi = rt60_range
    if num_rooms < 1:
        raise ValueError(f"num_rooms must be >= 1, got {num_rooms}")
    if not 0 < lo <= hi:
        raise ValueError(f"rt60_range must satisfy 0 < min <= max, got {rt60_range}")
    rng = np.random.default_rng(seed)
    low, high = np.array([3.0, 3.0, 2.5]), np.array([10.0, 8.0, 4.0])
    rirs, names = [], []
    while len(rirs) < num_rooms:
        rt60 = float(rng.uniform(lo, hi))
        for _ in range(20):  # small rooms reach any RT60; large ones may need absorption > 1
            dims = rng.uniform(low, high)
            try:
                absorption, order = pra.inverse_sabine(rt60, dims)
            except ValueError:
                continue
            break
        else:
            raise ValueError(f"RT60 {rt60:.3f} s is too short for the simulated rooms")
        source = rng.uniform(0.5, dims - 0.5)
        mic = rng.uniform(0.5, dims - 0.5)
        while np.linalg.norm(source - mic) < 0.5:
            mic = rng.uniform(0.5, dims - 0.5)
        room = pra.ShoeBox(
            dims,
            fs=sample_rate,
            materials=pra.Material(absorption),
            max_order=int(min(order, max_order)),
        )
        room.add_source(source)
        room.add_microphone(mic)
        room.compute_rir()
        rirs.append(prepare_rir(np.asarray(room.rir[0][0]), normalization, direct_path_db))
        names.append(
            f"shoebox {dims[0]:.2f}x{dims[1]:.2f}x{dims[2]:.2f} m, RT60 {rt60:.2f} s, "
            f"distance {np.linalg.norm(source - mic):.2f} m"
        )
    return RirBank(tuple(rirs), tuple(names))


# --------------------------------------------------------------------------------------------
# The corruptor used by the trainer
# --------------------------------------------------------------------------------------------


class Corruptor:
    """Corrupt the student's input per utterance (RobustDistiller, arXiv 2302.09437 / 2403.08654).

    Build with :meth:`from_config`. All randomness comes from the ``rng`` given to
    :meth:`corrupt` / :meth:`corrupt_batch`; the banks are fixed at construction.

    Curriculum (``curriculum_steps > 0``): with progress ``t = min(step / curriculum_steps, 1)``,
    the SNR is drawn uniformly in ``[snr_max + t * (snr_min - snr_max), snr_max]`` and the
    reverberation probabilities are scaled by ``t``, the mass taken from ``"reverb"`` going to
    ``"none"`` and that from ``"noise+reverb"`` going to ``"noise"``: the probability of noise
    stays ``p_noise + p_noise_reverb`` throughout, that of reverberation grows from 0.
    """

    def __init__(
        self,
        config: AugmentationConfig,
        noise_bank: NoiseBank | None = None,
        rir_bank: RirBank | None = None,
    ) -> None:
        """Use given banks; ``rir_bank`` is required when enabled and reverberation can occur.

        Raises:
            ValueError: reverberation is possible but no ``rir_bank`` was given.
        """
        if config.enabled and rir_bank is None and config.p_reverb + config.p_noise_reverb > 0:
            raise ValueError("a rir_bank is needed when p_reverb or p_noise_reverb is > 0")
        self.config = config
        self.noise_bank = noise_bank
        self.rir_bank = rir_bank

    @classmethod
    def from_config(cls, config: AugmentationConfig, seed: int = 0) -> Corruptor:
        """Load the noise and RIR folders once, or simulate the room bank (seeded by ``seed``).

        Raises:
            FileNotFoundError: a configured folder does not exist or holds no audio file.
            AudioError: no file of a configured folder could be used.
        """
        if not config.enabled:
            return cls(config)
        noise_bank = NoiseBank.from_folder(config.noise_dir) if config.noise_dir else None
        rir_bank = None
        if config.p_reverb + config.p_noise_reverb > 0:
            if config.rir_dir:
                rir_bank = RirBank.from_folder(
                    config.rir_dir, config.rir_normalization, config.rir_direct_path_db
                )
            else:
                rir_bank = simulate_rir_bank(
                    config.num_simulated_rooms,
                    (config.rt60_min, config.rt60_max),
                    seed=seed,
                    max_order=config.room_max_order,
                    normalization=config.rir_normalization,
                    direct_path_db=config.rir_direct_path_db,
                )
        return cls(config, noise_bank, rir_bank)

    # ---- schedule ----------------------------------------------------------------------------

    def _progress(self, step: int | None) -> float:
        steps = self.config.curriculum_steps
        if steps == 0:
            return 1.0
        if step is None:
            raise ValueError("curriculum_steps > 0: pass the training step")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return min(step / steps, 1.0)

    def probabilities(self, step: int | None = None) -> tuple[float, float, float, float]:
        """Probabilities of :data:`KINDS` at ``step`` (the configured ones without curriculum).

        Raises:
            ValueError: the curriculum is on and ``step`` is None or negative.
        """
        c, t = self.config, self._progress(step)
        return (
            c.p_noise + (1.0 - t) * c.p_noise_reverb,
            t * c.p_reverb,
            t * c.p_noise_reverb,
            c.p_none + (1.0 - t) * c.p_reverb,
        )

    def snr_range(self, step: int | None = None) -> tuple[float, float]:
        """``(low, high)`` of the uniform SNR draw in dB at ``step``.

        Raises:
            ValueError: the curriculum is on and ``step`` is None or negative.
        """
        c, t = self.config, self._progress(step)
        return c.snr_max + t * (c.snr_min - c.snr_max), c.snr_max

    # ---- corruption --------------------------------------------------------------------------

    def _add_noise(
        self, x: np.ndarray, rng: np.random.Generator, step: int | None
    ) -> tuple[np.ndarray, float | None, int | None]:
        low, high = self.snr_range(step)
        use_file = self.noise_bank is not None and rng.random() < self.config.noise_file_prob
        snr_db = float(rng.uniform(low, high))
        index = None
        if use_file:
            noise, index = self.noise_bank.draw(x.size, rng)
            if _power(noise) == 0.0:
                logger.warning(
                    "silent segment of %s: white noise used instead", self.noise_bank.names[index]
                )
                index = None
        if index is None:
            noise = rng.standard_normal(x.size, dtype=np.float32)
        if _power(x) == 0.0:
            logger.debug("silent speech (zero power): no noise added")
            return x.astype(np.float32, copy=True), None, None
        return mix_at_snr(x, noise, snr_db), snr_db, index

    def corrupt(
        self, waveform: np.ndarray, rng: np.random.Generator, step: int | None = None
    ) -> tuple[np.ndarray, CorruptionInfo]:
        """Corrupt one utterance.

        Args:
            waveform: ``(S,)`` clean speech at 16 kHz.
            rng: the source of every random choice, consumed in this order: kind, RIR index,
                recording-or-white, SNR, then recording index and offset or white noise.
            step: the training step; required when the curriculum is on.

        Returns:
            ``(noisy, info)``: ``(S,)`` float32 corrupted speech, time-aligned with the input,
            and a :class:`CorruptionInfo`.

        Raises:
            AudioError: empty, non-1-D or non-finite waveform.
            ValueError: curriculum on and ``step`` missing.
        """
        x = _check_signal(waveform, "speech")
        if not self.config.enabled:
            return x.astype(np.float32, copy=True), CorruptionInfo("none")
        kind = KINDS[int(rng.choice(len(KINDS), p=self.probabilities(step)))]
        rir_index = snr_db = noise_index = None
        if kind in ("reverb", "noise+reverb"):
            rir_index = int(rng.integers(0, len(self.rir_bank)))
            x = reverberate(
                x,
                self.rir_bank.rirs[rir_index],
                self.config.rir_normalization,
                self.config.rir_direct_path_db,
            )
        if kind in ("noise", "noise+reverb"):
            x, snr_db, noise_index = self._add_noise(x, rng, step)
        return x.astype(np.float32, copy=False), CorruptionInfo(
            kind, snr_db, rir_index, noise_index
        )

    def corrupt_batch(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | Sequence[int],
        rng: np.random.Generator,
        step: int | None = None,
    ) -> tuple[torch.Tensor, list[CorruptionInfo]]:
        """Corrupt a padded batch, each utterance on its real samples only.

        Args:
            waveforms: ``(B, S)`` floating tensor of clean speech at 16 kHz, zero-padded.
            lengths: ``(B,)`` real lengths in samples, each in ``[0, S]``.
            rng: the source of every random choice; utterances consume it in batch order.
            step: the training step; required when the curriculum is on.

        Returns:
            ``(noisy, infos)``: ``(B, S)`` tensor of ``waveforms``' dtype and device whose
            padding (samples at or after each length) is exactly zero, and one
            :class:`CorruptionInfo` per utterance (``kind="none"`` for zero-length rows).

        Raises:
            ValueError: bad shapes, dtype or lengths; curriculum on and ``step`` missing.
            AudioError: NaN/Inf in an utterance's real samples.
        """
        if waveforms.ndim != 2 or not waveforms.is_floating_point():
            raise ValueError(
                f"waveforms must be a floating (B, S) tensor, got {tuple(waveforms.shape)} "
                f"{waveforms.dtype}"
            )
        batch, samples = waveforms.shape
        lens = np.asarray(
            lengths.detach().cpu().numpy() if isinstance(lengths, torch.Tensor) else lengths
        )
        if lens.shape != (batch,) or (lens.size and lens.dtype.kind not in "iu"):
            raise ValueError(f"lengths must be ({batch},) integers, got {lens.shape} {lens.dtype}")
        if lens.size and (lens.min() < 0 or lens.max() > samples):
            raise ValueError(f"lengths must be in [0, {samples}], got {lens.tolist()}")
        clean = waveforms.detach().to(device="cpu", dtype=torch.float32).numpy()
        noisy = np.zeros((batch, samples), dtype=np.float32)
        infos = []
        for b, n in enumerate(lens.tolist()):
            if n == 0:
                infos.append(CorruptionInfo("none"))
                continue
            try:
                noisy[b, :n], info = self.corrupt(clean[b, :n], rng, step)
            except AudioError as err:
                raise AudioError(f"batch row {b}: {err}") from err
            infos.append(info)
        out = torch.from_numpy(noisy).to(device=waveforms.device, dtype=waveforms.dtype)
        return out, infos
