"""Options several commands share, declared once (no ``register``: not a command)."""

from __future__ import annotations

from typing import Annotated

import typer

from netcfg.cli.plugins import PLUGIN_HELP

__all__ = ["SetOpt", "PluginOpt"]

SetOpt = Annotated[list[str], typer.Option("--set", help="override a solver key: a.b=value (repeatable)")]
PluginOpt = Annotated[list[str], typer.Option("--plugin", help=PLUGIN_HELP)]
