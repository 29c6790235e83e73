"""The ``netcfg`` command: a typer app whose commands live one per file.

Every module of ``netcfg.cli`` with a ``register(app)`` function adds its
command(s); ``ORDER`` (default 100) sorts them in ``--help``. Nothing here or
there imports torch at module level, so ``netcfg --help`` stays fast; each
command imports what it needs when it runs. This is the only place that exits:
a NetcfgError prints as ``FILE:LINE:COL: error: ...`` and exits with its code.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import inspect
import os
import pkgutil
import signal
import sys
from pathlib import Path

import typer
import typer.core

import netcfg.cli
from netcfg.stop import exits_when_stopped, signals_stop


class _Group(typer.core.TyperGroup):
    """Turns a NetcfgError from any command into its message and exit code."""

    def invoke(self, ctx):
        from netcfg.errors import NetcfgError, ReportedElsewhere

        with _exits_when_unread():
            try:
                with exits_when_stopped():  # before training started (a run's own Ctrl-C is Interrupted, below)
                    done = super().invoke(ctx)
            except NetcfgError as e:
                if not isinstance(e, ReportedElsewhere):  # torchrun: the rank that failed prints it
                    typer.echo(e.render(), err=True)
                ctx.exit(e.exit_code)
            sys.stdout.flush()  # what is still buffered meets a closed pipe here, not in Python's exit
            return done

    def make_context(self, *args, **kwargs):
        with _exits_when_unread(), exits_when_stopped():  # typer would exit 130 in silence, SIGTERM included
            return super().make_context(*args, **kwargs)  # (--help prints here)


@contextlib.contextmanager
def _exits_when_unread():
    """``netcfg layers | head -3``: once the reader has gone, the command stops in silence and
    exits 141, as ``git log | head`` does (click exited 1); a broken pipe of another's is a bug."""
    from netcfg.cli.pipes import SIGPIPE_EXIT, quiet_if_reader_gone

    try:
        yield
    except BrokenPipeError as e:
        if not quiet_if_reader_gone():  # click would exit 1 in silence
            raise RuntimeError(f"a pipe other than stdout's or stderr's broke: {e}") from e
        raise typer.Exit(SIGPIPE_EXIT) from None
    except SystemExit as e:  # rich (--help) exits 1 on a broken pipe, its stdout sent to /dev/null already
        if e.code == 1 and isinstance(e.__context__, BrokenPipeError):
            quiet_if_reader_gone()  # stderr too, when it is the same pipe
            raise typer.Exit(SIGPIPE_EXIT) from None
        raise


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


def _home(value):
    """A path argument with ``~`` (or ``~user``) in front, expanded as in a YAML file's paths."""
    if isinstance(value, Path) and value.parts and value.parts[0].startswith("~"):
        return Path(os.path.expanduser(value))  # unchanged for an unknown user, as the shell leaves it
    if isinstance(value, (list, tuple)):
        return type(value)(_home(v) for v in value)
    return value


def _expand_home(t: typer.Typer) -> None:
    """Every command gets its path arguments with ``~`` expanded: the shell leaves ``--out=~/runs/x``
    (and a quoted '~/x') alone, and train made a folder named '~' in the working directory."""
    for c in t.registered_commands:
        if c.callback is not None:
            c.callback = functools.wraps(c.callback)(
                lambda *args, _callback=c.callback, **params: _callback(*args, **{k: _home(v) for k, v in params.items()}))
    for g in t.registered_groups:
        _expand_home(g.typer_instance)


for _module in _command_modules():
    _module.register(app)
_unwrap_help(app)
_expand_home(app)


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

