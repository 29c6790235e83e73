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
    from netcfg.errors import ConfigError
    from netcfg.zoo import describe_inputs, find_entry, solvers_using, zoo_listing

    if name is None:
        listing = zoo_listing(directory)
        entries = listing.entries
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
        left_out = [_count(listing.solvers, "solver file")] if listing.solvers else []
        left_out += [_count(len(listing.unreadable), "unreadable file")] if listing.unreadable else []
        left_out_text = f" ({' and '.join(left_out)} left out)" if left_out else ""
        typer.echo(f"\n{_count(len(entries), 'net')} in {where}{left_out_text}; "
                   "`netcfg zoo NAME` for one net's header and solvers")
        for e in listing.unreadable:  # on stderr, after the table: why each file is not in it
            for one in getattr(e, "errors", [e]):  # ConfigErrors: several in one file (tabs)
                at = f"{one.where}: " if isinstance(one, ConfigError) else ""
                typer.echo(f"{at}note: left out of the listing: {one}", err=True)
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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it, else absolute."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)
