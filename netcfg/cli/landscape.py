"""``netcfg landscape SOLVER --weights W``: the loss around trained weights (Li et al. 2018)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt, SetOpt
from netcfg.cli.plugins import import_plugins

ORDER = 70


def register(app: typer.Typer) -> None:
    app.command("landscape")(landscape)


def landscape(
    solvers: Annotated[list[Path], typer.Argument(help="solver file(s), or run directories (their config.yaml); several are drawn side by side", show_default=False)],
    weights: Annotated[list[Path], typer.Option("--weights", "-w", help="trained weights (.safetensors, or a run directory: its newest snapshot), one per solver, in order")],
    output: Annotated[Path, typer.Option("--output", "--out", "-o", help="image file: .png, .svg or .pdf")] = Path("surface.png"),
    two_d: Annotated[bool, typer.Option("--2d", help="a 2-D contour plot over two directions (default: a 1-D curve)")] = False,
    steps: Annotated[int, typer.Option("--steps", min=2, help="grid points per direction (odd puts one on the weights)")] = 21,
    span: Annotated[float, typer.Option("--span", min=1e-6, help="the grid covers [-span, span] along each direction")] = 1.0,
    samples: Annotated[int, typer.Option("--samples", min=1, help="the first N samples of the train split")] = 1000,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", min=1, help="evaluation batch (default: max(train batch_size, 256))")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="seed of the random directions")] = 1,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N (default: the solver's)")] = None,
    set_: SetOpt = [],
    as_json: Annotated[bool, typer.Option("--json", help="also print the grid values as one JSON object")] = False,
    plugin: PluginOpt = [],
) -> None:
    """Plot the loss landscape around trained weights (a curve, or --2d contours).

    The loss along filter-normalised random directions (Li et al. 2018,
    arXiv:1712.09913): a 1-D curve, or with --2d a contour plot.

    Biases and BatchNorm parameters are not perturbed; the net runs in eval mode
    (BatchNorm running statistics, no Dropout) on a fixed train subset. Several
    SOLVER/--weights pairs are drawn with the same directions' seed and contour
    levels, to compare nets. Needs matplotlib: pip install 'netcfg[plot]'."""
    import_plugins(plugin)
    from netcfg.cli.output import check_output, writing
    from netcfg.errors import ConfigError
    from netcfg.solver.spec import load_solver
    from netcfg.solver.weights_spec import resolve_file
    from netcfg.tools.landscape import landscape_of, plot_surfaces
    from netcfg.tools.plot import require_matplotlib

    if len(weights) != len(solvers):
        raise ConfigError(f"{len(solvers)} solver(s) but {len(weights)} --weights; give one --weights per solver, in order",
                          file="--weights")
    if output.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ConfigError(f"cannot write '{output}': use a .png, .svg or .pdf file", file="--output")
    check_output(output)  # before the minutes of evaluation, not after
    require_matplotlib()
    specs = [load_solver(s, set_) for s in solvers]
    weights = [resolve_file(str(w), Path.cwd()) for w in weights]  # a run: its newest snapshot; a state: its weights
    names = [spec.net_spec.name for spec in specs]
    if len(set(names)) < len(names):  # the same net twice: tell them apart by file
        names = [f"{n} ({_where(p)})" for n, p in zip(names, solvers)]
    tty = sys.stderr.isatty()
    surfaces = []
    for spec, w, name in zip(specs, weights, names):

        def progress(done: int, todo: int, name=name) -> None:
            typer.echo(f"\r{name}: {done}/{todo} points", err=True, nl=done == todo)

        s = landscape_of(spec, w, samples=samples, steps=steps, span=span, two_d=two_d, seed=seed,
                         batch_size=batch_size, device=device, progress=progress if tty else None)
        s.name = name
        surfaces.append(s)
        typer.echo(summary(s), err=as_json)
    with writing(output):
        plot_surfaces(surfaces, output)
    typer.echo(f"wrote {output}", err=True)
    if as_json:
        typer.echo(json.dumps({"surfaces": [s.as_dict() for s in surfaces], "seed": seed, "span": span, "steps": steps}))


def _where(path: Path) -> str:
    """A solver's short name: a run's config.yaml is known by its run directory."""
    return path.resolve().parent.name if path.name == "config.yaml" else path.stem


def summary(s) -> str:
    """One line a README can quote: the loss at the weights and over the grid."""
    values = s.values()
    mean = sum(values) / len(values)
    metrics = "".join(f", {k} {v:.4f}" for k, v in s.center_metrics.items())
    shape = f"{len(s.alphas)}x{len(s.betas)} grid" if s.two_d else f"{len(s.alphas)} points"
    return (f"{s.name}: loss {s.center_loss:.4f} at the weights{metrics}; over the {shape} "
            f"(span {max(s.alphas):g}, {s.samples} train samples): mean {mean:.4f}, max {max(values):.4f}")
