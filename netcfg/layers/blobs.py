"""Layers that make or pick whole samples: Parameter (a learned blob as a top), BatchReindex."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from netcfg.errors import ShapeError
from netcfg.layers.base import FLOAT_DTYPES, INT_DTYPES, Blob, FillerSpec, LayerSpec
from netcfg.layers._registry import register
from netcfg.layers.fillers import fill

__all__ = ["Parameter", "BatchReindex"]


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
        # the blob is made in the dtype of a floating-point bottom, as every layer's weights are
        (x,) = bottoms
        return [Blob(tuple(self.shape), x.dtype if x.dtype in FLOAT_DTYPES else "float32")]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return LearnedBlob(tuple(self.shape))

    def fill(self, module: nn.Module) -> None:
        if self.filler is not None:
            fill(module.weight, self.filler)


class Reindex(nn.Module):
    """Sample i of the top is sample index[i] of the bottom (the gradient adds up at repeats)."""

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        index = index.reshape(-1).long()
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            bad = (index < 0) | (index >= x.shape[0])  # Caffe CHECKs; CUDA would fail with a device assert
            if bad.any():
                raise ValueError(f"BatchReindex: index {int(index[bad][0])} is outside the batch of {x.shape[0]} "
                                 "samples (valid: 0 .. batch size - 1)")
        return x.index_select(0, index)


@register
class BatchReindex(LayerSpec):
    """Caffe's BatchReindex: pick samples of the first bottom by the indices in the second,
    one integer per sample: top[i] = bottom[index[i]], so a batch can be shuffled, repeated or
    subsampled. The gradient adds up over repeated indices, as Caffe's does. An index outside
    the batch is an error when the net runs.

    The top has as many samples as the index bottom (as in Caffe), so blobs of the two
    batches mix only when both are equally large."""

    type: Literal["BatchReindex"]
    n_bottoms = (2, 2)

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 2], "index": {"shape": [], "dtype": "int64"}}},
        {"inputs": {"x": {"shape": [4], "dtype": "int64"}, "index": {"shape": [1], "dtype": "int32"}}},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        x, index = bottoms
        if math.prod(index.shape) != 1 or index.dtype not in INT_DTYPES:
            raise ShapeError(f"the second bottom holds one integer sample index per sample, got shape "
                             f"{list(index.shape)} {index.dtype}; declare it as {{shape: [], dtype: int64}}",
                             key="bottom")
        return [x]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Reindex()
