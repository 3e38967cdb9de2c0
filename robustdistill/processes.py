"""Ending a multi-process run so that every process exits."""

from __future__ import annotations

import time

from accelerate import Accelerator

__all__ = ["finish_processes"]

#: How long the main thread releases the GIL before the process group is torn down (seconds).
SETTLE_S = 0.1


def finish_processes(acc: Accelerator) -> None:
    """Wait for every process, let the collective backend retire its last work, then destroy
    the process group (``Accelerator.end_training``).

    torch's gloo backend frees a finished collective (and the Python tensors it holds) on its
    own work-loop thread, which needs the GIL for that. If the main thread tears the process
    group down first, it joins that thread while holding the GIL and both wait forever: a rank
    that finished its run but never exited (seen once in CI, 2026-12-06, after a 2-process
    run's final barrier). Sleeping releases the GIL so the work loop finishes first. One
    process: nothing to wait for.
    """
    acc.wait_for_everyone()
    if acc.num_processes > 1:
        time.sleep(SETTLE_S)
    acc.end_training()
