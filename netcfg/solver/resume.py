"""What a snapshot holds besides the weights, and how a run continues from one exactly.

A ``.solverstate`` keeps the iteration, the optimizer's buffers, fp16's scaler, the
data position (epoch, position), the RNG states, the smoothed-loss window and the
training time; with the weights, that is all a resumed run needs to go on bit for
bit as if it had never stopped (tests/solver/test_resume.py).
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

from netcfg.errors import ConfigError, ConfigErrors
from netcfg.solver.checkpoint import CheckpointError
from netcfg.solver.ema import own_weights
from netcfg.solver.keep import Best
from netcfg.solver.lr_policy import POLICIES, spec_learning_rate
from netcfg.solver.rundir import resolved_config
from netcfg.solver.snapshot import read_snapshot
from netcfg.solver.state import capture_rng, load_optimizer_state, restore_rng

__all__ = ["training_state", "restore", "lr_jump"]

# optimizer types whose buffers are the same (a momentum; Adam's moments): a forced change within one keeps them
_SAME_BUFFERS = ({"SGD", "Nesterov"}, {"Adam", "AdamW"})


def training_state(solver) -> dict:
    """Everything a resume of ``solver`` (a ``Solver``) needs besides the weights (no tensors of the net)."""
    return {
        "iter": solver.iter,
        "optimizer": solver.optimizer.state_dict(),
        "scaler": solver.scaler.state_dict() if solver.scaler else None,
        "data": solver.train_data.state_dict() if solver.train_data else None,
        "rng": capture_rng(solver.device),
        "losses": [float(v) for v in solver.losses],
        "seconds": solver._seconds,
        "world_size": solver.dist.world_size,  # the data position and random state are rank 0's
        "best": solver.best.as_state() if solver.best is not None else None,  # snapshot_best's value so far
        "ema": solver.ema.state() if solver.ema is not None else None,  # the weights trained; the average is saved
    }


def restore(solver, path: Path, *, force: bool = False) -> None:
    """Load the .solverstate at ``path`` and the weights next to it into ``solver``; refused
    (naming what differs) when its solver or net differ, unless ``force``."""
    spec = solver.spec
    tree, diffs, old = read_snapshot(path, solver.net, resolved_config(spec), force=force)
    if spec.max_iter < int(tree["iter"]):  # max_iter may change on resume, but not to below where it is
        raise ConfigErrors([spec.locate(ConfigError(
            f"max_iter {spec.max_iter} is below the snapshot's iteration {tree['iter']}: nothing is left to train",
            ("max_iter",), hint=f"set max_iter above {tree['iter']}, or test the snapshot with netcfg test"))])
    for d in diffs:
        solver.log(f"warning: resuming with a changed config: {d}")
    jump = lr_jump(spec, old, int(tree["iter"]))
    if jump:
        solver.log(jump)
    try:
        if solver.ema is not None:  # the snapshot's weights are the average; the net trains on its own
            solver.ema.resume(solver.net, tree.get("ema"))
        elif tree.get("ema"):
            own_weights(solver.net, tree["ema"])
    except ValueError as e:
        raise CheckpointError(path, str(e)) from None
    was = old.get("type") if old else None
    if was not in (None, spec.type) and not any({was, spec.type} <= kin for kin in _SAME_BUFFERS):  # forced
        fresh = []
        solver.log(f"warning: the optimizer changed from {was} to {spec.type}: its buffers start afresh")
    else:
        fresh = load_optimizer_state(solver.optimizer, tree["optimizer"], str(path))
    if fresh:  # a forced resume with another freeze or lr_mult
        shown = ", ".join(fresh[:6]) + (f", ... ({len(fresh) - 6} more)" if len(fresh) > 6 else "")
        solver.log(f"warning: {len(fresh)} parameter(s) the snapshot's optimizer did not train as they are "
                   f"trained now start with fresh optimizer buffers: {shown}")
    if solver.scaler and tree.get("scaler"):
        solver.scaler.load_state_dict(tree["scaler"])
    if solver.train_data and tree.get("data"):
        try:
            solver.train_data.load_state_dict(tree["data"])
        except ValueError as e:  # a forced resume with another data set, limit or batch_size
            raise CheckpointError(path, str(e)) from None
    restore_rng(tree["rng"], solver.device)
    solver.iter = int(tree["iter"])
    ranks, world = int(tree.get("world_size", 1)), solver.dist.world_size
    if ranks != world:
        per_update = spec.data.train.batch_size * spec.iter_size if spec.data.train else 0
        solver.log(f"warning: the snapshot was written by {ranks} process(es), this run has {world} "
                   f"(batch_size is per process: {per_update * world} images per update now); "
                   "the data order goes on from the same fraction of the epoch (see docs/distributed.md)")
    solver.losses = deque(tree["losses"], maxlen=spec.average_loss)
    if solver._deferred is not None:
        solver._deferred.restart(solver.iter)
    solver._seconds = float(tree.get("seconds", 0.0))
    solver.best = Best.resumed(spec, tree.get("best"), solver.run, solver.iter)
    if solver.best is not None and solver.best.value is not None:
        solver.log(f"best {solver.best.metric} so far {solver.best.value:.4f} at iteration {solver.best.iter}")
    solver.run.write_config()
    # the earlier run's records after this iteration are of a branch this run abandons (netcfg plot drops them)
    solver._record({"event": "resume", "iter": solver.iter, "state": path.name})
    solver.log(f"Resumed from {path} at iteration {solver.iter}")


def lr_jump(spec, old: dict | None, it: int) -> str | None:
    """A warning line when resuming at ``it`` with another max_iter than the snapshot's
    config moves a max_iter-shaped lr curve (poly, cosine, linear): the rate jumps there."""
    old_max = old.get("max_iter") if old else None
    if not isinstance(old_max, int) or old_max == spec.max_iter or "max_iter" not in POLICIES[spec.lr_policy]:
        return None
    try:
        before, after = spec_learning_rate(spec, it, max_iter=old_max), spec_learning_rate(spec, it)
    except ValueError:  # a max_iter no curve has (0, or within the warm-up): nothing to compare
        return None
    if math.isclose(before, after, rel_tol=1e-6, abs_tol=1e-12):
        return None
    keep = (f"; resume with max_iter={old_max} to keep the old curve" if it < old_max
            else f" (the snapshot's curve ended at iteration {old_max})")
    return (f"warning: max_iter {old_max} -> {spec.max_iter} reshapes the {spec.lr_policy} lr curve: at iteration "
            f"{it} the lr jumps from {before:.6g} to {after:.6g}{keep}")
