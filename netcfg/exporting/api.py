"""``export()``: a net and its trained weights -> one deployable file, checked against PyTorch.

Every format writes the deploy form (see ``deploy.py``) with the weights loaded
strictly by name. The file is written under a temporary name, run on random
inputs beside the eager net (batch 1 and 5 for a dynamic batch), and only then
renamed into place; when the exporter or the check fails, each layer is exported
alone to name the one the format cannot hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from netcfg.errors import ConfigError, ConfigErrors, NetcfgError, did_you_mean
from netcfg.exporting import to_onnx, to_program, to_torchscript, to_weights
from netcfg.exporting.check import Mismatch, compare, culprit, reason
from netcfg.exporting.deploy import Deploy, deploy_form
from netcfg.exporting.job import ExportJob
from netcfg.exporting.load import load_weights_into, read_net
from netcfg.exporting.output import Output, out_path
from netcfg.net.module import Net
from netcfg.net.spec import NetSpec
from netcfg.solver.checkpoint import WriteError
from netcfg.solver.netfile import EXPORT_KEY, weights_file
from netcfg.solver.weights_file import NET_KEY
from netcfg.source import to_yaml

__all__ = ["FORMATS", "ExportResult", "Format", "export"]

CHECK_BATCHES = (1, 5)


class Format(NamedTuple):
    """How to write one format, how to run what was written, and its file suffix."""

    write: Callable[[ExportJob], None]
    run: Callable[[ExportJob], Callable]
    suffix: str
    title: str
    runtime: str  # what runs the file in the check


FORMATS: dict[str, Format] = {
    "safetensors": Format(to_weights.write_safetensors, to_weights.run_safetensors, ".deploy.safetensors",
                          "safetensors", "load_net_with_weights"),
    "pt": Format(to_weights.write_pt, to_weights.run_pt, ".pt", "PyTorch state_dict", "torch.load"),
    "torchscript": Format(to_torchscript.write, to_torchscript.run, ".torchscript", "TorchScript", "torch.jit.load"),
    "exported": Format(to_program.write, to_program.run, ".pt2", "torch.export", "torch.export.load"),
    "onnx": Format(to_onnx.write, to_onnx.run, ".onnx", "ONNX", "onnxruntime"),
}


@dataclass
class ExportResult:
    """What ``export`` wrote and how it was checked."""

    path: Path
    format: str
    deploy: Deploy
    batch: int | None
    opset: int | None = None
    checked_batches: tuple[int, ...] = ()
    max_abs_diff: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # the deploy form (config, spec, graph) would make it tens of kB in a REPL
        size = _size(self.path.stat().st_size) if self.path.is_file() else "missing"
        diff = f", max_abs_diff={self.max_abs_diff:.2g}" if self.max_abs_diff is not None else ""
        return (f"ExportResult(format={self.format!r}, path='{self.path}', size='{size}', "
                f"outputs={self.deploy.outputs!r}{diff})")

    def lines(self) -> list[str]:
        """A short human report (what the CLI prints)."""
        d, fmt = self.deploy, FORMATS[self.format]
        size = self.path.stat().st_size
        what = fmt.title + (f", opset {self.opset}" if self.opset else "")
        out = [f"wrote {self.path} ({what}, {_size(size)}, {self.seconds:.1f} s)"]
        out += [f"  input   {n} {_blob(d.graph.blobs[n], self.batch)}" for n in d.inputs]
        out += [f"  output  {n} {_blob(d.graph.blobs[n], self.batch)}" for n in d.outputs]
        left = [f"{name} ({t})" for name, t in d.dropped.items()] + [f"{name} ({t}, unused)" for name, t in d.pruned.items()]
        if left or d.unused_inputs:
            out.append("  left out: " + ", ".join(left + [f"input {n}" for n in d.unused_inputs]))
        if self.checked_batches:
            sizes = " and ".join(map(str, self.checked_batches))
            out.append(f"  checked against PyTorch on random inputs at batch {sizes}: "
                       f"max abs diff {self.max_abs_diff:.2g}")
        out += [f"  note: {n}" for n in self.notes]
        return out


def _blob(blob, batch: int | None) -> str:
    dims = [str(batch) if batch is not None else "batch", *map(str, blob.shape)]
    return f"[{', '.join(dims)}] {blob.dtype}"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def export(net: str | Path | NetSpec, weights: str | Path | None = None, format: str | None = None,
           out: str | Path | None = None, *, phase: str = "TEST", stages: tuple[str, ...] | list[str] = (),
           outputs: str | list[str] | tuple[str, ...] | None = None, opset: int | None = None,
           batch_size: int | str | None = "dynamic", overrides: list[str] | tuple[str, ...] = (),
           check: bool = True, force: bool = False) -> ExportResult:
    """Export the deploy form of ``net`` with ``weights`` to ``format``: ``safetensors``,
    ``pt``, ``torchscript``, ``exported`` (torch.export) or ``onnx``; by default the one
    ``out``'s suffix names (``.onnx``, ``.pt2``, ``.torchscript``, ``.safetensors``), else ONNX.

    ``net`` is a net file, a solver file or run ``config.yaml``, a NetSpec, a
    ``.safetensors`` written by netcfg (then ``weights`` defaults to it), or a run
    directory (its newest snapshot). ``weights`` may be a run directory too. ``out``
    defaults to the weights file's name with the format's suffix. ``outputs`` picks
    the output tops; ``batch_size`` is ``"dynamic"`` or a fixed int (a static graph);
    ``opset`` is for ONNX. With ``check`` the file is run on random inputs and must
    match the eager net (max abs diff 1e-4 per unit of output magnitude in fp32).

    >>> netcfg.export("configs/lenet.yaml", "runs/lenet/lenet_iter_10000.safetensors", "onnx", "lenet.onnx")
    """
    start = time.perf_counter()
    outputs = [outputs] if isinstance(outputs, str) else outputs  # outputs="cls": one top, not c, l, s
    fmt_name, fmt = _format(format if format is not None else _format_of(out))
    batch = _batch(batch_size)
    opset = _opset(fmt_name, opset)
    phase = str(phase).upper()
    if phase not in ("TRAIN", "TEST"):
        raise ConfigError(f"phase must be TRAIN or TEST, got '{phase}'", file="--phase")
    if isinstance(net, NetSpec):
        spec, source_stages, source_weights, source_outputs = net, (), None, ()
    else:
        src = read_net(net, overrides)
        spec, source_stages, source_weights, source_outputs = src.net, src.stages_of(phase), src.weights, src.outputs
    weights_given = weights
    weights = weights_file(weights) if weights is not None else source_weights
    if weights is None:
        raise ConfigError("no weights given", file="--weights",
                          hint="pass the trained weights: netcfg export NET --weights W.safetensors")
    stages = spec.checked_stages(stages, "--stage") or source_stages
    deploy = deploy_form(spec, phase, stages, list(outputs or source_outputs) or None)
    module = Net(deploy.graph)
    load_weights_into(module, weights)
    out = out_path(out, weights, fmt.suffix, net)
    if fmt_name == "exported" and not out.name.endswith(".pt2"):  # torch.export.save's own examples name .pt2
        raise ConfigError(f"a torch.export program is a .pt2 file: torch.export.load reads '{out.name}' only "
                          "through a deprecated fallback, with a warning", file="-o",
                          hint=f"name it {out.name.removesuffix(out.suffix)}.pt2")
    if out.exists() and not force:  # never overwrite a user's file unasked
        raise ConfigError(f"{out} already exists", file=str(out), hint="pass --force to overwrite it, or choose -o")
    info = {"format": fmt_name, "phase": phase, "stages": list(stages), "batch_size": batch or "dynamic",
            "inputs": {n: _io(deploy, n) for n in deploy.inputs},
            "outputs": deploy.outputs, "output_shapes": {n: _io(deploy, n) for n in deploy.outputs},
            "weights": weights.name}
    metadata = {NET_KEY: to_yaml(deploy.config), EXPORT_KEY: json.dumps(info)}
    need, node = deploy.graph.min_batch()  # BatchNorm with use_global_stats: false on a (C,) blob
    if batch is not None and batch < need:
        raise ConfigError(f"batch size {batch} is too small: layer '{node.name}' ({node.spec.type}) uses batch "
                          f"statistics of its {list(node.in_blobs[0].shape)} input (use_global_stats: false), which "
                          f"needs at least {need} samples", file="--batch-size", hint=f"use --batch-size {need} or more")
    output = Output(out)
    job = ExportJob(deploy, module, output.tmp, batch, opset, metadata)
    batches = (batch,) if batch is not None else tuple(max(b, need) for b in CHECK_BATCHES)
    written_opset = (opset or to_onnx.DEFAULT_OPSET) if fmt_name == "onnx" else None
    result = ExportResult(out, fmt_name, deploy, batch, written_opset)
    given = weights_given if weights_given is not None else (None if isinstance(net, NetSpec) else net)
    if given is not None and Path(given) != weights:  # a run directory or a .solverstate: say which file
        result.notes.append(f"weights from {weights}")
    runnable = check and (fmt_name != "onnx" or to_onnx.has_runtime())
    if check and not runnable:
        result.notes.append("not checked: onnxruntime is not installed (pip install onnxruntime)")

    def attempt(j: ExportJob) -> float | None:
        fmt.write(j)
        if not runnable:
            return None
        try:
            run = fmt.run(j)
            return compare(j, run, batches)
        except Mismatch:
            raise
        except Exception as e:  # the file was written but does not load or run
            raise RunFailure(f"{fmt.runtime} cannot run the written file: {reason(e)}") from None

    output.open()
    try:
        result.max_abs_diff = attempt(job)
    except WriteError as e:  # a full disk: named by the file asked for, not by its temporary name
        output.discard()
        raise WriteError(out, e) from None
    except NetcfgError:
        output.discard()
        raise
    except Exception as e:  # an exporter, runtime or numerical failure: find the layer
        output.discard()
        raise _refusal(spec, fmt_name, job, attempt, e) from None
    except BaseException:  # Ctrl-C mid-export: no hidden temporary file left beside the output
        output.discard()
        raise
    output.commit()
    result.checked_batches = batches if runnable else ()
    result.seconds = time.perf_counter() - start
    return result


def _io(deploy: Deploy, name: str) -> dict:
    blob = deploy.graph.blobs[name]
    return {"shape": list(blob.shape), "dtype": blob.dtype}


class RunFailure(Exception):
    """The exporter wrote a file that its runtime cannot load or run."""


def _refusal(spec: NetSpec, fmt: str, job: ExportJob, attempt, error: Exception) -> NetcfgError:
    found = culprit(job, attempt)
    if found is None:
        return NetcfgError(f"cannot export net '{spec.name}' to {FORMATS[fmt].title}: {reason(error)} "
                           "(each layer exports alone; their combination does not)")
    name, why = found
    layer = next((la for la in spec.layers if la.name == name), None)
    kind = f" ({layer.type})" if layer is not None else ""
    err = ConfigError(f"layer '{name}'{kind} cannot be exported to {FORMATS[fmt].title}: {why}",
                      layer._path if layer else (),
                      hint="choose another --format, or leave the layer out of the deploy net with --top")
    return ConfigErrors([spec.locate(err)])


def _format(name: str) -> tuple[str, Format]:
    key = str(name).lower()
    if key not in FORMATS:
        raise ConfigError(f"unknown export format '{name}'", file="--format", hint=did_you_mean(key, FORMATS))
    return key, FORMATS[key]


def _format_of(out: str | Path | None) -> str:
    """The format ``out``'s suffix names (``-o model.onnx``), ONNX without ``out``; a suffix
    several formats use (``.pt``: a state_dict or TorchScript) or none names is refused."""
    if out is None:
        return "onnx"
    name = Path(out).name.lower()
    named = [key for key, f in FORMATS.items() if name.endswith(f.suffix.removeprefix(".deploy"))]
    if len(named) == 1 and not name.endswith((".pt", ".pth")):
        return named[0]
    raise ConfigError(f"the format of '{out}' is not clear from its name",
                      file="--format", hint="give --format: " + ", ".join(
                          f"{key} ({f.suffix.removeprefix('.deploy')})" for key, f in FORMATS.items()))


def _batch(value: int | str | None) -> int | None:
    if value is None or (isinstance(value, str) and value.lower() == "dynamic"):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or isinstance(value, float):
        raise ConfigError(f"batch size must be 'dynamic' or a whole number >= 1, got '{value}'", file="--batch-size")
    return n


def _opset(fmt: str, opset: int | None) -> int | None:
    if fmt == "onnx":
        to_onnx.require()
    if opset is None:
        return None
    if fmt != "onnx":
        raise ConfigError(f"--opset applies to the onnx format only, not {fmt}", file="--opset")
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise ConfigError(f"opset must be an integer, got {opset!r}", file="--opset", hint="e.g. opset=17")
    lo, hi = to_onnx.opset_range()
    if not lo <= opset <= hi:
        raise ConfigError(f"opset {opset} is out of range", file="--opset",
                          hint=f"this installation writes opsets {lo} to {hi}; {to_onnx.DEFAULT_OPSET} is the default")
    return opset
