"""Convolution and Deconvolution (transposed convolution), 1-d or 2-d, Caffe's parameters."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from netcfg.errors import FieldError, ShapeError
from netcfg.layers.base import (WEIGHT_NORM_DOC, Blob, FillerSpec, IntPair, LayerSpec, check_float, check_one_axis,
                                check_rank, check_weight_norm_params, pair)
from netcfg.layers._registry import register

__all__ = ["Convolution", "Deconvolution", "GroupedTransposedWeightNorm"]


class GroupedTransposedWeightNorm(nn.Module):
    """weight_norm (g * v / |v| per output channel) of a grouped transposed conv. Its
    (in, out / group, k...) weight holds output channel j of group i in rows i * in / group..
    and column j, so torch's dim=1 would normalise column j of every group together."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def _norm(self, v: torch.Tensor) -> torch.Tensor:
        blocks = v.unflatten(0, (self.group, -1))  # (group, in / group, out / group, k...)
        return torch.linalg.vector_norm(blocks, dim=[1, *range(3, blocks.dim())], keepdim=True)  # (group, 1, out / group, 1...)

    def forward(self, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (v.unflatten(0, (self.group, -1)) * (g / self._norm(v))).flatten(0, 1)

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._norm(weight), weight


class _ConvBase(LayerSpec):
    num_output: int = Field(..., ge=1, description="number of output channels (filters)")
    bias_term: bool = Field(True, description="learn a per-channel bias")
    kernel_size: IntPair | None = Field(None, description="kernel size: one value (square) or [h, w]")
    stride: IntPair = Field(default_factory=lambda: [1], description="stride: one value or [h, w]")
    pad: IntPair = Field(default_factory=lambda: [0], description="zero padding: one value or [h, w]")
    dilation: IntPair = Field(default_factory=lambda: [1], description="kernel dilation: one value or [h, w]")
    kernel_h: int | None = Field(None, ge=1, description="kernel height (overrides kernel_size)")
    kernel_w: int | None = Field(None, ge=1, description="kernel width (overrides kernel_size)")
    stride_h: int | None = Field(None, ge=1, description="vertical stride (overrides stride)")
    stride_w: int | None = Field(None, ge=1, description="horizontal stride (overrides stride)")
    pad_h: int | None = Field(None, ge=0, description="vertical padding (overrides pad)")
    pad_w: int | None = Field(None, ge=0, description="horizontal padding (overrides pad)")
    group: int = Field(1, ge=1, description="split channels into this many groups (depthwise: group = channels)")
    weight_filler: FillerSpec | None = Field(None, description="weight initialisation; default: PyTorch's")
    bias_filler: FillerSpec | None = Field(None, description="bias initialisation; default: PyTorch's")
    weight_norm: bool = Field(False, description=WEIGHT_NORM_DOC)

    @model_validator(mode="after")
    def _fields_agree(self):
        check_weight_norm_params(self)
        if self.kernel_size is None and (self.kernel_h is None or self.kernel_w is None):
            raise FieldError("give kernel_size, or both kernel_h and kernel_w", key="kernel_size")
        for key in ("kernel_size", "stride", "dilation"):
            v = getattr(self, key)
            if v is not None and 0 in v:
                raise FieldError(f"{key} must be >= 1, got {v}", key=key)
        return self

    # geometry: (kh, kw), (sh, sw), (ph, pw), (dh, dw)
    def geometry(self) -> tuple[tuple[int, int], ...]:
        return (
            pair(self.kernel_size, self.kernel_h, self.kernel_w),
            pair(self.stride, self.stride_h, self.stride_w, 1),
            pair(self.pad, self.pad_h, self.pad_w, 0),
            pair(self.dilation, default=1),
        )

    def blob_names(self) -> list[str]:
        w = ["parametrizations.weight.original0", "parametrizations.weight.original1"] if self.weight_norm else ["weight"]
        return w + (["bias"] if self.bias_term else [])

    def _check_channels(self, c: int) -> None:
        if c % self.group:
            raise ShapeError(f"{c} input channels are not divisible by group {self.group}", key="group")
        if self.num_output % self.group:
            raise ShapeError(f"num_output {self.num_output} is not divisible by group {self.group}", key="group")

    def _spatial(self, bottoms: list[Blob]) -> tuple[int, list[int]]:
        (x,) = bottoms
        check_float(self, x)
        check_rank(self, x, (2, 3))
        if len(x.shape) == 2:
            check_one_axis(self)
        self._check_channels(x.shape[0])
        return x.shape[0], list(x.shape[1:])

    def _dims(self, bottoms: list[Blob]) -> list[tuple[int, int, int, int, int]]:
        """(size, kernel, stride, pad, dilation) per spatial dim of the checked input."""
        _, spatial = self._spatial(bottoms)
        geometry = zip(*self.geometry())  # (k, s, p, d) for h, then for w
        return [(size, *g) for size, g in zip(spatial, geometry)]

    def _finish(self, module: nn.Module) -> nn.Module:
        if not self.weight_norm:
            return module
        transposed = isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d))
        if transposed and self.group > 1:
            nn.utils.parametrize.register_parametrization(module, "weight", GroupedTransposedWeightNorm(self.group),
                                                          unsafe=True)
            return module
        # per output unit: dim 1 of a transposed conv's (in, out, ...) weight
        return nn.utils.parametrizations.weight_norm(module, name="weight", dim=1 if transposed else 0)


@register
class Convolution(_ConvBase):
    """2-d (C, H, W) or 1-d (C, L) convolution with Caffe's output size:
    out = (in + 2 pad - dilation (k - 1) - 1) // stride + 1."""

    type: Literal["Convolution"]

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [4, 7, 7]}, "num_output": 6, "kernel_size": 3, "stride": 2, "pad": 1, "group": 2},
        {"inputs": {"x": [3, 9]}, "num_output": 4, "kernel_size": 3, "dilation": 2, "bias_term": False,
         "weight_filler": {"type": "msra"}},
        {"inputs": {"x": [2, 6, 5]}, "num_output": 3, "kernel_h": 3, "kernel_w": 1, "stride_w": 2, "pad_w": 1,
         "weight_norm": True, "weight_filler": {"type": "xavier"}, "bias_filler": {"type": "constant", "value": 0.1}},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        out = []
        for size, k, s, p, d in self._dims(bottoms):
            extent = d * (k - 1) + 1
            if size + 2 * p < extent:
                raise ShapeError(f"kernel extent {extent} is larger than the padded input {size + 2 * p} "
                                 f"(input {list(bottoms[0].shape)}, pad {p})", key="kernel_size")
            out.append((size + 2 * p - extent) // s + 1)
        return [Blob((self.num_output, *out), bottoms[0].dtype)]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        c = bottoms[0].shape[0]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.geometry()
        if len(bottoms[0].shape) == 3:
            conv = nn.Conv2d(c, self.num_output, (kh, kw), (sh, sw), (ph, pw), (dh, dw), self.group, self.bias_term)
        else:
            conv = nn.Conv1d(c, self.num_output, kh, sh, ph, dh, self.group, self.bias_term)
        return self._finish(conv)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        (kh, kw), *_ = self.geometry()
        k = kh * kw if len(bottoms[0].shape) == 3 else kh
        out = tops[0].shape
        n_out = 1
        for d in out:
            n_out *= d
        return 2 * n_out * (bottoms[0].shape[0] // self.group) * k + (n_out if self.bias_term else 0)


@register
class Deconvolution(_ConvBase):
    """Transposed convolution (Caffe's Deconvolution):
    out = stride (in - 1) + dilation (k - 1) + 1 - 2 pad."""

    type: Literal["Deconvolution"]

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 3, 3]}, "num_output": 3, "kernel_size": 4, "stride": 2, "pad": 1, "group": 3,
         "bias_term": False, "weight_filler": {"type": "bilinear"}},
        {"inputs": {"x": [4, 5]}, "num_output": 6, "kernel_size": 3, "stride": 2, "group": 2, "weight_norm": True},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        out = []
        for size, k, s, p, d in self._dims(bottoms):
            o = s * (size - 1) + d * (k - 1) + 1 - 2 * p
            if o < 1:
                raise ShapeError(f"output size {o} < 1 for input {list(bottoms[0].shape)}", key="pad")
            out.append(o)
        return [Blob((self.num_output, *out), bottoms[0].dtype)]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        c = bottoms[0].shape[0]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.geometry()
        if len(bottoms[0].shape) == 3:
            conv = nn.ConvTranspose2d(c, self.num_output, (kh, kw), (sh, sw), (ph, pw), 0, self.group, self.bias_term, (dh, dw))
        else:
            conv = nn.ConvTranspose1d(c, self.num_output, kh, sh, ph, 0, self.group, self.bias_term, dh)
        return self._finish(conv)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        (kh, kw), *_ = self.geometry()
        k = kh * kw if len(bottoms[0].shape) == 3 else kh
        n_in = 1
        for d in bottoms[0].shape:
            n_in *= d
        bias = math.prod(tops[0].shape) if self.bias_term else 0
        return 2 * n_in * (self.num_output // self.group) * k + bias
