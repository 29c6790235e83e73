"""Element-wise activations (ReLU for now)."""
from __future__ import annotations
from typing import Literal
from pydantic import Field
from torch import nn
from netcfg.layers.base import Blob, LayerSpec, register

@register
class ReLU(LayerSpec):
    """max(x, 0) + negative_slope * min(x, 0)."""
    type: Literal["ReLU"]
    negative_slope: float = Field(0.0, description="slope for x < 0 (leaky ReLU when > 0)")
    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        return list(bottoms)
    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope) if self.negative_slope else nn.ReLU()
