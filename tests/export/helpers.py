"""Helpers for the export tests: nets from text, weights on disk as a training run leaves them, references."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from netcfg.layers._registry import registry
from netcfg.net import Net, build_graph
from netcfg.net.spec import net_from_source
from netcfg.solver.weights_file import save_weights
from netcfg.source import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def spec_of(doc: dict | str):
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
    return net_from_source(parse_yaml(text, "<test net>"))


def write_weights(spec, path: Path, seed: int = 0) -> Path:
    """A weights file as a snapshot is written: the TRAIN net's blobs, the net config in the
    metadata. BatchNorm statistics are those of one random batch, as after training (the
    initial mean 0, variance 1 would let activations grow with depth, to logits near 100)."""
    torch.manual_seed(seed)
    net = Net(build_graph(spec, "TRAIN"))
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if norms:
        for m in norms:
            m.momentum = None  # a cumulative average: after one batch, that batch's statistics
        with torch.no_grad():
            net.train()(**random_inputs(net.graph, 4, seed=seed))
    save_weights(path, net, spec.model_dump(mode="json", exclude_unset=True))
    return path


def reference(spec, weights: Path, inputs: dict[str, torch.Tensor], layers=("ip2",)) -> dict[str, torch.Tensor]:
    """What ``layers`` compute in the eager TEST net, built the way a user builds it
    (build_net + copy_weights): their outputs, caught by forward hooks since a loss
    reads them (so the TEST net does not return them)."""
    from netcfg.net import build_net
    from netcfg.solver.weights_file import copy_weights

    net = build_net(spec, "TEST")
    copy_weights(net, weights, strict=True)
    modules = dict(net.named_modules())
    caught = {}
    for name in layers:
        modules[name].register_forward_hook(lambda m, args, out, name=name: caught.__setitem__(name, out))
    with torch.no_grad():
        net(**inputs)
    return caught


def random_inputs(graph, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, blob in graph.inputs.items():
        dtype = getattr(torch, blob.dtype)
        if dtype.is_floating_point:
            out[name] = torch.randn((batch, *blob.shape), generator=gen).to(dtype)
        else:
            out[name] = torch.randint(0, 2, (batch, *blob.shape), generator=gen).to(dtype)
    return out


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert tuple(a.shape) == tuple(b.shape), (a.shape, b.shape)
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def examples_net(name: str, keep) -> dict:
    """One net of the examples of the built-in layer types a deploy net can hold (losses, metrics
    and Silence never reach an export) for which ``keep(type_name, index, example)`` holds,
    each on its own inputs, named <type><index>."""
    inputs, layers = {}, []
    for type_name, cls in registry().items():
        if not cls.__module__.startswith("netcfg.layers.") or cls.is_loss or cls.reduces_batch or cls.n_tops == (0, 0):
            continue
        for i, example in enumerate(cls.examples):
            if not keep(type_name, i, example):
                continue
            p = f"{type_name}{i}"
            fields = {k: v for k, v in example.items() if k != "inputs"}
            if "top" in fields:
                fields["top"] = [f"{p}_{t}" for t in fields["top"]]
            inputs.update({f"{p}_{k}": v for k, v in example["inputs"].items()})
            layers.append({"name": p, "type": type_name, "bottom": [f"{p}_{k}" for k in example["inputs"]], **fields})
    return {"name": name, "inputs": inputs, "layers": layers}
