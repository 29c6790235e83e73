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
        self._held = False  # between hold() and release(): a second Ctrl-C counts as the first

    def _handler(self, signum, frame) -> None:
        if self.requested and not self._held:
            raise KeyboardInterrupt
        self.requested = True  # no printing here: the handler may interrupt a print

    def hold(self) -> None:
        """Until ``release()``, a second Ctrl-C only asks to stop after the iteration, as the
        first did: an optimizer update stopped half way would leave a mix of old and new
        weights, and one stopped before the iteration is counted would be trained again."""
        self._held = True

    def release(self) -> None:
        self._held = False

    def __enter__(self) -> StopAfterIteration:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
