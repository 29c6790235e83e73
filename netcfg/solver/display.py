"""What the training loop says: its log (printed and in train.log), solve()'s opening lines, and every
``display`` iterations the smoothed loss as a log line and a metrics.jsonl record (mirrored to TensorBoard)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netcfg.solver.rundir import RunDir
    from netcfg.solver.runner import Solver

__all__ = ["RunLog", "opening_lines", "display", "open_tensorboard"]


class RunLog:
    """A Solver's ``log``: each line to the caller's ``show`` (print by default) and to its run
    directory's train.log until the Solver is closed, whatever the entry point (Python or
    ``netcfg train``), as Caffe's and Lightning's logs are written. Lines logged while the Solver is
    set up (the weights report, warnings) wait for the directory, made last; a run refused in
    between writes none of them, so a refused resume adds nothing to the run's log."""

    def __init__(self, show: Callable[[str], None]):
        self.show = show
        self.run: RunDir | None = None
        self._waiting: list[str] = []  # lines logged before the run directory was attached

    def attach(self, run: RunDir) -> None:
        """From now on lines go to ``run``'s train.log, those logged so far first."""
        self.run = run
        waiting, self._waiting = self._waiting, []
        if not run.closed:
            for line in waiting:
                run.log_line(line)

    def __call__(self, line: str) -> None:
        self.show(line)
        if self.run is None:
            self._waiting.append(line)
        elif not self.run.closed:
            self.run.log_line(line)


def opening_lines(solver: Solver) -> list[str]:
    """What ``solve()`` logs first: the net, device, solver and run directory; DDP, freeze and ema when on."""
    s = solver.spec
    lines = [f"Solving {solver.net.graph.name} on {solver.device} ({s.type}, base_lr {s.base_lr}, "
             f"lr_policy {s.lr_policy}); run directory {solver.run.path}"]
    if solver.dist.active:
        lines.append(f"DistributedDataParallel over {solver.dist.world_size} ranks: batch_size "
                     f"{s.data.train.batch_size} per rank, "
                     f"{s.data.train.batch_size * s.iter_size * solver.dist.world_size} images per update")
    if s.freeze:
        lines.append(solver.frozen.line())
    if s.ema:
        lines.append(f"Averaging the weights (ema: decay {s.ema.decay:g}, warmup {s.ema.warmup}): tests and "
                     "snapshots use the average")
    return lines


def display(solver: Solver, it: int, outs: dict[str, float], rate: float, seconds: float) -> None:
    """Iteration ``it``'s display: the loss smoothed over ``average_loss`` iterations, each output
    (with its loss_weight when not 1), the lr and the training images/s, logged and recorded."""
    smoothed = solver._shown_loss = float(sum(solver.losses) / len(solver.losses))
    outs = {k: float(v) for k, v in outs.items()}  # deferred: device scalars until here
    epoch = solver.train_data.epoch_float
    lr = solver.lr(it)
    rec = {"event": "train", "iter": it, "epoch": round(epoch, 4), "loss": smoothed,
           **{k: v for k, v in outs.items()}, "lr": lr, "images_per_s": round(rate, 1),
           "seconds": round(seconds, 3)}
    solver._record(rec)
    weights = solver.net.loss_weights  # the total first, then each output (a top may itself be called loss)
    shown = [f"{k} = {v:.4g}" + (f" x {weights[k]:g}" if weights.get(k, 1.0) != 1.0 else "")
             for k, v in outs.items() if k not in weights or len(outs) > 1]
    extra = f" ({', '.join(shown)})" if shown else ""
    solver.log(f"Iteration {it} (epoch {epoch:.2f}), loss = {smoothed:.4f}{extra}, lr = {lr:.3g}, "
               f"{rate:,.0f} images/s")


def open_tensorboard(solver: Solver):
    """The TensorBoard writer that mirrors metrics.jsonl (``log.tensorboard``), or None."""
    if not (solver.spec.log.tensorboard and solver.run.writes):
        return None
    from netcfg.solver.tensorboard import TensorBoardLog  # imports tensorboard: only when asked for

    return TensorBoardLog(solver.run.path)
