"""CLI tests. ``run_cli`` runs the console entry point in-process, as a shell would."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from typer.testing import CliRunner


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> Result:
    """``netcfg ARGS`` through ``netcfg.cli.app.main`` (which renders NetcfgErrors),
    with stdout and stderr captured apart by typer's CliRunner. A bug still raises."""
    from netcfg.cli.app import main

    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.stdout.flush()  # the isolated streams are buffered text wrappers
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return Result(code, stdout, stderr)
