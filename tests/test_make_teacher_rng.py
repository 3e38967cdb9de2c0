"""Making a random teacher leaves the run's random state alone (``make_teacher``)."""

from __future__ import annotations

import json

import torch

from robustdistill.teachers import make_random_teacher
from robustdistill.upstream import Upstream


def test_make_random_teacher_keeps_the_callers_torch_random_state(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    make_random_teacher("wavlm", "tiny", tmp_path / "a", seed=0)
    assert torch.equal(torch.rand(4), expected)  # the teacher drew from a forked generator
    # the weights depend on ``seed`` alone, not on the caller's state
    torch.manual_seed(999)
    make_random_teacher("wavlm", "tiny", tmp_path / "b", seed=0)
    a = Upstream.from_pretrained(tmp_path / "a").model.state_dict()
    b = Upstream.from_pretrained(tmp_path / "b").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_that_makes_its_teacher_trains_as_the_same_run_with_the_teacher_present(tmp_path):
    """``make_teacher`` wrote the teacher after the trainer's ``set_seed`` and reseeded torch
    with 0: the heads and everything after drew from another stream than the same command
    run once the teacher existed (a restart killed before its first checkpoint differed)."""
    from conftest import tiny_run_config

    from robustdistill.trainer import train

    teacher = tmp_path / "teacher"
    losses = []
    for out in ("made", "present"):  # the first run writes the teacher, the second finds it
        cfg = tiny_run_config(tmp_path, teacher, out, make_teacher="wavlm/tiny",
                              **{"training.max_steps": 2})
        run = train(cfg)
        losses.append([json.loads(line) for line in (run / "metrics.jsonl").read_text()
                       .splitlines()])
    assert teacher.is_dir()
    timing = ("seconds", "audio_seconds_per_second", "data_wait_share")  # wall clock
    strip = [[{k: v for k, v in row.items() if not k.endswith(timing)} for row in rows]
             for rows in losses]
    assert strip[0] == strip[1] and len(strip[0]) >= 2
