"""Mutation-testing follow-ups (round 2) for robustdistill/redact.py, robustdistill/cli.py,
robustdistill/synthetic.py, robustdistill/data/files.py and
downstream/tasks/asr/make_transcripts.py."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from robustdistill import redact as redact_module
from robustdistill.redact import MASK, redact

SR = 16_000


# ---------------------------------------------------------------------------- redact.py
@pytest.fixture
def no_token_env(monkeypatch):
    for name in redact_module.TOKEN_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_hf_token_shape_from_30_characters(no_token_env):
    body30, body29 = "Ab3" * 10, "Ab3" * 9 + "xy"
    assert redact(f"token hf_{body30}.") == f"token {MASK}."
    assert redact(f"token hf_{body29}.") == f"token hf_{body29}."


@pytest.mark.parametrize("name", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN",
                                  "HF_API_TOKEN", "WANDB_API_KEY", "COMET_API_KEY",
                                  "NEPTUNE_API_TOKEN"])
def test_every_secret_env_var_is_masked_from_8_characters(no_token_env, name):
    no_token_env.setenv(name, "k9-Secr8")  # exactly 8 characters
    assert redact("key=k9-Secr8;") == f"key={MASK};"
    no_token_env.setenv(name, "Secr8x7")  # 7: too short to mask safely
    assert redact("key=Secr8x7;") == "key=Secr8x7;"


def test_url_password_with_a_colon_is_masked_and_the_user_kept(no_token_env):
    assert redact("git clone https://bob:pa:ss@hub.example/x.git") == \
        f"git clone https://bob:{MASK}@hub.example/x.git"
    assert redact("s3://user:p4ss@bucket and ftp://host/x") == \
        f"s3://user:{MASK}@bucket and ftp://host/x"


def test_uncaught_tracebacks_are_redacted(no_token_env, capsys):
    token = "hf_" + "Qx9" * 11
    try:
        raise RuntimeError(f"login failed with {token}")
    except RuntimeError:
        redact_module._excepthook(*sys.exc_info())
    err = capsys.readouterr().err
    assert "RuntimeError: login failed with ***" in err and token not in err


# ---------------------------------------------------------------------------- robustdistill/cli.py
def test_distill_resume_asks_for_the_newest_checkpoint(monkeypatch):
    import robustdistill.config
    import robustdistill.trainer
    from robustdistill.cli import distill_main

    seen = []
    monkeypatch.setattr(robustdistill.config, "load_config",
                        lambda path, overrides: seen.append((path, overrides)) or "cfg")
    monkeypatch.setattr(robustdistill.trainer, "train", lambda cfg: "out")
    assert distill_main(["--config", "r.yaml", "--resume", "--training.max_steps", "3"]) == 0
    assert distill_main(["--config", "r.yaml", "--training.max_steps", "3"]) == 0
    assert seen == [("r.yaml", ["--training.max_steps", "3", "--training.resume_from", "auto"]),
                    ("r.yaml", ["--training.max_steps", "3"])]


def test_distill_config_errors_are_redacted(monkeypatch, no_token_env, capsys):
    import robustdistill.config
    from robustdistill.cli import distill_main
    from robustdistill.config import ConfigError

    token = "hf_" + "Zz8" * 11

    def bad(path, overrides):
        raise ConfigError(f"cannot read https://me:{token}@hub/x")

    monkeypatch.setattr(robustdistill.config, "load_config", bad)
    with pytest.raises(SystemExit):
        distill_main(["--config", "r.yaml"])
    err = capsys.readouterr().err
    assert token not in err and f"https://me:{MASK}@hub/x" in err


def test_create_student_flags_reach_the_student_config(monkeypatch):
    import robustdistill.student
    from robustdistill.cli import create_student_main

    seen = []

    def config(**kwargs):
        seen.append(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(robustdistill.student, "StudentConfig", config)
    with pytest.raises(SystemExit):
        create_student_main(["--teacher", "t", "--out", "o", "--random-init", "--hidden-size",
                             "48", "--num-attention-heads", "4", "--intermediate-size", "96",
                             "--num-layers", "3", "--init-layers", "2", "4"])
    with pytest.raises(SystemExit):
        create_student_main(["--teacher", "t", "--out", "o"])
    assert seen[0] == dict(preset="default", family=None, num_layers=3, hidden_size=48,
                           num_attention_heads=4, intermediate_size=96, conv_dim=None,
                           init_from_teacher=False, init_layers=[2, 4], narrow_cnn_init=None)
    assert seen[1]["init_from_teacher"] is True and seen[1]["hidden_size"] is None


def test_make_teacher_passes_the_seed(monkeypatch):
    import robustdistill.teachers
    from robustdistill.cli import make_teacher_main

    seen = []
    monkeypatch.setattr(robustdistill.teachers, "make_random_teacher",
                        lambda family, preset, out, seed=None: seen.append((family, preset, seed)) or out)
    assert make_teacher_main(["--out", "t", "--seed", "9", "--family", "hubert"]) == 0
    assert seen == [("hubert", "small", 9)]


def test_main_exit_codes(capsys):
    from robustdistill.cli import main

    assert main([]) == 2 and main(["--help"]) == 0 and main(["-h"]) == 0
    assert main(["nope"]) == 2


def test_logging_setup_installs_redaction_and_quiets_other_ranks(monkeypatch):
    import logging

    import robustdistill.redact
    from robustdistill.cli import _setup_logging

    installs, levels = [], []
    monkeypatch.setattr(robustdistill.redact, "install", lambda: installs.append(1))
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    for rank, level in ((None, logging.INFO), ("0", logging.INFO), ("2", logging.WARNING)):
        if rank is None:
            monkeypatch.delenv("RANK", raising=False)
        else:
            monkeypatch.setenv("RANK", rank)
        _setup_logging()
        assert levels.pop() == level
    assert installs == [1, 1, 1]


# ---------------------------------------------------------------------------- synthetic.py
def test_synthetic_items_do_not_repeat_across_seeds(tmp_path):
    from robustdistill.synthetic import write_synthetic_corpus

    a = write_synthetic_corpus(tmp_path / "a", 2, (0.3, 0.3), seed=0)
    b = write_synthetic_corpus(tmp_path / "b", 1, (0.3, 0.3), seed=1)
    assert not np.array_equal(sf.read(a[1])[0], sf.read(b[0])[0])


def test_synthetic_waveform_peak_pitch_range_and_pauses():
    from robustdistill.synthetic import _pitch_contour, synthetic_waveform

    wave = synthetic_waveform(3.0, np.random.default_rng(4))
    assert wave.dtype == np.float32 and wave.shape == (48_000,)
    assert 0.49 < np.abs(wave).max() < 0.51  # peak -6 dBFS (plus the -60 dB floor)
    # pauses between phrases: some 20 ms windows hold only the noise floor
    rms = np.sqrt((wave[: 48_000 // 320 * 320].reshape(-1, 320).astype(np.float64) ** 2)
                  .mean(axis=1))
    assert rms.min() < 3e-3 and rms.max() > 0.05
    highest = max(_pitch_contour(16_000, SR, np.random.default_rng(s)).max() for s in range(200))
    lowest = min(_pitch_contour(16_000, SR, np.random.default_rng(s)).min() for s in range(200))
    assert highest == 250.0 and lowest == 90.0  # clipped to [90, 250] Hz, and reaching both


def test_synthetic_corpus_rejects_a_zero_minimum_duration(tmp_path):
    from robustdistill.synthetic import write_synthetic_corpus

    with pytest.raises(ValueError, match="seconds_range"):
        write_synthetic_corpus(tmp_path, 1, (0.0, 1.0))


# ---------------------------------------------------------------------------- data/files.py
def test_audio_file_dataset_keeps_the_given_order(tmp_path):
    from robustdistill.data.files import AudioFileDataset

    rng = np.random.default_rng(0)
    for name, seconds in (("b.wav", 1.2), ("a.wav", 1.5), ("c.wav", 1.1)):
        sf.write(tmp_path / name, 0.1 * rng.standard_normal(int(seconds * SR)), SR)
    files = [tmp_path / "b.wav", tmp_path / "a.wav", tmp_path / "c.wav"]
    data = AudioFileDataset(files, max_length_s=None, min_length_s=1.0)
    assert data.files == files
    assert [(data[i]["index"], len(data[i]["waveform"])) for i in range(3)] == [
        (0, 19_200), (1, 24_000), (2, 17_600)]


# ---------------------------------------------------------------------------- make_transcripts.py
def test_normalize_transcript_large_numbers_and_dashes():
    from downstream.tasks.asr.make_transcripts import normalize_transcript

    assert normalize_transcript("2,500,000 people") == "TWO MILLION FIVE HUNDRED THOUSAND PEOPLE"
    assert normalize_transcript("north\u2013south/east\u2014west") == "NORTH SOUTH EAST WEST"


class _FakeWhisper:
    """Stands in for Whisper: the 'transcript' of a window is its length in whole seconds."""

    def feature_extractor(self, windows, sampling_rate, return_tensors):
        import torch

        return SimpleNamespace(input_features=torch.tensor([[len(w) // SR] for w in windows]))

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return cls()

    def eval(self):
        return self

    def generate(self, feats, **kwargs):
        return feats

    def batch_decode(self, ids, skip_special_tokens):
        return [f" {int(i[0])} " for i in ids]


def test_transcripts_join_30_second_windows_and_resume(tmp_path, monkeypatch):
    from downstream.tasks.asr import make_transcripts

    monkeypatch.setattr(make_transcripts, "WhisperProcessor", _FakeWhisper)
    monkeypatch.setattr(make_transcripts, "WhisperForConditionalGeneration", _FakeWhisper)
    monkeypatch.setattr(make_transcripts.torch, "set_num_threads", lambda n: None)
    store = tmp_path / "store"
    store.mkdir()
    audio = tmp_path / "audio"
    audio.mkdir()
    for name, seconds in (("103-1-0000.wav", 65), ("103-1-0001.wav", 2), ("103-1-0002.wav", 3)):
        sf.write(store / name, np.full(seconds * SR, 0.1, np.float32), SR)
        (audio / name).symlink_to(store / name)  # a listed path that is not the resolved one
    out = tmp_path / "m.jsonl"
    make_transcripts.main([str(audio), str(out), "--model", "m", "--limit", "2"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["THIRTY THIRTY FIVE", "TWO"]  # 65 s: 30 + 30 + 5
    assert rows[0]["speaker"] == "103" and rows[0]["duration"] == 65.0
    make_transcripts.main([str(audio), str(out), "--model", "m"])  # resumes: one new row
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["THIRTY THIRTY FIVE", "TWO", "THREE"]
    assert rows[2]["path"] == str((store / "103-1-0002.wav").resolve())
