"""Mutation-testing additions for robustdistill.publish.onnx: the last_hidden_state output
(dynamic frames, equal to PyTorch at two lengths), the parity check's aggregation over batches
(a mismatch in any batch fails it, the worst difference and value over all batches are
reported), its default tolerance, and a graph exported for another feature extractor."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from robustdistill.publish.onnx import (  # noqa: E402
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    check_onnx_parity,
    export_onnx,
)


@pytest.fixture(scope="module")
def exported(tiny_wavlm_dir, tmp_path_factory):
    """One export of the tiny WavLM student (no attention mask), shared by the module."""
    student = tmp_path_factory.mktemp("onnx_student") / "student"
    shutil.copytree(tiny_wavlm_dir, student)
    return student, export_onnx(student)


def _noise(seconds: float, seed: int, scale: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal(int(16000 * seconds))).astype(np.float32)


def _dims(value_info) -> list[str]:
    return [d.dim_param or str(d.dim_value) for d in value_info.type.tensor_type.shape.dim]


def test_last_hidden_state_has_dynamic_batch_and_frames_and_equals_pytorch(exported):
    from transformers import AutoModel

    student, path = exported
    outputs = {o.name: o for o in onnx.load(str(path)).graph.output}
    hidden = json.loads((student / "config.json").read_text())["hidden_size"]
    assert _dims(outputs["last_hidden_state"]) == ["batch", "frames", str(hidden)]
    model = AutoModel.from_pretrained(student).eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # two batch sizes and two lengths, neither the tracing input's (2, 16000)
    for batch, samples in ((1, 12345), (3, 24000)):
        x = np.stack([_noise(samples / 16000, seed=i) for i in range(batch)])
        last, states = session.run(None, {"input_values": x})
        with torch.inference_mode():
            ref = model(torch.from_numpy(x), output_hidden_states=True)
        assert last.shape == tuple(ref.last_hidden_state.shape)
        np.testing.assert_allclose(last, ref.last_hidden_state.numpy(), atol=1e-4, rtol=1e-3)
        np.testing.assert_array_equal(last, states[-1])


class _Perturbed:
    """An onnxruntime session whose hidden states are changed on chosen calls."""

    changes: dict = {}
    calls: list = []

    def __init__(self, *args, **kwargs):
        self._session = _REAL_SESSION(*args, **kwargs)

    def get_inputs(self):
        return self._session.get_inputs()

    def run(self, names, feed):
        last, states = self._session.run(names, feed)
        call = len(_Perturbed.calls)
        _Perturbed.calls.append(states.copy())
        change = _Perturbed.changes.get(call)
        if change is not None:
            states = change(states.copy())
        return last, states


_REAL_SESSION = ort.InferenceSession


@pytest.fixture
def perturb(monkeypatch):
    """``perturb({call: fn})``: the ``call``-th batch's ONNX hidden states go through ``fn``."""
    monkeypatch.setattr(ort, "InferenceSession", _Perturbed)

    def arm(changes):
        _Perturbed.changes, _Perturbed.calls = dict(changes), []
        return _Perturbed.calls

    yield arm
    _Perturbed.changes, _Perturbed.calls = {}, []


def _bump(amount: float, layer: int = 0):
    def change(states):
        states[layer, 0, 0, 0] += amount
        return states

    return change


def test_a_mismatch_in_the_first_batch_only_fails_the_check(exported, perturb):
    """Batches 2 and 3 agree exactly; batch 1 is off by 0.05 on one value of layer 0: the
    check fails and reports that difference, not the last batch's."""
    student, path = exported
    waves = [_noise(1.0, 0), _noise(1.3, 1), _noise(1.6, 2)]
    perturb({0: _bump(0.05)})
    result = check_onnx_parity(student, waves, path, batch_size=1, raise_on_failure=False)
    assert result.batches == [(1, 16000), (1, 20800), (1, 25600)]
    assert not result.passed
    assert result.max_abs_diff == pytest.approx(0.05, abs=2e-3)
    assert result.max_abs_diff_per_layer[0] == pytest.approx(0.05, abs=2e-3)
    assert max(result.max_abs_diff_per_layer[1:]) < 1e-3
    perturb({0: _bump(0.05)})
    with pytest.raises(AssertionError, match="differs from PyTorch"):
        check_onnx_parity(student, waves, path, batch_size=1)


def test_default_tolerance_is_atol_1e4_plus_rtol_1e3(exported, perturb):
    """A value off by 1.5x its tolerance fails with the defaults, 0.5x passes."""
    assert (DEFAULT_ATOL, DEFAULT_RTOL) == (1e-4, 1e-3)
    student, path = exported
    waves = [_noise(1.0, 0)]
    calls = perturb({})
    check_onnx_parity(student, waves, path)
    value = abs(float(calls[0][1, 0, 0, 0]))
    tolerance = DEFAULT_ATOL + DEFAULT_RTOL * value
    for factor, passed in ((1.5, False), (0.5, True)):
        perturb({0: _bump(factor * tolerance, layer=1)})
        result = check_onnx_parity(student, waves, path, raise_on_failure=False)
        assert result.passed is passed, factor


def test_max_abs_value_is_over_every_batch(exported, perturb):
    """The loud waveform is in the first batch: the reported scale is its, not the last's."""
    student, path = exported
    waves = [_noise(1.0, 0, scale=10.0), _noise(1.2, 1, scale=0.001)]
    calls = perturb({})
    result = check_onnx_parity(student, waves, path, batch_size=1)
    per_batch = [float(np.abs(c).max()) for c in calls]
    assert per_batch[0] != pytest.approx(per_batch[1], rel=1e-2)
    assert result.max_abs_value == pytest.approx(max(per_batch), rel=1e-3)


def test_a_graph_exported_without_the_mask_is_refused_for_a_masking_extractor(
        exported, tmp_path):
    """The student's feature extractor now returns an attention mask the graph does not take:
    a ValueError that says to export again (not onnxruntime's own error)."""
    student, path = exported
    other = tmp_path / "student"
    shutil.copytree(student, other)
    config = json.loads((other / "preprocessor_config.json").read_text())
    config["return_attention_mask"] = True
    (other / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"has no input\(s\) \['attention_mask'\].*export it "
                                         r"again"):
        check_onnx_parity(other, [_noise(1.0, 0)], path)
