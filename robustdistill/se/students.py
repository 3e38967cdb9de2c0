"""Tiny causal SE students: NSNet2-shaped GRU mask networks of GRU width ``H``.

Same front end as the NSNet2 teacher (log10 power of a 20 ms / 10 ms STFT, 161 bins), so
teacher and student activations are frame-aligned for distillation:
Linear(161, H) + ReLU -> GRU(H) x L -> Linear(H, H) + ReLU -> Linear(H, 161) + sigmoid, a gain
per bin (floored at ``min_gain_db``) applied to the noisy spectrum. Parameters:
``L=2: 13 H^2 + 336 H + 161`` (NSNet2: ``H = 400``). :func:`config_for_ratio` picks the
widest student at most ``1/ratio`` of the teacher's size (16x -> H 101, 32x -> H 68,
63x -> H 45 for NSNet2's 2,687,561 parameters). Causal: algorithmic latency one window (20 ms).

Saved as a folder: ``config.json`` + ``model.safetensors`` (``save_pretrained`` /
``from_pretrained``, like ``transformers``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .stft import StftConfig, make_window
from .teachers.base import FrameModel
from .teachers.nsnet2 import log_power

__all__ = ["StudentConfig", "GRUMaskStudent", "config_for_ratio", "count_parameters",
           "NSNET2_PARAMETERS", "student_activation_names"]

#: Parameters of the NSNet2 16 kHz teacher (the reference for the compression ratios).
NSNET2_PARAMETERS = 2_687_561


@dataclass
class StudentConfig:
    """A student's shape.

    Attributes:
        hidden_size: GRU width ``H`` (> 0); NSNet2 has 400.
        num_layers: stacked GRUs (>= 1; NSNet2 has 2).
        min_gain_db: lower limit of the gain in dB (NSNet2: -80).
        stft: the framing (default NSNet2's with the periodic, perfectly reconstructing window).

    Raises:
        ValueError: (on construction) ``hidden_size`` or ``num_layers`` below 1, or ``stft``
            values :class:`StftConfig` rejects.
        TypeError: an ``stft`` dict with a key :class:`StftConfig` does not have.
    """

    hidden_size: int = 64
    num_layers: int = 2
    min_gain_db: float = -80.0
    stft: StftConfig = field(default_factory=StftConfig)

    def __post_init__(self) -> None:
        if isinstance(self.stft, dict):
            self.stft = StftConfig(**self.stft)
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {self.hidden_size}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")

    def to_dict(self) -> dict:
        """JSON-ready dict (``config.json``)."""
        return {"model_type": "robustdistill-se-gru-mask", **asdict(self)}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def _params(h: int, layers: int, bins: int) -> int:
    return (bins * h + h) + layers * (6 * h * h + 6 * h) + (h * h + h) + (h * bins + bins)


def config_for_ratio(ratio: float, teacher_parameters: int = NSNET2_PARAMETERS,
                     num_layers: int = 2, **kwargs) -> StudentConfig:
    """The widest student with at most ``teacher_parameters / ratio`` parameters.

    Args:
        ratio: compression factor (> 1), e.g. 16, 32, 63.
        teacher_parameters: the teacher's size (default NSNet2's).
        num_layers, kwargs: passed to :class:`StudentConfig`.

    Raises:
        ValueError: ``ratio <= 1`` or no width fits.
    """
    if not ratio > 1:
        raise ValueError(f"ratio must be > 1, got {ratio}")
    stft = kwargs.get("stft", StftConfig())
    budget = teacher_parameters / ratio
    h = 1
    while _params(h + 1, num_layers, stft.num_bins) <= budget:
        h += 1
    if _params(h, num_layers, stft.num_bins) > budget:
        raise ValueError(f"no student fits {budget:.0f} parameters")
    return StudentConfig(hidden_size=h, num_layers=num_layers, **kwargs)


def student_activation_names(num_layers: int) -> tuple[str, ...]:
    """The activations of a :class:`GRUMaskStudent` with ``num_layers`` GRUs, in order."""
    return ("features", "fc_in", *(f"gru{i + 1}" for i in range(num_layers)), "fc_hidden",
            "mask")


class GRUMaskStudent(FrameModel):
    """Causal GRU mask student (see the module docstring).

    Activations (``(B, K, D)``): ``features`` (161), ``fc_in`` (H), ``gru1`` .. ``gruL`` (H),
    ``fc_hidden`` (H), ``mask`` (161). State: a tuple of ``L`` tensors ``(1, B, H)``.
    """

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        self.stft = config.stft
        h, bins = config.hidden_size, config.stft.num_bins
        self.min_gain = 10.0 ** (config.min_gain_db / 20.0)
        self.fc_in = nn.Linear(bins, h)
        self.grus = nn.ModuleList(nn.GRU(h, h, batch_first=True)
                                  for _ in range(config.num_layers))
        self.fc_hidden = nn.Linear(h, h)
        self.fc_mask = nn.Linear(h, bins)
        self.register_buffer("window", make_window(config.stft.window, config.stft.win_length),
                             persistent=False)
        self.activation_names = student_activation_names(config.num_layers)

    def initial_state(self, batch_size: int) -> tuple:
        """``L`` zero tensors ``(1, B, H)``."""
        z = torch.zeros(1, batch_size, self.config.hidden_size, device=self.fc_in.weight.device)
        return tuple(z.clone() for _ in self.grus)

    def mask_from_features(self, feats: torch.Tensor, state: tuple | None = None):
        """``(B, K, 161)`` log power -> ``(mask (B, K, 161), state, activations)``."""
        state = state if state is not None else self.initial_state(feats.shape[0])
        acts = {"features": feats}
        x = torch.relu(self.fc_in(feats))
        acts["fc_in"] = x
        new_state = []
        for i, (gru, h) in enumerate(zip(self.grus, state, strict=True)):
            x, h = gru(x, h)
            acts[f"gru{i + 1}"] = x
            new_state.append(h)
        x = torch.relu(self.fc_hidden(x))
        acts["fc_hidden"] = x
        mask = torch.sigmoid(self.fc_mask(x))
        acts["mask"] = mask
        return mask, tuple(new_state), acts

    def process_frames(self, frames, state=None, return_activations=False):
        """``(B, K, win)`` frames -> ``(B, K, win)`` windowed synthesis frames."""
        n_fft, win = self.stft.n_fft, self.stft.win_length
        spec = torch.fft.rfft(frames * self.window, n=n_fft)
        mask, state, acts = self.mask_from_features(log_power(spec), state)
        gain = mask.clamp(min=self.min_gain, max=1.0)
        out = torch.fft.irfft(spec * gain, n=n_fft)[..., :win]
        return out * self.window, state, (acts if return_activations else {})

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (created)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> GRUMaskStudent:
        """Load a folder written by :meth:`save_pretrained` (in ``eval`` mode).

        Raises:
            FileNotFoundError: ``config.json`` or ``model.safetensors`` missing.
            ValueError: the config is not a GRU mask student's.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in ("config.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: no {name} (not an SE student folder)")
        cfg = json.loads((folder / "config.json").read_text())
        if cfg.pop("model_type", None) != "robustdistill-se-gru-mask":
            raise ValueError(f"{folder}/config.json is not a robustdistill SE student's")
        model = cls(StudentConfig(**cfg))
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model.eval()

    def compression(self, teacher_parameters: int = NSNET2_PARAMETERS) -> float:
        """Teacher parameters / own parameters."""
        return teacher_parameters / count_parameters(self)

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency (window, no lookahead) in ms."""
        return self.stft.latency_ms

