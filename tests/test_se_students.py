"""SE framing, the tiny GRU students (sizes, streaming, save/load)."""

import json

import pytest
import torch

from robustdistill.se.stft import StftConfig, frame_signal, make_window, overlap_add
from robustdistill.se.streaming import StreamingEnhancer, enhance_streaming
from robustdistill.se.students import (
    NSNET2_PARAMETERS,
    GRUMaskStudent,
    StudentConfig,
    config_for_ratio,
    count_parameters,
)


def test_causal_frames_by_hand():
    x = torch.arange(1.0, 6.0)[None]  # 5 samples, win 4, hop 2 -> ceil(5/2) + 1 = 4 frames
    f = frame_signal(x, 4, 2)
    assert f.tolist() == [[[0, 0, 1, 2], [1, 2, 3, 4], [3, 4, 5, 0], [5, 0, 0, 0]]]


@pytest.mark.parametrize("win,hop", [(320, 160), (512, 128)])
def test_sqrt_hann_overlap_add_reconstructs(win, hop):
    w = make_window("sqrt_hann", win)
    x = torch.randn(2, 3001, generator=torch.Generator().manual_seed(0))
    y = overlap_add(frame_signal(x, win, hop) * w * w, hop, x.shape[1])
    scale = 1.0 if win // hop == 2 else 0.5  # sum of hann over 4 shifts is 2
    torch.testing.assert_close(y * scale, x, atol=1e-5, rtol=0)


def test_stft_config_errors():
    with pytest.raises(ValueError, match="must divide"):
        StftConfig(win_length=320, hop_length=150)
    with pytest.raises(ValueError, match="unknown window"):
        make_window("hamming", 320)
    with pytest.raises(ValueError, match="n_fft"):
        StftConfig(n_fft=256)
    assert StftConfig().latency_ms == 20.0


def test_student_sizes_for_ratios():
    widths = {r: config_for_ratio(r).hidden_size for r in (16, 32, 63)}
    assert widths == {16: 101, 32: 68, 63: 45}
    for r, h in widths.items():
        n = count_parameters(GRUMaskStudent(StudentConfig(hidden_size=h)))
        assert n == 13 * h * h + 336 * h + 161  # the closed form in the module docstring
        assert NSNET2_PARAMETERS / n >= r
        assert NSNET2_PARAMETERS / (13 * (h + 1) ** 2 + 336 * (h + 1) + 161) < r
    with pytest.raises(ValueError, match="ratio"):
        config_for_ratio(1)
    with pytest.raises(ValueError, match="hidden_size"):
        StudentConfig(hidden_size=0)


def test_student_streaming_equals_whole_file():
    torch.manual_seed(0)
    m = GRUMaskStudent(StudentConfig(hidden_size=16)).eval()
    x = 0.1 * torch.randn(3, 4321)
    with torch.no_grad():
        whole = m(x, return_activations=True)
    assert whole.activations["gru2"].shape == (3, 29, 16)
    for chunk in (7, 160, 1000):
        torch.testing.assert_close(enhance_streaming(m, x, chunk), whole.enhanced,
                                   atol=1e-6, rtol=0)
    s = StreamingEnhancer(m, 3)
    assert s.push(x[:, :100]).shape == (3, 0) and s.delay == 160
    with pytest.raises(ValueError, match="expected \\(3, samples\\)"):
        s.push(torch.zeros(2, 10))


def test_student_save_load_round_trip(tmp_path):
    m = GRUMaskStudent(config_for_ratio(63)).eval()
    m.save_pretrained(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert cfg["hidden_size"] == 45 and cfg["model_type"] == "robustdistill-se-gru-mask"
    m2 = GRUMaskStudent.from_pretrained(tmp_path / "s")
    x = torch.randn(1, 1600)
    with torch.no_grad():
        assert torch.equal(m(x).enhanced, m2(x).enhanced)
    with pytest.raises(FileNotFoundError, match="config.json"):
        GRUMaskStudent.from_pretrained(tmp_path)
