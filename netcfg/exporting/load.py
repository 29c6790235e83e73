"""Nets from the files users hold: a net file, a solver file or run config, or a weights file.

``load_net_with_weights`` rebuilds a ready model from one ``.safetensors`` written by
netcfg (a training snapshot or a ``netcfg export --format safetensors``): the net
config travels in its metadata, so nothing else is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from netcfg.errors import ConfigError
from netcfg.net.graph import build_graph
from netcfg.net.module import Net
from netcfg.net.spec import NetSpec, net_from_source
from netcfg.overrides import apply_overrides
from netcfg.solver.snapshot import STAGES_KEY, copy_weights, stored_net
from netcfg.solver.weights import resolve_file
from netcfg.source import document_kind, load_yaml

__all__ = ["EXPORT_KEY", "WEIGHT_SUFFIXES", "NetSource", "load_net_with_weights", "load_weights_into", "read_net"]

EXPORT_KEY = "netcfg.export"  # metadata: JSON {phase, stages, inputs, outputs, weights} of a deploy export
WEIGHT_SUFFIXES = (".safetensors",)


@dataclass
class NetSource:
    """A net read from a user's file, with what that file says beyond the layers."""

    spec: NetSpec
    stages: tuple[str, ...] = ()   # a solver's test_stages
    weights: Path | None = None    # the file itself, when it was a weights file
    outputs: tuple[str, ...] = ()  # a deploy export's outputs
    train_stages: tuple[str, ...] = ()

    def stages_of(self, phase: str) -> tuple[str, ...]:
        """The stages the file names for ``phase`` (a solver's train_stages or test_stages)."""
        return self.train_stages if str(phase).upper() == "TRAIN" else self.stages


def weights_file(path: str | Path) -> Path:
    """``path``; for a run directory its newest snapshot's weights, as `weights:` and
    --weights read one (a directory without a snapshot is left for the loader to refuse);
    for a snapshot's ``.solverstate`` the weights beside it, as check, draw and test read
    it (a state without them is left for the loader to refuse, naming them)."""
    path = Path(path)
    if path.is_dir():
        return resolve_file(str(path), Path.cwd())
    if path.suffix == ".solverstate" and path.with_suffix(".safetensors").is_file():
        return path.with_suffix(".safetensors")
    return path


def read_net(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> NetSource:
    """The net of a net file, of a solver file (or a run's config.yaml), or stored in a
    ``.safetensors`` written by netcfg; ``overrides`` are ``--set`` keys of that net."""
    path = Path(path)
    if path.is_dir() or path.suffix in WEIGHT_SUFFIXES + (".solverstate",):
        return _net_in_weights(weights_file(path), overrides)
    src = load_yaml(path)
    kind = document_kind(src.data)  # before --set: layers.x=... on a solver file is a wrong key of the solver
    if overrides:
        apply_overrides(src, overrides)
    if kind == "solver":
        from netcfg.solver.spec import solver_from_source

        solver = solver_from_source(src, path.resolve().parent)
        return NetSource(solver.net_spec, tuple(solver.test_stages), train_stages=tuple(solver.train_stages))
    return NetSource(net_from_source(src))


def _net_in_weights(path: Path, overrides) -> NetSource:
    src, meta = stored_net(path, hint="give the net file too: load_net_with_weights(weights, net=...), "
                                      "or `netcfg export NET.yaml --weights FILE`")
    if overrides:
        apply_overrides(src, overrides)
    info = json.loads(meta.get(EXPORT_KEY, "{}"))
    run = json.loads(meta.get(STAGES_KEY, "{}"))  # a snapshot: the stages of its solver's nets
    return NetSource(net_from_source(src), tuple(info.get("stages", run.get("TEST", ()))), path,
                     tuple(info.get("outputs", ())), tuple(run.get("TRAIN", ())))


def load_net_with_weights(weights: str | Path, net: str | Path | NetSpec | None = None, *, phase: str = "TEST",
                          stages: tuple[str, ...] | list[str] = (), deploy: bool = False,
                          device: str | torch.device | None = None) -> Net:
    """The ``Net`` stored in ``weights`` (a ``.safetensors`` written by netcfg, or a run
    directory: its newest snapshot), with its
    weights loaded; in eval mode for phase TEST. Pass ``net`` (a net file or NetSpec)
    for weights without a stored config, such as a ``.pt`` state_dict from ``netcfg
    export --format pt``. ``deploy=True`` builds the deploy form (no losses, metrics or label
    inputs). Every blob of the net must be in the file.

    >>> net = netcfg.load_net_with_weights("runs/lenet/lenet_iter_10000.safetensors")
    >>> net(data=torch.randn(4, 1, 28, 28), label=torch.zeros(4, dtype=torch.long))["accuracy"]
    """
    weights = weights_file(weights)
    outputs: tuple[str, ...] = ()
    if net is None:
        source = read_net(weights) if weights.suffix in WEIGHT_SUFFIXES else None
        if source is None:
            raise ConfigError(f"a {weights.suffix or 'suffix-less'} file holds no net config", file=str(weights),
                              hint="pass the net too: load_net_with_weights(weights, net='net.yaml')")
        spec, outputs, stages = source.spec, source.outputs, tuple(stages) or source.stages_of(phase)
    else:
        spec = net if isinstance(net, NetSpec) else read_net(net).spec
    if deploy:
        from netcfg.exporting.deploy import deploy_form

        graph = deploy_form(spec, phase, stages, list(outputs) or None).graph
    else:
        graph = build_graph(spec, phase, stages)
        if outputs and set(outputs) <= set(graph.blobs):
            graph.outputs = list(outputs)  # an export may name tops that later layers also read
    module = Net(graph)
    load_weights_into(module, weights)
    if device is None:
        return module
    from netcfg.solver.device import resolve_device

    try:
        dev = resolve_device(str(device))
    except RuntimeError:  # torch.device("banana")
        raise ConfigError(f"device {device!r} is not a device PyTorch knows", file="device", hint="use cpu, cuda, cuda:N or mps") from None
    except ConfigError as e:
        raise ConfigError(e.message, file="device", hint=e.hint) from None
    return module.to(dev)


def load_weights_into(net: Net, weights: Path) -> None:
    """Every blob of ``net`` from ``weights`` by name (a .safetensors, or a state_dict in a
    ``.pt``/``.pth``); a blob missing from the file or of another shape is an error."""
    copy_weights(net, weights, strict=True, required=bool(net.state_dict()))
