"""Held-out SE evaluation: SI-SDR, PESQ (wide-band) and STOI, and their improvements.

Test pairs: unseen speakers (``librispeech-mini/test-other``), unseen noises
(``runs/data/noise_test``), at fixed SNRs (default -5, 0, 5 dB). Each utterance gets one
noise recording and segment (generator ``[seed, i]``) shared by every SNR and every model,
so models are compared on identical inputs (paired). Metrics come from
:func:`downstream.tasks.speech_enhancement.task.speech_metrics` (one implementation for the
project); improvements are the enhanced score minus the noisy input's score.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import AudioError, list_audio_files, load_audio
from ..augment.noise import NoiseBank, mix_at_snr, white_if_silent
from .teachers.base import FrameModel

__all__ = ["TestPairs", "make_test_pairs", "evaluate_model", "METRICS", "scored_means"]

METRICS = ("si_sdr", "pesq", "stoi")

logger = logging.getLogger(__name__)


@dataclass
class TestPairs:
    """Noisy/clean test pairs.

    Attributes:
        clean: one ``(N_i,)`` float32 array per utterance.
        noisy: SNR (dB) -> one ``(N_i,)`` array per utterance.
        names: utterance file names, as UTF-8 text (the bytes of a name that is not UTF-8
            written as ``\\xff``).
        noisy_scores: SNR -> per-utterance ``{"si_sdr", "pesq", "stoi"}`` of the noisy input.
    """

    clean: list
    noisy: dict
    names: list
    noisy_scores: dict

    def sha1(self) -> str:
        """The test set's identity: SHA-1 of the utterance names, the clean waveforms and the
        noisy waveforms at each SNR (in SNR order), so two folders' results are comparable
        only when it is equal (another speech or noise folder, ``per_speaker``,
        ``max_seconds``, seed or SNR list changes it)."""
        h = hashlib.sha1()
        for name, x in zip(self.names, self.clean, strict=True):
            h.update(f"{name}\0{np.size(x)}\0".encode())
            h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        for snr in sorted(self.noisy):
            h.update(f"snr {snr:g}\0".encode())
            for y in self.noisy[snr]:
                h.update(np.ascontiguousarray(y, dtype=np.float32).tobytes())
        return h.hexdigest()


def make_test_pairs(speech_dir: str | Path, noise_dir: str | Path,
                    snrs: tuple[float, ...] = (-5.0, 0.0, 5.0), per_speaker: int = 2,
                    max_seconds: float = 6.0, seed: int = 0) -> TestPairs:
    """Build the held-out pairs: the first ``per_speaker`` usable utterances (sorted) of each
    speaker folder, cut to ``max_seconds``. An unusable file (unreadable, empty, NaN/Inf,
    silent: :class:`~robustdistill.audio.AudioError`; shorter than the metrics'
    ``MIN_METRIC_SAMPLES``; or digitally silent once cut, whose STOI of 0 would be averaged
    in) is skipped with a warning naming it and its reason, and the
    speaker's next file taken instead (the names, hence :meth:`TestPairs.sha1`, record which).
    A noise segment that is silent (a digitally silent stretch of its recording) is replaced,
    with a warning, by white noise from the same generator; a recording shorter than the
    utterance is looped, with a warning once per file (:meth:`NoiseBank.draw`).

    Args:
        speech_dir: folder of clean speech, one subfolder per speaker (searched recursively).
        noise_dir: folder of test noise recordings.
        snrs: SNRs in dB; each utterance is mixed with the same noise segment at each.
        per_speaker: utterances kept per speaker folder.
        max_seconds: cut of each utterance, in seconds (at 16 kHz).
        seed: seeds each utterance's noise draw (``default_rng([seed, i])``).

    Returns:
        :class:`TestPairs`.

    Raises:
        FileNotFoundError: no speech or noise files, or no usable speech file (each skipped
            one is logged).
    """
    from downstream.tasks.speech_enhancement.task import MIN_METRIC_SAMPLES, speech_metrics

    files = list_audio_files(speech_dir)
    if not files:
        raise FileNotFoundError(f"no speech below {speech_dir}")
    by_speaker: dict[str, list] = {}
    for f in files:
        by_speaker.setdefault(Path(f).parent.name, []).append(f)
    bank = NoiseBank.from_folder(noise_dir)
    chosen: list[tuple[Path, np.ndarray]] = []
    skipped = 0
    for spk in sorted(by_speaker):
        taken = 0
        for f in sorted(by_speaker[spk]):
            if taken == per_speaker:
                break
            try:
                x = load_audio(f)[: int(max_seconds * 16000)]
                if x.size < MIN_METRIC_SAMPLES:
                    raise AudioError(f"{f}: {x.size} samples, fewer than the metrics' "
                                     f"{MIN_METRIC_SAMPLES}", "too short")
                if not np.any(x):  # its STOI would be 0 and averaged in as a score
                    raise AudioError(f"{f}: digital silence in its first {max_seconds:g} s "
                                     "(max_seconds)", "silent")
            except AudioError as err:
                skipped += 1
                logger.warning("test speech: skipping %s [%s]: %s", f, err.reason, err)
                continue
            chosen.append((Path(f), x))
            taken += 1
    if skipped:
        logger.warning("test speech: %d unusable file(s) below %s skipped (named above); each "
                       "speaker's next file taken instead", skipped, speech_dir)
    if not chosen:
        raise FileNotFoundError(f"no usable speech below {speech_dir} ({skipped} file(s) "
                                "skipped, named above)")
    clean, names = [], []
    noisy: dict[float, list] = {s: [] for s in snrs}
    scores: dict[float, list] = {s: [] for s in snrs}
    for i, (f, x) in enumerate(chosen):
        rng = np.random.default_rng([seed, i])
        drawn, k = bank.draw(x.size, rng)  # says once if it loops a recording shorter than x
        seg, _ = white_if_silent(drawn, rng, bank.names[k])
        clean.append(x)
        # as text: a name that is not UTF-8 (surrogate escapes) was a UnicodeEncodeError in
        # sha1() and the results; written with \xff escapes (UTF-8 names unchanged)
        names.append(Path(f).name.encode("utf-8", "surrogateescape")
                     .decode("utf-8", "backslashreplace"))
        for s in snrs:
            y = mix_at_snr(x, seg, s)
            noisy[s].append(y)
            scores[s].append(speech_metrics(y, x, Path(f).name))
    return TestPairs(clean, noisy, names, scores)


@torch.no_grad()
def evaluate_model(model: FrameModel, pairs: TestPairs) -> dict:
    """Per-SNR means of every metric and improvement.

    Returns:
        ``{snr: {"si_sdr", "pesq", "stoi", "si_sdr_i", "pesq_i", "stoi_i", "n", "unscored"}}``
        (SNR as a string key, e.g. ``"-5"``; ``n`` utterances). A score that cannot be computed
        (a PESQ failure; SI-SDR of a silent output) is NaN, left out of its mean and counted in
        ``unscored`` (``{metric: count}``, only counts above 0), since leaving it out favours
        a model that fails on it.
    """
    from downstream.tasks.speech_enhancement.task import speech_metrics

    model = model.eval()
    out = {}
    for snr, items in pairs.noisy.items():
        rows = []
        for i, (y, x) in enumerate(zip(items, pairs.clean, strict=True)):
            enh = model(torch.from_numpy(y)[None]).enhanced[0].numpy()
            m = speech_metrics(enh, x, pairs.names[i])
            base = pairs.noisy_scores[snr][i]
            rows.append({**m, **{f"{k}_i": m[k] - base[k] for k in METRICS}})
        out[f"{snr:g}"] = scored_means(rows)
    return out


def scored_means(rows: list[dict[str, float]]) -> dict:
    """Each score's mean over the rows where it is finite, ``n`` rows, and ``unscored``:
    ``{score: rows where it is not finite}`` (only counts above 0). The SE evaluation's and
    ``train-se``'s validation's (:mod:`robustdistill.se.validation`) aggregate.

    Args:
        rows: one ``{score: value}`` per item (utterance or pair), each with the first's keys;
            NaN / Inf for a score the item could not get.

    Returns:
        ``{score: mean (NaN when no row has it finite), "n": len(rows), "unscored": {...}}``.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("scored_means needs at least one row")
    values = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]}
    agg: dict = {k: float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else float("nan")
                 for k, v in values.items()}
    agg["n"] = len(rows)
    agg["unscored"] = {k: int(n) for k, v in values.items()
                       if (n := np.count_nonzero(~np.isfinite(v)))}
    return agg


def noisy_summary(pairs: TestPairs) -> dict:
    """The noisy inputs' per-SNR mean scores (improvements 0), with ``n`` and ``unscored`` as
    :func:`evaluate_model` gives them: a PESQ failure on a noisy input also leaves that
    utterance out of every model's ``pesq_i``."""
    out = {}
    for snr, rows in pairs.noisy_scores.items():
        agg = scored_means([{k: r[k] for k in METRICS} for r in rows])
        agg.update({f"{k}_i": 0.0 for k in METRICS})
        out[f"{snr:g}"] = agg
    return out
