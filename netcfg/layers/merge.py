"""Blob plumbing: Concat, Eltwise, Slice, Split and Silence."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import BeforeValidator, Field, model_validator
from torch import nn

from netcfg.errors import FieldError, ShapeError
from netcfg.layers.base import Blob, FloatList, LayerSpec
from netcfg.layers._registry import register

__all__ = ["Concat", "Eltwise", "Slice", "Split", "Silence", "sample_axis", "int_list"]


def int_list(ge: int) -> object:
    """Caffe's repeated int field: one value or a list, each >= ``ge``."""
    item = Annotated[int, Field(ge=ge)]
    return Annotated[list[item], BeforeValidator(lambda v: [v] if isinstance(v, int) else v,
                                                 json_schema_input_type=item | list[item])]


def sample_axis(layer: LayerSpec, axis: int, blob: Blob, key: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex for ``axis`` (the batch counted as 0), as an index
    into the per-sample shape; the batch axis itself is refused."""
    rank = len(blob.shape)
    full = axis + rank + 1 if axis < 0 else axis
    if not 0 <= full <= rank:
        raise ShapeError(f"{key} {axis} is out of range for a {rank}-d input per sample {list(blob.shape)} "
                         f"(valid: 1..{rank} or -1..-{rank}, the batch being axis 0)", key=key)
    if full == 0:
        raise ShapeError(f"{key} {axis} is the batch axis; {layer.type} here works on the per-sample axes "
                         f"1..{rank} (input {list(blob.shape)})", key=key)
    return full - 1


def _same_dtype(layer: LayerSpec, bottoms: list[Blob]) -> None:
    for i, b in enumerate(bottoms[1:], 1):
        if b.dtype != bottoms[0].dtype:
            raise ShapeError(f"{layer.type} needs one dtype, but bottom {i} is {b.dtype} and bottom 0 is "
                             f"{bottoms[0].dtype}", key="bottom")


class Cat(nn.Module):
    """torch.cat of the bottoms along ``dim`` (batch included)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, self.dim) if len(xs) > 1 else xs[0]


@register
class Concat(LayerSpec):
    """Concatenate the bottoms along ``axis``; every other dimension must match.

    Deviation from Caffe: axis 0 (the batch) is refused, since per-sample shapes
    cannot say that the batch grew."""

    type: Literal["Concat"]
    n_bottoms = (1, None)
    axis: int = Field(1, description="axis to join along, counting the batch as 0; -1 for the last")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"a": [2, 3], "b": [4, 3]}},
        {"inputs": {"a": [2, 3], "b": [2, 1], "c": [2, 2]}, "axis": -1},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        first = bottoms[0]
        ax = sample_axis(self, self.axis, first)
        _same_dtype(self, bottoms)
        for i, b in enumerate(bottoms[1:], 1):
            if len(b.shape) != len(first.shape) or any(m != n for j, (m, n) in enumerate(zip(b.shape, first.shape)) if j != ax):
                raise ShapeError(f"bottom {i} has shape {list(b.shape)} and bottom 0 has {list(first.shape)}: "
                                 f"concatenating along axis {self.axis} needs every other dimension equal", key="bottom")
        size = sum(b.shape[ax] for b in bottoms)
        return [Blob((*first.shape[:ax], size, *first.shape[ax + 1:]), first.dtype)]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Cat(sample_axis(self, self.axis, bottoms[0]) + 1)


class EltwiseOp(nn.Module):
    """Element-wise SUM (with coefficients), PROD or MAX of the bottoms."""

    def __init__(self, operation: str, coeff: tuple[float, ...] | None):
        super().__init__()
        self.operation, self.coeff = operation, coeff

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        c = self.coeff
        y = xs[0] if c is None or c[0] == 1 else xs[0] * c[0]
        for i, x in enumerate(xs[1:], 1):
            if self.operation == "SUM":
                y = y + x if c is None or c[i] == 1 else y + x * c[i]
            elif self.operation == "PROD":
                y = y * x
            elif i == 1:  # Caffe's first pair: a > b ? a : b, so a tie goes to bottom 1
                y = torch.where(y > x, y, x)
            else:  # Caffe's later bottoms: only a strictly larger value takes over
                y = torch.where(x > y, x, y)
        return y


@register
class Eltwise(LayerSpec):
    """Element-wise SUM (optionally weighted by ``coeff``), PROD or MAX of same-shaped bottoms."""

    reads_batch_means = True
    type: Literal["Eltwise"]
    n_bottoms = (2, None)
    operation: Literal["SUM", "PROD", "MAX"] = Field("SUM", description="how to combine the bottoms")
    coeff: FloatList | None = Field(None, description="SUM only: one weight per bottom (e.g. [1, -1] for a difference)")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"a": [3, 4], "b": [3, 4]}, "coeff": [1, -0.5]},
        {"inputs": {"a": [5], "b": [5], "c": [5]}, "operation": "PROD"},
        {"inputs": {"a": [2, 3], "b": [2, 3]}, "operation": "MAX"},
    ]

    @model_validator(mode="after")
    def _check_coeff(self):
        if self.coeff is not None:
            if self.operation != "SUM":
                raise FieldError(f"coeff applies only to operation SUM, not {self.operation}", key="coeff")
            if self.bottom is not None and len(self.coeff) != len(self.bottom):
                raise FieldError(f"coeff has {len(self.coeff)} value(s) for {len(self.bottom)} bottom(s); give one per bottom", key="coeff")
        return self

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        _same_dtype(self, bottoms)
        for i, b in enumerate(bottoms[1:], 1):
            if b.shape != bottoms[0].shape:
                raise ShapeError(f"bottom {i} has shape {list(b.shape)} but bottom 0 has {list(bottoms[0].shape)}; "
                                 f"{self.operation} needs equal shapes", key="bottom")
        if self.coeff is not None and len(self.coeff) != len(bottoms):
            raise ShapeError(f"coeff has {len(self.coeff)} value(s) for {len(bottoms)} bottom(s)", key="coeff")
        return [bottoms[0]]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return EltwiseOp(self.operation, tuple(self.coeff) if self.coeff is not None else None)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        n = math.prod(tops[0].shape)
        weighted = self.coeff is not None and any(c != 1 for c in self.coeff)
        return n * (len(bottoms) - 1) * (2 if weighted else 1)


class SplitAlong(nn.Module):
    """torch.split of the bottom into pieces of the given sizes along ``dim``."""

    def __init__(self, sizes: tuple[int, ...], dim: int):
        super().__init__()
        self.sizes, self.dim = sizes, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return torch.split(x, self.sizes, self.dim) if len(self.sizes) > 1 else x


@register
class Slice(LayerSpec):
    """Cut the bottom along ``axis`` at ``slice_point``s, or into len(top) equal parts.

    Deviation from Caffe: axis 0 (the batch) is refused."""

    type: Literal["Slice"]
    n_tops = (1, None)
    axis: int = Field(1, description="axis to cut, counting the batch as 0; -1 for the last")
    slice_point: int_list(1) = Field(  # type: ignore[valid-type]
        default_factory=list, description="increasing indices to cut at (one fewer than the tops); "
                                          "empty: equal parts, one per top")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [5, 2]}, "slice_point": [1, 3]},
        {"inputs": {"x": [2, 6]}, "axis": -1, "top": ["a", "b", "c"]},
    ]

    @model_validator(mode="after")
    def _check_points(self):
        sp = self.slice_point
        if any(b <= a for a, b in zip(sp, sp[1:])):
            raise FieldError(f"slice_point must be strictly increasing, got {sp}", key="slice_point")
        if sp and self.top is not None and len(self.top) != len(sp) + 1:
            raise FieldError(f"{len(sp)} slice_point(s) make {len(sp) + 1} tops, but top names {len(self.top)}: {self.top}", key="top")
        if not sp and self.top is None:
            raise FieldError("give slice_point, or name the tops (top: [a, b]) to cut into equal parts", key="slice_point")
        return self

    def num_tops(self) -> int:
        return len(self.slice_point) + 1

    def _sizes(self, x: Blob) -> tuple[int, tuple[int, ...]]:
        ax = sample_axis(self, self.axis, x)
        size = x.shape[ax]
        sp = self.slice_point
        if sp:
            if sp[-1] >= size:
                raise ShapeError(f"slice_point {sp} must lie inside axis {self.axis} of size {size} "
                                 f"(input {list(x.shape)})", key="slice_point")
            return ax, tuple(b - a for a, b in zip([0, *sp], [*sp, size]))
        n = len(self.top or ())
        if size % n:
            raise ShapeError(f"axis {self.axis} of size {size} (input {list(x.shape)}) does not split into "
                             f"{n} equal parts; give slice_point", key="top")
        return ax, (size // n,) * n

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        ax, sizes = self._sizes(x)
        return [Blob((*x.shape[:ax], s, *x.shape[ax + 1:]), x.dtype) for s in sizes]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        ax, sizes = self._sizes(bottoms[0])
        return SplitAlong(sizes, ax + 1)


class Copies(nn.Module):
    """The bottom, once per top (the same tensor; autograd adds the gradients)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return (x,) * self.n if self.n > 1 else x


@register
class Split(LayerSpec):
    """Hand the bottom to every top (explicit fan-out; a blob read twice fans out anyway)."""

    reads_batch_means = True
    type: Literal["Split"]
    n_tops = (1, None)

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [3]}}, {"inputs": {"x": [2, 2]}, "top": ["a", "b", "c"]}]

    def num_tops(self) -> int:
        return 2

    def _n(self) -> int:
        return len(self.top) if self.top is not None else self.num_tops()

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        return [bottoms[0]] * self._n()

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Copies(self._n())


class Sink(nn.Module):
    """Consumes its bottoms and returns no tops."""

    def forward(self, *xs: torch.Tensor) -> tuple[()]:
        return ()


@register
class Silence(LayerSpec):
    """Consume the bottoms and produce nothing, so they are not net outputs."""

    reads_batch_means = True
    type: Literal["Silence"]
    n_bottoms = (1, None)
    n_tops = (0, 0)

    examples: ClassVar[list[dict]] = [{"inputs": {"x": [3], "label": {"shape": [], "dtype": "int64"}}}]

    def num_tops(self) -> int:
        return 0

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        return []

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Sink()
