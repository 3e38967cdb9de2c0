"""Speaker verification metrics: equal error rate (EER) and minimum detection cost (minDCF).

The one implementation used by the speaker verification task and by the ``eer`` / ``min_dcf``
``evaluate`` modules. A trial is accepted when its score is at or above the threshold.

Operating points are taken at every distinct score (tied scores move together, so the order of
tied trials never changes the result), plus "reject everything" (threshold +inf:
``P_miss = 1, P_fa = 0``).

* EER: the point where the miss rate equals the false-alarm rate, linearly interpolated between
  the two operating points around the crossing (as s3prl's ``sklearn.roc_curve`` + ``brentq``
  EER and Kaldi's ``compute-eer`` up to interpolation).
* minDCF: the NIST SRE detection cost ``C_det = C_miss * P_miss * p_target + C_fa * P_fa *
  (1 - p_target)`` minimised over thresholds (including accept- and reject-all) and normalised
  by ``min(C_miss * p_target, C_fa * (1 - p_target))``, the cost of the best trivial system
  ("The NIST Speaker Recognition Evaluation Plan", e.g. SRE 2010/2016; SUPERB SV uses
  ``p_target = 0.01``, ``C_miss = C_fa = 1``).

Scores are similarities (higher = more likely the same speaker) and the target scores come
first. Swapped arguments, or distances passed as similarities, give ``1 - EER`` (above 0.5)
and a minDCF of about 1 (the trivial system's) with no error, so both functions log a warning
when the EER of their scores is above 0.5 (a system that ranks non-target trials above target
trials more often than not; a system at chance can land there too). ``warn=False`` silences it
(bootstrap resamples of a near-chance system).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DetectionCurve", "compute_eer", "compute_min_dcf", "detection_curve", "split_scores"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectionCurve:
    """Miss / false-alarm rates at every distinct threshold, from strictest to loosest.

    Attributes:
        thresholds: ``(K,)``; ``thresholds[0] = +inf`` (reject all), then distinct scores
            in decreasing order (the last accepts every trial).
        p_miss: ``(K,)`` fraction of target trials with score < threshold (non-increasing).
        p_fa: ``(K,)`` fraction of non-target trials with score >= threshold (non-decreasing).
    """

    thresholds: np.ndarray
    p_miss: np.ndarray
    p_fa: np.ndarray


def split_scores(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Scores and 0/1 labels (1 = target trial) -> ``(target_scores, nontarget_scores)``.

    Raises:
        ValueError: different lengths, labels other than 0/1.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 1 (target trial) or 0 (non-target trial)")
    return scores[labels == 1], scores[labels == 0]


def detection_curve(target_scores, nontarget_scores) -> DetectionCurve:
    """Operating points of a verification system.

    Args:
        target_scores: ``(n_target,)`` scores of same-speaker trials (higher = more same).
        nontarget_scores: ``(n_nontarget,)`` scores of different-speaker trials.

    Raises:
        ValueError: no target or no non-target trial (rates undefined), NaN/Inf scores.
    """
    tar = np.asarray(target_scores, dtype=np.float64).ravel()
    non = np.asarray(nontarget_scores, dtype=np.float64).ravel()
    if tar.size == 0 or non.size == 0:
        raise ValueError(
            f"EER/minDCF need target and non-target trials, got {tar.size} target and "
            f"{non.size} non-target"
        )
    if not (np.isfinite(tar).all() and np.isfinite(non).all()):
        raise ValueError("scores contain NaN or Inf")
    thresholds = np.unique(np.concatenate([tar, non]))[::-1]  # distinct, decreasing
    tar_sorted, non_sorted = np.sort(tar), np.sort(non)
    # targets below t: misses; non-targets at or above t: false alarms
    p_miss = np.searchsorted(tar_sorted, thresholds, side="left") / tar.size
    p_fa = (non.size - np.searchsorted(non_sorted, thresholds, side="left")) / non.size
    return DetectionCurve(
        np.concatenate([[np.inf], thresholds]),
        np.concatenate([[1.0], p_miss]),
        np.concatenate([[0.0], p_fa]),
    )


def _eer(curve: DetectionCurve) -> tuple[float, float]:
    """``(eer, threshold)`` of a detection curve (see :func:`compute_eer`)."""
    diff = curve.p_miss - curve.p_fa  # starts at 1, ends <= 0, non-increasing
    i = int(np.argmax(diff <= 0))
    if i == 0:  # cannot happen (diff[0] = 1), kept for safety
        return 0.0, float(curve.thresholds[0])
    d0, d1 = diff[i - 1], diff[i]
    alpha = d0 / (d0 - d1)
    eer = curve.p_fa[i - 1] + alpha * (curve.p_fa[i] - curve.p_fa[i - 1])
    return float(eer), float(curve.thresholds[i])


def _warn_if_reversed(eer: float, metric: str) -> None:
    if eer > 0.5:
        logger.warning(
            "%s: the EER of these scores is %.3f > 0.5 (non-target trials score above target "
            "trials more often than not): are the target and non-target scores swapped, or a "
            "distance used as a similarity (higher must mean same speaker)? A system at chance "
            "can also land here", metric, eer)


def compute_eer(target_scores, nontarget_scores, warn: bool = True) -> tuple[float, float]:
    """Equal error rate.

    Args:
        target_scores / nontarget_scores: as :func:`detection_curve` (target first).
        warn: log a warning when the EER is above 0.5 (swapped arguments or a distance give
            ``1 - EER``; see the module docstring).

    Returns:
        ``(eer, threshold)``: the EER as a fraction in [0, 1] (interpolated at the crossing of
        ``P_miss`` and ``P_fa``), and the threshold of the first operating point at or past the
        crossing.

    Raises:
        ValueError: as :func:`detection_curve`.
    """
    eer, threshold = _eer(detection_curve(target_scores, nontarget_scores))
    if warn:
        _warn_if_reversed(eer, "EER")
    return eer, threshold


def compute_min_dcf(
    target_scores,
    nontarget_scores,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    warn: bool = True,
) -> tuple[float, float]:
    """Normalised minimum detection cost.

    Args:
        target_scores / nontarget_scores: as :func:`detection_curve`.
        p_target: prior probability of a target trial (SUPERB: 0.01).
        c_miss: cost of a miss.
        c_fa: cost of a false alarm.
        warn: log a warning when the EER of the scores is above 0.5 (swapped arguments or a
            distance give a minDCF of about 1, which alone looks like a weak system).

    Returns:
        ``(min_dcf, threshold)``: the minimum of ``C_det / min(c_miss * p_target,
        c_fa * (1 - p_target))`` over thresholds (at most 1: a trivial system reaches 1), and
        the threshold reaching it (``inf`` = reject all).

    Raises:
        ValueError: as :func:`detection_curve`; ``p_target`` outside (0, 1) or non-positive
            costs.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must lie in (0, 1), got {p_target}")
    if not (c_miss > 0 and c_fa > 0 and math.isfinite(c_miss) and math.isfinite(c_fa)):
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss}, {c_fa}")
    curve = detection_curve(target_scores, nontarget_scores)
    if warn:
        _warn_if_reversed(_eer(curve)[0], "minDCF")
    cost = c_miss * p_target * curve.p_miss + c_fa * (1.0 - p_target) * curve.p_fa
    default = min(c_miss * p_target, c_fa * (1.0 - p_target))
    i = int(np.argmin(cost))
    return float(cost[i] / default), float(curve.thresholds[i])
