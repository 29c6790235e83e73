"""Weights files (.safetensors keyed <layer>.<blob>) and solver states (.solverstate).

Both are written to a temporary name and renamed into place, so a crash leaves
the previous snapshot intact. Neither holds a pickle: weights are safetensors
with the resolved net config (YAML) in their metadata; a solverstate is a
``save_tree`` file (tensors + JSON).
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
from netcfg.solver.checkpoint import TREE_KEY, CheckpointError, WriteError, atomic_write_bytes, load_tree, save_tree
from netcfg.solver.config_diff import config_diff
from netcfg.source import Source, parse_yaml, to_yaml

__all__ = ["program_kind", "save_weights", "load_weights", "load_metadata", "stored_net", "copy_weights", "WeightsReport",
           "net_config_of", "write_snapshot", "read_snapshot", "check_state", "TORCH_SUFFIXES", "NET_KEY", "STAGES_KEY",
           "BEST_KEY"]

NET_KEY = "netcfg.net"  # metadata: the resolved net config, YAML
STAGES_KEY = "netcfg.stages"  # metadata of a snapshot: JSON {"TRAIN": train_stages, "TEST": test_stages}
BEST_KEY = "netcfg.best"  # metadata of a <prefix>_best snapshot: JSON {"metric", "mode", "value", "iter"}


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
    iteration: int | None = None  # the training iteration of a netcfg snapshot; None for other files

    def lines(self, source: str, *, refused: bool = False) -> list[str]:
        """The report; ``refused``: for a strict load that stops, where nothing is left or ignored."""
        left, ignored = ("", "") if refused else (", left as initialised", ", ignored")
        out = [f"weights from {source}: {len(self.matched)} blobs copied"]
        if self.mismatched:
            out.append(f"  shape mismatch{left}: " + ", ".join(
                f"{k} (file {a}, net {b})" for k, a, b in self.mismatched))
        if self.missing:
            out.append(f"  not in the file{left}: " + ", ".join(self.missing))
        if self.unexpected:
            out.append(f"  in the file but not in the net{ignored}: " + ", ".join(self.unexpected))
        return out

    def as_dict(self) -> dict:
        return {"matched": self.matched, "missing": self.missing, "unexpected": self.unexpected,
                "mismatched": [{"name": k, "file": a, "net": b} for k, a, b in self.mismatched]}


@torch.no_grad()
def copy_weights(net: nn.Module, path: str | Path, *, strict: bool = False, required: bool = True) -> WeightsReport:
    """Copy blobs from ``path`` into ``net`` by name; shape mismatches are skipped."""
    tensors, meta = load_weights(path)
    report = WeightsReport(iteration=int(meta["iter"]) if meta.get("iter", "").isdigit() else None)
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
        raise CheckpointError(path, f"its weights do not fit this net{_whose(net, meta)}:\n"
                                    + "\n".join(report.lines(str(path), refused=True)[1:]))
    if not report.matched and required:
        raise ConfigError(f"no blob in {path} matches a layer of the net by name",
                          file=str(path), hint="weights are matched by <layer>.<blob>; were the layers renamed?")
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


def write_snapshot(run, it: int, net: nn.Module, config: dict, state: dict, *, best: dict | None = None) -> tuple[Path, Path]:
    """Weights first, then the solver state: a state file always has its weights. A failed
    write (disk full) names the previous snapshot, which it leaves intact.

    ``best`` (``Best.as_state()``): write the ``<prefix>_best`` pair instead. Its old state
    goes first, so that a kill between the two renames leaves weights without a state (not
    resumable), never a state beside the weights of another iteration."""
    weights, state_path = run.best_paths() if best is not None else run.snapshot_paths(it)
    try:
        # the stages say which layers the run's nets had: an export of the snapshot alone needs them
        stages = {"TRAIN": config.get("train_stages", []), "TEST": config.get("test_stages", [])}
        extra = {"iter": str(it), STAGES_KEY: json.dumps(stages)}
        if best is not None:
            extra[BEST_KEY] = json.dumps(best)
            try:
                state_path.unlink(missing_ok=True)
            except OSError as e:
                raise WriteError(state_path, e) from None
        save_weights(weights, net, config["net"], extra=extra)
        save_tree(state_path, state, metadata={"solver": run.config_text(), "weights": weights.name})
    except WriteError as e:
        if best is not None:
            e.note = f"; the best snapshot of iteration {it} was not written"
            raise
        last = run.latest_snapshot(before=it)
        e.note = (f"; the snapshot of iteration {it} was not written, the previous one is intact: {last}" if last
                  else f"; the snapshot of iteration {it} was not written")
        raise
    record = {"event": "best", **{k: best[k] for k in ("metric", "mode", "value")}} if best is not None \
        else {"event": "snapshot"}
    run.metric({**record, "iter": it, "weights": weights.name, "state": state_path.name})
    return weights, state_path


def read_snapshot(path: Path, net: nn.Module, config: dict, *,
                  force: bool = False) -> tuple[dict, list[str], dict | None]:
    """Load a .solverstate's tree and its weights into ``net``; refuse a changed config
    unless ``force``. Returns the tree, the config differences and the snapshot's config
    (None in a state that holds none)."""
    tree, meta = load_tree(path)
    check_state(tree, path)
    try:
        old = yaml.safe_load(meta["solver"]) if "solver" in meta else None
    except yaml.YAMLError:
        raise CheckpointError(path, "its solver config (metadata 'solver') is not readable YAML") from None
    diffs = config_diff(old, config) if old is not None else []
    if diffs and not force:
        more = f"\n  ... and {len(diffs) - 20} more" if len(diffs) > 20 else ""
        raise CheckpointError(path, "the snapshot was made with a different solver or net:\n  "
                              + "\n  ".join(diffs[:20]) + more + "\nuse --force to continue anyway")
    name = meta.get("weights", path.stem + ".safetensors")
    if not name or set(name) & {"/", "\\", "\0"} or name.strip(".") == "":
        raise CheckpointError(path, f"names its weights file {name!r}, which is not a file name beside it")
    report = copy_weights(net, path.with_name(name), strict=True)
    if report.iteration is not None and report.iteration != tree["iter"]:  # a pair cut short between its writes
        raise CheckpointError(path, f"is the state of iteration {tree['iter']}, but its weights {name} are of "
                                    f"iteration {report.iteration}: the pair does not belong together")
    return tree, diffs, old if isinstance(old, dict) else None


def check_state(tree, path: Path) -> None:
    """Refuse a state tree that is not what ``Solver.state()`` writes, before any of it is used."""
    if not isinstance(tree, dict):
        raise CheckpointError(path, "is not a netcfg solver state (its tree is not a mapping)")
    problems = []

    def want(key: str, ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"'{key}' is not {what}")

    number = (int, float)
    it, opt, rng, data = tree.get("iter"), tree.get("optimizer"), tree.get("rng"), tree.get("data")
    want("iter", isinstance(it, int) and not isinstance(it, bool) and it >= 0, "an iteration number")
    want("optimizer", _optimizer_state(opt), "an optimizer state")
    torch_rng = rng.get("torch") if isinstance(rng, dict) else None
    want("rng", isinstance(torch_rng, torch.Tensor) and torch_rng.shape == torch.get_rng_state().shape
         and all(isinstance(v, torch.Tensor) and v.dtype == torch.uint8 for v in rng.values()),
         "a random-number generator state")
    want("data", data is None or (isinstance(data, dict) and all(
        isinstance(data.get(k), int) and not isinstance(data.get(k), bool) for k in ("epoch", "position"))),
         "a data position")
    want("losses", isinstance(tree.get("losses"), list)
         and all(isinstance(v, number) and not isinstance(v, bool) for v in tree["losses"]), "a list of losses")
    want("seconds", isinstance(tree.get("seconds", 0.0), number), "a number")
    best = tree.get("best")
    want("best", best is None or (isinstance(best, dict) and isinstance(best.get("metric"), str)
                                  and best.get("mode") in ("max", "min")
                                  and (best.get("value") is None or isinstance(best["value"], number))),
         "a best test value")
    ema = tree.get("ema")
    want("ema", ema is None or _ema_state(ema), "a weight average's state")
    ranks = [tree.get("world_size", 1)] + ([data.get("world_size", 1)] if isinstance(data, dict) else [])
    want("world_size", all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks),
         "a number of processes")
    if problems:
        raise CheckpointError(path, "is not a netcfg solver state: " + "; ".join(problems))


def _ema_state(ema) -> bool:
    """The shape of ``WeightAverage.state()``: an update count, the trained weights by name and,
    for 16-bit nets, the float32 average by name."""
    if not isinstance(ema, dict) or "weights" not in ema:
        return False
    updates = ema.get("updates")
    maps = [ema["weights"], ema.get("average", {})]
    return (isinstance(updates, int) and not isinstance(updates, bool) and updates >= 0
            and all(isinstance(m, dict) and all(isinstance(v, torch.Tensor) for v in m.values()) for m in maps))


def _optimizer_state(opt) -> bool:
    """The shape of a torch ``optimizer.state_dict()``: per-parameter buffers, groups of indices."""
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        return False
    buffers = (torch.Tensor, int, float, type(None))
    for index, slots in opt["state"].items():
        if not isinstance(index, int) or not isinstance(slots, dict):
            return False
        if not all(isinstance(k, str) and isinstance(v, buffers) for k, v in slots.items()):
            return False
    return all(isinstance(g, dict) and isinstance(g.get("params"), list)
               and all(isinstance(i, int) and not isinstance(i, bool) for i in g["params"]) for g in opt["param_groups"])
