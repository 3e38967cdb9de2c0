"""Mutation-testing additions for downstream.stats: exact percentiles, the two-sided p-value,
NaN resamples, and that resampling reaches every item."""

from __future__ import annotations

import math

import numpy as np
import pytest

from downstream.stats import bootstrap_interval, paired_bootstrap, resample_indices


def _sequence(values):
    """A statistic that ignores the indices and returns ``values`` one call after another."""
    it = iter(values)
    return lambda idx: next(it)


def test_interval_is_the_2_5_and_97_5_percentiles():
    # resampled metric values 0, 1, ..., 99 (linear-interpolated quantiles, numpy's default):
    # 2.5 % -> 0.025 * 99 = 2.475, 97.5 % -> 0.975 * 99 = 96.525.
    low, high = bootstrap_interval(_sequence(range(100)), [5], resamples=100)
    assert low == pytest.approx(2.475) and high == pytest.approx(96.525)
    low, high = bootstrap_interval(_sequence(range(100)), [5], resamples=100, level=0.9)
    assert low == pytest.approx(4.95) and high == pytest.approx(94.05)


def test_undefined_resamples_are_dropped_not_propagated():
    values = [float("nan")] * 10 + [float(v) for v in range(11)]  # finite: 0..10
    low, high = bootstrap_interval(_sequence(values), [3], resamples=21)
    assert low == pytest.approx(0.25) and high == pytest.approx(9.75)  # 0.025 * 10, 0.975 * 10


def test_paired_p_value_is_two_sided_by_hand():
    # observed full-set values first (a: 0.5, b: 0.0), then one value per resample; b is 0, so
    # the resampled differences are 8 x (+1) and 2 x (-1): P(d <= 0) = 0.2, P(d >= 0) = 0.8,
    # two-sided p = 2 * min = 0.4.
    a = _sequence([0.5] + [1.0] * 8 + [-1.0] * 2)
    b = _sequence([0.0] * 11)
    out = paired_bootstrap(a, b, [4], resamples=10)
    assert out["difference"] == 0.5
    assert out["p_value"] == pytest.approx(0.4)
    assert out["resamples"] == 10
    assert (out["low"], out["high"]) == (pytest.approx(-1.0), pytest.approx(1.0))
    # and the interval bounds: 2.5 % of [-1, -1, 1 x 8] at position 0.225 -> -1; 97.5 % -> 1
    # a difference that is never above zero: p = 2 * min(1, 0) = 0
    out = paired_bootstrap(_sequence([0.0] + [-1.0] * 5), _sequence([0.0] * 6), [2], resamples=5)
    assert out["p_value"] == 0.0 and out["high"] == -1.0


def test_resamples_draw_every_item_with_replacement():
    rng = np.random.default_rng(0)
    draws = np.concatenate([resample_indices([2, 5], rng)[0] for _ in range(200)])
    assert set(draws.tolist()) == {0, 1}  # both items of a 2-item group are reachable
    idx = resample_indices([2, 5], np.random.default_rng(1))
    assert [len(i) for i in idx] == [2, 5] and idx[1].max() < 5 and idx[1].min() >= 0
    # a statistic of "was the last item drawn": its 95 % interval must not collapse to 0
    low, high = bootstrap_interval(lambda i: float(np.mean(i[0] == 1)), [2], resamples=400)
    assert (low, high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least one item"):
        resample_indices([0], rng)


def test_all_resamples_undefined_gives_nan_interval():
    low, high = bootstrap_interval(lambda i: float("nan"), [3], resamples=5)
    assert math.isnan(low) and math.isnan(high)


def test_two_stage_draw_picks_clusters_then_members_within_each():
    from downstream.stats import full_indices

    sizes = [(2, 3), 4]  # group 0: clusters of 2 and 3 members (0-1, 2-4); group 1: 4 items
    full = full_indices(sizes)
    np.testing.assert_array_equal(full[0], [[0, 0], [0, 1], [1, 2], [1, 3], [1, 4]])
    np.testing.assert_array_equal(full[1], np.arange(4))
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(200):
        rows, flat = resample_indices(sizes, rng)
        assert flat.shape == (4,)
        copies = rows[:, 0]
        assert set(copies.tolist()) == {0, 1}  # two clusters drawn, each a copy
        for copy in (0, 1):
            members = rows[copies == copy, 1]
            cluster = 0 if members.max() < 2 else 1
            # all of a copy's members come from one cluster, as many as it has
            assert len(members) == (2, 3)[cluster]
            assert members.min() >= (0, 2)[cluster] and members.max() <= (1, 4)[cluster]
            seen.add((cluster, tuple(sorted(members.tolist()))))
    assert (0, (0, 0)) in seen and (1, (2, 3, 4)) in seen  # with replacement, and whole
    with pytest.raises(ValueError, match="at least one item"):
        resample_indices([(2, 0)], rng)
