"""A frozen teacher's outputs on a fixed pool of training pairs, computed once.

With ``data.pool_size > 0`` every batch is drawn from the same pool of pairs (see
:class:`~robustdistill.se.data.PairMaker`), so the frozen teacher's outputs and the
activations the recipe distils can be computed once per process and shared by every run in
it (the comparison table trains 45 students on 2 CPU cores). Activations are stored in
float16 (about 1e-3 relative precision; the enhanced waveform in float32).

A run that no longer reads its teacher (``two_step`` from ``loss.kd_steps`` on) drops the
pool's outputs with :func:`release_pooled`; inside :func:`shared_pools` (the comparison table,
whose later runs of the same recipe read the same outputs) they stay cached instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .teachers.base import FrameModel, SEOutput

__all__ = ["PooledTeacher", "pooled_teacher", "release_pooled", "shared_pools"]

_CACHE: dict[tuple, PooledTeacher] = {}
_SHARED = [0]  # open shared_pools() blocks


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
        self._items = inputs.shape[0]

    def __len__(self) -> int:
        """The pool's items ``P``."""
        return self._items

    @property
    def nbytes(self) -> int:
        """Bytes of the kept outputs (the enhanced waveforms and the activations)."""
        return sum(t.untyped_storage().nbytes() for t in
                   [*([self.enhanced] if self.enhanced is not None else []),
                    *self.activations.values()])

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


def release_pooled(pooled: PooledTeacher) -> bool:
    """Drop ``pooled`` from the in-process cache (so that it is freed once its caller drops
    it too), unless a :func:`shared_pools` block is open; returns whether it was dropped (a
    later :func:`pooled_teacher` of its key computes it again)."""
    if _SHARED[0]:
        return False
    for key in [k for k, v in _CACHE.items() if v is pooled]:
        del _CACHE[key]
    return True


@contextlib.contextmanager
def shared_pools() -> Iterator[None]:
    """Keep every pool's outputs cached for the block's later runs, even those a run released
    (:func:`release_pooled`): for a process that trains several students on the same pool and
    teacher (``python -m robustdistill.se.table``), at the cost of holding them between
    runs."""
    _SHARED[0] += 1
    try:
        yield
    finally:
        _SHARED[0] -= 1
