"""CLI tests. ``run_cli`` and ``netcfg`` run the console entry point in-process, as a shell would."""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def _main(args: list[str]) -> int:
    """The exit code of ``netcfg ARGS`` through ``netcfg.cli.app.main``, the console entry
    point (where a NetcfgError becomes its message and exit code). A bug still raises."""
    from netcfg.cli.app import main

    try:
        main(args)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def run_cli(*args: str) -> Result:
    """``netcfg ARGS`` with stdout and stderr captured apart by typer's CliRunner."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        code = _main(list(args))
        sys.stdout.flush()  # the isolated streams are buffered text wrappers
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return Result(code, stdout, stderr)


def netcfg(*args: str | Path) -> tuple[int, str, str]:
    """``netcfg ARGS`` in this process: (exit code, stdout, stderr), captured with redirect_stdout."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()
