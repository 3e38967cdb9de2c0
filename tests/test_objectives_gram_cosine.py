"""Mutation-testing gaps in the Gram-KD and cosine-alignment objectives: which student layer
each reads, and the ``n_common / n_teacher`` frame scaling when teacher and student frame
counts differ. Values by hand."""

from __future__ import annotations

import math

import pytest
import torch

from robustdistill.objectives import CosineAlignment, DistillationInputs, GramKD
from robustdistill.upstream import UpstreamOutput, lengths_to_mask

SQ5 = math.sqrt(5.0)


def _out(states, frames):
    lengths = torch.tensor(frames)
    return UpstreamOutput(tuple(states), lengths, lengths_to_mask(lengths, states[0].shape[1]))


def _inputs(teacher, student):
    common = torch.minimum(teacher.frame_lengths, student.frame_lengths)
    frames = min(teacher.hidden_states[0].shape[1], student.hidden_states[0].shape[1])
    b = common.shape[0]
    wave = torch.zeros(b, 10)
    return DistillationInputs(teacher, student, lengths_to_mask(common, frames), wave, wave,
                              torch.full((b,), 10))


def test_gram_objective_pairs_the_configured_student_layer_with_the_teacher_layer():
    # Pair (teacher 2, student 0). Teacher layer 2: G_t = I. Student layer 0: A = [[1], [2]],
    # rows of G_s both [1, 2] / sqrt5 -> ||G_s - I||^2 / T^2 = (4 - 6 / sqrt5) / 4 (by hand).
    # Student layers 1, 2 (not configured) equal the teacher: reading them would give 0.
    eye = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    teacher = _out([torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), eye], [2])
    student = _out([torch.tensor([[[1.0], [2.0]]]), eye, eye], [2])
    objective = GramKD(teacher_hidden_size=2, teacher_num_layers=2, student_hidden_size=2,
                       layer_pairs=[[2, 0]])
    terms = objective(_inputs(teacher, student))
    assert set(terms) == {"pair2_0"}
    assert terms["pair2_0"].total.item() == pytest.approx((4 - 6 / SQ5) / 4, rel=1e-6)
    assert terms["pair2_0"].unit == "utterances"


def _identity_cosine(**options) -> CosineAlignment:
    objective = CosineAlignment(teacher_hidden_size=2, teacher_num_layers=1,
                                student_hidden_size=2, teacher_layers=[1], **options)
    with torch.no_grad():
        objective.bottlenecks[0].layers[0].weight.copy_(torch.eye(2))
        objective.bottlenecks[0].layers[0].bias.zero_()
    return objective


def _cosine_case(student_first_layer=None):
    # Utterance 0: teacher 5 real frames, student 4 (all [1, 0]: resampling keeps [1, 0]);
    #   distances to the teacher frames 0, 1, 0, 1, 2 -> sum 4 over 5 teacher frames, and
    #   4 common frames: the term carries 4 * (4 / 5) = 3.2.
    # Utterance 1: 3 frames each; distances 0, 1 - 1/sqrt2, 1 (padding never read).
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],
                      [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [5.0, 5.0], [5.0, 5.0]]])
    s = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]],
                      [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [7.0, 7.0]]])
    first = s if student_first_layer is None else student_first_layer
    return _inputs(_out([t, t], [5, 3]), _out([first, s], [4, 3]))


def test_cosine_objective_scales_each_utterance_by_common_over_teacher_frames():
    terms = _identity_cosine()(_cosine_case())
    expected = 4 * 4 / 5 + (2 - 1 / math.sqrt(2))
    assert terms["layer1"].total.item() == pytest.approx(expected, rel=1e-6)
    assert terms["layer1"].unit == "frames"
    # the trainer divides by the 4 + 3 common real frames: the frame-weighted mean of
    # (utterance 0: 4 / 5 per frame, utterance 1: its mean) with weights 4 and 3
    mean = terms["layer1"].total.item() / 7
    assert mean == pytest.approx((4 * (4 / 5) + 3 * (2 - 1 / math.sqrt(2)) / 3) / 7, rel=1e-6)


def test_cosine_objective_reads_the_configured_student_layer():
    # Layer 0 of the student is the teacher itself (distance 0 on every frame); the last
    # layer (not configured) would give the loss of the test above.
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0], [3.0, 3.0]]])
    s_last = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]],
                           [[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]])
    inputs = _inputs(_out([t, t], [3, 2]), _out([t.clone(), s_last], [3, 2]))
    terms = _identity_cosine(student_layer=0)(inputs)
    assert terms["layer1"].total.item() == pytest.approx(0.0, abs=1e-6)
    terms_last = _identity_cosine()(inputs)
    assert terms_last["layer1"].total.item() == pytest.approx(5.0, abs=1e-6)  # 5 distances of 1
