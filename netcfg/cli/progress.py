"""A rich progress bar for training on a terminal; plain log lines otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator


def _stdout_gone(e: OSError) -> None:
    """Training goes on when its stdout can no longer be written: the run, its snapshots and
    train.log are what matter, and a run that died of ``netcfg train ... | head`` left no
    snapshot. Later writes (Python's own flush at exit among them) go to /dev/null."""
    from netcfg.cli.pipes import to_devnull

    to_devnull(sys.stdout)
    with contextlib.suppress(OSError, ValueError):  # stderr may be the same closed pipe (2>&1 | head)
        print(f"netcfg train: stdout cannot be written ({e.strerror or e}); training goes on, "
              "its log in the run directory's train.log", file=sys.stderr, flush=True)


@contextlib.contextmanager
def training_progress(max_iter: int) -> Iterator[tuple[Callable, Callable | None]]:
    """Yield ``(log, on_step)``: ``log`` prints a line (above the bar on a terminal; the Solver
    writes it to train.log); ``on_step`` advances the bar, or is None when not a terminal."""
    if not sys.stdout.isatty():
        shown = [True]  # stdout still takes lines

        def log(line: str) -> None:
            if shown[0]:
                try:
                    print(line, flush=True)
                except OSError as e:  # the pipe's reader went (| head, | grep -m1) or the disk is full
                    shown[0] = False
                    _stdout_gone(e)

        yield log, None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("iter {task.completed}/{task.total}"), BarColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.3g}  {task.fields[rate]:,.0f} img/s"),
                        TimeRemainingColumn(), transient=True)
    task = progress.add_task("train", total=max_iter, loss=float("nan"), lr=0.0, rate=0.0)
    state = {"t": time.perf_counter(), "it": None}

    def log(line: str) -> None:
        progress.console.print(line, markup=False, highlight=False)

    def on_step(solver, loss: float) -> None:
        now = time.perf_counter()
        if state["it"] is None:
            progress.update(task, completed=solver.iter)
        rate = solver.spec.data.train.batch_size * solver.spec.iter_size / max(now - state["t"], 1e-9)
        state.update(t=now, it=solver.iter)
        progress.update(task, completed=solver.iter, loss=loss, lr=solver.lr(max(solver.iter - 1, 0)), rate=rate)

    with progress:
        yield log, on_step
