"""Pushing a student: one upload_folder commit, a dry run that contacts nothing, no token leak."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from unittest import mock

import httpx2 as httpx
import huggingface_hub
import pytest

from robustdistill.cli import main
from robustdistill.publish.push import PushError, plan_upload, push

FAKE_TOKEN = "hf_FAKEfakeFAKEfake0123456789abcdefXYZ"
#: The library's own upload_folder (the ``hub`` fixture replaces it with a mock).
_REAL_UPLOAD_FOLDER = huggingface_hub.HfApi.upload_folder


@pytest.fixture()
def folder(tmp_path, tiny_wavlm_dir) -> Path:
    """A publish folder: student, card, plot, heads, training config, plus files to skip."""
    out = tmp_path / "student"
    shutil.copytree(tiny_wavlm_dir, out)
    (out / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    (out / "robustness_kws.png").write_bytes(b"\x89PNG")
    (out / "training_config.yaml").write_text("teacher: t\n")
    (out / "heads").mkdir()
    (out / "heads" / "layerwise.safetensors").write_bytes(b"w")
    (out / "heads" / "layerwise.json").write_text("{}")
    (out / ".hidden").write_text("x")
    (out / "__pycache__").mkdir()
    (out / "__pycache__" / "x.pyc").write_bytes(b"x")
    return out


EXPECTED = ["README.md", "config.json", "heads/layerwise.json", "heads/layerwise.safetensors",
            "model.safetensors", "preprocessor_config.json", "robustness_kws.png",
            "training_config.yaml"]


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """Every HfApi network method mocked; the token a fake one in the environment."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    mocks = {name: mock.Mock(name=name, return_value=mock.Mock(commit_url="https://x/commit"))
             for name in ("upload_folder", "create_repo", "create_branch", "create_commit",
                          "upload_file")}
    for name, m in mocks.items():
        monkeypatch.setattr(huggingface_hub.HfApi, name, m)
    return mocks


def test_dry_run_lists_every_file_and_contacts_nothing(folder, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)

    def no_network(*args, **kwargs):
        raise AssertionError("the dry run contacted the Hub")

    # Every request huggingface_hub makes goes through an httpx client's send; the Hub API's
    # write methods and the token lookup are blocked too. (Constructing an HfApi is not a
    # contact: importing huggingface_hub.hf_file_system, as the CLI's logging set-up does
    # through datasets, builds one at import time.)
    monkeypatch.setattr(httpx.Client, "send", no_network)
    monkeypatch.setattr(httpx.AsyncClient, "send", no_network)
    for name in ("upload_folder", "create_repo", "create_commit", "whoami", "repo_info"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, no_network)
    monkeypatch.setattr(huggingface_hub, "get_token", no_network)
    caplog.set_level(logging.DEBUG)
    rc = main(["push", "--model", str(folder), "--repo-id", "org/tiny-robust", "--dry-run"])
    assert rc == 0
    out = capsys.readouterr()
    listed = [line.split()[-1] for line in out.out.splitlines() if line.startswith("  ")]
    assert listed == EXPECTED
    assert "would upload 8 files" in out.out and "org/tiny-robust" in out.out
    assert "token: configured" in out.out
    assert FAKE_TOKEN not in out.out + out.err + caplog.text


def test_push_is_one_upload_folder_call(folder, hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    rc = main(["push", "--model", str(folder), "--repo-id", "org/tiny-robust", "--private",
               "--revision", "v1"])
    assert rc == 0
    hub["upload_folder"].assert_called_once_with(
        repo_id="org/tiny-robust", folder_path=str(folder), repo_type="model", revision="v1",
        commit_message="Upload tiny-robust (robustdistill)", allow_patterns=EXPECTED,
        delete_patterns="*")
    hub["create_repo"].assert_called_once_with("org/tiny-robust", repo_type="model",
                                               private=True, exist_ok=True)
    hub["create_branch"].assert_called_once_with("org/tiny-robust", branch="v1",
                                                 repo_type="model", exist_ok=True)
    hub["create_commit"].assert_not_called()
    hub["upload_file"].assert_not_called()
    out = capsys.readouterr()
    assert "pushed 8 files" in out.out
    assert FAKE_TOKEN not in out.out + out.err + caplog.text
    # nothing in the folder holds the token either
    for path in folder.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes()


def test_default_push_keeps_visibility_and_main(folder, hub):
    push(folder, "org/tiny-robust")
    hub["create_repo"].assert_called_once_with("org/tiny-robust", repo_type="model",
                                               private=None, exist_ok=True)
    hub["create_branch"].assert_not_called()
    assert hub["upload_folder"].call_args.kwargs["revision"] is None


def test_repush_replaces_stale_files_in_the_same_commit(folder, hub, monkeypatch):
    """A repository holding an earlier push (an ONNX graph and a plot the folder no longer
    has): the installed huggingface_hub's upload_folder, given push's arguments, makes one
    commit that adds the folder's files and deletes the stale ones, keeping .gitattributes."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, hf_api

    push(folder, "org/tiny-robust")
    kwargs = hub["upload_folder"].call_args.kwargs
    monkeypatch.setattr(hf_api, "is_xet_available", lambda: False)  # the one-commit path
    monkeypatch.setattr(huggingface_hub.HfApi, "_validate_yaml", mock.Mock())
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", mock.Mock(return_value=[
        ".gitattributes", "README.md", "config.json", "model.safetensors", "onnx/model.onnx",
        "onnx/parity.json", "robustness_old.png"]))
    _REAL_UPLOAD_FOLDER(huggingface_hub.HfApi(token=FAKE_TOKEN), **kwargs)
    hub["create_commit"].assert_called_once()
    operations = hub["create_commit"].call_args.kwargs["operations"]
    deleted = sorted(op.path_in_repo for op in operations
                     if isinstance(op, CommitOperationDelete))
    added = sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd))
    assert deleted == ["onnx/model.onnx", "onnx/parity.json", "robustness_old.png"]
    assert added == EXPECTED


def test_hub_errors_never_show_the_token(folder, hub, capsys, caplog):
    hub["upload_folder"].side_effect = RuntimeError(f"401 Unauthorized: token {FAKE_TOKEN}")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PushError) as err:
        push(folder, "org/tiny-robust")
    assert FAKE_TOKEN not in str(err.value) and "***" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(SystemExit) as exit_info:
        main(["push", "--model", str(folder), "--repo-id", "org/tiny-robust"])
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    assert "401 Unauthorized" in out.err
    assert FAKE_TOKEN not in out.out + out.err + caplog.text


def test_no_token_is_a_clear_error(folder, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(PushError, match="no Hugging Face token"):
        push(folder, "org/tiny-robust")
    hub["upload_folder"].assert_not_called()


def test_a_file_holding_the_token_is_refused(folder, hub):
    (folder / "notes.md").write_text(f"my token is {FAKE_TOKEN}\n")
    with pytest.raises(PushError, match="notes.md contains the Hugging Face token") as err:
        push(folder, "org/tiny-robust")
    assert FAKE_TOKEN not in str(err.value)
    hub["upload_folder"].assert_not_called()


def test_folder_checks(folder, tmp_path):
    with pytest.raises(PushError, match="ORG/NAME"):
        plan_upload(folder, "no-slash")
    with pytest.raises(PushError, match="ORG/NAME"):
        plan_upload(folder, "org/../x")
    with pytest.raises(FileNotFoundError):
        plan_upload(tmp_path / "missing", "org/x")
    (folder / "README.md").unlink()
    with pytest.raises(PushError, match="robustdistill card"):
        plan_upload(folder, "org/x")
    (folder / "README.md").write_text("# x\n")
    (folder / "model.safetensors").unlink()
    with pytest.raises(PushError, match="no weights"):
        plan_upload(folder, "org/x")


def test_symlink_out_of_the_folder_is_refused(folder, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    (folder / "link.txt").symlink_to(outside)
    with pytest.raises(PushError, match="link to outside"):
        plan_upload(folder, "org/x")


@pytest.mark.parametrize("name", ["LICENSE", "train.log", "setup.cfg", "heads/notes.ini"])
def test_a_token_in_a_file_of_any_name_is_refused(folder, hub, name):
    """Every uploaded file is searched, not only .md/.json/.yaml/.txt/.py: a LICENSE (which a
    card's --license-link may name) or a log is text too."""
    (folder / name).write_text(f"HF_TOKEN={FAKE_TOKEN}\n")
    with pytest.raises(PushError, match=f"{name} contains the Hugging Face token") as err:
        push(folder, "org/tiny-robust")
    assert FAKE_TOKEN not in str(err.value)
    hub["upload_folder"].assert_not_called()


def test_a_token_across_a_read_chunk_boundary_is_found(tmp_path):
    from robustdistill.publish.push import _holds

    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x00" * 10 + FAKE_TOKEN.encode() + b"\x00" * 10)
    assert _holds(path, FAKE_TOKEN.encode(), chunk=16)  # the token spans three chunks
    assert not _holds(path, b"hf_other", chunk=16)
