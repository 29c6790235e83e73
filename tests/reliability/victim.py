"""Starts ``netcfg train`` processes for the kill -9 tests, slowed so that a kill can land anywhere.

    python tests/reliability/victim.py

reads one JSON request a line, ``{"step": s, "write": s, "slow": text, "args": [...], "log": path}``,
forks a process that runs ``netcfg train ARGS`` (through the console entry point,
output to ``log``) and prints its pid. Forking from this warm process saves each
trial the seconds of importing torch; children are reaped by the kernel
(SIGCHLD ignored), so a killed one is gone at once.

A child sleeps ``step`` seconds after each iteration, and in the middle of every
file written through ``atomic_write_bytes`` whose temporary name contains ``slow``
(half the bytes on disk, flushed, then ``write`` seconds, then the rest). Only this test driver slows netcfg down;
netcfg itself has no such hook.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import sys
import time
import traceback

import torch

torch.set_num_threads(1)  # as the in-process runs it is compared with; before any op, so no thread pool yet

from netcfg.cli.app import main  # noqa: E402
from netcfg.data.sources import _digits  # noqa: E402
from netcfg.solver import checkpoint, runner  # noqa: E402


class _SlowFile:
    def __init__(self, f, delay: float):
        self._f, self._delay = f, delay

    def write(self, data):
        half = len(data) // 2
        self._f.write(data[:half])
        self._f.flush()
        time.sleep(self._delay)
        return half + self._f.write(data[half:])

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _child(step: float, write: float, slow: str, args: list[str], log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def slow_open(path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        return _SlowFile(f, write) if "w" in mode and ".tmp-" in str(path) and slow in str(path) else f

    checkpoint.open = slow_open  # a module global shadows the builtin inside atomic_write_bytes
    train_step = runner.Solver._train_step

    def slow_step(self):
        out = train_step(self)
        time.sleep(step)
        return out

    runner.Solver._train_step = slow_step
    try:
        main(["train", *args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # a bug: its traceback goes to the log, for the test to show
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    # what every child needs, imported and decoded once: the layer registry, the data
    # sources and the data set, the progress bar, dynamo (no torch op runs: no thread pool to fork)
    import netcfg.cli.progress  # noqa: F401
    import torch._dynamo  # noqa: F401  (torch.optim imports it on the first optimizer: 1-2 s)
    from netcfg.data.registry import source_types
    from netcfg.layers._registry import registry

    registry()
    source_types()
    _digits()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # no zombies: a killed child's pid is free at once
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request["step"], request["write"], request["slow"], request["args"], request["log"])
        print(pid, flush=True)


if __name__ == "__main__":
    serve()
