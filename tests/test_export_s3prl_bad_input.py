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
    assert line == (f"robustdistill export-s3prl: error: --out {weights} would overwrite an input: "
                    f"it is inside --student {tmp_path / 'student'}; give another file, outside "
                    "--student")
    assert weights.read_bytes() == before
    assert _error(["export-s3prl", "--student", str(tmp_path / "student"), "--out", str(weights),
                   "--overwrite"], capsys) == line  # --overwrite never replaces an input
    assert weights.read_bytes() == before


def test_an_out_hard_linked_to_the_students_weights_is_refused(tmp_path, monkeypatch, capsys):
    """``--out`` a hard link to ``student/model.safetensors`` (outside the folder by name):
    torch.save truncated the weights in place (a bus error, the student lost)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _student(tmp_path / "student")
    weights = tmp_path / "student" / "model.safetensors"
    before = weights.read_bytes()
    (tmp_path / "linked.ckpt").hardlink_to(weights)
    for extra in ([], ["--overwrite"]):
        line = _error(["export-s3prl", "--student", str(tmp_path / "student"), "--out",
                       str(tmp_path / "linked.ckpt"), *extra], capsys)
        assert line == (f"robustdistill export-s3prl: error: --out {tmp_path / 'linked.ckpt'} "
                        f"would overwrite an input: it is the same file as {weights} (a hard "
                        "link); give another file, outside --student")
        assert weights.read_bytes() == before


def test_an_out_that_is_the_heads_file_is_refused_even_with_overwrite(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _student(tmp_path / "student")
    heads = tmp_path / "heads.pt"
    torch.save({"pred_layer_id": [2], "state_dict": {}}, heads)
    before = heads.read_bytes()
    line = _error(["export-s3prl", "--student", str(tmp_path / "student"), "--out", str(heads),
                   "--heads", str(heads), "--overwrite"], capsys)
    assert line == (f"robustdistill export-s3prl: error: --out {heads} would overwrite an input: "
                    f"it is --heads {heads}; give another file, outside --student")
    assert heads.read_bytes() == before


def test_an_existing_out_is_refused_without_overwrite_and_replaced_with_it(
        tmp_path, monkeypatch, capsys):
    """An existing ``--out`` (not an input) was silently replaced; now it needs ``--overwrite``,
    as ``export``, ``create-student`` and ``make-teacher`` need it for a folder with files."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _student(tmp_path / "student")
    out = tmp_path / "results.ckpt"
    out.write_text("an earlier export\n")
    line = _error(["export-s3prl", "--student", str(tmp_path / "student"), "--out", str(out)],
                  capsys)
    assert line == (f"robustdistill export-s3prl: error: --out {out} exists; give a new file, or "
                    "--overwrite to replace it")
    assert out.read_text() == "an earlier export\n"
    assert main(["export-s3prl", "--student", str(tmp_path / "student"), "--out", str(out),
                 "--overwrite"]) == 0
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert torch.equal(ckpt["Distiller"]["post_extract_proj.weight"],
                       model.feature_projection.projection.weight.detach())


def test_a_failed_overwrite_keeps_the_earlier_export(tmp_path, monkeypatch, capsys):
    """``--overwrite`` wrote in place: an export that failed while writing (here the disk
    filling after 1,000 bytes) left a cut file where the earlier export was. Now it writes a
    temporary file beside ``--out`` and renames it: the earlier export stays whole, no
    temporary file is left, and a successful overwrite replaces it."""
    import errno

    from robustdistill import s3prl_export

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _student(tmp_path / "student")
    out = tmp_path / "exports" / "student.ckpt"
    args = ["export-s3prl", "--student", str(tmp_path / "student"), "--out", str(out)]
    assert main(args) == 0
    earlier = out.read_bytes()
    save = torch.save

    def disk_full(obj, path):
        with open(path, "wb") as f:
            f.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(s3prl_export.torch, "save", disk_full)
    assert _error([*args, "--overwrite"], capsys) == ("robustdistill export-s3prl: error: "
                                                      "[Errno 28] No space left on device")
    assert out.read_bytes() == earlier
    assert sorted(p.name for p in out.parent.iterdir()) == ["student.ckpt"]
    monkeypatch.setattr(s3prl_export.torch, "save", save)
    with torch.no_grad():
        model.feature_projection.projection.weight.add_(1.0)
    model.save_pretrained(tmp_path / "student")
    assert main([*args, "--overwrite"]) == 0
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert torch.equal(ckpt["Distiller"]["post_extract_proj.weight"],
                       model.feature_projection.projection.weight.detach())
    assert sorted(p.name for p in out.parent.iterdir()) == ["student.ckpt"]
