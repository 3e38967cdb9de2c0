"""Normalised minimum detection cost (minDCF) of a verification system, as an ``evaluate``
metric.

Wraps :func:`robustdistill.metrics.verification.compute_min_dcf` (the same code the speaker
verification task uses). Load offline with ``robustdistill.metrics.load_metric("min_dcf")``.
"""

import datasets
import evaluate

from robustdistill.metrics.verification import compute_min_dcf, split_scores

_DESCRIPTION = """Normalised minimum detection cost (NIST SRE): min over thresholds of
C_miss * P_miss * p_target + C_fa * P_fa * (1 - p_target), divided by
min(C_miss * p_target, C_fa * (1 - p_target)). Lower is better; 1 is a trivial system."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): trial scores, higher = more likely the same speaker.
    references (list of int): 1 for a target trial, 0 for a non-target trial.
    p_target (float, default 0.01): prior of a target trial (SUPERB uses 0.01).
    c_miss (float, default 1): cost of a miss.
    c_fa (float, default 1): cost of a false alarm.
Returns:
    min_dcf (float): the normalised minimum detection cost.
    threshold (float): the threshold reaching it (inf = reject all).
Raises:
    ValueError: no target or no non-target trial; labels other than 0/1; bad p_target/costs.
Warns (logging) when the EER of the scores is above 0.5: labels inverted, or distances given
where similarities are expected (or a system at chance).
Examples:
    >>> metric = robustdistill.metrics.load_metric("min_dcf")
    >>> round(metric.compute(predictions=[0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1],
    ...                      references=[1, 1, 1, 0, 0, 0, 0])["min_dcf"], 4)
    0.3333
"""

_CITATION = """@misc{nist_sre, title={The NIST Year 2010 Speaker Recognition Evaluation Plan},
author={{NIST}}, year={2010}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MinDcf(evaluate.Metric):
    """Normalised minimum detection cost of verification scores."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references, p_target=0.01, c_miss=1.0, c_fa=1.0):
        value, threshold = compute_min_dcf(
            *split_scores(predictions, references), p_target=p_target, c_miss=c_miss, c_fa=c_fa
        )
        return {"min_dcf": value, "threshold": threshold}
