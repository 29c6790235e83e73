"""Layers that move elements without computing: Flatten, Reshape, Crop, Tile."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BeforeValidator, Field, ValidationInfo, model_validator
from torch import nn

from netcfg.errors import FieldError, ShapeError
from netcfg.layers.base import Blob, LayerSpec
from netcfg.layers._registry import register
from netcfg.layers.merge import int_list, sample_axis
from netcfg.spec import Spec

__all__ = ["Flatten", "Reshape", "Crop", "Tile"]

Dim = Annotated[int, Field(ge=-1)]


@register
class Flatten(LayerSpec):
    """Collapse axes ``axis``..``end_axis`` (the batch counted as 0) into one.

    Deviation from Caffe: the batch axis cannot be flattened, and end_axis may not
    come before axis."""

    type: Literal["Flatten"]
    axis: int = Field(1, description="first axis to flatten, counting the batch as 0")
    end_axis: int = Field(-1, description="last axis to flatten (inclusive); -1 for the last")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [2, 3, 4]}},
        {"inputs": {"x": {"shape": [2, 3, 4], "dtype": "int64"}}, "axis": 2, "end_axis": 3},
    ]

    def _range(self, x: Blob) -> tuple[int, int]:
        start = sample_axis(self, self.axis, x)
        end = sample_axis(self, self.end_axis, x, key="end_axis")
        if end < start:
            raise ShapeError(f"end_axis {self.end_axis} comes before axis {self.axis} for input {list(x.shape)}",
                             key="end_axis")
        return start, end

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        s, e = self._range(x)
        return [Blob((*x.shape[:s], math.prod(x.shape[s:e + 1]), *x.shape[e + 1:]), x.dtype)]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        s, e = self._range(bottoms[0])
        return nn.Flatten(s + 1, e + 1)


class BlobShape(Spec):
    """Caffe's BlobShape, ``{dim: [0, -1]}``: with axis 0, its first dim is the batch."""

    dim: list[Dim] = Field(..., description="the dims; 0 copies the input's, -1 is inferred")


def _caffe_form(data: Any) -> Any:
    """Caffe's ``shape: {dim: [...]}`` (batch first when axis is 0, Caffe's default)
    -> netcfg's per-sample ``shape: [...]`` from axis 1."""
    if not isinstance(data, dict) or not isinstance(data.get("shape"), dict):
        return data
    data, shape = dict(data), data["shape"]
    dims = shape.get("dim")
    if set(shape) != {"dim"} or not isinstance(dims, list):
        raise ValueError("shape is a list of per-sample dims, or Caffe's {dim: [...]}")
    axis = data.get("axis", 0)
    if axis != 0:  # Caffe's dims start after the batch: the same as netcfg's list
        data["shape"] = dims
        return data
    num_axes = data.get("num_axes", -1)
    if not dims or num_axes == 0:
        raise ValueError("with axis 0, Caffe's shape starts with the batch dim (0 to copy it)")
    if dims[0] != 0 and not (dims[0] == -1 and -1 not in dims[1:]):
        raise ValueError(f"the batch size comes from the data, so the batch dim (first of {dims}) must be 0 "
                         "(copy); or give the per-sample shape as a list, shape: [...]")
    data.update(shape=dims[1:], axis=1, num_axes=num_axes - 1 if isinstance(num_axes, int) and num_axes > 0 else num_axes)
    return data


class Reshaped(nn.Module):
    """View each sample with a fixed per-sample shape."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


@register
class Reshape(LayerSpec):
    """Give each sample a new shape with the same number of elements (Caffe's Reshape).

    ``shape`` is per sample: the batch dimension is implicit and never changes, so
    ``shape: [-1]`` flattens each sample. In ``shape``, 0 copies the input's dim at the
    same position and one -1 is inferred. ``axis``/``num_axes`` (the batch counted as
    0) reshape only part of the sample. Caffe's form ``shape: {dim: [0, -1]}`` is also
    accepted: with axis 0 (its default) its first dim is the batch and must be 0 (copy)."""

    type: Literal["Reshape"]
    shape: Annotated[list[Dim], BeforeValidator(lambda v: v, json_schema_input_type=list[Dim] | BlobShape)] = Field(
        ..., description="per-sample dims (no batch): 0 copies the input's, one -1 is inferred")
    axis: int = Field(1, description="first axis replaced, counting the batch as 0; -1 appends after the last")
    num_axes: int = Field(-1, ge=-1, description="how many axes from axis are replaced; -1: all the rest")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [2, 3, 4]}, "shape": [0, -1]},
        {"inputs": {"x": [6, 4]}, "shape": {"dim": [0, 2, 3, -1]}},  # Caffe's form, batch first
        {"inputs": {"x": [2, 6]}, "shape": [2, 3], "axis": 2, "num_axes": 1},
    ]

    @model_validator(mode="before")
    @classmethod
    def _caffe_shape(cls, data: Any, info: ValidationInfo) -> Any:
        out = _caffe_form(data)
        if out is not data and isinstance(info.context, dict):  # unknown-key hints look the mapping up by id
            info.context.setdefault("models", {})[id(data)] = cls
        return out

    @model_validator(mode="after")
    def _one_inferred(self):
        if self.shape.count(-1) > 1:
            raise FieldError(f"shape {self.shape} has more than one -1; only one dim can be inferred", key="shape")
        return self

    def _out(self, x: Blob) -> tuple[int, ...]:
        rank = len(x.shape)
        start = self.axis + rank + 2 if self.axis < 0 else self.axis  # Caffe: -1 is past the last
        if not 1 <= start <= rank + 1:
            raise ShapeError(f"axis {self.axis} is out of range for input {list(x.shape)} (valid: 1..{rank + 1}, "
                             f"or -1..-{rank + 1}; the batch, axis 0, is implicit)", key="axis")
        end = rank + 1 if self.num_axes == -1 else start + self.num_axes
        if end > rank + 1:
            raise ShapeError(f"axis {self.axis} with num_axes {self.num_axes} runs past the input {list(x.shape)}",
                             key="num_axes")
        s, e = start - 1, end - 1  # per-sample indices
        dims = []
        for i, d in enumerate(self.shape):
            if d == 0:
                if s + i >= rank:
                    raise ShapeError(f"shape {self.shape}: dim {i} is 0 (copy), but input {list(x.shape)} has no "
                                     f"axis {s + i + 1} to copy", key="shape")
                d = x.shape[s + i]
            dims.append(d)
        have = math.prod(x.shape[s:e])
        known = math.prod(d for d in dims if d != -1)
        if -1 in dims:
            if known == 0 or have % known:
                raise ShapeError(f"cannot infer the -1 in shape {self.shape}: {have} elements of input "
                                 f"{list(x.shape)} are not a multiple of {known}", key="shape")
            dims[dims.index(-1)] = have // known
        elif known != have:
            raise ShapeError(f"shape {self.shape} holds {known} elements, but the input {list(x.shape)} has {have} "
                             "to reshape", key="shape")
        return (*x.shape[:s], *dims, *x.shape[e:])

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        return [Blob(self._out(bottoms[0]), bottoms[0].dtype)]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Reshaped(self._out(bottoms[0]))


class Cropped(nn.Module):
    """A fixed window of the first bottom; the second only gave its shape."""

    def __init__(self, index: tuple[slice, ...]):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        return x[self.index]


@register
class Crop(LayerSpec):
    """Crop the first bottom to the second's shape from ``axis`` on, at ``offset`` (Caffe's Crop).

    Deviation from Caffe: axis 0 (the batch) is refused."""

    type: Literal["Crop"]
    n_bottoms = (2, 2)
    axis: int = Field(2, description="first axis cropped, counting the batch as 0 (2: spatial axes of C, H, W)")
    offset: int_list(0) = Field(  # type: ignore[valid-type]
        default_factory=list, description="where the crop starts: one value for every cropped axis, or one per axis; "
                                          "default 0")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [3, 6, 6], "like": [3, 4, 4]}, "offset": 1},
        {"inputs": {"x": [4, 5], "like": [2, 3]}, "axis": 1, "offset": [1, 2]},
    ]

    def _window(self, bottoms: list[Blob]) -> tuple[int, list[int]]:
        a, b = bottoms
        if len(a.shape) != len(b.shape):
            raise ShapeError(f"the bottoms must have the same rank to crop {list(a.shape)} to {list(b.shape)}", key="bottom")
        start = sample_axis(self, self.axis, a)
        n = len(a.shape) - start
        if len(self.offset) not in (0, 1, n):
            raise ShapeError(f"offset {self.offset} needs 1 or {n} value(s) for axes {self.axis}.. of {list(a.shape)}",
                             key="offset")
        offs = self.offset * n if len(self.offset) == 1 else self.offset or [0] * n
        for i, o in enumerate(offs):
            ax = start + i
            if o + b.shape[ax] > a.shape[ax]:
                raise ShapeError(f"cropping {list(a.shape)} to {list(b.shape)} at offset {offs} runs past axis "
                                 f"{ax + 1} ({o} + {b.shape[ax]} > {a.shape[ax]})", key="offset")
        return start, offs

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        a, b = bottoms
        start, _ = self._window(bottoms)
        return [Blob((*a.shape[:start], *b.shape[start:]), a.dtype)]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        start, offs = self._window(bottoms)
        b = bottoms[1].shape
        index = (slice(None),) * (start + 1) + tuple(slice(o, o + b[start + i]) for i, o in enumerate(offs))
        return Cropped(index)


class Tiled(nn.Module):
    """``tiles`` copies of the block from ``dim`` on, one after another along ``dim``."""

    def __init__(self, dim: int, tiles: int):
        super().__init__()
        self.repeats = (1,) * dim + (tiles,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(*self.repeats, *(1,) * (x.dim() - len(self.repeats)))


@register
class Tile(LayerSpec):
    """Repeat each sample ``tiles`` times along ``axis`` (Caffe's Tile): the whole block from
    ``axis`` on is copied, so [a, b] tiled twice is [a, b, a, b]; the gradient sums the copies.

    Deviation from Caffe: axis 0 (the batch) is refused."""

    type: Literal["Tile"]
    axis: int = Field(1, description="axis to repeat along, counting the batch as 0; -1 for the last")
    tiles: int = Field(..., ge=1, description="how many copies along axis")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [2, 3]}, "tiles": 3},
        {"inputs": {"x": [2, 3, 2]}, "axis": -1, "tiles": 2},
        {"inputs": {"x": {"shape": [4], "dtype": "int64"}}, "tiles": 2},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        ax = sample_axis(self, self.axis, x)
        return [Blob((*x.shape[:ax], x.shape[ax] * self.tiles, *x.shape[ax + 1:]), x.dtype)]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Tiled(sample_axis(self, self.axis, bottoms[0]) + 1, self.tiles)
