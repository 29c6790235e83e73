"""``netcfg train SOLVER``: train, leaving a run directory with config, metrics and snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


ORDER = 20


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    solver: Annotated[Path, typer.Argument(help="solver file (YAML)", show_default=False)],
    set_: Annotated[list[str], typer.Option("--set", help="override a solver key: a.b=value (repeatable)")] = [],
    resume: Annotated[Path | None, typer.Option("--resume", help="continue from this .solverstate")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="initialise from these weights, by layer name")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="run directory (default: runs/<solver name>[-N])")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N")] = None,
    force: Annotated[bool, typer.Option("--force", help="resume even if the solver or net changed")] = False,
) -> None:
    """Train the net of SOLVER; Ctrl-C writes a snapshot and exits 130."""
    from netcfg.solver import Solver
    from netcfg.solver.rundir import RunDir
    from netcfg.solver.spec import load_solver

    overrides = list(set_)
    if device:
        overrides.append(f"device={device}")
    if weights:
        overrides.append(f"weights={weights.resolve()}")
    spec = load_solver(solver, overrides)
    run_dir = None
    if resume is not None:
        from netcfg.errors import ConfigError

        if not resume.is_file():
            raise ConfigError(f"solver state not found: {resume}", file="--resume")
        run_dir = RunDir.resume(spec, resume)
    from netcfg.cli.progress import training_progress

    log_to = []  # the run directory, once made

    def write_log(line: str) -> None:
        if log_to:
            log_to[0].log_line(line)

    with training_progress(spec.max_iter, write_log) as (log, on_step):
        s = Solver(spec, out=out, log=log, run_dir=run_dir, on_step=on_step)
        log_to.append(s.run)
        if resume is not None:
            s.restore(resume, force=force)
        s.solve()
