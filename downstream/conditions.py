"""Test conditions of the robustness matrix: clean, additive noise at fixed SNRs, reverberation.

A condition is named ``clean``, ``snr<X>`` (noise at ``X`` dB SNR, e.g. ``snr-5``, ``snr10``),
``reverb`` (convolution with a room impulse response, RIR) or ``reverb+snr<X>`` (reverberation,
then noise at ``X`` dB measured against the reverberant speech). The trained head is evaluated
on the same test utterances under each condition.

Corruption uses :func:`robustdistill.augment.mix_at_snr` and
:func:`robustdistill.augment.reverberate` with noise / RIR banks loaded from the folders given for
the test (``--test-noise-dir``, ``--test-rir-dir``; they should differ from the training noise).
The noise recording, its offset and the room are drawn **once per (seed, utterance)**
(:meth:`TestCorruptor.draw`), independently of the condition: ``snr-5`` and ``snr20`` of an
utterance hold the same noise segment at different gains, and ``reverb`` / ``reverb+snr5`` use the
same room. A robustness curve therefore varies the SNR only, not the noise type (each condition
redrawing its noise mixed the two). Noise and room come from two separate generators, so adding
or removing a reverberant condition does not change the noise of the others. The draws depend on
the run seed and the utterance key only, so the corrupted audio is identical for every upstream
evaluated with the same seed and data: upstreams are compared on identical audio.

A multi-channel RIR file is down-mixed by default (``rir_channels="mean"``, the published
figures); with ``"one"`` (``--test-rir-channels one``, as the distillation's
``augmentation.rir_channels: one`` and RobustDistiller's reference code) the room generator draws
the file, then one of its channels (:meth:`robustdistill.augment.RirBank.draw`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustdistill.augment import NoiseBank, RirBank, mix_at_snr, reverberate
from robustdistill.augment.config import RirChannels

logger = logging.getLogger(__name__)

__all__ = [
    "CLEAN",
    "DEFAULT_CONDITIONS",
    "RIR_CHANNELS",
    "Condition",
    "Draw",
    "TestCorruptor",
    "parse_condition",
    "parse_conditions",
]

#: How ``--test-rir-channels`` may use a multi-channel test RIR file.
RIR_CHANNELS = ("mean", "one")

#: The default robustness matrix.
DEFAULT_CONDITIONS = ("clean", "snr-5", "snr0", "snr5", "snr10", "snr20", "reverb")

_PATTERN = re.compile(r"^(?P<reverb>reverb)?(?:\+?snr(?P<snr>-?\d+(?:\.\d+)?))?$")


@dataclass(frozen=True)
class Condition:
    """One test condition.

    Attributes:
        name: its canonical name (``clean``, ``snr5``, ``reverb``, ``reverb+snr5``).
        snr_db: the SNR of the added noise in dB, or None for no noise.
        reverb: whether the speech is reverberated.
    """

    name: str
    snr_db: float | None = None
    reverb: bool = False

    @property
    def is_clean(self) -> bool:
        """Whether the condition adds neither noise nor reverberation."""
        return self.snr_db is None and not self.reverb


#: The clean condition (train and dev are always clean).
CLEAN = Condition("clean")


def parse_condition(name: str) -> Condition:
    """``"snr-5"`` -> ``Condition("snr-5", snr_db=-5.0)`` etc.

    Raises:
        ValueError: a name that is none of ``clean``, ``snr<X>``, ``reverb``, ``reverb+snr<X>``.
    """
    text = name.strip().lower()
    if text == "clean":
        return CLEAN
    match = _PATTERN.match(text)
    if (not text or text.startswith("+") or match is None
            or (match["reverb"] is None and match["snr"] is None)):
        raise ValueError(
            f"unknown condition {name!r}; use clean, snr<dB> (e.g. snr-5, snr10), reverb "
            "or reverb+snr<dB>"
        )
    if match["reverb"] and match["snr"] and "+" not in text:
        raise ValueError(f"unknown condition {name!r}; did you mean 'reverb+snr{match['snr']}'?")
    snr = float(match["snr"]) if match["snr"] is not None else None
    canonical = "+".join(
        p for p in ("reverb" if match["reverb"] else "", f"snr{_fmt(snr)}" if snr is not None else "") if p
    )
    return Condition(canonical, snr, bool(match["reverb"]))


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def parse_conditions(names: list[str] | tuple[str, ...]) -> list[Condition]:
    """Parse a list of condition names, keeping order.

    Raises:
        ValueError: an unknown name, duplicates, or an empty list.
    """
    if not names:
        raise ValueError("at least one condition is needed")
    conditions = [parse_condition(n) for n in names]
    seen = [c.name for c in conditions]
    dupes = sorted({n for n in seen if seen.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate conditions: {dupes}")
    return conditions


class TestCorruptor:
    """Applies test conditions with fixed noise / RIR banks, seeded per utterance.

    Args:
        noise_bank: test noise recordings (needed by ``snr*`` conditions).
        rir_bank: test RIRs (needed by ``reverb*`` conditions).
        seed: the run seed.
    """

    __test__ = False  # not a pytest class

    def __init__(
        self, noise_bank: NoiseBank | None = None, rir_bank: RirBank | None = None, seed: int = 0
    ) -> None:
        self.noise_bank = noise_bank
        self.rir_bank = rir_bank
        self.seed = seed

    @classmethod
    def from_dirs(
        cls, noise_dir: str | Path | None, rir_dir: str | Path | None, seed: int = 0,
        rir_channels: RirChannels = "mean", rir_check: bool = True,
    ) -> TestCorruptor:
        """Load the banks once (any rate and channel count; resampled; noise down-mixed).

        Args:
            rir_channels: ``"mean"`` (default, the published figures) down-mixes a
                multi-channel RIR file into one response (for a stereo pair with direct paths
                apart, a comb filter no microphone recorded); ``"one"`` keeps every channel,
                each aligned on its own direct path, and each utterance's room is one channel.
            rir_check: skip the RIR files that do not look like room impulse responses
                (default, :func:`~robustdistill.augment.rir_implausibility`); False
                (``--no-test-rir-check``) keeps every readable file.

        Raises:
            FileNotFoundError: a folder does not exist or holds no audio.
            robustdistill.audio.AudioError: no file of a folder could be used.
            ValueError: ``rir_channels`` is neither ``"mean"`` nor ``"one"``.
        """
        if rir_channels not in RIR_CHANNELS:
            raise ValueError(f"--test-rir-channels must be 'mean' or 'one', got {rir_channels!r}")
        noise = NoiseBank.from_folder(noise_dir) if noise_dir else None
        rirs = (RirBank.from_folder(rir_dir, channels=rir_channels, check=rir_check,
                                    check_option="--no-test-rir-check")
                if rir_dir else None)
        return cls(noise, rirs, seed)

    def check(self, conditions: list[Condition]) -> None:
        """Fail early when a condition needs a bank that was not given.

        Raises:
            ValueError: naming the condition and the missing option.
        """
        for condition in conditions:
            if condition.snr_db is not None and self.noise_bank is None:
                raise ValueError(f"condition {condition.name} needs --test-noise-dir")
            if condition.reverb and self.rir_bank is None:
                raise ValueError(f"condition {condition.name} needs --test-rir-dir")

    def rng(self, key: str, stream: str) -> np.random.Generator:
        """The generator of one utterance's ``stream`` (``"noise"`` or ``"room"``): a function
        of the run seed, the key and the stream name only (never of the condition)."""
        entropy = [self.seed, zlib.crc32(key.encode()), zlib.crc32(stream.encode())]
        return np.random.default_rng(entropy)

    def draw(self, key: str, length: int) -> Draw:
        """The noise segment and room of one utterance, the same under every condition.

        Args:
            key: the utterance's stable id.
            length: samples of the utterance (the noise segment's length).

        Returns:
            A :class:`Draw`; its noise is None without a noise bank, its RIR None without a
            RIR bank. An all-zero noise segment is replaced by white noise (logged). The
            room generator picks the RIR file, then (a bank loaded with ``"one"``) its
            channel.
        """
        noise = noise_name = rir = rir_name = channel = None
        if self.noise_bank is not None:
            rng = self.rng(key, "noise")
            noise, index = self.noise_bank.draw(length, rng)
            noise_name = self.noise_bank.names[index]
            if not np.any(noise):
                logger.warning("silent segment of %s for %s: white noise used instead",
                               noise_name, key)
                noise = rng.standard_normal(length).astype(np.float32)
                noise_name = "white"
        if self.rir_bank is not None:
            rir, index, channel = self.rir_bank.draw(self.rng(key, "room"))
            rir_name = self.rir_bank.names[index]
        return Draw(noise, noise_name, rir, rir_name, channel)

    def apply(self, waveform: np.ndarray, condition: Condition, key: str) -> np.ndarray:
        """Corrupt one utterance.

        Args:
            waveform: ``(S,)`` float32 clean speech, 16 kHz.
            condition: the condition (it sets only whether to reverberate and the noise gain).
            key: the utterance's stable id (seeds the noise, offset and room: :meth:`draw`).

        Returns:
            ``(S,)`` float32, time-aligned with the input; ``waveform`` itself when clean.

        Raises:
            ValueError: the needed bank is missing.
            robustdistill.audio.AudioError: empty or non-finite audio.
        """
        if condition.is_clean:
            return waveform
        self.check([condition])
        drawn = self.draw(key, waveform.shape[0])
        out = waveform
        if condition.reverb:
            out = reverberate(out, drawn.rir)
        if condition.snr_db is not None:
            out = mix_at_snr(out, drawn.noise, condition.snr_db)
        return out.astype(np.float32, copy=False)

    def fingerprint(self) -> str:
        """SHA-1 over the seed and the names and samples of every noise and RIR in the banks
        (part of the test-set identity in results.json). A RIR bank that keeps channels
        (``rir_channels="one"``) adds the mode and every channel's samples; a down-mixed bank
        hashes as before, so earlier results keep their identity."""
        digest = hashlib.sha1(f"corruption-v2 seed={self.seed}".encode())
        for kind, bank, arrays in (("noise", self.noise_bank, "waveforms"),
                                   ("rir", self.rir_bank, "rirs")):
            if bank is None:
                digest.update(f"no {kind}".encode())
                continue
            for name, wave in zip(bank.names, getattr(bank, arrays), strict=True):
                digest.update(f"{kind}:{Path(str(name)).name}:".encode())
                digest.update(np.ascontiguousarray(wave, dtype=np.float32).tobytes())
        if self.rir_bank is not None and self.rir_bank.channels:
            digest.update(b"rir-channels=one")
            for name, chans in zip(self.rir_bank.names, self.rir_bank.channels, strict=True):
                digest.update(f"rir:{Path(str(name)).name}:{len(chans)}:".encode())
                for wave in chans:
                    digest.update(np.ascontiguousarray(wave, dtype=np.float32).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class Draw:
    """What one utterance is corrupted with (:meth:`TestCorruptor.draw`).

    Attributes:
        noise: ``(S,)`` float32 noise segment (unscaled), or None without a noise bank.
        noise_name: the recording it was cut from (``"white"`` for the silent-segment fallback).
        rir: ``(K,)`` float32 RIR, direct path at index 0, unit energy; or None.
        rir_name: the RIR's file.
        rir_channel: the channel of that file, counting its non-silent channels
            (``rir_channels="one"`` and a multi-channel file), else None.
    """

    noise: np.ndarray | None
    noise_name: str | None
    rir: np.ndarray | None
    rir_name: str | None
    rir_channel: int | None = None
