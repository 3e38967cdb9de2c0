"""``robustdistill export-s3prl`` under bad input (no s3prl needed): an ``--out`` that is a
folder and a ``--heads`` file that is not a ``torch.save``'d one are one-line errors (exit 2),
not a RuntimeError or UnpicklingError traceback."""

from __future__ import annotations

import pytest
import torch
from transformers import HubertConfig, HubertModel

from robustdistill.cli import main
from robustdistill.s3prl_export import export_s3prl_distiller


def _student(folder) -> HubertModel:
    config = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, conv_dim=(24, 24, 24), conv_kernel=(8, 8, 8),
                          conv_stride=(4, 4, 4), num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=2, feat_proj_layer_norm=False)
    torch.manual_seed(0)
    model = HubertModel(config).eval()
    model.save_pretrained(folder)
    return model


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_an_out_that_is_a_folder_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _student(tmp_path / "student")
    (tmp_path / "out").mkdir()
    line = _error(["export-s3prl", "--student", str(tmp_path / "student"), "--out",
                   str(tmp_path / "out")], capsys)
    assert line == (f"robustdistill export-s3prl: error: --out {tmp_path / 'out'} is a folder: "
                    "give the .ckpt file to write")
    assert list((tmp_path / "out").iterdir()) == []


def test_heads_that_are_not_a_torch_file_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _student(tmp_path / "student")
    text = tmp_path / "heads.pt"
    text.write_text("not a checkpoint\n")
    line = _error(["export-s3prl", "--student", str(tmp_path / "student"), "--out",
                   str(tmp_path / "s.ckpt"), "--heads", str(text)], capsys)
    assert line.startswith(f"robustdistill export-s3prl: error: heads {text}: not a "
                           "torch.save'd heads file (")
    assert not (tmp_path / "s.ckpt").exists()
    with pytest.raises(FileNotFoundError):  # a missing file stays an OSError (one line too)
        export_s3prl_distiller(model, tmp_path / "s.ckpt", heads=tmp_path / "missing.pt")


def test_an_out_inside_the_student_folder_is_refused_before_it_overwrites_it(
        tmp_path, monkeypatch, capsys):
    """``--out student/model.safetensors`` replaced the student's weights with the checkpoint."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _student(tmp_path / "student")
    weights = tmp_path / "student" / "model.safetensors"
    before = weights.read_bytes()
    line = _error(["export-s3prl", "--student", str(tmp_path / "student"), "--out",
                   str(weights)], capsys)
    assert "would overwrite an input (it is inside --student or is --heads)" in line
    assert weights.read_bytes() == before


def test_an_out_hard_linked_to_the_students_weights_is_refused(tmp_path, monkeypatch, capsys):
    """``--out`` a hard link to ``student/model.safetensors`` (outside the folder by name):
    torch.save truncated the weights in place (a bus error, the student lost)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _student(tmp_path / "student")
    weights = tmp_path / "student" / "model.safetensors"
    before = weights.read_bytes()
    (tmp_path / "linked.ckpt").hardlink_to(weights)
    line = _error(["export-s3prl", "--student", str(tmp_path / "student"), "--out",
                   str(tmp_path / "linked.ckpt")], capsys)
    assert "would overwrite an input" in line
    assert weights.read_bytes() == before
