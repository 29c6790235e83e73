"""``netcfg check FILE``: validate a net (or solver) file and print its layer table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt
from netcfg.cli.plugins import import_plugins

PhaseOpt = Annotated[str, typer.Option("--phase", help="TRAIN or TEST", case_sensitive=False)]


ORDER = 10
# keys only a solver file has: a solver that lacks `net:` is still checked as a solver
_SOLVER_KEYS = {"net", "data", "base_lr", "max_iter", "lr_policy", "snapshot_prefix"}


def register(app: typer.Typer) -> None:
    app.command("check")(check)


def check(
    file: Annotated[Path, typer.Argument(help="net or solver file (YAML), a run directory (its config.yaml), or a .safetensors written by netcfg (its net)", show_default=False)],
    phase: PhaseOpt = "TRAIN",
    stage: Annotated[list[str], typer.Option("--stage", help="active stage (repeatable)")] = [],
    set_: Annotated[list[str], typer.Option("--set", help="override a key: a.b=value (repeatable)")] = [],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
    plugin: PluginOpt = [],
) -> None:
    """Validate a net or solver FILE, infer every blob's shape, print a layer table.

    For a solver file, its net is checked in both phases and its data against the
    net's inputs. Exit 0 when valid, 2 when not."""
    import_plugins(plugin)
    from netcfg.errors import ConfigError
    from netcfg.net import build_graph
    from netcfg.net.spec import net_from_source
    from netcfg.overrides import apply_overrides
    from netcfg.solver.netfile import read_net_source

    phase = phase.upper()
    if phase not in ("TRAIN", "TEST"):
        raise ConfigError(f"--phase must be TRAIN or TEST, got '{phase}'", file="--phase")
    read = read_net_source(file, run_dir="config")
    file, src = read.file, read.source
    # the file says what it is; a --set (layers.x=... on a solver) must not turn it into a net
    is_solver = "layers" not in src.data and src.data.keys() & _SOLVER_KEYS
    if set_:
        apply_overrides(src, set_)
    if is_solver and stage:
        raise ConfigError("--stage is for a net file: a solver file's stages are its train_stages and test_stages",
                          file="--stage", hint="use --set test_stages=[STAGE] (or train_stages)")
    if is_solver:
        from netcfg.solver.check import check_solver
        from netcfg.solver.spec import solver_from_source

        graphs = check_solver(solver_from_source(src, file.resolve().parent))
        graph = graphs.get(phase) or graphs["TRAIN"]
    else:
        net = net_from_source(src)
        graph = build_graph(net, phase, net.checked_stages(stage, "--stage") or read.stages_of(phase))
    if as_json:
        typer.echo(json.dumps(graph_json(graph), indent=1))
    else:
        typer.echo(render_table(graph))


def graph_json(graph) -> dict:
    return {
        "name": graph.name,
        "phase": graph.phase,
        "inputs": {k: {"shape": list(b.shape), "dtype": b.dtype} for k, b in graph.inputs.items()},
        "layers": [
            {
                "name": n.name,
                "type": n.spec.type,
                "bottoms": n.bottoms,
                "tops": n.tops,
                "shapes": {t: list(b.shape) for t, b in zip(n.tops, n.out_blobs)},
                "params": n.params,
                "flops": n.flops,
            }
            for n in graph.nodes
        ],
        "outputs": graph.outputs,
        "losses": graph.losses,
        "total_params": graph.total_params,
        "trainable_params": graph.trainable_params,
        "flops": graph.flops,
    }


def _human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def render_table(graph) -> str:
    rows = [("layer", "type", "tops", "output shape", "params", "FLOPs")]
    for name, b in graph.inputs.items():
        rows.append((name, "input", name, str(b), "", ""))
    for n in graph.nodes:
        shapes = ", ".join(str(b) for b in n.out_blobs)
        rows.append((n.name, n.spec.type, ", ".join(n.tops), shapes, f"{n.params:,}" if n.params else "",
                     _human(n.flops) if n.flops else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    right = {4, 5}
    lines = []
    for j, r in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    loss = ", ".join(f"{t} x {w:g}" for t, w in graph.losses.items()) or "none"
    lines.append("")
    lines.append(f"{graph.name} ({graph.phase}): {_count(len(graph.nodes), 'layer')}, {_count(graph.total_params, 'parameter')} "
                 f"({graph.trainable_params:,} trainable), {_human(graph.flops)} FLOPs per sample")
    lines.append(f"outputs: {', '.join(graph.outputs)}; loss: {loss}")
    return "\n".join(lines)
