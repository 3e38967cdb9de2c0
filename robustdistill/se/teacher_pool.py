"""A frozen teacher's outputs on a fixed pool of training pairs, computed once.

With ``data.pool_size > 0`` every batch is drawn from the same pool of pairs (see
:class:`~robustdistill.se.data.PairMaker`), so the frozen teacher's outputs and the
activations the recipe distils can be computed once per process and shared by every run in
it (the comparison table trains 45 students on 2 CPU cores). Activations are stored in
float16 (about 1e-3 relative precision; the enhanced waveform in float32).
"""

from __future__ import annotations

import torch

from .teachers.base import FrameModel, SEOutput

__all__ = ["PooledTeacher", "pooled_teacher"]

_CACHE: dict[tuple, PooledTeacher] = {}


class PooledTeacher:
    """Teacher outputs on a pool, looked up by pool index.

    Args:
        teacher: the frozen frame model.
        inputs: ``(P, N)`` pool waveforms the teacher sees (noisy or clean).
        layers: activation names to keep.
        keep_enhanced: also keep the enhanced waveforms.
        chunk: pool items per teacher forward.

    Raises:
        KeyError: a name of ``layers`` is not among the teacher's activations.
    """

    def __init__(self, teacher: FrameModel, inputs: torch.Tensor, layers: tuple[str, ...],
                 keep_enhanced: bool, chunk: int = 32):
        enhanced, acts = [], {name: [] for name in layers}
        with torch.no_grad():
            for i in range(0, inputs.shape[0], chunk):
                out = teacher(inputs[i: i + chunk], return_activations=True)
                if keep_enhanced:
                    enhanced.append(out.enhanced.float())
                for name in layers:
                    if name not in out.activations:
                        raise KeyError(f"teacher has no activation {name!r}; it has "
                                       f"{sorted(out.activations)}")
                    acts[name].append(out.activations[name].half())
        self.enhanced = torch.cat(enhanced) if keep_enhanced else None
        self.activations = {k: torch.cat(v) for k, v in acts.items()}

    def __call__(self, indices: torch.Tensor, device=None) -> SEOutput:
        """:class:`SEOutput` of the items ``indices`` ``(B,)`` (activations as float32)."""
        enh = self.enhanced[indices].to(device) if self.enhanced is not None else None
        acts = {k: v[indices].float().to(device) for k, v in self.activations.items()}
        return SEOutput(enh, acts, None)


def pooled_teacher(key: tuple, teacher: FrameModel, inputs: torch.Tensor,
                   layers: tuple[str, ...], keep_enhanced: bool) -> PooledTeacher:
    """The :class:`PooledTeacher` for ``key`` (built on first use, then reused in-process).

    Args:
        key: identifies the pool and the teacher (the caller's: ``inputs`` is not hashed, so
            ``key`` must determine it).
        teacher, layers, keep_enhanced: see :class:`PooledTeacher`.
        inputs: ``(P, N)`` pool waveforms the teacher sees.

    Raises:
        KeyError: see :class:`PooledTeacher`.
    """
    full = (*key, tuple(sorted(layers)), keep_enhanced)
    if full not in _CACHE:
        _CACHE[full] = PooledTeacher(teacher, inputs, tuple(layers), keep_enhanced)
    return _CACHE[full]
