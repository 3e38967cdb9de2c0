"""The contract every SE model (teacher or student) follows, and a hook-based adapter.

A *frame model* turns causal analysis frames into synthesis frames, carrying its recurrent
state; whole-file enhancement is ``frame_signal -> process_frames -> overlap_add`` and
streaming is the same call one frame at a time (see :mod:`robustdistill.se.streaming`), so the
two agree exactly. Teachers expose intermediate activations by name for distillation.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from torch import nn

from ...audio import require_float_audio
from ..stft import StftConfig, frame_signal, overlap_add

__all__ = ["SEOutput", "FrameModel", "HookedTeacher"]


@dataclass
class SEOutput:
    """Output of an SE model on whole waveforms.

    Attributes:
        enhanced: ``(B, N)`` enhanced waveforms, aligned with the input.
        activations: name -> ``(B, K, D)`` per-frame activations (``K`` STFT frames), or
            ``(B, C, K, F)`` for time-frequency maps; empty unless asked for.
        state: the recurrent state after the last frame (model-specific tuple).
    """

    enhanced: torch.Tensor
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    state: tuple | None = None


class FrameModel(nn.Module):
    """Base class of causal frame-by-frame SE models.

    Subclasses set ``self.stft`` (:class:`~robustdistill.se.stft.StftConfig`) and implement
    :meth:`process_frames`. ``activation_names`` lists what ``return_activations`` yields.
    """

    stft: StftConfig
    activation_names: tuple[str, ...] = ()

    def process_frames(self, frames: torch.Tensor, state: tuple | None = None,
                       return_activations: bool = False
                       ) -> tuple[torch.Tensor, tuple, dict[str, torch.Tensor]]:
        """Analysis frames ``(B, K, win)`` -> synthesis frames ``(B, K, win)`` (already
        multiplied by the synthesis window), the state after frame ``K - 1``, activations.

        Raises:
            NotImplementedError: on the base class (subclasses implement it).
        """
        raise NotImplementedError

    def initial_state(self, batch_size: int) -> tuple:
        """The zero state for ``batch_size`` streams.

        Raises:
            NotImplementedError: on the base class (subclasses implement it).
        """
        raise NotImplementedError

    def forward(self, noisy: torch.Tensor, return_activations: bool | Collection[str] = False,
                state: tuple | None = None, trained_outputs: bool = True) -> SEOutput:
        """Enhance whole waveforms.

        Args:
            noisy: ``(B, N)`` waveforms at ``self.stft.sample_rate`` Hz (or ``(N,)``).
            return_activations: also return the per-frame activations: all of them (True), or
                only those named (a collection of names, or one name as a string).
            state: recurrent state to start from (default: zeros).
            trained_outputs: False returns ``enhanced`` and ``state`` detached. A training step
                whose loss reads only activations says so, so that DDP (which looks for the
                parameters a step trains in the graph of what ``forward`` returns) does not
                wait for gradients of the layers after them.

        Returns:
            :class:`SEOutput` with ``enhanced`` of the input's shape.

        Raises:
            ValueError: input not 1-D/2-D or empty; integer (or bool) input, e.g. int16 PCM,
                which would be enhanced as samples of +-32768 (scale it to [-1, 1) first with
                :func:`robustdistill.audio.prepare_waveform`); a floating dtype other than the
                model's parameters' (e.g. float64 input to a float32 model: cast one of them).
            KeyError: a name in ``return_activations`` the model does not have (the message
                lists those it has).
        """
        squeeze = noisy.dim() == 1
        x = noisy.unsqueeze(0) if squeeze else noisy
        if x.dim() != 2 or x.shape[-1] == 0:
            raise ValueError(f"expected (batch, samples) audio, got shape {tuple(noisy.shape)}")
        require_float_audio(x)
        param = next(self.parameters(), None)
        if param is not None and x.dtype != param.dtype:
            raise ValueError(f"audio is {x.dtype} but the model's parameters are {param.dtype}: "
                             f"cast one of them (e.g. noisy.to({param.dtype}))")
        if isinstance(return_activations, str):  # one name, not its letters
            return_activations = (return_activations,)
        frames = frame_signal(x, self.stft.win_length, self.stft.hop_length)
        out, new_state, acts = self.process_frames(frames, state, bool(return_activations))
        if not isinstance(return_activations, bool):
            unknown = [name for name in return_activations if name not in acts]
            if unknown:
                raise KeyError(f"no activation(s) {unknown}; this model has {list(acts)}")
            acts = {name: acts[name] for name in return_activations}
        y = overlap_add(out, self.stft.hop_length, x.shape[-1])
        if not trained_outputs:
            y, new_state = y.detach(), tuple(s.detach() for s in new_state)
        return SEOutput(y[0] if squeeze else y, acts, new_state)


class HookedTeacher(nn.Module):
    """Any torch SE model as a teacher: activations captured by name with forward hooks.

    The wrapped model maps ``(B, N)`` noisy waveforms to ``(B, N)`` enhanced waveforms (or a
    tuple/dataclass whose first item is that). Each named submodule's output (first item of a
    tuple, e.g. a GRU's sequence output) is captured; it must be ``(B, K, D)`` or
    ``(B, C, K, F)`` with ``K`` frames at the student's hop for distillation to line up.

    Args:
        model: the SE model (frozen here: ``eval()`` and ``requires_grad_(False)``).
        layers: names from ``model.named_modules()``.
        stft: the model's framing (for the frame count); default 20 ms / 10 ms at 16 kHz.

    Raises:
        KeyError: a layer name that ``model`` does not have (the message lists valid ones).
    """

    def __init__(self, model: nn.Module, layers: list[str], stft: StftConfig | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.stft = stft or StftConfig()
        modules = dict(model.named_modules())
        missing = [n for n in layers if n not in modules]
        if missing:
            raise KeyError(f"no submodule(s) {missing} in the model; known: {sorted(modules)[:30]}")
        self.activation_names = tuple(layers)
        self._captured: dict[str, torch.Tensor] = {}
        for name in layers:
            modules[name].register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            self._captured[name] = output[0] if isinstance(output, tuple) else output
        return hook

    def forward(self, noisy: torch.Tensor, return_activations: bool = False,
                state: tuple | None = None) -> SEOutput:
        """``(B, N)`` -> :class:`SEOutput` with the hooked activations (state not carried)."""
        self._captured = {}
        out = self.model(noisy)
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = getattr(out, "enhanced", out)
        acts = dict(self._captured) if return_activations else {}
        return SEOutput(out, acts, None)
