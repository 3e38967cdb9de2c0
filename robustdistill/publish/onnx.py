"""ONNX export of a student and its parity check with onnxruntime.

The exported graph takes what the student's ``AutoFeatureExtractor`` returns and gives every
hidden state, with dynamic batch and length axes:

========================  =================  ==========================================
name                      shape              meaning
========================  =================  ==========================================
``input_values``          (B, S) float32     16 kHz waveform after the feature extractor
``attention_mask``        (B, S) int64       1 on real samples; only when the feature
                                             extractor returns one
``last_hidden_state``     (B, T, D) float32  the last layer, ``T`` frames (20 ms each)
``hidden_states``         (L + 1, B, T, D)   CNN projection output and every layer,
                                             as ``output_hidden_states=True``
========================  =================  ==========================================

The graph is traced by TorchScript (``torch.onnx.export(..., dynamo=False)``): the
``torch.export`` (dynamo) path fails on the ``transformers`` WavLM and HuBERT encoders with
torch 2.13 (``TorchExportError`` on their data-dependent shapes), which is why the legacy
exporter is used. Parity is checked with :func:`check_onnx_parity` on real audio.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..strict_json import strict_dumps

__all__ = ["OnnxParity", "check_onnx_parity", "export_and_check", "export_onnx", "onnx_path_for"]

logger = logging.getLogger(__name__)

class OnnxCheckError(ValueError):
    """The ONNX parity check cannot run on what it was given (no usable check audio, or a graph
    exported for another feature extractor): a user error, reported by ``robustdistill export``
    in one line, unlike an error from inside the ONNX export itself."""


#: Default ONNX opset (onnxruntime 1.31 runs up to opset 23; 17 is the oldest with LayerNorm).
DEFAULT_OPSET = 17
#: Default tolerance: ``|onnx - torch| <= ATOL + RTOL * |torch|`` elementwise, on every layer.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


def onnx_path_for(model_dir: str | Path) -> Path:
    """Where :func:`export_onnx` writes by default: ``MODEL_DIR/onnx/model.onnx`` (the layout
    Hub tools such as transformers.js read)."""
    return Path(model_dir) / "onnx" / "model.onnx"


class _HiddenStates(torch.nn.Module):
    """Wraps a ``transformers`` encoder so that tracing returns plain tensors."""

    def __init__(self, model: torch.nn.Module, with_mask: bool) -> None:
        super().__init__()
        self.model = model
        self.with_mask = with_mask

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        out = self.model(input_values, attention_mask=attention_mask if self.with_mask else None,
                         output_hidden_states=True)
        return out.last_hidden_state, torch.stack(out.hidden_states)


def _load(model_dir: Path):
    from transformers import AutoFeatureExtractor, AutoModel

    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: not a saved student folder")
    # trust_remote_code None: for a folder of its own code transformers asks y/N on the terminal
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=False).eval()
    extractor = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=False)
    return model, extractor


def _uses_mask(extractor) -> bool:
    return bool(getattr(extractor, "return_attention_mask", False))


def export_onnx(model_dir: str | Path, out_path: str | Path | None = None, *,
                opset: int = DEFAULT_OPSET, example_seconds: float = 1.0) -> Path:
    """Export a saved student (``AutoModel`` folder) to ONNX with dynamic batch and length.

    Args:
        model_dir: folder with ``config.json``, weights and ``preprocessor_config.json``.
        out_path: the ``.onnx`` file; default :func:`onnx_path_for`.
        opset: ONNX opset version.
        example_seconds: length of the (random) tracing input, in seconds at 16 kHz; the
            exported graph accepts any batch size and any length of at least one frame
            (400 samples, 25 ms, for the usual CNN).

    Returns:
        The ``.onnx`` path (weights are inside the file; models over 2 GB would need ONNX
        external data, which is not handled).

    Raises:
        FileNotFoundError: ``model_dir`` is not a saved model folder.
    """
    model_dir = Path(model_dir)
    model, extractor = _load(model_dir)
    with_mask = _uses_mask(extractor)
    wrapper = _HiddenStates(model, with_mask).eval()
    rate = int(getattr(extractor, "sampling_rate", 16000))
    samples = max(int(example_seconds * rate), 800)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, samples, generator=generator)
    inputs: tuple[torch.Tensor, ...] = (example,)
    names = ["input_values"]
    axes = {"input_values": {0: "batch", 1: "samples"},
            "last_hidden_state": {0: "batch", 1: "frames"},
            "hidden_states": {1: "batch", 2: "frames"}}
    if with_mask:
        mask = torch.ones(2, samples, dtype=torch.long)
        mask[1, samples // 2:] = 0
        inputs += (mask,)
        names.append("attention_mask")
        axes["attention_mask"] = {0: "batch", 1: "samples"}
    out_path = Path(out_path) if out_path is not None else onnx_path_for(model_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on Python-side shape arithmetic
        torch.onnx.export(wrapper, inputs, str(out_path), dynamo=False, opset_version=opset,
                          input_names=names,
                          output_names=["last_hidden_state", "hidden_states"],
                          dynamic_axes=axes, do_constant_folding=True)
    import onnx

    onnx.checker.check_model(str(out_path))
    logger.info("ONNX graph written to %s (opset %d, inputs %s)", out_path, opset, names)
    return out_path


@dataclass
class OnnxParity:
    """Result of :func:`check_onnx_parity`.

    Attributes:
        max_abs_diff: largest ``|onnx - torch|`` over every layer, item and frame.
        max_abs_diff_per_layer: the same per hidden state (index 0 = CNN projection output).
        max_abs_value: largest ``|torch|`` (scale of the compared values).
        batches: ``(batch size, samples)`` of each compared batch.
        atol, rtol: the tolerance checked.
        passed: every element within ``atol + rtol * |torch|``.
    """

    max_abs_diff: float
    max_abs_diff_per_layer: list[float]
    max_abs_value: float
    batches: list[tuple[int, int]] = field(default_factory=list)
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    passed: bool = False


def check_onnx_parity(model_dir: str | Path, waveforms: list[np.ndarray],
                      onnx_path: str | Path | None = None, *, batch_size: int = 3,
                      atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
                      raise_on_failure: bool = True) -> OnnxParity:
    """Compare the student's hidden states from onnxruntime with PyTorch on given audio.

    The waveforms go through the student's feature extractor in padded batches of
    ``batch_size`` (so batch and length both vary), then through ``AutoModel`` (eval mode,
    ``torch.inference_mode``) and the ONNX graph (``CPUExecutionProvider``); every hidden state
    is compared elementwise.

    Args:
        model_dir: the student folder.
        waveforms: 1-D float arrays at the extractor's rate (16 kHz), e.g. from
            :func:`robustdistill.audio.load_audio`.
        onnx_path: default :func:`onnx_path_for`.
        batch_size: items per compared batch (the last batch may be smaller).
        atol, rtol: tolerance, ``|onnx - torch| <= atol + rtol * |torch|``.
        raise_on_failure: raise instead of returning ``passed=False``.

    Raises:
        ValueError: no waveforms, or a waveform that is not 1-D.
        OnnxCheckError: the graph has inputs other than the extractor's (a ValueError).
        FileNotFoundError: no ONNX file.
        AssertionError: outside the tolerance (when ``raise_on_failure``), with the worst
            difference.
    """
    import onnxruntime as ort

    if not waveforms:
        raise ValueError("check_onnx_parity needs at least one waveform")
    bad = [i for i, w in enumerate(waveforms) if np.asarray(w).ndim != 1]
    if bad:
        raise ValueError(f"waveforms must be 1-D (samples,); items {bad} are not")
    model_dir = Path(model_dir)
    onnx_path = Path(onnx_path) if onnx_path is not None else onnx_path_for(model_dir)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path} not found: run export_onnx first")
    model, extractor = _load(model_dir)
    with_mask = _uses_mask(extractor)
    wrapper = _HiddenStates(model, with_mask).eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed_names = {i.name for i in session.get_inputs()}
    rate = int(getattr(extractor, "sampling_rate", 16000))
    per_layer: list[float] = []
    worst_excess = -np.inf
    max_value = 0.0
    batches = []
    for start in range(0, len(waveforms), batch_size):
        chunk = [np.asarray(w, dtype=np.float32) for w in waveforms[start:start + batch_size]]
        feats = extractor(chunk, sampling_rate=rate, padding=True, return_tensors="np",
                          return_attention_mask=with_mask)
        values = feats["input_values"].astype(np.float32)
        feed = {"input_values": values}
        torch_args = [torch.from_numpy(values)]
        if with_mask:
            feed["attention_mask"] = feats["attention_mask"].astype(np.int64)
            torch_args.append(torch.from_numpy(feed["attention_mask"]))
        unknown = set(feed) - feed_names
        if unknown:
            raise OnnxCheckError(f"{onnx_path} has no input(s) {sorted(unknown)}: it was exported "
                             "for a different feature extractor; export it again")
        with torch.inference_mode():
            _, ref = wrapper(*torch_args)
        ref = ref.numpy()
        _, got = session.run(None, feed)
        if got.shape != ref.shape:
            raise AssertionError(f"ONNX hidden states {got.shape} != PyTorch {ref.shape}")
        diff = np.abs(got - ref)
        layer_max = diff.reshape(diff.shape[0], -1).max(axis=1)
        per_layer = (layer_max.tolist() if not per_layer
                     else np.maximum(per_layer, layer_max).tolist())
        worst_excess = max(worst_excess, float((diff - atol - rtol * np.abs(ref)).max()))
        max_value = max(max_value, float(np.abs(ref).max()))
        batches.append(tuple(values.shape))
    result = OnnxParity(max_abs_diff=float(max(per_layer)), max_abs_diff_per_layer=per_layer,
                        max_abs_value=max_value, batches=batches, atol=atol, rtol=rtol,
                        passed=bool(worst_excess <= 0.0))
    logger.info("ONNX parity on %d waveforms (%d batches): max |diff| %.3g (values up to %.3g), "
                "%s", len(waveforms), len(batches), result.max_abs_diff, max_value,
                "passed" if result.passed else "FAILED")
    if raise_on_failure and not result.passed:
        raise AssertionError(
            f"ONNX output differs from PyTorch beyond atol={atol} rtol={rtol}: max |diff| "
            f"{result.max_abs_diff:.3g} (per layer {[f'{d:.3g}' for d in per_layer]})")
    return result


def _receptive_field(model_dir: Path) -> int:
    """Samples in one output frame of the student's CNN (400 for the usual one)."""
    config = json.loads((model_dir / "config.json").read_text())
    field = 1
    for kernel, stride in reversed(list(zip(config.get("conv_kernel", [400]),
                                            config.get("conv_stride", [320]), strict=False))):
        field = (field - 1) * int(stride) + int(kernel)
    return field


def _check_audio(model_dir: Path, audio_dir: str | Path,
                 max_files: int) -> tuple[list[np.ndarray], list[Path]]:
    """The first ``max_files`` usable files under ``audio_dir`` as 16 kHz mono waveforms, and
    their paths; the unusable ones are logged (name and reason) and skipped.

    Raises:
        FileNotFoundError: ``audio_dir`` missing, or no audio file (by extension) in it;
            ``model_dir`` without ``config.json``.
        OnnxCheckError: none of the audio files is usable (a ValueError).
    """
    from ..audio import AudioError, list_audio_files, load_audio

    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: not a saved student folder")
    shortest = _receptive_field(model_dir)
    waveforms, used, skipped = [], [], 0
    for file in list_audio_files(audio_dir):
        if len(used) == max_files:
            break
        try:
            wave = load_audio(file)
            if wave.size < shortest:
                raise AudioError(f"{file}: {wave.size} samples at 16 kHz is shorter than one "
                                 f"frame of the student ({shortest} samples)", "too short")
        except AudioError as err:
            skipped += 1
            logger.warning("ONNX check audio: skipping %s [%s]: %s", file, err.reason, err)
            continue
        waveforms.append(wave)
        used.append(file)
    if not waveforms:
        raise OnnxCheckError(f"no usable audio file under {audio_dir} for the ONNX check "
                         f"({skipped} skipped, see the warnings above)")
    return waveforms, used


def export_and_check(model_dir: str | Path, audio_dir: str | Path | None = None, *,
                     max_files: int = 6, atol: float = DEFAULT_ATOL,
                     rtol: float = DEFAULT_RTOL) -> tuple[Path, OnnxParity]:
    """:func:`export_onnx` to ``MODEL_DIR/onnx/model.onnx``, then :func:`check_onnx_parity`;
    the parity report goes to ``MODEL_DIR/onnx/parity.json`` (read by ``robustdistill card``).

    Args:
        model_dir: the student folder.
        audio_dir: real audio for the check (the first ``max_files`` usable files, sorted,
            any rate, resampled to 16 kHz); a file that cannot be used (unreadable, empty,
            NaN/Inf, silent, shorter than the encoder's receptive field) is skipped with a
            warning naming it. None for three seeded Gaussian-noise signals of 1.0, 2.3 and
            3.7 s.
        max_files: files used from ``audio_dir``.
        atol, rtol: as :func:`check_onnx_parity`.

    Raises:
        AssertionError: parity outside the tolerance (the ONNX file stays, for inspection).
        FileNotFoundError: no model folder, or no audio file under ``audio_dir``.
        OnnxCheckError: no usable audio file under ``audio_dir`` (checked before exporting),
            or a graph exported for another feature extractor (a ValueError).
    """
    model_dir = Path(model_dir)
    if audio_dir is not None:
        waveforms, files = _check_audio(model_dir, audio_dir, max_files)
        audio = f"the first {len(files)} usable files under `{audio_dir}`"
    path = export_onnx(model_dir)
    if audio_dir is None:
        rng = np.random.default_rng(0)
        waveforms = [0.1 * rng.standard_normal(int(s * 16000)).astype(np.float32)
                     for s in (1.0, 2.3, 3.7)]
        audio = "seeded Gaussian noise of 1.0, 2.3 and 3.7 s"
    parity = check_onnx_parity(model_dir, waveforms, path, atol=atol, rtol=rtol)
    report = {"audio": audio, "num_waveforms": len(waveforms), **asdict(parity)}
    (path.parent / "parity.json").write_text(strict_dumps(report, indent=2) + "\n")
    return path, parity
