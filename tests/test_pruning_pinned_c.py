"""Pruned-student slicing that a second mutation audit found unpinned (session 13): a random
teacher's norms are all ones and zeros, so slicing them by the wrong channels went unseen."""

from __future__ import annotations

import torch

from robustdistill.pruning import select_cnn_channels
from robustdistill.student import StudentConfig, create_student
from robustdistill.upstream import Upstream


def test_every_norm_is_sliced_to_the_kept_channels_of_a_teacher_with_trained_norms(
        tiny_wavlm_dir):
    teacher = Upstream.from_pretrained(tiny_wavlm_dir)
    generator = torch.Generator().manual_seed(1)
    norms = [k for k in teacher.model.state_dict()
             if "layer_norm" in k and (k.startswith("feature_extractor.")
                                       or k.startswith("feature_projection."))]
    assert "feature_projection.layer_norm.bias" in norms
    with torch.no_grad():  # a trained teacher's norms: no two channels alike
        for key in norms:
            value = teacher.model.state_dict()[key]
            value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
    student = create_student(teacher, StudentConfig(conv_dim=[16, 16, 16],
                                                    narrow_cnn_init="prune"))
    t, s = teacher.model.state_dict(), student.state_dict()
    kept = select_cnn_channels(t, [16, 16, 16])
    checked = 0
    for key in norms:
        if key.startswith("feature_projection."):
            expected = t[key][kept[-1]]
        else:
            expected = t[key][kept[int(key.split(".")[2])]]
        assert not torch.equal(expected, t[key][: len(expected)]), key  # not a prefix
        assert torch.equal(s[key], expected), key
        checked += 1
    assert checked == len(norms) >= 4  # layer 0's GroupNorm and the projection's LayerNorm
