"""MVN: mean-variance normalisation of each sample's channels, or of the whole sample (Caffe's)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from netcfg.errors import ShapeError
from netcfg.layers.base import Blob, LayerSpec, check_float, check_rank
from netcfg.layers._registry import register

__all__ = ["MVN"]


class MeanVarianceNorm(nn.Module):
    """(x - mean) / (std + eps) over ``dims``, with Caffe's backward."""

    def __init__(self, dims: tuple[int, ...], normalize_variance: bool, eps: float):
        super().__init__()
        self.dims, self.normalize_variance, self.eps = dims, normalize_variance, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.to(torch.promote_types(x.dtype, torch.float32))  # Caffe's sums are float; float16's overflow
        d = wide - wide.mean(self.dims, keepdim=True)
        if not self.normalize_variance:
            return d.to(x.dtype)
        var = (d * d).mean(self.dims, keepdim=True)
        s = var.detach().sqrt() + self.eps  # Caffe divides by std + eps
        # Caffe's backward takes d(std)/d(var) as 1 / (2 (std + eps)), not 1 / (2 std): the same
        # value here (the added term is zero), and a finite gradient for a constant channel
        s = s + (var - var.detach()) / (2 * s)
        return (d / s).to(x.dtype)


@register
class MVN(LayerSpec):
    """Mean-variance normalisation (Caffe's MVN): each channel of each sample, or the whole
    sample with ``across_channels``, minus its mean and, with ``normalize_variance``, divided
    by its standard deviation plus ``eps`` (Caffe adds eps to the std, not to the variance).
    No learned parameters; a (C, H, W), (C, L) or, across channels, (C,) input.

    The gradient is Caffe's: (dy - mean(dy) - y mean(y dy)) / (std + eps), which differs from
    the exact derivative only by a factor std / (std + eps) in its last term and stays finite
    when a channel is constant."""

    type: Literal["MVN"]
    normalize_variance: bool = Field(True, description="divide by the standard deviation (plus eps) too; false: "
                                                       "only subtract the mean")
    across_channels: bool = Field(False, description="normalise each sample as a whole, not each channel "
                                                     "over its positions")
    eps: float = Field(1e-9, gt=0, description="added to the standard deviation before dividing")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 4, 5]}},
        {"inputs": {"x": [2, 6]}, "across_channels": True},
        {"inputs": {"x": [3, 4, 4]}, "normalize_variance": False},
    ]

    def _dims(self, x: Blob) -> tuple[int, ...]:
        check_float(self, x)
        check_rank(self, x, (1, 2, 3))
        if not self.across_channels and len(x.shape) == 1:
            raise ShapeError(f"each channel of a (C,) input {list(x.shape)} is one value, which MVN would set to 0; "
                             "normalise the sample as a whole with across_channels: true", key="across_channels")
        first = 1 if self.across_channels else 2  # batch counted
        return tuple(range(first, len(x.shape) + 1))

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        self._dims(bottoms[0])
        return list(bottoms)

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return MeanVarianceNorm(self._dims(bottoms[0]), self.normalize_variance, self.eps)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return math.prod(bottoms[0].shape) * (5 if self.normalize_variance else 2)
