"""Which snapshots a run keeps: the newest ``snapshot_keep`` periodic ones, and the best by a test metric.

``<prefix>_iter_<N>`` snapshots older than the one just written are deleted beyond the
newest ``snapshot_keep`` (the new one counts), only after the new one is complete: a
crash at any point leaves at least the snapshots that were there before. The best
snapshot, ``<prefix>_best.safetensors`` and ``.solverstate``, is a separate pair that
no pruning touches, written whenever the ``snapshot_best`` metric of a test improves.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from netcfg.errors import ConfigError, NetcfgError, did_you_mean
from netcfg.net import Graph
from netcfg.solver.rundir import resolved_config, snapshot_states
from netcfg.solver.snapshot import BEST_KEY, write_snapshot
from netcfg.solver.weights_file import load_metadata
from netcfg.solver.spec import SolverSpec

__all__ = ["Best", "keep_best", "keep_periodic", "prune_snapshots", "reported_scalars", "best_metric_errors"]


@dataclass
class Best:
    """The best test value so far of ``metric`` (None before the first test), and its iteration."""

    metric: str
    mode: str  # "max" or "min"
    value: float | None = None
    iter: int | None = None

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (a NaN or infinite value never does)."""
        if not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value > self.value if self.mode == "max" else value < self.value

    def waited(self, it: int, interval: int) -> int:
        """How many tests, up to the one at iteration ``it``, found no improvement since the best."""
        return 0 if self.iter is None else (it - self.iter) // interval

    def as_state(self) -> dict:
        """What a .solverstate keeps of it, so that a resumed run compares against the same best."""
        return {"metric": self.metric, "mode": self.mode, "value": self.value, "iter": self.iter}

    @classmethod
    def of(cls, spec: SolverSpec, stored=None) -> Best | None:
        """The spec's ``snapshot_best``, continuing ``stored`` (a state's ``best``) when that
        tracked the same metric and mode; None without ``snapshot_best``."""
        want = spec.snapshot_best
        if want is None:
            return None
        best = cls(want.metric, want.mode)
        if isinstance(stored, dict) and (stored.get("metric"), stored.get("mode")) == (want.metric, want.mode):
            value, it = stored.get("value"), stored.get("iter")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                best.value, best.iter = float(value), it if isinstance(it, int) else None
        return best

    @classmethod
    def resumed(cls, spec: SolverSpec, stored, run, it: int) -> Best | None:
        """The best to go on from at iteration ``it``: the state's, or the run's best pair when
        that is better and not from beyond ``it``. The snapshot at the end of a run is written
        before that iteration's test, so only the pair knows of a best found there."""
        best = cls.of(spec, stored)
        if best is None:
            return None
        on_disk = cls.of(spec, _best_meta(run.best_paths()[0]))
        if (on_disk.value is not None and on_disk.iter is not None and on_disk.iter <= it
                and best.improves(on_disk.value)):
            return on_disk
        return best


def _best_meta(weights: Path) -> dict | None:
    """The ``netcfg.best`` metadata of a best pair's weights, None when it is missing or unreadable."""
    if not weights.is_file() or not weights.with_suffix(".solverstate").is_file():
        return None
    try:
        return json.loads(load_metadata(weights).get(BEST_KEY, "null"))
    except (NetcfgError, ValueError):  # an unreadable header (CheckpointError), bad JSON
        return None


def prune_snapshots(run, it: int, keep: int) -> list[Path]:
    """Delete this run's ``<prefix>_iter_<N>`` snapshots below iteration ``it`` (the one just
    written) beyond the newest ``keep - 1``; returns the .solverstate paths removed. Later ones
    (a forced resume from an older snapshot) are left alone: training overwrites them."""
    older = [p for n, p in snapshot_states(run.path, run.prefix, complete=False) if n < it]
    removed = []
    for state in older[:max(len(older) - (keep - 1), 0)]:
        # the weights first: a kill in between leaves a state without weights, which no
        # command takes as a snapshot and the next pruning still finds (it lists states)
        with contextlib.suppress(FileNotFoundError):
            state.with_suffix(".safetensors").unlink()
        with contextlib.suppress(FileNotFoundError):
            state.unlink()
        removed.append(state)
    return removed


def reported_scalars(graph: Graph) -> list[str]:
    """The scalars a test reports for ``graph`` (a TEST net): its outputs that are means over
    the batch (losses, Accuracy, and what is computed from them only; not Accuracy's
    per-class list), plus ``loss``, the
    weighted total, when the net has loss weights (``evaluate.sum_outputs``)."""
    names = [o for o in graph.outputs if o in graph.batch_means and graph.blobs[o].shape == ()]
    return names + ["loss"] if graph.losses and "loss" not in names else names


def best_metric_errors(spec: SolverSpec, test_graph: Graph | None) -> list[ConfigError]:
    """An error when ``snapshot_best.metric`` is not a scalar the TEST net reports."""
    if spec.snapshot_best is None or test_graph is None:
        return []
    metric, scalars = spec.snapshot_best.metric, reported_scalars(test_graph)
    if metric in scalars:
        return []
    valid = did_you_mean(metric, scalars) if scalars else "the TEST net reports none: add an Accuracy or a loss layer"
    if metric in test_graph.batch_means:
        return [ConfigError(f"'{metric}' is a list of {test_graph.blobs[metric].shape[0]} values (one per class), "
                            "not a scalar to rank snapshots by", ("snapshot_best", "metric"), hint=valid)]
    if metric in test_graph.outputs:
        return [ConfigError(f"'{metric}' is an output of the TEST net, but one value per sample, "
                            "not a scalar a test averages", ("snapshot_best", "metric"), hint=valid)]
    return [ConfigError(f"'{metric}' is not a scalar output of the TEST net",
                        ("snapshot_best", "metric"), hint=valid)]


def keep_periodic(solver) -> Path:
    """``solver.snapshot()`` once checked: write ``<prefix>_iter_<N>`` (the weight average in the net,
    when there is one), then prune to ``snapshot_keep``; returns the weights' path."""
    if not solver.run.writes:  # torchrun: rank 0 writes the snapshot for every rank
        return solver.run.snapshot_paths(solver.iter)[0]
    with solver._averaged():
        weights, state = write_snapshot(solver.run, solver.iter, solver.net, resolved_config(solver.spec),
                                        solver.state())
    solver.log(f"Snapshotting to {weights} and {state.name}")
    keep = solver.spec.snapshot_keep
    if keep:  # only now that the new snapshot is complete
        removed = prune_snapshots(solver.run, solver.iter, keep)
        if removed:
            solver.log(f"Removed {', '.join(p.stem for p in removed)} (snapshot_keep: {keep})")
    return weights


def keep_best(solver, results: dict[str, float], rng: dict) -> Path | None:
    """After a test of ``solver`` (a ``Solver``) with ``snapshot_best``: when its metric in
    ``results`` improved, remember it and write the ``<prefix>_best`` pair, whose state
    holds ``rng``, the random state from before the test (a resume from it tests again)."""
    best = solver.best
    value = results.get(best.metric)  # set-up checked that the TEST net reports it (best_metric_errors)
    if value is None or not best.improves(value):
        return None
    best.value, best.iter = float(value), solver.iter
    if not solver.run.writes:  # torchrun: every rank tracks the best (tests are summed over ranks), rank 0 writes
        return None
    state = {**solver.state(), "rng": rng}
    weights, _ = write_snapshot(solver.run, solver.iter, solver.net, resolved_config(solver.spec), state,
                                best=best.as_state())
    solver.log(f"new best {best.metric} {value:.4f} at iteration {solver.iter}: {weights.name}")
    return weights
