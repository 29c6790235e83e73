"""The test pass: each output of a net that is a mean over the batch, summed over test batches.

A scalar output (a loss, an accuracy) is weighted by its batch's samples. An output with
one value per element and no batch axis (Accuracy's per-class top) is weighted element by
element by what its layer's module says each element averaged over (``element_weights``:
the samples of each class in that batch), so a class absent from a batch neither counts
as 0 nor is diluted: the per-class accuracy over the test set is exact, which Caffe's mean
of batch values is not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from netcfg.solver.layout import to_layout

__all__ = ["OutputSums", "sum_outputs"]


@dataclass
class OutputSums:
    """Sums of a test: ``sums[k]`` is output k times its weight, added over batches (a float,
    or a float64 tensor for an output with elements); ``weights[k]`` the weights added to an
    output with elements (a scalar's weight is its batch's samples: ``count`` in all)."""

    sums: dict[str, float | torch.Tensor] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0

    def add(self, other: OutputSums) -> None:
        """Add another rank's sums (torchrun)."""
        for k, v in other.sums.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        for k, w in other.weights.items():
            self.weights[k] = self.weights[k] + w if k in self.weights else w
        self.count += other.count

    def means(self) -> dict[str, float | list[float]]:
        """Each output's mean: a float, or a list of floats (0 for an element nothing weighed)."""
        out: dict[str, float | list[float]] = {}
        for k, v in self.sums.items():
            if isinstance(v, torch.Tensor):
                w = self.weights[k]
                out[k] = torch.where(w > 0, v / w.clamp(min=1e-300), 0.0).tolist()
            else:
                out[k] = v / max(self.count, 1)
        return out


@torch.no_grad()
def sum_outputs(net, batches: Iterable[dict[str, torch.Tensor]], iterations: int | None = None, *,
                channels_last: bool = False, autocast: Callable = contextlib.nullcontext,
                stopped: Callable[[], bool] | None = None) -> OutputSums:
    """The ``OutputSums`` of ``net`` (a ``netcfg.net.Net``) in eval mode over ``batches`` (the first
    ``iterations`` of them when given, fewer once ``stopped()`` is true): every output that is a
    mean over the batch (``Graph.batch_means``). A net with loss weights also reports its
    weighted total as ``loss``, as training does."""
    net.eval()
    means = net.graph.batch_means
    totals = OutputSums()
    sums, weights = totals.sums, totals.weights
    for i, batch in enumerate(batches):
        if (iterations is not None and i >= iterations) or (stopped is not None and stopped()):
            break
        n = len(next(iter(batch.values())))
        if channels_last:
            batch = to_layout(batch)
        with autocast():
            out = net(**batch)
        if net.loss_weights and "loss" not in out:
            out = {**out, "loss": net.loss(out)}
        for k, v in out.items():
            if v.dim() == 0:
                sums[k] = sums.get(k, 0.0) + float(v) * n
            elif k in means:
                w = net.element_weights(k)
                w = torch.full(v.shape, float(n), dtype=torch.float64) if w is None else w.detach().double().cpu()
                term = v.detach().double().cpu() * w
                sums[k] = sums[k] + term if k in sums else term
                weights[k] = weights[k] + w if k in weights else w
        totals.count += n
    return totals
