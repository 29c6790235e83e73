"""Per-layer forward and backward time of a net (Caffe's ``caffe time``), and the whole net's.

How each number is measured, so that it can be trusted:

* Per layer, forward: the layers run one at a time in the net's schedule, each on
  *detached* copies of its inputs (leaves of their own autograd graph), with the
  clock read before and after the call. On CUDA the clock synchronises the device
  first, so a layer's time is its kernels' time, not its launch time.
* Per layer, backward: Caffe's way, each layer's backward on its own. Walking the
  layers in reverse, ``torch.autograd.backward`` runs on that layer's outputs only,
  with the gradients its consumers handed back; because its inputs are leaves, the
  call computes exactly this layer's input and parameter gradients and stops. Adding
  up fan-out gradients happens between the clock reads, as Caffe's Split layer would
  do it, but is not counted.
* The whole net: one ordinary ``net(**inputs)``, ``net.loss``, ``loss.backward()``,
  timed end to end. This is what a training step costs (minus the optimizer), and
  images/s comes from it. The layer sums differ from it by the per-layer
  synchronisation and bookkeeping; both are shown.

Every number is the median over ``iterations`` after ``warmup`` unrecorded ones; the
layer-wise pass and the whole-net pass alternate, so both see the same machine load.
Inputs are random (float) or zeros (integer labels and indices: class 0 is always
valid), of the net's declared shapes.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field

import torch

from netcfg.layers.base import FLOAT_DTYPES
from netcfg.net import Graph, Net
from netcfg.solver.layout import to_layout

__all__ = ["LayerTime", "Timing", "time_net", "synthetic_inputs", "layer_module", "layerwise_pass"]


@dataclass
class LayerTime:
    """Median milliseconds of one layer; ``backward_ms`` is None when no gradient reaches it."""

    name: str
    type: str
    forward_ms: float
    backward_ms: float | None

    @property
    def total_ms(self) -> float:
        return self.forward_ms + (self.backward_ms or 0.0)


@dataclass
class Timing:
    """What ``time_net`` measured."""

    net: str
    phase: str
    device: str
    batch_size: int
    iterations: int
    warmup: int
    layers: list[LayerTime]                 # in the net's run order
    net_forward_ms: float                   # whole net, one pass (loss included)
    net_backward_ms: float | None           # whole net, loss.backward(); None without a loss
    precision: str = "fp32"
    threads: int = field(default_factory=torch.get_num_threads)
    channels_last: bool = False             # image tensors in NHWC, as a conv net trains by default

    @property
    def layer_forward_ms(self) -> float:
        return sum(t.forward_ms for t in self.layers)

    @property
    def layer_backward_ms(self) -> float:
        return sum(t.backward_ms or 0.0 for t in self.layers)

    @property
    def layer_total_ms(self) -> float:
        return self.layer_forward_ms + self.layer_backward_ms

    @property
    def net_step_ms(self) -> float:
        return self.net_forward_ms + (self.net_backward_ms or 0.0)

    @property
    def images_per_s(self) -> float:
        """Training throughput of forward + backward (forward only without a loss)."""
        return self.batch_size / (self.net_step_ms / 1000.0) if self.net_step_ms > 0 else float("inf")

    def share(self, layer: LayerTime) -> float:
        """The layer's fraction of the summed layer time (forward + backward)."""
        total = self.layer_total_ms
        return layer.total_ms / total if total > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "net": self.net, "phase": self.phase, "device": self.device, "precision": self.precision,
            "memory_format": "channels_last" if self.channels_last else "contiguous",
            "batch_size": self.batch_size,
            "iterations": self.iterations, "warmup": self.warmup, "threads": self.threads,
            "layers": [{"name": t.name, "type": t.type, "forward_ms": t.forward_ms, "backward_ms": t.backward_ms,
                        "total_ms": t.total_ms, "share": self.share(t)} for t in self.layers],
            "layer_sum": {"forward_ms": self.layer_forward_ms, "backward_ms": self.layer_backward_ms,
                          "total_ms": self.layer_total_ms},
            "whole_net": {"forward_ms": self.net_forward_ms, "backward_ms": self.net_backward_ms,
                          "forward_backward_ms": self.net_step_ms, "images_per_s": self.images_per_s},
        }


def synthetic_inputs(graph: Graph, batch_size: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch for every input: standard normal floats, zeros for integer dtypes."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, blob in graph.inputs.items():
        shape = (batch_size, *blob.shape)
        dtype = getattr(torch, blob.dtype)
        if blob.dtype in FLOAT_DTYPES:
            t = torch.randn(shape, generator=gen).to(dtype)
        else:
            t = torch.zeros(shape, dtype=dtype)
        out[name] = t.to(device)
    return out


def layer_module(net: Net, name: str) -> torch.nn.Module:
    """The module of layer ``name``; through ``_modules``, since a layer may be called
    ``loss`` or ``forward`` (names that ``getattr`` would resolve to Net's methods)."""
    module: torch.nn.Module = net
    for part in name.split("."):
        module = module._modules[part]
    return module


class _Clock:
    """perf_counter, after waiting for the device's queued work."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()
        return time.perf_counter()


def layerwise_pass(net: Net, inputs: dict[str, torch.Tensor], clock: _Clock,
                   autocast=contextlib.nullcontext) -> tuple[list[float], list[float | None]]:
    """One forward and one backward, layer by layer; seconds per layer."""
    nodes = net.graph.nodes
    blobs: dict[str, tuple[torch.Tensor, int | None, int]] = {k: (v, None, 0) for k, v in inputs.items()}
    steps = []  # per node: (leaf inputs, outputs, (producer, output index) per input)
    fwd: list[float] = []
    for i, node in enumerate(nodes):
        module = layer_module(net, node.name)
        leaves, refs = [], []
        for b in node.bottoms:
            t, producer, k = blobs[b]
            leaf = t.detach()
            if t.requires_grad:
                leaf.requires_grad_(True)
            leaves.append(leaf)
            refs.append((producer, k))
        with autocast():
            t0 = clock()
            out = module(*leaves)
            t1 = clock()
        fwd.append(t1 - t0)
        outs = (out,) if len(node.tops) == 1 else tuple(out)
        for k, (top, o) in enumerate(zip(node.tops, outs)):
            blobs[top] = (o, i, k)
        steps.append((leaves, outs, refs))

    grads: dict[tuple[int, int], torch.Tensor] = {}
    for top, weight in net.loss_weights.items():
        o, producer, k = blobs[top]
        if producer is not None and o.requires_grad:
            grads[(producer, k)] = torch.full_like(o, weight)  # d(total)/d(top): net.loss sums a non-scalar top
    bwd: list[float | None] = [None] * len(nodes)
    for i in reversed(range(len(nodes))):
        leaves, outs, refs = steps[i]
        pairs = [(o, grads.pop((i, k))) for k, o in enumerate(outs) if (i, k) in grads and o.requires_grad]
        if not pairs:
            continue
        t0 = clock()
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        t1 = clock()
        bwd[i] = t1 - t0
        for leaf, (producer, k) in zip(leaves, refs):
            if producer is not None and leaf.grad is not None:
                key = (producer, k)
                grads[key] = grads[key] + leaf.grad if key in grads else leaf.grad
    return fwd, bwd


def _whole(net: Net, inputs: dict[str, torch.Tensor], clock: _Clock, autocast) -> tuple[float, float | None]:
    with autocast():
        t0 = clock()
        out = net(**inputs)
        loss = net.loss(out) if net.loss_weights else None
        t1 = clock()
    if loss is None or not loss.requires_grad:
        return t1 - t0, None
    loss.backward()
    t2 = clock()
    return t1 - t0, t2 - t1


def time_net(net: Net, batch_size: int, *, iterations: int = 20, warmup: int = 3, seed: int = 0,
             precision: str = "fp32", channels_last: bool = False) -> Timing:
    """Time ``net`` (already on its device, in the mode to time) on a synthetic batch;
    ``precision`` bf16/fp16 runs the forward passes under autocast, and ``channels_last``
    the net and its image inputs in NHWC, as the solver does."""
    device = next((p.device for p in net.parameters()), None) or next((b.device for b in net.buffers()), torch.device("cpu"))
    clock = _Clock(device)
    if precision == "fp32":
        autocast = contextlib.nullcontext
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16

        def autocast():
            return torch.autocast(device.type, dtype=dtype)
    inputs = synthetic_inputs(net.graph, batch_size, device, seed)
    if channels_last:
        net.to(memory_format=torch.channels_last)
        inputs = to_layout(inputs)
    fwd_runs: list[list[float]] = []
    bwd_runs: list[list[float | None]] = []
    whole_runs: list[tuple[float, float | None]] = []
    for it in range(warmup + iterations):
        net.zero_grad(set_to_none=True)
        fwd, bwd = layerwise_pass(net, inputs, clock, autocast)
        net.zero_grad(set_to_none=True)
        whole = _whole(net, inputs, clock, autocast)
        if it >= warmup:
            fwd_runs.append(fwd)
            bwd_runs.append(bwd)
            whole_runs.append(whole)
    net.zero_grad(set_to_none=True)

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000.0

    layers = []
    for i, node in enumerate(net.graph.nodes):
        back = [r[i] for r in bwd_runs if r[i] is not None]
        layers.append(LayerTime(node.name, node.spec.type, ms([r[i] for r in fwd_runs]), ms(back) if back else None))
    backs = [w[1] for w in whole_runs if w[1] is not None]
    return Timing(net.graph.name, net.graph.phase, str(device), batch_size, iterations, warmup, layers,
                  ms([w[0] for w in whole_runs]), ms(backs) if backs else None, precision=precision,
                  channels_last=channels_last)
