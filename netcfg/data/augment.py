"""Batch augmentation on the device: Caffe's crop_size and mirror, plus pad-and-crop.

Training batches get a random crop (after zero-padding by ``pad``) and, with
``mirror``, a random horizontal flip; test batches get the centre crop. The
random draws come from a generator seeded by (seed, epoch, batch start), so a
resumed run sees the same augmented batches.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["augment", "center_crop", "batch_generator"]


def batch_generator(seed: int, epoch: int, start: int) -> torch.Generator:
    mixed = np.random.SeedSequence([seed % 2**64, epoch, start, 0xA06]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed))


def center_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central size x size window of a (N, C, H, W) batch."""
    if size is None:
        return x
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def augment(x: torch.Tensor, *, crop_size: int | None, pad: int, mirror: bool, gen: torch.Generator) -> torch.Tensor:
    """Random pad-and-crop and horizontal flip of a float (N, C, H, W) batch."""
    if x.dim() != 4 or not (crop_size or pad or mirror):
        return x
    n, _, h, w = x.shape
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    out_h, out_w = (crop_size, crop_size) if crop_size else (h, w)
    if (out_h, out_w) != tuple(x.shape[-2:]):
        dy = torch.randint(0, x.shape[-2] - out_h + 1, (n,), generator=gen).to(x.device)
        dx = torch.randint(0, x.shape[-1] - out_w + 1, (n,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(out_h, device=x.device))[:, :, None]   # (N, h, 1)
        cols = (dx[:, None] + torch.arange(out_w, device=x.device))[:, None, :]   # (N, 1, w)
        idx = torch.arange(n, device=x.device)[:, None, None]
        x = x.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)           # (N, C, h, w)
    if mirror:
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(flip, x.flip(-1), x)
    return x.contiguous()
