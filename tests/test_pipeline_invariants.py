"""Behaviour that a mutation audit of the suite (2026-12-07) found unpinned: a plausible bug in
each place below left every targeted test passing. Each test names the behaviour it pins;
values are by hand where there is arithmetic."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_trainer import _config

from robustdistill.trainer import _Run


def test_training_corruption_is_drawn_afresh_every_step_and_micro_batch(tmp_path,
                                                                      tiny_wavlm_dir):
    """Every optimizer step and every micro-batch of it corrupts with its own random draws
    (a generator keyed by step as well as micro-batch), and the draws repeat exactly when the
    run is repeated: one fixed draw per micro-batch index would give every step the same SNR,
    kind and noise segment, which no loss value or resume check would notice."""

    def draws(out):
        run = _Run(_config(tmp_path, tiny_wavlm_dir, out, max_steps=3,
                           gradient_accumulation_steps=2))
        seen = []
        real = run.corruptor.corrupt_batch

        def record(waveforms, lengths, rng, step=None):
            seen.append((step, copy.deepcopy(rng).random(4).tolist()))
            return real(waveforms, lengths, rng, step)

        run.corruptor.corrupt_batch = record
        batches = run._batches()
        for _ in range(3):
            run.train_step(batches)
        return seen

    first = draws("a")
    assert [step for step, _ in first] == [0, 0, 1, 1, 2, 2]
    values = [tuple(v) for _, v in first]
    assert len(set(values)) == 6, "two micro-batches drew the same corruption"
    assert draws("b") == first


def test_objectives_see_only_frames_real_for_both_teacher_and_student():
    """The frame mask handed to the objectives is True on the frames real for *both* models
    (the smaller of the two counts per utterance, within the shorter frame axis): where a
    Whisper teacher and a HuBERT student disagree by a frame, the extra frame of either one is
    padding for the loss. Teacher counts [5, 2] on 5 frames, student [4, 3] on 4 frames ->
    common [4, 2] on 4 frames."""
    from torch import nn

    from robustdistill.objectives import Objective
    from robustdistill.trainer import Distiller
    from robustdistill.upstream import UpstreamOutput, lengths_to_mask

    def output(lengths, frames):
        lengths = torch.tensor(lengths)
        hidden = (torch.randn(2, frames, 3), torch.randn(2, frames, 3))
        return UpstreamOutput(hidden, lengths, lengths_to_mask(lengths, frames))

    class Student(nn.Module):
        def forward(self, waveforms, lengths, return_extract_features=False):
            return output([4, 3], 4)

    class Record(Objective):
        def forward(self, inputs):
            self.mask = inputs.frame_mask.clone()
            return {}

    record = Record()
    waves = torch.zeros(2, 1600)
    Distiller(Student(), {"record": record})(waves, waves, torch.tensor([1600, 1000]),
                                             output([5, 2], 5))
    assert record.mask.tolist() == [[True] * 4, [True, True, False, False]]


@pytest.mark.parametrize("grid, expected", [
    ("native", [51, 26, 1, 1, 3]),  # ceil(n / 320): a started 20 ms frame is real
    ("ssl", [49, 25, 1, 1, 1]),  # max(1, (n - 400) // 320 + 1): the Base CNN's count
])
def test_whisper_frame_counts_of_lengths_off_the_320_sample_grid(tiny_whisper_dir, grid,
                                                                 expected):
    """Real Whisper frames for lengths that are not whole 20 ms frames (16001, 8319, 320, 1
    and 641 samples), by hand; lengths on the grid cannot tell ceil from floor."""
    from robustdistill.upstream import Upstream

    upstream = Upstream.from_pretrained(tiny_whisper_dir, whisper_frames=grid)
    lengths = torch.tensor([16001, 8319, 320, 1, 641])
    assert upstream.frame_lengths(lengths).tolist() == expected
    assert upstream.frame_lengths(torch.tensor([0])).tolist() == [0]


def test_se_input_feature_is_log10_of_the_power_spectrum_floored():
    """NSNet2's (and the SE students') input feature is ``log10(|X|^2)`` floored at 1e-12, not
    the log magnitude: by hand, 3+4j -> log10(25), 0.1j -> -2, 0 -> -12."""
    from robustdistill.se.teachers.nsnet2 import log_power

    spec = torch.tensor([[3 + 4j, 0.1j, 0j, 1e-7 + 0j]], dtype=torch.complex64)
    expected = torch.tensor([[np.log10(25.0), -2.0, -12.0, -12.0]], dtype=torch.float32)
    torch.testing.assert_close(log_power(spec), expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_two_processes_take_the_same_gradient_as_one_process_with_their_whole_batch(
        tmp_path, tiny_wavlm_dir):
    """DDP averages gradients over ranks while the loss is divided by the frames of *all*
    ranks, so each rank's loss is scaled by the number of processes: the first step's loss
    and gradient norm on 2 CPU processes of batch 1 equal one process's on the same 2 crops
    as one batch of 2 (equal 1 s crops, no padding; no corruption and no dropout, so no draw
    differs)."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import free_port

    repo = Path(__file__).resolve().parents[1]
    teacher = shutil.copytree(tiny_wavlm_dir, tmp_path / "teacher")  # the student inherits
    config = json.loads((teacher / "config.json").read_text())  # its dropout: none, so that
    (teacher / "config.json").write_text(json.dumps(  # ranks draw no other dropout masks
        {**config, **{k: 0.0 for k in config if k.endswith("dropout")}}))

    def first_step(out, processes, batch_size):
        launch = ([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                   "--num_processes", "2", "--main_process_port", str(free_port())]
                  if processes == 2 else [sys.executable])
        args = {"teacher": teacher, "output_dir": tmp_path / out, "seed": 4,
                "data.synthetic_items": 10, "data.synthetic_seconds": "[1.2, 1.5]",
                "data.synthetic_dir": tmp_path / "corpus", "data.max_length_s": 1.0,
                "data.min_length_s": 0.5, "data.validation_fraction": 0.2,
                "data.batch_size": batch_size, "augmentation.p_noise": 0.0,
                "augmentation.p_reverb": 0.0, "augmentation.p_noise_reverb": 0.0,
                "augmentation.p_none": 1.0, "augmentation.num_simulated_rooms": 1,
                "objectives": "{layerwise: {teacher_layers: [1, 2]}}",
                "training.max_steps": 1, "training.log_every": 1, "training.eval_every": 100,
                "training.eval_at_start": False, "training.export_student": False,
                "training.report_to": "[]", "training.cpu": True}
        cmd = [*launch, str(repo / "distill.py"),
               *[x for k, v in args.items() for x in (f"--{k}", str(v))]]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        rows = [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").open()]
        return next(row for row in rows if "grad_norm" in json.dumps(row))

    one, two = first_step("one", 1, 2), first_step("two", 2, 1)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4)


def test_each_logged_term_is_its_sum_over_the_count_of_its_own_unit(tmp_path, tiny_wavlm_dir,
                                                                    monkeypatch):
    """A logged term (and so the logged and validation ``loss``, which picks the best
    checkpoint) is its sum over the step divided by the step's count of *its* unit: the
    enhancement terms by STFT frames, the layer terms by model frames."""
    import robustdistill.trainer as trainer_module

    sums, units, counts = {}, {}, {}
    real_loss, real_counts = trainer_module._Run._loss, trainer_module._Run._reduce_counts

    def recording_loss(self, batch, rng, step, *args, **kwargs):
        terms = real_loss(self, batch, rng, step, *args, **kwargs)
        for name, parts in terms.items():
            for part, term in parts.items():
                key = f"{name}/{part}"
                sums[key] = sums.get(key, 0.0) + float(term.total.detach())
                units[key] = term.unit
        return terms

    def recording_counts(self, step_counts):
        counts.update(real_counts(self, step_counts))
        return counts

    monkeypatch.setattr(trainer_module._Run, "_loss", recording_loss)
    monkeypatch.setattr(trainer_module._Run, "_reduce_counts", recording_counts)
    run = _Run(_config(tmp_path, tiny_wavlm_dir, "units", max_steps=1,
                       gradient_accumulation_steps=2))
    values = run.train_step(run._batches())
    assert {"frames", "stft_frames"} <= set(units.values())
    assert counts["frames"] != counts["stft_frames"]
    for key, total in sums.items():
        assert values[key] == pytest.approx(total / counts[units[key]], rel=1e-6), key
