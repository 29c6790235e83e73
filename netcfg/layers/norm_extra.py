"""Caffe's Scale and Bias (per-channel affine, learned or from a second bottom) and LRN."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from netcfg.errors import FieldError, ShapeError
from netcfg.layers.base import Blob, FillerSpec, LayerSpec, check_float, check_rank
from netcfg.layers._registry import register
from netcfg.layers.fillers import fill
from netcfg.layers.loss import at_least_float32

__all__ = ["Scale", "Bias", "LRN", "AxisAffine", "AcrossChannelLRN", "WithinChannelLRN"]


class AxisAffine(nn.Module):
    """y = x * scale + bias; scale and bias span some dims of each sample and broadcast over the rest."""

    def __init__(self, shape: tuple[int, ...], trailing: int, scale: bool, bias: bool, multiply_bottom: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape)) if scale else None
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None
        self.trailing = trailing  # per-sample dims after the span, broadcast over
        self.multiply_bottom = multiply_bottom  # a second bottom is a scale (Scale) or a bias (Bias)

    def _b(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*t.shape, *[1] * self.trailing)  # (..., *span, 1, ..., 1): right-aligned broadcast

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        if other is not None:  # (N, *span): its batch axis lines up with x's
            x = x * self._b(other) if self.multiply_bottom else x + self._b(other)
        if self.weight is not None:
            x = x * self._b(self.weight)
        if self.bias is not None:
            x = x + self._b(self.bias)
        return x

    def extra_repr(self) -> str:
        learned = self.weight if self.weight is not None else self.bias
        shape = list(learned.shape) if learned is not None else "none"
        return f"learned={shape}, trailing={self.trailing}, multiply_bottom={self.multiply_bottom}"


class _AxisSpan(LayerSpec):
    """Shared by Scale and Bias: which dims of the input the learned blob (or the second bottom) spans."""

    n_bottoms = (1, 2)
    axis: int | None = Field(
        None, ge=-5, le=5, description="first input axis the blob spans, counting the batch as 0 "
                                       "(-1: the last); default 1 (channels), or 0 with a second bottom, "
                                       "whose batch axis lines up with the input's")
    num_axes: int = Field(1, ge=-1, le=5, description="how many axes the learned blob spans: 1 per channel, "
                                                      "0 a single scalar, -1 all from axis on; ignored with a second bottom")

    def _two(self) -> bool:
        return self.bottom is not None and len(self.bottom) == 2

    def _span(self, bottoms: list[Blob]) -> tuple[tuple[int, ...], int]:
        """(per-sample shape of the learned blob or second bottom, per-sample dims after it)."""
        x = bottoms[0]
        check_float(self, x)
        rank = len(x.shape)
        full = rank + 1  # with the batch axis
        ax = self.axis if self.axis is not None else (0 if len(bottoms) == 2 else 1)
        if not -full <= ax < full:
            raise ShapeError(f"axis {self.axis} is out of range for an input of shape {list(x.shape)} per sample "
                             f"(valid: 0..{full - 1} or -1..-{full}, the batch being axis 0)", key="axis")
        ax %= full
        if len(bottoms) == 2:
            b = bottoms[1]
            check_float(self, b, "second bottom")
            if ax != 0:
                raise ShapeError(f"with a second bottom, its batch axis lines up with the input's, so axis must be 0 "
                                 f"(Caffe's convention), got {self.axis}; the second bottom {list(b.shape)} then "
                                 f"covers the input {list(x.shape)} from the channel on", key="axis")
            if tuple(x.shape[:len(b.shape)]) != tuple(b.shape):
                raise ShapeError(f"second bottom of shape {list(b.shape)} does not match the leading dims of "
                                 f"the input {list(x.shape)}", key="bottom")
            return tuple(b.shape), rank - len(b.shape)
        if ax == 0:
            raise ShapeError(f"axis {self.axis} is the batch axis; a learned {self.type} blob starts at axis 1 "
                             "(channels) or later", key="axis")
        start = ax - 1
        n = rank - start if self.num_axes == -1 else self.num_axes
        if start + n > rank:
            raise ShapeError(f"axis {ax} with num_axes {self.num_axes} reaches past the input {list(x.shape)} "
                             f"(per sample; batch = axis 0)", key="num_axes")
        return tuple(x.shape[start:start + n]), rank - start - n

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        self._span(bottoms)
        return [bottoms[0]]

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        ops = len(self.blob_names()) + (1 if len(bottoms) == 2 else 0)  # one multiply or add per element each
        return ops * math.prod(bottoms[0].shape)


@register
class Scale(_AxisSpan):
    """Caffe's Scale: y = x * scale (+ bias), the scale learned per channel (or over ``axis`` ..
    ``axis + num_axes``), or given as the second bottom and broadcast over the trailing dims.

    Differences from Caffe: every netcfg blob has a batch axis, so a second bottom lines
    up with the input from axis 0 (default 0 there; Caffe's default is always 1, which
    suits batchless parameter blobs that netcfg does not have). With a second bottom,
    Caffe's learned bias has that bottom's full shape, batch included; netcfg's has its
    per-sample shape, shared over the batch.
    """

    type: Literal["Scale"]
    bias_term: bool = Field(False, description="also learn a bias (Caffe's Scale with bias_term: true)")
    filler: FillerSpec | None = Field(None, description="scale initialisation; default constant 1 (identity)")
    bias_filler: FillerSpec | None = Field(None, description="bias initialisation; default constant 0")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 4, 4]}, "bias_term": True, "filler": {"type": "constant", "value": 2},
         "bias_filler": {"type": "constant", "value": 0.5}},
        {"inputs": {"x": [3, 4, 4], "s": [3]}},  # the scale from a second bottom
        {"inputs": {"x": [2, 3, 4]}, "axis": 2, "num_axes": -1},
    ]

    @model_validator(mode="after")
    def _bias_filler_needs_bias(self):
        if self.bias_filler is not None and not self.bias_term:
            raise FieldError("bias_filler needs bias_term: true", key="bias_term")
        return self

    def blob_names(self) -> list[str]:
        return ([] if self._two() else ["weight"]) + (["bias"] if self.bias_term else [])

    def build(self, bottoms: list[Blob]) -> nn.Module:
        shape, trailing = self._span(bottoms)
        return AxisAffine(shape, trailing, scale=len(bottoms) == 1, bias=self.bias_term)

    def fill(self, module: nn.Module) -> None:
        if self.filler is not None and module.weight is not None:
            fill(module.weight, self.filler)
        if self.bias_filler is not None and module.bias is not None:
            fill(module.bias, self.bias_filler)


@register
class Bias(_AxisSpan):
    """Caffe's Bias: y = x + bias, the bias learned per channel (or over ``axis`` ..
    ``axis + num_axes``), or given as the second bottom and broadcast over the trailing dims.
    A second bottom lines up with the input from axis 0, as in Scale (Caffe's default: 1)."""

    type: Literal["Bias"]
    filler: FillerSpec | None = Field(None, description="bias initialisation; default constant 0")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 5]}, "filler": {"type": "constant", "value": 1}},
        {"inputs": {"x": [3, 5], "b": [3, 5]}},
    ]

    def blob_names(self) -> list[str]:
        return [] if self._two() else ["bias"]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        shape, trailing = self._span(bottoms)
        return AxisAffine(shape, trailing, scale=False, bias=len(bottoms) == 1, multiply_bottom=False)

    def fill(self, module: nn.Module) -> None:
        if self.filler is not None and module.bias is not None:
            fill(module.bias, self.filler)


class AcrossChannelLRN(nn.LocalResponseNorm):
    """PyTorch's LRN (Caffe's ACROSS_CHANNELS formula), computed in at least float32: Caffe
    squares in float, and float16 activations past 256 square past its 65504 (an inf
    denominator, an output of 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(at_least_float32(x)).to(x.dtype)


class WithinChannelLRN(nn.Module):
    """Caffe's WITHIN_CHANNEL LRN: y = x / (k + alpha * mean of x^2 over a local_size window in each channel)^beta."""

    def __init__(self, size: int, alpha: float, beta: float, k: float, spatial_dims: int):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Caffe: AVE pooling of the squares, pad (size - 1) / 2, stride 1, padding counted in the mean
        pad = (self.size - 1) // 2
        x, dtype = at_least_float32(x), x.dtype  # as AcrossChannelLRN
        if self.spatial_dims == 2:
            mean_sq = F.avg_pool2d(x * x, self.size, 1, pad, count_include_pad=True)
        else:
            mean_sq = F.avg_pool1d(x * x, self.size, 1, pad, count_include_pad=True)
        return (x * (self.k + self.alpha * mean_sq).pow(-self.beta)).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


@register
class LRN(LayerSpec):
    """Local response normalisation (Krizhevsky et al. 2012), Caffe's formula:
    ACROSS_CHANNELS  y = x / (k + alpha / n * sum of x^2 over n neighbouring channels)^beta;
    WITHIN_CHANNEL   y = x / (k + alpha / n^2 * sum of x^2 over an n x n window)^beta
                     (n positions and alpha / n on a (C, L) input).
    On (C, H, W) or (C, L) inputs (Caffe: (C, H, W) only).

    Difference from Caffe: Caffe's WITHIN_CHANNEL ignores k and always adds 1; netcfg adds k
    (default 1, so the same unless k is set).
    """

    type: Literal["LRN"]
    local_size: int = Field(5, ge=1, le=99, description="window size n (odd): channels summed across, "
                                                         "or the side of the square window within a channel")
    alpha: float = Field(1.0, ge=0, description="scaling of the mean of squares (AlexNet: 0.0001)")
    beta: float = Field(0.75, ge=0, description="exponent of the denominator")
    k: float = Field(1.0, gt=0, description="constant added before the exponent (AlexNet: 2)")
    norm_region: Literal["ACROSS_CHANNELS", "WITHIN_CHANNEL"] = Field(
        "ACROSS_CHANNELS", description="normalise across neighbouring channels, or within a spatial window of each")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [6, 3, 3]}, "local_size": 3, "alpha": 0.1},
        {"inputs": {"x": [2, 5, 5]}, "norm_region": "WITHIN_CHANNEL", "local_size": 3, "k": 2},
        {"inputs": {"x": [4, 7]}, "norm_region": "WITHIN_CHANNEL", "beta": 0.5},
    ]

    @model_validator(mode="after")
    def _odd(self):
        if self.local_size % 2 == 0:
            raise FieldError(f"local_size must be odd (Caffe's LRN only supports odd windows), got {self.local_size}", key="local_size")
        return self

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        check_rank(self, x, (2, 3))
        check_float(self, x)
        return [x]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        if self.norm_region == "ACROSS_CHANNELS":  # PyTorch's is Caffe's formula: k + alpha / n * sum
            return AcrossChannelLRN(self.local_size, self.alpha, self.beta, self.k)
        return WithinChannelLRN(self.local_size, self.alpha, self.beta, self.k, len(bottoms[0].shape) - 1)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        window = self.local_size ** (1 if self.norm_region == "ACROSS_CHANNELS" or len(bottoms[0].shape) == 2 else 2)
        return (window + 4) * math.prod(bottoms[0].shape)  # square, window sum, scale-shift, power, divide
