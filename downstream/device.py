"""Checking a ``--device`` before any work: one line naming the device, not a traceback after
the upstream has loaded and every file was decoded."""

from __future__ import annotations

import torch

from robustdistill.messages import first_line

__all__ = ["check_device"]


def check_device(device: str) -> None:
    """Check, before any work, that torch can put a tensor on ``device``.

    Raises:
        ValueError: not a torch device name (``gpu``), or one this torch or machine cannot use
            (``cuda`` on a CPU-only torch or without a GPU, ``cuda:3`` with fewer GPUs, ``mps``
            off a Mac): one line naming the device, with torch's reason.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, "
                         "mps)") from None
    try:
        torch.zeros(1, device=parsed)  # allocates and runs a kernel: a bad ordinal fails here
    except (AssertionError, RuntimeError) as err:  # "Torch not compiled with CUDA enabled"...
        reason = first_line(err) or type(err).__name__
        reason = reason.split(". ")[0]  # torch's dispatcher lists every backend after this
        raise ValueError(f"--device {device!r} cannot be used here: {reason} (torch "
                         f"{torch.__version__}, CUDA available: {torch.cuda.is_available()}); "
                         "use --device cpu or a device this machine has") from None
