"""Integrated-Gradients maps: against captum and the closed form, completeness, the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustdistill.speaker.attribution import (
    AttributionCache,
    IGSettings,
    attribute_segments,
    frame_map,
    integrated_gradients,
    segment_bounds,
)
from robustdistill.speaker.ge2e import GE2E


def _crops(n: int, samples: int = 3200, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(samples)).astype(np.float32) for _ in range(n)]


def test_segment_bounds_by_hand():
    assert segment_bounds(48000, [1.0, 2.0, None]) == [
        (0, 16000), (16000, 32000), (32000, 48000), (0, 32000), (0, 48000)]
    # a 2 s crop: the 2 s segment is the whole crop and appears once
    assert segment_bounds(32000, [1.0, 2.0, None]) == [(0, 16000), (16000, 32000), (0, 32000)]
    assert segment_bounds(8000, [1.0]) == [(0, 8000)]  # longer than the crop: the crop
    with pytest.raises(ValueError, match="positive"):
        segment_bounds(16000, [0.0])


def test_frame_map_pools_abs_over_features_and_normalises():
    attr = torch.tensor([[[1.0, -1.0], [2.0, 0.0], [0.0, 0.0]]])  # (1 segment, 3 frames, 2)
    assert torch.allclose(frame_map(attr), torch.tensor([[0.5, 0.5, 0.0]]))
    assert torch.allclose(frame_map(torch.zeros(1, 4, 2)), torch.full((1, 4), 0.25))


def test_integrated_gradients_closed_form_of_a_quadratic():
    # F(x) = sum(x^2): IG from a zero baseline is exactly x^2 (any exact quadrature of a
    # linear integrand), and completeness holds with zero gap.
    x = torch.tensor([[[1.0, -2.0], [0.5, 3.0]]])
    attr, delta = integrated_gradients(lambda v: v.pow(2).sum(dim=(1, 2)), x, torch.zeros_like(x),
                                       IGSettings(n_steps=4))
    assert torch.allclose(attr, x.pow(2), atol=1e-5)
    assert abs(float(delta[0])) < 1e-5


def test_maps_equal_captum_on_a_tiny_ge2e(tiny_teacher, tmp_path):
    from captum.attr import IntegratedGradients

    crops = _crops(2)
    centroids = torch.randn(2, 8)
    bounds = [(0, 1600), (1600, 3200), (0, 3200)]
    settings = IGSettings(n_steps=8)
    ours = attribute_segments(tiny_teacher, crops, centroids, bounds, settings,
                              AttributionCache(None))
    for c, crop in enumerate(crops):
        for s, (a, b) in enumerate(bounds):
            mels = tiny_teacher.mel(torch.from_numpy(crop[a:b])[None])
            target = F.normalize(centroids[c], dim=-1)

            def score(m, target=target):
                return F.normalize(tiny_teacher.embed_mels(m), dim=-1) @ target

            attr = IntegratedGradients(score).attribute(mels, baselines=mels * 0, n_steps=8)
            expected = attr.abs().sum(-1)[0]
            expected = expected / expected.sum()
            assert ours[c][s].map.shape == (1 + (b - a) // 160,)
            np.testing.assert_allclose(ours[c][s].map, expected.numpy(), rtol=1e-4, atol=1e-7)
            assert ours[c][s].map.sum() == pytest.approx(1.0, abs=1e-5)


def test_completeness_gap_shrinks_with_n_steps(tiny_teacher):
    crops = _crops(3, seed=1)
    centroids = torch.randn(3, 8)
    bounds = [(0, 3200)]
    gaps = {}
    for n in (2, 4, 32):
        maps = attribute_segments(tiny_teacher, crops, centroids, bounds,
                                  IGSettings(n_steps=n, method="riemann_trapezoid"),
                                  AttributionCache(None))
        gaps[n] = np.mean([abs(row[0].delta) / abs(row[0].score_gap) for row in maps])
    assert gaps[32] < gaps[4] < gaps[2]
    assert gaps[32] < 0.05


def test_cache_returns_identical_maps_and_keys_on_audio_teacher_settings(tiny_teacher, tmp_path):
    crops = _crops(2, seed=2)
    centroids = torch.randn(2, 8)
    bounds = [(0, 1600), (0, 3200)]
    settings = IGSettings(n_steps=4)
    cache = AttributionCache(tmp_path / "cache")
    first = attribute_segments(tiny_teacher, crops, centroids, bounds, settings, cache)
    assert (cache.hits, cache.misses) == (0, 4)
    again = attribute_segments(tiny_teacher, crops, centroids, bounds, settings, cache)
    assert (cache.hits, cache.misses) == (4, 4) and cache.hit_rate == 0.5
    for r1, r2 in zip(first, again, strict=True):
        for m1, m2 in zip(r1, r2, strict=True):
            assert np.array_equal(m1.map, m2.map)
            assert (m1.delta, m1.score_gap, m1.start, m1.stop) == (
                m2.delta, m2.score_gap, m2.start, m2.stop)
    # a fresh cache object on the same folder (a rerun) hits too
    rerun = AttributionCache(tmp_path / "cache")
    attribute_segments(tiny_teacher, crops, centroids, bounds, settings, rerun)
    assert (rerun.hits, rerun.misses) == (4, 0)
    # other audio, other settings, another teacher, another target: misses
    for change in ("audio", "settings", "teacher", "target"):
        c = AttributionCache(tmp_path / "cache")
        teacher, s, cr, cen = tiny_teacher, settings, crops, centroids
        if change == "audio":
            cr = [x * 0.5 for x in crops]
        elif change == "settings":
            s = IGSettings(n_steps=5)
        elif change == "target":
            cen = centroids + 1.0
        else:
            torch.manual_seed(1)
            teacher = GE2E(hidden_size=8, embedding_size=8, num_layers=1).eval()
        attribute_segments(teacher, cr, cen, bounds, s, c)
        assert (c.hits, c.misses) == (0, 4), change


def test_bad_input_is_named(tiny_teacher):
    with pytest.raises(ValueError, match="do not fit"):
        attribute_segments(tiny_teacher, _crops(1), torch.randn(1, 8), [(0, 9999)],
                           IGSettings(n_steps=2), AttributionCache(None))
    with pytest.raises(ValueError, match="one centroid per crop"):
        attribute_segments(tiny_teacher, _crops(2), torch.randn(1, 8), [(0, 1600)],
                           IGSettings(n_steps=2), AttributionCache(None))
    with pytest.raises(ValueError, match="baseline"):
        IGSettings(baseline="blur")


def test_noise_baseline_is_reproducible_and_not_zero(tiny_teacher):
    crops, centroids, bounds = _crops(1, seed=3), torch.randn(1, 8), [(0, 3200)]
    noise = IGSettings(n_steps=4, baseline="noise", noise_dbfs=-40.0)
    a = attribute_segments(tiny_teacher, crops, centroids, bounds, noise, AttributionCache(None))
    b = attribute_segments(tiny_teacher, crops, centroids, bounds, noise, AttributionCache(None))
    z = attribute_segments(tiny_teacher, crops, centroids, bounds, IGSettings(n_steps=4),
                           AttributionCache(None))
    assert np.array_equal(a[0][0].map, b[0][0].map)
    assert a[0][0].score_gap != z[0][0].score_gap  # F(baseline) differs from F(0)


def test_noise_baseline_of_a_segment_does_not_depend_on_its_batch(tiny_teacher):
    """A segment's noise is seeded from its own key: alone or after another crop, same map."""
    noise = IGSettings(n_steps=4, baseline="noise", noise_dbfs=-20.0)
    crop_a, crop_b = _crops(2, seed=5)
    centroids = torch.randn(2, 8)
    bounds = [(0, 3200)]
    alone = attribute_segments(tiny_teacher, [crop_b], centroids[1:], bounds, noise,
                               AttributionCache(None))
    paired = attribute_segments(tiny_teacher, [crop_a, crop_b], centroids, bounds, noise,
                                AttributionCache(None))
    torch.testing.assert_close(torch.from_numpy(paired[1][0].map),
                               torch.from_numpy(alone[0][0].map), rtol=1e-5, atol=1e-6)
    assert paired[1][0].score_gap == pytest.approx(alone[0][0].score_gap, abs=1e-6)


def test_ig_methods_are_captums_and_others_are_refused_on_construction():
    from captum.attr._utils.approximation_methods import SUPPORTED_METHODS

    from robustdistill.speaker.attribution import IG_METHODS

    assert sorted(IG_METHODS) == sorted(SUPPORTED_METHODS)
    with pytest.raises(ValueError, match="method must be one of"):
        IGSettings(method="gauss_legendre")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a zip at all"])
def test_an_unreadable_cache_entry_is_a_miss_named_and_rewritten(tmp_path, caplog, content):
    """A damaged ``.npz`` (a full disk, a copy cut short) used to end the run in a
    ``BadZipFile`` traceback naming no file, at every rerun."""
    from robustdistill.speaker.attribution import SegmentMap

    cache = AttributionCache(tmp_path)
    item = SegmentMap(0, 160, np.full(2, 0.5, np.float32), 0.01, 0.3)
    cache.put("ab" + "0" * 62, item)
    path = tmp_path / "ab" / ("ab" + "0" * 62 + ".npz")
    path.write_bytes(content)
    with caplog.at_level("WARNING"):
        assert cache.get("ab" + "0" * 62) is None
    assert (cache.hits, cache.misses) == (0, 1)
    assert str(path) in caplog.text and "recomputed" in caplog.text
    cache.put("ab" + "0" * 62, item)  # the recomputed map replaces it
    got = cache.get("ab" + "0" * 62)
    assert got is not None and np.array_equal(got.map, item.map) and cache.hits == 1
