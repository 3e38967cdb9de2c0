"""ONNX export of students: hidden states from onnxruntime equal PyTorch on real audio."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import SHARED_DATA, require_shared_data

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from robustdistill.publish.onnx import (  # noqa: E402
    DEFAULT_ATOL,
    check_onnx_parity,
    export_and_check,
    export_onnx,
    onnx_path_for,
)

TEST_OTHER = SHARED_DATA / "librispeech-mini" / "test-other"


def _real_waveforms(count: int = 5) -> list[np.ndarray]:
    from robustdistill.audio import list_audio_files, load_audio

    require_shared_data()
    files = list_audio_files(TEST_OTHER)
    # several speakers, lengths differ: padded batches of varying batch size and length
    picked = files[:: max(1, len(files) // count)][:count]
    # crops of 1.2, 1.9, 2.6... s keep the test fast and make every padded batch length differ
    return [load_audio(f)[: int(16000 * (1.2 + 0.7 * i))] for i, f in enumerate(picked)]


def _dim_names(value_info) -> list[str]:
    return [d.dim_param or str(d.dim_value) for d in value_info.type.tensor_type.shape.dim]


def test_onnx_hidden_states_equal_pytorch_on_real_audio(tiny_wavlm_dir, tmp_path):
    student = tmp_path / "student"
    shutil.copytree(tiny_wavlm_dir, student)
    waveforms = _real_waveforms()
    path = export_onnx(student)
    assert path == onnx_path_for(student) and path.is_file()
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_values"]
    assert _dim_names(graph.input[0]) == ["batch", "samples"]
    assert _dim_names(graph.output[1])[1:3] == ["batch", "frames"]
    parity = check_onnx_parity(student, waveforms, path, batch_size=2)
    assert parity.passed
    assert parity.max_abs_diff < DEFAULT_ATOL
    # batch sizes 2, 2, 1 and three different lengths went through the one graph
    assert [b for b, _ in parity.batches] == [2, 2, 1]
    assert len({s for _, s in parity.batches}) == 3
    layers = 1 + __import__("json").loads((student / "config.json").read_text())[
        "num_hidden_layers"]
    assert len(parity.max_abs_diff_per_layer) == layers


def test_onnx_with_attention_mask_layer_norm_student(tmp_path):
    """A layer-norm (large-style) student takes an attention mask: padding must not change
    the real frames, in PyTorch or in ONNX."""
    student = _layer_norm_student(tmp_path / "hubert_layer")
    waveforms = _real_waveforms(3)
    path = export_onnx(student)
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["input_values",
                                                                  "attention_mask"]
    parity = check_onnx_parity(student, waveforms, path, batch_size=3)
    assert parity.passed and parity.max_abs_diff < DEFAULT_ATOL


def test_parity_check_fails_for_a_different_model(tiny_wavlm_dir, tmp_path):
    """The check can fail: a graph exported from other weights is caught."""
    import torch
    from transformers import AutoModel

    student, other = tmp_path / "student", tmp_path / "other"
    shutil.copytree(tiny_wavlm_dir, student)
    shutil.copytree(tiny_wavlm_dir, other)
    model = AutoModel.from_pretrained(other)
    with torch.no_grad():
        weight = model.feature_projection.projection.weight
        weight.add_(0.5 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    model.save_pretrained(other)
    path = export_onnx(other, tmp_path / "other.onnx")
    waveforms = [0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32)]
    with pytest.raises(AssertionError, match="differs from PyTorch"):
        check_onnx_parity(student, waveforms, path)
    result = check_onnx_parity(student, waveforms, path, raise_on_failure=False)
    assert not result.passed and result.max_abs_diff > 0.1


def test_parity_bad_inputs(tiny_wavlm_dir, tmp_path):
    with pytest.raises(ValueError, match="at least one waveform"):
        check_onnx_parity(tiny_wavlm_dir, [])
    with pytest.raises(ValueError, match="1-D"):
        check_onnx_parity(tiny_wavlm_dir, [np.zeros((2, 8000), np.float32)])
    with pytest.raises(FileNotFoundError, match="export_onnx first"):
        check_onnx_parity(tiny_wavlm_dir, [np.zeros(8000, np.float32)],
                          tmp_path / "missing.onnx")
    with pytest.raises(FileNotFoundError, match="config.json"):
        export_onnx(tmp_path)


def test_export_and_check_on_a_real_audio_folder(tiny_wavlm_dir, tmp_path):
    require_shared_data()
    student = tmp_path / "student"
    shutil.copytree(tiny_wavlm_dir, student)
    speaker = sorted(p for p in TEST_OTHER.iterdir() if p.is_dir())[0]
    path, parity = export_and_check(student, speaker, max_files=2)
    assert path == student / "onnx" / "model.onnx"
    assert parity.passed and sum(b for b, _ in parity.batches) == 2
    report = __import__("json").loads((student / "onnx" / "parity.json").read_text())
    assert report["num_waveforms"] == 2 and report["passed"] is True
    assert report["max_abs_diff"] == parity.max_abs_diff and str(speaker) in report["audio"]


def _layer_norm_student(folder):
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    config = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, conv_dim=(32, 32, 32), conv_kernel=(8, 8, 8),
                          conv_stride=(4, 4, 4), num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                          do_stable_layer_norm=True)
    HubertModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(
        folder)
    return folder


@pytest.mark.parametrize("masked", [True, False])
def test_card_onnx_snippet_runs_on_the_exported_graph(masked, tiny_wavlm_dir, tmp_path,
                                                      monkeypatch):
    """The card's onnxruntime snippet, run as written beside the exported graph: it feeds
    the attention mask exactly when the graph takes one (layer-norm students)."""
    from robustdistill.publish.card import build_card

    student = tmp_path / "student"
    if masked:
        _layer_norm_student(student)
    else:
        shutil.copytree(tiny_wavlm_dir, student)
    export_onnx(student)
    text = build_card(student, license="mit", speed=False).text
    start = text.index("```python\nimport numpy as np\nimport onnxruntime")
    snippet = text[start + len("```python\n"):text.index("```", start + 3)]
    assert ('"attention_mask": attention_mask' in snippet) is masked
    monkeypatch.chdir(student)
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - the card's own example
    layers = 1 + __import__("json").loads((student / "config.json").read_text())[
        "num_hidden_layers"]
    # 1 s at 16 kHz through three conv layers of kernel 8, stride 4: 3999, 998, 248 frames
    frames = 248
    assert scope["hidden_states"].shape[:3] == (layers, 1, frames)
    assert scope["last"].shape[:2] == (1, frames)
