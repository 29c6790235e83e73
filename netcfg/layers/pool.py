"""Pooling: Caffe's MAX and AVE pooling, 1-d or 2-d, with Caffe's output sizes; SPP, a pyramid of them."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from netcfg.errors import FieldError, ShapeError
from netcfg.layers.base import Blob, IntPair, LayerSpec, check_float, check_one_axis, check_rank, pair
from netcfg.layers._registry import register

__all__ = ["Pooling", "SPP", "floor_pooling", "pool_size"]


def pool_size(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """Caffe's pooled size: ceil (or floor) of (size + 2 pad - k) / s, plus 1; then the
    last window is dropped when it would start at or beyond size + pad.

    Caffe clips only when pad > 0; here the clip applies always (PyTorch's rule), so a
    window lying wholly outside the input (pad 0 and stride > kernel) is never made."""
    span = size + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if out > 1 and (out - 1) * s >= size + p:
        out -= 1
    return out


class Pool(nn.Module):
    """Max or average pooling over the last 1 or 2 axes, with Caffe's sizes and divisors."""

    def __init__(self, op: str, kernel: tuple[int, ...], stride: tuple[int, ...], pad: tuple[int, ...],
                 out: tuple[int, ...], sizes: tuple[int, ...]):
        super().__init__()
        self.op, self.kernel, self.stride, self.out = op, kernel, stride, out
        # Caffe rounds up: a last window past the end (``ceil_mode``), only where rounding down
        # would give fewer windows (so a layer without one exports as plain floor pooling)
        self.ceil = any(pool_size(n, k, s, p, False) != o for n, k, s, p, o in zip(sizes, kernel, stride, pad, out))
        # PyTorch pads at most half the kernel; Caffe allows pad < kernel. Beyond half, pad
        # explicitly (-inf for MAX, 0 for AVE: the divisor counts padding, as in Caffe) and pool
        # unpadded; the result may have one window more than Caffe's, which is cut off
        wide = any(2 * p > k for p, k in zip(pad, kernel))
        self.native = ((0,) * len(pad) if wide else pad, _sides(pad, (0,) * len(pad)) if wide else (), wide)
        # ``floor_only`` (set by ``floor_pooling`` for ONNX below opset 10, which has no ceil_mode and
        # whose exporter pads the end past the kernel, refused by onnxruntime): the last window's end
        # padded explicitly instead, and AVE's mean there scaled to Caffe's clipped divisor
        self.floor_only = False
        ends = tuple(max(0, (o - 1) * s + k - (n + 2 * p)) for n, k, s, p, o in zip(sizes, kernel, stride, pad, out))
        padded = wide or any(ends)
        self.floor = ((0,) * len(pad) if padded else pad, _sides(pad, ends) if padded else (), padded)
        self.register_buffer("scale", _divisor_scale(sizes, kernel, stride, pad, out)
                             if op == "AVE" and any(ends) else None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad, fpad, crop = self.floor if self.floor_only else self.native
        if fpad:
            x = F.pad(x, fpad, value=-math.inf if self.op == "MAX" else 0.0)
        ceil = self.ceil and not self.floor_only
        two_d = len(self.kernel) == 2
        if self.op == "MAX":
            fn = F.max_pool2d if two_d else F.max_pool1d
            y = fn(x, self.kernel, self.stride, pad, ceil_mode=ceil)
        else:
            fn = F.avg_pool2d if two_d else F.avg_pool1d
            y = fn(x, self.kernel, self.stride, pad, ceil_mode=ceil, count_include_pad=True)
        if crop:  # drop the window Caffe's clip (at input + pad) removes
            y = y[..., : self.out[0], : self.out[1]] if two_d else y[..., : self.out[0]]
        if self.floor_only and self.scale is not None:
            y = y * self.scale.to(y.dtype)
        return y


def _divisor_scale(sizes, kernel, stride, pad, out) -> torch.Tensor:
    """kernel / Caffe's window clipped at input + pad, per output cell (1 but at the last):
    in Python, then one tensor, as a graph check builds every layer (a tensor product here
    imported torch._dynamo, a second of start-up)."""
    per_axis = [[k / (min(i * s + k, n + 2 * p) - i * s) for i in range(o)]
                for n, k, s, p, o in zip(sizes, kernel, stride, pad, out)]
    if len(per_axis) == 1:
        return torch.tensor(per_axis[0])
    return torch.tensor([[a * b for b in per_axis[1]] for a in per_axis[0]])  # (out_h, out_w)


def _sides(pad: tuple[int, ...], ends: tuple[int, ...]) -> tuple[int, ...]:
    """F.pad's (left, right, top, bottom) for ``pad`` on both sides and ``ends`` more at the end."""
    return tuple(q for p, e in reversed(list(zip(pad, ends))) for q in (p, p + e))


@contextmanager
def floor_pooling(module: nn.Module, on: bool = True):
    """Every Pool in ``module`` pools rounding down (Caffe's last windows made by padding) while
    inside: ONNX below opset 10 has no ceil_mode. The same numbers; eager training keeps
    ceil_mode, which pads nothing (1.5 to 2.5 times faster where a last window is partial)."""
    pools = [m for m in module.modules() if isinstance(m, Pool)] if on else []
    for m in pools:
        m.floor_only = True
    try:
        yield
    finally:
        for m in pools:
            m.floor_only = False


@register
class Pooling(LayerSpec):
    """Max or average pooling over (C, H, W) or (C, L) inputs, with Caffe's output size.

    Deviation from Caffe: a last window that would lie wholly outside the input (only
    possible with pad 0 and stride > kernel) is dropped, as PyTorch does; Caffe keeps it
    and fills it with -FLT_MAX (MAX) or a division by zero (AVE). STOCHASTIC is not
    supported.
    """

    type: Literal["Pooling"]
    pool: Literal["MAX", "AVE"] = Field("MAX", description="MAX: the window's maximum; AVE: its mean, padding counted as zeros")
    kernel_size: IntPair | None = Field(None, description="window size: one value (square) or [h, w]")
    kernel_h: int | None = Field(None, ge=1, description="window height (overrides kernel_size)")
    kernel_w: int | None = Field(None, ge=1, description="window width (overrides kernel_size)")
    stride: IntPair = Field(default_factory=lambda: [1], description="stride: one value or [h, w]")
    stride_h: int | None = Field(None, ge=1, description="vertical stride (overrides stride)")
    stride_w: int | None = Field(None, ge=1, description="horizontal stride (overrides stride)")
    pad: IntPair = Field(default_factory=lambda: [0], description="padding: one value or [h, w]; must be < the kernel")
    pad_h: int | None = Field(None, ge=0, description="vertical padding (overrides pad)")
    pad_w: int | None = Field(None, ge=0, description="horizontal padding (overrides pad)")
    global_pooling: bool = Field(False, description="pool over the whole spatial extent (no kernel_size, stride 1, pad 0)")
    round_mode: Literal["CEIL", "FLOOR"] = Field(
        "CEIL", description="round the output size up (Caffe's default: a partial last window is kept) or down")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 6, 6]}, "pool": "MAX", "kernel_size": 3, "stride": 2},  # ceil keeps a partial window
        {"inputs": {"x": [2, 7]}, "pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 2, "round_mode": "FLOOR"},
        {"inputs": {"x": [4, 5, 3]}, "pool": "AVE", "global_pooling": True},
        {"inputs": {"x": [2, 6, 5]}, "pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1},  # last window clipped
    ]

    @model_validator(mode="after")
    def _check_geometry(self):
        kernel_set = self.kernel_size is not None or self.kernel_h is not None or self.kernel_w is not None
        if self.global_pooling:
            if kernel_set:
                raise FieldError("global_pooling takes the kernel from the input: remove kernel_size/kernel_h/kernel_w", key="global_pooling")
            if pair(self.stride, self.stride_h, self.stride_w, 1) != (1, 1) or pair(self.pad, self.pad_h, self.pad_w) != (0, 0):
                raise FieldError("global_pooling needs stride 1 and pad 0", key="global_pooling")
            return self
        if self.kernel_size is None and (self.kernel_h is None or self.kernel_w is None):
            raise FieldError("give kernel_size, or both kernel_h and kernel_w (or set global_pooling: true)", key="kernel_size")
        for key in ("kernel_size", "stride"):
            v = getattr(self, key)
            if v is not None and 0 in v:
                raise FieldError(f"{key} must be >= 1, got {v}", key=key)
        (kh, kw), _, (ph, pw) = self.geometry()
        if ph >= kh or pw >= kw:
            raise FieldError(f"pad {[ph, pw]} must be smaller than the kernel {[kh, kw]} (Caffe's rule)", key="pad")
        return self

    def geometry(self, spatial: tuple[int, ...] = ()) -> tuple[tuple[int, int], ...]:
        """(kh, kw), (sh, sw), (ph, pw); global pooling takes the kernel from ``spatial``."""
        if self.global_pooling:
            k = (*spatial, 1, 1)[:2]
            return (k[0], k[1]), (1, 1), (0, 0)
        return (pair(self.kernel_size, self.kernel_h, self.kernel_w),
                pair(self.stride, self.stride_h, self.stride_w, 1),
                pair(self.pad, self.pad_h, self.pad_w, 0))

    def _plan(self, x: Blob) -> tuple[tuple[int, ...], ...]:
        """Per pooled axis: kernel, stride, pad, output size (kernel clipped to the padded input)."""
        check_rank(self, x, (2, 3))
        if x.dtype not in ("float32", "float64", "float16", "bfloat16"):
            raise ShapeError(f"Pooling needs a floating-point input, got {x.dtype}", key="bottom")
        spatial = x.shape[1:]
        if len(spatial) == 1:
            check_one_axis(self, ("kernel_size", "stride", "pad"))
        geo = list(zip(*self.geometry(spatial)))[: len(spatial)]
        ks, ss, ps, outs = [], [], [], []
        for size, (k, s, p) in zip(spatial, geo):
            out = pool_size(size, k, s, p, self.round_mode == "CEIL")
            if out < 1:
                raise ShapeError(f"kernel {k} is larger than the padded input {size + 2 * p} "
                                 f"(input {list(x.shape)}, pad {p}, stride {s})", key="kernel_size")
            # A kernel past the padded input (one window, Caffe clips it) equals one that fits.
            ks.append(min(k, size + 2 * p))
            ss.append(s)
            ps.append(p)
            outs.append(out)
        return tuple(ks), tuple(ss), tuple(ps), tuple(outs)

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        *_, out = self._plan(x)
        return [Blob((x.shape[0], *out), x.dtype)]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        kernel, stride, pad, out = self._plan(bottoms[0])
        return Pool(self.pool, kernel, stride, pad, out, bottoms[0].shape[1:])

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        kernel, *_ = self._plan(bottoms[0])
        return math.prod(tops[0].shape) * math.prod(kernel)


class Pyramid(nn.Module):
    """Each level's pooling, flattened per sample and concatenated (one level: its pooling as is)."""

    def __init__(self, levels: list[Pool]):
        super().__init__()
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.levels) == 1:
            return self.levels[0](x)
        return torch.cat([pool(x).flatten(1) for pool in self.levels], 1)


@register
class SPP(LayerSpec):
    """Spatial pyramid pooling (He et al. 2014, https://arxiv.org/abs/1406.4729), Caffe's SPP:
    level l pools a (C, H, W) input into 2^l x 2^l bins with Caffe's kernel ceil(H / bins),
    stride = kernel and pad (kernel * bins - H + 1) // 2 (and so for W); the levels are
    flattened and concatenated, C * (1 + 4 + 16 + ...) values per sample. With
    ``pyramid_height: 1`` the output is the (C, 1, 1) global pooling, as in Caffe.

    As in Caffe, an input too small for the deepest level (a pad not below its kernel) is an
    error. STOCHASTIC is not supported."""

    type: Literal["SPP"]
    pyramid_height: int = Field(..., ge=1, le=16, description="number of levels; level l has 2^l x 2^l bins")
    pool: Literal["MAX", "AVE"] = Field("MAX", description="MAX: each bin's maximum; AVE: its mean, padding "
                                                           "counted as zeros (Caffe's divisor)")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [2, 7, 6]}, "pyramid_height": 3},
        {"inputs": {"x": [3, 5, 5]}, "pyramid_height": 2, "pool": "AVE"},
        {"inputs": {"x": [2, 4, 3]}, "pyramid_height": 1},
    ]

    def _plan(self, x: Blob) -> list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
        """Per level: kernel, pad, output size, each (h, w), from spp_layer.cpp's GetPoolingParam."""
        check_rank(self, x, (3,))
        check_float(self, x)
        plan = []
        for level in range(self.pyramid_height):
            bins = 2 ** level
            ks, ps, outs = [], [], []
            for size in x.shape[1:]:
                k = -(-size // bins)
                p = (k * bins - size + 1) // 2
                if p >= k:
                    raise ShapeError(f"input {list(x.shape)} is too small for level {level} ({bins} x {bins} bins): "
                                     f"Caffe's pad {p} would not be below its kernel {k}; lower pyramid_height "
                                     f"(at most {level}) or pool a larger input", key="pyramid_height")
                ks.append(k)
                ps.append(p)
                outs.append(pool_size(size, k, k, p, True))
            plan.append((tuple(ks), tuple(ps), tuple(outs)))
        return plan

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        plan = self._plan(x)
        if len(plan) == 1:
            return [Blob((x.shape[0], *plan[0][2]), x.dtype)]
        return [Blob((sum(x.shape[0] * math.prod(out) for *_, out in plan),), x.dtype)]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        sizes = bottoms[0].shape[1:]
        return Pyramid([Pool(self.pool, k, k, p, out, sizes) for k, p, out in self._plan(bottoms[0])])

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        c = bottoms[0].shape[0]
        return sum(c * math.prod(out) * math.prod(k) for k, _, out in self._plan(bottoms[0]))
