"""Snapshots: a weights file (weights_file.py) and a solver state (.solverstate) side by side.

Both are written to a temporary name and renamed into place, so a crash leaves
the previous snapshot intact. Neither holds a pickle: weights are safetensors
with the resolved net config (YAML) in their metadata; a solverstate is a
``save_tree`` file (tensors + JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from torch import nn

from netcfg.solver.checkpoint import CheckpointError, WriteError, load_tree, save_tree
from netcfg.solver.config_diff import config_diff
from netcfg.solver.weights_file import STAGES_KEY, copy_weights, save_weights

__all__ = ["write_snapshot", "read_snapshot", "check_state", "BEST_KEY"]

BEST_KEY = "netcfg.best"  # metadata of a <prefix>_best snapshot: JSON {"metric", "mode", "value", "iter"}


def write_snapshot(run, it: int, net: nn.Module, config: dict, state: dict, *, best: dict | None = None) -> tuple[Path, Path]:
    """Weights first, then the solver state: a state file always has its weights. A failed
    write (disk full) names the previous snapshot, which it leaves intact.

    ``best`` (``Best.as_state()``): write the ``<prefix>_best`` pair instead. Its old state
    goes first, so that a kill between the two renames leaves weights without a state (not
    resumable), never a state beside the weights of another iteration."""
    weights, state_path = run.best_paths() if best is not None else run.snapshot_paths(it)
    try:
        # the stages say which layers the run's nets had: an export of the snapshot alone needs them
        stages = {"TRAIN": config.get("train_stages", []), "TEST": config.get("test_stages", [])}
        extra = {"iter": str(it), STAGES_KEY: json.dumps(stages)}
        if best is not None:
            extra[BEST_KEY] = json.dumps(best)
            try:
                state_path.unlink(missing_ok=True)
            except OSError as e:
                raise WriteError(state_path, e) from None
        save_weights(weights, net, config["net"], extra=extra)
        save_tree(state_path, state, metadata={"solver": run.config_text(), "weights": weights.name})
    except WriteError as e:
        if best is not None:
            e.note = f"; the best snapshot of iteration {it} was not written"
            raise
        last = run.latest_snapshot(before=it)
        e.note = (f"; the snapshot of iteration {it} was not written, the previous one is intact: {last}" if last
                  else f"; the snapshot of iteration {it} was not written")
        raise
    record = {"event": "best", **{k: best[k] for k in ("metric", "mode", "value")}} if best is not None \
        else {"event": "snapshot"}
    run.metric({**record, "iter": it, "weights": weights.name, "state": state_path.name})
    return weights, state_path


def read_snapshot(path: Path, net: nn.Module, config: dict, *,
                  force: bool = False) -> tuple[dict, list[str], dict | None]:
    """Load a .solverstate's tree and its weights into ``net``; refuse a changed config
    unless ``force``. Returns the tree, the config differences and the snapshot's config
    (None in a state that holds none)."""
    tree, meta = load_tree(path)
    check_state(tree, path)
    try:
        old = yaml.safe_load(meta["solver"]) if "solver" in meta else None
    except yaml.YAMLError:
        raise CheckpointError(path, "its solver config (metadata 'solver') is not readable YAML") from None
    diffs = config_diff(old, config) if old is not None else []
    if diffs and not force:
        more = f"\n  ... and {len(diffs) - 20} more" if len(diffs) > 20 else ""
        raise CheckpointError(path, "the snapshot was made with a different solver or net:\n  "
                              + "\n  ".join(diffs[:20]) + more + "\nuse --force to continue anyway")
    name = meta.get("weights", path.stem + ".safetensors")
    if not name or set(name) & {"/", "\\", "\0"} or name.strip(".") == "":
        raise CheckpointError(path, f"names its weights file {name!r}, which is not a file name beside it")
    report = copy_weights(net, path.with_name(name), strict=True)
    if report.iteration is not None and report.iteration != tree["iter"]:  # a pair cut short between its writes
        raise CheckpointError(path, f"is the state of iteration {tree['iter']}, but its weights {name} are of "
                                    f"iteration {report.iteration}: the pair does not belong together")
    return tree, diffs, old if isinstance(old, dict) else None


def check_state(tree, path: Path) -> None:
    """Refuse a state tree that is not what ``Solver.state()`` writes, before any of it is used."""
    if not isinstance(tree, dict):
        raise CheckpointError(path, "is not a netcfg solver state (its tree is not a mapping)")
    problems = []

    def want(key: str, ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"'{key}' is not {what}")

    number = (int, float)
    it, opt, rng, data = tree.get("iter"), tree.get("optimizer"), tree.get("rng"), tree.get("data")
    want("iter", isinstance(it, int) and not isinstance(it, bool) and it >= 0, "an iteration number")
    want("optimizer", _optimizer_state(opt), "an optimizer state")
    torch_rng = rng.get("torch") if isinstance(rng, dict) else None
    want("rng", isinstance(torch_rng, torch.Tensor) and torch_rng.shape == torch.get_rng_state().shape
         and all(isinstance(v, torch.Tensor) and v.dtype == torch.uint8 for v in rng.values()),
         "a random-number generator state")
    want("data", data is None or (isinstance(data, dict) and all(
        isinstance(data.get(k), int) and not isinstance(data.get(k), bool) for k in ("epoch", "position"))),
         "a data position")
    want("losses", isinstance(tree.get("losses"), list)
         and all(isinstance(v, number) and not isinstance(v, bool) for v in tree["losses"]), "a list of losses")
    want("seconds", isinstance(tree.get("seconds", 0.0), number), "a number")
    best = tree.get("best")
    want("best", best is None or (isinstance(best, dict) and isinstance(best.get("metric"), str)
                                  and best.get("mode") in ("max", "min")
                                  and (best.get("value") is None or isinstance(best["value"], number))),
         "a best test value")
    ema = tree.get("ema")
    want("ema", ema is None or _ema_state(ema), "a weight average's state")
    ranks = [tree.get("world_size", 1)] + ([data.get("world_size", 1)] if isinstance(data, dict) else [])
    want("world_size", all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks),
         "a number of processes")
    if problems:
        raise CheckpointError(path, "is not a netcfg solver state: " + "; ".join(problems))


def _ema_state(ema) -> bool:
    """The shape of ``WeightAverage.state()``: an update count, the trained weights by name and,
    for 16-bit nets, the float32 average by name."""
    if not isinstance(ema, dict) or "weights" not in ema:
        return False
    updates = ema.get("updates")
    maps = [ema["weights"], ema.get("average", {})]
    return (isinstance(updates, int) and not isinstance(updates, bool) and updates >= 0
            and all(isinstance(m, dict) and all(isinstance(v, torch.Tensor) for v in m.values()) for m in maps))


def _optimizer_state(opt) -> bool:
    """The shape of a torch ``optimizer.state_dict()``: per-parameter buffers, groups of indices."""
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        return False
    buffers = (torch.Tensor, int, float, type(None))
    for index, slots in opt["state"].items():
        if not isinstance(index, int) or not isinstance(slots, dict):
            return False
        if not all(isinstance(k, str) and isinstance(v, buffers) for k, v in slots.items()):
            return False
    return all(isinstance(g, dict) and isinstance(g.get("params"), list)
               and all(isinstance(i, int) and not isinstance(i, bool) for i in g["params"]) for g in opt["param_groups"])
