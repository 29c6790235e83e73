"""Residual: a block of layers run in sequence whose output is added to a shortcut."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator
from torch import nn

from netcfg.errors import FieldError, ShapeError
from netcfg.layers.base import Blob, LayerSpec, ParamSpec
from netcfg.layers._registry import AnyLayer, lookup, register

__all__ = ["Residual", "ResidualBlock"]

# parameter-free activation layer types the block may apply after the sum
Activation = Literal["ReLU", "ELU", "SELU", "GELU", "Sigmoid", "TanH", "Swish", "AbsVal", "BNLL"]

Step = tuple[LayerSpec, Blob, Blob]  # an inner layer with its input and output blob


class ResidualBlock(nn.Module):
    """y = act(body(x) + shortcut(x)); an empty shortcut is the identity."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Sequential, act: nn.Module | None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x) + self.shortcut(x)
        return y if self.act is None else self.act(y)


def _sequence(steps: list[Step]) -> nn.Sequential:
    seq = nn.Sequential()
    for layer, x, _ in steps:
        seq._modules[layer.name] = layer.build([x])  # keeps the user's name as the key
    return seq


def _entries(layer: LayerSpec) -> list[tuple[str, ParamSpec | None]]:
    """(blob path, its ``param:`` entry or None) for each learnable blob of ``layer``."""
    hook = getattr(layer, "param_entries", None)
    if hook is not None:
        return hook()
    return [(b, layer.param[i] if i < len(layer.param) else None) for i, b in enumerate(layer.blob_names())]


@register
class Residual(LayerSpec):
    """Residual block y = act(body(x) + shortcut(x)) (He et al. 2016,
    https://arxiv.org/abs/1512.03385). Not a Caffe layer: Caffe spells it out as
    separate layers joined by an Eltwise SUM. Inner layers are wired in sequence and
    their parameters are named ``<block>.body.<layer>.<blob>``."""

    type: Literal["Residual"]
    body: list[AnyLayer] = Field(..., min_length=1, description="layers run in sequence on the input; leave their bottom/top unset")
    shortcut: list[AnyLayer] = Field(default_factory=list, description="layers run on the input for the skip path; empty: identity "
                                     "(a projection, e.g. 1x1 Convolution with stride + BatchNorm, when shapes change)")
    activation: Activation | None = Field("ReLU", description="activation layer type applied after the sum; null: none")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [4, 5, 5]}, "body": [
            {"name": "conv1", "type": "Convolution", "num_output": 4, "kernel_size": 3, "pad": 1},
            {"name": "bn1", "type": "BatchNorm"},
            {"name": "relu1", "type": "ReLU"},
            {"name": "conv2", "type": "Convolution", "num_output": 4, "kernel_size": 3, "pad": 1,
             "param": [{"lr_mult": 2}, {"lr_mult": 0}]},
        ]},
        {"inputs": {"x": [2, 6, 6]}, "activation": None, "body": [
            {"name": "conv", "type": "Convolution", "num_output": 4, "kernel_size": 3, "stride": 2, "pad": 1},
        ], "shortcut": [
            {"name": "proj", "type": "Convolution", "num_output": 4, "kernel_size": 1, "stride": 2, "bias_term": False},
            {"name": "bn", "type": "BatchNorm", "weight_filler": {"type": "constant", "value": 0}},
        ]},
    ]

    _act: LayerSpec | None = PrivateAttr(None)

    @field_validator("body", "shortcut")
    @classmethod
    def _inner_layers(cls, layers: list[LayerSpec], info: ValidationInfo) -> list[LayerSpec]:
        key = info.field_name
        seen: set[str] = set()
        for layer in layers:
            what = f"{key} layer '{layer.name}'"
            if layer.name in seen:
                raise ValueError(f"{what}: duplicate name; inner layer names must be unique within the block")
            seen.add(layer.name)
            if "." in layer.name or hasattr(nn.Sequential, layer.name):
                raise ValueError(f"{what}: the name must not contain '.' or be a torch.nn.Module attribute; rename it")
            if layer.bottom is not None or layer.top is not None:
                raise ValueError(f"{what} sets bottom/top; inside a Residual the layers are wired in sequence "
                                 "(each reads the previous one's output), so leave bottom and top unset")
            if layer.include or layer.exclude:
                raise ValueError(f"{what} has include/exclude rules, which are not supported inside a block; "
                                 "put the rule on the Residual layer")
            if layer.is_loss or layer.reduces_batch or layer.loss_weight is not None:
                raise ValueError(f"{what}: a {layer.type} (loss or metric) cannot sit inside a Residual")
            lo, hi = layer.n_bottoms
            if not (lo <= 1 and (hi is None or hi >= 1)) or layer.num_tops() != 1:
                raise ValueError(f"{what}: a {layer.type} does not take one bottom to one top, as a block needs")
            n_blobs = len(layer.blob_names())
            if len(layer.param) > n_blobs:
                raise ValueError(f"{what}: param lists {len(layer.param)} entries but a {layer.type} has "
                                 f"{n_blobs} learnable blob(s): {layer.blob_names() or 'none'}")
        return layers

    @model_validator(mode="after")
    def _own_fields(self):
        if self.param:
            raise FieldError("a Residual has no learnable blobs of its own; give `param:` on the inner layers", key="param")
        if self.activation is not None:
            try:
                cls = lookup(self.activation)
                act = cls.model_validate({"name": "act", "type": self.activation})
            except KeyError:
                raise FieldError(f"activation '{self.activation}' is not a registered layer type", key="activation") from None
            except ValidationError:
                raise FieldError(f"activation '{self.activation}' needs parameters; add it as a layer after "
                                 "the block and set activation: null", key="activation") from None
            if act.blob_names():
                raise FieldError(f"activation '{self.activation}' has learnable blobs; add it as a layer after "
                                 "the block and set activation: null", key="activation")
            self._act = act
        return self

    # --- shape inference, chained through the inner layers

    def _chain(self, key: str, x: Blob) -> list[Step]:
        steps: list[Step] = []
        for i, layer in enumerate(getattr(self, key)):
            try:
                out = layer.infer([x])
                if len(out) != 1:
                    raise ShapeError(f"makes {len(out)} tops; a block needs exactly one")
            except ShapeError as e:  # located at the inner layer's own key (body[0].kernel_size)
                where = (key, i) + ((e.key,) if isinstance(e.key, str) else tuple(e.key or ()))
                raise ShapeError(f"{key} layer '{layer.name}' ({layer.type}): {e}", key=where) from None
            steps.append((layer, x, out[0]))
            x = out[0]
        return steps

    def _plan(self, bottoms: list[Blob]) -> tuple[list[Step], list[Step], Blob]:
        """Inner steps of both paths, and the summed blob; ShapeError if the paths disagree."""
        (x,) = bottoms
        body = self._chain("body", x)
        short = self._chain("shortcut", x)
        y, s = body[-1][2], (short[-1][2] if short else x)
        if y != s:
            raise ShapeError(f"body output {y} and shortcut output {s} cannot be added; they must match: "
                             f"add a projection shortcut{self._hint(x, y)}", key="shortcut")
        return body, short, y

    def _hint(self, x: Blob, y: Blob) -> str:
        if self.shortcut or len(x.shape) != 3 or len(y.shape) != 3 or y.shape[1] < 1 or x.shape[1] % y.shape[1]:
            return " (e.g. a 1x1 Convolution + BatchNorm)"
        stride = x.shape[1] // y.shape[1]
        return (f", e.g. shortcut: [{{name: proj, type: Convolution, num_output: {y.shape[0]}, kernel_size: 1, "
                f"stride: {stride}}}] (+ BatchNorm)")

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        _, _, y = self._plan(bottoms)
        return self._act.infer([y]) if self._act is not None else [y]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        body, short, y = self._plan(bottoms)
        act = self._act.build([y]) if self._act is not None else None
        return ResidualBlock(_sequence(body), _sequence(short), act)

    def fill(self, module: nn.Module) -> None:
        for key in ("body", "shortcut"):
            seq = getattr(module, key)
            for layer in getattr(self, key):
                layer.fill(seq._modules[layer.name])

    def blob_names(self) -> list[str]:
        # The inner layers' own `param:` lists carry their multipliers (param_entries);
        # the block's `param:` stays empty.
        return []

    def param_entries(self) -> list[tuple[str, ParamSpec | None]]:
        """(path inside the block, ``param:`` entry or None) for every inner learnable blob,
        e.g. ``("body.conv1.weight", ParamSpec(lr_mult=1))``."""
        return [(f"{key}.{layer.name}.{path}", ps)
                for key in ("body", "shortcut") for layer in getattr(self, key) for path, ps in _entries(layer)]

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        body, short, y = self._plan(bottoms)
        inner = sum(layer.flops([x], [out]) for layer, x, out in body + short)
        act = self._act.flops([y], tops) if self._act is not None else 0
        return inner + math.prod(y.shape) + act
