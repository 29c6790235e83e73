"""NetSpec -> checked Graph: phase filtering, blob wiring, shape inference, counts.

Caffe's semantics: layers run in file order; a bottom names a blob produced by an
input or an earlier layer; a top equal to a bottom is in place; a blob read by
several layers fans out; blobs nobody reads at the end are the net's outputs. All
of it is checked here, before any weight is allocated: shapes by each layer's
``infer``, parameter counts by building the layer on the meta device.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

from netcfg.errors import ConfigError, ConfigErrors, ShapeError, did_you_mean
from netcfg.layers.base import Blob, FillerSpec, LayerSpec
from netcfg.layers.fillers import shapes_only
from netcfg.net.spec import NetSpec

__all__ = ["Node", "Graph", "build_graph", "layer_active"]


@dataclass
class Node:
    """One layer of a graph with its wiring and inferred blobs."""

    spec: LayerSpec
    bottoms: list[str]
    tops: list[str]
    in_blobs: list[Blob]
    out_blobs: list[Blob]
    params: int = 0
    flops: int = 0
    loss_weights: list[float] = field(default_factory=list)
    trainable: int = 0  # of ``params``, those with lr_mult > 0

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Graph:
    """A net for one phase: its inputs, layers in run order, outputs and loss weights."""

    name: str
    phase: str
    inputs: dict[str, Blob]
    nodes: list[Node]
    outputs: list[str]
    blobs: dict[str, Blob]
    losses: dict[str, float]  # top -> loss_weight, nonzero only
    spec: NetSpec | None = None
    batch_means: dict[str, str] = field(default_factory=dict)  # blob -> the loss or metric layer that averaged it

    @property
    def total_params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def trainable_params(self) -> int:
        """Parameters with lr_mult > 0 (``freeze:`` in a solver is applied later, to the module)."""
        return sum(n.trainable for n in self.nodes)

    @property
    def flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    def min_batch(self) -> tuple[int, Node | None]:
        """(the fewest samples a batch must hold in this phase, the layer that needs them):
        BatchNorm's batch statistics of a (C,) blob need two."""
        need, node = 1, None
        for n in self.nodes:
            m = n.spec.min_batch(n.in_blobs, self.phase)
            if m > need:
                need, node = m, n
        return need, node

    def min_batch_reason(self) -> str:
        """Why a batch needs ``min_batch()`` samples, in words, for the errors that refuse fewer."""
        need, node = self.min_batch()
        return (f"layer '{node.name}' ({node.spec.type}) needs at least {need} samples a batch in {self.phase} "
                f"(batch statistics of its {list(node.in_blobs[0].shape)} input)") if node else ""


def layer_active(layer: LayerSpec, phase: str, stages: set[str], level: int = 0) -> bool:
    """Caffe's NetStateRule logic."""
    if layer.include and not any(r.matches(phase, stages, level) for r in layer.include):
        return False
    return not any(r.matches(phase, stages, level) for r in layer.exclude)


def build_graph(spec: NetSpec, phase: str = "TRAIN", stages: tuple[str, ...] | list[str] = (), level: int = 0) -> Graph:
    """Wire and shape-check the layers of ``spec`` active in ``phase``; raise ConfigErrors."""
    if not isinstance(phase, str) or phase.upper() not in ("TRAIN", "TEST"):
        raise ConfigError(f"phase must be TRAIN or TEST, got {phase!r}", file="phase")
    phase = phase.upper()
    stage_set = {stages} if isinstance(stages, str) else set(stages)
    errors: list[ConfigError] = []
    inputs = {name: Blob(tuple(i.shape), i.dtype) for name, i in spec.inputs.items()}
    blobs: dict[str, Blob | None] = dict(inputs)  # an in-place top rebinds a name; `inputs` keeps the declared blob
    producers: dict[str, LayerSpec | None] = {name: None for name in spec.inputs}
    available: dict[str, None] = {}  # insertion-ordered set: produced and not yet read
    nodes: list[Node] = []
    seen_names: dict[str, LayerSpec] = {}
    scopes: dict[str, str] = {}  # "a" and "a.b" for a layer "a.b.c" -> "a.b.c"
    batch_means: dict[str, str] = {}  # blob -> the loss or metric layer that averaged it over the batch
    later_tops = _later_tops(spec.layers)
    prev_top: str | None = next(iter(spec.inputs))
    shared: dict[str, tuple] = {}

    def err(layer: LayerSpec, msg: str, key: str | tuple | None = None, hint: str | None = None) -> None:
        path = layer._path + (key if isinstance(key, tuple) else (key,) if key else ())
        errors.append(spec.locate(ConfigError(msg, path, hint=hint)))

    for idx, layer in enumerate(spec.layers):
        if not layer_active(layer, phase, stage_set, level):
            continue
        cls = type(layer)
        if layer.name in seen_names:
            first = seen_names[layer.name]._path
            err(layer, f"duplicate layer name '{layer.name}'", "name",
                hint=f"first used by the layer at {spec.locate(ConfigError('', first)).where}")
            continue
        clash = _scope_clash(layer.name, seen_names, scopes)
        if clash is not None:  # Net nests `a.b` inside `a`: one name's module would hide the other's
            err(layer, f"layer name '{layer.name}' and layer '{clash}' nest into each other (a dot makes a scope)",
                "name", hint="rename one of them")
            continue
        seen_names[layer.name] = layer
        parts = layer.name.split(".")
        scopes.update({".".join(parts[:i]): layer.name for i in range(1, len(parts))})
        bottoms = list(layer.bottom) if layer.bottom is not None else ([prev_top] if prev_top else [])
        tops = list(layer.top) if layer.top is not None else _default_tops(layer)
        # the next layer without a bottom reads this one's top, even when this one fails below
        # (a poisoned top keeps it quiet; the blob before this layer would cascade errors)
        prev_top = tops[0] if tops else prev_top
        if not _count_ok(bottoms, cls.n_bottoms):
            err(layer, f"{layer.type} takes {_count_text(cls.n_bottoms)} bottom(s), got {len(bottoms)}: {bottoms}",
                "bottom" if layer.bottom is not None else None)
            _poison(tops, blobs, producers, layer)
            continue
        if not _count_ok(tops, cls.n_tops):
            err(layer, f"{layer.type} makes {_count_text(cls.n_tops)} top(s), got {len(tops)}: {tops}", "top")
            _poison(tops, blobs, producers, layer)
            continue
        missing = False
        for b in bottoms:
            if b in blobs:
                continue
            missing = True
            later = later_tops.get(b)
            if later is not None and later[0] > idx:
                err(layer, f"bottom '{b}' is produced by layer '{later[1]}', which comes later; layers run in "
                           "file order, so this is a cycle or a misplaced layer", "bottom")
            elif later is not None and later[0] < idx:  # its producer's include/exclude leave it out here
                err(layer, f"bottom '{b}' is made by layer '{later[1]}', which is not in phase {phase}"
                           + (f" with stages {sorted(stage_set)}" if stage_set else ""), "bottom",
                    hint=f"give this layer the same include/exclude rules, or let '{later[1]}' run in {phase}")
            else:
                err(layer, f"bottom '{b}' is not an input or the top of an earlier layer", "bottom",
                    hint=did_you_mean(b, blobs, show_all=8))
        if missing:
            _poison(tops, blobs, producers, layer)
            continue
        for t in tops:
            if t in blobs and t not in bottoms:
                owner = producers.get(t)
                who = f"layer '{owner.name}'" if owner is not None else "an input"
                err(layer, f"top '{t}' is already produced by {who}; only an in-place layer (top = bottom) may reuse a name", "top")
                missing = True
        if missing:
            continue
        means = [b for b in bottoms if b in batch_means]
        if means and not cls.reads_batch_means:
            b = means[0]
            err(layer, f"bottom '{b}' is a mean over the batch, made by layer '{batch_means[b]}' (it has no batch axis); "
                       f"{layer.type} works on per-sample blobs", "bottom" if layer.bottom is not None else None,
                hint="read the blob the loss or metric reads instead; Eltwise (to add losses) and Silence take it")
            _poison(tops, blobs, producers, layer)
            continue
        in_blobs = [blobs[b] for b in bottoms]
        if any(b is None for b in in_blobs):  # upstream error already reported
            _poison(tops, blobs, producers, layer)
            continue
        try:
            out_blobs = layer.infer(in_blobs)
            if len(out_blobs) != len(tops):
                raise ShapeError(f"{layer.type} makes {len(out_blobs)} top(s) here, but {len(tops)} are named: {tops}", key="top")
            weights = layer.loss_weights(len(tops))
            if len(weights) != len(tops):
                raise ShapeError(f"loss_weight has {len(weights)} value(s) for {len(tops)} top(s)", key="loss_weight")
            layer.check_loss_tops(out_blobs, weights)
            params, trainable = _count_params(layer, in_blobs, shared)
        except ShapeError as e:
            shapes = ", ".join(f"{b}: {s}" for b, s in zip(bottoms, in_blobs))
            err(layer, f"{layer.type} layer '{layer.name}': {e} [inputs {shapes}]", e.key)
            _poison(tops, blobs, producers, layer)
            continue
        for b in bottoms:
            available.pop(b, None)
        for t, blob in zip(tops, out_blobs):
            blobs[t] = blob
            producers[t] = layer
            available[t] = None
            if cls.reduces_batch or (means and len(means) == len(bottoms)):
                batch_means[t] = layer.name
            else:
                batch_means.pop(t, None)
        nodes.append(Node(layer, bottoms, tops, in_blobs, out_blobs, params,
                          layer.flops(in_blobs, out_blobs), weights, trainable))
    if not errors and not nodes:
        errors.append(spec.locate(ConfigError(f"no layer is active in phase {phase}", ("layers",))))
    if errors:
        raise ConfigErrors(errors)
    losses = {t: w for n in nodes for t, w in zip(n.tops, n.loss_weights) if w}
    graph = Graph(spec.name, phase, inputs,
                  nodes, list(available), {k: v for k, v in blobs.items() if v is not None}, losses, spec,
                  batch_means)
    _check_memory(graph)
    return graph


def _scope_clash(name: str, seen: dict[str, LayerSpec], scopes: dict[str, str]) -> str | None:
    """An earlier layer named like a scope of ``name`` (``a`` for ``a.b``), or inside ``name``'s scope."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        if ".".join(parts[:i]) in seen:
            return ".".join(parts[:i])
    return scopes.get(name)


def _default_tops(layer: LayerSpec) -> list[str]:
    n = layer.num_tops()
    return [layer.name] if n == 1 else [f"{layer.name}_{i}" for i in range(n)]


def _later_tops(layers: list[LayerSpec]) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for i, layer in enumerate(layers):
        for t in layer.top if layer.top is not None else [layer.name]:
            out.setdefault(t, (i, layer.name))
    return out


def _poison(tops: list[str], blobs: dict, producers: dict, layer: LayerSpec) -> None:
    """Mark a failed layer's tops as unknown so downstream layers stay quiet."""
    for t in tops:
        blobs.setdefault(t, None)
        producers.setdefault(t, layer)


def _count_ok(items: list, bounds: tuple[int, int | None]) -> bool:
    lo, hi = bounds
    return len(items) >= lo and (hi is None or len(items) <= hi)


def _count_text(bounds: tuple[int, int | None]) -> str:
    lo, hi = bounds
    if hi == lo:
        return str(lo)
    return f"at least {lo}" if hi is None else f"{lo} to {hi}"


def _count_params(layer: LayerSpec, in_blobs: list[Blob], shared: dict[str, tuple]) -> tuple[int, int]:
    """(learnable parameters of ``layer``, those of them with lr_mult > 0), counting a shared
    (named) blob once, where it is first declared."""
    try:
        with torch.device("meta"):
            module = layer.build(in_blobs)
    except (RuntimeError, OverflowError, TypeError) as e:  # sizes past int64 (num_output: 1e19): bad input
        if not any(w in str(e).lower() for w in ("overflow", "negative dimension", "too large")):
            raise
        raise ShapeError("its parameters would have more elements than a tensor can hold") from None
    try:
        with shapes_only():  # a filler that does not fit its tensor (bilinear on a matrix) fails here
            layer.fill(module)
    except ValueError as e:
        fillers = [k for k, v in layer if isinstance(v, FillerSpec) and v.type in str(e)]
        raise ShapeError(str(e), key=fillers[0] if len(fillers) == 1 else None) from None
    names = layer.blob_names()
    if len(layer.param) > len(names):
        raise ShapeError(f"param lists {len(layer.param)} entries but {layer.type} has "
                         f"{len(names)} learnable blob(s): {names or 'none'}", key="param")
    total = trainable = 0
    counted = set()
    for i, (blob, ps) in enumerate(layer.param_entries()):
        t = module.get_parameter(blob)
        counted.add(id(t))
        share = ps.name if ps is not None else None
        if share is not None:
            if share in shared:
                owner, shape, owner_ps = shared[share]
                if shape != tuple(t.shape):
                    raise ShapeError(f"shared param '{share}' has shape {list(t.shape)} here but "
                                     f"{list(shape)} in layer '{owner}'", key="param")
                _check_shared_mults(share, ps, owner, owner_ps, i if ps in layer.param[i:i + 1] else None)
                continue
            shared[share] = (layer.name, tuple(t.shape), ps)
        total += t.numel()
        trainable += t.numel() if ps is None or ps.lr_mult > 0 else 0
    # parameters the layer does not list as blobs (e.g. inside a Residual body)
    rest = sum(p.numel() for p in module.parameters() if id(p) not in counted)
    return total + rest, trainable + rest


def _check_shared_mults(share: str, ps, owner: str, owner_ps, index: int | None) -> None:
    """A shared blob trains at the lr_mult and decay_mult of the layer that declares it first:
    a different one written here (``param[index]``) would be ignored, so it is refused (Caffe's
    Net::AppendParam refuses it too, "has mismatched lr_mult")."""
    for key in ("lr_mult", "decay_mult"):
        mine, theirs = getattr(ps, key), getattr(owner_ps, key)
        if key in ps.model_fields_set and mine != theirs:
            default = "" if key in owner_ps.model_fields_set else " (the default)"
            raise ShapeError(f"shared param '{share}' has {key} {mine:g} here but {theirs:g}{default} in layer "
                             f"'{owner}', which declares it first; one blob trains at one {key}: write the same "
                             f"{key} in both, or leave it out here", key="param" if index is None else ("param", index, key))


def _check_memory(graph: Graph) -> None:
    """Refuse at check time a net whose parameters, or one sample of its inputs, could not fit in RAM."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    for name, blob in graph.inputs.items():
        size = numel(blob.shape) * getattr(torch, blob.dtype).itemsize
        if size > ram:
            err = ConfigError(f"one sample of input '{name}' ({' x '.join(map(str, blob.shape))} {blob.dtype}) is "
                              f"{size / 2**30:,.1f} GiB, more than this machine's {ram / 2**30:.1f} GiB of memory",
                              ("inputs", name), hint="inputs: are per-sample shapes, without the batch dimension")
            raise ConfigErrors([graph.spec.locate(err) if graph.spec else err])
    need = graph.total_params * 4 * 3  # fp32 weights, gradients, one optimizer slot
    if need > ram:
        big = max(graph.nodes, key=lambda n: n.params)
        err = ConfigError(
            f"the net has {graph.total_params:,} parameters: about {need / 2**30:.1f} GiB to train in fp32, "
            f"more than this machine's {ram / 2**30:.1f} GiB of memory (largest: layer '{big.name}', "
            f"{big.params:,} parameters)", big.spec._path, hint="reduce num_output or the input size")
        raise ConfigErrors([graph.spec.locate(err) if graph.spec else err])


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
