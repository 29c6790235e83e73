"""``netcfg data stats|show SOLVER``: per-channel statistics of a split, and a picture of one batch;
``netcfg data fetch NAME``: download a data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt, SetOpt
from netcfg.cli.plugins import import_plugins

ORDER = 40

SolverArg = Annotated[Path, typer.Argument(help="solver file (YAML), or a run directory (its config.yaml)", show_default=False)]
SplitOpt = Annotated[str, typer.Option("--split", help="train or test", case_sensitive=False)]


def register(app: typer.Typer) -> None:
    data = typer.Typer(name="data", help="Look at a solver's data (channel statistics, a picture of a batch); "
                                         "download MNIST, Fashion-MNIST, CIFAR-10.",
                       no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    data.command("stats")(stats)
    data.command("show")(show)
    data.command("fetch")(fetch)
    app.add_typer(data, name="data")


def _load(solver: Path, split: str, set_: list[str], plugin: list[str]):
    """(solver spec, the split's spec, its SplitData), errors located in the solver file."""
    from netcfg.data.split import load_source
    from netcfg.errors import ConfigError, ConfigErrors
    from netcfg.solver.spec import load_solver

    import_plugins(plugin)
    split = split.lower()
    if split not in ("train", "test"):
        raise ConfigError(f"--split must be train or test, got '{split}'", file="--split")
    spec = load_solver(solver, set_)
    ds = getattr(spec.data, split)
    if ds is None:
        raise ConfigErrors([spec.locate(ConfigError(f"the solver has no {split} data", ("data",),
                                                    hint=f"add data.{split}, or use --split"))])
    try:
        data = load_source(ds, spec.base_dir)
    except ConfigErrors as e:
        raise ConfigErrors([spec.locate(x.prefixed(("data", split))) for x in e.errors]) from None
    except ConfigError as e:
        raise ConfigErrors([spec.locate(e.prefixed(("data", split)))]) from None
    return spec, ds, data


def stats(
    solver: SolverArg,
    split: SplitOpt = "train",
    set_: SetOpt = [],
    plugin: PluginOpt = [],
    mean_file: Annotated[Path | None, typer.Option("--mean-file", help="also write the mean image: .npy or .binaryproto (Caffe)")] = None,
) -> None:
    """Per-channel mean and std of the train split's images, printed ready to paste.

    Caffe's compute_image_mean: the values are raw (before scale); std is in the
    units after scale, so (x - mean_value) * scale / std has mean 0 and std 1."""
    import io

    import numpy as np

    from netcfg.cli.output import write_output
    from netcfg.data.meanfile import write_binaryproto
    from netcfg.data.stats import stats_report
    from netcfg.errors import ConfigError

    if mean_file is not None and mean_file.suffix not in (".npy", ".binaryproto"):
        raise ConfigError(f"--mean-file {mean_file}: write a .npy or a .binaryproto (Caffe)", file="--mean-file")
    _, ds, data = _load(solver, split, set_, plugin)
    text, found = stats_report(ds, data, f"data.{split.lower()}")
    typer.echo(text)
    if mean_file is not None:
        if not found:
            raise typer.BadParameter("the split has no image tensor to average", param_hint="--mean-file")
        image = next(iter(found.values())).mean_image
        if mean_file.suffix == ".binaryproto":
            write_output(mean_file, write_binaryproto(image[None]), option="--mean-file")
        else:
            buffer = io.BytesIO()
            np.save(buffer, image)
            write_output(mean_file, buffer.getvalue(), option="--mean-file")
        typer.echo(f"# mean image {list(image.shape)} written to {mean_file}; use it with mean_file: {mean_file}")


def show(
    solver: SolverArg,
    split: SplitOpt = "train",
    out: Annotated[Path, typer.Option("--out", "--output", "-o", help="the picture to write (.png, .jpg)")] = Path("batch.png"),
    batch: Annotated[int, typer.Option("--batch", min=0, help="which batch of the first epoch (0: the first)")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, help="show at most this many samples")] = 64,
    set_: SetOpt = [],
    plugin: PluginOpt = [],
) -> None:
    """Write a grid of one batch as the net sees it (after augmentation), with labels."""
    from netcfg.cli.output import check_output, writing
    from netcfg.data.grid import batch_grid, sample_captions
    from netcfg.data.loader import BatchLoader
    from netcfg.errors import ConfigError

    _check_picture(out)  # before the data loads, as plot and landscape do: a folder, a missing one, a bad suffix
    check_output(out)
    spec, ds, data = _load(solver, split, set_, plugin)
    if not data.transforms:
        raise ConfigError(f"the {split} data has no images to show (tensors: {', '.join(data)})", file=str(solver))
    loader = BatchLoader(data, ds, seed=spec.random_seed)
    if batch >= len(loader):
        raise typer.BadParameter(f"the split has {len(loader)} batches per epoch", param_hint="--batch")
    train = split.lower() == "train"
    if train:
        for _ in range(batch + 1):
            b = loader.next_batch()
    else:
        b = next(x for i, x in enumerate(loader.epoch_batches()) if i == batch)
    name = next(iter(data.transforms))
    stored = data.tensors[name]
    picture = batch_grid(b[name], data.transforms[name], sample_captions(b, data.classes, set(data.transforms)),
                         raw_uint8=stored.dtype == _uint8(), limit=limit,
                         title=f"{solver.name} {split.lower()} batch {batch}: '{name}' {list(b[name].shape)}"
                               + (" after augmentation" if train and data.transforms[name].augments else ""))
    with writing(out):
        picture.save(out)
    typer.echo(f"wrote {out} ({min(limit, len(b[name]))} of {len(b[name])} samples, {picture.width}x{picture.height})")


def _check_picture(out: Path) -> None:
    """``--output`` names a picture format Pillow writes, by its suffix."""
    from PIL import Image

    from netcfg.errors import ConfigError

    formats = Image.registered_extensions()
    if formats.get(out.suffix.lower()) not in Image.SAVE:
        raise ConfigError(f"cannot write '{out}': use a .png or .jpg file (a picture format Pillow writes)",
                          file="--output")


def _uint8():
    import torch

    return torch.uint8


def fetch(
    name: Annotated[str, typer.Argument(help="mnist, fashion-mnist or cifar10", show_default=False)],
    root: Annotated[Path | None, typer.Option("--root", help="the directory the files go in (default: "
                                               "$NETCFG_DATA/NAME, else ~/.cache/netcfg/data/NAME)",
                                               show_default=False)] = None,
    mirror: Annotated[str | None, typer.Option("--mirror", help="fetch from this base URL (or directory) instead; "
                                                "the file names stay the same")] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, help="resume this often after a dropped connection")] = 3,
) -> None:
    """Download a data set's canonical files (SHA-256 checked, resumable), then print its data: section.

    Files already there with the right hash are kept; an interrupted download
    resumes from its .part file on the next run. Progress goes to stderr, the
    solver snippet to stdout."""
    import sys

    from netcfg.data.fetch import data_set, default_root, mirror_url
    from netcfg.data.fetch import fetch as fetch_files

    ds = data_set(name)
    if root is not None and root.exists() and not root.is_dir():
        from netcfg.errors import ConfigError

        raise ConfigError(f"{root} is a file, not a folder", file="--root",
                          hint="give the folder the files go in (made if need be)")
    root = (root or default_root(ds.name)).expanduser().absolute()
    base = mirror_url(mirror) if mirror else None
    reporter = _BarReporter() if sys.stderr.isatty() else _LineReporter()
    try:
        done = fetch_files(ds, root, base, reporter, retries=retries)
    finally:
        reporter.close()
    from netcfg.data.fetch import solver_snippet

    size = sum(f.size for f, _, _ in done)
    fresh = sum(status != "present" for _, _, status in done)
    typer.echo(f"{ds.name}: {len(done)} files ({size / 1e6:,.1f} MB) in {root}, SHA-256 checked"
               + (f", {fresh} downloaded" if fresh else ", all already present"), err=True)
    typer.echo(solver_snippet(ds, root))


class _LineReporter:
    """Plain lines on stderr, for logs and pipes: one when a file starts, one when it is done."""

    def start(self, file, url, done):
        at = f" from byte {done:,}" if done else ""
        typer.echo(f"fetching {url} ({file.size / 1e6:,.1f} MB){at}", err=True)

    def advance(self, nbytes):
        pass

    def finish(self, file, status):
        typer.echo(f"{file.name}: {status}, sha256 {file.sha256[:16]}... ok", err=True)

    def note(self, text):
        typer.echo(text, err=True)

    def close(self):
        pass


class _BarReporter(_LineReporter):
    """A rich bar per file on a terminal (bytes, speed, time left), as ``netcfg train`` draws one."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self.task = None
        self.progress.start()

    def start(self, file, url, done):
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(file.name, total=file.size, completed=done)

    def advance(self, nbytes):
        self.progress.advance(self.task, nbytes)

    def finish(self, file, status):
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.progress.console.print(f"{file.name}: {status}, sha256 ok", markup=False, highlight=False)

    def note(self, text):
        self.progress.console.print(text, markup=False, highlight=False)

    def close(self):
        self.progress.stop()
