"""``netcfg draw NET``: the net's graph as SVG/PNG/PDF (Graphviz), DOT or Mermaid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt
from netcfg.cli.plugins import import_plugins

ORDER = 50

FORMATS = ("svg", "png", "pdf", "dot", "mmd")
_SUFFIX = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot", ".mmd": "mmd", ".mermaid": "mmd"}


def register(app: typer.Typer) -> None:
    app.command("draw")(draw)


def draw(
    file: Annotated[Path, typer.Argument(help="net or solver file, a run directory (its config.yaml), or a .safetensors written by netcfg (its net)", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "--out", "-o", help="net.svg, net.png, net.pdf (need Graphviz), net.dot or net.mmd; default: DOT on stdout")] = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="svg, png, pdf, dot or mmd (default: from the -o suffix)")] = None,
    phase: Annotated[str, typer.Option("--phase", help="TRAIN or TEST", case_sensitive=False)] = "TRAIN",
    stage: Annotated[list[str], typer.Option("--stage", help="active stage (repeatable)")] = [],
    rankdir: Annotated[str, typer.Option("--rankdir", help="TB (top to bottom) or LR (left to right)", case_sensitive=False)] = "TB",
    collapse: Annotated[bool, typer.Option("--collapse", help="draw each Residual block and each innermost name scope (stage2.block1) as one box")] = False,
    depth: Annotated[int | None, typer.Option("--depth", min=1, help="collapse scopes at most this many names deep "
                                              "(1: stage2; implies --collapse, whose default is 2: stage2.block1)",
                                              show_default=False)] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a key: a.b=value (repeatable)")] = [],
    plugin: PluginOpt = [],
) -> None:
    """Draw the layers (type, key parameters, parameter count) and blobs (shapes) of a net.

    SVG, PNG and PDF go through Graphviz's `dot` (Debian: apt-get install graphviz);
    without it, the DOT source is written instead, with the command that renders it.
    Mermaid (.mmd) renders on GitHub and at mermaid.live with nothing installed."""
    import_plugins(plugin)
    from netcfg.cli.output import check_output, write_output, writing
    from netcfg.errors import ConfigError, did_you_mean
    from netcfg.net import build_graph
    from netcfg.solver.netfile import read_net_file
    from netcfg.tools.draw import build_drawing, dot_available, render, to_dot, to_mermaid

    phase, rankdir = phase.upper(), rankdir.upper()
    if phase not in ("TRAIN", "TEST"):
        raise ConfigError(f"--phase must be TRAIN or TEST, got '{phase}'", file="--phase")
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ConfigError(f"--rankdir must be TB or LR (or BT, RL), got '{rankdir}'", file="--rankdir")
    if fmt is None:
        fmt = "dot" if output is None else _SUFFIX.get(output.suffix.lower())
        if fmt is None:
            raise ConfigError(f"cannot tell the format of '{output}' from its suffix", file="--output",
                              hint="use .svg, .png, .pdf, .dot or .mmd, or give --format")
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format '{fmt}'", file="--format", hint=did_you_mean(fmt, FORMATS, show_all=8))
    named = None if output is None else _SUFFIX.get(output.suffix.lower())
    if named is not None and named != fmt:  # -o l.svg -f png would put PNG bytes in a .svg file
        raise ConfigError(f"--format {fmt} does not match the output file {output}, whose suffix says {named}",
                          file="--format", hint=f"drop --format (-o {output} makes {named}), "
                          f"or name the file {output.with_suffix('.' + fmt)}")
    if output is not None:
        check_output(output, inputs=(file,))
    loaded = read_net_file(file, set_, run_dir="config")
    graph = build_graph(loaded.net, phase, loaded.net.checked_stages(stage, "--stage") or loaded.stages_of(phase))
    drawing = build_drawing(graph, collapse=collapse or depth is not None, depth=depth or 2)  # --depth implies --collapse
    if fmt == "mmd":
        text = to_mermaid(drawing, rankdir)
    else:
        text = to_dot(drawing, rankdir)
    if output is None:
        if fmt in ("svg", "png", "pdf"):
            raise ConfigError(f"--format {fmt} needs an output file", file="--format", hint="add -o net." + fmt)
        typer.echo(text, nl=False)
        return
    if fmt in ("dot", "mmd"):
        write_output(output, text, inputs=(file,))
        how = (f"render it with: dot -T{'svg'} {output} -o {output.with_suffix('.svg')}" if fmt == "dot"
               else "paste it into https://mermaid.live, or put it in a ```mermaid block on GitHub")
        typer.echo(f"wrote {output}; {how}", err=True)
        return
    if not dot_available():
        dot_path = output.with_suffix(".dot")
        write_output(dot_path, text, inputs=(file,))
        typer.echo(f"Graphviz's `dot` is not installed, so {output} was not made; wrote {dot_path} instead.\n"
                   f"Install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz) and run\n"
                   f"  dot -T{fmt} {dot_path} -o {output}\n"
                   f"or draw it without Graphviz: netcfg draw {file} -o {output.with_suffix('.mmd')} (Mermaid)", err=True)
        return
    with writing(output):
        render(text, output, fmt)
    typer.echo(f"wrote {output}", err=True)
