"""Normalisation layers: BatchNorm (Caffe's, with an optional affine), LayerNorm, InstanceNorm, GroupNorm."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from netcfg.errors import FieldError, ShapeError
from netcfg.layers.base import Blob, FillerSpec, LayerSpec, check_float, check_rank
from netcfg.layers._registry import register

__all__ = ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "BatchNormNd"]

class BatchNormNd(_BatchNorm):
    """Batch normalisation over every axis but the channel (dim 1), any rank >= 2, with Caffe's use_global_stats."""

    def __init__(self, channels: int, eps: float, momentum: float, affine: bool, use_global_stats: bool | None):
        super().__init__(channels, eps, momentum, affine, track_running_stats=True)
        self.use_global_stats = use_global_stats

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected a (N, C, ...) input, got {input.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_global_stats is None:  # Caffe's default: batch stats in TRAIN, running stats in TEST
            return super().forward(x)
        if self.use_global_stats:  # always the running stats, never updated (frozen BN)
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if self.training:  # always batch stats; running stats still tracked while training
            return super().forward(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, use_global_stats={self.use_global_stats}"


@register
class BatchNorm(LayerSpec):
    """Batch normalisation (Ioffe & Szegedy 2015, https://arxiv.org/abs/1502.03167) per channel
    (axis 1) of a (C,), (C, L), (C, H, W) or (C, D, H, W) input, with an optional learned
    scale and shift (Caffe's BatchNorm + Scale pair as one layer).

    Differences from Caffe: Caffe keeps sums of the batch statistics and a third blob
    with the sum of the decay weights, and divides by it, so its moving averages are
    unbiased from the first iteration. PyTorch keeps exponential moving averages that
    start at mean 0 / variance 1, with momentum = 1 - moving_average_fraction; after
    a few times 1 / (1 - fraction) iterations (5000 at the default .999) the two agree.
    Both use Bessel's correction (m / (m - 1)) for the variance they store and the
    biased batch variance to normalise. With use_global_stats false, Caffe also updates
    the moving averages in TEST; netcfg updates them only while training.
    """

    type: Literal["BatchNorm"]
    use_global_stats: bool | None = Field(
        None, description="null: batch statistics in TRAIN, running statistics in TEST (Caffe); "
                          "true: always the running statistics, never updated (frozen); false: always batch statistics")
    moving_average_fraction: float = Field(
        0.999, ge=0, lt=1, description="decay of the running statistics per iteration (PyTorch momentum = 1 - this); "
                                       "lower (e.g. .9) for short runs, higher for smoother estimates")
    eps: float = Field(1e-5, gt=0, description="added to the variance before the square root")
    affine: bool = Field(True, description="learn a per-channel scale and shift (Caffe's Scale layer with bias_term)")
    weight_filler: FillerSpec | None = Field(None, description="scale initialisation; default constant 1 "
                                                               "(constant 0 zero-initialises a residual branch)")
    bias_filler: FillerSpec | None = Field(None, description="shift initialisation; default constant 0")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 4, 4]}},
        {"inputs": {"x": [5]}, "affine": False, "moving_average_fraction": 0.9},
        {"inputs": {"x": [3, 6]}, "use_global_stats": True, "weight_filler": {"type": "constant", "value": 0.5}},
    ]

    @model_validator(mode="after")
    def _fillers_need_affine(self):
        if not self.affine and (self.weight_filler is not None or self.bias_filler is not None):
            raise FieldError("weight_filler/bias_filler need affine: true (without it BatchNorm learns nothing)", key="affine")
        return self

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        check_rank(self, x, (1, 2, 3, 4))
        check_float(self, x)
        return [x]

    def blob_names(self) -> list[str]:
        return ["weight", "bias"] if self.affine else []

    def min_batch(self, bottoms: list[Blob], phase: str) -> int:
        # batch statistics of a (C,) input: one value per channel and sample; one sample has no variance
        batch_stats = self.use_global_stats is False or (self.use_global_stats is None and phase == "TRAIN")
        return 2 if batch_stats and math.prod(bottoms[0].shape[1:]) == 1 else 1

    def build(self, bottoms: list[Blob]) -> nn.Module:
        momentum = round(1.0 - self.moving_average_fraction, 12)  # .999 -> 0.001, not 0.0010000000000000009
        return BatchNormNd(bottoms[0].shape[0], self.eps, momentum, self.affine,
                           self.use_global_stats)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return 2 * math.prod(bottoms[0].shape)  # one multiply-add per element once folded (inference)


class _AffineNorm(LayerSpec):
    """Shared: eps, and a learned weight/bias named as PyTorch names them."""

    eps: float = Field(1e-5, gt=0, description="added to the variance before the square root")

    def _affine(self) -> bool:
        """Whether a learned weight/bias exists; Caffe-style subclasses name it ``affine``."""
        return bool(getattr(self, "affine", False))

    def blob_names(self) -> list[str]:
        return ["weight", "bias"] if self._affine() else []

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        # mean and variance (2 each), subtract and scale (2), plus the affine multiply-add
        return (6 + (2 if self._affine() else 0)) * math.prod(bottoms[0].shape)


@register
class LayerNorm(_AffineNorm):
    """Layer normalisation (Ba et al. 2016, https://arxiv.org/abs/1607.06450) over the last
    ``num_axes`` dims of each sample (default: all of them)."""

    type: Literal["LayerNorm"]
    num_axes: int | None = Field(None, ge=1, le=8, description="normalise over this many trailing dims; "
                                                               "default all per-sample dims (1 for (T, D) tokens)")
    elementwise_affine: bool = Field(True, description="learn a scale and shift per normalised element")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 4]}},
        {"inputs": {"x": [5, 6]}, "num_axes": 1, "elementwise_affine": False, "eps": 1e-6},
    ]

    def _affine(self) -> bool:
        return self.elementwise_affine

    def _shape(self, x: Blob) -> tuple[int, ...]:
        n = len(x.shape) if self.num_axes is None else self.num_axes
        if not x.shape or n > len(x.shape):
            raise ShapeError(f"num_axes {n} is more than the {len(x.shape)} dim(s) of the input {list(x.shape)}",
                             key="num_axes" if self.num_axes is not None else "bottom")
        return x.shape[len(x.shape) - n:]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        check_float(self, x)
        self._shape(x)
        return [x]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.LayerNorm(self._shape(bottoms[0]), self.eps, self.elementwise_affine)


@register
class InstanceNorm(_AffineNorm):
    """Instance normalisation (Ulyanov et al. 2016, https://arxiv.org/abs/1607.08022): each
    channel of each sample normalised over its (H, W) or (L) positions; no running statistics."""

    type: Literal["InstanceNorm"]
    affine: bool = Field(False, description="learn a per-channel scale and shift")

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [3, 4, 4]}}, {"inputs": {"x": [2, 5]}, "affine": True}]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        check_rank(self, x, (2, 3))
        check_float(self, x)
        if math.prod(x.shape[1:]) < 2:
            raise ShapeError(f"InstanceNorm needs more than 1 position per channel to normalise over, "
                             f"got input {list(x.shape)}", key="bottom")
        return [x]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        cls = nn.InstanceNorm2d if len(bottoms[0].shape) == 3 else nn.InstanceNorm1d
        return cls(bottoms[0].shape[0], self.eps, affine=self.affine)


@register
class GroupNorm(_AffineNorm):
    """Group normalisation (Wu & He 2018, https://arxiv.org/abs/1803.08494): channels split
    into ``num_groups`` groups, each normalised over its channels and positions."""

    type: Literal["GroupNorm"]
    num_groups: int = Field(..., ge=1, description="number of channel groups; must divide the channels "
                                                   "(1: LayerNorm over (C, H, W); channels: InstanceNorm)")
    affine: bool = Field(True, description="learn a per-channel scale and shift")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [4, 3, 3]}, "num_groups": 2},
        {"inputs": {"x": [6, 5]}, "num_groups": 3, "affine": False},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        check_rank(self, x, (1, 2, 3, 4))
        check_float(self, x)
        c = x.shape[0]
        if c % self.num_groups:
            raise ShapeError(f"num_groups {self.num_groups} does not divide the {c} input channels "
                             f"(input {list(x.shape)})", key="num_groups")
        return [x]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.GroupNorm(self.num_groups, bottoms[0].shape[0], self.eps, self.affine)
