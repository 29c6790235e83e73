"""Layers that make or pick whole blobs: Parameter (a learned blob as a top)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from netcfg.layers.base import Blob, FillerSpec, LayerSpec
from netcfg.layers._registry import register
from netcfg.layers.fillers import fill

__all__ = ["Parameter"]


class LearnedBlob(nn.Module):
    """A learned (1, *shape) blob, the same for every sample of the bottom's batch."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, *shape))  # Caffe's Parameter blob starts at 0

    def forward(self, like: torch.Tensor) -> torch.Tensor:
        return self.weight.expand(like.shape[0], *self.weight.shape[1:])


@register
class Parameter(LayerSpec):
    """Caffe's Parameter: a learned blob as the top, e.g. a scale or an offset for an Eltwise,
    Scale or Bias. Its one blob, ``weight``, is (1, *shape) and starts at 0, as Caffe's does.

    Deviation from Caffe, whose Parameter has no bottom and a top without a batch axis: here
    every blob has one, so the top is the blob repeated over the batch of the bottom, which
    is read only for its batch size (by default the previous layer's top). The gradient sums
    over the batch, as Caffe's does for a blob a Scale or Bias broadcasts."""

    type: Literal["Parameter"]
    shape: list[Annotated[int, Field(ge=1)]] = Field(..., description="per-sample shape of the blob (no batch dim); "
                                                                      "[] for one value per sample")
    filler: FillerSpec | None = Field(None, description="initialisation (a netcfg extension); default constant 0, "
                                                        "as Caffe")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3]}, "shape": [4]},
        {"inputs": {"x": {"shape": [2], "dtype": "int64"}}, "shape": [3, 2, 2],
         "filler": {"type": "gaussian", "std": 0.1}},
    ]

    def blob_names(self) -> list[str]:
        return ["weight"]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        return [Blob(tuple(self.shape))]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return LearnedBlob(tuple(self.shape))

    def fill(self, module: nn.Module) -> None:
        if self.filler is not None:
            fill(module.weight, self.filler)
