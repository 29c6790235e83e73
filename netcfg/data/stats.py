"""Statistics of a split for ``netcfg data stats``: per-channel mean and std (Caffe's compute_image_mean).

Raw values (before any transform) are summed in float64 over chunks of samples,
so a large split never needs a float copy of itself in memory. The report is
YAML ready to paste into the split's mapping in the solver file.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from netcfg.data.spec import DataSourceSpec
from netcfg.data.split import SplitData

__all__ = ["ChannelStats", "channel_stats", "stats_report"]

CHUNK = 4096  # samples converted to float64 at a time


class ChannelStats:
    """Per-channel mean and standard deviation of an image tensor, and its mean image."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, mean_image: np.ndarray, count: int):
        self.mean, self.std, self.mean_image, self.count = mean, std, mean_image, count


def _chunks(t: Any, n: int):
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        if isinstance(t, torch.Tensor):
            yield t[start:stop]
        else:  # streamed images: decoded by the workers
            yield t.take(torch.arange(start, stop))


def channel_stats(images: Any) -> ChannelStats:
    """Statistics of a whole (N, C, H, W) tensor (or streamed images), in raw units."""
    n, c, h, w = images.shape
    total = np.zeros((c, h, w), np.float64)
    squares = np.zeros(c, np.float64)
    for chunk in _chunks(images, n):
        x = chunk.to(torch.float64)
        total += x.sum(0).numpy()
        squares += (x * x).sum((0, 2, 3)).numpy()
    pixels = n * h * w
    mean = total.sum((1, 2)) / pixels
    var = np.maximum(squares / pixels - mean * mean, 0.0)
    return ChannelStats(mean, np.sqrt(var), (total / n).astype(np.float32), n)


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def stats_report(spec: DataSourceSpec, data: SplitData, where: str) -> tuple[str, dict[str, ChannelStats]]:
    """(YAML text with comments, {image tensor: stats}) for every image tensor of ``data``.

    ``std`` is given in the units after ``scale`` (Caffe subtracts the mean, then
    scales), so ``(x - mean_value) * scale / std`` has mean 0 and std 1 per channel.
    """
    lines: list[str] = []
    found: dict[str, ChannelStats] = {}
    for name in data.transforms:
        t = data.tensors[name]
        st = channel_stats(t)
        found[name] = st
        key, owner = _transform_owner(spec, data.origins.get(name, ()), where)
        shape = "x".join(map(str, t.shape[1:]))
        lines += [f"# {key}, tensor '{name}': {st.count:,} images of {shape}, raw values {_range(t)}.",
                  f"# Paste under {key}; then (x - mean_value) * scale / std has mean 0, std 1 per channel:",
                  f"mean_value: {_fmt(st.mean)}",
                  f"std: {_fmt(st.std * owner.scale)}" + (f"   # in units after scale {owner.scale:g}" if owner.scale != 1 else "")]
    for name, t in data.tensors.items():
        if name in data.transforms or not isinstance(t, torch.Tensor):
            continue
        if t.is_floating_point() and t.dim() == 2:
            x = t.to(torch.float64)
            lines.append(f"# '{name}': {t.shape[1]} features, mean {_fmt(x.mean(0).numpy())}, "
                         f"std {_fmt(x.std(0, unbiased=False).numpy())}")
        elif not t.is_floating_point() and t.dim() == 1:
            counts = torch.bincount(t - t.min()) if len(t) else torch.zeros(0)
            names = data.classes.get(name)
            lines.append(f"# '{name}': {len(t):,} values {int(t.min())}..{int(t.max())}"
                         + (f" ({len(names)} classes: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''})" if names else "")
                         + f"; smallest class {int(counts[counts > 0].min())}, largest {int(counts.max())} samples")
    if not found:
        lines.insert(0, f"# {where}: no image tensors (N, C, H, W); nothing to normalise per channel")
    return "\n".join(lines), found


def _transform_owner(spec: DataSourceSpec, origin: tuple, where: str) -> tuple[str, DataSourceSpec]:
    """(key path, spec) of the mapping whose transform keys apply to a tensor from ``origin``:
    the split, a multi's sub-source or an image_features' ``of:``, never a key inside one
    (npz's ``arrays.data`` names the array, and takes no ``mean_value``)."""
    while True:
        if origin[:1] == ("sources",) and getattr(spec, "sources", None):
            where, spec, origin = f"{where}.sources[{origin[1]}]", spec.sources[origin[1]], origin[2:]
        elif origin[:1] == ("of",) and getattr(spec, "of", None) is not None:
            where, spec, origin = f"{where}.of", spec.of, origin[1:]
        else:
            return where, spec


def _range(t: Any) -> str:
    if not isinstance(t, torch.Tensor):
        return "0..255 (uint8)"
    return f"{t.min().item():g}..{t.max().item():g} ({str(t.dtype).removeprefix('torch.')})"
