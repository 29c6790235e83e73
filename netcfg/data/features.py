"""Source image_features: an image source plus tabular features computed from its pixels, and grouped labels.

``of:`` names any image source (idx, digits, cifar10, folder, npz...). Its tensors
pass through unchanged (images keep their transforms); added are ``features``,
float32 (D,) per image, measured on the stored pixels (ink, extent, centroid,
symmetry, edges, coarse row and column profiles; see ``FEATURES``) and
standardised with the statistics of the wrapped source's train split, as the
csv source does; and, with ``label_groups:``, ``group``: the label mapped to
coarser classes (Fashion-MNIST's ten into tops, bottoms, footwear, bags), for a
second head. Image + tabular multi-task nets train from one image data set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from netcfg.data.spec import TRANSFORM_KEYS, DataSourceSpec, ImageSubSource
from netcfg.data.registry import register_source
from netcfg.data.split import SplitData, load_source
from netcfg.data.tabular import column_statistics
from netcfg.errors import ConfigError, ConfigErrors, FieldError, did_you_mean

__all__ = ["FEATURES", "ImageFeaturesSpec", "feature_names", "image_features"]

# one value each, except the profiles (profile_bins values each); intensity v in [0, 1]
FEATURES = {
    "ink": "mean intensity",
    "area": "fraction of pixels brighter than threshold (the object's pixels)",
    "height": "height of the object's bounding box / image height (0 if no object)",
    "width": "width of the object's bounding box / image width",
    "centroid_y": "intensity-weighted mean row, 0 (top) .. 1 (bottom)",
    "centroid_x": "intensity-weighted mean column, 0 (left) .. 1 (right)",
    "spread_y": "intensity-weighted standard deviation of the row, in image heights",
    "spread_x": "intensity-weighted standard deviation of the column, in image widths",
    "symmetry_lr": "1 - sum|v - v mirrored left-right| / (2 sum v): 1 for a left-right symmetric image",
    "symmetry_ud": "the same, mirrored top-bottom",
    "edges": "mean absolute difference between neighbouring pixels (texture)",
    "row_profile": "mean intensity of profile_bins horizontal bands, top to bottom",
    "col_profile": "mean intensity of profile_bins vertical bands, left to right",
}
FeatureName = Literal[tuple(FEATURES)]  # type: ignore[valid-type]
_INHERITED = ("split", "batch_size")
_CHUNK = 8192  # images per step of the feature computation: bounded memory on big splits


class ImageFeaturesSpec(DataSourceSpec):
    """image_features: the image source, which features, and the label groups."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ()

    of: ImageSubSource = Field(..., description="the image source whose images the features describe (its tensors pass through)")
    image: str = Field("data", min_length=1, description="the wrapped source's image tensor")
    label: str = Field("label", min_length=1, description="the wrapped source's label tensor, grouped by label_groups")
    features: list[FeatureName] = Field(list(FEATURES), min_length=1, description="which features, in this order: " + ", ".join(FEATURES))
    profile_bins: int = Field(4, ge=1, description="values in each of row_profile and col_profile")
    threshold: float = Field(0.2, ge=0, lt=1, description="intensity (0..1) above which a pixel belongs to the object")
    background: Literal["dark", "light"] = Field("dark", description="dark: bright ink on black (MNIST); light: dark ink on white (intensity is inverted)")
    standardize: bool = Field(True, description="features become (x - mean) / std with the train split's statistics")
    label_groups: dict[str, list[int | str]] | None = Field(
        None, description="group name -> the labels (or class names) it holds; adds the tensor 'group' (int64, group index)")

    @model_validator(mode="before")
    @classmethod
    def _inherit(cls, data: Any) -> Any:
        # the wrapped source takes split and batch_size from here unless it says otherwise
        if isinstance(data, dict) and isinstance(data.get("of"), dict):
            for key in _INHERITED:
                if key not in data["of"] and key in data:
                    data["of"][key] = data[key]
        return data

    @model_validator(mode="after")
    def _rules(self) -> ImageFeaturesSpec:
        own = [k for k in TRANSFORM_KEYS if k in self.model_fields_set]
        if own:
            raise FieldError(f"{own[0]} belongs under of:, on the source whose images it transforms", own[0])
        if self.path is not None:
            raise FieldError("image_features reads no files itself: give path under of:", "path")
        if self.of.source in ("multi", "image_features"):
            raise FieldError(f"of: must be an image source, not {self.of.source}", ("of", "source"))
        if self.of.split != self.split:
            raise FieldError(f"of: is split {self.of.split} but image_features is {self.split}", ("of", "split"))
        for i, name in enumerate(self.features):
            if name in self.features[:i]:
                raise FieldError(f"feature '{name}' is listed twice", ("features", i))
        groups = self.label_groups
        if groups is not None:
            if len(groups) < 2:
                raise FieldError(f"label_groups needs at least two groups, got {len(groups)}", "label_groups")
            seen: dict[int | str, str] = {}
            for g, members in groups.items():
                if not members:
                    raise FieldError(f"group '{g}' lists no labels", ("label_groups", g))
                for i, m in enumerate(members):
                    if isinstance(m, int) and m < 0:
                        raise FieldError(f"label {m} is negative", ("label_groups", g, i))
                    if m in seen:
                        raise FieldError(f"label {m!r} is in group '{seen[m]}' and again in '{g}'", ("label_groups", g, i))
                    seen[m] = g
        return self

    def resolved_dump(self, base_dir: str | Path | None) -> dict[str, Any]:
        out = super().resolved_dump(base_dir)
        out["of"] = self.of.resolved_dump(base_dir)
        return out


def feature_names(spec: ImageFeaturesSpec) -> list[str]:
    """One name per column of ``features`` (profiles numbered: row_profile0, ...)."""
    out = []
    for name in spec.features:
        out += [f"{name}{k}" for k in range(spec.profile_bins)] if name.endswith("_profile") else [name]
    return out


def image_features(images: np.ndarray, names: list[str], *, bins: int = 4, threshold: float = 0.2,
                   light_background: bool = False) -> np.ndarray:
    """(N, D) float64 features of (N, C, H, W) images: uint8 read as /255, floats as 0..1."""
    return np.concatenate([_features(images[i:i + _CHUNK], names, bins, threshold, light_background)
                           for i in range(0, len(images), _CHUNK)] or [np.zeros((0, 0))], 0)


def _features(images: np.ndarray, names: list[str], bins: int, threshold: float, light: bool) -> np.ndarray:
    v = images.astype(np.float32).mean(1)  # (N, H, W): channels averaged
    if images.dtype == np.uint8:
        v /= 255
    if light:
        v = 1 - v
    n, h, w = v.shape
    total = v.sum((1, 2))
    safe = np.where(total > 0, total, 1)  # a blank image: centroid 0.5, spread 0, symmetry 1
    rows, cols = v.mean(2), v.mean(1)  # (N, H), (N, W)
    ys, xs = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    cy = np.where(total > 0, (v.sum(2) * ys).sum(1) / safe, 0.5)
    cx = np.where(total > 0, (v.sum(1) * xs).sum(1) / safe, 0.5)
    mask = v > threshold
    out: list[np.ndarray] = []
    for name in names:
        if name == "ink":
            out.append(v.mean((1, 2)))
        elif name == "area":
            out.append(mask.mean((1, 2)))
        elif name in ("height", "width"):
            out.append(_extent(mask.any(2 if name == "height" else 1)))
        elif name == "centroid_y":
            out.append(cy)
        elif name == "centroid_x":
            out.append(cx)
        elif name == "spread_y":
            out.append(np.sqrt((v.sum(2) * (ys - cy[:, None]) ** 2).sum(1) / safe))
        elif name == "spread_x":
            out.append(np.sqrt((v.sum(1) * (xs - cx[:, None]) ** 2).sum(1) / safe))
        elif name in ("symmetry_lr", "symmetry_ud"):
            mirrored = v[:, :, ::-1] if name == "symmetry_lr" else v[:, ::-1]
            out.append(1 - np.abs(v - mirrored).sum((1, 2)) / (2 * safe))
        elif name == "edges":
            dx = np.abs(np.diff(v, axis=2)).mean((1, 2)) if w > 1 else np.zeros(n, np.float32)
            dy = np.abs(np.diff(v, axis=1)).mean((1, 2)) if h > 1 else np.zeros(n, np.float32)
            out.append((dx + dy) / 2)
        else:  # row_profile, col_profile: bands of nearly equal size (np.array_split's rule)
            profile = rows if name == "row_profile" else cols
            out += [band.mean(1) for band in np.array_split(profile, bins, axis=1)]
    return np.stack(out, 1).astype(np.float64)  # (N, D)


def _extent(any_on: np.ndarray) -> np.ndarray:
    """(N, L) bool -> (last True - first True + 1) / L, 0 where none is True."""
    length = any_on.shape[1]
    first = any_on.argmax(1)
    last = length - 1 - any_on[:, ::-1].argmax(1)
    return np.where(any_on.any(1), (last - first + 1) / length, 0.0)


@register_source("image_features", spec=ImageFeaturesSpec)
def load_image_features(spec: ImageFeaturesSpec, path: Path | None, base_dir: Path | None = None) -> SplitData:
    """An image source plus tabular features of each image and, optionally, grouped labels."""
    data = _load_of(spec.of.model_copy(update={"limit": spec.limit or spec.of.limit}), base_dir)
    x = _compute(spec, data)
    if spec.standardize:
        # this split is the wrapped source's whole train split: its features are the statistics' input
        whole_train = spec.split == "train" and not spec.limit
        mean, std = _train_statistics(spec, base_dir, x if whole_train else None)
        x = (x - mean) / std
    added: dict[str, torch.Tensor] = {"features": torch.from_numpy(x.astype(np.float32))}
    classes = dict(data.classes)
    origins = {n: ("of",) + data.origins.get(n, ()) for n in data}
    origins["features"] = ("features",)
    if spec.label_groups is not None:
        added["group"] = _groups(spec, spec.label_groups, data)
        classes["group"] = list(spec.label_groups)
        origins["group"] = ("label_groups",)
    for name in added:
        if name in data:
            raise ConfigError(f"the wrapped source already gives a tensor '{name}'", ("of", "inputs"),
                              hint=f"rename it there: inputs: {{{name}: <other name>}}")
    tensors = {**data.tensors, **added}
    for key in spec.inputs or {}:
        if key not in tensors:
            raise ConfigError(f"image_features gives no tensor '{key}'", ("inputs", key), hint=did_you_mean(key, tensors))
    rename = spec.input_name
    return SplitData({rename(n): t for n, t in tensors.items()},
                     {rename(n): tr for n, tr in data.transforms.items()},
                     {rename(n): c for n, c in classes.items()},
                     {rename(n): ("inputs", n) if n in (spec.inputs or {}) else o for n, o in origins.items()})


def _load_of(sub: DataSourceSpec, base_dir: Path | None) -> SplitData:
    """The wrapped source's split; its errors are located under ``of:``."""
    try:
        return load_source(sub, base_dir)
    except ConfigErrors as e:
        for err in e.errors:
            err.prefixed(("of",))
        raise ConfigErrors(e.errors) from None
    except ConfigError as e:
        raise e.prefixed(("of",)) from None


def _compute(spec: ImageFeaturesSpec, data: SplitData) -> np.ndarray:
    return image_features(_images(spec, data), spec.features, bins=spec.profile_bins, threshold=spec.threshold,
                          light_background=spec.background == "light")


def _images(spec: ImageFeaturesSpec, data: SplitData) -> np.ndarray:
    t = data.tensors.get(spec.image)
    if t is None:
        raise ConfigError(f"the wrapped {spec.of.source} source gives no tensor '{spec.image}'", ("image",),
                          hint=did_you_mean(spec.image, data))
    if not isinstance(t, torch.Tensor) or t.dim() != 4:
        what = f"shape {list(t.shape[1:])} per sample" if isinstance(t, torch.Tensor) else "streamed from disk"
        raise ConfigError(f"tensor '{spec.image}' is not an in-memory image batch (N, C, H, W): {what}", ("image",),
                          hint="image_features needs images held in memory (for folder: raise memory_limit_mb)")
    h, w = t.shape[2:]
    if any(f.endswith("_profile") for f in spec.features) and spec.profile_bins > min(h, w):
        raise ConfigError(f"profile_bins {spec.profile_bins} is more than the images' {h}x{w} rows or columns",
                          ("profile_bins",), hint=f"at most {min(h, w)}")
    return t.numpy()


_STATS: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_NOT_DATA = {"split", "batch_size", "shuffle", "drop_last", "device_resident", *TRANSFORM_KEYS}


def _train_statistics(spec: ImageFeaturesSpec, base_dir: Path | None,
                      train_x: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Means and stds of the features over the wrapped source's train split (its own
    ``limit`` applies, not this split's), so both splits are standardised alike; kept
    per process, keyed by everything that determines them."""
    train = spec.of.model_copy(update={"split": "train"})
    # what picks the train images; batching, order and transforms do not change the stored pixels
    what = {k: v for k, v in train.resolved_dump(base_dir).items() if k not in _NOT_DATA}
    key = json.dumps([what, spec.features, spec.profile_bins, spec.threshold,
                      spec.background, spec.image], sort_keys=True, default=str)
    if key not in _STATS:
        _STATS[key] = column_statistics(train_x if train_x is not None else _compute(spec, _load_of(train, base_dir)))
    return _STATS[key]


def _groups(spec: ImageFeaturesSpec, groups: dict[str, list[int | str]], data: SplitData) -> torch.Tensor:
    """The group index of every sample's label; every label must be in a group."""
    if getattr(spec.of, "classes", None) is not None:  # relabelled 0..N-1 before grouping: groups would mix
        raise ConfigError("label_groups groups the wrapped source's labels, but of.classes has relabelled them "
                          "0..N-1", ("of", "classes"), hint="move classes: out of of:, beside label_groups (the "
                          "image_features split's own classes: selects after grouping, by the original labels)")
    labels = data.tensors.get(spec.label)
    if labels is None:
        raise ConfigError(f"the wrapped {spec.of.source} source gives no tensor '{spec.label}'", ("label",),
                          hint=did_you_mean(spec.label, data))
    if labels.dim() != 1 or labels.dtype != torch.int64:
        raise ConfigError(f"label_groups groups class labels (int64, one per sample), but '{spec.label}' is "
                          f"{str(labels.dtype).removeprefix('torch.')} of shape {list(labels.shape[1:])} per sample",
                          ("label",))
    names = data.classes.get(spec.label)
    present = sorted(set(labels.tolist()))
    # the table spans the labels that can occur, not the listed ones: a listed 10**30 would size it
    top = max([0, len(names or ()) - 1, *present[-1:]])
    table = torch.full((top + 1,), -1, dtype=torch.int64)
    for k, (g, members) in enumerate(groups.items()):
        for i, m in enumerate(members):
            if isinstance(m, str):
                if names is None or m not in names:
                    raise ConfigError(f"'{m}' is not a class name of '{spec.label}'", ("label_groups", g, i),
                                      hint=did_you_mean(m, names) if names else
                                      f"the {spec.of.source} source names no classes: list label values 0..{top}")
                m = names.index(m)
            elif m > top:
                continue  # no sample has it (as before for any label above the largest; harmless)
            table[m] = k
    ungrouped = [c for c in present if c < 0 or table[c] < 0]
    if ungrouped:
        shown = ", ".join(f"{c} ({names[c]})" if names and 0 <= c < len(names) else str(c) for c in ungrouped)
        raise ConfigError(f"label(s) {shown} of the {spec.split} split are in no group", ("label_groups",),
                          hint="add each to one group")
    return table[labels]
