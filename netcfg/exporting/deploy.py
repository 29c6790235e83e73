"""The deploy form of a net: the phase's layers without losses, metrics and label inputs.

Caffe ships a hand-written ``deploy.prototxt`` beside ``train_val.prototxt``; here
it is derived from the Graph. Loss and metric layers (``is_loss``/``reduces_batch``
on their spec) and layers with no tops (Silence) are dropped; the blobs they read as
predictions (their first bottom) become outputs, beside the phase's own outputs;
then every layer and input that no output needs is pruned, so a label input that
only a loss read disappears. Layer names, hence weight names, do not change.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from netcfg.errors import ConfigError, ConfigErrors, did_you_mean
from netcfg.net.graph import Graph, Node, build_graph
from netcfg.net.module import Net, run_schedule
from netcfg.net.spec import NetSpec, net_from_source
from netcfg.source import parse_yaml, to_yaml

__all__ = ["Deploy", "DeployModule", "deploy_form", "drops", "example_inputs"]


@dataclass
class Deploy:
    """A deploy net: its config (plain data, no phase rules), spec, graph and what was left out."""

    config: dict
    spec: NetSpec
    graph: Graph
    dropped: dict[str, str] = field(default_factory=dict)  # loss/metric layers: name -> type
    pruned: dict[str, str] = field(default_factory=dict)   # layers no output needs: name -> type
    unused_inputs: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def outputs(self) -> list[str]:
        return list(self.graph.outputs)


def drops(node: Node) -> bool:
    """Whether the deploy form leaves ``node`` out: a loss, a metric, or a layer with no tops."""
    spec = type(node.spec)
    return spec.is_loss or spec.reduces_batch or not node.tops


def deploy_form(spec: NetSpec, phase: str = "TEST", stages: tuple[str, ...] | list[str] = (),
                outputs: list[str] | tuple[str, ...] | None = None) -> Deploy:
    """The deploy net of ``spec`` in ``phase``; ``outputs`` picks the output blobs
    (default: the phase's outputs that are not losses or metrics, plus every blob a
    loss or metric read as its prediction)."""
    full = build_graph(spec, phase, stages)
    kept = [n for n in full.nodes if not drops(n)]
    dropped = {n.name: n.spec.type for n in full.nodes if drops(n)}
    wanted = _check_outputs(spec, full, outputs) if outputs else _default_outputs(full)
    if not wanted:
        raise ConfigErrors([spec.locate(ConfigError(
            f"the deploy form of net '{spec.name}' has no outputs: every layer of phase {full.phase} is a loss "
            "or a metric", ("layers",)))])
    needed = set(wanted)
    live: list[Node] = []
    for node in reversed(kept):  # liveness: a layer stays if a later layer or an output reads a top of it
        if needed & set(node.tops):
            live.append(node)
            needed -= set(node.tops)
            needed |= set(node.bottoms)
    live.reverse()
    inputs = [name for name in full.inputs if name in needed]
    layers = []
    for node in live:
        doc = node.spec.model_dump(mode="json", exclude_unset=True)
        doc.pop("include", None)  # the phase is resolved: the deploy net is the same in every phase
        doc.pop("exclude", None)
        # explicit wiring: "bottom = previous layer's top" would change once layers are gone
        doc["bottom"], doc["top"] = list(node.bottoms), list(node.tops)
        layers.append(doc)
    source_inputs = spec.model_dump(mode="json", exclude_unset=True)["inputs"]
    config = {"name": spec.name, "inputs": {k: source_inputs[k] for k in inputs}, "layers": layers}
    if spec.plugins:
        config["plugins"] = list(spec.plugins)
    deploy_spec = net_from_source(parse_yaml(to_yaml(config), f"<deploy form of {spec.name}>"))
    graph = build_graph(deploy_spec, "TEST")
    graph.outputs = list(wanted)  # a top read later can still be asked for as an output
    return Deploy(config, deploy_spec, graph, dropped,
                  {n.name: n.spec.type for n in kept if n not in live}, [k for k in full.inputs if k not in inputs])


def _default_outputs(graph: Graph) -> list[str]:
    dropped_tops = {t for n in graph.nodes if drops(n) for t in n.tops}
    out = [t for t in graph.outputs if t not in dropped_tops]
    for node in graph.nodes:
        if drops(node) and node.tops and node.bottoms:
            pred = node.bottoms[0]
            if pred not in graph.inputs and pred not in out:
                out.append(pred)
    # in blob order of appearance, so `ip2` comes before an auxiliary head declared later
    order = {t: i for i, n in enumerate(graph.nodes) for t in n.tops}
    return sorted(out, key=lambda t: order.get(t, -1))


def _check_outputs(spec: NetSpec, graph: Graph, outputs) -> list[str]:
    blobs = {t for n in graph.nodes if not drops(n) for t in n.tops}
    errors = []
    for name in outputs:
        if name not in blobs:
            what = ("an input of the net; outputs are tops of layers" if name in graph.inputs
                    else f"the top of a loss or metric in phase {graph.phase}, which the deploy net leaves out"
                    if name in graph.blobs else f"not the top of any layer in phase {graph.phase}")
            errors.append(ConfigError(f"output '{name}' is {what}", file="--top",
                                      hint=did_you_mean(name, blobs, show_all=8)))
    if errors:
        raise ConfigErrors(errors)
    return list(dict.fromkeys(outputs))


class DeployModule(nn.Module):
    """A deploy Net with a plain signature: positional inputs in declared order, and a
    tuple of the output tops (or a dict by top name) for tracers and exporters.
    Parameters keep the Net's names (``conv1.weight``), unless a layer's name cannot be an
    attribute in the code that TorchScript, torch.export and ONNX write (see
    ``_attribute``): a layer called ``class``, ``forward`` or ``code`` exports as ``class_``,
    ``forward_``, ``code_``."""

    def __init__(self, net: Net, *, as_dict: bool = False):
        super().__init__()
        self.input_names = tuple(net.input_names)
        self.output_names = tuple(net.outputs)
        self.as_dict = as_dict
        schedule = []
        for node in net.graph.nodes:
            schedule.append((_submodule(net, node.name), tuple(node.bottoms), tuple(node.tops)))
        self.schedule = schedule  # a plain list (set first: a layer may be called "schedule")
        # the same module objects; scopes of dotted names rebuilt where a part is renamed
        self._modules.update(_safe_tree(net._modules, _reserved() | set(vars(self))))
        self.train(False)

    def forward(self, *inputs: torch.Tensor):
        blobs = run_schedule(self.schedule, dict(zip(self.input_names, inputs)))
        if self.as_dict:
            return {t: blobs[t] for t in self.output_names}
        return tuple(blobs[t] for t in self.output_names)


def _reserved() -> set[str]:
    """Names a submodule must not take: nn.Module's own attributes (``forward``,
    ``training``) and torch.fx GraphModule's (``code``, ``graph``), which torch.export
    makes every submodule an attribute of."""
    import torch.fx

    return {n for n in dir(torch.fx.GraphModule) if not n.startswith("__")} | set(dir(nn.Module))


def _attribute(name: str, taken: set[str], reserved: set[str]) -> str:
    """``name``, or the nearest safe Python attribute name to it not in ``taken``: written
    exporters emit ``self.<name>``, which a keyword (``class``, ``in``, ``None``), a
    non-identifier or a reserved name breaks."""
    if name.isidentifier() and not keyword.iskeyword(name) and name not in reserved | taken:
        return name
    safe = re.sub(r"\W", "_", name)
    safe = f"_{safe}" if not safe or safe[0].isdigit() else safe
    while keyword.iskeyword(safe) or safe in reserved or safe in taken:
        safe += "_"
    return safe


def _safe_tree(modules: dict[str, nn.Module], reserved: set[str]) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {}
    for name, module in modules.items():
        if type(module) is nn.Module:  # a scope of dotted layer names (Net._insert)
            scope = nn.Module()
            scope._modules.update(_safe_tree(module._modules, _reserved()))
            module = scope
        out[_attribute(name, set(out), reserved)] = module
    return out


def _submodule(root: nn.Module, dotted: str) -> nn.Module:
    # through _modules, not getattr: a layer may be called "forward" or "training"
    module = root
    for part in dotted.split("."):
        module = module._modules[part]
    return module


def example_inputs(graph: Graph, batch: int, seed: int = 0,
                   int_high: dict[str, int] | None = None) -> tuple[torch.Tensor, ...]:
    """Random inputs of the graph's shapes and dtypes with a leading batch: floats
    N(0, 1), integers in [0, int_high[name]) (default 2: valid labels and token ids of
    any vocabulary), bools at random."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, blob in graph.inputs.items():
        dtype = getattr(torch, blob.dtype)
        shape = (batch, *blob.shape)
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(dtype))
        elif dtype is torch.bool:
            out.append(torch.randint(0, 2, shape, generator=gen).bool())
        else:
            out.append(torch.randint(0, max(1, (int_high or {}).get(name, 2)), shape, generator=gen).to(dtype))
    return tuple(out)
