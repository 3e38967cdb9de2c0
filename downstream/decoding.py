"""Decoding a run's audio once: every utterance of every split, before anything is encoded.

An utterance that cannot be decoded, or is shorter than one SSL encoder frame, is skipped with
a logged warning and counted per split (results.json's ``skipped_items``); a split left with
no usable audio is an error.
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm.auto import tqdm

from robustdistill.audio import AudioError
from robustdistill.upstream import SSL_RECEPTIVE_FIELD

from .data import SPLITS, Utterance, load_waveform

logger = logging.getLogger(__name__)

__all__ = ["decode_all"]


def decode_all(splits: dict[str, list[Utterance]], max_seconds: float | None):
    """Decode every utterance once; undecodable ones are skipped with a logged warning."""
    waveforms: dict[str, list[tuple[Utterance, np.ndarray]]] = {}
    skipped: dict[str, int] = {}
    for split in SPLITS:
        kept = []
        for utterance in tqdm(splits[split], desc=f"decode {split}", leave=False):
            try:
                waveform = load_waveform(utterance, max_seconds)
                if len(waveform) < SSL_RECEPTIVE_FIELD:  # no frame from an SSL encoder
                    raise AudioError(f"{utterance.key}: {len(waveform)} samples, shorter than "
                                     f"one encoder frame ({SSL_RECEPTIVE_FIELD})", "too short")
                kept.append((utterance, waveform))
            except AudioError as err:
                logger.warning("skipping %s: %s", utterance.key, err)
        skipped[split] = len(splits[split]) - len(kept)
        if not kept:
            raise ValueError(f"no usable audio in the {split} split")
        waveforms[split] = kept
    return waveforms, skipped
