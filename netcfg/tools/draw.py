"""Draw a net's graph: layers (type, key parameters, parameter count) wired by blobs (shapes).

A checked Graph becomes a ``Drawing`` (nodes, edges, nested clusters), written out
as Graphviz DOT or Mermaid text; ``render`` hands DOT to Graphviz's ``dot`` for
SVG/PNG/PDF. Blobs are the edges, labelled with their shape (and their name when
it is not the producing layer's); inputs and outputs are oval nodes. A Residual
layer is drawn as a cluster (body, shortcut, a sum node, the activation), and
dotted layer names (``stage2.block1.conv1``, what templates make) as nested
clusters; ``collapse=True`` draws each Residual and each innermost scope (at most
``depth`` names deep) as one box.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel

from netcfg.errors import NetcfgError
from netcfg.layers.base import Blob, LayerSpec
from netcfg.net import Graph

__all__ = ["Drawing", "build_drawing", "to_dot", "to_mermaid", "render", "dot_available", "key_params"]

# fields every layer has, or that say nothing about what it computes
_COMMON = {"name", "type", "bottom", "top", "include", "exclude", "loss_weight", "param", "body", "shortcut", "engine"}
_MAX_KEYS = 4
_FILL = {"Convolution": "#cfe2f3", "Deconvolution": "#cfe2f3", "InnerProduct": "#fce5cd", "Pooling": "#d9ead3",
         "BatchNorm": "#e6e0f3", "LayerNorm": "#e6e0f3", "GroupNorm": "#e6e0f3", "Residual": "#fff2cc"}


@dataclass
class Node:
    id: str
    lines: list[str]
    kind: str  # layer, blob (input/output), sum, group
    fill: str = "#ffffff"


@dataclass
class Edge:
    src: str
    dst: str
    label: str


@dataclass
class Cluster:
    label: str
    nodes: list[str] = field(default_factory=list)
    children: dict[str, Cluster] = field(default_factory=dict)


@dataclass
class Drawing:
    title: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    root: Cluster = field(default_factory=lambda: Cluster(""))

    def add(self, lines: list[str], kind: str, scope: tuple[str, ...] = (), fill: str = "#ffffff") -> str:
        nid = f"n{len(self.nodes)}"
        self.nodes[nid] = Node(nid, lines, kind, fill)
        cluster = self.root
        for i, part in enumerate(scope):
            cluster = cluster.children.setdefault(part, Cluster(".".join(scope[: i + 1])))
        cluster.nodes.append(nid)
        return nid

    def connect(self, src: str, dst: str, label: str) -> None:
        if src != dst and not any(e.src == src and e.dst == dst and e.label == label for e in self.edges):
            self.edges.append(Edge(src, dst, label))


def key_params(spec: LayerSpec) -> str:
    """The layer's explicitly set hyper-parameters, short: ``num_output 20, kernel_size 5``."""
    items = []
    for name in type(spec).model_fields:
        if name in _COMMON or name not in spec.model_fields_set or name.endswith("_filler"):
            continue
        v = getattr(spec, name)
        if isinstance(v, (BaseModel, dict)) or v is None:
            continue
        if isinstance(v, list):
            if any(isinstance(x, (BaseModel, dict, list)) for x in v) or len(v) > 4:
                continue
            v = "x".join(map(str, v))
        elif isinstance(v, bool):
            v = "true" if v else "false"
        items.append(f"{name} {v}")
    text = ", ".join(items[:_MAX_KEYS])
    return text + (", ..." if len(items) > _MAX_KEYS else "")


def _count(n: int) -> str:
    return f"{n:,} params" if n else ""


def _inner_params(layer: LayerSpec, x: Blob) -> int:
    with torch.device("meta"):
        module = layer.build([x])
    return sum(p.numel() for p in module.parameters())


def _layer_lines(spec: LayerSpec, params: int) -> list[str]:
    return [line for line in (spec.name, spec.type, key_params(spec), _count(params)) if line]


def _fill(type_name: str) -> str:
    if "Loss" in type_name:
        return "#f4cccc"
    return _FILL.get(type_name, "#ffffff")


def _scope(name: str) -> tuple[str, ...]:
    return tuple(name.split(".")[:-1])


def _blob_label(blob_name: str, blob: Blob, producers: tuple[str, ...]) -> str:
    """The shape, and the blob's name when it is not its producer's (an in-place top)."""
    return str(blob) if blob_name in producers else f"{blob_name} {blob}"


def build_drawing(graph: Graph, *, collapse: bool = False, depth: int = 2) -> Drawing:
    """Nodes, edges and clusters of ``graph`` (see the module docstring). Collapsed, the
    layers of one scope, at most ``depth`` names deep (``layer1.block1``, what a template
    with ``repeat`` makes), become one box."""
    d = Drawing(f"{graph.name} ({graph.phase})")
    # blob name -> (node id that makes it, names of the layer or scope that makes it)
    made: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, blob in graph.inputs.items():
        made[name] = (d.add([name, str(blob)], "blob"), (name,))
    groups: dict[tuple[str, ...], tuple[str, list[LayerSpec], int]] = {}
    for node in graph.nodes:
        spec = node.spec
        scope = _scope(node.name)
        producer_names = (node.name,)
        sources = [(made[b], b, blob) for b, blob in zip(node.bottoms, node.in_blobs)]
        if collapse and scope and spec.type != "Residual":
            scope = scope[:depth]  # layer1.block1.downsample.conv belongs to block layer1.block1
            if scope not in groups:
                gid = d.add([], "group", scope[:-1], "#fff2cc")
                groups[scope] = (gid, [], 0)
            gid, members, params = groups[scope]
            groups[scope] = (gid, members + [spec], params + node.params)
            entry = exit_ = gid
            producer_names = (node.name, ".".join(scope))
        elif spec.type == "Residual" and not collapse:
            entry, exit_ = _residual(d, spec, node.in_blobs[0], scope)
        else:
            lines = _layer_lines(spec, node.params)
            if spec.type == "Residual":
                lines[1:2] = ["Residual: " + ", ".join(la.name for la in spec.body) + " + "
                              + (", ".join(la.name for la in spec.shortcut) or "identity")]
            entry = exit_ = d.add(lines, "layer", scope, _fill(spec.type))
        for (src, producers), b, blob in sources:
            for e in entry if isinstance(entry, list) else [entry]:  # a residual block's input feeds both paths
                d.connect(src, e, _blob_label(b, blob, producers))
        for t in node.tops:
            made[t] = (exit_, producer_names)
    for scope, (gid, members, params) in groups.items():
        types = Counter(m.type for m in members)
        kinds = ", ".join(f"{t} x{n}" if n > 1 else t for t, n in types.items())
        what = f"{len(members)} layers: {kinds}" if len(members) > 1 else kinds
        d.nodes[gid].lines = [line for line in (".".join(scope), what, _count(params)) if line]
    for out in graph.outputs:
        src, _ = made[out]
        blob = graph.blobs[out]
        oid = d.add([out, str(blob)], "blob")
        d.connect(src, oid, str(blob))
    return d


def _residual(d: Drawing, spec, x: Blob, scope: tuple[str, ...]) -> tuple[list[str], str]:
    """Draw a Residual block as a cluster; returns (entry node ids, exit node id)."""
    inner = scope + (spec.name.split(".")[-1],)
    entries, ends = [], []
    for path in ("body", "shortcut"):
        prev, blob = None, x
        for layer in getattr(spec, path):
            (out,) = layer.infer([blob])
            nid = d.add(_layer_lines(layer, _inner_params(layer, blob)), "layer", inner, _fill(layer.type))
            if prev is None:
                entries.append(nid)
            else:
                d.connect(prev, nid, str(blob))
            prev, blob = nid, out
        ends.append((prev, blob))
    plus = d.add(["+"], "sum", inner)
    for prev, blob in ends:
        if prev is not None:
            d.connect(prev, plus, str(blob))
    if not spec.shortcut:
        entries.append(plus)  # identity shortcut: the input goes straight to the sum
    if spec.activation is None:
        return entries, plus
    act = d.add([spec.activation], "layer", inner, _fill(spec.activation))
    d.connect(plus, act, str(ends[0][1]))
    return entries, act


# ------------------------------------------------------------------ DOT and Mermaid


def _dot_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(d: Drawing, rankdir: str = "TB") -> str:
    """Graphviz DOT source."""
    out = [f'digraph "{_dot_text(d.title)}" {{', f"  rankdir={rankdir};", f'  label="{_dot_text(d.title)}"; labelloc=t;',
           '  graph [fontname="Helvetica"]; node [fontname="Helvetica", fontsize=11]; edge [fontname="Helvetica", fontsize=9, color="#555555"];']

    def node_line(n: Node, indent: str) -> str:
        label = "\\n".join(_dot_text(line) for line in n.lines)
        shape = {"blob": "ellipse", "sum": "circle", "group": "box3d"}.get(n.kind, "box")
        style = "filled" if n.kind == "blob" else "filled,rounded" if n.kind == "layer" else "filled"
        return f'{indent}{n.id} [label="{label}", shape={shape}, style="{style}", fillcolor="{n.fill}"];'

    def cluster(c: Cluster, depth: int, key: str) -> None:
        indent = "  " * (depth + 1)
        if depth:
            out.append(f"{indent[:-2]}subgraph cluster_{key} {{")
            out.append(f'{indent}label="{_dot_text(c.label)}"; style="rounded,dashed"; color="#888888";')
        for nid in c.nodes:
            out.append(node_line(d.nodes[nid], indent))
        for i, child in enumerate(c.children.values()):
            cluster(child, depth + 1, f"{key}_{i}")
        if depth:
            out.append(f"{indent[:-2]}}}")

    cluster(d.root, 0, "c")
    for e in d.edges:
        out.append(f'  {e.src} -> {e.dst} [label="{_dot_text(e.label)}"];')
    out.append("}")
    return "\n".join(out) + "\n"


def _mm_text(s: str) -> str:
    return s.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(d: Drawing, rankdir: str = "TB") -> str:
    """Mermaid flowchart source (renders on GitHub, GitLab and mermaid.live)."""
    out = [f"flowchart {rankdir}", f"  %% {d.title}"]
    open_brackets = {"blob": ('(["', '"])'), "sum": ('(("', '"))'), "group": ('[["', '"]]')}

    def cluster(c: Cluster, depth: int, key: str) -> None:
        indent = "  " * (depth + 1)
        if depth:
            out.append(f'{indent[:-2]}subgraph {key}["{_mm_text(c.label)}"]')
        for nid in c.nodes:
            n = d.nodes[nid]
            a, b = open_brackets.get(n.kind, ('["', '"]'))
            out.append(f"{indent}{nid}{a}{'<br/>'.join(_mm_text(line) for line in n.lines)}{b}")
        for i, child in enumerate(c.children.values()):
            cluster(child, depth + 1, f"{key}_{i}")
        if depth:
            out.append(f"{indent[:-2]}end")

    cluster(d.root, 0, "s")
    for e in d.edges:
        out.append(f'  {e.src} -->|"{_mm_text(e.label)}"| {e.dst}')
    return "\n".join(out) + "\n"


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render(dot_source: str, path: Path, fmt: str) -> None:
    """Write ``path`` in ``fmt`` (svg, png, pdf) with Graphviz's ``dot``."""
    exe = shutil.which("dot")
    if exe is None:
        raise NetcfgError("Graphviz's `dot` is not installed")
    proc = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot_source.encode(), capture_output=True)
    if proc.returncode != 0:
        raise NetcfgError(f"dot -T{fmt} failed: {proc.stderr.decode(errors='replace').strip()}")
