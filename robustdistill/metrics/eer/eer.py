"""Equal error rate (EER) of a speaker verification system, as an ``evaluate`` metric.

Wraps :func:`robustdistill.metrics.verification.compute_eer` (the same code the speaker
verification task uses). Load offline with ``robustdistill.metrics.load_metric("eer")``.
"""

import datasets
import evaluate

from robustdistill.metrics.verification import compute_eer, split_scores

_DESCRIPTION = """Equal error rate: the error rate at the threshold where the miss rate
(target trials rejected) equals the false-alarm rate (non-target trials accepted), linearly
interpolated between the operating points at distinct scores. Lower is better."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): trial scores, higher = more likely the same speaker.
    references (list of int): 1 for a target (same-speaker) trial, 0 for a non-target trial.
Returns:
    eer (float): the equal error rate, a fraction in [0, 1].
    threshold (float): the score threshold at the crossing.
Raises:
    ValueError: no target or no non-target trial; labels other than 0/1; NaN scores.
Warns (logging) when the EER of the scores is above 0.5: labels inverted, or distances given
where similarities are expected (or a system at chance).
Examples:
    >>> metric = robustdistill.metrics.load_metric("eer")
    >>> metric.compute(predictions=[0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1],
    ...                references=[1, 1, 1, 0, 0, 0, 0])["eer"]
    0.25
"""

_CITATION = """@misc{nist_sre, title={The NIST Year 2010 Speaker Recognition Evaluation Plan},
author={{NIST}}, year={2010}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Eer(evaluate.Metric):
    """Equal error rate of verification scores."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references):
        eer, threshold = compute_eer(*split_scores(predictions, references))
        return {"eer": eer, "threshold": threshold}
