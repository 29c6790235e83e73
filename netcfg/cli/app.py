"""The ``netcfg`` command: a typer app whose commands live one per file.

Every module of ``netcfg.cli`` with a ``register(app)`` function adds its
command(s); ``ORDER`` (default 100) sorts them in ``--help``. Nothing here or
there imports torch at module level, so ``netcfg --help`` stays fast; each
command imports what it needs when it runs. This is the only place that exits:
a NetcfgError prints as ``FILE:LINE:COL: error: ...`` and exits with its code.
"""

from __future__ import annotations

import atexit
import importlib
import inspect
import pkgutil
import signal

import typer
import typer.core

import netcfg.cli
from netcfg.stop import exits_when_stopped, signals_stop


class _Group(typer.core.TyperGroup):
    """Turns a NetcfgError from any command into its message and exit code."""

    def invoke(self, ctx):
        from netcfg.errors import NetcfgError, ReportedElsewhere

        try:
            with exits_when_stopped():  # before training started (a run's own Ctrl-C is Interrupted, below)
                return super().invoke(ctx)
        except NetcfgError as e:
            if not isinstance(e, ReportedElsewhere):  # torchrun: the rank that failed prints it
                typer.echo(e.render(), err=True)
            ctx.exit(e.exit_code)

    def make_context(self, *args, **kwargs):
        with exits_when_stopped():  # typer would exit 130 in silence, SIGTERM included
            return super().make_context(*args, **kwargs)


app = typer.Typer(
    name="netcfg",
    cls=_Group,
    help="Caffe-style, config-driven neural-net training on PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _command_modules() -> list:
    mods = [importlib.import_module(f"netcfg.cli.{m.name}") for m in pkgutil.iter_modules(netcfg.cli.__path__)
            if m.name != "app"]
    return sorted((m for m in mods if hasattr(m, "register")), key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


try:
    from rich.markup import escape as _markup_escape
except ImportError:  # typer without rich prints help as plain text
    def _markup_escape(text: str) -> str:
        return text


def _paragraphs(doc: str | None) -> str:
    """A command's docstring with each paragraph on one line, for the terminal to wrap: typer
    0.2x keeps the line breaks of every paragraph after the first, and a source line's break
    then falls mid-sentence at any other width."""
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines())
                       for p in inspect.cleandoc(doc or "").split("\n\n"))


def _unwrap_help(t: typer.Typer) -> None:
    for c in t.registered_commands:
        # typer reads help as rich markup, where 'netcfg[plot]' would lose its '[plot]'
        c.help = _markup_escape(_paragraphs(c.help or (c.callback.__doc__ if c.callback else None)))
    for g in t.registered_groups:
        _unwrap_help(g.typer_instance)


for _module in _command_modules():
    _module.register(app)
_unwrap_help(app)


def main(argv: list[str] | None = None) -> None:
    """Runs the command line ``argv`` (``netcfg.__main__.main``, the console entry, imports this)."""
    try:
        with signals_stop(), exits_when_stopped():  # also while typer builds the commands, before _Group
            app(args=argv, prog_name="netcfg")
    except SystemExit as e:
        if e.code == 130:  # stopped by Ctrl-C: registered now, so it runs before the exit handlers torch left
            atexit.register(_ctrl_c_ends_the_exit)
        raise


def _ctrl_c_ends_the_exit() -> None:
    """A second Ctrl-C while Python shuts down (users press it twice) ends the process at once,
    instead of interrupting an exit handler of torch's and printing its traceback."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

