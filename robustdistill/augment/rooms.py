"""Reverberation: RIR alignment and normalisation, convolution, loaded or simulated rooms."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import pyroomacoustics as pra
import scipy.fft
from scipy.signal import fftconvolve

from ..audio import SAMPLE_RATE, AudioError
from .config import RirChannels, RirNormalization
from .signals import _check_signal, _load_channels, _load_folder

logger = logging.getLogger(__name__)


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


#: :func:`rir_implausibility` thresholds: the largest sample of a room impulse response lies
#: within this many seconds of its direct path ...
RIR_MAX_PEAK_DELAY_S = 0.050
#: ... and its last tenth carries a mean power at least this many dB below that largest
#: sample's power.
RIR_MIN_TAIL_DROP_DB = 30.0


def rir_implausibility(rir: np.ndarray, sample_rate: int = SAMPLE_RATE,
                       direct_path_db: float = 20.0) -> str | None:
    """Why ``rir`` does not look like a room impulse response, or None when it does.

    A measured or simulated RIR is a direct-path impulse followed by reflections whose energy
    decays; speech, noise or music is not. On the response aligned on its direct path as
    :func:`prepare_rir` aligns it (the first sample within ``direct_path_db`` of the largest),
    of ``K`` samples, both must hold:

    1. **It peaks near the start**: the largest ``|h|`` lies at most
       :data:`RIR_MAX_PEAK_DELAY_S` (50 ms) after the direct path.
    2. **It decays**: the mean power of the last ``K // 10`` samples (at least one) is at least
       :data:`RIR_MIN_TAIL_DROP_DB` (30 dB) below the power of the largest sample (not a mean
       around it: a sparse direct path's 5 ms mean is ~19 dB under its peak, which refused
       real responses).

    Measured on 2026-12-07 at 16 kHz (each file loaded as :class:`RirBank` loads it), over every
    RIR in ``shared/data/rir`` (hall, large_room, medium_room, small_room; the same files make
    the ``runs/data/rir_train`` and ``rir_test`` folders of ``scripts/split_shared_data.sh``),
    each down-mixed and each channel alone (12 responses): the largest sample 0.25-38.1 ms after
    the direct path (hall channel 0 the latest: 11.9 ms of margin), the tail -68.2 to -91.0 dB
    (38.2 dB of margin). 72 pyroomacoustics shoebox rooms (:func:`simulate_rir_bank`, RT60
    0.1-3 s, image order capped at 30, so some stop before they have decayed far): at most
    26.6 ms and -47.3 dB (17.3 dB of margin). Synthetic responses (a direct impulse, then
    exponentially decaying noise, RT60 0.2-8 s, cut to 0.05-4 s): at a direct-to-reverberant
    ratio of 0 dB or more every one passes; at -10 dB every one of 0.25 s or more; at -20 dB
    those of 0.25 s (RT60 up to 0.5 s) to 2 s (RT60 5-8 s) or more; a 1 s response with a
    noise floor 30 dB under its direct path passes, 20 dB does not. Rejected: 348 of the 351
    LibriSpeech utterances of
    ``shared/data/librispeech-mini`` and the 4 noise recordings (343 and 4 by condition 1: speech
    and noise peak anywhere), and 10,050 of 10,062 random 100-sample crops (three per file) of
    these and the FSDD files. Not rejected: a short word followed by silence is a burst that
    decays (732 of the 3,000 FSDD digits pass). The check catches
    a folder of speech or noise given as RIRs, and such files among RIRs, not every one.

    Args:
        rir: ``(K,)`` response at ``sample_rate`` Hz (any delay and scale).
        sample_rate: its sample rate in Hz.
        direct_path_db: the onset threshold of :func:`prepare_rir`.

    Returns:
        None, or a reason naming the condition that fails and its measured value.

    Raises:
        AudioError: empty, non-finite or all-zero ``rir`` (as :func:`prepare_rir`).
    """
    h = prepare_rir(rir, "peak", direct_path_db).astype(np.float64)
    power = np.square(h)
    size = h.size
    peak = int(np.argmax(np.abs(h)))
    if peak > RIR_MAX_PEAK_DELAY_S * sample_rate:
        return (f"its largest sample is {1000 * peak / sample_rate:.1f} ms after its direct path "
                f"(a room impulse response peaks within {1000 * RIR_MAX_PEAK_DELAY_S:.0f} ms)")
    tail_power = float(power[size - max(1, size // 10):].mean())
    tail_db = 10.0 * math.log10(max(tail_power / float(power[peak]), 1e-30))
    if tail_db > -RIR_MIN_TAIL_DROP_DB:
        return (f"its last tenth is only {max(0.0, -tail_db):.1f} dB below its largest sample "
                f"(a room impulse response decays by at least {RIR_MIN_TAIL_DROP_DB:.0f} dB)")
    return None


def _plausible_files(root, names: list[str], responses: list[list[np.ndarray]],
                     sample_rate: int, direct_path_db: float, check_option: str) -> list[int]:
    """Indices of the files whose responses (every channel) all pass
    :func:`rir_implausibility`; each other file is logged as skipped, by name and reason, then
    one summary warning with the count.

    Raises:
        AudioError: no file passes (one line: the count, the first file's reason and
            ``check_option``, the caller's way to turn the check off).
    """
    kept, skipped = [], []
    for index, (name, chans) in enumerate(zip(names, responses, strict=True)):
        reasons = [(c, why) for c, h in enumerate(chans)
                   if (why := rir_implausibility(h, sample_rate, direct_path_db)) is not None]
        if not reasons:
            kept.append(index)
            continue
        channel, why = reasons[0]
        where = f" (channel {channel})" if len(chans) > 1 else ""
        skipped.append(f"{name}{where}: {why}")
        logger.warning("skipping RIR file that is not a room impulse response: %s", skipped[-1])
    if not kept:
        raise AudioError(f"{root}: none of the {len(names)} usable RIR files looks like a room "
                         f"impulse response (augment.rooms.rir_implausibility; "
                         f"{check_option} turns the check off); first: {skipped[0]}")
    if skipped:
        logger.warning("skipped %d of %d RIR files in %s that are not room impulse responses; "
                       "kept %d", len(skipped), len(names), root, len(kept))
    return kept


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


class PreparedRirConvolver:
    """Convolution with already prepared RIRs (a :class:`RirBank`'s), reusing their spectra.

    ``convolve(clean, h, key)`` equals :func:`reverberate` for an ``h`` that
    :func:`prepare_rir` leaves unchanged (every RIR of a bank built with the same settings),
    up to float32 rounding, but skips ``prepare_rir`` and keeps the forward FFT of each
    ``(key, FFT size, taps used)``: with training crops of one length the RIR's FFT is computed
    once per RIR instead of on every call, so a call costs two FFTs instead of three. The
    cache holds at most ``max_entries`` spectra (oldest dropped first).

    Args:
        max_entries: cache size (each entry is ``n_fft / 2 + 1`` complex64 values: 0.5 MB for
            a 2 s crop and a 5 s RIR).
    """

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._spectra: dict[tuple, np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    def convolve(self, clean: np.ndarray, h: np.ndarray, key: object) -> np.ndarray:
        """``(S,)`` speech convolved with the prepared ``(K,)`` RIR ``h``, first ``S`` samples.

        Args:
            clean: ``(S,)`` speech.
            h: ``(K,)`` float32 RIR, direct path at index 0, already normalised.
            key: a hashable identity of ``h`` (e.g. ``(bank index, channel)``), the same for
                the same array and different for different ones.

        Returns:
            ``(S,)`` float32 reverberant speech.

        Raises:
            AudioError: empty, non-1-D or non-finite speech.
        """
        clean = _check_signal(clean, "speech").astype(np.float32, copy=False)
        size = clean.size
        taps = min(h.size, size)  # taps beyond len(clean) cannot reach the kept samples
        n_fft = scipy.fft.next_fast_len(size + taps - 1, real=True)
        entry = (key, n_fft, taps)
        spectrum = self._spectra.get(entry)
        if spectrum is None:
            self.misses += 1
            spectrum = scipy.fft.rfft(np.asarray(h[:taps], dtype=np.float32), n_fft)
            if len(self._spectra) >= self.max_entries:
                self._spectra.pop(next(iter(self._spectra)))
            self._spectra[entry] = spectrum
        else:
            self.hits += 1
        wet = scipy.fft.irfft(scipy.fft.rfft(clean, n_fft) * spectrum, n_fft)[:size]
        return wet.astype(np.float32, copy=False)


@dataclass(frozen=True)
class RirBank:
    """Room impulse responses, aligned and normalised by :func:`prepare_rir`, held in memory.

    Attributes:
        rirs: one ``(K_i,)`` float32 array per RIR, direct path at index 0 (for a file loaded
            with ``channels="one"``: its first channel).
        names: the file each came from, or a description of the simulated room.
        channels: with ``channels="one"``, every channel of each file, each prepared on its
            own (one tuple per entry of ``rirs``); empty otherwise.
    """

    rirs: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    channels: tuple[tuple[np.ndarray, ...], ...] = ()

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike,
        normalization: RirNormalization = "energy",
        direct_path_db: float = 20.0,
        sample_rate: int = SAMPLE_RATE,
        channels: RirChannels = "mean",
        check: bool = True,
        check_option: str = "check=False",
    ) -> RirBank:
        """Load all RIR files below ``root`` once (resampled, aligned, normalised).

        Args:
            root: folder searched recursively for audio files (any rate and channel count).
            normalization, direct_path_db: see :func:`prepare_rir`.
            sample_rate: Hz the responses are resampled to.
            channels: ``"mean"`` (default) down-mixes a multi-channel file to one RIR;
                ``"one"`` keeps every channel (each aligned on its own direct path) so that
                :meth:`draw` uses one channel per draw. Averaging the two channels of a
                stereo measurement whose direct paths are ``d`` samples apart sums two
                delayed copies of the room: a comb filter with notches every ``fs / d`` Hz
                (800 Hz for 20 samples at 16 kHz), a response no microphone recorded.
                RobustDistiller's reference code picks one channel at random.
            check: skip the files that do not look like room impulse responses (default);
                False keeps every readable, non-silent file (a legitimate response the check
                refuses: a hall whose strongest reflection comes more than 50 ms after the
                direct path).
            check_option: how the caller's user turns ``check`` off (``"augmentation.rir_check:
                false"``), named in the error when the check refuses every file.

        With ``check``, a file that does not look like a room impulse response (speech, noise:
        :func:`rir_implausibility`; with ``channels="one"``, any of its channels) is skipped
        with a warning naming it and why, then one warning counting them, as unreadable and
        silent files are.

        Raises:
            FileNotFoundError: ``root`` does not exist or holds no audio file.
            AudioError: no file could be used: none readable and non-silent, or (with
                ``check``) none of those looks like a room impulse response (one line naming
                ``check_option``).
            ValueError: unknown ``channels``.
        """
        if channels == "mean":
            waves, names = _load_folder(root, sample_rate, "RIR")
            kept = (_plausible_files(root, names, [[w] for w in waves], sample_rate,
                                     direct_path_db, check_option)
                    if check else range(len(names)))
            rirs = tuple(prepare_rir(waves[i], normalization, direct_path_db) for i in kept)
            return cls(rirs, tuple(names[i] for i in kept))
        if channels != "one":
            raise ValueError(f"channels must be 'mean' or 'one', got {channels!r}")
        per_file, names = _load_channels(root, sample_rate, "RIR")
        kept = (_plausible_files(root, names, per_file, sample_rate, direct_path_db,
                                 check_option) if check else range(len(names)))
        per_file, names = [per_file[i] for i in kept], [names[i] for i in kept]
        prepared = tuple(
            tuple(prepare_rir(c, normalization, direct_path_db) for c in chans)
            for chans in per_file
        )
        return cls(tuple(chans[0] for chans in prepared), tuple(names), prepared)

    def __len__(self) -> int:
        return len(self.rirs)

    def prepared(self, normalization: RirNormalization = "energy",
                 direct_path_db: float = 20.0) -> RirBank:
        """This bank with every RIR (and channel) passed through :func:`prepare_rir` with
        these settings: the same values for a bank loaded or simulated with them
        (``prepare_rir`` is idempotent), the right ones for a bank built otherwise.

        Args:
            normalization: ``"energy"`` or ``"peak"`` (see :func:`prepare_rir`).
            direct_path_db: onset threshold in dB below the largest sample (>= 0).

        Raises:
            AudioError: an empty, non-finite or all-zero RIR.
            ValueError: unknown ``normalization`` or negative ``direct_path_db``.
        """
        def prep(h: np.ndarray) -> np.ndarray:
            return prepare_rir(h, normalization, direct_path_db)

        return RirBank(tuple(prep(h) for h in self.rirs), self.names,
                       tuple(tuple(prep(h) for h in chans) for chans in self.channels))

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, int, int | None]:
        """A random RIR: uniform over the bank's entries, then (``channels="one"`` and more
        than one channel) uniform over that file's channels.

        Returns:
            ``(rir, index, channel)``: channel is None when no channel was drawn (a mono file
            or a down-mixed bank); a mono bank consumes one draw from ``rng``, as before.
        """
        index = int(rng.integers(0, len(self.rirs)))
        if self.channels and len(self.channels[index]) > 1:
            channel = int(rng.integers(0, len(self.channels[index])))
            return self.channels[index][channel], index, channel
        return self.rirs[index], index, None


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
