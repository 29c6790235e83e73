"""A rich progress bar for training on a terminal; plain log lines otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def training_progress(max_iter: int, write_log: Callable[[str], None]) -> Iterator[tuple[Callable, Callable | None]]:
    """Yield ``(log, on_step)``: ``log`` prints a line (above the bar on a terminal)
    and records it; ``on_step`` advances the bar, or is None when not a terminal."""
    if not sys.stdout.isatty():
        def log(line: str) -> None:
            print(line, flush=True)
            write_log(line)

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
        write_log(line)

    def on_step(solver, loss: float) -> None:
        now = time.perf_counter()
        if state["it"] is None:
            progress.update(task, completed=solver.iter)
        rate = solver.spec.data.train.batch_size * solver.spec.iter_size / max(now - state["t"], 1e-9)
        state.update(t=now, it=solver.iter)
        progress.update(task, completed=solver.iter, loss=loss, lr=solver.lr(max(solver.iter - 1, 0)), rate=rate)

    with progress:
        yield log, on_step
