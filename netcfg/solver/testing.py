"""A solver's tests: the TEST net over the test split, and what follows a test of the training loop.

After a test of the loop (``loop_test``) the best snapshot is kept (``snapshot_best``),
with the weight average in the net when there is one (``ema``), and early stopping
(``snapshot_best.patience``) decides whether training goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from netcfg.errors import ConfigError, ConfigErrors
from netcfg.solver.evaluate import sum_outputs
from netcfg.solver.keep import keep_best
from netcfg.solver.state import capture_rng

__all__ = ["run_test", "results_line", "loop_test", "out_of_patience"]


def run_test(solver, iterations: int | None = None, *, iteration_known: bool = True,
             stopped: Callable[[], bool] | None = None) -> dict[str, float | list[float]]:
    """Average every output of the TEST net that is a mean over the batch (losses, Accuracy,
    and Accuracy's per-class top, a list) over the test set (or N batches).

    ``iteration_known=False`` (weights that are no netcfg snapshot, a state_dict .pt)
    leaves "Iteration N" out of the log line: 0 would claim an untrained net. When
    ``stopped()`` turns true the test ends before its next batch, with KeyboardInterrupt
    and no record."""
    if solver.test_net is None or solver.test_data is None:
        raise ConfigErrors([solver.spec.locate(ConfigError("no test data to test on", ("data",), hint="add data.test"))])
    solver._settle()  # a deferred NaN check stops here, before testing weights it froze
    solver.dist.sync_buffers(solver.net)  # torchrun: every rank tests rank 0's BatchNorm statistics
    t0 = time.perf_counter()
    sums = sum_outputs(solver.test_net, solver.test_data.epoch_batches(), iterations or solver.spec.test_iter,
                       channels_last=solver.channels_last, autocast=solver._autocast, stopped=stopped)
    if stopped is not None and stopped():
        raise KeyboardInterrupt
    sums = solver.dist.sum_over_ranks(sums)  # torchrun: each rank tested its shard
    solver._in_train_mode = False
    solver.last_test = results = sums.means()
    solver._record({"event": "test", "iter": solver.iter,
                    "epoch": round(solver.train_data.epoch_float, 4) if solver.train_data else 0.0,
                    **results, "samples": sums.count, "seconds": round(time.perf_counter() - t0, 3)})
    solver.log((f"Iteration {solver.iter}, Testing net" if iteration_known else "Testing net")
               + f" ({sums.count} samples): " + results_line(results))
    return results


def results_line(results: dict[str, float | list[float]]) -> str:
    """``loss = 0.0707, accuracy = 0.9778``: the scalars; an output with elements (Accuracy's
    per-class top) follows as ``per_class = [0.9722, 1.0000, ...]``, every element."""
    return ", ".join(f"{k} = {v:.4f}" if isinstance(v, float) else f"{k} = [{', '.join(f'{x:.4f}' for x in v)}]"
                     for k, v in results.items())


def loop_test(solver, stopped: Callable[[], bool] | None = None) -> None:
    """A test of the training loop; with ``snapshot_best``, the best snapshot follows it."""
    rng = capture_rng(solver.device) if solver.best is not None else None
    # a deferred NaN check stops here, before the average goes in: its replay of the bad
    # iteration must run on the weights that diverged, to name the layer
    solver._settle()
    with solver._averaged():
        results = solver.test(stopped=stopped)
        if solver.best is not None:
            keep_best(solver, results, rng)


def out_of_patience(solver) -> bool:
    """Whether ``snapshot_best.patience`` tests in a row have not improved on the best
    (early stopping); every rank decides alike, from the same summed test results."""
    patience = solver.spec.snapshot_best.patience if solver.spec.snapshot_best else None
    if patience is None or solver.best.waited(solver.iter, solver.spec.test_interval) < patience:
        return False
    solver.stopped_early = True
    solver.log(f"Early stop: {solver.best.metric} has not improved on {solver.best.value:.4f} (iteration "
               f"{solver.best.iter}) in {patience} tests; stopping at iteration {solver.iter} of {solver.spec.max_iter}")
    return True
