"""``netcfg layers [TYPE]``: the registered layer types, or one type's fields."""

from __future__ import annotations

from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt
from netcfg.cli.plugins import import_plugins


ORDER = 80


def register(app: typer.Typer) -> None:
    app.command("layers")(layers)


def layers(
    type_: Annotated[str | None, typer.Argument(metavar="TYPE", help="a layer type")] = None,
    plugin: PluginOpt = [],
) -> None:
    """List the layer types, or show one type's fields, types, defaults and descriptions."""
    import_plugins(plugin)
    from netcfg.errors import ConfigError, did_you_mean
    from netcfg.layers._registry import lookup, registry
    from netcfg.schema import layer_description, layer_fields, layer_summary

    reg = registry()
    if type_ is None:
        width = max(map(len, reg))
        for name, cls in reg.items():
            typer.echo(f"{name.ljust(width)}  {layer_summary(cls)}")
        typer.echo(f"\n{len(reg)} layer types; `netcfg layers TYPE` for one type's fields")
        return
    try:
        cls = lookup(type_)
    except KeyError:
        raise ConfigError(f"unknown layer type '{type_}'", file="netcfg layers", hint=did_you_mean(type_, reg, show_all=0)) from None
    summary, *details = layer_description(cls) or [""]
    typer.echo(f"{type_}: {summary}\n")
    for paragraph in details:  # how it deviates from Caffe's layer of that name
        typer.echo(f"{paragraph}\n")
    rows = [("field", "type", "default", "description")] + layer_fields(cls)
    widths = [min(max(len(r[i]) for r in rows), 36) for i in range(3)]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
