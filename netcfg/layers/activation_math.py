"""Caffe's math layers (Power, Exp, Log: scale and shift inside) and the axis-wise
Softmax and ArgMax.

``axis`` counts the batch as 0, as in Caffe: axis 1 is the first per-sample axis,
and a negative axis counts from the end.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from netcfg.errors import ShapeError
from netcfg.layers.activation import Elementwise
from netcfg.layers.base import Blob, LayerSpec
from netcfg.layers._registry import register

__all__ = ["Power", "Exp", "Log", "Softmax", "ArgMax"]


def batch_axis(layer: LayerSpec, axis: int, rank: int, key: str = "axis") -> int:
    """``axis`` (batch = 0, negative from the end) as a positive axis of the batched
    tensor, for a ``rank``-d input per sample; ShapeError unless it names a per-sample axis."""
    if rank == 0:
        raise ShapeError(f"{layer.type} needs at least a 1-d input per sample to work along {key} {axis}, "
                         "got a scalar", key=key)
    ax = axis if axis >= 0 else rank + 1 + axis
    if not 1 <= ax <= rank:
        raise ShapeError(f"{key} {axis} is not a per-sample axis of a {rank}-d input per sample "
                         f"(axis 0 is the batch; valid: 1..{rank} or -1..-{rank})", key=key)
    return ax


# ------------------------------------------------------------------ modules


class Affine(nn.Module):
    """(shift + scale x) ** power, skipping the steps that are identities."""

    def __init__(self, power: float, scale: float, shift: float):
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1:
            x = x * self.scale
        if self.shift != 0:
            x = x + self.shift
        return x if self.power == 1 else torch.pow(x, self.power)

    def extra_repr(self) -> str:
        return f"power={self.power}, scale={self.scale}, shift={self.shift}"


class ScaledExp(nn.Module):
    """exp(inner x + offset). The offset stays in the exponent: Caffe's factoring
    base^shift * exp(inner x) overflows once base^shift passes float's 3.4e38, even
    where the output itself is small."""

    def __init__(self, inner: float, offset: float):
        super().__init__()
        self.inner, self.offset = inner, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inner != 1:
            x = x * self.inner
        return torch.exp(x if self.offset == 0 else x + self.offset)

    def extra_repr(self) -> str:
        return f"inner={self.inner}, offset={self.offset}"


class ScaledLog(nn.Module):
    """log(shift + scale x) * base_scale."""

    def __init__(self, scale: float, shift: float, base_scale: float):
        super().__init__()
        self.scale, self.shift, self.base_scale = scale, shift, base_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1:
            x = x * self.scale
        if self.shift != 0:
            x = x + self.shift
        y = torch.log(x)
        return y if self.base_scale == 1 else y * self.base_scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}, shift={self.shift}, base_scale={self.base_scale}"


def caffe_topk(x: torch.Tensor, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries along ``dim`` and their indices, in Caffe's order: its
    partial_sort of (value, index) pairs with std::greater puts the larger index first
    on a tie (torch.topk leaves the order of ties unspecified). One max per slot, with
    ops every export format holds (ONNX has no stable sort)."""
    if k == 1:  # the common case, one pass: argmax takes the first maximum (a NaN counts as one)
        last = x.shape[dim] - 1 - x.flip(dim).argmax(dim, keepdim=True)
        return x.gather(dim, last), last
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    position = torch.arange(x.shape[dim], device=x.device).view(shape)
    lowest = -math.inf if x.is_floating_point() else torch.iinfo(x.dtype).min
    taken = torch.zeros_like(x, dtype=torch.bool)
    values, indices = [], []
    for _ in range(k):
        free = x.masked_fill(taken, lowest)
        best = free.amax(dim, keepdim=True)
        tied = (free == best) | (free.isnan() & best.isnan())  # a NaN is the largest, as in torch.topk
        index = torch.where(tied & ~taken, position, -1).amax(dim, keepdim=True)  # the last tied
        taken = taken | (position == index)
        values.append(best)
        indices.append(index)
    return torch.cat(values, dim), torch.cat(indices, dim)


class TopK(nn.Module):
    """Indices (or values) of the top_k largest entries along ``dim``, or over each
    flattened sample when ``dim`` is None (Caffe's ArgMax layout)."""

    def __init__(self, k: int, dim: int | None, out_max_val: bool):
        super().__init__()
        self.k, self.dim, self.out_max_val = k, dim, out_max_val

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dim is not None:
            values, indices = caffe_topk(x, self.k, self.dim)
            return values if self.out_max_val else indices
        values, indices = caffe_topk(x.reshape(x.shape[0], -1), self.k, 1)  # (N, k)
        if self.out_max_val:
            return torch.stack((indices.to(values.dtype), values), dim=1)  # (N, 2, k)
        return indices.unsqueeze(1)  # (N, 1, k)

    def extra_repr(self) -> str:
        return f"k={self.k}, dim={self.dim}, out_max_val={self.out_max_val}"


# ------------------------------------------------------------------- layers


def _check_base(base: float, layer: str, allow_one: bool) -> None:
    if base == -1 or (base > 0 and (allow_one or base != 1)):
        return
    need = "> 0" if allow_one else "> 0 and != 1"
    raise ValueError(f"{layer} base must be -1 (meaning e) or {need}, got {base}")


@register
class Power(Elementwise):
    """(shift + scale x) ** power."""

    type: Literal["Power"]
    power: float = Field(1.0, description="exponent; 1 makes the layer affine")
    scale: float = Field(1.0, description="multiplies x before the shift")
    shift: float = Field(0.0, description="added after the scale")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 4]}, "power": 2, "scale": 0.5, "shift": 1},
        {"inputs": {"x": [5]}, "scale": -2},
    ]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Affine(self.power, self.scale, self.shift)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        ops = (self.scale != 1) + (self.shift != 0) + (self.power != 1)
        return ops * math.prod(tops[0].shape)


@register
class Exp(Elementwise):
    """base ** (shift + scale x); base -1 means e."""

    type: Literal["Exp"]
    base: float = Field(-1.0, description="base of the power; -1 for e, otherwise > 0")
    scale: float = Field(1.0, description="multiplies x in the exponent")
    shift: float = Field(0.0, description="added to the exponent")

    cost: ClassVar[int] = 3

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [4]}},
        {"inputs": {"x": [2, 3]}, "base": 2, "scale": 0.5, "shift": 1},
    ]

    @model_validator(mode="after")
    def _base(self):
        _check_base(self.base, "Exp", allow_one=True)
        return self

    def build(self, bottoms: list[Blob]) -> nn.Module:
        # base^(shift + scale x) = exp(ln(base) scale x + ln(base) shift)
        ln_base = 1.0 if self.base == -1 else math.log(self.base)
        return ScaledExp(ln_base * self.scale, ln_base * self.shift)


@register
class Log(Elementwise):
    """log_base(shift + scale x); base -1 means e."""

    type: Literal["Log"]
    base: float = Field(-1.0, description="base of the logarithm; -1 for e, otherwise > 0 and != 1")
    scale: float = Field(1.0, description="multiplies x inside the log")
    shift: float = Field(0.0, description="added inside the log")

    cost: ClassVar[int] = 4

    examples: ClassVar[list[dict]] = [  # shift keeps the argument positive for N(0, 1) inputs
        {"inputs": {"x": [4]}, "shift": 10},
        {"inputs": {"x": [2, 3]}, "base": 10, "scale": 0.5, "shift": 10},
    ]

    @model_validator(mode="after")
    def _base(self):
        _check_base(self.base, "Log", allow_one=False)
        return self

    def build(self, bottoms: list[Blob]) -> nn.Module:
        base_scale = 1.0 if self.base == -1 else 1.0 / math.log(self.base)
        return ScaledLog(self.scale, self.shift, base_scale)


@register
class Softmax(Elementwise):
    """exp(x) / sum(exp(x)) along ``axis`` (batch = 0, as Caffe; default 1, the channels)."""

    type: Literal["Softmax"]
    axis: int = Field(1, ge=-32, le=32, description="axis to normalise over, counting the batch as 0; -1 for the last")

    cost: ClassVar[int] = 4  # max, subtract-exp, sum, divide

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [5]}}, {"inputs": {"x": [3, 4, 2]}, "axis": -1}]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = super().infer(bottoms)
        batch_axis(self, self.axis, len(x.shape))
        return [x]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.Softmax(dim=batch_axis(self, self.axis, len(bottoms[0].shape)))


@register
class ArgMax(LayerSpec):
    """Indices of the top_k largest values along ``axis``, or over each flattened
    sample when no axis is given. Deviation from Caffe, whose output is always float:
    indices are int64 here. With ``out_max_val`` and an axis the output is the values
    (input dtype); with ``out_max_val`` and no axis it is Caffe's (2, top_k) block of
    [indices; values], both in the input dtype.

    Deviation from Caffe: without an axis the output per sample is (1, top_k) or
    (2, top_k) whatever the input's rank; Caffe's keeps the input's number of axes,
    padded with 1s ((1, top_k, 1) for a (C, H, W) input)."""

    type: Literal["ArgMax"]
    out_max_val: bool = Field(False, description="output the max values (with an axis) or indices and values (without)")
    top_k: int = Field(1, ge=1, description="how many of the largest entries to return, largest first")
    axis: int | None = Field(None, ge=-32, le=32, description="axis to search, counting the batch as 0; "
                                                             "none: each sample flattened")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [10]}, "top_k": 3},
        {"inputs": {"x": [4, 5]}, "axis": 2, "out_max_val": True},
        {"inputs": {"x": [3, 4]}, "top_k": 2, "out_max_val": True},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        if x.dtype == "bool":
            raise ShapeError(f"ArgMax expects a numeric input, got bool (shape {list(x.shape)})", key="bottom")
        if self.axis is None:
            n = math.prod(x.shape)
            self._check_k(n, f"the {n} element(s) of each sample")
            rows = 2 if self.out_max_val else 1
            return [Blob((rows, self.top_k), x.dtype if self.out_max_val else "int64")]
        ax = batch_axis(self, self.axis, len(x.shape)) - 1
        self._check_k(x.shape[ax], f"the {x.shape[ax]} entries along axis {self.axis} of input {list(x.shape)}")
        shape = (*x.shape[:ax], self.top_k, *x.shape[ax + 1:])
        return [Blob(shape, x.dtype if self.out_max_val else "int64")]

    def _check_k(self, n: int, what: str) -> None:
        if self.top_k > n:
            raise ShapeError(f"top_k {self.top_k} is more than {what}", key="top_k")

    def build(self, bottoms: list[Blob]) -> nn.Module:
        dim = None if self.axis is None else batch_axis(self, self.axis, len(bottoms[0].shape))
        return TopK(self.top_k, dim, self.out_max_val)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return math.prod(bottoms[0].shape)  # one comparison per element (top_k small)

