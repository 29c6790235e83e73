"""SplitData: one whole split as named tensors, and ``load_source``: a spec -> SplitData.

A source's load function returns its arrays keyed by the source's own names
(``data``, ``label``, a CSV's column groups...), as numpy arrays, tensors or
streamed images, optionally wrapped in ``Arrays`` with class names. ``SplitData``
checks them against the spec, applies ``limit``, renames them to the net's input
names (``inputs:``) and gives every image tensor (4 dimensions: N, C, H, W) the
``ImageTransform`` of its spec. Tensors share memory with the source's caches:
treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netcfg.data.spec import TRANSFORM_KEYS, DataSourceSpec
from netcfg.data.registry import source_types
from netcfg.data.transform import ImageTransform
from netcfg.errors import ConfigError, ConfigErrors, did_you_mean

__all__ = ["Arrays", "SplitData", "load_source", "describe_source", "check_tensors", "dtype_name", "select_classes"]


@dataclass
class Arrays:
    """What a source may return instead of a plain dict: arrays, plus class names per
    tensor and the key (path inside the spec) that chose each tensor, for located errors."""

    tensors: dict[str, Any]
    classes: dict[str, list[str]] = field(default_factory=dict)
    origins: dict[str, tuple] = field(default_factory=dict)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class SplitData(Mapping):
    """A whole split: ``{net input name: tensor (N, ...)}``, with ``transforms`` for the
    image tensors and ``classes`` (class names) for labels whose source knows them."""

    def __init__(self, tensors: dict[str, Any], transforms: dict[str, ImageTransform],
                 classes: dict[str, list[str]] | None = None, origins: dict[str, tuple] | None = None):
        self.tensors = tensors
        self.transforms = transforms
        self.classes = classes or {}
        # the key path inside the split's spec that a tensor comes from, for located errors
        self.origins = origins or {}

    @classmethod
    def build(cls, spec: DataSourceSpec, arrays: Mapping[str, Any] | Arrays, *,
              base_dir: str | Path | None = None) -> SplitData:
        """Check a source's arrays against ``spec`` (key paths inside the spec), apply
        ``limit``, rename to net input names, and make the image transforms."""
        classes = arrays.classes if isinstance(arrays, Arrays) else {}
        origins = arrays.origins if isinstance(arrays, Arrays) else {}
        raw = arrays.tensors if isinstance(arrays, Arrays) else arrays
        tensors = {name: torch.from_numpy(a) if isinstance(a, np.ndarray) else a for name, a in raw.items()}
        check_tensors(spec, tensors)
        tensors, classes = select_classes(spec, tensors, classes)
        tensors = {name: t[: spec.limit] for name, t in tensors.items()}
        transforms: dict[str, ImageTransform] = {}
        errors: list[ConfigError] = []
        for name, t in tensors.items():
            if t.dim() == 4:
                try:
                    transforms[spec.input_name(name)] = ImageTransform.from_spec(spec, tuple(t.shape), base_dir)
                except ConfigErrors as e:
                    errors += e.errors
                except ConfigError as e:
                    errors.append(e)
        used = [k for k in TRANSFORM_KEYS if k in spec.model_fields_set]
        if used and not any(t.dim() == 4 for t in tensors.values()):
            shapes = ", ".join(f"{n} {list(t.shape[1:])}" for n, t in tensors.items())
            errors.append(ConfigError(f"{used[0]} transforms images (N, C, H, W), but source '{spec.source}' "
                                      f"gives none ({shapes})", (used[0],), hint=f"remove {used[0]}"))
        if errors:
            raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
        return cls({spec.input_name(n): t for n, t in tensors.items()}, transforms,
                   {spec.input_name(n): c for n, c in classes.items()},
                   {spec.input_name(n): ("inputs", n) if n in (spec.inputs or {}) else origins.get(n, ()) for n in tensors})

    # ------------------------------------------------------------ a mapping of tensors

    def __getitem__(self, name: str) -> Any:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def num_samples(self) -> int:
        return len(next(iter(self.tensors.values())))

    def describe(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """``{name: (per-sample shape, dtype)}`` of the batches: images as transformed
        (float32, cropped), everything else as stored."""
        out = {}
        for name, t in self.tensors.items():
            tr = self.transforms.get(name)
            if tr is not None:
                out[name] = (tr.out_shape(tuple(t.shape[1:])), "float32")
            else:
                out[name] = (tuple(t.shape[1:]), dtype_name(t.dtype))
        return out

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}: {list(s)} {d}" for n, (s, d) in self.describe().items())
        return f"SplitData({self.num_samples} samples; {shown})"


def load_source(spec: DataSourceSpec, base_dir: str | Path | None = None) -> SplitData:
    """The split ``spec`` names, as CPU tensors keyed by net input name (``limit`` applied)."""
    kind = source_types()[spec.source]
    try:
        out = kind.load(spec, spec.resolved_path(base_dir) if kind.needs_path else None, base_dir)
    except OSError as e:  # a path the OS refuses (a name too long, no permission): at its key, not a traceback
        raise _path_error(spec, base_dir, e) from None
    if isinstance(out, SplitData):  # multi: its own limit went to its sources, so classes come after it
        out.tensors, out.classes = select_classes(spec, out.tensors, out.classes, spec.input_name("label"))
        return out
    try:
        return SplitData.build(spec, out, base_dir=base_dir)
    except OSError as e:  # mean_file is read here
        raise _path_error(spec, base_dir, e) from None


def _path_error(spec: DataSourceSpec, base_dir: str | Path | None, e: OSError) -> ConfigError:
    """``e`` located at the path key (path, mean_file) that names its file, or at ``path``."""
    named = [k for k in spec.PATH_KEYS if getattr(spec, k, None) is not None
             and str(e.filename).startswith(str(spec.resolve(getattr(spec, k), base_dir)))]
    return ConfigError(f"cannot read {e.filename}: {e.strerror}", (named[-1] if named else "path",))


def describe_source(spec: DataSourceSpec, base_dir: str | Path | None = None) -> dict[str, tuple[tuple[int, ...], str]]:
    """What the batches hold, per net input: ``{name: (per-sample shape, dtype)}``.

    Names are after ``inputs:`` renaming and dtypes as delivered (images become
    float32), so they compare directly with a net's ``inputs:``.
    """
    return load_source(spec, base_dir).describe()


def check_tensors(spec: DataSourceSpec, tensors: Mapping[str, Any]) -> None:
    """Check that ``inputs`` names the source's tensors and that they have one length."""
    errors = []
    for key in spec.inputs or {}:
        if key not in tensors:
            errors.append(ConfigError(f"source '{spec.source}' has no tensor '{key}'", ("inputs", key),
                                      hint=did_you_mean(key, tensors)))
    sizes = {name: len(t) for name, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        errors.append(ConfigError(f"source tensors differ in length: {sizes}", ("source",)))
    elif not sizes or not next(iter(sizes.values())):
        errors.append(ConfigError(f"the {spec.split} split of source '{spec.source}' has no samples", ("source",)))
    if errors:
        raise ConfigErrors(errors) if len(errors) > 1 else errors[0]


def select_classes(spec: DataSourceSpec, tensors: dict[str, Any], classes: dict[str, list[str]],
                   label: str = "label") -> tuple[dict[str, Any], dict[str, list[str]]]:
    """``classes`` and ``per_class``: the samples of the listed labels, relabelled 0..K-1 in
    the listed order, then at most the first ``per_class`` of each class (file order)."""
    if spec.classes is None and spec.per_class is None:
        return tensors, classes
    key = "classes" if spec.classes is not None else "per_class"
    y = tensors.get(label)
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise ConfigError(f"{key} selects samples by their integer class label, but source '{spec.source}' "
                          f"gives no such tensor '{label}'", (key,), hint="classes works with sources that yield a label")
    streamed = [n for n, t in tensors.items() if not isinstance(t, torch.Tensor)]
    if streamed:
        raise ConfigError(f"{key} needs the split in memory, but '{streamed[0]}' is streamed from disk", (key,),
                          hint="for folder: raise memory_limit_mb")
    names = classes.get(label)
    present = sorted(torch.unique(y).tolist())
    keep = torch.arange(len(y))
    if spec.classes is not None:
        wanted, errors = [], []
        for i, c in enumerate(spec.classes):
            value = names.index(c) if isinstance(c, str) and names and c in names else c
            if isinstance(value, str) or value not in present:
                what = f"class {c!r}" if isinstance(c, str) else f"label {c}"
                known = f"its classes: {', '.join(names)}" if names else f"its labels: {_spans(present)}"
                errors.append(ConfigError(f"{what} is not in the {spec.split} split of source '{spec.source}'",
                                          ("classes", i), hint=known))
            wanted.append(value)
        if errors:
            raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
        relabel = torch.full((max(present) - min(present) + 1,), -1, dtype=y.dtype)
        relabel[torch.tensor(wanted) - min(present)] = torch.arange(len(wanted), dtype=y.dtype)
        new = relabel[y - min(present)]  # (N,): 0..K-1, or -1 for the samples left out
        keep = (new >= 0).nonzero().squeeze(1)
        y = new[keep]
        if names:
            classes = {**classes, label: [names[v] for v in wanted]}
    if spec.per_class is not None:
        picked = [(y == c).nonzero().squeeze(1)[: spec.per_class] for c in torch.unique(y)]
        rows = torch.cat(picked).sort().values  # keep the file order
        keep, y = keep[rows], y[rows]
    return {n: y if n == label else t[keep] for n, t in tensors.items()}, classes


def _spans(values: list[int]) -> str:
    """``[0, 1, 2, 3, 7]`` -> ``0..3, 7``."""
    out, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(v) if v == start else f"{start}..{v}")
            start = None
    return ", ".join(out)
