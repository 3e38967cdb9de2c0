"""SI-SDR improvement (SI-SDRi) of speech enhancement, as an ``evaluate`` metric.

Wraps :func:`robustdistill.metrics.enhancement.si_sdr_improvement` (SI-SDR of
"SDR - half-baked or well done?", arXiv:1811.02508, computed by torchmetrics). Load offline
with ``robustdistill.metrics.load_metric("si_sdr_improvement")``.
"""

import datasets
import evaluate
import numpy as np

from robustdistill.metrics.enhancement import si_sdr_improvement

_DESCRIPTION = """SI-SDR improvement in dB: SI-SDR(enhanced, clean) - SI-SDR(noisy, clean),
averaged over utterances. Higher is better."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): enhanced waveforms.
    references (list of list of float): clean waveforms (same lengths as predictions).
    noisy (list of list of float): the unprocessed noisy inputs (same lengths).
Returns:
    si_sdr_improvement (float): mean SI-SDRi in dB over utterances.
Raises:
    ValueError: length mismatch within an utterance, empty or non-finite audio.
"""

_CITATION = """@inproceedings{le2019sdr, title={SDR - half-baked or well done?},
author={Le Roux, Jonathan and Wisdom, Scott and Erdogan, Hakan and Hershey, John R.},
booktitle={ICASSP}, year={2019}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SiSdrImprovement(evaluate.Metric):
    """Mean SI-SDR improvement of enhanced speech over its noisy input."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                    "noisy": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, noisy):
        values = [
            float(si_sdr_improvement(np.asarray(p), np.asarray(n), np.asarray(r)))
            for p, r, n in zip(predictions, references, noisy, strict=True)
        ]
        return {"si_sdr_improvement": float(np.mean(values))}
