"""The distill command with an unreachable Hub id, and enhance's model folders and progress: pins found by mutation testing (2026-12-06)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

HUB_DOWN = ("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't "
            "find them in the cached files.\nCheck your internet connection or see ...")


# ---------------------------------------------------------------------------- CLI
def test_distill_with_an_unreachable_hub_teacher_exits_with_one_line(monkeypatch, capsys):
    import robustdistill.trainer as trainer_module
    from robustdistill.cli import main

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"

    def offline(cfg):
        raise OSError(HUB_DOWN)

    monkeypatch.setattr(trainer_module, "train", offline)
    with pytest.raises(SystemExit) as stop:
        main(["distill", "--config", str(demo)])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("robustdistill distill: error: We couldn't connect")
    assert "HF_HUB_OFFLINE=1" in last

    def disk_full(cfg):
        raise OSError("No space left on device")

    monkeypatch.setattr(trainer_module, "train", disk_full)
    with pytest.raises(OSError, match="No space left"):
        main(["distill", "--config", str(demo)])

# ---------------------------------------------------------------------------- enhance
def test_enhance_model_in_another_subfolder_of_an_ssl_run_is_not_the_runs_student(tmp_path):
    """Only ``RUN/student`` stands for the SSL run; another folder inside the run (its
    ``heads/``, an ``exports/`` tree) is not silently replaced by the run's final student."""
    from conftest import write_ssl_enhancement_run

    from robustdistill.se.enhance import load_enhancer
    from robustdistill.se.ssl_head import SSLHeadEnhancer

    run = tmp_path / "run"
    write_ssl_enhancement_run(run)
    assert isinstance(load_enhancer(run / "student"), SSLHeadEnhancer)
    (run / "exports").mkdir()
    for other in (run / "heads", run / "exports"):
        with pytest.raises(FileNotFoundError, match="no SE student folder"):
            load_enhancer(other)


def test_enhance_progress_counts_every_channel(tmp_path, monkeypatch):
    """The bar's total is audio seconds x channels, the unit its updates use."""
    import tqdm.auto

    from robustdistill.se.enhance import main
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    student = GRUMaskStudent(StudentConfig(hidden_size=8)).save_pretrained(tmp_path / "se")
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "in.wav", (0.1 * rng.standard_normal((8000, 2))).astype(np.float32),
             16000)
    bars = []

    class Bar:
        def __init__(self, total=None, **kwargs):
            self.total, self.n = total, 0.0
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.n += n

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    assert main([str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--model",
                 str(student)]) == 0
    (bar,) = bars
    assert bar.total == pytest.approx(1.0) and bar.n == pytest.approx(1.0)
