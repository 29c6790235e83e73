"""Net files: NetSpec (schema), Graph (checked wiring and shapes), Net (the module)."""

from __future__ import annotations

from pathlib import Path

import torch

from netcfg.net.device import device_argument
from netcfg.net.graph import Graph, Node, build_graph
from netcfg.net.module import Net, ParamInfo, float_inputs
from netcfg.net.spec import InputSpec, NetSpec, load_net

__all__ = ["Graph", "InputSpec", "Net", "NetSpec", "Node", "ParamInfo", "build_graph", "build_net", "float_inputs", "load_net"]


def build_net(
    net: str | Path | NetSpec,
    phase: str = "TRAIN",
    *,
    stages: tuple[str, ...] | list[str] = (),
    overrides: list[str] | tuple[str, ...] = (),
    device: str | torch.device | None = None,
) -> Net:
    """Build the ``Net`` (an ``nn.Module``) of a net file or spec for one phase."""
    spec = net if isinstance(net, NetSpec) else load_net(net, overrides)
    dev = device_argument(device) if device is not None else None  # checked before the weights are made
    module = Net(build_graph(spec, phase, spec.checked_stages(stages, "stages")))
    return module.to(dev) if dev is not None else module
