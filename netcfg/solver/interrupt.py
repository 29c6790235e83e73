"""Caffe's SIGINT action: the first Ctrl-C lets the running iteration finish, a second stops at once.

SIGTERM, what a scheduler (SLURM, Kubernetes, ``timeout``, torchrun stopping its
workers) sends before it kills a job, is taken the same way, so a preempted run
leaves a snapshot to resume from instead of dying mid-iteration.
"""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path

from netcfg.errors import NetcfgError
from netcfg.stop import EXIT_CODES, NAMES, Terminated, raise_stopped

__all__ = ["StopAfterIteration", "Interrupted", "EXIT_CODES", "Terminated"]


class StopAfterIteration:
    """Context manager; ``requested`` turns true at the first Ctrl-C or SIGTERM, and ``by``
    says which (``"Ctrl-C"`` or ``"SIGTERM"``).

    Only installed where Python's own handlers are in place (main thread, no handler
    of the caller's); elsewhere Ctrl-C raises KeyboardInterrupt and SIGTERM kills, as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self.by: str | None = None
        self._previous: dict[int, object] = {}
        self._held = False  # between hold() and release(): a second Ctrl-C counts as the first

    def _handler(self, signum, frame) -> None:
        if self.requested and not self._held:
            raise KeyboardInterrupt
        self.requested = True  # no printing here: the handler may interrupt a print
        self.by = self.by or NAMES.get(signum, "Ctrl-C")

    def hold(self) -> None:
        """Until ``release()``, a second Ctrl-C only asks to stop after the iteration, as the
        first did: an optimizer update stopped half way would leave a mix of old and new
        weights, and one stopped before the iteration is counted would be trained again."""
        self._held = True

    def release(self) -> None:
        self._held = False

    def __enter__(self) -> StopAfterIteration:
        if threading.current_thread() is threading.main_thread():
            for signum, defaults in ((signal.SIGINT, (signal.default_int_handler, raise_stopped)),
                                     (signal.SIGTERM, (signal.SIG_DFL, raise_stopped))):
                if signal.getsignal(signum) in defaults:
                    self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


class Interrupted(NetcfgError):
    """Ctrl-C or SIGTERM: a snapshot was written (when possible) and training stopped."""

    exit_code = 130

    def __init__(self, message: str, by: str = "Ctrl-C"):
        super().__init__(message)
        self.exit_code = EXIT_CODES[by]  # 130 for Ctrl-C, 143 for SIGTERM, as a shell shows them

    @classmethod
    def after(cls, it: int, snapshot: Path, config: Path, by: str, launcher: str = "netcfg") -> Interrupted:
        """The error of a run stopped by ``by`` at iteration ``it``, with the command that resumes it
        (``launcher``: how it was started, ``launch.launcher()``)."""
        state = shlex.quote(str(snapshot.with_suffix(".solverstate")))
        return cls(f"interrupted ({by}) at iteration {it}; snapshot written: {snapshot}. "
                   f"Resume with: {launcher} train {shlex.quote(str(config))} --resume {state}", by)
