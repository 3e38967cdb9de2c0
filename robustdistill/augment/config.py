"""Settings of the student-input corruption and the record of what was done."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

logger = logging.getLogger(__name__)


#: The corruption kinds, in the order of their probabilities in :meth:`Corruptor.probabilities`.
KINDS = ("noise", "reverb", "noise+reverb", "none")

RirNormalization = Literal["energy", "peak"]
#: How a multi-channel RIR file is used: one channel per draw, or the channels' mean.
RirChannels = Literal["one", "mean"]
#: Order of the two corruptions of the ``"noise+reverb"`` kind.
NoiseReverbOrder = Literal["reverb_first", "noise_first"]


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
            "help": "Folder of room impulse responses (any rate and channel count; a file that "
            "does not peak within 50 ms of its direct path and decay by 30 dB, such as speech "
            "or noise, is skipped with a warning). Without it a bank of rooms is simulated "
            "once with pyroomacoustics."
        },
    )
    rir_check: bool = field(
        default=True,
        metadata={
            "help": "Skip the rir_dir files that do not look like room impulse responses "
            "(augment.rooms.rir_implausibility); false keeps every readable file, e.g. a hall "
            "whose strongest reflection comes more than 50 ms after the direct path."
        },
    )
    p_noise: float = field(default=0.25, metadata={"help": "Probability of additive noise only."})
    p_reverb: float = field(default=0.25, metadata={"help": "Probability of reverberation only."})
    p_noise_reverb: float = field(
        default=0.25,
        metadata={"help": "Probability of reverberation and noise (in noise_reverb_order)."},
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
        metadata={
            "help": "Scale RIRs to unit energy ('energy') or to max |h| = 1 ('peak')."
        },
    )
    rir_direct_path_db: float = field(
        default=20.0,
        metadata={
            "help": "A RIR's direct path (moved to index 0) is its first sample within this many "
            "dB of its largest one; 0 aligns on the largest sample."
        },
    )
    rir_channels: RirChannels = field(
        default="one",
        metadata={
            "help": "Multi-channel RIR files: 'one' seeded channel per draw (RobustDistiller's "
            "reference code), or their 'mean' (a comb filter when the channels' direct paths "
            "differ)."
        },
    )
    noise_reverb_order: NoiseReverbOrder = field(
        default="reverb_first",
        metadata={
            "help": "'noise+reverb' kind: 'reverb_first' (reverberate, then add noise at the SNR "
            "measured against the reverberant speech) or 'noise_first' (RobustDistiller's "
            "reference code: add noise at the SNR measured against the dry speech, then "
            "reverberate speech and noise together)."
        },
    )
    curriculum_steps: int = field(
        default=0,
        metadata={
            "help": "Steps over which the lowest SNR moves from snr_max to snr_min and the "
            "reverberation probabilities from 0 to their targets; 0 turns the curriculum off."
        },
    )

    in_loader: bool = field(
        default=False,
        metadata={
            "help": "Corrupt training crops in the DataLoader's collate function (the workers, "
            "off the step's critical path) with randomness from (seed, epoch, item index) "
            "instead of in the step from (seed, step, rank, micro-batch). Same distribution, "
            "another random stream; exact resume kept; needs a map-style dataset and "
            "curriculum_steps 0. Validation is corrupted in the step either way."
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
        if self.in_loader and self.curriculum_steps:
            raise ValueError("in_loader corrupts in the DataLoader workers, which do not know "
                             "the training step: it needs curriculum_steps 0")
        if self.rir_channels not in ("one", "mean"):
            raise ValueError(f"rir_channels must be 'one' or 'mean', got {self.rir_channels!r}")
        if self.noise_reverb_order not in ("reverb_first", "noise_first"):
            raise ValueError(
                "noise_reverb_order must be 'reverb_first' or 'noise_first', got "
                f"{self.noise_reverb_order!r}"
            )


@dataclass(frozen=True)
class CorruptionInfo:
    """What was done to one utterance.

    Attributes:
        kind: one of :data:`KINDS`.
        snr_db: the SNR in dB of the added noise: ``10 log10(P_signal / P_noise)`` over the
            whole crop, where the signal is the speech the noise was added to (the dry speech
            for ``"noise"`` and for ``"noise+reverb"`` with ``noise_first``, the reverberant
            speech with ``reverb_first``); None when no noise was added (a kind without noise,
            or silent speech, which is returned unchanged).
        rir_index: index into the :class:`RirBank` of the RIR used; None without reverberation.
        noise_index: index into the :class:`NoiseBank` of the recording used; None for white
            noise or when no noise was added.
        rir_channel: channel of a multi-channel RIR file used; None otherwise.
    """

    kind: str
    snr_db: float | None = None
    rir_index: int | None = None
    noise_index: int | None = None
    rir_channel: int | None = None
