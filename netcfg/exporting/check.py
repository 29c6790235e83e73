"""Is a written artefact the net? Run it beside the eager net, and find the layer to blame when not."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from netcfg.exporting.deploy import DeployModule, deploy_form
from netcfg.exporting.job import ExportJob, Runner
from netcfg.net.module import Net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml, to_yaml

__all__ = ["Mismatch", "compare", "culprit", "tolerance"]


class Mismatch(Exception):
    """The artefact ran but gave other numbers (or shapes) than the eager net."""


def tolerance(dtype: torch.dtype) -> float:
    """Absolute tolerance per unit of output magnitude: 1e-4 in fp32 (and fp64, integers)."""
    return {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-4)


def compare(job: ExportJob, run: Runner, batches: tuple[int, ...]) -> float:
    """Largest |artefact - eager| over every output at each batch size; Mismatch past
    ``tolerance(dtype) * max(1, max |eager|)``."""
    eager = DeployModule(job.net).eval()
    worst = 0.0
    for batch in batches:
        inputs = job.example(batch, seed=batch)
        with torch.no_grad():
            want = eager(*inputs)
        got = run(inputs)
        for name, w, g in zip(job.deploy.outputs, want, got):
            if tuple(g.shape) != tuple(w.shape):
                raise Mismatch(f"the written file's output '{name}' has shape {list(g.shape)} at batch {batch}; "
                               f"PyTorch gives {list(w.shape)}")
            w64, g64 = w.detach().double(), g.detach().to(w.device).double()  # Parameter's top, a view, keeps requires_grad
            same = (w64 == g64) | (w64.isnan() & g64.isnan())
            diff = torch.where(same, torch.zeros_like(w64), (w64 - g64).abs())
            d = float(diff.max()) if diff.numel() else 0.0
            d = float("inf") if math.isnan(d) else d  # a NaN on one side only
            scale = max(1.0, float(w64[w64.isfinite()].abs().max())) if w64.isfinite().any() else 1.0
            if d > tolerance(w.dtype) * scale:
                raise Mismatch(f"the written file's output '{name}' differs from PyTorch's by {d:.3g} at batch {batch} "
                               f"(tolerance {tolerance(w.dtype) * scale:.3g})")
            worst = max(worst, d)
    return worst


def culprit(job: ExportJob, attempt: Callable[[ExportJob], None]) -> tuple[str, str] | None:
    """(layer name, reason) of the first layer that fails ``attempt`` alone, exported as a
    one-layer net with its weights and input shapes; None if each layer passes alone."""
    state = job.net.state_dict()
    passed: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="netcfg-export-") as tmp:
        for i, (node, doc) in enumerate(zip(job.deploy.graph.nodes, job.deploy.config["layers"])):
            key = to_yaml([{k: v for k, v in doc.items() if k not in ("name", "bottom", "top")},
                                  [list(b) for b in node.in_blobs]])
            if key in passed:  # the same layer config on the same shapes passed already (repeated blocks)
                continue
            inputs = {}
            for b, blob in zip(node.bottoms, node.in_blobs):
                inputs.setdefault(b, {"shape": list(blob.shape), "dtype": blob.dtype})
            tops = _apart(node.tops, node.bottoms)
            config = {"name": node.name, "inputs": inputs, "layers": [{**doc, "top": tops}]}
            spec = net_from_source(parse_yaml(to_yaml(config), f"<layer {node.name}>"))
            single = deploy_form(spec, "TEST", outputs=tops)
            net = Net(single.graph)
            prefix = node.name + "."
            net.load_state_dict({k: v for k, v in state.items() if k.startswith(prefix)}, strict=False)
            sub = ExportJob(single, net, Path(tmp) / f"layer{i}{job.path.suffix}", job.batch, job.opset, {})
            try:
                attempt(sub)
            except Exception as e:  # whatever the exporter, runtime or check raises names this layer
                return node.name, reason(e)
            passed.add(key)
    return None


def _apart(tops: list[str], bottoms: list[str]) -> list[str]:
    """``tops`` with each one an in-place layer rewrites (``top: ip1`` on ``bottom: ip1``) renamed
    apart from the bottoms: alone, the layer's input and output would share a name, which ONNX
    refuses (so an in-place ReLU was blamed for any ONNX refusal after it)."""
    taken = set(tops) | set(bottoms)
    out = []
    for top in tops:
        if top in bottoms:
            new = f"{top}_out"
            while new in taken:
                new += "_"
            taken.add(new)
            top = new
        out.append(top)
    return out


def reason(e: BaseException) -> str:
    """The first line of the innermost error an exporter wrapped (its own first line says
    only which step failed), shortened."""
    chain = [e]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    for err in reversed(chain):
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        if lines:
            text = lines[0]
            return text if len(text) <= 300 else text[:297] + "..."
    return type(e).__name__
