"""Integrated Gradients: the baseline really used, the quadrature by hand, every setting in the
cache key, the segment range in the key (mutation-testing round 3, reviewer b)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_speaker_attribution import _crops

from robustdistill.speaker.attribution import (
    AttributionCache,
    IGSettings,
    _noise_baseline,
    attribute_segments,
    integrated_gradients,
)


def _square(v: torch.Tensor) -> torch.Tensor:
    return v.pow(2).sum(dim=(1, 2))


def test_integrated_gradients_starts_the_path_at_the_given_baseline():
    """F(x) = sum(x^2) from baseline b: IG_i = (x_i - b_i) * (x_i + b_i) = x_i^2 - b_i^2 by
    hand (exact for any exact quadrature of the linear integrand); completeness holds."""
    x = torch.tensor([[[1.0, -2.0], [0.5, 3.0]]])
    b = torch.tensor([[[0.5, 1.0], [-1.0, 2.0]]])
    attr, delta = integrated_gradients(_square, x, b, IGSettings(n_steps=4))
    torch.testing.assert_close(attr, x.pow(2) - b.pow(2), atol=1e-5, rtol=1e-5)
    assert abs(float(delta[0])) < 1e-5


def test_integrated_gradients_uses_the_configured_quadrature():
    """F(x) = sum(x^3) from 0: Gauss-Legendre with 2 nodes is exact (x^3); any other method or
    step count is captum's own answer for that method and count (captum 0.9's
    "riemann_trapezoid" weights sum to (n - 1) / n, so it is not exact: docs in ig.method)."""
    from captum.attr import IntegratedGradients

    x = torch.tensor([[[1.0, -2.0, 0.5]]])
    cube = lambda v: v.pow(3).sum(dim=(1, 2))  # noqa: E731
    zero = torch.zeros_like(x)
    exact, _ = integrated_gradients(cube, x, zero, IGSettings(n_steps=2))
    torch.testing.assert_close(exact, x.pow(3), atol=1e-5, rtol=1e-5)
    answers = []
    for method, n in (("riemann_trapezoid", 2), ("riemann_trapezoid", 5), ("riemann_left", 4)):
        ours, delta = integrated_gradients(cube, x, zero, IGSettings(n_steps=n, method=method))
        captum_, captum_delta = IntegratedGradients(cube).attribute(
            x, zero, n_steps=n, method=method, return_convergence_delta=True)
        torch.testing.assert_close(ours, captum_, atol=1e-6, rtol=1e-6)
        assert float(delta[0]) == pytest.approx(float(captum_delta[0]), abs=1e-6)
        answers.append(ours)
    # the three settings give three different answers, none exact: each setting reached captum
    assert not torch.allclose(answers[0], answers[1]) and not torch.allclose(answers[1],
                                                                              answers[2])
    assert all(not torch.allclose(a, x.pow(3)) for a in answers)


def test_noise_baseline_maps_equal_captum_from_that_noise(tiny_teacher):
    """With baseline="noise" the path starts at the noise's mel frames: the map, the gap and
    the completeness delta equal captum's from that very baseline."""
    from captum.attr import IntegratedGradients

    crops, centroids, bounds = _crops(2, seed=7), torch.randn(2, 8), [(0, 1600), (0, 3200)]
    settings = IGSettings(n_steps=6, baseline="noise", noise_dbfs=-20.0)
    ours = attribute_segments(tiny_teacher, crops, centroids, bounds, settings,
                              AttributionCache(None))
    for c, crop in enumerate(crops):
        target = F.normalize(centroids[c], dim=-1)

        def score(m, target=target):
            return F.normalize(tiny_teacher.embed_mels(m), dim=-1) @ target

        for s, (a, b) in enumerate(bounds):
            key = AttributionCache.key(crop, a, b, tiny_teacher.fingerprint, settings,
                                       target.numpy())
            base = _noise_baseline(tiny_teacher, b - a, [key], -20.0, torch.device("cpu"))
            mels = tiny_teacher.mel(torch.from_numpy(crop[a:b])[None])
            attr, delta = IntegratedGradients(score).attribute(
                mels, baselines=base, n_steps=6, return_convergence_delta=True)
            expected = attr.abs().sum(-1)[0]
            np.testing.assert_allclose(ours[c][s].map, (expected / expected.sum()).numpy(),
                                       rtol=1e-4, atol=1e-7)
            with torch.no_grad():
                gap = float(score(mels)[0] - score(base)[0])
            assert ours[c][s].score_gap == pytest.approx(gap, abs=1e-6)
            assert ours[c][s].delta == pytest.approx(float(delta[0]), abs=1e-5)
            assert ours[c][s].delta == pytest.approx(float(attr.sum()) - gap, abs=1e-5)


@pytest.mark.parametrize("change", [
    {"method": "riemann_trapezoid"},
    {"baseline": "noise"},
    {"noise_dbfs": -30.0},
    {"n_steps": 5},
])
def test_every_setting_that_changes_a_map_is_in_the_cache_key(change, tiny_teacher,
                                                               tmp_path):
    crops, centroids, bounds = _crops(1, seed=8), torch.randn(1, 8), [(0, 1600)]
    base = IGSettings(n_steps=4, baseline="noise", noise_dbfs=-40.0)
    if "baseline" in change:
        base = IGSettings(n_steps=4)  # zero -> noise
    first = attribute_segments(tiny_teacher, crops, centroids, bounds, base,
                               AttributionCache(tmp_path))
    other = IGSettings(**{**base.__dict__, **change})
    cache = AttributionCache(tmp_path)
    second = attribute_segments(tiny_teacher, crops, centroids, bounds, other, cache)
    assert (cache.hits, cache.misses) == (0, 1)
    assert not np.array_equal(first[0][0].map, second[0][0].map)
    # internal_batch_size changes no map: it shares the key
    same = AttributionCache(tmp_path)
    attribute_segments(tiny_teacher, crops, centroids, bounds,
                       IGSettings(**{**base.__dict__, "internal_batch_size": 3}), same)
    assert (same.hits, same.misses) == (1, 0)


def test_equal_audio_at_two_ranges_is_cached_under_each_range(tiny_teacher, tmp_path):
    """A crop whose halves are the same samples: each half's stored map keeps its own range."""
    half = _crops(1, samples=1600, seed=9)[0]
    crop = np.concatenate([half, half])
    bounds = [(0, 1600), (1600, 3200)]
    centroids = torch.randn(1, 8)
    settings = IGSettings(n_steps=4)
    cache = AttributionCache(tmp_path)
    attribute_segments(tiny_teacher, [crop], centroids, bounds, settings, cache)
    again = AttributionCache(tmp_path)
    (row,) = attribute_segments(tiny_teacher, [crop], centroids, bounds, settings, again)
    assert (again.hits, again.misses) == (2, 0)
    assert [(m.start, m.stop) for m in row] == bounds
