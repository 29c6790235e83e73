"""Caffe .caffemodel weights (binary protobuf, read here) -> a netcfg .safetensors keyed ``<layer>.<blob>``.

Protobuf's wire format and the BlobProto are read by ``blobproto.py`` (shared with
mean files). Only what weights need is read: NetParameter.layer (100) ->
LayerParameter name (1), blobs (7), or the V1 NetParameter.layers (2) ->
V1LayerParameter name (4), blobs (6). Blobs go to the
converted net's layers by name, in Caffe's blob order (``blob_names()``); a
BatchNorm's (mean, variance, factor) become running_mean / running_var divided by
the factor, and a Scale folded into a BatchNorm gives its weight and bias. A blob
must have its target's shape, as Caffe checks, not only its size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netcfg.caffe.blobproto import WireError, fields, read_blob
from netcfg.errors import ConfigError

__all__ = ["read_caffemodel", "convert_weights"]


def _blob(buf: memoryview) -> np.ndarray:
    data, shape = read_blob(buf)
    return data.reshape(shape) if shape and int(np.prod(shape)) == data.size else data


def read_caffemodel(path: str | Path) -> list[tuple[str, list[np.ndarray]]]:
    """(layer name, blobs) for every layer of a .caffemodel that has blobs."""
    path = Path(path)
    try:
        raw = memoryview(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read the weights: {e.strerror}", file=str(path)) from None
    layers = []
    try:
        for number, wire, value in fields(raw):
            if wire != 2 or number not in (2, 100):
                continue
            name_field, blob_field = (1, 7) if number == 100 else (4, 6)
            name, blobs = "", []
            for n, w, v in fields(value):
                if n == name_field and w == 2:
                    name = bytes(v).decode("utf-8", errors="replace")
                elif n == blob_field and w == 2:
                    blobs.append(_blob(v))
            if blobs:
                layers.append((name, blobs))
    except WireError as e:
        raise ConfigError(f"not a readable Caffe .caffemodel ({e})", file=str(path),
                          hint="a .caffemodel is Caffe's binary NetParameter; is the file complete?") from None
    if not layers:
        raise ConfigError("holds no layer with weights (is it a .caffemodel?)", file=str(path))
    return layers


def convert_weights(imported, caffemodel: str | Path, target: str | Path) -> list[str]:
    """Write the blobs of ``caffemodel`` for the ImportedNet ``imported`` to ``target``;
    returns the report lines."""
    import torch
    from torch import nn

    from netcfg.net import Net, build_graph
    from netcfg.solver.weights_file import save_weights
    from netcfg.solver.weights_plan import is_counter

    spec = imported.spec()
    train = Net(build_graph(spec, "TRAIN"))
    test = Net(build_graph(spec, "TEST"), share=train)
    holder = nn.Module()  # every layer of both phases, keyed <layer>.<blob> as in the nets
    holder._modules.update(test._modules)
    holder._modules.update(train._modules)
    state = holder.state_dict(keep_vars=True)
    specs = {layer.name: layer for layer in spec.layers}
    by_caffe = {}
    for layer in spec.layers:
        by_caffe.setdefault(imported.renamed.get(layer.name, layer.name), layer.name)
    copied, ignored, mismatched = [], [], []
    with torch.no_grad():
        for caffe_name, blobs in read_caffemodel(caffemodel):
            name = imported.merged.get(caffe_name) or by_caffe.get(caffe_name)
            if name is None or name not in specs:
                ignored.append(caffe_name)
                continue
            for key, array in _targets(specs[name], caffe_name in imported.merged, blobs):
                t = state.get(f"{name}.{key}")
                if t is None or _dims(array.shape) != _dims(t.shape):
                    mismatched.append(f"{caffe_name} -> {name}.{key} (file {list(array.shape)}, "
                                      f"net {list(t.shape) if t is not None else 'none'})")
                    continue
                t.copy_(torch.from_numpy(np.ascontiguousarray(array)).reshape(t.shape).to(t.dtype))
                copied.append(f"{name}.{key}")
    if mismatched:
        raise ConfigError("blobs that do not fit the net: " + "; ".join(mismatched), file=str(caffemodel),
                          hint="is this .caffemodel trained for this .prototxt?")
    if not copied:
        raise ConfigError("no layer of the .caffemodel matches a layer of the net by name", file=str(caffemodel))
    save_weights(Path(target), holder, imported.data, extra={"source": f"caffe:{Path(caffemodel).name}"})
    wanted = {k for k in state if not is_counter(k)}
    lines = [f"wrote {target}: {len(copied)} blobs from {caffemodel}"]
    if ignored:
        lines.append("  layers of the .caffemodel not in the net, ignored: " + ", ".join(ignored))
    if wanted - set(copied):
        lines.append("  not in the .caffemodel, left as initialised: " + ", ".join(sorted(wanted - set(copied))))
    return lines


def _dims(shape) -> tuple[int, ...]:
    """A blob's shape as Caffe compares it: leading 1s dropped, as a legacy (num, channels,
    height, width) shape pads them; 1x3 and 3x1 kernels (same size) differ."""
    dims = tuple(shape)
    while dims and dims[0] == 1:
        dims = dims[1:]
    return dims


def _targets(layer, folded_scale: bool, blobs: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(netcfg blob name, array) pairs for one Caffe layer's blobs."""
    if folded_scale:  # the Scale of a BatchNorm + Scale pair: gamma, beta
        return list(zip(("weight", "bias"), blobs))
    if layer.type == "BatchNorm":
        if len(blobs) != 3:
            return [(f"caffe_blob{i}", b) for i, b in enumerate(blobs)]  # reported as not fitting
        factor = float(blobs[2].reshape(-1)[0]) if blobs[2].size else 0.0
        scale = 0.0 if factor == 0 else 1.0 / factor  # Caffe's moving averages are sums divided by this
        return [("running_mean", blobs[0] * scale), ("running_var", blobs[1] * scale)]
    names = [path for path, _ in layer.param_entries()]
    return list(zip(names, blobs)) + [(f"caffe_blob{i}", b) for i, b in enumerate(blobs[len(names):], len(names))]
