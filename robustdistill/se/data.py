"""Noisy/clean pairs made on the fly from speech, noise and room folders.

Each batch is a pure function of ``(seed, step, rank)``: the random generator of batch ``step``
of process ``rank`` is ``numpy.random.default_rng([seed, step, rank])``, so a resumed run draws
exactly the batches an uninterrupted one would, with no sampler state to save. Speech crops
are read from disk with ``soundfile`` (only the crop is decoded); noise and RIRs are held in
memory.

Per item: a ``crop_seconds`` speech crop (a random file, a random offset; shorter files are
zero padded at the end and their padding is not counted in the SNR), reverberated with
probability ``reverb_prob`` by a random room (the target is then the reverberant speech:
the students denoise, they do not dereverberate; ``target: dry`` keeps the dry speech as the
target instead), plus a random noise segment at an SNR drawn uniformly from ``snr_range`` dB,
measured over the crop's real samples (a silent noise segment is replaced by white noise, see
:func:`~robustdistill.augment.noise.white_if_silent`).

Speech files are decoded once, whole, when they are indexed: a file that cannot be decoded,
holds NaN/Inf, is digitally silent, or peaks above :data:`MAX_SPEECH_PEAK` is dropped from the
draw pool then (logged by name, listed in :attr:`SpeechIndex.skipped`), so no draw ever lands
on it and the batches stay a pure function of ``(seed, step, rank)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..audio import (
    MAX_PEAK,
    SAMPLE_RATE,
    AudioError,
    check_peak,
    list_audio_files,
    probe_audio,
    resample,
    to_mono,
)
from ..augment.noise import NoiseBank, mix_at_snr, white_if_silent
from ..augment.rooms import RirBank, reverberate
from ..files import atomic_write_text

__all__ = ["MAX_SPEECH_PEAK", "SCAN_CACHE_OFF", "PairConfig", "PairMaker", "SpeechIndex",
           "SpeechScanCache"]

logger = logging.getLogger(__name__)

#: The largest absolute sample value a speech file may hold: the limit every reader shares,
#: :data:`robustdistill.audio.MAX_PEAK` (a 1e30 sample passes the NaN/Inf check but overflows
#: the SNR mixing and the loss).
MAX_SPEECH_PEAK = MAX_PEAK

#: Random crops drawn for one item before it falls back to the loudest crop of the last file
#: drawn (:meth:`SpeechIndex.loudest_crop`).
_CROP_TRIES = 10

#: Frames decoded at a time when a speech file is checked at indexing.
_SCAN_BLOCK = 1 << 16

#: ``scan_cache_dir`` values that turn the speech scan cache off.
SCAN_CACHE_OFF = ("off", "")


@dataclass
class PairConfig:
    """Where the audio comes from and how it is mixed.

    Attributes:
        speech_dir: folder of clean speech (searched recursively); training speakers only.
        noise_dir: folder of noise recordings (the training half).
        rir_dir: folder of room impulse responses (training rooms) or None for no reverb; a
            file that is not one (speech, noise) is skipped with a warning
            (:func:`~robustdistill.augment.rir_implausibility`) unless ``rir_check`` is false.
        rir_check: skip the ``rir_dir`` files that do not look like room impulse responses
            (default); false keeps every readable file (a legitimate response the check
            refuses, e.g. a hall whose strongest reflection comes more than 50 ms after the
            direct path). Validation's rooms (``validation.rir_dir``) follow it too.
        crop_seconds: length of each item in seconds (> 0).
        snr_range: ``[low, high]`` SNR in dB, drawn uniformly.
        reverb_prob: probability of reverberating an item (needs ``rir_dir``).
        rir_channels: a multi-channel RIR file is ``"mean"``: down-mixed into one response
            (default, the published SE figures; for a stereo pair whose direct paths are apart,
            a comb filter no microphone recorded) or ``"one"``: each reverberated item uses
            one channel, drawn after the file (as distillation's ``augmentation.rir_channels:
            one`` and RobustDistiller's reference code).
        target: ``"reverberant"`` (the speech the microphone got, default) or ``"dry"``.
        sample_rate: Hz.
        pool_size: 0 (default): every item is drawn afresh. ``N > 0``: ``N`` items are drawn
            once (generator ``[pool_seed]``, the same for every run) and each batch picks
            items of that pool (generator ``[seed, step, rank]``), so a frozen teacher's
            outputs on the pool can be computed once and shared by many short runs.
        pool_seed: seed of the pool.
        scan_cache_dir: a folder that keeps the whole-file check of every speech file
            (:class:`SpeechScanCache`), so that the next start decodes only new or changed
            files. None (default): ``train-se`` keeps it in the run's
            ``<output_dir>/scan_cache`` (a resume reads it; ``student/``, which ``card`` and
            ``push`` use, never holds it), and the SE table's runs share its
            ``<out>/scan_cache``; a ``PairMaker`` built directly keeps none.
            ``off`` (or an empty string): none, every start decodes every file (a folder
            named ``off`` is ``./off``).

    Raises:
        ValueError: (on construction) ``snr_range`` not ``[low, high]`` with ``low <= high``,
            ``crop_seconds <= 0``, ``reverb_prob`` outside ``[0, 1]`` or > 0 without
            ``rir_dir``, an unknown ``rir_channels`` or ``target``, or a negative
            ``pool_size``.
    """

    speech_dir: str = "../shared/data/librispeech-mini/train-clean-100"
    noise_dir: str = "runs/data/noise_train"
    rir_dir: str | None = "runs/data/rir_train"
    rir_check: bool = True
    crop_seconds: float = 2.0
    snr_range: tuple[float, float] = (-5.0, 20.0)
    reverb_prob: float = 0.25
    rir_channels: str = "mean"
    target: str = "reverberant"
    sample_rate: int = SAMPLE_RATE
    pool_size: int = 0
    pool_seed: int = 1234
    scan_cache_dir: str | None = None

    def __post_init__(self) -> None:
        self.snr_range = tuple(float(v) for v in self.snr_range)
        if len(self.snr_range) != 2 or not self.snr_range[0] <= self.snr_range[1]:
            raise ValueError(f"snr_range must be [low, high] dB, got {self.snr_range}")
        if not self.crop_seconds > 0:
            raise ValueError(f"crop_seconds must be > 0, got {self.crop_seconds}")
        if not 0.0 <= self.reverb_prob <= 1.0:
            raise ValueError(f"reverb_prob must lie in [0, 1], got {self.reverb_prob}")
        if self.reverb_prob > 0 and not self.rir_dir:
            raise ValueError("reverb_prob > 0 needs rir_dir")
        if self.rir_channels not in ("mean", "one"):
            raise ValueError(f"rir_channels must be 'mean' or 'one', got {self.rir_channels!r}")
        if self.pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {self.pool_size}")
        if self.target not in ("reverberant", "dry"):
            raise ValueError(f"target must be 'reverberant' or 'dry', got {self.target!r}")


class SpeechIndex:
    """Speech files and their lengths; reads random crops without decoding whole files.

    Every file is decoded once, whole, at indexing (:func:`scan_speech_file`). Files whose
    header cannot be read (empty, not audio, no permission), that hold no sample, cannot be
    decoded, hold NaN/Inf, are digitally silent (every sample zero) or peak above
    :data:`MAX_SPEECH_PEAK` are dropped from the draw pool, each logged once with its name and
    reason and recorded in :attr:`skipped` (``{path: reason}``, reasons of
    :data:`robustdistill.audio.AUDIO_ERROR_REASONS`); :meth:`crop` raises :class:`AudioError`
    for a crop that cannot be decoded or holds NaN/Inf (a file changed after indexing).

    Attributes:
        files / rates / frames: the usable files, their rates (Hz) and lengths (frames).
        loudest: per usable file, the frame of its largest absolute sample.
        skipped: ``{path: reason}`` of every file dropped (or found bad later).

    Raises:
        FileNotFoundError: no audio file below ``root``.
        AudioError: no usable file below ``root`` (the message names skipped files).
    """

    def __init__(self, root: str | Path, sample_rate: int = SAMPLE_RATE,
                 scan_cache_dir: str | Path | None = None):
        self.sample_rate = sample_rate
        self.skipped: dict[str, str] = {}
        self.files, self.rates, self.frames, self.loudest = [], [], [], []
        cache = (None if scan_cache_dir is None or str(scan_cache_dir) in SCAN_CACHE_OFF
                 else SpeechScanCache(scan_cache_dir, root))
        started = time.perf_counter()
        for path in list_audio_files(root):
            try:
                info = probe_audio(path)
                if info.frames < 1:
                    raise AudioError(f"{path}: no samples", "empty")
                loudest = cache.scan(path) if cache is not None else scan_speech_file(path)
            except AudioError as err:
                self.mark_bad(path, err)
                continue
            self.files.append(path)
            self.rates.append(info.sample_rate)
            self.frames.append(info.frames)
            self.loudest.append(loudest)
        seconds = time.perf_counter() - started
        if cache is not None:
            cache.save()
        elif seconds > 30:
            logger.info("checking the speech files took %.0f s; a data.scan_cache_dir (not "
                        "off) keeps the result for the next start", seconds)
        if self.skipped:
            logger.warning("%d of %d speech files below %s dropped (names logged above)",
                           len(self.skipped), len(self.skipped) + len(self.files), root)
        if not self.files:
            raise AudioError(f"no usable speech file below {root}: {len(self.skipped)} skipped "
                             f"({_name_some(self.skipped)})")

    def mark_bad(self, path: str | Path, err: AudioError) -> None:
        """Record a skipped file in :attr:`skipped`, logging it the first time only."""
        if str(path) not in self.skipped:
            self.skipped[str(path)] = err.reason
            logger.warning("skipping speech file %s [%s]: %s", path, err.reason, err)

    def __len__(self) -> int:
        return len(self.files)

    def crop(self, index: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A random ``length``-sample crop of file ``index`` at ``sample_rate``.

        Returns:
            ``(crop (length,), real)``: float32 mono; the first ``real`` samples are speech
            and the rest zeros.

        Raises:
            AudioError: the file cannot be decoded, or the crop holds NaN/Inf samples.
        """
        need = self._source_frames(index, length)
        start = int(rng.integers(0, max(self.frames[index] - need, 0) + 1))
        return self._read(index, start, length)

    def loudest_crop(self, index: int, length: int) -> tuple[np.ndarray, int]:
        """The ``length``-sample crop of file ``index`` centred (where the file allows) on its
        largest sample: never silent. Same returns and errors as :meth:`crop`."""
        need = self._source_frames(index, length)
        start = min(max(self.loudest[index] - need // 2, 0), max(self.frames[index] - need, 0))
        return self._read(index, start, length)

    def _source_frames(self, index: int, length: int) -> int:
        """Frames of file ``index`` (at its own rate) that give ``length`` samples."""
        return int(math.ceil(length * self.rates[index] / self.sample_rate))

    def _read(self, index: int, start: int, length: int) -> tuple[np.ndarray, int]:
        """Decode, down-mix, check and resample a crop from frame ``start``; see :meth:`crop`."""
        rate = self.rates[index]
        try:
            x, _ = sf.read(os.fsencode(self.files[index]), start=start,
                           frames=self._source_frames(index, length), dtype="float32",
                           always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            raise AudioError(f"{self.files[index]}: cannot decode ({err})", "unreadable") from err
        x = to_mono(x)  # (frames, channels) -> (frames,)
        if not np.isfinite(x).all():
            raise AudioError(f"{self.files[index]}: NaN or Inf samples", "non-finite")
        if rate != self.sample_rate:
            x = resample(x, rate, self.sample_rate)
        real = min(x.size, length)
        out = np.zeros(length, np.float32)
        out[:real] = x[:real]
        return out, real


def scan_speech_file(path: str | Path) -> int:
    """Decode a speech file whole (a block at a time) and check that it can be trained on.

    Returns:
        The frame of its largest absolute sample (over every channel).

    Raises:
        AudioError: ``"unreadable"`` (a decode error), ``"non-finite"`` (a NaN/Inf sample),
            ``"silent"`` (every sample is zero, or the channels cancel in the mono down-mix
            the crops are) or ``"invalid"`` (a sample beyond
            :data:`MAX_SPEECH_PEAK` in absolute value); the message names the file.
    """
    peak, loudest, offset, mono_audible = 0.0, 0, 0, False
    try:
        for block in sf.blocks(os.fsencode(path), blocksize=_SCAN_BLOCK, dtype="float32",
                               always_2d=True):
            if not np.isfinite(block).all():
                raise AudioError(f"{path}: NaN or Inf samples", "non-finite")
            check_peak(block, str(path))  # the shared limit, MAX_SPEECH_PEAK
            mono_audible = mono_audible or bool(np.any(block.mean(axis=1)))  # crops are mono
            frame_peaks = np.abs(block).max(axis=1)
            k = int(frame_peaks.argmax())
            if frame_peaks[k] > peak:
                peak, loudest = float(frame_peaks[k]), offset + k
            offset += len(block)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode ({err})", "unreadable") from err
    if peak == 0.0:
        raise AudioError(f"{path}: silent (every sample is zero)", "silent")
    if not mono_audible:  # every crop of it would be silent, its loudest one too
        raise AudioError(f"{path}: its channels cancel when averaged to mono (anti-phase "
                         "channels)", "silent")
    return loudest


class SpeechScanCache:
    """The results of :func:`scan_speech_file` for the files of one speech folder, kept in
    ``<folder>/<SHA-1 of the speech folder's resolved path>.json`` and keyed by each file's
    resolved path, size (bytes) and modification time (ns): a file that changed is checked
    again. A save keeps only the entries of the files checked (:meth:`scan`) since the cache was
    read, the files the index found this time: the entry of a file deleted, moved or no longer
    probed is dropped, so the cache holds the folder as it is, not every file it ever held.
    Written atomically (:func:`robustdistill.files.atomic_write_text`: a temporary file of a
    unique name, renamed over the cache), so processes that index the same folder at once (the
    ranks of a multi-process run, each of which checks every file, decoding those it does not
    find) never read half a file, and concurrent writers leave one of their complete files,
    each holding every file of the folder.

    Args:
        folder: where the cache files live (created on :meth:`save`).
        root: the speech folder indexed.
    """

    def __init__(self, folder: str | Path, root: str | Path):
        # the path's bytes: a folder name that is not UTF-8 is a str with surrogate escapes,
        # which str.encode refused (a traceback at train-se's start); UTF-8 names: same bytes
        digest = hashlib.sha1(os.fsencode(Path(root).resolve())).hexdigest()
        self.path = Path(folder).expanduser() / f"{digest}.json"
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())["files"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                logger.warning("%s is unreadable (%s): checking every speech file again",
                               self.path, err)
        self.hits = self.misses = 0
        self._changed = False
        self._seen: set[str] = set()

    @staticmethod
    def _key(path: str | Path) -> tuple[str, list[int]]:
        stat = Path(path).stat()
        return str(Path(path).resolve()), [stat.st_size, stat.st_mtime_ns]

    def scan(self, path: str | Path) -> int:
        """:func:`scan_speech_file` of ``path``, from the cache when the file is unchanged.

        Raises:
            AudioError: as :func:`scan_speech_file` (a cached failure is raised again, with
                its reason and message).
        """
        name, stamp = self._key(path)
        self._seen.add(name)
        entry = self.entries.get(name)
        if entry is not None and entry["stamp"] == stamp:
            self.hits += 1
            if "reason" in entry:
                raise AudioError(entry["message"], entry["reason"])
            return int(entry["loudest"])
        self.misses += 1
        self._changed = True
        try:
            loudest = scan_speech_file(path)
        except AudioError as err:
            if err.reason != "unreadable":  # a read error may pass: checked again next time
                self.entries[name] = {"stamp": stamp, "reason": err.reason,
                                      "message": str(err)}
            raise
        self.entries[name] = {"stamp": stamp, "loudest": loudest}
        return loudest

    def save(self) -> None:
        """Write the cache, with the entries of the files checked since it was read only, if
        a file was checked (again) or an entry is dropped."""
        stale = self.entries.keys() - self._seen
        if stale:
            self.entries = {k: v for k, v in self.entries.items() if k in self._seen}
            logger.info("%s: dropping the checks of %d speech files not indexed this time "
                        "(deleted, moved or unreadable)", self.path, len(stale))
        if self._changed or stale:
            try:
                atomic_write_text(self.path, json.dumps({"version": 1, "files": self.entries}))
            except OSError as err:  # a folder this user cannot write: the run goes on
                logger.warning("could not write %s (%s): the next start checks the speech "
                               "files again", self.path, err)
        logger.info("speech file checks: %d from %s, %d decoded", self.hits, self.path,
                    self.misses)


def _name_some(skipped: dict[str, str], limit: int = 5) -> str:
    """``"a.wav [silent], b.wav [unreadable], ... (3 more)"``: the first ``limit`` entries."""
    named = ", ".join(f"{path} [{reason}]" for path, reason in list(skipped.items())[:limit])
    more = len(skipped) - limit
    return named + (f", ... ({more} more)" if more > 0 else "")


class PairMaker:
    """Batches of (noisy, clean) pairs, a pure function of ``(seed, step, rank)``.

    Args:
        config: :class:`PairConfig`.
        seed: the run's seed.
    """

    def __init__(self, config: PairConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self.speech = SpeechIndex(config.speech_dir, config.sample_rate,
                                  config.scan_cache_dir)
        self.noise = NoiseBank.from_folder(config.noise_dir, config.sample_rate)
        self.rirs = (RirBank.from_folder(config.rir_dir, sample_rate=config.sample_rate,
                                         channels=config.rir_channels,
                                         check=config.rir_check,
                                         check_option="data.rir_check: false")
                     if config.rir_dir and config.reverb_prob > 0 else None)
        self.length = int(round(config.crop_seconds * config.sample_rate))
        self._pool: tuple[torch.Tensor, torch.Tensor] | None = None

    def item(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One ``(noisy, target)`` pair, each ``(length,)`` float32.

        Raises:
            AudioError: :data:`_CROP_TRIES` crops in a row could not be read (files that
                changed since indexing; the message names them).
        """
        c = self.config
        speech, real = self._speech_crop(rng)
        dry = speech
        if self.rirs is not None and rng.random() < c.reverb_prob:
            rir, _, _ = self.rirs.draw(rng)  # "mean": one integer draw, as before
            wet = np.zeros_like(speech)
            wet[:real] = reverberate(speech[:real], rir)
            speech = wet
        target = speech if c.target == "reverberant" else dry
        snr = float(rng.uniform(*c.snr_range))
        noise, k = self.noise.draw(self.length, rng)
        noise, _ = white_if_silent(noise, rng, self.noise.names[k], real)
        noisy = np.zeros_like(speech)
        noisy[:real] = mix_at_snr(speech[:real], noise[:real], snr)
        if real < self.length:  # the padding gets the same noise at the same gain
            gain = np.sqrt(np.mean((noisy[:real] - speech[:real]) ** 2)
                           / max(float(np.mean(noise[:real] ** 2)), 1e-20))
            noisy[real:] = gain * noise[real:]
        return noisy, target

    def _speech_crop(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A non-silent speech crop ``(length,)`` and its real samples: random files and offsets
        are drawn until a crop holds a non-zero sample (a silent stretch inside a good file is
        drawn again); after :data:`_CROP_TRIES` draws, the loudest crop of the last good file
        drawn.

        Raises:
            AudioError: every draw hit a file that cannot be read any more (named).
        """
        silent_index, unreadable = None, []
        for _ in range(_CROP_TRIES):
            index = int(rng.integers(len(self.speech)))
            try:
                speech, real = self.speech.crop(index, self.length, rng)
            except AudioError as err:  # changed since indexing: logged once, drawn again
                self.speech.mark_bad(self.speech.files[index], err)
                unreadable.append(str(self.speech.files[index]))
                continue
            if np.any(speech[:real]):
                return speech, real
            silent_index = index
        if silent_index is not None:
            return self.speech.loudest_crop(silent_index, self.length)
        raise AudioError(f"{_CROP_TRIES} speech crops in a row could not be read: "
                         f"{', '.join(sorted(set(unreadable)))}", "unreadable")

    def pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed pool ``(noisy, clean)``, each ``(pool_size, length)`` (built once).

        Raises:
            ValueError: ``pool_size`` is 0.
            AudioError: see :meth:`item`.
        """
        if not self.config.pool_size:
            raise ValueError("pool_size is 0: there is no pool")
        if self._pool is None:
            rng = np.random.default_rng([self.config.pool_seed])
            pairs = [self.item(rng) for _ in range(self.config.pool_size)]
            self._pool = (torch.from_numpy(np.stack([p[0] for p in pairs])),
                          torch.from_numpy(np.stack([p[1] for p in pairs])))
        return self._pool

    def batch(self, step: int, batch_size: int, rank: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Batch ``step`` (of process ``rank``): ``(noisy, clean, pool_indices)``; the audio
        ``(B, length)``, the indices ``(B,)`` into :meth:`pool` or None without a pool."""
        rng = np.random.default_rng([self.seed, step, rank])
        if self.config.pool_size:
            noisy, clean = self.pool()
            idx = torch.from_numpy(rng.integers(0, self.config.pool_size, batch_size))
            return noisy[idx], clean[idx], idx
        pairs = [self.item(rng) for _ in range(batch_size)]
        noisy = torch.from_numpy(np.stack([p[0] for p in pairs]))
        clean = torch.from_numpy(np.stack([p[1] for p in pairs]))
        return noisy, clean, None
