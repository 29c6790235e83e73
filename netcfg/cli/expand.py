"""``netcfg expand NET``: print the net with every block instance written out as explicit layers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from netcfg.cli.options import PluginOpt
from netcfg.cli.plugins import import_plugins

ORDER = 15


def register(app: typer.Typer) -> None:
    app.command("expand")(expand)


def expand(
    file: Annotated[Path, typer.Argument(help="net file (YAML); also the net of a run directory, of its config.yaml or of a .safetensors written by netcfg", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "--out", "-o", help="write to this file instead of stdout")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite the -o file if it exists")] = False,
    set_: Annotated[list[str], typer.Option("--set", help="override a key: a.b=value (repeatable)")] = [],
    check: Annotated[bool, typer.Option("--check/--no-check", help="validate the expanded layers first "
                                        "(--no-check prints them even when invalid, to debug a template)")] = True,
    plugin: PluginOpt = [],
) -> None:
    """Print a net FILE with its block templates written out as explicit layers.

    Every block instance becomes its layers, with scoped names (stage2.block1.conv1);
    nothing else changes. The result is a plain Caffe-style net file that loads back
    as the same net."""
    import_plugins(plugin)
    from netcfg.cli.output import write_output
    from netcfg.errors import ConfigError
    from netcfg.net.templates import expand_templates
    from netcfg.overrides import apply_overrides
    from netcfg.solver.netfile import read_net_source
    from netcfg.source import document_kind

    read = read_net_source(file, run_dir="config")
    src = read.source
    kind = document_kind(src.data)  # before --set: layers.x=... on a solver file is a wrong key of the solver
    if set_:
        apply_overrides(src, set_)
    if kind == "solver":
        for o in set_:  # expand prints the net alone: a key of the solver would be dropped unseen
            if (key := o.split("=", 1)[0]).split(".")[0] != "net":
                raise ConfigError(f"{key} would be set in the solver, but expand prints only its net", file=f"--set {o}",
                                  hint=f"--set net.{o} sets it in the net")
        net = src.data["net"]
        if not isinstance(net, dict):
            sets = "".join(f" --set {where.removeprefix('--set net.')}" for _, _, where in src.net_sets)
            raise src.locate(ConfigError("this is a solver file; expand the net file it names", ("net",),
                                         hint=f"netcfg expand {os.path.normpath(read.file.parent / str(net))}{sets}"))
        src = src.under("net")
    if check:
        from netcfg.net.spec import net_from_source

        net_from_source(src)  # raises located errors; expansion runs again below on the same data
    text = _header(file, read.file, set_) + dump_net(expand_templates(src).data)
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_output(output, text, inputs=(file,), overwrite=force)
        typer.echo(f"wrote {output}", err=True)


def _header(file: Path, read: Path, overrides: list[str]) -> str:
    """The source's opening comment, after a line saying where this text came from
    (``read``: the YAML file that ``file`` stands for, none for a weights file)."""
    sets = "".join(f" --set {o}" for o in overrides)
    lines = [f"# Expanded from {file}{sets} by `netcfg expand`: every block instance is written out."]
    text = read.read_text(encoding="utf-8") if read.suffix != ".safetensors" else ""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n"


def dump_net(data: dict[str, Any]) -> str:
    """A net as YAML in the zoo's style: one flow mapping a layer, one line an input."""
    lines: list[str] = []
    for key, value in data.items():
        if key == "layers" and isinstance(value, list):
            lines.append("layers:")
            lines += _layers(value, "  ")
        elif isinstance(value, dict) and value:
            lines.append(f"{key}:")
            lines += [f"  {_flow({k: v})[1:-1]}" for k, v in value.items()]
        else:
            lines.append(_flow({key: value})[1:-1])
    return "\n".join(lines) + "\n"


def _layers(layers: list, indent: str) -> list[str]:
    out = []
    for layer in layers:
        nested = [k for k, v in layer.items() if _is_layer_list(v)] if isinstance(layer, dict) else []
        if not nested:
            out.append(f"{indent}- {_flow(layer)}")
            continue
        lead = "- "
        for k, v in layer.items():  # a container layer (Residual): its inner layers one a line
            if k in nested:
                out.append(f"{indent}{lead}{k}:")
                out += _layers(v, indent + "    ")
            else:
                out.append(f"{indent}{lead}{_flow({k: v})[1:-1]}")
            lead = "  "
    return out


def _is_layer_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) and "type" in x for x in v)


def _flow(value: Any) -> str:
    from netcfg.source import to_yaml

    return to_yaml(value, flow=True, width=2**31).strip().removesuffix("\n...")
