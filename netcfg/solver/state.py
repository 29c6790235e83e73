"""Pieces of a solver's state that a resume must restore exactly: RNGs and optimizer buffers."""

from __future__ import annotations

import torch

from netcfg.errors import NetcfgError

__all__ = ["capture_rng", "restore_rng", "load_optimizer_state"]


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


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, source: str) -> None:
    """Load the buffers (momentum, Adam's moments) but keep this config's hyperparameters:
    ``load_state_dict`` alone would bring back the snapshot's, undoing a forced change."""
    fresh = [{k: v for k, v in g.items() if k not in ("params", "param_names")} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise NetcfgError(f"{source}: the optimizer state does not fit this net's parameters ({e})") from None
    for group in optimizer.param_groups:  # load_state_dict checks counts, not shapes
        for p in group["params"]:
            for name, v in optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() and v.shape != p.shape:
                    raise NetcfgError(f"{source}: the optimizer state '{name}' has shape {list(v.shape)} "
                                      f"for a parameter of shape {list(p.shape)}")
    for group, hyper in zip(optimizer.param_groups, fresh):
        group.update(hyper)
    _fill_momentum(optimizer)


def _fill_momentum(optimizer: torch.optim.Optimizer) -> None:
    """SGD state that has momentum buffers for some parameters and not others (a state file
    edited by hand, or a parameter that never had a gradient) gets zero buffers for the rest.
    Without dampening a zero buffer takes the next step exactly as a missing one would
    (``v = m * 0 + g``), and torch's fused kernel needs all of the buffers or none."""
    if not isinstance(optimizer, torch.optim.SGD):
        return
    params = [p for g in optimizer.param_groups if g["momentum"] and not g["dampening"] for p in g["params"]]
    if any("momentum_buffer" in optimizer.state.get(p, {}) for p in params):
        for p in params:
            if optimizer.state[p].get("momentum_buffer") is None:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
