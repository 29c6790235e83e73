"""Reduction: SUM, ASUM, SUMSQ or MEAN over the trailing axes, times coeff (Caffe's)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from netcfg.errors import ShapeError
from netcfg.layers.base import Blob, LayerSpec, check_float
from netcfg.layers._registry import register

__all__ = ["Reduction"]


class Reduce(nn.Module):
    """Reduce every axis from ``dim`` on (batch counted) to one value, times ``coeff``."""

    def __init__(self, operation: str, dim: int, coeff: float):
        super().__init__()
        self.operation, self.dim, self.coeff = operation, dim, coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(self.dim)  # (*kept, reduced)
        wide = flat.to(torch.promote_types(x.dtype, torch.float32))  # Caffe sums in float, so does float16 here
        if self.operation == "ASUM":
            wide = wide.abs()
        elif self.operation == "SUMSQ":
            wide = wide * wide
        y = wide.mean(-1) if self.operation == "MEAN" else wide.sum(-1)
        if self.coeff != 1:
            y = y * self.coeff
        return y.to(x.dtype)


@register
class Reduction(LayerSpec):
    """Caffe's Reduction: every axis from ``axis`` to the last collapses to one value, the SUM,
    the sum of absolute values (ASUM), of squares (SUMSQ) or the MEAN, times ``coeff``;
    the axes before ``axis`` are kept. A per-sample sum is ``axis: 1``.

    Deviation from Caffe: axis 0, Caffe's default, would reduce over the batch too, and is
    refused; the default here is 1. Caffe's whole-batch sum as a loss is ``axis: 1`` with a
    ``loss_weight``, which sums the per-sample values over the batch (for SUM, ASUM and
    SUMSQ the same number; Caffe's MEAN at axis 0 also divides by the batch size)."""

    type: Literal["Reduction"]
    operation: Literal["SUM", "ASUM", "SUMSQ", "MEAN"] = Field(
        "SUM", description="SUM, ASUM (sum of |x|), SUMSQ (sum of x^2) or MEAN of the reduced values")
    axis: int = Field(1, description="first axis reduced, counting the batch as 0 (which is refused); every "
                                     "later axis is reduced too; -1 for the last")
    coeff: float = Field(1.0, description="the result is multiplied by this (e.g. -1, or a loss scale)")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 4]}},
        {"inputs": {"x": [2, 3, 4]}, "operation": "SUMSQ", "axis": 2, "coeff": 0.5},
        {"inputs": {"x": [5, 2]}, "operation": "ASUM", "axis": -1},
        {"inputs": {"x": [3, 2]}, "operation": "MEAN", "axis": 1, "coeff": -2},
    ]

    def _start(self, x: Blob) -> int:
        """The first reduced axis as a per-sample index (Caffe's CanonicalAxisIndex)."""
        rank = len(x.shape)
        full = self.axis + rank + 1 if self.axis < 0 else self.axis
        if not 0 <= full <= rank:
            raise ShapeError(f"axis {self.axis} is out of range for a {rank}-d input per sample {list(x.shape)} "
                             f"(valid: 1..{rank} or -1..-{rank}, the batch being axis 0)", key="axis")
        if full == 0:
            raise ShapeError(f"axis {self.axis} would reduce over the batch; netcfg keeps it: use axis 1 for one "
                             "value per sample (with a loss_weight the values are summed over the batch, as "
                             "Caffe's axis 0 SUM is)", key="axis")
        return full - 1

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        check_float(self, x)
        return [Blob(x.shape[:self._start(x)], x.dtype)]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Reduce(self.operation, self._start(bottoms[0]) + 1, self.coeff)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        n = math.prod(bottoms[0].shape)
        return n * (2 if self.operation in ("ASUM", "SUMSQ") else 1) + (math.prod(tops[0].shape) if self.coeff != 1 else 0)
