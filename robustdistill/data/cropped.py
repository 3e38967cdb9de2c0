"""Shared logic of the map-style datasets: header scan, length filter, read with fallback, crop.

Randomness is a pure function of ``(seed, epoch, index)`` (see :mod:`robustdistill.data`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import soundfile as sf
import torch

from ..audio import SAMPLE_RATE, AudioError

logger = logging.getLogger(__name__)

#: Read-time failures in a row (distinct items) after which a dataset gives up with an error.
MAX_READ_FAILURES = 16
#: Files longer than this (seconds) are read crop by crop, never whole
#: (:func:`robustdistill.audio.load_audio_window`): an hour at 16 kHz is 230 MB of float32.
WINDOW_READ_MIN_S = 120.0
#: How many file names a drop warning lists.
_NAMES_IN_WARNING = 5


def _to_samples(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * SAMPLE_RATE)


def _parse_key(key: Any) -> tuple[int, int]:
    """``(index, epoch)`` or a plain index (epoch 0) -> ``(index, epoch)``."""
    if isinstance(key, tuple | list):
        if len(key) != 2:
            raise TypeError(f"dataset key must be an index or (index, epoch), got {key!r}")
        return int(key[0]), int(key[1])
    if isinstance(key, int | np.integer) or (torch.is_tensor(key) and key.ndim == 0):
        return int(key), 0
    raise TypeError(f"dataset key must be an index or (index, epoch), got {key!r}")


def _crop(waveform: np.ndarray, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """``(S,)`` -> ``(min(S, max_samples),)``, a window starting uniformly in ``[0, S - max]``."""
    return _crop_at(waveform, max_samples, rng)[0]


def _crop_at(
    waveform: np.ndarray, max_samples: int | None, rng: np.random.Generator, grid: int = 1
) -> tuple[np.ndarray, int]:
    """Like :func:`_crop`, also returning the start; the start is a multiple of ``grid`` samples.

    The start is ``grid * k`` with ``k`` uniform in ``[0, (S - max) // grid]``; ``grid=1`` draws
    exactly what :func:`_crop` draws. A teacher feature cache uses the encoder's frame hop
    (320 samples) so that cropped frames line up with frames of the whole utterance.
    """
    if max_samples is None or len(waveform) <= max_samples:
        return waveform, 0
    start = grid * int(rng.integers(0, (len(waveform) - max_samples) // grid + 1))
    return waveform[start : start + max_samples], start


def content_key(waveform: np.ndarray) -> str:
    """SHA-256 (hex) of a waveform's float32 samples: the identity of an utterance's audio,
    whatever its file name, container or dataset index."""
    return hashlib.sha256(np.ascontiguousarray(waveform, dtype=np.float32).tobytes()).hexdigest()


def _length_at_16k(frames: int, sample_rate: int) -> int:
    """Samples after resampling ``frames`` at ``sample_rate`` to 16 kHz (soxr rounds)."""
    return round(frames * SAMPLE_RATE / sample_rate)


class _CroppedAudioDataset(torch.utils.data.Dataset):
    """Shared logic of the map-style datasets: scan, filter, read with fallback, crop.

    Subclasses provide ``_probe(source) -> (frames, sample_rate)`` (header only),
    ``_decode(source) -> (S,) float32 at 16 kHz`` and ``_name(source) -> str``.
    """

    def __init__(
        self,
        sources: Sequence[Any],
        max_length_s: float | None,
        min_length_s: float,
        seed: int,
        random_crop: bool,
    ) -> None:
        if max_length_s is not None and max_length_s <= 0:
            raise ValueError(f"max_length_s must be positive or None, got {max_length_s}")
        if min_length_s < 0:
            raise ValueError(f"min_length_s must be >= 0, got {min_length_s}")
        if max_length_s is not None and min_length_s > max_length_s:
            raise ValueError(f"min_length_s {min_length_s} > max_length_s {max_length_s}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.max_length_s = max_length_s
        self.min_length_s = min_length_s
        self.seed = int(seed)
        self.random_crop = random_crop
        #: Crop starts are multiples of this many samples (set by a teacher feature cache).
        self.crop_grid = 1
        #: Items also carry ``"offset"`` (crop start) and ``"key"`` (:func:`content_key` of the
        #: whole decoded utterance); set by a teacher feature cache.
        self.content_keys = False
        self._max_samples = _to_samples(max_length_s)
        self._min_samples = _to_samples(min_length_s)
        self._bad: set[int] = set()  # items that failed at read time, in this process
        #: ``{item name: reason}`` of every item skipped in this process: at the scan, or at
        #: read time (reasons of :data:`robustdistill.audio.AUDIO_ERROR_REASONS`).
        self.skipped: dict[str, str] = {}
        self._sources, self.lengths = self._scan(list(sources))

    def _probe_all(self, sources: list[Any]) -> Iterator[tuple[int, int] | Exception]:
        """``(frames, sample_rate)`` of each source's header, or the error reading it."""
        for source in sources:
            try:
                yield self._probe(source)
            except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as err:
                yield err

    def _scan(self, sources: list[Any]) -> tuple[list[Any], np.ndarray]:
        """Read every header once; drop unreadable and too-short items, each logged once (INFO)
        with its reason and recorded in :attr:`skipped`, then one summary warning counting
        them by reason, zero counts left out (``"dropped 3 of 9 items: 1 shorter than
        min_length_s=0.50 s, 1 empty, 1 invalid; first: ..."``)."""
        kept, lengths, too_short, unreadable = [], [], [], []
        reasons: dict[str, int] = {}  # of the items in ``unreadable``, as in :attr:`skipped`
        for source, probe in zip(sources, self._probe_all(sources), strict=True):
            if isinstance(probe, Exception):
                unreadable.append(f"{self._name(source)} ({probe})")
                reason = getattr(probe, "reason", "unreadable")
                reasons[reason] = reasons.get(reason, 0) + 1
                self._skip(self._name(source), reason, probe,
                           logging.INFO)  # the summary warning below names the first few
                continue
            length = _length_at_16k(*probe)
            if length < max(self._min_samples, 1):
                too_short.append(f"{self._name(source)} ({length / SAMPLE_RATE:.2f} s)")
                self._skip(self._name(source), "too short",
                           f"{length / SAMPLE_RATE:.4f} s < min_length_s={self.min_length_s}",
                           logging.INFO)
                continue
            kept.append(source)
            lengths.append(length)
        if too_short or unreadable:
            counts = [f"{len(too_short)} shorter than min_length_s={self.min_length_s:.2f} s"
                      ] if too_short else []  # no zero counts
            counts += [f"{n} {r}" for r, n in sorted(reasons.items())]
            logger.warning(
                "%s: dropped %d of %d items: %s; first: %s",
                type(self).__name__,
                len(too_short) + len(unreadable),
                len(sources),
                ", ".join(counts),
                "; ".join((unreadable + too_short)[:_NAMES_IN_WARNING]),
            )
        if not kept:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped_counts().items()))
            raise ValueError(
                f"{type(self).__name__}: none of the {len(sources)} items is usable "
                f"(min_length_s={self.min_length_s}; {reasons or 'no items'}); "
                "see the warnings above"
            )
        return kept, np.asarray(lengths, dtype=np.int64)

    def _skip(self, name: str, reason: str, detail: Any, level: int = logging.WARNING) -> bool:
        """Record a skipped item in :attr:`skipped`; log it the first time only (at ``level``).

        Returns:
            True when ``name`` was not skipped before (in this process).
        """
        if name in self.skipped:
            return False
        self.skipped[name] = reason
        logger.log(level, "skipping %s [%s]: %s", name, reason, detail)
        return True

    def skipped_counts(self) -> dict[str, int]:
        """``{reason: number of items}`` over :attr:`skipped` (reasons of
        :data:`robustdistill.audio.AUDIO_ERROR_REASONS`)."""
        counts: dict[str, int] = {}
        for reason in self.skipped.values():
            counts[reason] = counts.get(reason, 0) + 1
        return counts

    def _read_window(self, candidate: int, epoch: int) -> np.ndarray | None:
        """The crop of a file longer than :data:`WINDOW_READ_MIN_S`, read alone from disk
        (subclasses with ``_decode_window``), or None: decode the whole item instead.

        The crop start is drawn exactly as :func:`_crop_at` draws it, from the header's length,
        so at 16 kHz the crop equals the whole-file path's crop sample for sample. Not used
        when items carry content keys (a teacher cache hashes the whole utterance).
        """
        length = int(self.lengths[candidate])
        if (self._max_samples is None or self.content_keys
                or length <= max(self._max_samples, _to_samples(WINDOW_READ_MIN_S))
                or not hasattr(self, "_decode_window")):
            return None
        if self.random_crop:
            rng = np.random.default_rng([self.seed, epoch, candidate])
        else:
            rng = np.random.default_rng(candidate)
        grid = self.crop_grid
        start = grid * int(rng.integers(0, (length - self._max_samples) // grid + 1))
        return self._decode_window(self._sources[candidate], start, self._max_samples)

    def _probe(self, source: Any) -> tuple[int, int]:
        raise NotImplementedError

    def _decode(self, source: Any) -> np.ndarray:
        raise NotImplementedError

    def _name(self, source: Any) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._sources)

    @property
    def names(self) -> list[str]:
        """A readable name per item (file path, or dataset row)."""
        return [self._name(s) for s in self._sources]

    @property
    def total_seconds(self) -> float:
        """Duration of all kept items in seconds (before cropping)."""
        return float(self.lengths.sum()) / SAMPLE_RATE

    def subset(self, positions: Sequence[int], random_crop: bool | None = None):
        """A copy holding only the items at ``positions`` (no re-scan), indexed 0..len-1.

        Args:
            positions: item positions in this dataset.
            random_crop: override the crop mode (validation subsets use ``False``).
        """
        positions = [int(p) for p in positions]
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._sources = [self._sources[p] for p in positions]
        new.lengths = self.lengths[positions] if positions else self.lengths[:0]
        new._bad = set()
        new.skipped = dict(self.skipped)
        if random_crop is not None:
            new.random_crop = random_crop
        return new

    def full_waveform(self, position: int) -> np.ndarray:
        """The whole decoded utterance at ``position``, ``(S,)`` float32 at 16 kHz, uncropped.

        Raises:
            IndexError: ``position`` out of range.
            AudioError: the item cannot be decoded.
        """
        if not 0 <= position < len(self):
            raise IndexError(f"position {position} out of range for {len(self)} items")
        return self._decode(self._sources[position])

    def _read(self, candidate: int, epoch: int) -> dict[str, Any]:
        """Decode and crop item ``candidate`` alone (no fallback to another item); the item
        :meth:`__getitem__` returns for it (see there).

        Raises:
            AudioError: the item cannot be read (its reason), or decodes shorter than
                ``min_length_s`` (``"too short"``).
        """
        window = self._read_window(candidate, epoch)
        if window is not None:  # a long file: only the crop was read
            return {"waveform": window, "index": candidate, "epoch": epoch}
        source = self._sources[candidate]
        waveform = self._decode(source)
        if len(waveform) < self._min_samples:
            raise AudioError(
                f"{self._name(source)}: decoded {len(waveform) / SAMPLE_RATE:.2f} s, "
                f"shorter than min_length_s={self.min_length_s}",
                "too short",
            )
        if self.random_crop:
            rng = np.random.default_rng([self.seed, epoch, candidate])
        else:
            rng = np.random.default_rng(candidate)
        crop, start = _crop_at(waveform, self._max_samples, rng, self.crop_grid)
        item = {"waveform": crop, "index": candidate, "epoch": epoch}
        if self.content_keys:
            item.update(offset=start, key=content_key(waveform))
        return item

    def readable(self, what: str = "validation"):
        """This dataset without the items that fail at read time, each read once now.

        The header scan finds files that cannot be opened; NaN/Inf, silent or corrupt float
        samples (:func:`robustdistill.audio.load_audio`) show only when an item is decoded.
        For a small set read again and again (validation: at most ``max_validation_items``
        crops) reading every item at start-up finds them before any training: each failing
        item is logged once with its reason and recorded in :attr:`skipped`.

        Args:
            what: what the set is, for the messages.

        Returns:
            ``self`` when every item can be read, else a :meth:`subset` of the readable ones.

        Raises:
            ValueError: no item can be read (the message counts the reasons).
        """
        good: list[int] = []
        failed: dict[str, int] = {}
        for position in range(len(self)):
            try:
                self._read(position, 0)
            except AudioError as err:
                name = self._name(self._sources[position])
                self._skip(name, err.reason, f"{what} item {position} at read time: {err}")
                failed[err.reason] = failed.get(err.reason, 0) + 1
                continue
            good.append(position)
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(failed.items()))
        if not good:
            raise ValueError(
                f"{what}: none of the {len(self)} {type(self).__name__} items can be read "
                f"({reasons}); see the warnings above"
            )
        if len(good) == len(self):
            return self
        logger.warning("%s: dropped %d of %d items that cannot be read (%s)", what,
                       len(self) - len(good), len(self), reasons)
        return self.subset(good)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        """Decode and crop one item.

        Args:
            key: ``(index, epoch)`` from :class:`ShardedRandomSampler`, or a plain ``index``
                (epoch 0).

        Returns:
            ``{"waveform": (S,) float32 with S <= max_length samples, "index": int,
            "epoch": int}``. The
            crop start comes from ``np.random.default_rng([seed, epoch, index])`` with
            ``random_crop=True``, from ``np.random.default_rng(index)`` (same every epoch and
            seed) with ``random_crop=False``. ``index`` is the item actually returned: a later
            one when ``index`` failed to decode (see the module docstring). With
            ``content_keys`` also ``"offset"`` (crop start in samples, a multiple of
            ``crop_grid``) and ``"key"`` (:func:`content_key` of the uncropped utterance).

        Raises:
            IndexError: ``index`` out of range.
            AudioError: :data:`MAX_READ_FAILURES` items in a row failed to decode, or all
                items have failed.
        """
        index, epoch = _parse_key(key)
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        failures = 0
        last_error = ""
        skipped: list[tuple[str, str]] = []  # (name, reason) of items that failed in this call
        for offset in range(n):
            candidate = (index + offset) % n
            if candidate in self._bad:
                continue
            try:
                item = self._read(candidate, epoch)
            except AudioError as err:
                self._bad.add(candidate)
                last_error = str(err)
                name = self._name(self._sources[candidate])
                self._skip(name, err.reason, f"item {candidate} at read time: {err}")
                skipped.append((name, err.reason))
                failures += 1
                if failures >= MAX_READ_FAILURES:
                    break
                continue
            if skipped:  # carried to the batch, so the trainer counts them (DataLoader workers)
                item["skipped"] = skipped
            return item
        raise AudioError(
            f"{type(self).__name__}: no item from index {index} on could be read: "
            f"{failures} failed to decode in this call, {len(self._bad)} of {n} in this process; "
            f"last error: {last_error or 'see the earlier warnings'}"
        )
