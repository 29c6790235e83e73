"""The test pass: each scalar output of a net summed over test batches, weighted by their samples."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch

from netcfg.solver.layout import to_layout

__all__ = ["sum_outputs"]


@torch.no_grad()
def sum_outputs(net, batches: Iterable[dict[str, torch.Tensor]], iterations: int | None = None, *,
                channels_last: bool = False, autocast: Callable = contextlib.nullcontext,
                stopped: Callable[[], bool] | None = None) -> tuple[dict[str, float], int]:
    """``({output: sum over samples}, samples)`` for ``net`` (a ``netcfg.net.Net``) in eval mode over
    ``batches`` (the first ``iterations`` of them when given, fewer once ``stopped()`` is true).
    A net with loss weights also reports its weighted total as ``loss``, as training does.
    Divide by the samples for means."""
    net.eval()
    sums: dict[str, float] = {}
    count = 0
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
        count += n
    return sums, count
