"""``weights_sha256`` by hand and ``heads_match`` on partial records (mutation audit, session
21): which file holds which bytes counts, and a head with no record, or a model with no
weights, never matches."""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors.torch import save_file

from robustdistill.export import heads_match, not_export_files, weights_sha256


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_weights_sha256_by_hand_names_each_file(tmp_path):
    """SHA-256 over, per ``*.safetensors`` file in name order, its name then the hex SHA-256
    of its bytes: two shards that swap contents give another digest; other files do not
    count; no weights, None."""
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
    (one / "a.safetensors").write_bytes(b"first")
    (one / "b.safetensors").write_bytes(b"second")
    (two / "a.safetensors").write_bytes(b"second")
    (two / "b.safetensors").write_bytes(b"first")
    (one / "config.json").write_text("{}")
    expected = hashlib.sha256(b"a.safetensors" + _sha(b"first").encode()
                              + b"b.safetensors" + _sha(b"second").encode()).hexdigest()
    assert weights_sha256(one) == expected
    assert weights_sha256(two) != expected
    assert weights_sha256(tmp_path / "none") is None


def _head(heads, name, record):
    save_file({"w": torch.zeros(1)}, str(heads / f"{name}.safetensors"))
    recipe = {"objective": name, "options": {}, "head_config": {}}
    if record is not None:
        recipe["student_weights"] = record
    (heads / f"{name}.json").write_text(json.dumps(recipe))


def test_heads_match_needs_a_record_for_every_head_and_weights_to_compare(tmp_path):
    model, heads = tmp_path / "student", tmp_path / "heads"
    model.mkdir()
    heads.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    sha = weights_sha256(model)
    _head(heads, "layerwise", {"sha256": sha, "step": 30, "checkpoint": None})
    assert heads_match(heads, model) == (True, "")
    _head(heads, "tfckd", None)  # written before records, or by hand
    assert heads_match(heads, model) == (False, "no record")
    (heads / "tfckd.json").unlink()
    assert heads_match(heads, model) == (False, "no record")
    for name in ("tfckd.safetensors",):
        (heads / name).unlink()
    (model / "model.safetensors").unlink()  # nothing to compare the record with
    assert heads_match(heads, model) == (False, "step 30")


def test_not_export_files_keeps_a_sharded_models_own_files(tmp_path):
    """An export writes config.json, preprocessor_config.json, the safetensors shards and
    their index; everything else in the folder (a card, onnx/) is not the export's."""
    for name in ("config.json", "preprocessor_config.json", "model-00001-of-00002.safetensors",
                 "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                 "README.md", "notes.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / "onnx").mkdir()
    assert not_export_files(tmp_path) == ["README.md", "notes.json", "onnx/"]
