"""``netcfg train SOLVER``: train, leaving a run directory with config, metrics and snapshots."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt, SetOpt
from netcfg.cli.plugins import import_plugins

ORDER = 20


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    solver: Annotated[Path, typer.Argument(help="solver file (YAML), or a run directory (its config.yaml: the same training, as a new run)", show_default=False)],
    set_: SetOpt = [],
    resume: Annotated[Path | None, typer.Option("--resume", help="continue from this .solverstate, or from the newest snapshot in this run directory")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="initialise from these weights (.safetensors, a state_dict .pt/.pth, or a run directory: its newest snapshot), by layer name")] = None,
    out: Annotated[Path | None, typer.Option("--out", "--output", "-o", help="run directory (default: runs/<solver name>[-N])")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N")] = None,
    force: Annotated[bool, typer.Option("--force", help="resume even if the solver or net changed, or over later snapshots")] = False,
    plugin: PluginOpt = [],
) -> None:
    """Train the net of SOLVER; Ctrl-C (or SIGTERM) writes a snapshot and exits 130 (143).

    Under torchrun (`torchrun --nproc_per_node N -m netcfg train SOLVER`) it trains
    with DistributedDataParallel, batch_size per rank; see docs/distributed.md.

    Exit codes: 0 done; 1 the run started and stopped (a NaN loss or gradient, out of memory,
    a snapshot it could not write); 2 refused before training (bad input, a run
    directory another process trains in); 130 Ctrl-C; 143 SIGTERM (a scheduler's stop)."""
    import_plugins(plugin)
    from netcfg.errors import NetcfgError, ReportedElsewhere
    from netcfg.solver import Interrupted, Solver, launch
    from netcfg.solver.rundir import RunDir
    from netcfg.solver.spec import load_solver

    overrides = list(set_)
    if device:  # errors name --device; a path is taken as is (' #' would start a YAML comment)
        overrides.append(("device", device, "--device"))
    if weights:
        overrides.append(("weights", str(weights.resolve()), "--weights"))
    with launch.once_per_machine():  # torchrun: a node's ranks read the same files
        if resume is not None:
            _refuse_with_resume(weights, out)
        spec = load_solver(solver, overrides)
        if resume is not None:
            resume = _snapshot_to_resume(resume, force)
    from netcfg.cli.progress import training_progress

    main = launch.env_rank() == 0  # torchrun: rank 0 prints, locks and writes the run directory
    with training_progress(spec.max_iter) if main else _quiet() as (log, on_step):
        run_dir, finished, training = None, False, False  # training: past the checks a refused run stops at
        if resume is not None:
            run_dir = RunDir.resume(spec, resume, log=log) if main else RunDir.follow(resume.resolve().parent, spec)
        try:
            s = Solver(spec, out=out, log=log, run_dir=run_dir, on_step=on_step, resuming=resume is not None)
            run_dir = s.run  # its train.log gets every line the Solver logs from here (display.RunLog)
            if resume is not None:
                s.restore(resume, force=force)
            training = True
            s.solve()
            finished = True
        except NetcfgError as e:
            if main and training and not isinstance(e, ReportedElsewhere):  # why it stopped: in its log too
                _log_error(s.run, e)
            if main or not isinstance(e, Interrupted):
                raise
            raise typer.Exit(e.exit_code) from None  # rank 0 says where its snapshot is
        finally:
            if run_dir is not None:
                run_dir.close()  # another run may use the directory now
            launch.teardown(finished)


def _log_error(run, error) -> None:
    """The error that ended a started run, as printed, at the end of its train.log; a log that
    cannot be written (the full disk that stopped the run) leaves the printed message alone."""
    from netcfg.errors import NetcfgError

    try:
        run.log_line(error.render())
    except (OSError, NetcfgError):
        pass


@contextlib.contextmanager
def _quiet():
    """``(log, on_step)`` of a torchrun rank other than 0: silent, no progress bar."""
    yield (lambda line: None), None


def _refuse_with_resume(weights: Path | None, out: Path | None) -> None:
    """A resumed run takes its weights from the snapshot and writes in the snapshot's
    directory: ``--weights`` or ``--out`` beside ``--resume`` would be ignored."""
    from netcfg.errors import ConfigError

    if weights is not None:  # Caffe's caffe train refuses the pair too
        raise ConfigError("--weights and --resume together: a resumed run continues from its snapshot's weights, "
                          "so these would be overwritten", file="--weights",
                          hint="drop --weights to resume; drop --resume to start a new run from these weights")
    if out is not None:
        raise ConfigError("--out and --resume together: a resumed run goes on writing in its snapshot's "
                          "directory", file="--out",
                          hint="drop --out; to branch a run, copy the snapshot's two files and config.yaml to "
                               "a new directory and resume there")


def _snapshot_to_resume(resume: Path, force: bool) -> Path:
    """``--resume`` names a .solverstate, or a run directory: its newest complete snapshot.
    One with later snapshots beside it, which the resumed run would overwrite, needs ``force``."""
    from netcfg.errors import ConfigError
    from netcfg.solver.rundir import later_snapshots, newest_snapshot

    if resume.is_dir():
        found = newest_snapshot(resume)
        if found is None:
            raise ConfigError(f"no snapshot in {resume} to resume from", file="--resume",
                              hint="a snapshot is a <prefix>_iter_<N>.solverstate with its .safetensors beside it")
        return found
    if not resume.is_file():
        raise ConfigError(f"solver state not found: {resume}", file="--resume",
                          hint="give a .solverstate, or the run directory to take its newest snapshot")
    from netcfg.solver.checkpoint import load_tree
    from netcfg.solver.snapshot import check_state

    check_state(load_tree(resume)[0], resume)  # before the run directory is locked: a wrong file touches nothing
    later = later_snapshots(resume)
    if later and not force:
        names = ", ".join(p.stem for p in later[:4]) + (", ..." if len(later) > 4 else "")
        raise ConfigError(f"{resume.parent} holds {len(later)} later snapshot(s) ({names}) that resuming from "
                          f"{resume.stem} would overwrite as training goes on", file="--resume",
                          hint="pass --force to overwrite them, or copy this snapshot's two files and config.yaml "
                               "to a new directory and resume there")
    return resume
