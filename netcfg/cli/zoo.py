"""``netcfg zoo [NAME]``: list the model zoo (configs/), or show one net's header and its solvers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

ORDER = 85


def register(app: typer.Typer) -> None:
    app.command("zoo")(zoo)


def zoo(
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="a zoo net: resnet18, mlp, ...")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="a folder of net files to list instead of "
                                                   "the repository's configs/ (its solvers: ../solvers)")] = None,
) -> None:
    """List the zoo's nets (name, parameters, inputs, what it is), or show one NAME in full.

    The numbers come from each file's header comment, which the zoo tests check against
    the built net; nothing is built here. `netcfg zoo NAME` prints the header, the file's
    path and the solver files that train it."""
    from netcfg.zoo import describe_inputs, find_entry, solvers_using, zoo_entries, zoo_files

    if name is None:
        entries = zoo_entries(directory)
        rows = [("name", "parameters", "inputs", "description")]
        rows += [(e.name, f"{e.parameters:,}" if e.parameters is not None else "?", describe_inputs(e.inputs),
                  e.description) for e in entries]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for i, r in enumerate(rows):
            cells = [r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]), r[3]]
            typer.echo("  ".join(cells).rstrip())
            if i == 0:
                typer.echo("  ".join("-" * w for w in widths))
        where = _shown(entries[0].path.parent) if entries else str(directory)
        solvers = len(zoo_files(directory)) - len(entries)
        skipped = f" ({solvers} solver file{'s' * (solvers != 1)} left out)" if solvers else ""
        typer.echo(f"\n{len(entries)} nets in {where}{skipped}; `netcfg zoo NAME` for one net's header and solvers")
        return
    entry = find_entry(name, directory)
    typer.echo(entry.header or f"({entry.path.name} has no header comment)")
    typer.echo("")
    typer.echo(f"file:     {_shown(entry.path)}")
    typer.echo(f"inputs:   {describe_inputs(entry.inputs)}")
    solvers = solvers_using(entry)
    typer.echo("solvers:  " + (", ".join(_shown(p) for p in solvers) if solvers
                               else f"none (in {_shown(entry.path.parent.parent / 'solvers')}/)"))
    if solvers:
        typer.echo(f"train:    netcfg train {_shown(solvers[0])}")


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it, else absolute."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)
