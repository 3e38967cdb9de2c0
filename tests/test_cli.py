"""The robustdistill command: subcommands write what they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoFeatureExtractor, AutoModel

from robustdistill.cli import main


def test_make_teacher_then_create_student(tmp_path):
    assert main(["make-teacher", "--family", "data2vec-audio", "--preset", "tiny",
                 "--out", str(tmp_path / "teacher")]) == 0
    assert main(["create-student", "--teacher", str(tmp_path / "teacher"), "--out",
                 str(tmp_path / "student"), "--num-layers", "1", "--init-layers", "1"]) == 0
    student = AutoModel.from_pretrained(tmp_path / "student")
    assert type(student).__name__ == "Data2VecAudioModel"
    assert student.config.num_hidden_layers == 1
    AutoFeatureExtractor.from_pretrained(tmp_path / "student")
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["architectures"] == ["Data2VecAudioModel"]


def test_distill_reports_a_config_typo_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
        main(["distill", "--config", str(demo), "--training.max_stepz", "3"])
    assert exit_info.value.code == 2
    assert "did you mean 'training.max_steps'" in capsys.readouterr().err


def test_resume_flag_and_an_explicit_checkpoint_are_refused_together(tmp_path, capsys):
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--config", str(demo), "--resume",
              f"--training.resume_from={tmp_path}"])
    assert exit_info.value.code == 2
    assert "give one" in capsys.readouterr().err


def test_unknown_subcommand_prints_usage(capsys):
    assert main(["distil"]) == 2
    assert "create-student" in capsys.readouterr().err


def test_create_student_with_a_pruned_cnn(tmp_path, capsys):
    assert main(["make-teacher", "--family", "wavlm", "--preset", "tiny",
                 "--out", str(tmp_path / "teacher")]) == 0
    assert main(["create-student", "--teacher", str(tmp_path / "teacher"), "--out",
                 str(tmp_path / "student"), "--conv-dim", "16", "16", "8",
                 "--narrow-cnn-init", "prune"]) == 0
    student = AutoModel.from_pretrained(tmp_path / "student")
    teacher = AutoModel.from_pretrained(tmp_path / "teacher")
    assert list(student.config.conv_dim) == [16, 16, 8]
    # every kept layer-0 filter is one of the teacher's
    kept = student.feature_extractor.conv_layers[0].conv.weight
    full = teacher.feature_extractor.conv_layers[0].conv.weight
    assert all(any(k.equal(f) for f in full) for k in kept)
    with pytest.raises(SystemExit) as exit_info:
        main(["create-student", "--teacher", str(tmp_path / "teacher"), "--out",
              str(tmp_path / "wide"), "--conv-dim", "64", "16", "8", "--narrow-cnn-init", "prune"])
    assert exit_info.value.code == 2
    assert "wider than the teacher's" in capsys.readouterr().err
