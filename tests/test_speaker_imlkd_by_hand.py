"""Mutation-testing gaps in the IML-KD speaker code: the map assignment past the student's
last frame, the map KL restricted to a segment's student frames, the teacher's speaker
centroids and GE2E logits, Resemblyzer's partial-slice coverage boundary, the stored IG score
gap and the noise baseline's level. Values by hand or by a plain re-implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustdistill.speaker.attribution import (
    AttributionCache,
    IGSettings,
    _noise_baseline,
    attribute_segments,
)
from robustdistill.speaker.data import Crop
from robustdistill.speaker.ge2e import GE2E, partial_slices
from robustdistill.speaker.targets import map_targets, student_map_loss, teacher_targets


def test_map_targets_send_samples_past_the_end_to_the_last_student_frame():
    # Teacher frames of (0, 640) centre at 0, 160, 320, 480, 640 and hold [0, 80), [80, 240),
    # [240, 400), [400, 560), [560, 640); a wav2vec 2.0-style student (hop 320, frame k centred
    # at 320 k + 200) holds [0, 360) and [360, 680), ... but has only 2 frames: the last one
    # also takes every sample after it (frames 3 and 4; frame 2 is split 120 / 40 samples).
    (m,) = map_targets([(0, 640)], num_student_frames=2, student_hop=320, student_centre=200)
    assert m.shape == (5, 2)
    assert m.tolist() == [[1, 0], [1, 0], [0.75, 0.25], [0, 1], [0, 1]]
    assert torch.equal(m.sum(1), torch.ones(5))  # every teacher frame's mass goes somewhere once


def test_student_map_loss_is_a_kl_over_the_segments_own_frames_only():
    # 4 student frames (hop 160). Segment (160, 320): teacher frames at 160 and 320 -> student
    # frames 1 and 2. Teacher map (0.5, 0.5); student logits 0 on every frame: softmax over the
    # segment's 2 frames is (0.5, 0.5) -> KL 0 (over all 4 frames it would be log 2).
    assign = map_targets([(160, 320)], num_student_frames=4, student_hop=160,
                         student_centre=0)
    maps = [torch.tensor([[0.5, 0.5]])]
    assert student_map_loss(torch.zeros(1, 4), maps, assign).item() == pytest.approx(0, abs=1e-7)
    # Logits (9, 0, log 3, -9): over frames 1, 2 the student's q = (1/4, 3/4):
    # KL = 0.5 log(0.5 / 0.25) + 0.5 log(0.5 / 0.75). Frames 0 and 3 are never read.
    logits = torch.tensor([[9.0, 0.0, math.log(3.0), -9.0]])
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert student_map_loss(logits, maps, assign).item() == pytest.approx(expected, abs=1e-6)
    # Two segments: the mean of the two KLs (second segment (0, 160): frames 0 and 1).
    assign2 = map_targets([(160, 320), (0, 160)], num_student_frames=4, student_hop=160,
                          student_centre=0)
    maps2 = maps + [torch.tensor([[1.0, 0.0]])]
    # second KL: 1 * log(1 / q0) with q over frames (0, 1) = softmax(9, 0)
    second = -F.log_softmax(torch.tensor([9.0, 0.0]), 0)[0].item()
    got = student_map_loss(logits, maps2, assign2).item()
    assert got == pytest.approx((expected + second) / 2, abs=1e-6)


def test_teacher_targets_centroids_are_normalised_per_speaker_sums(tiny_teacher):
    rng = np.random.default_rng(0)
    crops = [Crop(f"s{i % 2}", f"k{i}", (0.1 * rng.standard_normal(1600)).astype(np.float32))
             for i in range(5)]
    labels = torch.tensor([i % 2 for i in range(5)])
    targets = teacher_targets(tiny_teacher, crops, labels, num_speakers=3, batch_size=2)
    emb = tiny_teacher(torch.from_numpy(np.stack([c.audio for c in crops])))
    torch.testing.assert_close(targets.embeddings, emb, atol=1e-6, rtol=1e-5)
    for k, idx in ((0, [0, 2, 4]), (1, [1, 3])):
        expected = emb[idx].sum(0)
        expected = expected / expected.norm()
        torch.testing.assert_close(targets.centroids[k], expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(targets.centroids[2], torch.zeros(8))  # a speaker with no crop
    # logits: w cos + b with GE2E's w = 10, b = -5
    cos = F.normalize(emb, dim=-1) @ targets.centroids[:2].T
    torch.testing.assert_close(targets.logits[:, :2], 10 * cos - 5, atol=1e-5, rtol=1e-5)


def test_ge2e_scores_are_scaled_cosines_whatever_the_norms():
    model = GE2E(hidden_size=4, embedding_size=2, num_layers=1)
    e = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    c = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[10 * 1 - 5, 10 * 0 - 5], [10 * r - 5, 10 * r - 5]])
    torch.testing.assert_close(model.scores(e, c).detach(), expected)


def test_partial_slices_keep_a_last_partial_covered_exactly_at_min_coverage():
    # 31520 samples: partials start every 77 frames; the second one, frames 77..237 = samples
    # 12320..37920, holds 31520 - 12320 = 19200 = 0.75 * 25600 real samples: exactly
    # min_coverage, so it is kept (Resemblyzer drops it only below min_coverage).
    assert partial_slices(31520) == [(0, 160), (77, 237)]
    assert partial_slices(31519) == [(0, 160)]


def test_stored_score_gap_is_f_of_input_minus_f_of_baseline(tiny_teacher):
    rng = np.random.default_rng(4)
    crop = (0.1 * rng.standard_normal(1600)).astype(np.float32)
    centroid = torch.randn(1, 8)
    (row,) = attribute_segments(tiny_teacher, [crop], centroid, [(0, 1600)],
                                IGSettings(n_steps=4), AttributionCache(None))
    target = F.normalize(centroid[0], dim=-1)
    mels = tiny_teacher.mel(torch.from_numpy(crop)[None])
    f_x = float(F.normalize(tiny_teacher.embed_mels(mels), dim=-1)[0] @ target)
    f_0 = float(F.normalize(tiny_teacher.embed_mels(torch.zeros_like(mels)), dim=-1)[0] @ target)
    assert abs(f_x - f_0) > 1e-4  # the sign is observable
    assert row[0].score_gap == pytest.approx(f_x - f_0, abs=1e-5)


class _IdentityMel:
    @staticmethod
    def mel(x: torch.Tensor) -> torch.Tensor:
        return x


def test_noise_baseline_has_the_requested_rms_level_and_per_key_seed():
    keys = ["0a1b2c3d" + "0" * 56, "ffffffff" + "1" * 56]
    noise = _noise_baseline(_IdentityMel(), 4000, keys, -20.0, torch.device("cpu"))
    assert noise.shape == (2, 4000)
    rms = noise.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full((2,), 0.1), atol=1e-6, rtol=1e-5)  # -20 dBFS
    alone = _noise_baseline(_IdentityMel(), 4000, keys[1:], -20.0, torch.device("cpu"))
    torch.testing.assert_close(alone[0], noise[1])
    assert not torch.allclose(noise[0], noise[1])
