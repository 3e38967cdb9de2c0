"""Gaps found by the objectives audit: a layer named twice, and the Gram matrix under autocast.

- A teacher layer listed twice made two heads whose terms share one name, so the second
  overwrote the first: ``layerwise`` with ``teacher_layers: [1, 1]`` logged ``L_1`` but trained
  on ``L_1 / 2`` (reduction ``mean`` divides by 2 targets) and left one head untrained.
- ``gram_matrix`` promised float32 but ran ``A A^T`` in the autocast dtype (bf16 / fp16).
"""

from __future__ import annotations

import math

import pytest
import torch

from robustdistill.objectives import CosineAlignment, GramKD, LayerwisePrediction
from robustdistill.objectives.similarity import gram_kd_loss, gram_matrix

DIMS = {"teacher_hidden_size": 4, "teacher_num_layers": 3, "student_hidden_size": 4}


@pytest.mark.parametrize(("cls", "options", "match"), [
    (LayerwisePrediction, {"teacher_layers": [1, 3, 1]}, r"teacher_layers .*\[1\].* twice"),
    (CosineAlignment, {"teacher_layers": [2, 2]}, r"teacher_layers .*\[2\].* twice"),
    (GramKD, {"layer_pairs": [[3, -1], [1, 0], [3, -1]]}, r"layer_pairs .*\[3, -1\].* twice"),
])
def test_a_layer_named_twice_is_refused(cls, options, match):
    with pytest.raises(ValueError, match=match):
        cls(**DIMS, **options)


def test_distinct_layers_and_pairs_are_still_accepted():
    assert LayerwisePrediction(**DIMS, teacher_layers=[1, 3]).teacher_layers == [1, 3]
    assert CosineAlignment(**DIMS, teacher_layers=[3, 2]).teacher_layers == [3, 2]
    # the same teacher layer with two student layers is two pairs
    assert GramKD(**DIMS, layer_pairs=[[3, -1], [3, 0]]).layer_pairs == [(3, -1), (3, 0)]


def test_gram_matrix_is_float32_under_autocast_by_hand():
    # Student A_s = [[16, 0], [16, 1]]: G_s = [[256, 256], [256, 257]]. bfloat16 keeps 8
    # significant bits, so 257 rounds to 256 and G_s would equal the teacher's G_t (A_t =
    # [[16, 0], [16, 0]], every entry 256): a loss of exactly 0. In float32, by hand: rows of
    # G_t are [1, 1] / sqrt2; row 1 of G_s too; row 2 is [256, 257] / sqrt(256^2 + 257^2).
    student = torch.tensor([[[16.0, 0.0], [16.0, 1.0]]])
    teacher = torch.tensor([[[16.0, 0.0], [16.0, 0.0]]])
    norm = math.hypot(256.0, 257.0)
    diff = (256 / norm - 1 / math.sqrt(2)) ** 2 + (257 / norm - 1 / math.sqrt(2)) ** 2
    expected = diff / 2**2  # ||G_s - G_t||_F^2 / T^2, T = 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gram = gram_matrix(student)
        loss = gram_kd_loss(student, teacher)
    assert gram.dtype == torch.float32
    torch.testing.assert_close(gram[0, 1], torch.tensor([256.0, 257.0]) / norm)
    assert float(loss) == pytest.approx(expected, rel=1e-3)
