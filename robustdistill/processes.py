"""Processes of a run: refusing a launch a command does not support, saying once why a run
stopped, and ending a multi-process run so that every process exits."""

from __future__ import annotations

import logging
import os
import sys
import time

from accelerate import Accelerator

__all__ = ["STOP_RECORD", "PrintedStopFilter", "finish_processes", "launched_processes",
           "print_stop", "require_single_process"]

#: ``extra`` of the log record of a stop (``logger.error(message, extra=STOP_RECORD)``) that
#: the command then prints with :func:`print_stop`: the command's stderr handler leaves it out
#: (:class:`PrintedStopFilter`), so a terminal shows the stop once; any other handler (a log
#: file) keeps it.
STOP_RECORD = {"printed_stop": True}


class PrintedStopFilter(logging.Filter):
    """Leave out the log records of stops (:data:`STOP_RECORD`) on the handler it is added to:
    a command's stderr handler (``robustdistill.cli``), where :func:`print_stop` shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "printed_stop", False)


def launched_processes() -> int:
    """The number of processes this one was launched among: ``WORLD_SIZE``, which
    ``torchrun`` and ``accelerate launch`` set (1 when unset)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def print_stop(prog: str, message: str, agreed: bool = True) -> None:
    """Print ``PROG: error: MESSAGE`` (whitespace collapsed to one line) on stderr.

    ``agreed``: a stop every process agrees on (unreadable data, non-finite steps), raised by
    each of them with the same message, is printed from the first launched process only
    (``RANK`` 0 or unset), not once per process. ``agreed=False`` (an error one process may
    meet alone, e.g. ``train-se``'s speech crops that can no longer be read) prints from every
    process: the other processes only see a lost peer. A stop the run also logged
    (:data:`STOP_RECORD`) is left out of the command's stderr log (:class:`PrintedStopFilter`):
    this line is the one the terminal shows."""
    if not agreed or os.environ.get("RANK", "0") == "0":
        print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)


def require_single_process(command: str) -> None:
    """Refuse a multi-process launch of a command that runs in one process.

    Such a command launched among N processes would run N times over the same data, the N
    copies writing the same files at once: N times the cost, and files that may be read while
    another process writes them.

    Args:
        command: the command's name, for the message (``robustdistill evaluate``).

    Raises:
        ValueError: launched among more than one process (``WORLD_SIZE`` > 1).
    """
    if (n := launched_processes()) > 1:
        raise ValueError(f"{command} runs in one process, but was launched among {n} "
                         "(torchrun or accelerate launch): run it with python or robustdistill "
                         "directly")

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
