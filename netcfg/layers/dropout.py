"""Dropout and AlphaDropout: random zeroing in TRAIN, identity in TEST.

The phase reaches the modules through ``module.train()``/``module.eval()`` (the
net sets it from its graph's phase), so a TRAIN net switched to eval for a test
pass stops dropping, as Caffe's TEST net does.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from netcfg.layers.activation import Elementwise
from netcfg.layers.base import Blob, register

__all__ = ["Dropout", "AlphaDropout"]


@register
class Dropout(Elementwise):
    """Zero each element with probability dropout_ratio in TRAIN and scale the rest by
    1 / (1 - dropout_ratio) (Caffe's inverted dropout); identity in TEST
    (Srivastava et al. 2014, https://jmlr.org/papers/v15/srivastava14a.html)."""

    type: Literal["Dropout"]
    dropout_ratio: float = Field(0.5, ge=0, lt=1, description="probability of zeroing an element in TRAIN; 0 disables")

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [3, 4]}}, {"inputs": {"x": [6]}, "dropout_ratio": 0}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.Dropout(self.dropout_ratio) if self.dropout_ratio else nn.Identity()

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return 0  # identity at test time


@register
class AlphaDropout(Elementwise):
    """Dropout for SELU nets: dropped elements go to SELU's negative saturation and an
    affine correction keeps zero mean and unit variance in TRAIN; identity in TEST
    (Klambauer et al. 2017, https://arxiv.org/abs/1706.02515). Not a Caffe layer."""

    type: Literal["AlphaDropout"]
    dropout_ratio: float = Field(0.05, ge=0, lt=1, description="probability of dropping an element in TRAIN; "
                                                               "0.05 to 0.1 suit SELU nets")

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [3, 4]}, "dropout_ratio": 0.1}]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return nn.AlphaDropout(self.dropout_ratio) if self.dropout_ratio else nn.Identity()

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return 0
