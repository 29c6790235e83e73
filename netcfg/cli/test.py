"""``netcfg test SOLVER --weights W``: run the TEST phase and print every output's mean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt, SetOpt
from netcfg.cli.plugins import import_plugins


ORDER = 30


def register(app: typer.Typer) -> None:
    app.command("test")(test)


def test(
    solver: Annotated[Path, typer.Argument(help="solver file (YAML), a run directory (its config.yaml), or a snapshot in one (with its run's config.yaml)", show_default=False)],
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="trained weights (.safetensors, a state_dict .pt/.pth, or a run directory: its newest snapshot); default: SOLVER when it is a run directory", show_default=False)] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", "-n", min=1, help="test batches (default: the whole test split)")] = None,
    set_: SetOpt = [],
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    plugin: PluginOpt = [],
) -> None:
    """Average every loss and metric of the TEST net over the test split.

    Under torchrun each rank tests its share of the split and rank 0 prints the whole
    split's results (docs/distributed.md)."""
    import_plugins(plugin)
    import tempfile

    from netcfg.errors import ConfigError
    from netcfg.solver import Solver, launch
    from netcfg.solver.weights_file import copy_weights
    from netcfg.solver.spec import load_solver
    from netcfg.solver.weights_spec import resolve_file

    if weights is None and solver.suffix in (".safetensors", ".solverstate") and (solver.parent / "config.yaml").is_file():
        solver, weights = solver.parent, solver.with_suffix(".safetensors")  # a snapshot, tested with its run's config
    overrides = list(set_) + ["max_iter=0", "weights=null"]  # the weights to test are loaded below, once
    if device:
        overrides.append(("device", device, "--device"))
    with launch.once_per_machine():  # torchrun: a node's ranks read the same files
        if weights is None:  # a run directory holds both: test its newest snapshot
            if not solver.is_dir():
                raise ConfigError("missing option --weights: the weights to test", file="--weights",
                                  hint="add --weights FILE (or a run directory), or give a run directory as SOLVER "
                                       "to test its newest snapshot")
            weights = solver
        spec = load_solver(solver, overrides)
    spec.data.train = None  # testing reads no training data
    main = launch.env_rank() == 0  # torchrun: rank 0 prints
    quiet = typer.echo if main and not as_json else (lambda line: None)
    finished = False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            s = Solver(spec, out=Path(tmp) / "run", log=quiet)
            # a score of half-loaded weights means nothing: every blob of the TEST net must come from the file
            with s.dist.together():  # torchrun: every rank reads the file; a refusal is printed once
                path = resolve_file(str(weights), Path.cwd())
                report = copy_weights(s.test_net, path, strict=True)
            if report.iteration is not None:  # "Iteration N, Testing net" names the snapshot's iteration
                s.iter = report.iteration
            for line in report.lines(str(path)):
                quiet(line)
            results = s.test(iterations, iteration_known=report.iteration is not None)
            s.run.close()
        finished = True
    finally:
        launch.teardown(finished)
    if as_json and main:
        typer.echo(json.dumps(results))
