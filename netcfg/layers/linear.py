"""InnerProduct: Caffe's fully connected layer, flattening from ``axis``."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from netcfg.errors import ShapeError
from netcfg.layers.base import WEIGHT_NORM_DOC, Blob, FillerSpec, LayerSpec, check_float, check_weight_norm_params
from netcfg.layers._registry import register

__all__ = ["InnerProduct"]


class FlattenLinear(nn.Linear):
    """nn.Linear on the input flattened from ``start_dim`` (batch included in the count)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, start_dim: int):
        super().__init__(in_features, out_features, bias)
        self.start_dim = start_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.flatten(self.start_dim), self.weight, self.bias)


@register
class InnerProduct(LayerSpec):
    """Fully connected layer (y = x W^T + b). Input dims from ``axis`` on are flattened,
    as in Caffe: a (C, H, W) blob feeds a 1-d layer directly."""

    type: Literal["InnerProduct"]
    num_output: int = Field(..., ge=1, description="number of outputs")
    bias_term: bool = Field(True, description="learn a bias")
    axis: int = Field(1, description="first axis (counting the batch as 0) to flatten; -1 for the last")
    weight_filler: FillerSpec | None = Field(None, description="weight initialisation; default: PyTorch's")
    bias_filler: FillerSpec | None = Field(None, description="bias initialisation; default: PyTorch's")
    weight_norm: bool = Field(False, description=WEIGHT_NORM_DOC)

    @model_validator(mode="after")
    def _param_order(self):
        check_weight_norm_params(self)
        return self

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 4, 4]}, "num_output": 5, "param": [{"lr_mult": 1}, {"lr_mult": 2, "decay_mult": 0}]},
        {"inputs": {"x": [3, 2, 4]}, "num_output": 3, "axis": 2, "bias_term": False,
         "weight_filler": {"type": "gaussian", "std": 0.1}},
        {"inputs": {"x": [4, 7]}, "num_output": 2, "axis": -1, "weight_norm": True,
         "weight_filler": {"type": "xavier"}},
    ]

    def _axis(self, rank: int) -> int:
        """The axis within the per-sample shape (rank excludes the batch)."""
        ax = self.axis if self.axis >= 0 else rank + 1 + self.axis
        if not 1 <= ax <= rank:
            raise ShapeError(f"axis {self.axis} is out of range for a {rank}-d input per sample "
                             f"(valid: 1..{rank} or -1..-{rank})", key="axis")
        return ax - 1

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        if not x.shape:
            raise ShapeError("InnerProduct needs at least a 1-d input per sample, got a scalar")
        check_float(self, x)
        ax = self._axis(len(x.shape))
        return [Blob((*x.shape[:ax], self.num_output), x.dtype)]

    def blob_names(self) -> list[str]:
        w = ["parametrizations.weight.original0", "parametrizations.weight.original1"] if self.weight_norm else ["weight"]
        return w + (["bias"] if self.bias_term else [])

    def build(self, bottoms: list[Blob]) -> nn.Module:
        shape = bottoms[0].shape
        ax = self._axis(len(shape))
        fan_in = math.prod(shape[ax:])
        if ax == len(shape) - 1:  # nothing to flatten: a plain Linear
            linear = nn.Linear(fan_in, self.num_output, bias=self.bias_term)
        else:
            linear = FlattenLinear(fan_in, self.num_output, self.bias_term, ax + 1)
        if self.weight_norm:
            linear = nn.utils.parametrizations.weight_norm(linear, name="weight", dim=0)
        return linear

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        n_in = math.prod(bottoms[0].shape)
        n_out = math.prod(tops[0].shape)
        fan_in = n_in * self.num_output // max(n_out, 1)
        return 2 * n_out * fan_in + (n_out if self.bias_term else 0)  # as Convolution counts its bias
