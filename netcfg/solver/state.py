"""Pieces of a solver's state that a resume (or an iteration's roll-back) must restore exactly: RNGs,
the data position and optimizer buffers."""

from __future__ import annotations

import torch

from netcfg.errors import NetcfgError
from netcfg.solver.optim import zero_momentum

__all__ = ["capture_rng", "restore_rng", "iteration_start", "rewind", "load_optimizer_state"]


def capture_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """The global RNG states a training step draws from (dropout, augmentation)."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def restore_rng(rng: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


def iteration_start(train_data, device: torch.device) -> dict:
    """What rewinds a training iteration to its start: the data position and the RNG state."""
    return {"data": train_data.state_dict() if train_data else None, "rng": capture_rng(device)}


def rewind(undo: dict, train_data, device: torch.device) -> None:
    """Data position and random state back to an iteration's start (``iteration_start``)."""
    if undo["data"] is not None:
        train_data.load_state_dict(undo["data"])
    restore_rng(undo["rng"], device)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, source: str) -> list[str]:
    """Load the buffers (momentum, Adam's moments) but keep this config's hyperparameters:
    ``load_state_dict`` alone would bring back the snapshot's, undoing a forced change. The
    rate ``lr`` is the snapshot's, the last update's: ``set_learning_rate`` sets each step's,
    and rescales an SGD velocity from it (optim.py). When the trained parameters changed (a
    forced resume with another ``freeze`` or ``lr_mult``) the buffers are matched by name;
    returns the names of the parameters that start with fresh buffers."""
    hyper = [{k: v for k, v in g.items() if k not in ("params", "param_names", "lr")} for g in optimizer.param_groups]
    state, fresh = _by_name(optimizer, state)
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise NetcfgError(f"{source}: the optimizer state does not fit this net's parameters ({e})") from None
    for group, kept in zip(optimizer.param_groups, hyper):
        group.update(kept)
        for p in group["params"]:
            _match_param(optimizer.state.get(p, {}), p, bool(group.get("fused")), source)
    zero_momentum(optimizer)
    return fresh


def _by_name(optimizer: torch.optim.Optimizer, state: dict) -> tuple[dict, list[str]]:
    """``state`` laid out as ``optimizer``'s groups, each parameter's buffers found by name in the
    saved group of the same ``lr_mult`` and ``decay_mult`` (whose ``lr`` an SGD velocity is scaled
    for); a parameter not found there starts afresh. ``state`` as it is when the names agree."""
    saved = state.get("param_groups") if isinstance(state, dict) else None
    names = [g.get("param_names") for g in optimizer.param_groups]
    if (not isinstance(saved, list) or not all(isinstance(g, dict) and "param_names" in g for g in saved)
            or None in names or [g["param_names"] for g in saved] == names):
        return state, []
    buffers = state.get("state", {})
    groups, out, fresh = [], {}, []
    for group, group_names in zip(optimizer.param_groups, names):
        key = (group.get("lr_mult"), group.get("decay_mult"))
        old = next((g for g in saved if (g.get("lr_mult"), g.get("decay_mult")) == key), None)
        where = dict(zip(old["param_names"], old["params"])) if old is not None else {}
        first = sum(len(g["params"]) for g in groups)
        for i, name in enumerate(group_names):
            if where.get(name) in buffers:
                out[first + i] = buffers[where[name]]
            else:
                fresh.append(name)
        groups.append({**{k: v for k, v in (old or group).items() if k not in ("params", "param_names")},
                       "params": list(range(first, first + len(group_names))), "param_names": group_names})
    return {"state": out, "param_groups": groups}, fresh


def _match_param(state: dict, p: torch.Tensor, fused: bool, source: str) -> None:
    """Check one parameter's loaded state against it (``load_state_dict`` checks counts, not
    shapes) and give each state tensor the parameter's memory layout, and a fused optimizer's
    step count its device. A snapshot stores tensors contiguous, but a conv weight trains in
    channels_last: torch's fused CPU kernels walk a parameter and its state as flat memory,
    so a state in another layout would be paired element by element with the wrong weights.
    Fused CUDA kernels want ``step`` on the GPU, where a state saved by the foreach kernels
    (an older netcfg) has it on the CPU."""
    for name, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        if v.dim() and v.shape != p.shape:
            raise NetcfgError(f"{source}: the optimizer state '{name}' has shape {list(v.shape)} "
                              f"for a parameter of shape {list(p.shape)}")
        if v.dim() and v.stride() != p.stride():
            state[name] = torch.empty_like(p, dtype=v.dtype).copy_(v)
        elif name == "step" and fused and v.device != p.device:
            state[name] = v.to(p.device, torch.float32)

