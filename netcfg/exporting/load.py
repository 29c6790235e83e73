"""Nets from the files users hold: a net file, a solver file or run config, or a weights file.

``load_net_with_weights`` rebuilds a ready model from one ``.safetensors`` written by
netcfg (a training snapshot or a ``netcfg export --format safetensors``): the net
config travels in its metadata, so nothing else is needed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from netcfg.errors import ConfigError
from netcfg.net.device import device_argument
from netcfg.net.graph import build_graph
from netcfg.net.module import Net
from netcfg.net.spec import NetSpec
from netcfg.solver.netfile import EXPORT_KEY, NetFile, read_net_file, weights_file
from netcfg.solver.weights_file import copy_weights

__all__ = ["EXPORT_KEY", "WEIGHT_SUFFIXES", "load_net_with_weights", "load_weights_into", "read_net"]

WEIGHT_SUFFIXES = (".safetensors",)
_NO_NET = "give the net file too: load_net_with_weights(weights, net=...), or `netcfg export NET.yaml --weights FILE`"


def read_net(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> NetFile:
    """The net of a net file, of a solver file (or a run's config.yaml), or stored in a
    ``.safetensors`` written by netcfg (a run directory: its newest snapshot's);
    ``overrides`` are ``--set`` keys of that net."""
    return read_net_file(path, overrides, run_dir="snapshot", no_net_hint=_NO_NET)


def load_net_with_weights(weights: str | Path, net: str | Path | NetSpec | None = None, *, phase: str = "TEST",
                          stages: tuple[str, ...] | list[str] = (), deploy: bool = False,
                          outputs: str | list[str] | tuple[str, ...] | None = None,
                          device: str | torch.device | None = None) -> Net:
    """The ``Net`` stored in ``weights`` (a ``.safetensors`` written by netcfg, or a run
    directory: its newest snapshot), with its
    weights loaded; in eval mode for phase TEST. Pass ``net`` (a net file or NetSpec)
    for weights without a stored config, such as a ``.pt`` state_dict from ``netcfg
    export --format pt``. ``deploy=True`` builds the deploy form (no losses, metrics or label
    inputs); ``outputs`` names its output tops, as ``--top`` did for the export (a ``.pt``
    exported with ``--top cls`` holds only the layers ``cls`` needs; a deploy
    ``.safetensors`` names its own). Every blob of the net must be in the file.

    >>> net = netcfg.load_net_with_weights("runs/lenet/lenet_iter_10000.safetensors")
    >>> net(data=torch.randn(4, 1, 28, 28), label=torch.zeros(4, dtype=torch.long))["accuracy"]
    """
    weights = weights_file(weights)
    if outputs and not deploy:
        raise ConfigError("outputs= picks the tops of the deploy form", file="outputs",
                          hint="pass deploy=True too, or leave outputs out")
    outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs or ())  # outputs="cls": one top
    if net is None:
        source = read_net(weights) if weights.suffix in WEIGHT_SUFFIXES else None
        if source is None:
            raise ConfigError(f"a {weights.suffix or 'suffix-less'} file holds no net config", file=str(weights),
                              hint="pass the net too: load_net_with_weights(weights, net='net.yaml')")
        spec, outputs = source.net, outputs or source.outputs
        stages = spec.checked_stages(stages, "stages") or source.stages_of(phase)
    else:
        spec = net if isinstance(net, NetSpec) else read_net(net).net
        stages = spec.checked_stages(stages, "stages")
    if deploy:
        from netcfg.exporting.deploy import deploy_form

        graph = deploy_form(spec, phase, stages, list(outputs) or None).graph
    else:
        graph = build_graph(spec, phase, stages)
        if outputs and set(outputs) <= set(graph.blobs):
            graph.outputs = list(outputs)  # an export may name tops that later layers also read
    module = Net(graph)
    load_weights_into(module, weights)
    return module if device is None else module.to(device_argument(device))


def load_weights_into(net: Net, weights: Path) -> None:
    """Every blob of ``net`` from ``weights`` by name (a .safetensors, or a state_dict in a
    ``.pt``/``.pth``); a blob missing from the file or of another shape is an error."""
    copy_weights(net, weights, strict=True, required=bool(net.state_dict()))
