"""Element-wise nonlinearities with Caffe's parameter names: ReLU, PReLU, ELU, SELU, ...

Each maps a floating-point blob to a blob of the same shape and dtype. Modules
never work in place: the net rebinds a blob name to the new tensor instead, so an
"in place" layer (top = bottom) costs one tensor, not a corrupted autograd graph.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from netcfg.errors import FieldError, ShapeError
from netcfg.layers.base import Blob, FillerSpec, LayerSpec, check_float
from netcfg.layers._registry import register
from netcfg.layers.fillers import fill

__all__ = [
    "ReLU", "PReLU", "ELU", "SELU", "GELU", "Sigmoid", "TanH", "Swish",
    "AbsVal", "BNLL", "Threshold", "Clip", "Elementwise",
]

class Elementwise(LayerSpec):
    """Base of the shape-preserving layers: one floating-point bottom, one top alike."""

    cost: ClassVar[int] = 1  # nominal floating-point operations per element

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        check_float(self, x)
        return [x]

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return self.cost * math.prod(tops[0].shape)


# ------------------------------------------------------------------ modules


class SwishBeta(nn.Module):
    """x * sigmoid(beta x)."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class Abs(nn.Module):
    """|x|."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


class Step(nn.Module):
    """1 where x > threshold, else 0, in x's dtype."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"


class Clamp(nn.Module):
    """x clamped to [min, max]."""

    def __init__(self, min: float, max: float):
        super().__init__()
        self.min, self.max = min, max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self.min, self.max)

    def extra_repr(self) -> str:
        return f"min={self.min}, max={self.max}"


# ------------------------------------------------------------------- layers


@register
class ReLU(Elementwise):
    """max(x, 0) + negative_slope * min(x, 0)."""

    type: Literal["ReLU"]
    negative_slope: float = Field(0.0, description="slope for x < 0 (leaky ReLU when > 0)")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 4]}},
        {"inputs": {"x": {"shape": [2, 3], "dtype": "float64"}}, "negative_slope": 0.1},
    ]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope) if self.negative_slope else nn.ReLU()


@register
class PReLU(Elementwise):
    """ReLU with a learned slope for x < 0, one per channel (axis 1 counting the batch)
    or one shared (He et al. 2015, https://arxiv.org/abs/1502.01852)."""

    type: Literal["PReLU"]
    channel_shared: bool = Field(False, description="learn one slope for all channels instead of one per channel")
    filler: FillerSpec = Field(default_factory=lambda: FillerSpec(type="constant", value=0.25),
                               description="initialisation of the slopes; default constant 0.25, as Caffe")

    cost: ClassVar[int] = 2

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 4, 4]}},
        {"inputs": {"x": [5]}, "channel_shared": True, "filler": {"type": "constant", "value": 0.1}},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = super().infer(bottoms)
        if not self.channel_shared and not x.shape:
            raise ShapeError("PReLU with one slope per channel needs at least a 1-d input per sample "
                             "(channels first), got a scalar; set channel_shared: true", key="channel_shared")
        return [x]

    def blob_names(self) -> list[str]:
        return ["weight"]  # Caffe's one blob: the slopes, shape (C,) or (1,)

    def build(self, bottoms: list[Blob]) -> nn.Module:
        channels = 1 if self.channel_shared else bottoms[0].shape[0]
        return nn.PReLU(channels)

    def fill(self, module: nn.Module) -> None:
        fill(module.weight, self.filler)


@register
class ELU(Elementwise):
    """x if x > 0 else alpha (exp(x) - 1) (Clevert et al. 2015, https://arxiv.org/abs/1511.07289)."""

    type: Literal["ELU"]
    alpha: float = Field(1.0, ge=0, description="value the output saturates to (negated) for x -> -inf")

    cost: ClassVar[int] = 3

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [3, 4]}, "alpha": 0.5}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.ELU(self.alpha)


@register
class SELU(Elementwise):
    """Scaled ELU with the fixed self-normalising constants (Klambauer et al. 2017,
    https://arxiv.org/abs/1706.02515); pair with lecun fillers and AlphaDropout."""

    type: Literal["SELU"]

    cost: ClassVar[int] = 4

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [3, 4]}}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.SELU()


@register
class GELU(Elementwise):
    """x * Phi(x), Phi the standard normal CDF (Hendrycks & Gimpel 2016, https://arxiv.org/abs/1606.08415)."""

    type: Literal["GELU"]
    approximate: Literal["none", "tanh"] = Field("none", description="none: exact erf form; tanh: the tanh approximation")

    cost: ClassVar[int] = 8

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [6]}}, {"inputs": {"x": [2, 3]}, "approximate": "tanh"}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.GELU(approximate=self.approximate)


@register
class Sigmoid(Elementwise):
    """1 / (1 + exp(-x))."""

    type: Literal["Sigmoid"]

    cost: ClassVar[int] = 4

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [2, 5]}}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.Sigmoid()


@register
class TanH(Elementwise):
    """tanh(x)."""

    type: Literal["TanH"]

    cost: ClassVar[int] = 4

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [2, 5]}}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.Tanh()


@register
class Swish(Elementwise):
    """x * sigmoid(beta x); beta 1 is SiLU (Ramachandran et al. 2017, https://arxiv.org/abs/1710.05941)."""

    type: Literal["Swish"]
    beta: float = Field(1.0, ge=0, description="sharpness: 0 gives x / 2, large values approach ReLU")

    cost: ClassVar[int] = 6

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [4]}}, {"inputs": {"x": [2, 3]}, "beta": 2.0}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.SiLU() if self.beta == 1 else SwishBeta(self.beta)



@register
class AbsVal(Elementwise):
    """|x|."""

    type: Literal["AbsVal"]

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [3, 2, 2]}}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Abs()


@register
class BNLL(Elementwise):
    """Binomial normal log-likelihood, log(1 + exp(x)) (softplus), computed stably."""

    type: Literal["BNLL"]

    cost: ClassVar[int] = 4

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [4]}}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.Softplus()


@register
class Threshold(Elementwise):
    """1 where x > threshold, else 0 (a step; no gradient flows through it)."""

    type: Literal["Threshold"]
    differentiable = False  # a step: its gradient is 0 everywhere
    threshold: float = Field(0.0, description="inputs strictly above this give 1")

    examples: ClassVar[list[dict]] = [{"inputs": {"x": {"shape": [5], "dtype": "float64"}}, "threshold": 0.5}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Step(self.threshold)


@register
class Clip(Elementwise):
    """min(max(x, min), max); e.g. ReLU6 is min 0, max 6."""

    type: Literal["Clip"]
    min: float = Field(..., description="lower bound of the output")
    max: float = Field(..., description="upper bound of the output; >= min")

    cost: ClassVar[int] = 2

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 4]}, "min": -1, "max": 1},
        {"inputs": {"x": [4]}, "min": 0, "max": 6},  # ReLU6
    ]

    @model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise FieldError(f"Clip needs min <= max, got min {self.min} > max {self.max}", key="min")
        return self

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Clamp(self.min, self.max)
