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
  from a bank of shoebox rooms simulated once with pyroomacoustics; a file in the folder that
  does not look like one (speech, noise: :func:`rir_implausibility`) is skipped with a warning
  naming it. A multi-channel RIR file
  contributes one channel per draw, chosen with the caller's generator (``rir_channels="one"``,
  as RobustDistiller's reference code; ``"mean"`` averages the channels, which for a stereo
  measurement with direct paths ``d`` samples apart is a comb filter, not a room).
* Noise and reverberation (``noise_reverb_order``): ``"reverb_first"`` (default) reverberates,
  then adds noise at the SNR measured against the reverberant speech (a noise source recorded
  separately from the reverberant talker); ``"noise_first"`` (RobustDistiller's reference code,
  the recipe's setting) adds noise at the SNR measured against the dry speech, then the room
  reverberates speech and noise together.

audiomentations is not used: its transforms draw their parameters from Python's global
``random`` state and ``AddBackgroundNoise`` re-reads a noise file on every call (0.43 removed
its cache), which breaks per-utterance seeding from a caller's generator and loading once;
``ApplyImpulseResponse`` also keeps the RIR's direct-path delay, shifting the student's input.

Every random choice comes from a :class:`numpy.random.Generator` that the caller passes in (the
trainer derives it from seed, step, rank and micro-batch in training, and one per utterance from
seed and the item's index in validation), so the same generator state gives bit-identical
output; no global random state is used.

Package layout (import everything from ``robustdistill.augment``):

* :mod:`~robustdistill.augment.config`: :class:`AugmentationConfig`, :class:`CorruptionInfo`;
* :mod:`~robustdistill.augment.noise`: :func:`noise_segment`, :func:`mix_at_snr`,
  :func:`white_if_silent`, :class:`NoiseBank`;
* :mod:`~robustdistill.augment.rooms`: :func:`prepare_rir`, :func:`reverberate`,
  :func:`rir_implausibility`, :class:`RirBank`, :func:`simulate_rir_bank`;
* :mod:`~robustdistill.augment.corruption`: :class:`Corruptor`.
"""

from .config import KINDS, AugmentationConfig, CorruptionInfo
from .corruption import Corruptor, LoaderCorruption
from .noise import NoiseBank, mix_at_snr, noise_segment, white_if_silent
from .rooms import RirBank, prepare_rir, reverberate, rir_implausibility, simulate_rir_bank

__all__ = [
    "KINDS",
    "AugmentationConfig",
    "CorruptionInfo",
    "Corruptor",
    "LoaderCorruption",
    "NoiseBank",
    "RirBank",
    "mix_at_snr",
    "noise_segment",
    "prepare_rir",
    "rir_implausibility",
    "reverberate",
    "simulate_rir_bank",
    "white_if_silent",
]
