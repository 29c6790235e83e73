"""``netcfg plot RUN_DIR...``: training curves of one or more runs, overlaid, to an image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ORDER = 60


def register(app: typer.Typer) -> None:
    app.command("plot")(plot)


def plot(
    runs: Annotated[list[Path], typer.Argument(help="run directories (or their metrics.jsonl)", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "--out", "-o", help="image file: .png, .svg or .pdf")] = Path("curves.png"),
    x: Annotated[str, typer.Option("--x", help="x axis: iter, epoch or seconds (training time)", case_sensitive=False)] = "iter",
    smoothing: Annotated[float, typer.Option("--smooth", min=0.0, max=0.999, help="exponential smoothing weight of the train loss (TensorBoard's)")] = 0.6,
) -> None:
    """Plot runs: train and test loss, test accuracy, learning rate, images/s.

    Train loss as logged and smoothed, every scalar test output; several runs overlaid
    with a legend.

    Needs matplotlib: pip install 'netcfg[plot]'."""
    from netcfg.cli.output import check_output, writing
    from netcfg.errors import ConfigError, did_you_mean
    from netcfg.tools.plot import plot_runs, read_run, require_matplotlib

    x = x.lower()
    if x not in ("iter", "epoch", "seconds"):
        raise ConfigError(f"--x must be iter, epoch or seconds, got '{x}'", file="--x",
                          hint=did_you_mean(x, ("iter", "epoch", "seconds"), show_all=3))
    if output.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ConfigError(f"cannot write '{output}': use a .png, .svg or .pdf file", file="--output")
    check_output(output)
    require_matplotlib()
    loaded = [read_run(p) for p in runs]
    dirs = [(p if p.is_dir() else p.parent).resolve() for p in runs]
    for i, d in enumerate(dirs):  # the same run twice (or as RUN and RUN/metrics.jsonl): one curve under two colours
        if d in dirs[:i]:
            raise ConfigError(f"{runs[i]} is the run {runs[dirs.index(d)]} again", file=str(runs[i]),
                              hint="give each run once")
    for r, label in zip(loaded, _labels(dirs)):
        r.label = label
    with writing(output):
        plot_runs(loaded, output, x=x, smoothing=smoothing)
    typer.echo(f"wrote {output}", err=True)


def _labels(dirs: list[Path]) -> list[str]:
    """Each run's legend label: its directory's name, or where another run's shares it
    (a/x/run, b/x/run) the shortest path ending that no other run has."""
    labels = []
    for i, d in enumerate(dirs):
        others = [o.parts for j, o in enumerate(dirs) if j != i]
        k = next(k for k in range(1, len(d.parts) + 1) if all(o[-k:] != d.parts[-k:] for o in others))
        labels.append(str(Path(*d.parts[-k:])))
    return labels
