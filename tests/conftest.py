"""Shared fixtures: tiny models saved with save_pretrained, offline hub, shared data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
WHISPER_DIR = SHARED / "models" / "whisper-tiny.en"


def _tiny_distill_settings(tmp_path: Path, teacher_dir: Path, out: str) -> dict[str, object]:
    """The dotted settings both tiny distillations below share: generated audio, a tiny
    teacher, noise and 2 simulated rooms, layer-wise and enhancement objectives, CPU."""
    return {
        "teacher": str(teacher_dir), "output_dir": str(tmp_path / out),
        "data.synthetic_seconds": "[0.6, 1.0]",
        "data.synthetic_dir": str(tmp_path / "corpus"), "data.batch_size": 2,
        "data.max_length_s": 0.8, "data.min_length_s": 0.5,
        "augmentation.num_simulated_rooms": 2, "augmentation.room_max_order": 2,
        "objectives": "{layerwise: {teacher_layers: [1, 2]}, enhancement: {hidden_size: 8, "
                      "num_layers: 1}}",
        "training.learning_rate": 1e-3, "training.warmup_ratio": 0.0, "training.cpu": True,
        "training.log_every": 1, "training.eval_every": 100, "training.eval_at_start": False,
        "training.report_to": "[]", "training.export_student": False,
    }


def _as_args(settings: dict[str, object]) -> list[str]:
    """``--key value`` command-line overrides of dotted settings."""
    return [item for key, value in settings.items() for item in (f"--{key}", str(value))]


def small_distill_args(tmp_path: Path, teacher_dir: Path, out: str, **changes) -> list[str]:
    """``--key value`` overrides of a 10-step distillation on generated audio (tiny teacher,
    10 clips, about 0.1 s a step, a checkpoint every 2 steps) that the kill and interrupt tests
    run in a subprocess; ``changes``: dotted keys replaced or added (``"training.max_steps"``)."""
    return _as_args({
        **_tiny_distill_settings(tmp_path, teacher_dir, out), "seed": 11,
        "data.synthetic_items": 10, "data.validation_fraction": 0.2,
        "training.max_steps": 10, "training.save_every": 2, "training.keep_checkpoints": 2,
        **changes,
    })


def tiny_run_config(tmp_path: Path, teacher_dir: Path, out: str, **overrides):
    """A 3-second robust distillation config on generated audio (tiny teacher, 8 clips, noise
    and 2 simulated rooms, layer-wise and enhancement objectives, CPU). ``overrides``: dotted
    config keys (``"training.max_steps": 3``) applied last."""
    from robustdistill.config import load_config

    return load_config(None, _as_args({
        **_tiny_distill_settings(tmp_path, teacher_dir, out), "seed": 5,
        "data.synthetic_items": 8, "data.validation_fraction": 0.25, **overrides,
    }))


def in_one_thread(function, *args):
    """``function(*args)`` in this process with one torch thread, as the single-thread
    subprocesses of the kill, interrupt and SIGTERM tests run (the same floating-point sums,
    so the same parameters)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(*args)
    finally:
        torch.set_num_threads(threads)


def resumed_equals_whole(tmp_path: Path, steps: int) -> dict[str, dict]:
    """The ``final_state.json`` of the runs ``tmp_path/part`` (stopped, then resumed) and
    ``tmp_path/whole`` (uninterrupted), by name, once the resumed run is checked to have
    finished its ``steps`` with the uninterrupted run's parameters on every rank."""
    import json

    final = {name: json.loads((tmp_path / name / "final_state.json").read_text())
             for name in ("part", "whole")}
    assert final["part"]["step"] == steps
    assert (final["part"]["parameter_sha256_per_rank"]
            == final["whole"]["parameter_sha256_per_rank"])
    return final


def free_port() -> int:
    """A TCP port free on this machine now, for a multi-process launch's rendezvous (a fixed
    port collides with another test run on the same machine)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_shared_data() -> Path:
    """Skip the calling test when ../shared/data is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (real audio for this test)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_wavlm_dir(tmp_path_factory) -> Path:
    from robustdistill.teachers import make_random_teacher

    return make_random_teacher("wavlm", "tiny", tmp_path_factory.mktemp("tiny_wavlm"), seed=0)


@pytest.fixture(scope="session")
def tiny_hubert_dir(tmp_path_factory) -> Path:
    from robustdistill.teachers import make_random_teacher

    return make_random_teacher("hubert", "tiny", tmp_path_factory.mktemp("tiny_hubert"), seed=1)


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> Path:
    """A random 2-layer, 16-wide Whisper (encoder and decoder) with its feature extractor."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-whisper")
    config = WhisperConfig(d_model=16, encoder_layers=2, encoder_attention_heads=2,
                           decoder_layers=1, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, vocab_size=64, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1)
    WhisperModel(config).save_pretrained(out)
    WhisperFeatureExtractor().save_pretrained(out)
    return out


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide state: reset it around a run with other precision."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.fixture
def die_at_checkpoint(monkeypatch):
    """``die_at_checkpoint(n)``: the ``n``-th checkpoint publication (any trainer's) raises
    ``KeyboardInterrupt`` after every file of it is written (a run killed mid-save); undone at
    the end of the test or by ``monkeypatch.undo()``."""
    import robustdistill.checkpoints as checkpoints_module

    def arm(n: int) -> list:
        real, calls = checkpoints_module.publish_checkpoint, []

        def dying(tmp, final):
            calls.append(final)
            if len(calls) == n:
                raise KeyboardInterrupt("killed while writing a checkpoint")
            return real(tmp, final)

        monkeypatch.setattr(checkpoints_module, "publish_checkpoint", dying)
        return calls

    return arm


@pytest.fixture(scope="module")
def tiny_teacher():
    """A random 1-layer GE2E speaker encoder (hidden 8, embedding 8), frozen, in eval mode."""
    from robustdistill.speaker.ge2e import GE2E

    torch.manual_seed(0)
    model = GE2E(hidden_size=8, embedding_size=8, num_layers=1).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def nan_instance_loss_at(monkeypatch, call: int):
    """Make ``train-speaker``'s ``instance_loss`` NaN at its ``call``-th call (1-based; with
    :func:`tiny`'s 6 crops in batches of 2, batch ``(call - 1) % 3 + 1`` of epoch
    ``(call - 1) // 3 + 1``; in batches of 4, 2 batches an epoch): a non-finite stop there.
    Returns the real ``instance_loss``."""
    from robustdistill.speaker import train as speaker_train

    real, calls = speaker_train.instance_loss, []

    def instance_loss(student, target):
        calls.append(1)
        value = real(student, target)
        return value * float("nan") if len(calls) == call else value

    monkeypatch.setattr(speaker_train, "instance_loss", instance_loss)
    return real


def sigterm_speaker_run(tiny, tmp_path: Path, monkeypatch, epochs: int, at_forward: int,
                        out: str = "run") -> Path:
    """A ``train-speaker`` run (``loss.method none``, batches of 2: 3 an epoch of :func:`tiny`'s
    6 crops) stopped by a SIGTERM sent in the student's ``at_forward``-th forward pass (the
    batch under way finishes and a checkpoint is saved); its folder."""
    import signal

    from robustdistill.interrupts import handled
    from robustdistill.speaker.models import SpeakerModel
    from robustdistill.speaker.train import train_system

    teacher, crops = tiny
    cfg = speaker_kd_config(tmp_path, out, epochs, method="none")
    cfg.training.batch_size = 2
    forward, calls = SpeakerModel.forward, []

    def wrapped(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == at_forward:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(SpeakerModel, "forward", wrapped)
    with pytest.raises(SystemExit), handled("robustdistill train-speaker"):
        train_system(cfg, teacher, crops)
    monkeypatch.undo()
    return tmp_path / out


@pytest.fixture(scope="module")
def tiny(tiny_teacher):
    """``(teacher, crops)`` for speaker training: :func:`tiny_teacher` and 6 white-noise crops of
    0.2 s from 3 speakers."""
    import numpy as np

    from robustdistill.speaker.data import Crop

    rng = np.random.default_rng(0)
    crops = [Crop(f"s{i % 3}", f"k{i}", (0.1 * rng.standard_normal(3200)).astype(np.float32))
             for i in range(6)]
    return tiny_teacher, crops


def write_se_data(root: Path) -> None:
    """Three 1.5 s harmonic "utterances" of one speaker (FLAC) under ``root/speech/spk`` and
    1.25 s of white noise under ``root/noise``, 16 kHz: a tiny ``train-se`` corpus."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    (root / "speech" / "spk").mkdir(parents=True)
    (root / "noise").mkdir()
    for i in range(3):
        x = 0.1 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))
        sf.write(root / "speech" / "spk" / f"u{i}.flac", x.astype(np.float32), 16000)
    sf.write(root / "noise" / "n.wav", (0.05 * rng.standard_normal(20000)).astype(np.float32),
             16000)


def se_train_args(root: Path, out: Path, steps: int, *extra: str) -> list[str]:
    """``train-se`` overrides for the :func:`write_se_data` corpus: a width-8 student, 0.25 s
    crops, batch 2, a log line and a checkpoint every step, no trackers."""
    return ["--student.hidden_size", "8", "--data.speech_dir", str(root / "speech"),
            "--data.noise_dir", str(root / "noise"), "--data.rir_dir", "null",
            "--data.reverb_prob", "0", "--data.crop_seconds", "0.25",
            "--training.batch_size", "2", "--training.log_every", "1",
            "--training.save_every", "1", "--training.report_to", "none",
            "--output_dir", str(out), "--training.max_steps", str(steps), *extra]


def record_se_training_steps(monkeypatch) -> list[int]:
    """Record the 0-based step of every training loss ``train-se`` computes from now on
    (``SELoss`` calls with gradients on; validation runs without). A resume from the step-N
    checkpoint of a ``max_steps`` M run records ``N, ..., M - 1``; a rerun from scratch, which
    ends with the same weights and log (same seed), records ``0, ..., M - 1``.

    Returns:
        The list the steps are appended to.
    """
    from robustdistill.se.losses import SELoss

    steps: list[int] = []
    forward = SELoss.forward

    def recording(self, step, *args, **kwargs):
        if torch.is_grad_enabled():
            steps.append(step)
        return forward(self, step, *args, **kwargs)

    monkeypatch.setattr(SELoss, "forward", recording)
    return steps


def write_ssl_enhancement_run(run: Path, prepare=None):
    """A distillation run folder as ``robustdistill enhance`` reads it: a tiny random WavLM
    ``run/student`` and an enhancement head (BLSTM 8 x 1, 257 bins) in ``run/heads``.

    Args:
        run: the run folder (created).
        prepare: called with the head before it is saved (e.g. to set its weights).

    Returns:
        The saved :class:`~robustdistill.objectives.enhancement.EnhancementHead`.
    """
    import json

    from safetensors.torch import save_file

    from robustdistill.objectives.enhancement import EnhancementHead
    from robustdistill.teachers import make_random_teacher

    make_random_teacher("wavlm", "tiny", run / "student")
    hidden = json.loads((run / "student" / "config.json").read_text())["hidden_size"]
    head = EnhancementHead(hidden, 257, 8, 1)
    if prepare is not None:
        prepare(head)
    (run / "heads").mkdir()
    save_file({f"head.{k}": v for k, v in head.state_dict().items()},
              str(run / "heads" / "enhancement.safetensors"))
    (run / "heads" / "enhancement.json").write_text(json.dumps(
        {"objective": "enhancement", "options": {}, "head_config": {}}))
    return head


def speaker_kd_config(tmp_path: Path, out: str, epochs: int, resume: bool = False,
                      method: str = "imlkd"):
    """A ``train-speaker`` config for the :func:`tiny` crops: a width-8 LSTM student, 2 IG
    steps over 0.1 s and whole-crop segments, batch 4, seed 3, output ``tmp_path/out``."""
    from downstream.config import from_dict
    from robustdistill.speaker.config import SpeakerKDConfig

    return from_dict(SpeakerKDConfig, {
        "student": {"hidden_size": 8, "num_layers": 1, "embedding_dim": 8},
        "ig": {"durations": [0.1, None], "n_steps": 2, "cache_dir": str(tmp_path / "cache")},
        "loss": {"method": method},
        "training": {"output_dir": str(tmp_path / out), "epochs": epochs, "batch_size": 4,
                     "resume": resume, "seed": 3},
    })


@pytest.fixture(scope="module")
def gru_student_dir(tmp_path_factory):
    """A saved width-8 :class:`~robustdistill.se.students.GRUMaskStudent` (seed 0): the tiny
    SE model of the ``enhance`` tests."""
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("student")
    GRUMaskStudent(StudentConfig(hidden_size=8)).save_pretrained(folder)
    return folder
