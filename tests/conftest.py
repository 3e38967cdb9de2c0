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


def tiny_run_config(tmp_path: Path, teacher_dir: Path, out: str, **overrides):
    """A 3-second robust distillation config on generated audio (tiny teacher, 8 clips, noise
    and 2 simulated rooms, layer-wise and enhancement objectives, CPU). ``overrides``: dotted
    config keys (``"training.max_steps": 3``) applied last."""
    from robustdistill.config import load_config

    settings = {
        "teacher": str(teacher_dir), "output_dir": str(tmp_path / out), "seed": 5,
        "data.synthetic_items": 8, "data.synthetic_seconds": "[0.6, 1.0]",
        "data.synthetic_dir": str(tmp_path / "corpus"), "data.batch_size": 2,
        "data.max_length_s": 0.8, "data.min_length_s": 0.5, "data.validation_fraction": 0.25,
        "augmentation.num_simulated_rooms": 2, "augmentation.room_max_order": 2,
        "objectives": "{layerwise: {teacher_layers: [1, 2]}, enhancement: {hidden_size: 8, "
                      "num_layers: 1}}",
        "training.learning_rate": 1e-3, "training.warmup_ratio": 0.0, "training.cpu": True,
        "training.log_every": 1, "training.eval_every": 100, "training.report_to": "[]",
        "training.eval_at_start": False, "training.export_student": False, **overrides,
    }
    return load_config(None, [item for key, value in settings.items()
                              for item in (f"--{key}", str(value))])


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
