"""LayerSpec (the fields every layer has) and the checks layer files share; the
registry and ``@register`` are in ``_registry.py``.

A layer type is one pydantic class with ``type: Literal["Name"]``, decorated with
``@register``. It says how many bottoms and tops it takes, infers its output
shapes from its input shapes (per sample, no batch dimension), and builds its
``torch.nn.Module``. The module's ``forward(*bottoms)`` returns one tensor, or a
tuple with one tensor per top.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BeforeValidator, Field, PrivateAttr, field_validator, model_validator

from netcfg.errors import FieldError, ShapeError
from netcfg.spec import Spec

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "Blob", "LayerSpec", "ParamSpec", "Rule", "FillerSpec",
    "StrList", "RuleList", "IntPair", "check_rank", "check_float", "pair",
    "FLOAT_DTYPES", "INT_DTYPES",
]


class Blob(NamedTuple):
    """What shape inference knows of a blob: per-sample shape and dtype."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __str__(self) -> str:
        dims = "x".join(map(str, self.shape)) or "scalar"
        return dims if self.dtype == "float32" else f"{dims} {self.dtype}"


def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, (str, int, float, dict)) else v


StrList = Annotated[list[str], BeforeValidator(_as_list, json_schema_input_type=str | list[str])]
FloatList = Annotated[list[float], BeforeValidator(_as_list, json_schema_input_type=float | list[float])]
# an int or [h, w]; Caffe's repeated kernel_size/stride/pad fields
IntPair = Annotated[list[Annotated[int, Field(ge=0)]],
                    BeforeValidator(_as_list, json_schema_input_type=Annotated[int, Field(ge=0)] | list[Annotated[int, Field(ge=0)]]),
                    Field(min_length=1, max_length=2)]


_MAX_SIZE = 2**31 - 1  # torch's convolution and pooling kernels take 32-bit sizes


WEIGHT_NORM_DOC = ("reparameterise the weight as g * v / |v| (Salimans & Kingma 2016); the learnable blobs, "
                   "in param: order, become g, v and bias")


def check_weight_norm_params(spec) -> None:
    """With weight_norm the blobs are g, v, bias: two ``param:`` entries, written in Caffe's
    (weight, bias) habit, would give the bias's multipliers to v. Refuse the ambiguity."""
    if spec.weight_norm and spec.bias_term and len(spec.param) == 2:
        raise FieldError("with weight_norm: true the learnable blobs are g, v and bias, so two param entries "
                         "would set v's multipliers where Caffe's habit means the bias's; list three, e.g. "
                         "[{lr_mult: 1}, {lr_mult: 1}, {lr_mult: 2, decay_mult: 0}]", key="param")


def pair(v: list[int] | None, h: int | None = None, w: int | None = None, default: int = 0) -> tuple[int, int]:
    """An explicit _h or _w overrides its axis of the repeated field; one value means square.
    (Caffe refuses a repeated field beside _h/_w, or one of _h/_w alone; netcfg reads them
    as overrides, so an axis without its own _h/_w keeps the repeated field's value.)"""
    if not v:
        hv, wv = default, default
    else:
        hv, wv = (v[0], v[0]) if len(v) == 1 else (v[0], v[1])
    out = (h if h is not None else hv, w if w is not None else wv)
    if max(out) > _MAX_SIZE:  # valid YAML, but torch would fail on it mid-training
        raise ShapeError(f"{max(out)} is too large for a kernel size, stride, pad or dilation (at most {_MAX_SIZE})")
    return out


def check_one_axis(layer: LayerSpec, keys: tuple[str, ...] = ("kernel_size", "stride", "pad", "dilation")) -> None:
    """A (C, L) input has one spatial axis: a second value ([h, w], or a ``*_w`` field)
    would be silently unused, so it is an error."""
    for key in keys:
        v = getattr(layer, key, None)
        if isinstance(v, list) and len(v) > 1:
            raise ShapeError(f"{key} {v} has two values, but a (C, L) input has one spatial axis: give one", key=key)
        if getattr(layer, f"{key.removesuffix('_size')}_w", None) is not None:
            raise ShapeError(f"{key.removesuffix('_size')}_w is set, but a (C, L) input has one spatial axis: use "
                             f"{key}", key=f"{key.removesuffix('_size')}_w")


FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8")


def check_float(layer: LayerSpec, blob: Blob, what: str = "input") -> None:
    """Refuse an integer blob where real numbers are needed (a label wired in by mistake, or
    images declared as they are stored, uint8)."""
    if blob.dtype not in FLOAT_DTYPES:
        why = ("is a label wired in by mistake?" if blob.dtype != "uint8" or not blob.shape else
               f"images are fed as float32 (the loader converts uint8 pixels and applies the data's scale): "
               f"declare the input as {list(blob.shape)}, not {blob.dtype}")
        raise ShapeError(f"{layer.type} needs a floating-point {what}, got {blob.dtype} (shape {list(blob.shape)}); "
                         + why, key="bottom")


def check_rank(layer: LayerSpec, blob: Blob, ranks: tuple[int, ...], what: str = "input") -> None:
    if len(blob.shape) not in ranks:
        want = " or ".join(f"{r}-d" for r in ranks)
        raise ShapeError(f"{layer.type} expects a {want} {what} per sample (no batch dimension), got shape {list(blob.shape)}")


class Rule(Spec):
    """Caffe's NetStateRule: a layer is kept when an include rule matches (or none is
    given) and no exclude rule matches."""

    phase: Literal["TRAIN", "TEST"] | None = Field(None, description="match only in this phase")
    stage: StrList = Field(default_factory=list, description="every stage listed must be active")
    not_stage: StrList = Field(default_factory=list, description="no stage listed may be active")
    min_level: int | None = Field(None, description="the net's level must be >= this")
    max_level: int | None = Field(None, description="the net's level must be <= this")

    def matches(self, phase: str, stages: set[str], level: int = 0) -> bool:
        return (
            (self.phase is None or self.phase == phase)
            and all(s in stages for s in self.stage)
            and not any(s in stages for s in self.not_stage)
            and (self.min_level is None or level >= self.min_level)
            and (self.max_level is None or level <= self.max_level)
        )


RuleList = Annotated[list[Rule], BeforeValidator(_as_list, json_schema_input_type=Rule | list[Rule])]


class ParamSpec(Spec):
    """Caffe's ParamSpec: per learnable blob, in the layer's blob order (weight, bias)."""

    lr_mult: float = Field(1.0, ge=0, description="learning-rate multiplier; 0 freezes the blob")
    decay_mult: float = Field(1.0, ge=0, description="weight-decay multiplier")
    name: str | None = Field(None, min_length=1, description="blobs with the same name share one tensor")


class FillerSpec(Spec):
    """Caffe's FillerParameter. Defaults are Caffe's."""

    type: Literal["constant", "uniform", "gaussian", "xavier", "msra", "bilinear", "positive_unitball", "orthogonal", "lecun"] = Field(
        "constant", description="initialisation scheme")
    value: float = Field(0.0, description="constant: the value")
    min: float = Field(0.0, description="uniform: lower bound")
    max: float = Field(1.0, description="uniform: upper bound")
    mean: float = Field(0.0, description="gaussian: mean")
    std: float = Field(1.0, gt=0, description="gaussian: standard deviation")
    sparse: int | None = Field(None, ge=0, description="gaussian: keep each weight with probability sparse / "
                                                       "outputs, zero the rest (Caffe's sparse Gaussian)")
    variance_norm: Literal["FAN_IN", "FAN_OUT", "AVERAGE"] = Field(
        "FAN_IN", description="xavier/msra/lecun: scale by fan_in, fan_out or their average")
    gain: float = Field(1.0, gt=0, description="orthogonal: gain")

    @field_validator("variance_norm", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _bounds_in_order(self):
        if self.type == "uniform" and self.min > self.max:
            raise FieldError(f"uniform filler: min {self.min} is above max {self.max}", key="min")
        return self


class LayerSpec(Spec):
    """Fields every layer has."""

    name: str = Field(..., min_length=1, description="unique layer name; dots nest it (stage1.conv1)")
    type: str = Field(..., description="layer type")
    bottom: StrList | None = Field(None, description="input blob names; default: the previous layer's top")
    top: StrList | None = Field(None, description="output blob names; default: the layer's name")
    include: RuleList = Field(default_factory=list, description="keep the layer when any rule matches")
    exclude: RuleList = Field(default_factory=list, description="drop the layer when any rule matches")
    loss_weight: FloatList | None = Field(None, description="weight of each top in the total loss")
    param: Annotated[list[ParamSpec], BeforeValidator(_as_list, json_schema_input_type=ParamSpec | list[ParamSpec])] = Field(default_factory=list, description="lr_mult/decay_mult/name per learnable blob")

    _path: tuple = PrivateAttr(())

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError(f"layer name {v!r} contains whitespace; use _ or - instead")
        if v.startswith(".") or v.endswith(".") or ".." in v:
            raise ValueError(f"layer name {v!r} has an empty part between dots")
        return v  # key path in the net file, for locating errors

    # --- what the type declares (class-level, not config) ---
    n_bottoms: ClassVar[tuple[int, int | None]] = (1, 1)  # min, max (None: any)
    n_tops: ClassVar[tuple[int, int | None]] = (1, 1)
    is_loss: ClassVar[bool] = False   # default loss_weight 1; output is a scalar
    reduces_batch: ClassVar[bool] = False  # output has no batch dimension (losses, Accuracy)
    reads_batch_means: ClassVar[bool] = False  # may read such an output (Eltwise adds losses, Silence drops one)
    differentiable: ClassVar[bool] = True  # False: no gradient flows back through the tops (Accuracy, Threshold)
    # Sample configurations for the registry-wide tests (tests/test_registry.py). Each
    # dict has `inputs` (the net file's `inputs:` form, per-sample shapes, e.g.
    # {"x": [3, 8, 8]} or {"ids": {"shape": [5], "dtype": "int64"}}) and the layer's
    # own fields; name, type and bottom (the inputs, in order) are filled by the test,
    # and `top` may be given for multi-top layers. Cover the main options in 1-3 dicts.
    examples: ClassVar[list[dict]] = []

    def blob_names(self) -> list[str]:
        """Names of the learnable blobs, in ``param:`` order."""
        return []

    def param_entries(self) -> list[tuple[str, ParamSpec | None]]:
        """(module path, its ``param:`` entry or None) for every learnable blob, in order.
        Container layers (Residual) override this to hand out their inner layers' entries."""
        names = self.blob_names()
        return [(b, self.param[i] if i < len(self.param) else None) for i, b in enumerate(names)]

    def num_tops(self) -> int:
        """How many tops this layer produces when ``top`` is not given."""
        return 1

    @abstractmethod
    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        """Output blobs from input blobs; raise ShapeError on a mismatch."""

    @abstractmethod
    def build(self, bottoms: list[Blob]) -> nn.Module:
        """The torch module for this layer, for these input shapes."""

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        """Floating-point operations per sample (a multiply-add counts 2)."""
        return 0

    def label_classes(self, bottoms: list[Blob]) -> tuple[int, int, int | None] | None:
        """(which bottom holds integer class labels, how many classes, ignore_label) for a
        layer that reads class indices (or an Embed's ids: how many rows its table has), so
        the data's labels can be checked against it."""
        return None

    def min_batch(self, bottoms: list[Blob], phase: str) -> int:
        """The fewest samples a batch must hold for this layer to run in ``phase`` (TRAIN/TEST)."""
        return 1

    def fill(self, module: nn.Module) -> None:
        """Apply ``weight_filler``/``bias_filler`` if the layer has them."""
        from netcfg.layers.fillers import fill_module

        fill_module(self, module)

    def loss_weights(self, n_tops: int) -> list[float]:
        if self.loss_weight is not None:
            return list(self.loss_weight)
        return [1.0 if self.is_loss else 0.0] * n_tops

    def check_loss_tops(self, tops: list[Blob], weights: list[float]) -> None:
        """A weighted top must carry a gradient: an integer top (ArgMax's indices) or a
        non-differentiable layer's (Accuracy's) has none, and Caffe refuses to backpropagate
        through it; here the loss would only have gained a constant, or, alone, failed in backward."""
        for i, (top, w) in enumerate(zip(tops, weights)):
            if not w:
                continue
            if top.dtype not in FLOAT_DTYPES:
                why = f"top {i} is {top.dtype} (shape {list(top.shape)}), which carries no gradient"
            elif not self.differentiable:
                why = f"no gradient flows back through {self.type}"
            else:
                continue
            raise ShapeError(f"loss_weight {w:g} on a top that cannot be learned from: {why}; remove the "
                             "loss_weight (or set it to 0)", key="loss_weight")


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def __getattr__(name: str):
    """``from netcfg.layers.base import register`` (what plugins were taught before the registry
    moved to ``_registry.py``) keeps working."""
    if name in ("AnyLayer", "RegistryError", "lookup", "register", "registry"):
        from netcfg.layers import _registry

        return getattr(_registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
