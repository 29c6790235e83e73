"""Net: the ``nn.Module`` that runs a checked Graph.

The schedule (module, bottom names, top names) is computed once at build time;
``forward`` only looks blobs up by name and calls the layers. Parameters are named
``<layer>.<blob>`` (``conv1.weight``), so weights move between nets by layer name;
a dotted layer name (``stage2.block1.conv1``) becomes nested modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from netcfg.errors import ConfigError, ConfigErrors, did_you_mean
from netcfg.layers.base import FLOAT_DTYPES
from netcfg.net.graph import Graph

__all__ = ["Net", "ParamInfo", "run_schedule", "compute_dtype", "float_inputs"]


Schedule = list[tuple[nn.Module, tuple[str, ...], tuple[str, ...]]]


def run_schedule(schedule: Schedule, blobs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run (module, bottoms, tops) steps in order over ``blobs`` (the inputs), adding each
    step's tops; returns ``blobs``. A top that equals a bottom just rebinds the name."""
    for module, bottoms, tops in schedule:
        out = module(*[blobs[b] for b in bottoms])
        if len(tops) == 1:
            blobs[tops[0]] = out
        else:
            for t, o in zip(tops, out):
                blobs[t] = o
    return blobs


def compute_dtype(in_blobs) -> torch.dtype | None:
    """The dtype a layer's weights are made in: that of its first floating-point bottom, so a
    net whose inputs are declared float64 (or float16, bfloat16) is built in that precision
    and runs as its shape table says; None for a layer that reads integers only (Embed)."""
    for blob in in_blobs:
        if blob.dtype in FLOAT_DTYPES:
            return getattr(torch, blob.dtype)
    return None


def float_inputs(graph: Graph) -> dict[str, torch.dtype]:
    """The dtype each floating-point input of ``graph`` is to be fed in: the declared one,
    which the layers reading it are built in (``BatchLoader.deliver`` takes this)."""
    return {name: getattr(torch, b.dtype) for name, b in graph.inputs.items() if b.dtype in FLOAT_DTYPES}


@dataclass(frozen=True)
class ParamInfo:
    """A learnable tensor of the net with its solver multipliers."""

    name: str
    param: nn.Parameter
    lr_mult: float
    decay_mult: float


class Net(nn.Module):
    """A net built from a Graph; ``net(**inputs)`` returns every output top by name."""

    def __init__(self, graph: Graph, share: Net | None = None):
        """Build every layer of ``graph``. With ``share`` (Caffe's test net), a layer
        whose spec and input shapes equal one of ``share``'s reuses its module."""
        super().__init__()
        self.graph = graph
        self.input_names: tuple[str, ...] = tuple(graph.inputs)
        # off where every batch was checked once already (the Solver's loaders): no per-step cost
        self.check_input_tensors = True
        self.outputs: tuple[str, ...] = tuple(graph.outputs)
        self.loss_weights: dict[str, float] = dict(graph.losses)
        self._schedule: Schedule = []
        self._infos: list[ParamInfo] = []
        self._layers: dict[str, tuple] = {}  # name -> (spec, in_blobs, module)
        shared: dict[str, tuple[str, nn.Parameter]] = {}
        for node in graph.nodes:
            theirs = share._layers.get(node.name) if share is not None else None
            if theirs is not None and theirs[0] == node.spec and theirs[1] == node.in_blobs:
                module = theirs[2]
            else:
                module = node.spec.build(node.in_blobs)
                node.spec.fill(module)
                dtype = compute_dtype(node.in_blobs)
                if dtype is not None and dtype != torch.float32:  # the dtype the graph promised its tops
                    module.to(dtype)
            self._layers[node.name] = (node.spec, node.in_blobs, module)
            self._insert(node.name, module)
            self._schedule.append((module, tuple(node.bottoms), tuple(node.tops)))
            self._bind_params(node, module, shared)
        self._first_reader = _first_weighted_readers(graph, self._layers)
        # output -> (the module that computes it, which of its tops)
        self._producers = {t: (m, i) for m, _, tops in self._schedule for i, t in enumerate(tops)}
        self.train(graph.phase == "TRAIN")  # Dropout/BatchNorm follow the phase

    def _insert(self, name: str, module: nn.Module) -> None:
        parent: nn.Module = self
        *scopes, leaf = name.split(".")
        for s in scopes:
            child = parent._modules.get(s)
            if child is None:
                child = nn.Module()
                parent._modules[s] = child
            parent = child
        # straight into _modules: a layer may be called "forward" or "training"
        parent._modules[leaf] = module

    def _bind_params(self, node, module: nn.Module, shared: dict) -> None:
        spec = node.spec
        for blob, ps in spec.param_entries():
            p = module.get_parameter(blob)
            lr_mult, decay_mult = (ps.lr_mult, ps.decay_mult) if ps else (1.0, 1.0)
            if ps is not None and ps.name is not None:
                if ps.name in shared:  # tie to the first owner's tensor
                    owner_name, owner = shared[ps.name]
                    _set_param(module, blob, owner)
                    continue
                shared[ps.name] = (f"{node.name}.{blob}", p)
            if lr_mult == 0:
                p.requires_grad_(False)
            self._infos.append(ParamInfo(f"{node.name}.{blob}", p, lr_mult, decay_mult))
        listed = {id(i.param) for i in self._infos}
        for sub, p in module.named_parameters():  # e.g. parameters inside a Residual body
            if id(p) not in listed:
                self._infos.append(ParamInfo(f"{node.name}.{sub}", p, 1.0, 1.0))

    def module_of(self, name: str) -> nn.Module:
        """The module of layer ``name`` (``net.loss`` is a method, not a layer called loss). Not
        ``layer``: a method hides a layer of its name from torch.func.functional_call."""
        return self._layers[name][2]

    def param_infos(self) -> list[ParamInfo]:
        """Every distinct learnable tensor with its lr_mult/decay_mult (shared ones once)."""
        return list(self._infos)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]  # constant under torch.compile
        if missing:
            raise TypeError(_missing_inputs(self.graph.name, missing, inputs))
        if self.check_input_tensors and not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            _check_input_tensors(self.graph, inputs)  # a traced graph's shapes are fixed: checked when traced
            self._check_float_inputs(inputs)
        blobs = run_schedule(self._schedule, dict(inputs))
        return {t: blobs[t] for t in self.outputs}

    def _check_float_inputs(self, inputs: dict[str, torch.Tensor]) -> None:
        """A float input of another dtype than the weights of the first layer that computes with
        it (float32 into a float64 net, or float64 into a float32 one) is named here, with the
        cast to make, rather than as torch's "mat1 and mat2 must have the same dtype" inside that
        layer. The weights are looked at now, so ``net.double()`` and ``net.half()`` are followed."""
        for name, layer in self._first_reader.items():
            weight = next(self._layers[layer][2].parameters(), None)
            t = inputs[name]
            if weight is not None and t.is_floating_point() and t.dtype != weight.dtype:
                want = str(weight.dtype).removeprefix("torch.")
                raise ValueError(f"net '{self.graph.name}': input '{name}' is {str(t.dtype).removeprefix('torch.')}, "
                                 f"but layer '{layer}', which computes with it, holds {want} weights "
                                 f"(x.to(torch.{want}))")

    def loss(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The total loss: the sum of every loss top times its loss_weight (a non-loss top's
        elements summed, as Caffe does, in at least float32: a float16 feature map's sum
        passes 65504 long before the loss is large)."""
        total = None
        for top, w in self.loss_weights.items():
            v = outputs[top]
            v = v if v.dim() == 0 else v.sum(dtype=torch.promote_types(v.dtype, torch.float32))
            term = v if w == 1.0 else v * w
            total = term if total is None else total + term
        if total is None:
            raise ConfigErrors([ConfigError(f"net '{self.graph.name}' has no loss in phase {self.graph.phase}",
                                            ("layers",), hint="add a loss layer or a loss_weight")])
        return total

    def element_weights(self, output: str) -> torch.Tensor | None:
        """How many samples each element of ``output`` averaged over in the last forward, for an
        output its layer weighs element by element (Accuracy's per-class top: each class's
        labels in the batch); None for others. A test sums with these (``evaluate.sum_outputs``)."""
        module, i = self._producers.get(output, (None, 0))  # an input is its own output
        weights = getattr(module, "element_weights", None)
        return weights(i) if weights is not None else None

    @torch.no_grad()
    def first_nonfinite(self, **inputs: torch.Tensor) -> tuple[str, str] | None:
        """(layer, top) of the first output that holds NaN or inf, or None."""
        for name, t in inputs.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                return ("input", name)
        blobs = dict(inputs)
        for (module, bottoms, tops), node in zip(self._schedule, self.graph.nodes):
            out = module(*[blobs[b] for b in bottoms])
            outs = (out,) if len(tops) == 1 else tuple(out)
            for t, o in zip(tops, outs):
                blobs[t] = o
                if o.is_floating_point() and not torch.isfinite(o).all():
                    return (node.name, t)
        return None


def _missing_inputs(net: str, missing: list[str], given) -> str:
    hints = [h for h in (did_you_mean(n, given, show_all=0) for n in missing) if h]
    return (f"net '{net}' needs the input(s) {', '.join(map(repr, missing))}; given: {sorted(given) or 'none'}"
            + (f" ({'; '.join(hints)})" if hints else ""))


def _first_weighted_readers(graph: Graph, layers: dict[str, tuple]) -> dict[str, str]:
    """Float input -> the first layer with weights that reads it, directly or through layers
    that keep its dtype (a ReLU, a Pooling): whose weights' dtype the input must have."""
    origin = {name: name for name, b in graph.inputs.items() if b.dtype in FLOAT_DTYPES}  # blob -> input
    found: dict[str, str] = {}
    for node in graph.nodes:
        src = next((origin[b] for b in node.bottoms if b in origin), None)
        if src is not None and src not in found and next(layers[node.name][2].parameters(), None) is not None:
            found[src] = node.name
        for t, blob in zip(node.tops, node.out_blobs):
            origin.pop(t, None)
            if src is not None and blob.dtype == graph.inputs[src].dtype:
                origin[t] = src
    return found


def _check_input_tensors(graph: Graph, inputs: dict) -> None:
    """Each declared input is a tensor of a batch of the declared per-sample shape, with a
    float dtype for a float input and an integer one for an integer input, so a mistake is
    named here rather than as a shape error deep inside some layer."""
    for name, blob in graph.inputs.items():
        t = inputs[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"net '{graph.name}': input '{name}' must be a torch.Tensor, got {type(t).__name__}"
                            + (" (torch.from_numpy(x) converts it)" if type(t).__module__ == "numpy" else ""))
        if tuple(t.shape[1:]) != blob.shape or t.dim() != len(blob.shape) + 1:
            raise ValueError(f"net '{graph.name}': input '{name}' has shape {list(t.shape)}, but the net declares "
                             f"{list(blob.shape)} per sample, so a batch of N is {['N', *blob.shape]}".replace("'N'", "N"))
        want_float = blob.dtype.startswith(("float", "bfloat"))
        if t.is_floating_point() != want_float or (t.dtype == torch.bool) != (blob.dtype == "bool"):
            raise ValueError(f"net '{graph.name}': input '{name}' is {str(t.dtype).removeprefix('torch.')}, but the "
                             f"net declares {blob.dtype}" + ("" if want_float else f" (x.to(torch.{blob.dtype}))"))


def _set_param(module: nn.Module, path: str, p: nn.Parameter) -> None:
    *scopes, leaf = path.split(".")
    for s in scopes:
        module = getattr(module, s)
    setattr(module, leaf, p)
