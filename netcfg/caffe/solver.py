"""Caffe SolverParameter (.prototxt) -> a netcfg solver file, with its net and, given a data set, its data.

Caffe's names are netcfg's, so most fields copy. The rest: ``solver_type`` (the
deprecated enum) becomes ``type``; Caffe's defaults are written where netcfg's
differ (Adam's and AdaDelta's momentum 0, AdaDelta's delta 1e-8, display 0);
``solver_mode``/``device_id`` become ``device``; ``clip_gradients`` is divided by
``iter_size`` (Caffe clips the gradient summed over the batches, netcfg their mean);
``snapshot_prefix`` keeps its file name (netcfg writes snapshots into the run
directory); one test net and one ``test_state`` are kept (netcfg tests one net).
The net comes from ``net``, ``net_param`` (inline), or ``train_net`` when
``test_net`` is the same file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from netcfg.caffe.data import data_section, find_caffe_path
from netcfg.caffe.inputs import InputShape
from netcfg.caffe.net import ImportedNet, net_from_obj
from netcfg.caffe.parser import parse_file
from netcfg.caffe.proto import Obj, decode
from netcfg.errors import did_you_mean
from netcfg.net.layer_dicts import listed

__all__ = ["ImportedSolver", "import_solver", "SOLVER_TYPES"]

# Caffe's solver type names (and the deprecated solver_type enum) -> netcfg's
SOLVER_TYPES = {"SGD": "SGD", "Nesterov": "Nesterov", "AdaGrad": "AdaGrad", "RMSProp": "RMSProp",
                "AdaDelta": "AdaDelta", "Adam": "Adam"}
_ENUM_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
               "ADADELTA": "AdaDelta", "ADAM": "Adam"}
_READS = {"SGD": ("momentum",), "Nesterov": ("momentum",), "Adam": ("momentum", "momentum2", "delta"),
          "RMSProp": ("momentum", "rms_decay", "delta"), "AdaGrad": ("delta",), "AdaDelta": ("momentum", "delta")}
# where Caffe's default (momentum 0, delta 1e-8) differs from netcfg's, Caffe's is written out
_CAFFE_DEFAULTS = {("Adam", "momentum"): 0.0, ("AdaDelta", "momentum"): 0.0, ("AdaDelta", "delta"): 1e-8}
_COPY = ("base_lr", "lr_policy", "gamma", "power", "stepsize", "stepvalue", "weight_decay", "regularization_type",
         "max_iter", "iter_size", "display", "average_loss", "debug_info", "test_interval", "test_initialization",
         "snapshot", "snapshot_after_train")

_TRAIN_NET_KEYS = ("net", "net_param", "train_net", "train_net_param")  # Caffe takes exactly one
# the order of a netcfg solver file (docs/solver-files.md)
_ORDER = ("data", "type", "base_lr", "momentum", "momentum2", "delta", "rms_decay", "weight_decay",
          "regularization_type", "clip_gradients", "lr_policy", "gamma", "power", "stepsize", "stepvalue", "max_iter",
          "iter_size", "display", "average_loss", "debug_info", "test_interval", "test_iter", "test_initialization", "snapshot",
          "snapshot_prefix", "snapshot_after_train", "random_seed", "device", "train_stages", "test_stages")


@dataclass
class ImportedSolver:
    """A converted solver: the solver file's data (``net`` filled in by the writer) and its net."""

    file: str
    data: dict[str, Any]
    positions: dict[tuple, tuple[int, int]]
    net: ImportedNet | None            # converted here from a .prototxt, or None for a netcfg .yaml
    net_yaml: Path | None = None       # the netcfg net file named on the command line
    notes: list[str] = field(default_factory=list)
    data_comment: list[str] = field(default_factory=list)  # a commented data: template when no --data

    def spec(self, net_ref: str | dict, base_dir: Path):
        """The validated SolverSpec with ``net: net_ref``; errors located in the .prototxt.

        Without a data: section, the rest is validated as if one were there (the file
        then tells what to fill in, and `netcfg check` asks for it)."""
        from netcfg.solver.spec import solver_from_source
        from netcfg.source import Source

        data = {"net": net_ref, **self.data}
        if "data" not in data:
            data["data"] = {split: {"source": "digits", "split": split, "batch_size": 1} for split in ("train", "test")}
        return solver_from_source(Source(self.file, data, dict(self.positions), dict(self.positions)), base_dir)


def import_solver(path: str | Path, net: str | Path | None = None, data: str | None = None,
                  inputs: dict[str, InputShape] | None = None) -> ImportedSolver:
    """Convert a Caffe solver; ``net`` overrides its net path, ``data`` is ``SOURCE[:PATH]``."""
    file = str(path)
    s = decode(parse_file(path), "SolverParameter", file)
    notes: list[str] = []
    out: dict[str, Any] = {}
    pos: dict[tuple, tuple[int, int]] = {(): (1, 1)}

    def put(key: str, value: Any, at: str | None = None) -> None:
        out[key] = value
        pos[(key,)] = s.pos(at or key)

    test_stages, train_stages = _states(s, notes)
    imported, net_yaml = _net(s, Path(path), net, inputs or {}, data, test_stages, train_stages)
    if imported is not None:
        section, comment, data_notes = data_section(imported, data, train_stages, test_stages, Path(path).parent)
        notes += data_notes
        if section:
            put("data", section, "net")
    else:
        comment = []
        notes.append("the net is a netcfg file: add its data: section by hand (docs/solver-files.md)")
    kind = _type(s)
    put("type", kind, "type" if s.has("type") else "solver_type")
    if not s.has("base_lr"):
        raise s.error("base_lr is not set (Caffe requires it)", hint="add e.g. base_lr: 0.01")
    if not s.has("lr_policy"):
        raise s.error("lr_policy is not set (Caffe requires it)", hint="add e.g. lr_policy: \"fixed\"")
    for key in ("momentum", "momentum2", "rms_decay", "delta"):
        if key in _READS[kind] and s.has(key):
            put(key, s.get(key))
        elif (kind, key) in _CAFFE_DEFAULTS:
            put(key, _CAFFE_DEFAULTS[kind, key], "type")
        elif s.has(key) and s.get(key) != 0:
            notes.append(f"{key}: {s.get(key)} is not read by the {kind} solver (Caffe ignores it or refuses it); dropped")
    for key in _COPY:
        if s.has(key):
            put(key, s.all(key) if key == "stepvalue" else s.get(key))
    out.setdefault("max_iter", 0)
    out.setdefault("display", 0)  # Caffe's default: never; netcfg's is 100
    if out.get("debug_info") and not out["display"]:  # Caffe logs it on displayed iterations: none
        del out["debug_info"]
        notes.append("debug_info: true without display is not imported: Caffe logs the layers on displayed "
                     "iterations only, and display is 0 (set display: N and debug_info: true to see them)")
    if s.has("test_iter"):
        put("test_iter", s.all("test_iter")[0])
    elif out.get("test_interval", 0) > 0:  # Caffe makes one test net per test_iter: none here
        put("test_interval", 0)
        notes.append(f"test_interval: {s.get('test_interval')} without test_iter: Caffe runs no test net, so "
                     "neither does this solver (test_interval: 0); give test_iter to test")
    if s.has("clip_gradients") and s.get("clip_gradients") > 0:
        clip, iter_size = s.get("clip_gradients"), s.get("iter_size", 1)
        put("clip_gradients", clip / iter_size)
        if iter_size > 1:  # Caffe clips the sum of the iter_size gradients, netcfg their mean
            notes.append(f"clip_gradients {clip:g} with iter_size {iter_size} is written {clip / iter_size:g}: "
                         "Caffe clips the gradient summed over the iter_size batches, netcfg their mean")
    if s.has("random_seed"):
        if s.get("random_seed") >= 0:
            put("random_seed", s.get("random_seed"))
        else:
            notes.append("random_seed -1 (a new seed each run) is not kept: netcfg seeds with 1 unless told")
    prefix = s.get("snapshot_prefix") or Path(path).stem  # Caffe's default: the solver file's name
    if s.has("snapshot_prefix") or out.get("snapshot"):
        put("snapshot_prefix", PurePosixPath(prefix).name or Path(path).stem, "snapshot_prefix")
        if "/" in prefix:
            notes.append(f"snapshot_prefix '{prefix}' keeps only its file name: netcfg writes snapshots into the "
                         "run directory (runs/<solver name>/)")
    _engine(s, put, notes)
    named = _stages_named(imported.data) if imported is not None else None
    for key, stages in (("train_stages", train_stages), ("test_stages", test_stages)):
        kept = [st for st in stages if named is None or st in named]
        if kept:
            out[key] = kept
        if len(kept) < len(stages):  # they chose a data layer (test-on-train): the data: section holds it
            dropped = ", ".join(st for st in stages if st not in kept)
            notes.append(f"{key} {dropped} not imported: no layer of the converted net names it (Caffe's data "
                         "layers may; netcfg's data: section chooses the data)")
    for key, what in (("snapshot_format", "netcfg snapshots are .safetensors + .solverstate"),
                      ("snapshot_diff", "netcfg snapshots hold no gradients"),
                      ("weights", "convert the .caffemodel with `netcfg import-caffe NET --weights W.caffemodel` "
                                  "and pass the .safetensors to `netcfg train --weights`")):
        if s.has(key) and s.get(key) not in (False,):
            notes.append(f"{key} is not imported: {what}")
    ordered = {k: out[k] for k in _ORDER if k in out}
    return ImportedSolver(file, ordered, pos, imported, net_yaml, list(dict.fromkeys(notes)), comment)


def _stages_named(net: dict[str, Any]) -> set[str]:
    """The stages the include/exclude rules of a converted net's layers name."""
    return {st for layer in net.get("layers", []) for key in ("include", "exclude") for rule in listed(layer.get(key))
            for st in [*listed(rule.get("stage")), *listed(rule.get("not_stage"))]}


def _type(s: Obj) -> str:
    if s.has("type") and s.has("solver_type"):
        raise s.error("give either type or solver_type (deprecated), not both (Caffe refuses both too)",
                      "solver_type")
    if s.has("solver_type"):
        return _ENUM_TYPES[s.get("solver_type")]
    kind = s.get("type", "SGD")
    if kind not in SOLVER_TYPES:
        raise s.error(f"unknown solver type '{kind}'", "type", hint=did_you_mean(kind, SOLVER_TYPES))
    return SOLVER_TYPES[kind]


def _states(s: Obj, notes: list[str]) -> tuple[list[str], list[str]]:
    """(test_stages, train_stages): netcfg tests one net state, the first."""
    tests = s.all("test_state")
    if len(tests) > 1 or len(s.all("test_iter")) > 1:
        notes.append(f"{max(len(tests), len(s.all('test_iter')))} test nets in Caffe; netcfg tests one: "
                     "the first test_state and test_iter are kept")
    for state in tests[:1] + s.all("train_state"):
        if state.get("level", 0) or state.has("phase"):
            notes.append("a net state's level/phase is not imported (netcfg solvers set stages only)")
    test = tests[0].all("stage") if tests else []
    train = s.get("train_state").all("stage") if s.has("train_state") else []
    return test, train


def _engine(s: Obj, put, notes: list[str]) -> None:
    """solver_mode/device_id -> device: GPU (Caffe's default) is netcfg's auto."""
    if s.get("solver_mode") == "CPU":
        put("device", "cpu", "solver_mode")
    elif s.has("device_id"):
        put("device", f"cuda:{s.get('device_id')}", "device_id")


def _net(s: Obj, solver: Path, given: str | Path | None, inputs: dict[str, InputShape], data: str | None,
         test_stages: list[str], train_stages: list[str]) -> tuple[ImportedNet | None, Path | None]:
    from netcfg.caffe.data import data_shapes

    named = [k for k in _TRAIN_NET_KEYS if s.has(k)]
    if len(named) > 1:  # Caffe refuses this too; which one it meant is not ours to guess
        raise s.error(f"the training net is given twice, by {named[0]} and by {named[1]}", named[1],
                      hint=f"keep one of {', '.join(_TRAIN_NET_KEYS)}")
    if given is not None:
        path = Path(given)
        if path.suffix in (".yaml", ".yml"):
            return None, path
    elif s.has("net_param") or s.has("train_net_param"):
        key = "net_param" if s.has("net_param") else "train_net_param"
        if s.has("test_net_param") or s.has("test_net"):
            raise s.error("separate train and test nets: netcfg trains and tests one net", "test_net_param"
                          if s.has("test_net_param") else "test_net", hint="merge them with include { phase } rules")
        shapes = {**data_shapes(s.get(key), data, solver.parent, train_stages), **inputs}
        return net_from_obj(s.get(key), str(solver), shapes, solver.stem), None
    else:
        key = "net" if s.has("net") else "train_net"
        if not s.has(key):
            raise s.error("the solver names no net", hint='add net: "path/to/train_val.prototxt"')
        tests = s.all("test_net")
        if any(t != s.get(key) for t in tests):
            raise s.error("separate train and test nets: netcfg trains and tests one net", "test_net",
                          hint="merge them with include { phase } rules, or pass the merged net: "
                               "netcfg import-caffe --solver SOLVER NET")
        path = _find_net(s, key, solver)
    net_obj = decode(parse_file(path), "NetParameter", str(path))
    shapes = {**data_shapes(net_obj, data, solver.parent, train_stages), **inputs}
    return net_from_obj(net_obj, str(path), shapes, path.stem), None


def _find_net(s: Obj, key: str, solver: Path) -> Path:
    found = find_caffe_path(s.get(key), solver.parent)
    if found is None or not found.is_file():
        raise s.error(f"net file not found: {s.get(key)} (looked beside the solver, in the directories above it "
                      "and in the current directory)", key,
                      hint="name the net: netcfg import-caffe --solver SOLVER NET.prototxt")
    return found
