"""Caffe's SIGINT action: the first Ctrl-C lets the running iteration finish, a second stops at once."""

from __future__ import annotations

import signal
import threading

__all__ = ["StopAfterIteration"]


class StopAfterIteration:
    """Context manager; ``requested`` turns true at the first Ctrl-C.

    Only installed where Python's own handler is in place (main thread, no
    handler of the caller's); elsewhere Ctrl-C raises KeyboardInterrupt as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True  # no printing here: the handler may interrupt a print

    def __enter__(self) -> StopAfterIteration:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
