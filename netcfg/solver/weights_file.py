"""Weights files: netcfg's .safetensors (keyed <layer>.<blob>, the resolved net config in
their metadata), anyone's .safetensors and PyTorch state_dicts (.pt/.pth); reading them,
telling a program netcfg exported from weights, and copying them into a net with a report.

A weights file is written to a temporary name and renamed into place, so a crash leaves
the previous one intact; none holds a pickle.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import yaml
from torch import nn

from netcfg.errors import ConfigError
from netcfg.solver.checkpoint import TREE_KEY, CheckpointError, atomic_write_bytes
from netcfg.solver.rename_maps import map_hint
from netcfg.solver.weights_plan import is_counter, layer_of
from netcfg.source import Source, parse_yaml, to_yaml

__all__ = ["copy_into_nets", "program_kind", "save_weights", "load_weights", "load_metadata", "stored_net", "copy_weights", "WeightsReport",
           "net_config_of", "describe", "TORCH_SUFFIXES", "NET_KEY", "STAGES_KEY"]

NET_KEY = "netcfg.net"  # metadata: the resolved net config, YAML
STAGES_KEY = "netcfg.stages"  # metadata of a snapshot: JSON {"TRAIN": train_stages, "TEST": test_stages}


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
    meta = {NET_KEY: to_yaml(net_config), "format": "netcfg-weights-1"}
    meta.update(extra or {})
    atomic_write_bytes(path, safetensors.torch.save(state, metadata=meta))


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a weights file; a located error if it is not one.

    ``.safetensors`` (netcfg's own, or anyone's), or a PyTorch ``state_dict`` saved
    as ``.pt``/``.pth``/``.ckpt``/``.bin``, read with ``torch.load(weights_only=True)``:
    tensors and plain containers only, so a pickle that would run code is refused
    before any of it runs."""
    return _read_weights(Path(path), tensors=True)


def load_metadata(path: str | Path) -> dict[str, str]:
    """A weights file's metadata alone, its tensors left unread (a snapshot's net, for a
    command that only builds it); a state_dict ``.pt`` has none."""
    return _read_weights(Path(path), tensors=False)[1]


def stored_net(path: str | Path, hint: str) -> tuple[Source, dict[str, str]]:
    """The net config stored in a netcfg ``.safetensors`` (located in its metadata) and the
    metadata; refused, with ``hint``, for weights that hold none."""
    meta = load_metadata(path)
    if NET_KEY not in meta:
        raise ConfigError("this .safetensors has no net config in its metadata (it was not written by netcfg)",
                          file=str(path), hint=hint)
    return parse_yaml(meta[NET_KEY], f"{path} (metadata {NET_KEY})"), meta


def _read_weights(path: Path, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.is_dir():
        raise ConfigError("a directory without a snapshot (no <prefix>_iter_<N>.safetensors with its .solverstate)",
                          file=str(path), hint="name a weights file, or a run directory that has snapshots")
    if not path.is_file():
        raise ConfigError("weights file not found", file=str(path))
    program = program_kind(path)
    if program:
        raise CheckpointError(path, f"is {program}, not weights; netcfg reads weights from .safetensors (a "
                                    "snapshot, or netcfg export --format safetensors) or a state_dict in "
                                    f"{'/'.join(TORCH_SUFFIXES)} (netcfg export --format pt)")
    if path.suffix.lower() in TORCH_SUFFIXES:
        return (_load_torch(path) if tensors else {}), {}
    if path.suffix.lower() == ".caffemodel":  # else refused as 'not a readable .safetensors (header too large)'
        raise CheckpointError(path, "is Caffe weights, which netcfg reads once converted: netcfg import-caffe "
                                    f"NET.prototxt --weights {path.name} -o NET.yaml writes NET.yaml and "
                                    "NET.safetensors (its blobs keyed <layer>.<blob>); give that .safetensors")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            blobs = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(path, f"not a readable .safetensors weights file ({e}); netcfg reads weights "
                                    f"from .safetensors, or a state_dict in {'/'.join(TORCH_SUFFIXES)}") from None
    if TREE_KEY in meta:  # a .solverstate is a safetensors file too, holding optimizer buffers, not the net's blobs
        raise CheckpointError(path, "is a solver state (what --resume takes), not weights; its weights are "
                                    f"{path.with_suffix('.safetensors')}")
    return blobs, meta


TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def program_kind(path: Path) -> str | None:
    """What program a file netcfg export can write holds, if it is one (a user's likely slip:
    the exported model given as --weights, where the reader's own error said 'header too large')."""
    if path.suffix.lower() == ".onnx":
        return "an ONNX model"
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    parts = {part for name in names for part in name.split("/")[1:2]}  # archive/<part>/...
    if "code" in parts or "constants.pkl" in parts:
        return "a TorchScript program"
    if "models" in parts or "archive_format" in parts:
        return "a torch.export program"
    return None
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a torch.save()d state_dict (or of a checkpoint dict holding one)."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on its way to refusing
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler refused a global, or the file is not torch's at all
        text = str(e)
        found = _GLOBAL.search(text)
        if found or "weights_only" in text.lower() or "Weights only load failed" in text:
            what = f"calls {found.group(1)}" if found else "holds Python objects other than tensors"
            raise CheckpointError(path, f"refused: this pickle {what}, and netcfg does not run code from "
                                        "weights files (it reads tensors and plain containers only). If you "
                                        "trust the file, convert it to .safetensors yourself") from None
        first = next((line for line in text.splitlines() if line.strip()), type(e).__name__)
        raise CheckpointError(path, f"not a readable PyTorch weights file ({first})") from None
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):  # Lightning's, and common training loops'
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise CheckpointError(path, f"holds no state_dict (a mapping of names to tensors), found a {type(obj).__name__}")
    if all(k.startswith("module.") for k in tensors):  # saved from a DataParallel/DDP wrapper
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


def net_config_of(path: str | Path) -> dict:
    """The net config stored in a weights file's metadata."""
    meta = load_metadata(path)
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
    with_layer: list[str] = field(default_factory=list)   # fit, but a blob of their layer does not
    iteration: int | None = None  # the training iteration of a netcfg snapshot; None for other files

    def lines(self, source: str, *, refused: bool = False) -> list[str]:
        """The report; ``refused``: for a strict load that stops, where nothing is left or ignored."""
        left, ignored = ("", "") if refused else (", left as initialised", ", ignored")
        out = [f"weights from {source}: {len(self.matched)} blobs copied"]
        if self.mismatched:
            out.append(f"  shape mismatch{left}: " + ", ".join(
                f"{k} (file {a}, net {b})" for k, a, b in self.mismatched))
        if self.with_layer and not refused:  # (a refusal's mismatches say it all)
            out.append("  left as initialised with their layer, which has a shape mismatch: " + ", ".join(self.with_layer))
        if self.missing:
            out.append(f"  not in the file{left}: " + ", ".join(self.missing))
        if self.unexpected:
            out.append(f"  in the file but not in the net{ignored}: " + ", ".join(self.unexpected))
            if hint := map_hint(self.unexpected):
                out.append(f"  hint: {hint}")
        return out

    def as_dict(self) -> dict:
        return {"matched": self.matched, "missing": self.missing, "unexpected": self.unexpected,
                "with_layer": self.with_layer,
                "mismatched": [{"name": k, "file": a, "net": b} for k, a, b in self.mismatched]}


def copy_into_nets(net: nn.Module, test_net: nn.Module | None, path: str | Path, log) -> None:
    """``path`` into a solver's TRAIN net and TEST-only layers by name, ``log``-ging what matched;
    refused when nothing in either net matched."""
    loaded = load_weights(path)  # read once for both nets
    report = copy_weights(net, path, required=test_net is None, loaded=loaded)
    matched = len(report.matched)
    for line in report.lines(str(path)):
        log(line)
    if test_net is not None:  # layers only the TEST net has (most are shared)
        test = copy_weights(test_net, path, required=False, loaded=loaded)
        matched += len(test.matched)
        seen = {k for k, _, _ in report.mismatched}  # a shared layer's, reported above
        if own := [f"{k} (file {a}, net {b})" for k, a, b in test.mismatched if k not in seen]:
            log("  TEST net only, shape mismatch, left as initialised: " + ", ".join(own))
        if not matched:
            copy_weights(test_net, path, loaded=loaded)  # raises: nothing matched in either net


@torch.no_grad()
def copy_weights(net: nn.Module, path: str | Path, *, strict: bool = False, required: bool = True,
                 loaded: tuple[dict[str, torch.Tensor], dict[str, str]] | None = None) -> WeightsReport:
    """Copy blobs from ``path`` (``loaded``: its ``load_weights``, read already) into ``net`` by name. A
    layer is copied whole or not at all: a blob of another shape leaves its layer's other blobs as
    initialised too (a classifier's bias without its weight, a BatchNorm's counter without its
    statistics, mean nothing)."""
    tensors, meta = loaded if loaded is not None else load_weights(path)
    report = WeightsReport(iteration=int(meta["iter"]) if meta.get("iter", "").isdigit() else None)
    own = net.state_dict(keep_vars=True)
    fits = {}
    for name, target in own.items():
        src = tensors.get(name)
        if src is None:
            if not is_counter(name):
                report.missing.append(name)
        elif tuple(src.shape) != tuple(target.shape):
            report.mismatched.append((name, list(src.shape), list(target.shape)))
        else:
            fits[name] = src
    misfits = {layer_of(k) for k, _, _ in report.mismatched}
    for name, src in fits.items():
        if layer_of(name) not in misfits:
            own[name].copy_(src.to(own[name].dtype))
            report.matched.append(name)
        elif not is_counter(name):
            report.with_layer.append(name)
    report.unexpected = [k for k in tensors if k not in own]
    if strict and (report.missing or report.mismatched):
        raise CheckpointError(path, f"its weights do not fit this net{_whose(net, meta)}:\n"
                                    + "\n".join(report.lines(str(path), refused=True)[1:]))
    if not report.matched and required and report.mismatched:
        shown = ", ".join(f"{k} (file {a}, net {b})" for k, a, b in report.mismatched[:3])
        raise ConfigError(f"no layer of the net can be filled from {path}: every layer they share by name differs "
                          f"in shape ({len(report.mismatched)} blobs: {shown}{', ...' if len(report.mismatched) > 3 else ''})",
                          file=str(path), hint="a layer is copied whole or not at all; are these weights for this net?")
    if not report.matched and required:
        raise ConfigError(f"no blob in {path} matches a layer of the net by name", file=str(path),
                          hint=map_hint(report.unexpected) or "weights are matched by <layer>.<blob>; were the layers renamed?")
    return report


def _whose(net: nn.Module, meta: dict[str, str]) -> str:
    """' ('DigitsCNN'; the file's net is 'LeNet')' when a snapshot names another net than ``net``'s."""
    mine = getattr(getattr(net, "graph", None), "name", None)
    try:
        theirs = (yaml.safe_load(meta[NET_KEY]) or {}).get("name") if NET_KEY in meta else None
    except (yaml.YAMLError, AttributeError):
        theirs = None
    return f" ('{mine}'; the file's net is '{theirs}')" if mine and theirs and mine != theirs else ""


def describe(meta: dict[str, str]) -> str:
    return json.dumps({k: v for k, v in meta.items() if k != NET_KEY})
