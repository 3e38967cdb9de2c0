"""Speech metrics, as plain functions and as offline ``evaluate`` modules.

The plain functions (:mod:`.verification`: EER, minDCF; :mod:`.enhancement`: SI-SDR
improvement) are what the downstream tasks call. The same functions are wrapped as
``evaluate.Metric`` modules in ``robustdistill/metrics/<name>/<name>.py`` (``eer``, ``min_dcf``,
``si_sdr_improvement``) and load from their local path, with no hub access::

    metric = load_metric("eer")           # == evaluate.load(".../robustdistill/metrics/eer")
    metric.compute(predictions=scores, references=labels)   # {"eer": ..., "threshold": ...}
"""

from __future__ import annotations

from pathlib import Path

from .enhancement import si_sdr, si_sdr_improvement
from .verification import compute_eer, compute_min_dcf, detection_curve, split_scores

__all__ = [
    "METRICS",
    "compute_eer",
    "compute_min_dcf",
    "detection_curve",
    "load_metric",
    "metric_path",
    "si_sdr",
    "si_sdr_improvement",
    "split_scores",
]

#: The evaluate modules shipped with the package.
METRICS = ("eer", "min_dcf", "si_sdr_improvement")


def metric_path(name: str) -> Path:
    """Folder of the shipped evaluate module ``name``.

    Raises:
        ValueError: not one of :data:`METRICS`.
    """
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; shipped metrics: {', '.join(METRICS)}")
    return Path(__file__).parent / name


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of a shipped metric module from its local path (works offline).

    Args:
        name: one of :data:`METRICS`.
        **kwargs: passed to ``evaluate.load`` (e.g. ``experiment_id``).

    Raises:
        ValueError: unknown name.
    """
    import evaluate

    return evaluate.load(str(metric_path(name)), **kwargs)
