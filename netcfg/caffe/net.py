"""Caffe NetParameter (.prototxt) -> a netcfg net file, validated with errors located in the .prototxt.

Layers keep their names, types, bottoms and tops; each type's ``*_param`` becomes
flat fields (``layers.py``); phase rules, ParamSpecs and loss weights carry over;
data layers become ``inputs:`` (``inputs.py``); BatchNorm + Scale pairs fold into
one BatchNorm (``merge.py``). The result is validated by netcfg's own schema and
graph check through a Source whose positions are the .prototxt's, so a problem
netcfg finds (a shape mismatch, a bad value) is reported at the Caffe line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from netcfg.caffe.inputs import DATA_TYPES, DataLayer, InputShape, data_layer, deploy_inputs, resolve_inputs
from netcfg.caffe.layers import LAYER_TYPES, convert_params, no_param_note
from netcfg.caffe.merge import Layer, merge_batchnorm_scale, unique_names
from netcfg.caffe.parser import parse_file
from netcfg.caffe.proto import Obj, decode
from netcfg.errors import ConfigError, ConfigErrors, did_you_mean
from netcfg.source import Source

__all__ = ["ImportedNet", "import_net", "net_from_obj", "layer_rules", "rules_of", "IMPORTABLE"]

IMPORTABLE = sorted([*LAYER_TYPES, *DATA_TYPES])
UPGRADE_HINT = ("upgrade it with Caffe's tool, then import the result: "
                "upgrade_net_proto_text OLD.prototxt NEW.prototxt")
_NO_COUNTERPART = {
    "LSTM": "Caffe's LSTM runs time-major with sequence-continuation markers (a 'cont' bottom); netcfg's LSTM "
            "is a batch-first stack without them",
    "RNN": "netcfg has no plain RNN layer (its LSTM and GRU are batch-first stacks)",
    "Python": "a Python layer runs your own code; write it as a netcfg layer plugin (docs/adding-a-layer.md)",
}


@dataclass
class ImportedNet:
    """A converted net: the netcfg net file's data, where each part came from, and notes."""

    file: str
    data: dict[str, Any]
    positions: dict[tuple, tuple[int, int]]
    notes: list[str] = field(default_factory=list)
    data_layers: list[DataLayer] = field(default_factory=list)
    merged: dict[str, str] = field(default_factory=dict)    # Scale layer -> BatchNorm it folded into
    renamed: dict[str, str] = field(default_factory=dict)   # netcfg layer name -> Caffe name

    def source(self) -> Source:
        """The net as a Source located in the .prototxt, for netcfg's validation."""
        return Source(self.file, self.data, dict(self.positions), dict(self.positions))

    def spec(self):
        """The validated NetSpec; schema errors are located in the .prototxt."""
        from netcfg.net.spec import net_from_source

        return net_from_source(self.source())

    def check(self, train_stages: list[str] = (), test_stages: list[str] = ()) -> dict:
        """Validate and build the TRAIN and TEST graphs: {phase: Graph}; errors located in the .prototxt."""
        from netcfg.net import build_graph

        spec = self.spec()
        return {"TRAIN": build_graph(spec, "TRAIN", train_stages), "TEST": build_graph(spec, "TEST", test_stages)}


def import_net(path: str | Path, inputs: dict[str, InputShape] | None = None) -> ImportedNet:
    """Read and convert a Caffe net .prototxt (``inputs``: shapes for data layers' tops)."""
    file = str(path)
    return net_from_obj(decode(parse_file(path), "NetParameter", file), file, inputs or {}, Path(path).stem)


def net_from_obj(net: Obj, file: str, given: dict[str, InputShape], default_name: str = "net") -> ImportedNet:
    """Convert a decoded NetParameter (a file, or a solver's inline net_param)."""
    if net.has("layers"):
        raise net.error("this file uses Caffe's deprecated V1 format ('layers {' with enum types such as "
                        "CONVOLUTION), which netcfg does not read", "layers", hint=UPGRADE_HINT)
    notes: list[str] = []
    for key, why in (("force_backward", "netcfg computes the gradients training needs, none for the inputs"),
                     ("debug_info", "netcfg's solver has the key: debug_info: true in the solver file")):
        if net.get(key):
            notes.append(f"{key}: true is not imported ({why})")
    if net.has("state"):
        notes.append("the net's default state { ... } is not imported: pass --phase/--stage to netcfg check, "
                     "or train_stages/test_stages in a solver file")
    layers: list[Layer] = []
    data_layers: list[DataLayer] = []
    errors: list[ConfigError] = []
    batchless: dict[str, list[int]] = {}  # tops of Parameter layers whose Caffe blob has no batch axis
    for index, obj in enumerate(net.all("layer")):
        try:
            converted = _layer(obj, index, notes, batchless)
        except ConfigError as e:
            errors.append(e)
            continue
        (data_layers if isinstance(converted, DataLayer) else layers).append(converted)
    if errors:
        raise ConfigErrors(errors)
    if not layers:
        raise net.error("the net has no layers besides its inputs; nothing to import")
    inputs, input_notes = resolve_inputs(data_layers, given)
    notes += input_notes
    deploy = deploy_inputs(net)
    for name, (shape, _) in deploy.items():
        inputs.setdefault(name, given.get(name) or shape)
    notes += _embed_ids_as_int64(inputs, layers)
    merged = merge_batchnorm_scale(layers)
    renamed = unique_names(layers, notes)
    positions: dict[tuple, tuple[int, int]] = {(): (1, 1)}
    if net.has("name"):
        positions[("name",)] = net.pos("name")
    for name in inputs:
        d = next((d for d in data_layers if name in d.tops), None)
        positions[("inputs", name)] = deploy[name][1] if name in deploy else d.obj.pos("top", d.tops.index(name))
    out_layers = []
    for i, layer in enumerate(layers):
        for key, at in layer.pos.items():
            positions[("layers", i, key)] = at
        positions[("layers", i)] = (layer.obj.line, layer.obj.col)
        out_layers.append(layer.as_dict())
    data = {"name": net.get("name") or default_name, "inputs": {k: v.as_yaml() for k, v in inputs.items()},
            "layers": out_layers}
    return ImportedNet(file, data, positions, list(dict.fromkeys(notes)), data_layers, merged, renamed)


def _embed_ids_as_int64(inputs: dict[str, InputShape], layers: list[Layer]) -> list[str]:
    """Declare int64 each float input that only Embed layers read: every Caffe blob is float, and
    Caffe's Embed truncates its bottom to integer ids, where netcfg's takes integer inputs only."""
    notes = []
    for name, shape in inputs.items():
        readers = [layer for layer in layers if name in layer.bottom]
        if shape.dtype == "float32" and readers and all(layer.type == "Embed" for layer in readers):
            inputs[name] = replace(shape, dtype="int64")
            notes.append(f"input '{name}' is declared int64: it holds the ids of Embed layer '{readers[0].name}' "
                         "(Caffe keeps them in a float blob)")
    return notes


def _layer(obj: Obj, index: int, notes: list[str], batchless: dict[str, list[int]]) -> Layer | DataLayer:
    kind = obj.get("type")
    if kind is None:
        raise obj.error("layer has no type", hint='add e.g. type: "Convolution"')
    name = obj.get("name") or f"{kind.lower()}{index}"
    if not obj.has("name"):
        notes.append(f"the {kind} layer at line {obj.line} has no name; named '{name}'")
    if any(c.isspace() for c in name):
        new = "_".join(name.split())
        notes.append(f"layer '{name}' renamed '{new}': netcfg layer names have no spaces")
        name = new
    rules = layer_rules(obj, name)
    if kind in DATA_TYPES:
        return data_layer(obj, name, kind, rules)
    if kind not in LAYER_TYPES:
        why = _NO_COUNTERPART.get(kind, f"Caffe layer type '{kind}' has no netcfg equivalent")
        near = did_you_mean(kind, IMPORTABLE, show_all=0)
        raise obj.error(why, "type",
                        hint=(f"{near}; " if near else "") + "importable Caffe types: " + ", ".join(IMPORTABLE))
    for key, what in (("blobs", "weights inside a .prototxt are not imported; use --weights MODEL.caffemodel"),
                      ("phase", "a layer's own phase (Dropout, BatchNorm acting as in that phase always) has no "
                                "netcfg counterpart; use include { phase: ... } to keep a layer in one phase")):
        if obj.has(key):
            raise obj.error(what, key)
    if any(v is False for v in obj.all("propagate_down")):
        notes.append(f"layer '{name}': propagate_down is ignored (netcfg backpropagates into every "
                     "floating-point bottom; integer labels get no gradient anyway)")
    notes += no_param_note(obj, kind, name)
    conv = convert_params(obj, kind, batchless)
    if conv.batchless:
        batchless.update(dict.fromkeys(obj.all("top") or [name], conv.fields["shape"]))
    notes += [f"layer '{name}' ({kind}): {note}" for note in conv.notes]
    layer = Layer(name, kind, obj.all("bottom"), obj.all("top"), obj, conv.fields, pos=dict(conv.pos))
    layer.pos.update(name=obj.pos("name"), type=obj.pos("type"))
    for key in ("bottom", "top"):
        if obj.has(key):
            layer.pos[key] = obj.pos(key)
    if obj.has("loss_weight"):
        weights = obj.all("loss_weight")
        layer.common["loss_weight"] = weights[0] if len(weights) == 1 else weights
        layer.pos["loss_weight"] = obj.pos("loss_weight")
    if obj.has("param"):
        layer.common["param"] = [_param_spec(p, name, notes) for p in obj.all("param")]
        layer.pos["param"] = obj.pos("param")
    for key, rule in zip(("include", "exclude"), rules):
        if rule:
            layer.common[key] = rule
            layer.pos[key] = obj.pos(key)
    return layer


def layer_rules(obj: Obj, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A layer's include and exclude rules; both at once is refused at the second, as Caffe's FilterNet does."""
    include, exclude = rules_of(obj, "include"), rules_of(obj, "exclude")
    if include and exclude:
        second = max(("include", "exclude"), key=obj.pos)
        raise obj.error(f"layer '{name}' has both include and exclude rules; Caffe refuses that (\"Specify "
                        "either include rules or exclude rules; not both\")", second,
                        hint="keep only the include rules or only the exclude rules")
    return include, exclude


def rules_of(obj: Obj, key: str) -> list[dict[str, Any]]:
    """Caffe's NetStateRules under ``key`` as netcfg rule mappings."""
    out = []
    for rule in obj.all(key):
        r: dict[str, Any] = {}
        for k in ("phase", "min_level", "max_level"):
            if rule.has(k):
                r[k] = rule.get(k)
        for k in ("stage", "not_stage"):
            if rule.has(k):
                r[k] = rule.all(k)
        out.append(r)
    return out


def _param_spec(p: Obj, layer: str, notes: list[str]) -> dict[str, Any]:
    if p.get("share_mode") == "PERMISSIVE":
        notes.append(f"layer '{layer}': share_mode PERMISSIVE is ignored (netcfg shares a blob only between "
                     "layers whose blobs have the same shape)")
    return {k: p.get(k) for k in ("lr_mult", "decay_mult", "name") if p.has(k)}
