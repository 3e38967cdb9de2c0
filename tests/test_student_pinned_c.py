"""Student creation that a second mutation audit found unpinned (session 13)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel

from robustdistill.student import StudentConfig, create_student
from robustdistill.teachers import make_random_teacher
from robustdistill.upstream import Upstream


def test_copy_projection_off_still_copies_a_projection_that_follows_no_layer_norm(tmp_path):
    """copy_projection=False withholds only a projection that follows a layer norm the student
    lacks; a teacher without that norm (feat_proj_layer_norm false) gives its projection to
    a student without one, as with copy_projection on."""
    teacher_dir = make_random_teacher("hubert", "tiny", tmp_path / "t")
    config = AutoConfig.from_pretrained(teacher_dir)
    config.feat_proj_layer_norm = False
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(teacher_dir)
    teacher = Upstream.from_pretrained(teacher_dir)
    t = teacher.model.state_dict()
    assert "feature_projection.layer_norm.weight" not in t
    student = create_student(teacher, StudentConfig(num_layers=1, copy_projection=False))
    s = student.state_dict()
    assert "feature_projection.layer_norm.weight" not in s
    for key in ("feature_projection.projection.weight", "feature_projection.projection.bias"):
        assert torch.equal(s[key], t[key]), key
