"""The ``netcfg`` command: a typer app whose commands live one per file.

Nothing here imports torch at module level, so ``netcfg --help`` stays fast; each
command imports what it needs when it runs. This is the only place that exits:
a NetcfgError prints as ``FILE:LINE:COL: error: ...`` and exits 2.
"""

from __future__ import annotations

import typer
import typer.core

from netcfg.cli import check, layers, schema, test, train

class _Group(typer.core.TyperGroup):
    """Turns a NetcfgError from any command into its message and exit code."""

    def invoke(self, ctx):
        from netcfg.errors import NetcfgError

        try:
            return super().invoke(ctx)
        except NetcfgError as e:
            typer.echo(e.render(), err=True)
            ctx.exit(e.exit_code)


app = typer.Typer(
    name="netcfg",
    cls=_Group,
    help="Caffe-style, config-driven neural-net training on PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (check, train, test, schema, layers):
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    app(args=argv, prog_name="netcfg")


if __name__ == "__main__":
    main()
