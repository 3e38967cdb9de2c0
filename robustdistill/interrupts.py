"""Ctrl-C (SIGINT) and SIGTERM in a command: one line saying where the work stopped and how to
go on, no traceback, and the exit status of the signal.

    robustdistill distill: interrupted after step 37 of 60; the newest checkpoint is
    runs/demo/checkpoints/checkpoint_7 (step 35; resume with --resume)

:func:`handled` wraps a command (``robustdistill.cli.main`` wraps every subcommand, and
``python -m robustdistill.se.table`` its own ``main``); a command says what it has done so far
with :func:`note` around its work. The first signal raises ``KeyboardInterrupt`` (SIGTERM:
:class:`Terminated`, a subclass) in the main thread, so the stack unwinds as for Python's own
Ctrl-C: nothing is written on the way out (but see SIGTERM during training, below), and what
was written stays as it is (checkpoints,
cache entries and hidden-state files are published atomically: a write cut short leaves a
temporary name that the next start removes).

Exit status: SIGINT ends the process by SIGINT once the interpreter has shut down (as Python
does for an uncaught ``KeyboardInterrupt``): a shell shows 130, ``subprocess`` a return code of
-2, and a shell loop around the command (``until robustdistill distill ... --resume; do sleep
10; done``) stops as well. An ``exit(130)`` instead would tell bash that the command handled the
Ctrl-C itself, and the loop would start it again. SIGTERM exits with status 143 (128 + 15, what
``accelerate launch`` itself exits with on SIGTERM).

A second signal stops the process at once (the default action, even inside a C call), except
one that comes within :data:`REPEAT_GRACE_S` of the first: that is a launcher passing on the
same Ctrl-C (``accelerate launch`` sends SIGTERM to its child, torchrun's agent the signal it
got; a terminal's Ctrl-C reaches both where the child shares the terminal's process group,
as a one-process launch does; torch 2.13 starts each rank of several in its own session), not
a second one.

On several processes the line is printed by the first launched process only (``RANK`` 0 or
unset): every rank stops on the same signal, and their notes name the same checkpoints.

SIGTERM during training (``distill``, ``train-se``, ``train-speaker``;
``training.save_on_sigterm``, default true): schedulers and launchers send SIGTERM and, after
a grace period, SIGKILL (Slurm's ``KillWait``, 30 s by default; torch elastic's agent, 30 s).
Inside :func:`sigterm_deferred` the first SIGTERM raises nothing: it is only recorded
(:func:`sigterm_pending`), the trainer finishes the optimizer step under way, every process
agrees at its next per-step agreement
(an OR of the flag, riding on a collective the trainer already makes each step), all of them
save a checkpoint of that step through the usual atomic path, and :func:`stop_terminated`
raises :class:`Terminated`, so the command ends as for any SIGTERM (one line naming the
checkpoint saved and how long it took, exit status 143). A process that stops because another
one received the signal ends the same way. An error raised while such a SIGTERM is held is an
error, not the interrupt's consequence. Ctrl-C is never deferred, and a second SIGTERM (or
Ctrl-C) more than :data:`REPEAT_GRACE_S` after the first stops the process at once, as
outside the block. ``train-speaker`` runs in one process: it saves a mid-epoch checkpoint of
the batch finished (``epoch_N_batch_B``) with nothing to agree on. A DataLoader worker started
inside the block outlives a SIGTERM that its trainer process did not send
(:func:`worker_outlives_sigterm`: the signal of a whole process group or job step reaches the
workers too, and the step under way still needs their batches). Before and after the block
(start-up, evaluation, export), and in every other command (``evaluate``, ``cache-teacher``,
``train-speaker``'s ``cache`` and ``gap``), SIGTERM raises at once as above.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

__all__ = ["REPEAT_GRACE_S", "Terminated", "handled", "interrupted", "note", "sigterm_deferred",
           "sigterm_pending", "stop_terminated", "worker_outlives_sigterm",
           "workers_forked"]

logger = logging.getLogger(__name__)

#: Seconds after the first signal in which another is taken for the same interrupt passed on
#: by a launcher, and ignored; any later one stops the process at once.
REPEAT_GRACE_S = 1.0

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The first signal received and when (``time.monotonic()``); None until one comes.
_received: tuple[int, float] | None = None
#: The innermost :func:`note` that an interrupt passed through (None: no note).
_note: str | None = None
#: The signals :func:`handled` handles (those at their default when it started).
_installed: tuple[int, ...] = ()
#: Whether a first SIGTERM is only recorded, not raised (inside :func:`sigterm_deferred`).
_defer_sigterm = False
#: Whether the SIGTERM received is held: recorded, not yet acted upon (:func:`stop_terminated`).
_held = False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's ``KeyboardInterrupt`` (a subclass, so
    code that stops cleanly on Ctrl-C, such as torch's DataLoader workers, does the same)."""


def interrupted() -> int | None:
    """The signal number (``signal.SIGINT`` or ``signal.SIGTERM``) this process was stopped by
    while a :func:`handled` command ran, else None."""
    return None if _received is None else _received[0]


def sigterm_pending() -> bool:
    """Whether, inside an active :func:`sigterm_deferred` block, this process holds a SIGTERM
    not yet acted upon (:func:`stop_terminated`). Cheap: reads module variables, no system
    call."""
    return _defer_sigterm and _held


@contextmanager
def sigterm_deferred(enabled: bool = True) -> Iterator[None]:
    """Inside the block, the first SIGTERM is recorded (:func:`sigterm_pending`) instead of
    raised; the caller stops at a point of its choice with :func:`stop_terminated`.

    Args:
        enabled: False leaves SIGTERM as it is (raised at once: ``training.save_on_sigterm``
            false).

    Does nothing outside :func:`handled`, or where SIGTERM has another program's handler (a
    trainer called from Python). A SIGTERM received before the block has already raised. The
    caller checks :func:`sigterm_pending` last inside the block, after its last step, so that
    a signal that came after its last per-step check is not lost.
    """
    global _defer_sigterm
    if not enabled or signal.getsignal(signal.SIGTERM) is not _on_signal:
        yield
        return
    _defer_sigterm = True
    try:
        yield
    finally:
        _defer_sigterm = False


def stop_terminated() -> NoReturn:
    """Raise :class:`Terminated` for the SIGTERM held by :func:`sigterm_deferred`, or for one
    that another process received (all of them agreed to stop): this process then ends as if
    it had received it (the line, exit status 143).

    Raises:
        Terminated: always.
    """
    global _received, _held
    if _received is None:
        _received = (signal.SIGTERM, time.monotonic())
    _held = False
    raise Terminated


@contextmanager
def workers_forked() -> Iterator[None]:
    """Around the start of a ``DataLoader``'s worker processes: inside an active
    :func:`sigterm_deferred` block the calling thread blocks SIGTERM meanwhile, so the workers
    are forked with it blocked (a SIGTERM to this process waits the few milliseconds and is
    then handled as usual); elsewhere it does nothing. See :func:`worker_outlives_sigterm`."""
    if not _defer_sigterm:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def worker_outlives_sigterm(worker_id: int) -> None:
    """``DataLoader`` ``worker_init_fn``: a worker started inside an active
    :func:`sigterm_deferred` block outlives a SIGTERM sent to every process of the run (a
    scheduler's, ``timeout``'s or a terminal's process group: the trainer still needs its
    batches to finish the step and stop by itself); one sent by its parent (the loader's own
    shutdown) still ends it at once. Elsewhere (option off, other commands) the worker keeps
    torch's handler, which dies of such a signal.

    Without it torch's handler killed the worker with the run's signal, and the parent's
    ``SIGCHLD`` handler raised ``RuntimeError: DataLoader worker ... is killed by signal:
    Terminated`` in the middle of the step: a traceback and exit status 1 in place of the
    checkpoint and 143. The worker still ends when its parent dies (torch's watchdog) or on
    SIGKILL.

    The worker's first thread is forked with SIGTERM blocked (:func:`workers_forked`), so
    every thread the worker starts before this function runs (an OpenMP pool with
    ``OMP_NUM_THREADS`` > 1) blocks it too: the signal waits for the thread started here,
    which sees the sender (a Python signal handler does not), instead of reaching a thread
    where torch's handler dies of it.

    Args:
        worker_id: the worker's index (unused).
    """
    if not _defer_sigterm:  # inherited from the parent (fork) as it was when the worker started
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # (already, when forked so)

    def wait() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)  # torch's worker handler does the same for its parent's SIGTERM

    threading.Thread(target=wait, name="sigterm-from-parent", daemon=True).start()


def _on_signal(signum: int, frame) -> None:
    """The handler of SIGINT and SIGTERM while a command runs."""
    global _received, _held
    if _received is None:
        _received = (signum, time.monotonic())
        if signum == signal.SIGTERM and _defer_sigterm:
            _held = True  # the trainer stops after this step, with a checkpoint
            return
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated
    if time.monotonic() - _received[1] < REPEAT_GRACE_S:
        return  # the same interrupt, passed on by a launcher
    _stop_now(signum)


def _stop_now(signum: int) -> None:
    """End the process by ``signum``'s default action (a second Ctrl-C: no clean-up)."""
    _default_handlers()
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only if the signal is blocked in this thread


def _a_repeat(err: BaseException) -> bool:
    """Whether ``err`` is a ``KeyboardInterrupt`` within :data:`REPEAT_GRACE_S` of the first
    signal (the same interrupt, passed on by a launcher)."""
    return (isinstance(err, KeyboardInterrupt) and _received is not None
            and time.monotonic() - _received[1] < REPEAT_GRACE_S)


def _default_handlers() -> None:
    """Any further SIGINT or SIGTERM ends the process at once, even inside a C call (one
    that was ignored when the command started stays ignored)."""
    for signum in _installed:
        signal.signal(signum, signal.SIG_DFL)


def _is_interrupt(err: BaseException) -> bool:
    """Whether ``err`` ends the command because of an interrupt: a ``KeyboardInterrupt``, or any
    error while a signal was received (a collective failing because another process stopped,
    a DataLoader worker that the terminal's Ctrl-C ended first), unless that signal is a
    SIGTERM still held by :func:`sigterm_deferred` (then the error is the run's own)."""
    return isinstance(err, KeyboardInterrupt) or (_received is not None and not _held)


@contextmanager
def note(describe: Callable[[], str]) -> Iterator[None]:
    """Say where the work inside stopped if an interrupt passes through it.

    Args:
        describe: called once, only on an interrupt, while the exception passes; returns what
            follows ``interrupted`` in the command's line (``after step 37 of 60; the newest
            checkpoint is ... (resume with --resume)``). It must be cheap and must not wait
            for other processes; an error in it leaves the line without a note.

    The innermost note wins (``train-se`` inside ``se.table`` names its own checkpoint). Any
    exception passes through unchanged.
    """
    global _note
    try:
        yield
    except BaseException as err:
        if _note is None and _is_interrupt(err):
            try:
                _note = describe()
            except Exception:  # noqa: BLE001 - the line without a note beats a second traceback
                logger.debug("interrupt note failed", exc_info=True)
        raise


def _print_line(prog: str, signum: int | None) -> None:
    """Close open progress bars (so the line starts on its own line) and print the line."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001,S112 - a bar that cannot close stays as it is
            continue
    what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    gap = "" if not _note or _note[0] in ",;" else " "
    text = " ".join(f"{what}{gap}{_note or ''}".split())  # one line
    if os.environ.get("RANK", "0") == "0":
        print(f"{prog}: {text}", file=sys.stderr, flush=True)


def _quiet_excepthook(previous):
    """A ``sys.excepthook`` for the ``KeyboardInterrupt`` :func:`handled` reported, reached only
    when nothing caught it (the process is ending): prints nothing, and sets SIGINT and SIGTERM
    to their default action, so a second signal while Python shuts down (DataLoader workers,
    TensorBoard) ends the process at once. So does a ``KeyboardInterrupt`` raised within
    :data:`REPEAT_GRACE_S` of the first signal (a launcher's repeat that came after
    :func:`handled` gave the caller's handlers back). Anything else goes to ``previous``."""

    def hook(kind, value, tb):
        if not (getattr(value, "_robustdistill_reported", False) or _a_repeat(value)):
            previous(kind, value, tb)
            return
        _default_handlers()

    hook._robustdistill = True  # installed once
    return hook


@contextmanager
def handled(prog: str) -> Iterator[None]:
    """Run a command with SIGINT and SIGTERM turned into one line and the signal's exit status.

    Installs the handlers while the block runs (main thread only, and only over Python's
    defaults: another program's handler is left alone), and restores the previous ones when the
    block ends, also on a Ctrl-C (a program or notebook that calls ``robustdistill.cli.main``
    and catches the ``KeyboardInterrupt`` keeps its own Ctrl-C).

    On an interrupt (a signal, or a ``KeyboardInterrupt`` raised otherwise) the line
    ``PROG: interrupted [NOTE]`` is printed (``terminated (SIGTERM)`` for SIGTERM) and:

    - SIGINT: the ``KeyboardInterrupt`` is raised on without its traceback (``sys.excepthook``
      is wrapped once to print nothing for it, and to set SIGINT and SIGTERM to their default
      action: a second signal while Python shuts down ends it at once); the interpreter shuts
      down and ends the process by SIGINT (exit status 130 in a shell).
    - SIGTERM: ``SystemExit(143)``; SIGINT and SIGTERM stay at their default action.
    - a ``KeyboardInterrupt`` with no signal (raised by code, e.g. a test): raised on as it is.

    Any other exception passes through unchanged, unless a signal was received (then it is the
    interrupt's consequence and ends the same way).
    """
    global _received, _note, _installed, _held, _defer_sigterm
    _received, _note, _held, _defer_sigterm = None, None, False, False
    installed = {}
    if threading.current_thread() is threading.main_thread():  # where handlers can be set
        for signum in _SIGNALS:
            current = signal.getsignal(signum)
            if current in (signal.default_int_handler, signal.SIG_DFL):
                installed[signum] = current
                signal.signal(signum, _on_signal)
    _installed = tuple(installed)
    terminated = False  # SIGTERM's SystemExit raised
    try:
        yield
    except BaseException as err:
        if not _is_interrupt(err):
            raise
        signum = interrupted()
        if signum is not None:
            _default_handlers()  # while the line is written a second signal ends the process
        _print_line(prog, signum)
        if signum == signal.SIGTERM:
            terminated = True
            raise SystemExit(128 + signum) from None
        if signum is None:
            raise
        # exactly KeyboardInterrupt: the interpreter then ends the process by SIGINT
        stop = err if type(err) is KeyboardInterrupt else KeyboardInterrupt()
        stop._robustdistill_reported = True
        if not getattr(sys.excepthook, "_robustdistill", False):
            sys.excepthook = _quiet_excepthook(sys.excepthook)
        raise stop from None
    finally:
        # the caller's handlers again, also after a Ctrl-C: a notebook or a program that called
        # main() and caught the KeyboardInterrupt gets its next Ctrl-C as before (they were left
        # at SIG_DFL: that Ctrl-C killed it); a process ending on the Ctrl-C gets the default
        # action from the excepthook. SIGTERM's SystemExit ends the process: they stay default.
        if not terminated:
            for signum, previous in installed.items():
                signal.signal(signum, previous)
