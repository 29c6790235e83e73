"""ImageTransform: Caffe's transform_param for one image tensor, applied to whole batches.

Order: in training, zero-padding by ``pad``, a random ``crop_size`` crop and a
random ``mirror`` (one index_select of window starts on the raw batch); in testing the centre crop;
then Caffe's ``(x - mean) * scale / std`` in float32 (``mean`` is ``mean_value``
per channel, or the ``mean_file`` image cropped like the batch); then in training
``random_erasing``. Every step is a tensor op on the whole batch, on whatever
device the batch is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from netcfg.data.augment import (
    center_crop,
    crop_flip_index,
    gather_windows,
    random_erase,
)
from netcfg.data.meanfile import read_mean_file
from netcfg.data.spec import DataSourceSpec
from netcfg.errors import ConfigError, ConfigErrors

__all__ = ["ImageTransform"]


class ImageTransform:
    """Normalise and augment batches of one (N, C, H, W) image tensor of a split."""

    def __init__(self, spec: DataSourceSpec, mean: Any, factor: Any, dtype: torch.dtype = torch.float32):
        self.spec = spec
        self.mean = mean      # None, a float, or a (1, C, 1, 1) / (1, C, H, W) tensor
        self.factor = factor  # a float or a (1, C, 1, 1) tensor: scale / std
        self.dtype = dtype    # of the normalised batches: the net's input dtype (float64 nets get float64)

    @classmethod
    def from_spec(cls, spec: DataSourceSpec, shape: tuple[int, ...], base_dir: str | Path | None = None) -> ImageTransform:
        """The transform of ``spec`` for images of ``shape`` (N, C, H, W); a ConfigError
        (key path inside ``spec``) when a value does not fit the images."""
        errors = check_image_keys(spec, shape)
        if errors:
            raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
        channels, h, w = shape[1:]
        mean: Any = _per_channel(spec.mean_value)
        if spec.mean_file is not None:
            image = torch.from_numpy(read_mean_file(spec.resolve(spec.mean_file, base_dir)))
            if image.dim() == 1:
                image = image.reshape(-1, 1, 1)
            if image.shape[0] not in (1, channels) or (image.shape[1:] != (1, 1) and tuple(image.shape[1:]) != (h, w)):
                raise ConfigError(f"the mean file is {list(image.shape)} but the images are {[channels, h, w]}",
                                  ("mean_file",), hint="compute it from this data: netcfg data stats SOLVER --mean-file mean.npy")
            mean = image[None]  # (1, C, H, W) or (1, C, 1, 1)
        std = _per_channel(spec.std)
        factor: Any = spec.scale if std is None else spec.scale / std
        return cls(spec, mean, factor)

    def to(self, device: torch.device) -> ImageTransform:
        def move(v):
            return v.to(device) if isinstance(v, torch.Tensor) else v

        return ImageTransform(self.spec, move(self.mean), move(self.factor), self.dtype)

    def with_dtype(self, dtype: torch.dtype) -> ImageTransform:
        """This transform, normalising into ``dtype`` instead."""
        return ImageTransform(self.spec, self.mean, self.factor, dtype)

    @property
    def augments(self) -> bool:
        s = self.spec
        return bool(s.crop_size or s.pad or s.mirror or s.random_erasing)

    def out_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample shape of the transformed images: (C, crop_size, crop_size) when cropping."""
        c, h, w = sample_shape
        size = self.spec.crop_size
        return (c, size, size) if size else (c, h, w)

    def normalize(self, x: torch.Tensor, mean: Any = None) -> torch.Tensor:
        """Raw batch -> ``(x - mean) * scale / std`` in ``self.dtype`` (float32 unless the net
        says otherwise): a fresh contiguous tensor, never a view of x."""
        x = x.to(self.dtype, memory_format=torch.contiguous_format, copy=True)
        mean = self.mean if mean is None else mean
        if mean is not None:
            x.sub_(mean)
        if not (isinstance(self.factor, float) and self.factor == 1.0):
            x.mul_(self.factor)
        return x

    def __call__(self, x: torch.Tensor, *, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        """A raw (N, C, H, W) batch cropped (randomly, padded and mirrored in training;
        centred in testing), normalised, and in training randomly erased."""
        s = self.spec
        mean = self.mean
        image_mean = isinstance(mean, torch.Tensor) and mean.shape[-2:] != (1, 1)
        if train and self.augments and gen is None:
            raise ValueError("training augmentation needs a generator")
        if train and (s.crop_size or s.pad or s.mirror):
            n, _, h, w = x.shape
            out_h, out_w = (s.crop_size, s.crop_size) if s.crop_size else (h, w)
            dy, dx, flip = crop_flip_index(n, h, w, crop_size=s.crop_size, pad=s.pad, mirror=s.mirror, gen=gen)
            x = gather_windows(x, dy, dx, flip, pad=s.pad, out_h=out_h, out_w=out_w)
            if image_mean:  # Caffe subtracts the mean image at the crop's offset
                mean = gather_windows(mean.expand(n, -1, -1, -1), dy, dx, flip, pad=s.pad, out_h=out_h, out_w=out_w)
        elif s.crop_size:
            x = center_crop(x, s.crop_size, s.pad)  # a crop larger than the image takes the padding too
            mean = center_crop(mean, s.crop_size, s.pad) if image_mean else mean
        x = self.normalize(x, mean)
        if train and s.random_erasing:
            x = random_erase(x, p=s.random_erasing, area=tuple(s.erasing_area), ratio=tuple(s.erasing_ratio),
                             value=s.erasing_value, gen=gen)
        return x

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Transformed values back to raw pixel units (for pictures of a batch); a mean
        image is undone by its per-channel average, since crops move it."""
        mean = self.mean
        if isinstance(mean, torch.Tensor) and mean.shape[-2:] != (1, 1):
            mean = mean.mean(dim=(-2, -1), keepdim=True)
        x = x / self.factor
        return x + mean if mean is not None else x


def check_image_keys(spec: DataSourceSpec, shape: tuple[int, ...]) -> list[ConfigError]:
    """Errors for transform keys that do not fit images of ``shape`` (N, C, H, W)."""
    errors = []
    channels, h, w = shape[1:]
    for field in ("mean_value", "std"):
        value = getattr(spec, field)
        if isinstance(value, list) and len(value) not in (1, channels):
            errors.append(ConfigError(f"{field} has {len(value)} values but the images have {channels} channel(s)",
                                      (field,), hint=f"give one value, or {channels}"))
    if spec.crop_size is not None:
        room = min(h, w) + 2 * spec.pad
        if spec.crop_size > room:
            hint = f"use crop_size <= {room}"
            if w in (1, 3, 4) and channels > 4:  # (N, H, W, C) read as (N, C, H, W): 32 channels of 32x3
                hint += f"; or, if the images are {channels}x{h} with {w} channel(s) stored last, channels_last: true"
            errors.append(ConfigError(f"crop_size {spec.crop_size} is larger than the images ({h}x{w}, pad {spec.pad})",
                                      ("crop_size",), hint=hint))
    return errors


def _per_channel(value: list[float] | float | None) -> Any:
    """None, a float, or a (1, C, 1, 1) tensor broadcasting over a batch."""
    if value is None:
        return None
    if not isinstance(value, list):
        return float(value)
    if len(value) == 1:
        return float(value[0])
    return torch.tensor(value, dtype=torch.float32).reshape(1, -1, 1, 1)
