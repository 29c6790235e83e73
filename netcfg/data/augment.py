"""Batch augmentation on the device: pad + random crop and mirror in one gather, random erasing.

Training batches get a random ``crop_size`` crop of the image zero-padded by
``pad`` and, with ``mirror``, a random horizontal flip: both are one
``index_select`` of per-sample window starts, on the raw (uint8) batch, before
normalisation (as torchvision's RandomCrop(padding) + Normalize). ``random_erasing`` (Zhong et al.
2017, https://arxiv.org/abs/1708.04896) then replaces one random rectangle per
chosen image with noise, after normalisation. Test batches get the centre crop.

The few numbers per sample are drawn on the CPU from a generator seeded by
(seed, epoch, batch start, rank), so a resumed run sees the same augmented
batches; they are turned into indices with numpy (cheap on small arrays), and
only the pixels move on the device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["mix64", "batch_generator", "center_crop", "crop_flip_index", "gather_windows", "erase_boxes", "random_erase"]

_ERASE_TRIES = 10  # rectangles drawn per image; the first that fits is used (the paper's loop)


_MASK64 = (1 << 64) - 1


def mix64(*words: int) -> int:
    """A 64-bit hash of integers (splitmix64's finaliser, chained): cheap, and the
    same in every process and on every machine (unlike Python's ``hash``)."""
    z = 0x9E3779B97F4A7C15
    for word in words:
        z = (z ^ (word & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ (z >> 31)) * 0x94D049BB133111EB & _MASK64
        z ^= z >> 29
    return z


def batch_generator(seed: int, epoch: int, start: int, rank: int = 0) -> torch.Generator:
    """The CPU generator of one batch's random draws, from (seed, epoch, start, rank) alone."""
    return torch.Generator().manual_seed(mix64(seed, epoch, start, rank, 0xA06) >> 1)


def center_crop(x: torch.Tensor, size: int | None, pad: int = 0) -> torch.Tensor:
    """The central size x size window of a (N, C, H, W) batch zero-padded by ``pad``: a
    view, unless the window is larger than the image and reaches into the padding."""
    if size is None:
        return x
    h, w = x.shape[-2:]
    top, left = (h + 2 * pad - size) // 2 - pad, (w + 2 * pad - size) // 2 - pad  # = (h - size) // 2 inside
    if top < 0 or left < 0:
        x = F.pad(x, (pad, pad, pad, pad))
        top, left = top + pad, left + pad
    return x[..., top:top + size, left:left + size]


def crop_flip_index(n: int, h: int, w: int, *, crop_size: int | None, pad: int, mirror: bool,
                    gen: torch.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: the window's top row and left column in the padded image
    (H + 2 pad, W + 2 pad), and whether it is mirrored; each (N,) int64."""
    hp, wp = h + 2 * pad, w + 2 * pad
    out_h, out_w = (crop_size, crop_size) if crop_size else (h, w)
    draws = torch.rand(n, 3, generator=gen).numpy()
    dy = (draws[:, 0] * (hp - out_h + 1)).astype(np.int64)
    dx = (draws[:, 1] * (wp - out_w + 1)).astype(np.int64)
    flip = (draws[:, 2] < 0.5) if mirror else np.zeros(n, bool)
    return dy, dx, flip.astype(np.int64)


def gather_windows(x: torch.Tensor, dy: np.ndarray, dx: np.ndarray, flip: np.ndarray, *, pad: int,
                   out_h: int, out_w: int) -> torch.Tensor:
    """Per sample, the window at (dy, dx) of x (N, C, H, W) zero-padded by ``pad``,
    flipped left-right where ``flip``: (N, C, out_h, out_w).

    No per-pixel index: the padded batch (and its mirror image, if any sample
    flips) is viewed as every possible window start, (L, C, out_h, out_w) with
    stride 1 along L, and one ``index_select`` picks a start per sample.
    """
    n, c = x.shape[:2]
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x.contiguous()
    hp, wp = xp.shape[-2:]
    plane = c * hp * wp
    start = np.arange(n) * plane + dy * wp + dx
    if flip.any():
        xp = torch.cat([xp, xp.flip(-1)])                                   # (2N, C, Hp, Wp)
        start = start + flip * (n * plane)
    flat = xp.reshape(-1)
    starts = flat.numel() - ((c - 1) * hp * wp + (out_h - 1) * wp + out_w) + 1
    windows = flat.as_strided((starts, c, out_h, out_w), (1, hp * wp, wp, 1))
    return windows.index_select(0, torch.from_numpy(start).to(x.device, non_blocking=True))


def erase_boxes(n: int, h: int, w: int, *, p: float, area: tuple[float, float], ratio: tuple[float, float],
                gen: torch.Generator) -> np.ndarray:
    """(N, 4) int64 boxes (top, left, height, width); height 0 where an image is not erased.

    Per image, with probability ``p``: up to ten draws of an area fraction in
    ``area`` and a log-uniform aspect ratio (height / width) in ``ratio``; the
    first rectangle that fits is placed uniformly at random.
    """
    draws = torch.rand(n, 2 * _ERASE_TRIES + 3, generator=gen).numpy().astype(np.float64)
    target = (area[0] + (area[1] - area[0]) * draws[:, :_ERASE_TRIES]) * (h * w)            # (N, tries) pixels
    aspect = np.exp(np.log(ratio[0]) + np.log(ratio[1] / ratio[0]) * draws[:, _ERASE_TRIES:2 * _ERASE_TRIES])
    eh = np.rint(np.sqrt(target * aspect)).astype(np.int64)
    ew = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (eh >= 1) & (ew >= 1) & (eh < h) & (ew < w)
    first = fits.argmax(1)
    chosen = (draws[:, -3] < p) & fits[np.arange(n), first]
    bh = np.where(chosen, eh[np.arange(n), first], 0)
    bw = np.where(chosen, ew[np.arange(n), first], 0)
    top = (draws[:, -2] * (h - bh + 1)).astype(np.int64)
    left = (draws[:, -1] * (w - bw + 1)).astype(np.int64)
    return np.stack([top, left, bh, bw], 1)


_BANK_SEED = 0x5EED
_BANK_LIMIT = 1 << 24  # larger batches draw their noise directly
_banks: dict[tuple, torch.Tensor] = {}


def _noise_bank(numel: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal numbers, made once per (size class, device, dtype) from a fixed
    seed: a batch's noise is a random window of it, which costs no drawing. The size
    depends on ``numel`` alone, so the bank, like the batch, is the same after a resume."""
    size = 1 << max(2 * numel - 1, 1).bit_length()
    key = (size, str(device), dtype)
    if key not in _banks:
        gen = torch.Generator(device=device).manual_seed(_BANK_SEED)
        _banks[key] = torch.randn(size, generator=gen, device=device, dtype=dtype)
    return _banks[key]


def random_erase(x: torch.Tensor, *, p: float, area: tuple[float, float], ratio: tuple[float, float],
                 value: float | str, gen: torch.Generator) -> torch.Tensor:
    """Random erasing of a contiguous float (N, C, H, W) batch: one rectangle per chosen
    image, filled with standard normal noise (``value='random'``) or a constant."""
    if x.dim() != 4 or p <= 0:
        return x
    n, _, h, w = x.shape
    top, left, bh, bw = erase_boxes(n, h, w, p=p, area=area, ratio=ratio, gen=gen).T
    shift = float(torch.rand((), generator=gen))  # where the noise window starts
    if not bh.any():
        return x
    rows, cols = np.arange(h), np.arange(w)
    in_rows = (rows >= top[:, None]) & (rows < (top + bh)[:, None])              # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + bw)[:, None])            # (N, W)
    mask = torch.from_numpy(in_rows[:, None, :, None] & in_cols[:, None, None, :]).to(x.device, non_blocking=True)
    if value != "random":
        return x.masked_fill_(mask, float(value))                                # mask (N, 1, H, W) broadcasts
    numel = x.numel()
    if numel > _BANK_LIMIT:
        noise_gen = torch.Generator(device=x.device).manual_seed(int(shift * 2**53))
        noise = torch.randn(x.shape, generator=noise_gen, device=x.device, dtype=x.dtype)
    else:
        bank = _noise_bank(numel, x.device, x.dtype)
        start = int(shift * (len(bank) - numel))
        noise = bank[start:start + numel].view(x.shape)
    return torch.where(mask, noise, x)
