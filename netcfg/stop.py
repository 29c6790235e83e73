"""How a command stops on a signal, without importing torch (the CLI's entry uses it).

Ctrl-C exits 130 and SIGTERM 143 (128 + the signal's number, as a shell reports them),
with one line on stderr, whenever the signal comes: while Python imports typer or
torch, while a command starts, or in the last test. Inside the training loop
``solver.interrupt.StopAfterIteration`` takes both over: the iteration finishes and
a snapshot is written.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

from netcfg.errors import NetcfgError

__all__ = ["EXIT_CODES", "NAMES", "Terminated", "exits_when_stopped", "raise_stopped", "signals_stop"]

EXIT_CODES = {"Ctrl-C": 130, "SIGTERM": 143}
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

received: str | None = None  # the signal that stopped this command, once one came outside the loop


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (start-up, the last test): stops the command as
    Ctrl-C does, with a message and exit code 143 instead of a silent death."""


def raise_stopped(signum, frame) -> None:
    """The handler of both signals while a command runs: notes which came, and raises."""
    global received
    received = NAMES[signum]
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


@contextlib.contextmanager
def signals_stop():
    """While a command runs (the CLI's main): Ctrl-C and SIGTERM raise through
    ``raise_stopped``. Left alone outside the main thread, where the caller installed a
    handler of its own, and for a signal the shell made the process ignore."""
    global received
    mine = []
    if threading.current_thread() is threading.main_thread():
        for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(signum) is default:
                signal.signal(signum, raise_stopped)
                mine.append((signum, default))
    if mine:
        received = None  # a command run before in this process (tests) was stopped, not this one
    try:
        yield
    finally:
        for signum, default in mine:  # Python's exit handlers run after this: a SIGTERM there ends it quietly
            signal.signal(signum, default)


@contextlib.contextmanager
def exits_when_stopped():
    """Turns a KeyboardInterrupt into ``interrupted (Ctrl-C)`` on stderr and SystemExit(130)
    (143 for SIGTERM). So does any error raised after a signal came: Ctrl-C in the middle of
    an import leaves a half-loaded module, and numpy then fails with ImportError or
    RecursionError, which the user did not cause and need not read. A NetcfgError passes:
    it is the command's own message (``Interrupted``, with its snapshot, among them)."""
    try:
        yield
    except NetcfgError:
        raise
    except (KeyboardInterrupt, Exception) as e:
        by = received
        if by is None and isinstance(e, KeyboardInterrupt):  # raised by a handler not ours, or by hand
            by = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
        if by is None:
            raise
        print(f"interrupted ({by})", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODES[by]) from None
