"""``netcfg schema``: the JSON Schema of net (or solver) files, for editors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt
from netcfg.cli.plugins import import_plugins


ORDER = 90


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)


def schema(
    kind: Annotated[str, typer.Argument(help="net or solver")] = "net",
    output: Annotated[Path | None, typer.Option("--output", "--out", "-o", help="write to this file")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite the -o file if it exists")] = False,
    plugin: PluginOpt = [],
) -> None:
    """Write the JSON Schema of net or solver files (stdout, or -o FILE), plugins' layer types
    and data sources included."""
    import_plugins(plugin)
    from netcfg.cli.output import write_output
    from netcfg.errors import ConfigError
    from netcfg.schema import net_schema, solver_schema

    makers = {"net": net_schema, "solver": solver_schema}
    if kind not in makers:
        raise ConfigError(f"unknown schema '{kind}'", file="netcfg schema", hint="valid: net, solver")
    text = json.dumps(makers[kind](), indent=1)
    if output is None:
        typer.echo(text)
    else:
        write_output(output, text + "\n", overwrite=force)
        typer.echo(f"wrote {output}", err=True)
