"""Pieces of a solver's state that a resume must restore exactly: RNGs and optimizer buffers."""

from __future__ import annotations

import torch

from netcfg.errors import NetcfgError
from netcfg.solver.optim import zero_momentum

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
    ``load_state_dict`` alone would bring back the snapshot's, undoing a forced change. The
    rate ``lr`` is the snapshot's, the last update's: ``set_learning_rate`` sets each step's,
    and rescales an SGD velocity from it (optim.py)."""
    fresh = [{k: v for k, v in g.items() if k not in ("params", "param_names", "lr")} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise NetcfgError(f"{source}: the optimizer state does not fit this net's parameters ({e})") from None
    for group, hyper in zip(optimizer.param_groups, fresh):
        group.update(hyper)
        for p in group["params"]:
            _match_param(optimizer.state.get(p, {}), p, bool(group.get("fused")), source)
    zero_momentum(optimizer)


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

