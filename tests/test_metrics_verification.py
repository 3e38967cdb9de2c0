"""Mutation-testing additions for robustdistill.metrics (EER threshold, SI-SDRi zero mean)."""

from __future__ import annotations

import numpy as np
import pytest

from robustdistill.metrics import compute_eer, si_sdr, si_sdr_improvement


def test_eer_threshold_when_the_curves_meet_exactly_on_an_operating_point():
    # targets [0.9, 0.3], non-targets [0.5, 0.1]; accept when score >= t. (P_miss, P_fa):
    #   inf (1, 0); 0.9 (1/2, 0); 0.5 (1/2, 1/2); 0.3 (0, 1/2); 0.1 (0, 1).
    # P_miss - P_fa reaches 0 exactly at t = 0.5: EER 1/2, and the first operating point
    # "at or past the crossing" is t = 0.5 (not the next one, 0.3).
    eer, threshold = compute_eer([0.9, 0.3], [0.5, 0.1])
    assert eer == pytest.approx(0.5)
    assert threshold == 0.5


def test_si_sdr_improvement_removes_the_mean_by_default():
    # clean c, noisy c + e (e orthogonal to c, same energy: 0 dB), estimate c + 0.1 e plus a
    # DC offset. Zero-mean SI-SDR (arXiv:1811.02508, the documented default) ignores the DC:
    # 20 dB - 0 dB = 20 dB. Without mean removal the offset counts as distortion.
    c = np.array([1.0, -1.0, 1.0, -1.0])
    e = np.array([1.0, 1.0, -1.0, -1.0])
    estimate = c + 0.1 * e + 0.7
    assert float(si_sdr(estimate, c)) == pytest.approx(20.0, abs=1e-6)
    assert float(si_sdr_improvement(estimate, c + e + 0.3, c)) == pytest.approx(20.0, abs=1e-6)
    # zero_mean=False keeps the offset: SI-SDR of c + 0.1 e + 0.7 against c is
    # 10 log10(|c|^2 / (0.01 |e|^2 + 4 * 0.49)) = 10 log10(4 / 2) = 3.0103 dB (c has no DC).
    assert float(si_sdr(estimate, c, zero_mean=False)) == pytest.approx(
        10 * np.log10(4 / (0.04 + 1.96)), abs=1e-6)
    # and so does the noisy side of the improvement: the noisy c + e + 0.3 against c keeps
    # its offset too, 10 log10(4 / (|e|^2 + 4 * 0.09)) = 10 log10(4 / 4.36)
    assert float(si_sdr_improvement(estimate, c + e + 0.3, c, zero_mean=False)) == pytest.approx(
        10 * np.log10(4 / 2.0) - 10 * np.log10(4 / 4.36), abs=1e-6)


def test_eer_and_min_dcf_warn_when_the_scores_look_swapped(caplog):
    # targets [0.9, 0.8], non-targets [0.3, 0.1]: EER 0, minDCF 0. Swapped (or a distance
    # passed as a similarity) the same trials give EER 1 and minDCF 1 (the trivial system's),
    # numbers that are not errors, so both warn; the right order does not.
    from robustdistill.metrics import compute_min_dcf

    tar, non = [0.9, 0.8], [0.3, 0.1]
    with caplog.at_level("WARNING", logger="robustdistill.metrics.verification"):
        assert compute_eer(tar, non)[0] == pytest.approx(0.0)
        assert compute_min_dcf(tar, non)[0] == pytest.approx(0.0)
        assert not caplog.records
        assert compute_eer(non, tar)[0] == pytest.approx(1.0)
        assert compute_min_dcf(non, tar)[0] == pytest.approx(1.0)
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 2
        assert messages[0].startswith("EER: the EER of these scores is 1.000 > 0.5")
        assert messages[1].startswith("minDCF: the EER of these scores is 1.000 > 0.5")
        assert all("swapped" in m and "distance" in m for m in messages)
        caplog.clear()
        compute_eer(non, tar, warn=False)
        compute_min_dcf(non, tar, warn=False)
        # EER exactly 0.5 (a system at chance by construction) does not warn
        compute_eer([0.9, 0.3], [0.5, 0.1])
        assert not caplog.records
