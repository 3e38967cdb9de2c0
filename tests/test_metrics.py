"""EER and minDCF against hand-computed values; the evaluate modules load offline."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from robustdistill.metrics import (  # noqa: E402
    compute_eer,
    compute_min_dcf,
    load_metric,
    si_sdr_improvement,
    split_scores,
)

TAR = [0.9, 0.8, 0.4]
NON = [0.7, 0.3, 0.2, 0.1]


def test_eer_by_hand():
    # accept if score >= t. Operating points (P_miss, P_fa):
    #   t=inf (1, 0); t=0.9 (2/3, 0); t=0.8 (1/3, 0); t=0.7 (1/3, 1/4); t=0.4 (0, 1/4) ...
    # P_miss - P_fa: 0.8 -> 1/3, 0.7 -> 1/12, 0.4 -> -1/4: the crossing lies between t=0.7 and
    # t=0.4, where P_fa stays 1/4 and P_miss goes 1/3 -> 0; alpha = (1/12) / (1/12 + 1/4) = 1/4,
    # P_miss = 1/3 - 1/4 * 1/3 = 1/4 = P_fa. EER = 0.25, threshold 0.4.
    eer, threshold = compute_eer(TAR, NON)
    assert eer == pytest.approx(0.25)
    assert threshold == 0.4


def test_min_dcf_by_hand():
    # p_target 0.01, C_miss = C_fa = 1: C_det = 0.01 P_miss + 0.99 P_fa, normalised by
    # min(0.01, 0.99) = 0.01 -> P_miss + 99 P_fa. At the points above: inf 1, 0.9 2/3,
    # 0.8 1/3, 0.7 1/3 + 99/4, 0.4 99/4, ... accept-all 99. Minimum 1/3 at t=0.8.
    value, threshold = compute_min_dcf(TAR, NON, p_target=0.01)
    assert value == pytest.approx(1 / 3)
    assert threshold == 0.8
    # p_target 0.5: normalised cost P_miss + P_fa: inf 1, 0.9 2/3, 0.8 1/3, 0.7 7/12,
    # 0.4 1/4, 0.3 1/2, 0.2 3/4, 0.1 1. Minimum 1/4 at t=0.4.
    value, threshold = compute_min_dcf(TAR, NON, p_target=0.5)
    assert value == pytest.approx(0.25)
    assert threshold == 0.4
    # costs: C_miss=10, C_fa=1, p=0.1: C_det = P_miss + 0.9 P_fa, normaliser min(1, 0.9) = 0.9;
    # points: inf 1, 0.9 2/3, 0.8 1/3, 0.7 1/3+0.225=0.5583, 0.4 0.225, 0.3 0.45, ... accept-all
    # 0.9. Minimum 0.225 / 0.9 = 0.25 at t=0.4.
    value, _ = compute_min_dcf(TAR, NON, p_target=0.1, c_miss=10.0, c_fa=1.0)
    assert value == pytest.approx(0.25)


def test_ties_between_target_and_nontarget():
    # targets [0.9, 0.5], non-targets [0.5, 0.1]; the tie at 0.5 moves together:
    # inf (1, 0), 0.9 (1/2, 0), 0.5 (0, 1/2), 0.1 (0, 1). Crossing between 0.9 and 0.5 with
    # alpha = (1/2) / (1/2 + 1/2) = 1/2: EER = 1/4 (0 or 1/2 if the tie were broken by order).
    assert compute_eer([0.9, 0.5], [0.5, 0.1])[0] == pytest.approx(0.25)
    assert compute_eer([0.5, 0.9], [0.1, 0.5])[0] == pytest.approx(0.25)  # order-free
    # all scores equal: (1, 0) -> (0, 1): EER 1/2; minDCF (p=0.01) = min(1, 99) = 1
    assert compute_eer([1.0, 1.0], [1.0, 1.0])[0] == pytest.approx(0.5)
    assert compute_min_dcf([1.0, 1.0], [1.0, 1.0])[0] == pytest.approx(1.0)


def test_perfect_and_inverted_systems():
    assert compute_eer([2.0, 3.0], [0.0, 1.0])[0] == 0.0
    assert compute_min_dcf([2.0, 3.0], [0.0, 1.0])[0] == 0.0
    assert compute_eer([0.0, 1.0], [2.0, 3.0])[0] == pytest.approx(1.0)


def test_all_targets_or_no_targets_raise():
    with pytest.raises(ValueError, match="non-target"):
        compute_eer([0.1, 0.2], [])
    with pytest.raises(ValueError, match="target"):
        compute_min_dcf([], [0.3])
    with pytest.raises(ValueError, match="NaN"):
        compute_eer([0.1, float("nan")], [0.2])
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf(TAR, NON, p_target=1.0)
    # a cost of 0 makes the normaliser 0 (0 / 0); a negative or infinite one is no cost
    for c_miss, c_fa in ((0.0, 1.0), (1.0, -1.0), (float("inf"), 1.0), (1.0, float("nan"))):
        with pytest.raises(ValueError, match="c_miss and c_fa must be positive"):
            compute_min_dcf(TAR, NON, c_miss=c_miss, c_fa=c_fa)
    with pytest.raises(ValueError, match="0/1|1 \\(target"):
        split_scores([0.1, 0.2], [1, 2])


def test_eer_agrees_with_torchmetrics_on_random_scores():
    import torch
    from torchmetrics.functional.classification import binary_eer

    rng = np.random.default_rng(0)
    tar, non = rng.normal(1.0, 1.0, 400), rng.normal(-1.0, 1.0, 1600)
    ours = compute_eer(tar, non)[0]
    scores = torch.tensor(np.concatenate([tar, non]))
    labels = torch.tensor([1] * 400 + [0] * 1600)
    theirs = float(binary_eer(scores, labels))
    assert ours == pytest.approx(theirs, abs=2e-3)  # differ only by interpolation


def test_evaluate_modules_offline():
    labels = [1, 1, 1, 0, 0, 0, 0]
    eer = load_metric("eer").compute(predictions=TAR + NON, references=labels)
    assert eer["eer"] == pytest.approx(0.25)
    dcf = load_metric("min_dcf").compute(predictions=TAR + NON, references=labels, p_target=0.5)
    assert dcf["min_dcf"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("accuracy")


def test_si_sdr_improvement_by_hand():
    # clean c, noisy n = c + e with e orthogonal to c and |e|^2 = |c|^2 -> SI-SDR(noisy) = 0 dB;
    # estimate = c + 0.1 e -> SI-SDR = 10 log10(1 / 0.01) = 20 dB; improvement 20 dB.
    c = np.array([1.0, -1.0, 1.0, -1.0])
    e = np.array([1.0, 1.0, -1.0, -1.0])  # zero mean, orthogonal to c, same energy
    value = float(si_sdr_improvement(c + 0.1 * e, c + e, c))
    assert value == pytest.approx(20.0, abs=1e-6)
    metric = load_metric("si_sdr_improvement")
    out = metric.compute(predictions=[c + 0.1 * e], references=[c], noisy=[c + e])
    assert out["si_sdr_improvement"] == pytest.approx(20.0, abs=1e-4)
