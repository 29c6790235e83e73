"""How a command stops on a signal, without importing torch (the CLI's entry uses it).

Ctrl-C exits 130 and SIGTERM 143 (128 + the signal's number, as a shell reports them).
Inside the training loop ``solver.interrupt.StopAfterIteration`` takes both over: the
iteration finishes and a snapshot is written.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["EXIT_CODES", "Terminated", "raise_terminated", "sigterm_stops"]

EXIT_CODES = {"Ctrl-C": 130, "SIGTERM": 143}


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (start-up, the last test): stops the command as
    Ctrl-C does, with a message and exit code 143 instead of a silent death."""


def raise_terminated(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_stops():
    """While a command runs (the CLI's main): SIGTERM raises ``Terminated``. Left alone
    outside the main thread or where the caller installed its own handler."""
    mine = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    if mine:
        signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        if mine:  # Python's exit handlers run after this: a SIGTERM there ends the process quietly
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
