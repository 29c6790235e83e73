"""Caffe's Data layers -> a solver's ``data:`` section, given a netcfg data source (``--data SOURCE[:PATH]``).

Caffe's LMDB/LevelDB databases cannot be read here, so the batches come from a
netcfg source (``idx:/usr/share/datasets/fashion-mnist``, ``digits``...) and the rest
from the Data layers: the batch size of each phase, the transform (scale,
mean_value, crop_size, mirror), and which split a phase reads (a TEST layer reading
the TRAIN layer's database tests on the training split). The source also tells the
net's input shapes. Without ``--data`` the solver gets a commented template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netcfg.caffe.inputs import DataLayer, InputShape, data_layer
from netcfg.caffe.proto import Obj
from netcfg.errors import ConfigError, did_you_mean

__all__ = ["data_section", "data_shapes", "parse_data_option", "find_caffe_path"]

_FED = ("Data", "ImageData", "HDF5Data", "MemoryData")  # layers whose batches a data: section replaces


def find_caffe_path(rel: str, near: Path) -> Path | None:
    """Caffe resolves paths against its working directory, usually the Caffe root: try
    ``near`` (the solver's directory) and each directory above it, then the current one."""
    p = Path(rel).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    near = near.resolve()
    for base in [near, *near.parents, Path.cwd()]:
        if (base / p).exists():
            return base / p
    return near / p.name if (near / p.name).exists() else None


def _spec_class(source: str):
    from netcfg.data.spec import DataSourceSpec
    from netcfg.data.registry import source_types

    return getattr(source_types()[source], "spec", DataSourceSpec)


def parse_data_option(text: str) -> tuple[str, str | None]:
    """``idx:/path`` -> ("idx", "/path"); ``digits`` -> ("digits", None); checked against the sources."""
    from netcfg.data.registry import source_types

    name, _, path = text.partition(":")
    known = source_types()
    if name not in known:
        raise ConfigError(f"unknown data source '{name}'", file="--data",
                          hint=(did_you_mean(name, known) or "") + "; write --data SOURCE[:PATH], e.g. "
                               "--data idx:/usr/share/datasets/fashion-mnist")
    if known[name].needs_path and not path:
        raise ConfigError(f"source '{name}' reads files from a directory: --data {name}:PATH", file="--data")
    return name, str(Path(path).expanduser().resolve()) if path else None


def _active(d: DataLayer, phase: str, stages: list[str]) -> bool:
    from netcfg.layers.base import Rule

    if d.include and not any(Rule(**r).matches(phase, set(stages)) for r in d.include):
        return False
    return not any(Rule(**r).matches(phase, set(stages)) for r in d.exclude)


def _fed_layer(layers: list[DataLayer], phase: str, stages: list[str]) -> DataLayer | None:
    return next((d for d in layers if d.type in _FED and _active(d, phase, stages)), None)


def data_shapes(net: Obj, data: str | None, base_dir: Path, stages: list[str]) -> dict[str, InputShape]:
    """Input shapes of the TRAIN data layer's tops, read from the ``--data`` source."""
    if data is None:
        return {}
    from netcfg.caffe.net import layer_rules
    from netcfg.data.sources import describe_source

    layers = [data_layer(obj, obj.get("name", ""), obj.get("type"), layer_rules(obj, obj.get("name", "")))
              for obj in net.all("layer") if obj.get("type") in _FED]
    d = _fed_layer(layers, "TRAIN", stages)
    if d is None:
        return {}
    source, path = parse_data_option(data)
    try:
        spec = _spec_class(source)(source=source, path=path, split="train", batch_size=1,
                                   crop_size=d.transform.get("crop_size") or None)
    except ValueError as e:  # a source with keys of its own (npz's arrays...)
        raise ConfigError(f"source '{source}' needs more than a path ({e.errors()[0]['msg']})", file="--data",
                          hint="import without --data and write the data: section by hand") from None
    try:
        tensors = describe_source(spec, base_dir)
    except ConfigError as e:  # the source's own words; the place to fix is the --data option
        if e.file is None:
            e.file = "--data"
        raise
    out = {}
    for top, name in zip(d.tops, ("data", "label")):
        if name in tensors:
            shape, dtype = tensors[name]
            out[top] = InputShape(list(shape), dtype)
    return out


def data_section(net, data: str | None, train_stages: list[str], test_stages: list[str], near: Path
                 ) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """(the data: mapping or None, a commented template, notes) for an ImportedNet; Caffe's
    relative paths (mean_file) are looked up from ``near``."""
    notes: list[str] = []
    splits = {"train": _fed_layer(net.data_layers, "TRAIN", train_stages),
              "test": _fed_layer(net.data_layers, "TEST", test_stages)}
    if not any(splits.values()):
        notes.append("the net has no Data layers (its inputs are declared, as in a deploy net): add a data: "
                     "section by hand (docs/solver-files.md)")
        return None, [], notes
    source, path = parse_data_option(data) if data is not None else ("?", None)
    mean_files: dict[str, str] = {}
    for d in {id(d): d for d in splits.values() if d is not None}.values():
        found = find_caffe_path(d.mean_file, near) if d.mean_file else None
        if found is not None and (data is None or "mean_file" in _spec_class(source).model_fields):
            mean_files[d.name] = str(found)
        elif d.mean_file:
            notes.append(f"Data layer '{d.name}': mean_file '{d.mean_file}' is not imported "
                         f"({'not found' if found is None else 'source ' + source + ' takes no mean_file'}): "
                         "set data.train/test.mean_value to the per-channel mean of your data")
    section: dict[str, Any] = {}
    for split, d in splits.items():
        if d is None:
            continue
        if d.batch_size is None:
            raise d.obj.error(f"{d.type} layer '{d.name}' has no batch_size", "type")
        entry: dict[str, Any] = {"source": source}
        if path is not None:
            entry["path"] = path
        elif data is None and d.source:
            entry["path"] = d.source
        train = splits["train"]
        same_db = split == "test" and train is not None and d.source is not None and d.source == train.source
        entry["split"] = "train" if split == "train" or same_db else "test"
        entry["batch_size"] = d.batch_size
        if d.name in mean_files:
            entry["mean_file"] = mean_files[d.name]
        for key, value in d.transform.items():
            if key == "mean_value":
                entry[key] = value[0] if len(value) == 1 else value
            elif key == "scale" and value == 1:
                continue
            elif key == "mirror" and split == "test" and value:
                notes.append(f"Data layer '{d.name}': mirror: true is not imported for the TEST phase: Caffe flips "
                             "test images at random, netcfg tests each image as it is")
            elif value:
                entry[key] = value
        renames = {src: top for src, top in zip(("data", "label"), d.tops) if src != top}
        if renames:
            entry["inputs"] = renames
        section[split] = entry
    if data is not None:
        return section, [], notes
    from netcfg.caffe.emit import flow

    kinds = sorted({d.type for d in splits.values() if d is not None})
    notes.append(f"no data: section: Caffe's {'/'.join(kinds)} layers read databases netcfg cannot open; "
                 "import with --data SOURCE[:PATH] (e.g. --data idx:/usr/share/datasets/fashion-mnist), or "
                 "fill in the template at the end of the file")
    comment = ["data: template from the Caffe Data layers: replace source '?' and path by a netcfg data source",
               "(sources: `netcfg schema solver`; docs/solver-files.md), then uncomment", "data:"]
    comment += [f"  {split}: {flow(entry)}" for split, entry in section.items()]
    return None, comment, notes
