"""Caffe layer types -> netcfg layer fields: each type's ``*_param`` mapped to flat fields.

A table says, per Caffe type, which ``*_param`` message it reads and what becomes
of each of its fields: copied under the same name (``SAME``), renamed, dropped
because it only picks an implementation (``ENGINE``: engine, force_nd_im2col), or
accepted only at Caffe's default because netcfg has no counterpart (``only``): a
file that uses such an option is refused at that line rather than imported with a
different meaning. Fillers keep the fields their type reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from netcfg.caffe.proto import Obj
from netcfg.errors import did_you_mean

__all__ = ["Converted", "convert_params", "no_param_note", "LAYER_TYPES", "filler"]

Pos = tuple[int, int]


@dataclass
class Converted:
    """netcfg fields of one layer, with the .prototxt position each came from."""

    fields: dict[str, Any] = field(default_factory=dict)
    pos: dict[str, Pos] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    batchless: bool = False  # a Parameter whose Caffe blob has no batch axis (no leading 1)

    def set(self, key: str, value: Any, pos: Pos) -> None:
        self.fields[key] = value
        self.pos[key] = pos


SAME = "="
ENGINE = "engine"  # picks an implementation (CAFFE/CUDNN, im2col): no effect on results


@dataclass(frozen=True)
class only:
    """Accept a Caffe field only at this value (netcfg has no counterpart for others)."""

    value: Any
    why: str


_CONV = {k: SAME for k in ("num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "pad_h", "pad_w",
                           "kernel_h", "kernel_w", "stride_h", "stride_w", "group")}
_CONV.update(weight_filler="filler", bias_filler="filler", engine=ENGINE, force_nd_im2col=ENGINE,
             axis=only(1, "netcfg convolves the axes after the channel axis 1"))
_AFFINE = {"base": SAME, "scale": SAME, "shift": SAME}
_LOSS = {"ignore_label": SAME, "normalization": SAME, "normalize": "normalize"}

# Caffe type -> {param message: {caffe field: action}}; the netcfg type has the same name.
LAYER_TYPES: dict[str, dict[str, dict[str, Any]]] = {
    "Convolution": {"convolution_param": _CONV},
    "Deconvolution": {"convolution_param": _CONV},
    "InnerProduct": {"inner_product_param": {
        "num_output": SAME, "bias_term": SAME, "axis": SAME, "weight_filler": "filler", "bias_filler": "filler",
        "transpose": only(False, "netcfg stores InnerProduct weights as (num_output, inputs)")}},
    "Pooling": {"pooling_param": {
        **{k: SAME for k in ("pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h",
                             "stride_w", "global_pooling", "round_mode")},
        "pool": "pool", "engine": ENGINE}},
    "SPP": {"spp_param": {"pyramid_height": SAME, "pool": "pool", "engine": ENGINE}},
    "ReLU": {"relu_param": {"negative_slope": SAME, "engine": ENGINE}},
    "PReLU": {"prelu_param": {"filler": "filler", "channel_shared": SAME}},
    "ELU": {"elu_param": {"alpha": SAME}},
    "Sigmoid": {"sigmoid_param": {"engine": ENGINE}},
    "TanH": {"tanh_param": {"engine": ENGINE}},
    "AbsVal": {},
    "BNLL": {},
    "Swish": {"swish_param": {"beta": SAME}},
    "Clip": {"clip_param": {"min": SAME, "max": SAME}},
    "Threshold": {"threshold_param": {"threshold": SAME}},
    "Power": {"power_param": {"power": SAME, "scale": SAME, "shift": SAME}},
    "Exp": {"exp_param": _AFFINE},
    "Log": {"log_param": _AFFINE},
    "Softmax": {"softmax_param": {"axis": SAME, "engine": ENGINE}},
    "LRN": {"lrn_param": {"local_size": SAME, "alpha": SAME, "beta": SAME, "norm_region": SAME, "k": SAME,
                          "engine": ENGINE}},
    "MVN": {"mvn_param": {"normalize_variance": SAME, "across_channels": SAME, "eps": SAME}},
    "Dropout": {"dropout_param": {"dropout_ratio": SAME, "scale_train": only(
        True, "netcfg's Dropout scales by 1 / (1 - ratio) while training (Caffe's scale_train: true)")}},
    "BatchNorm": {"batch_norm_param": {"use_global_stats": SAME, "moving_average_fraction": SAME, "eps": SAME}},
    "Scale": {"scale_param": {"axis": SAME, "num_axes": SAME, "bias_term": SAME, "filler": "filler",
                              "bias_filler": "filler"}},
    "Bias": {"bias_param": {"axis": SAME, "num_axes": SAME, "filler": "filler"}},
    "Concat": {"concat_param": {"axis": SAME, "concat_dim": "axis"}},
    "Slice": {"slice_param": {"axis": SAME, "slice_point": "list", "slice_dim": "axis"}},
    "Eltwise": {"eltwise_param": {"operation": SAME, "coeff": "list", "stable_prod_grad": ENGINE}},
    "Parameter": {"parameter_param": {"shape": "parameter_shape"}},
    "BatchReindex": {},
    "Split": {},
    "Silence": {},
    "Flatten": {"flatten_param": {"axis": SAME, "end_axis": SAME}},
    "Reduction": {"reduction_param": {"operation": SAME, "axis": SAME, "coeff": SAME}},
    "Reshape": {"reshape_param": {"shape": "blob_shape", "axis": SAME, "num_axes": SAME}},
    "Crop": {"crop_param": {"axis": SAME, "offset": "list"}},
    "Tile": {"tile_param": {"axis": SAME, "tiles": SAME}},
    "Embed": {"embed_param": {"num_output": SAME, "input_dim": SAME, "bias_term": SAME, "weight_filler": "filler",
                              "bias_filler": "filler"}},
    "ArgMax": {"argmax_param": {"out_max_val": SAME, "top_k": SAME, "axis": SAME}},
    "Accuracy": {"accuracy_param": {"top_k": SAME, "axis": SAME, "ignore_label": SAME}},
    "SoftmaxWithLoss": {"softmax_param": {"axis": SAME, "engine": ENGINE}, "loss_param": _LOSS},
    "SigmoidCrossEntropyLoss": {"loss_param": _LOSS},
    "EuclideanLoss": {},
    "MultinomialLogisticLoss": {},
    "InfogainLoss": {"infogain_loss_param": {"source": "infogain", "axis": SAME}, "loss_param": _LOSS},
    "HingeLoss": {"hinge_loss_param": {"norm": SAME}},
    "ContrastiveLoss": {"contrastive_loss_param": {"margin": SAME, "legacy_version": SAME}},
}

# FillerParameter fields each Caffe filler reads; the rest have no effect in Caffe.
_FILLER_FIELDS = {"constant": ("value",), "uniform": ("min", "max"), "gaussian": ("mean", "std", "sparse"),
                  "positive_unitball": (), "xavier": ("variance_norm",), "msra": ("variance_norm",), "bilinear": ()}


def filler(f: Obj) -> dict[str, Any]:
    """A Caffe FillerParameter as a netcfg filler mapping (Caffe's default type is constant)."""
    kind = f.get("type", "constant")
    if kind not in _FILLER_FIELDS:
        raise f.error(f"unknown filler type '{kind}'", "type", hint=did_you_mean(kind, _FILLER_FIELDS))
    out: dict[str, Any] = {"type": kind}
    for key in _FILLER_FIELDS[kind]:
        if f.has(key):
            value = f.get(key)
            if key == "sparse" and value < 0:  # Caffe's default -1: dense
                continue
            out[key] = value
    return out


def _one(values: list) -> Any:
    return values[0] if len(values) == 1 else values


def convert_params(layer: Obj, caffe_type: str, batchless: Mapping[str, list[int]] = MappingProxyType({})) -> Converted:
    """netcfg fields for the ``*_param`` messages ``caffe_type`` reads, from ``layer``;
    ``batchless``: top -> shape of the Parameter layers before it whose blob has no batch axis."""
    out = Converted()
    for param, table in LAYER_TYPES[caffe_type].items():
        p: Obj | None = layer.get(param)
        if p is None:
            continue
        for key in p.names():
            action = table[key] if key in table else only(None, "")
            values = p.all(key)
            value = _one(values)
            at = p.pos(key)
            if action == SAME:
                _check_dims(p, key, values)
                out.set(key, value, at)
            elif action == ENGINE:
                continue
            elif action == "list":
                out.set(key, values, at)
            elif action == "filler":
                out.set(key, filler(value), at)
            elif action in ("axis",):  # deprecated aliases: concat_dim, slice_dim
                if p.has("axis"):
                    raise p.error(f"give either axis or {key} (deprecated), not both", key)
                out.set("axis", value, at)
            elif action == "pool":
                if value == "STOCHASTIC":
                    raise p.error("netcfg has no STOCHASTIC pooling (a training-time random pick, Zeiler & "
                                  "Fergus 2013)", key, hint="use MAX or AVE")
                out.set(key, value, at)
            elif action == "normalize":  # deprecated bool: true is VALID, false BATCH_SIZE
                if not p.has("normalization"):
                    out.set("normalization", "VALID" if value else "BATCH_SIZE", at)
            elif action == "infogain":
                out.set("infogain", _infogain_matrix(p, key, value), at)
            elif action == "parameter_shape":
                dims = value.all("dim")
                # (1, ...): the blob of a batch of 1; else a blob without a batch axis, which a Scale
                # or Bias reads at Caffe's axis 1: netcfg repeats either over the batch
                out.batchless = not dims or dims[0] != 1
                out.set(key, dims if out.batchless else dims[1:], at)
            elif action == "blob_shape":
                out.set(key, {"dim": value.all("dim")}, at)
            elif isinstance(action, only):
                if value != action.value:
                    why = action.why or f"netcfg's {caffe_type} has no counterpart"
                    raise p.error(f"{key}: {value} is not supported ({why})", key)
            else:
                raise AssertionError(f"bad table entry {caffe_type}.{param}.{key}: {action!r}")
    if caffe_type in ("Scale", "Bias") and len(layer.all("bottom")) == 2:
        _second_bottom_axis(layer, caffe_type, out, batchless)
    if caffe_type == "Parameter" and not layer.has("bottom"):
        out.notes.append("Caffe's Parameter has no bottom; netcfg's reads the previous layer's top for its batch size")
    if out.batchless:
        out.notes.append(f"Caffe's blob {out.fields['shape']} has no batch axis; netcfg's top repeats it over the "
                         "batch, as a Scale or Bias at Caffe's axis 1 reads it")
    if caffe_type == "Reduction":
        _reduction_axis(layer, out)
    if caffe_type == "LRN" and out.fields.get("norm_region") == "WITHIN_CHANNEL" and out.fields.get("k", 1) != 1:
        # Caffe's WITHIN_CHANNEL adds 1 whatever k says (lrn_layer.cpp); netcfg's adds k
        out.notes.append(f"k: {out.fields.pop('k')} dropped: Caffe's WITHIN_CHANNEL LRN ignores k and adds 1, "
                         "as netcfg's does with its default k: 1")
        out.pos.pop("k", None)
    return out


def _check_dims(p: Obj, key: str, values: list) -> None:
    if key in ("pad", "kernel_size", "stride", "dilation") and len(values) > 2:
        raise p.error(f"{key} has {len(values)} values: netcfg's convolutions are 1-d or 2-d", key, index=2)


def _second_bottom_axis(layer: Obj, caffe_type: str, out: Converted, batchless: Mapping[str, list[int]]) -> None:
    """Caffe's Scale and Bias line a second bottom up at axis 1 unless told; netcfg's blobs
    all have a batch axis, so only Caffe's axis: 0 keeps its meaning, or axis: 1 where the
    second bottom is a Parameter's blob without a batch axis (which netcfg repeats over the
    batch); a scalar one Caffe applies whatever the axis."""
    p = layer.get(f"{caffe_type.lower()}_param")
    axis = p.get("axis", 1) if p is not None else 1
    second = layer.all("bottom")[1]
    lines_up = 1 if second in batchless else 0
    if axis != lines_up and batchless.get(second) != []:
        where = p if p is not None and p.has("axis") else layer
        what = (f"the second bottom '{second}' is a Parameter's blob without a batch axis, which netcfg repeats "
                "over the batch, so it lines up with the input from Caffe's axis 1" if lines_up else
                "in netcfg every blob has a batch axis, so the second bottom lines up with the input from axis 0")
        raise where.error(f"{caffe_type} with a second bottom and axis {axis}: {what}", "axis" if where is p else "bottom",
                          hint="Caffe's default axis: 1 there" if lines_up else
                          "Caffe's axis: 0 form imports, and axis: 1 over a Parameter whose shape has no leading 1")
    out.fields.pop("axis", None)


def _infogain_matrix(p: Obj, key: str, rel: str) -> list[list[float]]:
    """Caffe's infogain_loss_param.source, a BlobProto of K x K values, as netcfg's inline matrix."""
    import numpy as np

    from netcfg.caffe.blobproto import WireError, read_blob
    from netcfg.caffe.data import find_caffe_path

    path = find_caffe_path(rel, Path(p.file).parent)
    if path is None:
        raise p.error(f"the infogain matrix '{rel}' is not found (looked beside the .prototxt, in each directory "
                      "above it and in the current one, as Caffe runs from its root)", key)
    try:
        data, shape = read_blob(path.read_bytes())
    except (OSError, WireError) as e:
        raise p.error(f"cannot read the infogain matrix '{path}': {e}", key) from None
    k = math.isqrt(data.size)
    if not data.size or k * k != data.size:
        raise p.error(f"the infogain matrix '{path}' holds {data.size} values (shape {shape}), not K x K", key)
    return [[float(str(v)) for v in row] for row in data.reshape(k, k).astype(np.float32)]


def _reduction_axis(layer: Obj, out: Converted) -> None:
    """Caffe's Reduction defaults to axis 0, a sum over the batch too; netcfg keeps the batch.
    As a loss (a loss_weight on its top), SUM, ASUM and SUMSQ per sample give the same loss,
    since netcfg sums a weighted top over the batch; any other use is refused."""
    p = layer.get("reduction_param")
    axis = p.get("axis", 0) if p is not None else 0
    if axis != 0:
        return
    op = p.get("operation", "SUM") if p is not None else "SUM"
    where = p if p is not None and p.has("axis") else layer
    key = "axis" if where is p else "type"
    if op == "MEAN" or not any(layer.all("loss_weight")):
        why = ("its MEAN at axis 0 divides by the batch size too" if op == "MEAN" else
               "its top is no loss (no loss_weight) whose sum over the batch would give the same number")
        raise where.error(f"Reduction over axis 0 (Caffe's default) reduces over the batch, which netcfg keeps; "
                          f"here {why}", key,
                          hint="reduce each sample with reduction_param { axis: 1 } and read the per-sample values")
    out.set("axis", 1, where.pos(key))
    out.notes.append(f"axis 0 ({op} over the batch too) became axis 1, one value per sample: as a loss, netcfg "
                     "sums them over the batch, the same number")


def no_param_note(layer: Obj, caffe_type: str, name: str) -> list[str]:
    """Notes for ``*_param`` messages this type does not read (Caffe ignores them too)."""
    own = set(LAYER_TYPES.get(caffe_type, {}))
    return [f"layer '{name}' ({caffe_type}): {key} is not read by {caffe_type} layers in Caffe either; dropped"
            for key in layer.names() if key.endswith("_param") and key not in own]

