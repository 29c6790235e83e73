"""Weights files (.safetensors keyed <layer>.<blob>) and solver states (.solverstate).

Both are written to a temporary name and renamed into place, so a crash leaves
the previous snapshot intact. Neither holds a pickle: weights are safetensors
with the resolved net config (YAML) in their metadata; a solverstate is a
``save_tree`` file (tensors + JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import yaml
from torch import nn

from netcfg.errors import ConfigError, NetcfgError
from netcfg.solver.checkpoint import CheckpointError, atomic_write_bytes, load_tree, save_tree
from netcfg.solver.rundir import config_diff

__all__ = ["save_weights", "load_weights", "copy_weights", "WeightsReport", "net_config_of", "write_snapshot", "read_snapshot"]

NET_KEY = "netcfg.net"  # metadata: the resolved net config, YAML


def save_weights(path: Path, net: nn.Module, net_config: dict, *, extra: dict[str, str] | None = None) -> None:
    """Write every parameter and buffer of ``net`` (shared tensors once per name)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    # safetensors refuses tensors that share memory; tied weights get their own copy
    seen: dict[int, str] = {}
    for k, v in state.items():
        ptr = v.data_ptr()
        if ptr in seen and v.numel():
            state[k] = v.clone()
        seen[ptr] = k
    meta = {NET_KEY: yaml.safe_dump(net_config, sort_keys=False), "format": "netcfg-weights-1"}
    meta.update(extra or {})
    atomic_write_bytes(path, safetensors.torch.save(state, metadata=meta))


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a .safetensors file; a located error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}", file=str(path))
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(path, f"not a readable .safetensors weights file ({e})") from None
    return tensors, meta


def net_config_of(path: str | Path) -> dict:
    """The net config stored in a weights file's metadata."""
    _, meta = load_weights(path)
    if NET_KEY not in meta:
        raise CheckpointError(path, "has no netcfg net config in its metadata (not written by netcfg?)")
    return yaml.safe_load(meta[NET_KEY])


@dataclass
class WeightsReport:
    """What copying weights by name did (Caffe's fine-tuning, reported)."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)      # in the net, not in the file
    unexpected: list[str] = field(default_factory=list)   # in the file, not in the net
    mismatched: list[tuple[str, list[int], list[int]]] = field(default_factory=list)

    def lines(self, source: str) -> list[str]:
        out = [f"weights from {source}: {len(self.matched)} blobs copied"]
        if self.mismatched:
            out.append("  shape mismatch, left as initialised: " + ", ".join(
                f"{k} (file {a}, net {b})" for k, a, b in self.mismatched))
        if self.missing:
            out.append("  not in the file, left as initialised: " + ", ".join(self.missing))
        if self.unexpected:
            out.append("  in the file but not in the net, ignored: " + ", ".join(self.unexpected))
        return out

    def as_dict(self) -> dict:
        return {"matched": self.matched, "missing": self.missing, "unexpected": self.unexpected,
                "mismatched": [{"name": k, "file": a, "net": b} for k, a, b in self.mismatched]}


@torch.no_grad()
def copy_weights(net: nn.Module, path: str | Path, *, strict: bool = False, required: bool = True) -> WeightsReport:
    """Copy blobs from ``path`` into ``net`` by name; shape mismatches are skipped."""
    tensors, _ = load_weights(path)
    report = WeightsReport()
    own = net.state_dict(keep_vars=True)
    for name, target in own.items():
        src = tensors.get(name)
        if src is None:
            if not name.endswith("num_batches_tracked"):
                report.missing.append(name)
        elif tuple(src.shape) != tuple(target.shape):
            report.mismatched.append((name, list(src.shape), list(target.shape)))
        else:
            target.copy_(src.to(target.dtype))
            report.matched.append(name)
    report.unexpected = [k for k in tensors if k not in own]
    if strict and (report.missing or report.mismatched):
        raise NetcfgError("\n".join(report.lines(str(path))))
    if not report.matched and required:
        raise ConfigError(f"no blob in {path} matches a layer of the net by name",
                          file=str(path), hint="weights are matched by <layer>.<blob>; were the layers renamed?")
    return report


def describe(meta: dict[str, str]) -> str:
    return json.dumps({k: v for k, v in meta.items() if k != NET_KEY})


def write_snapshot(run, it: int, net: nn.Module, config: dict, state: dict) -> tuple[Path, Path]:
    """Weights first, then the solver state: a state file always has its weights."""
    weights, state_path = run.snapshot_paths(it)
    save_weights(weights, net, config["net"], extra={"iter": str(it)})
    save_tree(state_path, state, metadata={"solver": run.config_text(), "weights": weights.name})
    run.metric({"event": "snapshot", "iter": it, "weights": weights.name, "state": state_path.name})
    return weights, state_path


def read_snapshot(path: Path, net: nn.Module, config: dict, *, force: bool = False) -> tuple[dict, list[str]]:
    """Load a .solverstate's tree and its weights into ``net``; refuse a changed config
    unless ``force``. Returns the tree and the config differences."""
    tree, meta = load_tree(path)
    diffs = config_diff(yaml.safe_load(meta["solver"]), config) if "solver" in meta else []
    if diffs and not force:
        raise NetcfgError(f"{path}: the snapshot was made with a different solver or net:\n  "
                          + "\n  ".join(diffs[:20]) + "\nuse --force to continue anyway")
    copy_weights(net, path.with_name(meta.get("weights", path.stem + ".safetensors")), strict=True)
    return tree, diffs
