"""The loss around trained weights along filter-normalised random directions (Li et al. 2018).

"Visualizing the Loss Landscape of Neural Nets", https://arxiv.org/abs/1712.09913:
pick a random Gaussian direction ``d`` shaped like the weights ``theta``, rescale
each filter of it to the norm of the same filter of ``theta`` (Section 4: for a
convolution a filter is one output channel ``d[i]``, for an InnerProduct one output
unit's row), and set the direction of biases and BatchNorm parameters (every
parameter with at most one dimension) to zero, as the paper does. Then evaluate
the loss at ``theta + a d1`` (1-D) or ``theta + a d1 + b d2`` (2-D) for a grid of
``a, b`` in ``[-span, span]``. Filter normalisation removes the scale invariance
that makes plain random directions incomparable between nets.

The loss is the net's total loss, averaged over a fixed subset (the first N
samples) of the train split, with the net in eval mode: BatchNorm uses its running
statistics and Dropout is off, so every point is a deterministic function of the
weights. Augmentation is not applied (a crop_size is a centre crop).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from netcfg.data.loader import BatchLoader
from netcfg.data.sources import load_source
from netcfg.errors import ConfigError, ConfigErrors
from netcfg.net import Net, build_graph, float_inputs
from netcfg.solver.weights_file import copy_weights
from netcfg.solver.spec import SolverSpec
from netcfg.tools.device import pick_device

__all__ = ["Surface", "filter_normalized_direction", "evaluate", "loss_surface", "prepare", "landscape_of"]


@dataclass
class Surface:
    """Loss (and the net's other scalar outputs) on a 1-D or 2-D grid around the weights."""

    name: str
    alphas: list[float]
    betas: list[float] | None            # None for a 1-D curve
    loss: list                           # [a] or [b][a] (rows are b, as contour plots expect)
    metrics: dict[str, list] = field(default_factory=dict)  # e.g. accuracy, same layout
    center_loss: float = math.nan
    center_metrics: dict[str, float] = field(default_factory=dict)
    samples: int = 0

    @property
    def two_d(self) -> bool:
        return self.betas is not None

    def values(self) -> list[float]:
        return [v for row in self.loss for v in (row if self.two_d else [row])]

    def as_dict(self) -> dict:
        return {"name": self.name, "alphas": self.alphas, "betas": self.betas, "loss": self.loss,
                "metrics": self.metrics, "center_loss": self.center_loss, "center_metrics": self.center_metrics,
                "samples": self.samples}


def filter_normalized_direction(net: torch.nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction per parameter, each filter scaled to its weights' filter norm;
    zero for biases and BatchNorm parameters (``dim() <= 1``)."""
    out = {}
    for name, p in net.named_parameters():
        if p.dim() <= 1:
            out[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(device=p.device, dtype=p.dtype)
        w = p.detach().reshape(p.shape[0], -1)             # (filters, rest)
        dn = d.reshape(p.shape[0], -1)
        scale = w.norm(dim=1, keepdim=True) / (dn.norm(dim=1, keepdim=True) + 1e-10)
        out[name] = (dn * scale).reshape(p.shape)
    return out


@torch.no_grad()
def evaluate(net: Net, batches: list[dict[str, torch.Tensor]]) -> tuple[float, dict[str, float]]:
    """Sample-weighted mean of the total loss and of every other scalar output."""
    total, sums, count = 0.0, {}, 0
    for batch in batches:
        n = len(next(iter(batch.values())))
        out = net(**batch)
        total += float(net.loss(out)) * n
        for k, v in out.items():
            if v.dim() == 0 and k not in net.loss_weights:
                sums[k] = sums.get(k, 0.0) + float(v) * n
        count += n
    return total / count, {k: v / count for k, v in sums.items()}


@torch.no_grad()
def loss_surface(net: Net, batches: list[dict[str, torch.Tensor]], *, steps: int = 21, span: float = 1.0,
                 two_d: bool = False, seed: int = 1, name: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Surface:
    """Evaluate the loss on the grid; the weights are restored afterwards."""
    net.eval()
    params = dict(net.named_parameters())
    theta = {k: p.detach().clone() for k, p in params.items()}
    gen = torch.Generator().manual_seed(seed)
    d1 = filter_normalized_direction(net, gen)
    d2 = filter_normalized_direction(net, gen) if two_d else None
    grid = [(-span + 2 * span * i / (steps - 1)) if steps > 1 else 0.0 for i in range(steps)]
    center_loss, center_metrics = evaluate(net, batches)
    loss: list = []
    metrics: dict[str, list] = {k: [] for k in center_metrics}
    rows = grid if two_d else [0.0]
    done, todo = 0, len(rows) * len(grid)
    try:
        for b in rows:
            row_loss, row_metrics = [], {k: [] for k in center_metrics}
            for a in grid:
                for k, p in params.items():
                    p.copy_(theta[k] + a * d1[k] + (b * d2[k] if d2 is not None else 0.0))
                value, outs = evaluate(net, batches)
                row_loss.append(value)
                for k in row_metrics:
                    row_metrics[k].append(outs.get(k, math.nan))
                done += 1
                if progress is not None:
                    progress(done, todo)
            if two_d:
                loss.append(row_loss)
                for k in metrics:
                    metrics[k].append(row_metrics[k])
            else:
                loss, metrics = row_loss, row_metrics
    finally:
        for k, p in params.items():
            p.copy_(theta[k])
    samples = sum(len(next(iter(b.values()))) for b in batches)
    return Surface(name or net.graph.name, grid, grid if two_d else None, loss, metrics, center_loss, center_metrics, samples)


def prepare(spec: SolverSpec, weights: str | Path, *, samples: int, batch_size: int | None = None,
            device: str | None = None) -> tuple[Net, list[dict[str, torch.Tensor]]]:
    """The net with ``weights`` loaded (eval mode; every blob must be in the file) and the
    first ``samples`` of the train split as fixed batches on the device. The TEST net is used when it has a loss (it usually also
    reports accuracy); otherwise the TRAIN net."""
    dev = pick_device(device, spec)
    if spec.data.train is None:
        raise ConfigErrors([spec.locate(ConfigError("the landscape is computed on the train split, and this solver has none",
                                                    ("data",), hint="add data.train"))])
    graph = build_graph(spec.net_spec, "TEST", spec.test_stages)
    if not graph.losses:
        graph = build_graph(spec.net_spec, "TRAIN", spec.train_stages)
    net = Net(graph).to(dev)
    copy_weights(net, weights, strict=True)  # a surface around half-random weights means nothing (as netcfg test)
    net.eval()
    split = spec.data.train.model_copy(update={"limit": samples, "shuffle": False,
                                               "batch_size": batch_size or max(spec.data.train.batch_size, 256)})
    try:
        loader = BatchLoader(load_source(split, spec.base_dir), split, seed=spec.random_seed, device=dev)
        loader.deliver(float_inputs(graph))
    except ConfigErrors as e:
        raise ConfigErrors([spec.locate(x.prefixed(("data", "train"))) for x in e.errors]) from None
    except ConfigError as e:
        raise ConfigErrors([spec.locate(e.prefixed(("data", "train")))]) from None
    return net, list(loader.epoch_batches())


def landscape_of(spec: SolverSpec, weights: str | Path, *, samples: int = 1000, steps: int = 21, span: float = 1.0,
                 two_d: bool = False, seed: int = 1, batch_size: int | None = None, device: str | None = None,
                 progress=None) -> Surface:
    """``prepare`` then ``loss_surface``: what ``netcfg landscape`` computes for one solver."""
    net, batches = prepare(spec, weights, samples=samples, batch_size=batch_size, device=device)
    return loss_surface(net, batches, steps=steps, span=span, two_d=two_d, seed=seed, progress=progress)


def figure_size(n: int, two_d: bool) -> tuple[float, float]:
    """Inches of the figure for ``n`` surfaces (pixels: times ``plot.DPI``)."""
    return (5.0 * n + 1.0, 4.5) if two_d else (7.0, 4.5)


def plot_surfaces(surfaces: list[Surface], out: str | Path) -> None:
    """1-D: loss curves overlaid (accuracy dashed on a second axis). 2-D: one contour plot
    per surface, side by side, with the same contour levels so they compare."""
    from netcfg.tools.plot import DPI, require_matplotlib

    require_matplotlib()
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    two_d = surfaces[0].two_d
    fig = Figure(figsize=figure_size(len(surfaces), two_d), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if not two_d:
        ax = fig.subplots()
        twin = None
        for i, s in enumerate(surfaces):
            ax.plot(s.alphas, s.loss, color=f"C{i}", linewidth=2, label=f"{s.name} loss")
            for k, v in s.metrics.items():
                twin = twin or ax.twinx()
                twin.plot(s.alphas, v, color=f"C{i}", linestyle="--", linewidth=1.2, label=f"{s.name} {k}")
        ax.set_xlabel("step along a filter-normalised direction")
        ax.set_ylabel("loss")
        values = [v for s in surfaces for v in s.values() if math.isfinite(v) and v > 0]
        if values and max(values) / min(values) > 30:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if twin is not None:
            twin.set_ylabel(", ".join(sorted({k for s in surfaces for k in s.metrics})))
            h2, l2 = twin.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, fontsize=8)
        ax.set_title(f"loss along one random direction ({surfaces[0].samples} train samples)")
    else:
        axes = fig.subplots(1, len(surfaces), squeeze=False)[0]
        values = [v for s in surfaces for v in s.values() if math.isfinite(v) and v > 0]
        lo, hi = (min(values), max(values)) if values else (1e-3, 1.0)
        hi = max(hi, lo * 1.01)
        levels = np.geomspace(lo, hi, 25)
        norm = LogNorm(lo, hi)
        for ax, s in zip(axes, surfaces):
            z = np.clip(np.asarray(s.loss, dtype=float), lo, hi)
            ax.contour(s.alphas, s.betas, z, levels=levels, norm=norm, cmap="viridis", linewidths=1.0)
            ax.plot([0], [0], marker="*", color="red", markersize=9)
            ax.set_aspect("equal")
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.yaxis.set_major_locator(MaxNLocator(5))
            ax.set_title(f"{s.name}: loss {s.center_loss:.3g} at the weights")
            ax.set_xlabel("direction 1")
            ax.set_ylabel("direction 2")
        fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=list(axes), label="loss (train subset)", shrink=0.9)
    fig.savefig(out, dpi=DPI)
