"""Speech enhancement metric: SI-SDR improvement (SI-SDRi).

SI-SDR as defined in "SDR - half-baked or well done?" (Le Roux et al., arXiv:1811.02508),
computed by torchmetrics; the improvement is SI-SDR(estimate, clean) - SI-SDR(noisy, clean),
in dB. Used by the speech enhancement task and by the ``si_sdr_improvement`` evaluate module.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

__all__ = ["SilentSignalError", "si_sdr", "si_sdr_improvement"]


class SilentSignalError(ValueError):
    """A silent (all-zero or, with ``zero_mean``, constant) signal: SI-SDR is undefined."""


def _as_tensor(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float64) if not torch.is_tensor(x) else x)
    if t.dim() == 0 or t.shape[-1] == 0:
        raise ValueError(f"{name}: expected (..., samples) audio, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return t.double()


def si_sdr(estimate, reference, zero_mean: bool = True) -> torch.Tensor:
    """SI-SDR in dB (arXiv:1811.02508), per signal.

    Args:
        estimate: ``(..., S)`` signals.
        reference: ``(..., S)`` clean references (same shape).
        zero_mean: remove each signal's mean first (the paper's definition).

    Returns:
        ``(...)`` float64 tensor of dB values.

    Raises:
        ValueError: shape mismatch, empty or non-finite signals.
        SilentSignalError: (a ``ValueError``) a silent reference or estimate (all zeros; with
            ``zero_mean``, constant): SI-SDR is undefined there (0 / 0), and torchmetrics'
            epsilon would report about -199 dB for a silent reference and 0 dB for a silent
            estimate.
    """
    est, ref = _as_tensor(estimate, "estimate"), _as_tensor(reference, "reference")
    if est.shape != ref.shape:
        raise ValueError(f"estimate {tuple(est.shape)} and reference {tuple(ref.shape)} differ")
    for name, x in (("reference", ref), ("estimate", est)):
        centred = x - x.mean(dim=-1, keepdim=True) if zero_mean else x
        # zero up to float64 rounding of the mean (a constant signal, a 1-sample signal)
        if bool((centred.abs().amax(dim=-1) <= 1e-12 * x.abs().amax(dim=-1)).any()):
            what = "constant" if zero_mean else "all zeros"
            raise SilentSignalError(f"{name} is silent ({what}): SI-SDR is undefined")
    return scale_invariant_signal_distortion_ratio(est, ref, zero_mean=zero_mean)


def si_sdr_improvement(estimate, noisy, clean, zero_mean: bool = True) -> torch.Tensor:
    """SI-SDR(estimate, clean) - SI-SDR(noisy, clean), in dB, per signal.

    Args:
        estimate: ``(..., S)`` enhanced signals.
        noisy: ``(..., S)`` the unprocessed noisy inputs.
        clean: ``(..., S)`` clean references.
        zero_mean: see :func:`si_sdr`.

    Returns:
        ``(...)`` float64 tensor of dB improvements.

    Raises:
        ValueError: shape mismatch, empty or non-finite signals.
        SilentSignalError: a silent signal (see :func:`si_sdr`).
    """
    return si_sdr(estimate, clean, zero_mean) - si_sdr(noisy, clean, zero_mean)
