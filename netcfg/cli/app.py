"""The ``netcfg`` command: a typer app whose commands live one per file.

Nothing here imports torch at module level, so ``netcfg --help`` stays fast; each
command imports what it needs when it runs. This is the only place that exits:
a NetcfgError prints as ``FILE:LINE:COL: error: ...`` and exits 2.
"""

from __future__ import annotations

import sys

import typer

from netcfg.cli import check, layers, schema, test, train

app = typer.Typer(
    name="netcfg",
    help="Caffe-style, config-driven neural-net training on PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (check, train, test, schema, layers):
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    from netcfg.errors import NetcfgError

    try:
        app(args=argv, prog_name="netcfg")
    except NetcfgError as e:
        print(e.render(), file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
