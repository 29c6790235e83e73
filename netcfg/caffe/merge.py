"""Rewrites on the converted layer list: BatchNorm + Scale pairs folded, duplicate names made unique.

Caffe splits batch normalisation in two layers: BatchNorm (statistics only; its three
blobs are running sums that Caffe's solver must not touch, hence the usual three
``param { lr_mult: 0 }``) and a Scale with ``bias_term: true`` (the learned affine).
netcfg's BatchNorm is both, so a BatchNorm whose output goes straight into such a
Scale becomes one BatchNorm with ``affine`` on, the Scale's fillers and ParamSpecs;
a BatchNorm alone gets ``affine: false``. Either way the BatchNorm's own ``param``
entries are dropped: netcfg updates the statistics without the optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netcfg.caffe.inputs import rule_phases
from netcfg.caffe.proto import Obj

__all__ = ["Layer", "merge_batchnorm_scale", "unique_names"]

Pos = tuple[int, int]


@dataclass
class Layer:
    """A converted layer before it is written out: netcfg fields and their .prototxt positions."""

    name: str
    type: str
    bottom: list[str]
    top: list[str]
    obj: Obj
    fields: dict[str, Any] = field(default_factory=dict)   # the type's own netcfg fields
    common: dict[str, Any] = field(default_factory=dict)   # loss_weight, param, include, exclude
    pos: dict[str, Pos] = field(default_factory=dict)      # netcfg key -> where in the .prototxt

    def as_dict(self) -> dict[str, Any]:
        def one(v):
            return v[0] if len(v) == 1 else v

        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.bottom or self.type != "Parameter":  # Caffe's Parameter has none: netcfg's reads the previous top
            out["bottom"] = one(self.bottom)
        if self.top:
            out["top"] = one(self.top)
        common = {k: one(v) if k in ("include", "exclude") else v for k, v in self.common.items()}
        return {**out, **self.fields, **common}


def merge_batchnorm_scale(layers: list[Layer]) -> dict[str, str]:
    """Fold each BatchNorm + Scale pair in place; returns {Scale layer name: BatchNorm layer name}."""
    merged: dict[str, str] = {}
    dropped: set[int] = set()
    for i, bn in enumerate(layers):
        if bn.type != "BatchNorm" or i in dropped:
            continue
        bn.common.pop("param", None)
        j = _scale_partner(layers, i)
        if j is None:
            bn.fields["affine"] = False
            bn.pos["affine"] = bn.pos.get("type", (bn.obj.line, bn.obj.col))
            continue
        scale = layers[j]
        bn.top = scale.top
        bn.pos["top"] = scale.pos.get("top", bn.pos.get("top"))
        for src, dst in (("filler", "weight_filler"), ("bias_filler", "bias_filler")):
            if src in scale.fields:
                bn.fields[dst] = scale.fields[src]
                bn.pos[dst] = scale.pos[src]
        if "param" in scale.common:
            bn.common["param"] = scale.common["param"]
            bn.pos["param"] = scale.pos["param"]
        merged[scale.name] = bn.name
        dropped.add(j)
    layers[:] = [layer for k, layer in enumerate(layers) if k not in dropped]
    return merged


def _scale_partner(layers: list[Layer], i: int) -> int | None:
    """Index of the Scale layer that is the only reader of BatchNorm ``i``'s output, if any."""
    bn = layers[i]
    if len(bn.top) != 1:
        return None
    blob = bn.top[0]
    j = next((k for k in range(i + 1, len(layers)) if blob in layers[k].bottom or blob in layers[k].top), None)
    if j is None:
        return None
    scale = layers[j]
    if scale.type != "Scale" or scale.bottom != [blob] or len(scale.top) != 1:
        return None
    f = scale.fields
    if f.get("axis", 1) != 1 or f.get("num_axes", 1) != 1 or not f.get("bias_term"):
        return None  # not a per-channel scale and shift: keep both layers
    if "loss_weight" in scale.common or any(scale.common.get(k) != bn.common.get(k) for k in ("include", "exclude")):
        return None
    if scale.top[0] != blob and any(blob in later.bottom for later in layers[j + 1:]):
        return None  # someone still reads the unscaled blob
    return j


def unique_names(layers: list[Layer], notes: list[str]) -> dict[str, str]:
    """Rename layers whose name an earlier layer active in the same phase already has.

    Caffe allows duplicate layer names (they only matter for weight files); netcfg
    names modules by layer. Returns {new name: Caffe name}."""
    taken = {layer.name for layer in layers}
    active: dict[str, list[set[str]]] = {}
    renamed: dict[str, str] = {}
    for layer in layers:
        phases = rule_phases(layer.common.get("include", []), layer.common.get("exclude", []))
        if any(phases & other for other in active.get(layer.name, [])):
            k = 2
            while f"{layer.name}_{k}" in taken:
                k += 1
            new = f"{layer.name}_{k}"
            notes.append(f"layer '{layer.name}' ({layer.type}) at line {layer.obj.line} renamed '{new}': an earlier "
                         "layer active in the same phase has that name (netcfg names modules by layer)")
            taken.add(new)
            renamed[new] = layer.name
            layer.name = new
        active.setdefault(layer.name, []).append(phases)
    return renamed
