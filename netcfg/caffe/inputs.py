"""Caffe's data layers and deploy inputs -> netcfg's ``inputs:`` (per-sample shapes).

netcfg nets take their data as named inputs; the solver's ``data:`` section says
where batches come from. So Input, Data, ImageData, HDF5Data, MemoryData and
DummyData layers (and the deploy form ``input:`` + ``input_shape``/``input_dim``)
become inputs, and what a Data layer says about batches (batch_size, scale,
mean_value, crop_size, mirror, the database path) is kept for the solver importer.

A Data layer's image shape is not in the .prototxt (Caffe reads it from the
database). It comes from ``--input NAME=C,H,W``, from the data set given with
``--data``, or, for Caffe's own example databases (MNIST, CIFAR-10, ImageNet), from
the database name, with a note saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from netcfg.caffe.proto import Obj
from netcfg.errors import ConfigError, ConfigErrors

__all__ = ["DATA_TYPES", "DataLayer", "data_layer", "deploy_inputs", "resolve_inputs", "rule_phases", "InputShape"]

DATA_TYPES = ("Input", "Data", "ImageData", "HDF5Data", "MemoryData", "DummyData")
_LABELLED = ("Data", "ImageData", "MemoryData")  # a second top is the integer class label
# Caffe's example databases and the per-sample image shape they hold (before crop_size)
_KNOWN_DATABASES = (("mnist_siamese", [2, 28, 28], "MNIST digit pairs stacked as 2 channels"),
                    ("mnist", [1, 28, 28], "MNIST"), ("cifar", [3, 32, 32], "CIFAR-10"),
                    ("ilsvrc12", [3, 256, 256], "ImageNet resized to 256x256"),
                    ("imagenet", [3, 256, 256], "ImageNet resized to 256x256"))


@dataclass
class InputShape:
    """A per-sample shape and dtype, with where it came from."""

    shape: list[int]
    dtype: str = "float32"
    why: str = ""  # a note when the shape is an assumption

    def as_yaml(self) -> Any:
        return list(self.shape) if self.dtype == "float32" else {"shape": list(self.shape), "dtype": self.dtype}


@dataclass
class DataLayer:
    """One Caffe data layer: the tops it feeds and how its batches are made."""

    name: str
    type: str
    tops: list[str]
    obj: Obj
    include: list[dict] = field(default_factory=list)
    exclude: list[dict] = field(default_factory=list)
    batch_size: int | None = None
    source: str | None = None
    transform: dict[str, Any] = field(default_factory=dict)  # scale, mean_value, crop_size, mirror
    mean_file: str | None = None
    shapes: dict[str, InputShape] = field(default_factory=dict)  # what the layer itself declares
    unknown: ConfigError | None = None  # why the first top's shape is unknown, when the layer should say it

    def phases(self) -> set[str]:
        return rule_phases(self.include, self.exclude)


def rule_phases(include: list[dict], exclude: list[dict]) -> set[str]:
    """The phases a layer with these (netcfg) rules can be active in, judging by phase alone."""
    inc = {r.get("phase") for r in include} if include else {None}
    out = {"TRAIN", "TEST"} if None in inc else set(inc)
    return out - {r["phase"] for r in exclude if set(r) == {"phase"}}


def _per_sample(shape: Obj, what: str) -> list[int]:
    dims = shape.all("dim")
    if not dims:
        raise shape.error(f"{what}: a shape needs at least the batch dim")
    if any(d < 1 for d in dims):
        raise shape.error(f"{what}: every dim must be >= 1, got {dims}", "dim")
    return dims[1:]  # Caffe's first dim is the batch; netcfg's shapes are per sample


def _per_top(values: list, tops: list[str], obj: Obj, key: str) -> list:
    if len(values) == 1:
        return values * len(tops)
    if len(values) != len(tops):
        raise obj.error(f"{len(values)} {key} values for {len(tops)} tops: give one for all tops or one per top", key)
    return values


def data_layer(layer: Obj, name: str, kind: str, rules: tuple[list[dict], list[dict]]) -> DataLayer:
    """Read what a Caffe data layer feeds and declares."""
    tops = layer.all("top")
    if not tops:
        raise layer.error(f"{kind} layer '{name}' has no top: it feeds nothing", "type")
    d = DataLayer(name, kind, tops, layer, include=rules[0], exclude=rules[1])
    tp: Obj | None = layer.get("transform_param")
    if tp is not None:
        for key in ("scale", "crop_size", "mirror"):
            if tp.has(key):
                d.transform[key] = tp.get(key)
        if tp.has("mean_value"):
            d.transform["mean_value"] = tp.all("mean_value")
        d.mean_file = tp.get("mean_file")
    param = {"Data": "data_param", "ImageData": "image_data_param", "HDF5Data": "hdf5_data_param",
             "MemoryData": "memory_data_param", "DummyData": "dummy_data_param", "Input": "input_param"}[kind]
    p: Obj | None = layer.get(param)
    if p is not None:
        d.batch_size = p.get("batch_size")
        d.source = p.get("source")
        if kind == "Data":  # the deprecated transform fields inside data_param
            for key in ("scale", "crop_size", "mirror"):
                if p.has(key) and key not in d.transform:
                    d.transform[key] = p.get(key)
            d.mean_file = d.mean_file or p.get("mean_file")
    if kind in _LABELLED and len(tops) > 1:
        d.shapes[tops[1]] = InputShape([], "int64")
    if kind == "Input" and p is not None and p.has("shape"):
        for top, shape in zip(tops, _per_top(p.all("shape"), tops, p, "shape")):
            d.shapes[top] = InputShape(_per_sample(shape, f"input '{top}'"))
    elif kind == "DummyData" and p is not None:
        if p.has("shape"):
            for top, shape in zip(tops, _per_top(p.all("shape"), tops, p, "shape")):
                d.shapes[top] = InputShape(_per_sample(shape, f"input '{top}'"))
        elif p.has("num"):
            chw = [_per_top(p.all(k) or [1], tops, p, k) for k in ("channels", "height", "width")]
            for i, top in enumerate(tops):
                d.shapes[top] = InputShape([chw[0][i], chw[1][i], chw[2][i]])
    elif kind == "MemoryData" and p is not None:
        dims = {k: p.get(k, 0) for k in ("channels", "height", "width")}
        if all(dims.values()):
            d.shapes[tops[0]] = InputShape(list(dims.values()))
        else:  # Caffe's MemoryDataLayer refuses it too: "batch_size, channels, height, and width must be specified"
            bad = [f"{k}: 0" if p.has(k) else f"no {k}" for k, v in dims.items() if not v]
            d.unknown = p.error(f"MemoryData layer '{name}' has {' and '.join(bad)}: Caffe requires channels, "
                                "height and width in memory_data_param, each at least 1",
                                next((k for k in dims if p.has(k) and not dims[k]), None),
                                hint=f"add them, or give the shape: --input {tops[0]}=C,H,W (per sample, no batch)")
    elif kind == "ImageData" and p is not None and p.get("new_height") and p.get("new_width"):
        d.shapes[tops[0]] = InputShape([3 if p.get("is_color", True) else 1, p.get("new_height"), p.get("new_width")])
    if kind in ("Data", "ImageData") and tops[0] not in d.shapes and d.source:
        stem = PurePosixPath(d.source).name.lower()
        for key, shape, what in _KNOWN_DATABASES:
            if key in stem:
                d.shapes[tops[0]] = InputShape(list(shape), why=f"'{tops[0]}' is assumed to be {what}, "
                                               f"{list(shape)}, from the database name '{d.source}'")
                break
    crop = d.transform.get("crop_size")
    first = d.shapes.get(tops[0])
    if crop and first is not None and len(first.shape) == 3 and kind != "MemoryData":
        first.shape = [first.shape[0], crop, crop]
    return d


def deploy_inputs(net: Obj) -> dict[str, tuple[InputShape, tuple[int, int]]]:
    """The deploy form: ``input: "data"`` with ``input_shape { dim... }`` or four ``input_dim``s each."""
    names = net.all("input")
    if not names:
        for key in ("input_shape", "input_dim"):
            if net.has(key):
                raise net.error(f"{key} without input: name the inputs with input: \"data\"", key)
        return {}
    out = {}
    if net.has("input_shape"):
        shapes = net.all("input_shape")
        if len(shapes) != len(names):
            raise net.error(f"{len(names)} input(s) but {len(shapes)} input_shape(s): give one shape per input",
                            "input_shape")
        for i, (name, shape) in enumerate(zip(names, shapes)):
            out[name] = (InputShape(_per_sample(shape, f"input '{name}'")), net.pos("input", i))
    elif net.has("input_dim"):
        dims = net.all("input_dim")
        if len(dims) != 4 * len(names):
            raise net.error(f"{len(names)} input(s) need {4 * len(names)} input_dim values (N, C, H, W each), "
                            f"got {len(dims)}", "input_dim")
        for i, name in enumerate(names):
            out[name] = (InputShape(dims[4 * i + 1:4 * i + 4]), net.pos("input", i))
    else:
        raise net.error("input without a shape: add input_shape { dim: N dim: C dim: H dim: W }", "input")
    return out


def resolve_inputs(layers: list[DataLayer], given: dict[str, InputShape]) -> tuple[dict[str, InputShape], list[str]]:
    """The net's inputs from its data layers (``given`` shapes win); a located error for a
    top whose shape nothing says."""
    out: dict[str, InputShape] = {}
    notes: list[str] = []
    missing: list[ConfigError] = []
    for d in layers:
        for i, top in enumerate(d.tops):
            if top in out:
                continue
            shape = given.get(top) or d.shapes.get(top)
            if shape is None and i == 0 and d.unknown is not None:
                missing.append(d.unknown)
                continue
            if shape is None:
                what = "the database" if d.type in ("Data", "ImageData", "HDF5Data") else "the layer"
                missing.append(d.obj.error(
                    f"{d.type} layer '{d.name}': the shape of its top '{top}' is not in the .prototxt "
                    f"(Caffe reads it from {what})", "top", index=i,
                    hint=f"give it: --input {top}=C,H,W (per sample, no batch), or --data SOURCE:PATH"))
                continue
            if shape.why and top not in given:
                notes.append(shape.why + f"; pass --input {top}=C,H,W if yours differ")
            out[top] = shape
    if missing:
        raise ConfigErrors(missing)
    return out, notes
