"""A command's output whose reader went (``netcfg layers | head -3``): no register, not a command."""

from __future__ import annotations

import contextlib
import os
import select
import sys

__all__ = ["SIGPIPE_EXIT", "quiet_if_reader_gone", "reader_gone", "to_devnull"]

SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what the shell reports for `git log | head`, `yes | head`


def reader_gone(fd: int) -> bool:
    """``fd`` (1: stdout, 2: stderr) is a pipe or socket nobody reads any more."""
    try:
        poller = select.poll()
    except AttributeError:  # no poll (Windows): a broken pipe at the top is taken to be stdout's
        return fd == 1
    with contextlib.suppress(OSError, ValueError):
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    return False


def to_devnull(stream) -> None:
    """Later writes to ``stream`` (Python's own flush at exit among them) go to /dev/null, so a
    closed pipe is not reported again, as 'Exception ignored ... BrokenPipeError'."""
    with contextlib.suppress(OSError, ValueError):
        stream.flush()
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)


def quiet_if_reader_gone() -> bool:
    """After a BrokenPipeError: stdout's or stderr's reader went (True; both now write to
    /dev/null), or the broken pipe was another's (False: a bug to show)."""
    gone = [s for s, fd in ((sys.stdout, 1), (sys.stderr, 2)) if reader_gone(fd)]
    for stream in gone:
        to_devnull(stream)
    return bool(gone)
