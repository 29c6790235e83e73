"""A picture of one batch for ``netcfg data show``: a grid of its images with their labels.

Images are shown as the net sees them (cropped, flipped, erased), mapped back to
pixel values by undoing the normalisation; small images are enlarged by an
integer factor (nearest neighbour, so pixels stay visible).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from netcfg.data.transform import ImageTransform

__all__ = ["batch_grid", "sample_captions"]

MIN_TILE = 64  # pixels: smaller images are enlarged to at least this
CAPTION = 14   # pixels of text under each tile


def sample_captions(batch: dict[str, torch.Tensor], classes: dict[str, list[str]], skip: set[str]) -> list[str]:
    """One short text per sample: its scalar tensors (labels), class names where known."""
    n = len(next(iter(batch.values())))
    out = [[] for _ in range(n)]
    for name, t in batch.items():
        if name in skip or t.dim() > 2 or (t.dim() == 2 and t.shape[1] > 4):
            continue
        names = classes.get(name)
        for i, v in enumerate(t.detach().cpu()):
            if v.dim() == 0 and names and not v.is_floating_point() and 0 <= int(v) < len(names):
                out[i].append(names[int(v)])
            elif v.dim() == 0:
                out[i].append(f"{v.item():.4g}" if v.is_floating_point() else str(int(v)))
            else:
                out[i].append(",".join(f"{x:.3g}" for x in v.tolist()))
    return [" ".join(parts) for parts in out]


def _to_pixels(x: torch.Tensor, transform: ImageTransform, raw_uint8: bool) -> np.ndarray:
    """(N, C, H, W) transformed floats -> (N, H, W, C) uint8."""
    raw = transform.invert(x.detach().float().cpu())
    if not raw_uint8:  # float images of unknown range: stretch the batch to 0..255
        lo, hi = raw.min(), raw.max()
        raw = (raw - lo) * (255.0 / max(float(hi - lo), 1e-12))
    return raw.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def batch_grid(images: torch.Tensor, transform: ImageTransform, captions: list[str], *, raw_uint8: bool = True,
               title: str = "", limit: int = 64) -> Any:
    """A PIL image: up to ``limit`` images of the batch in a near-square grid, captioned."""
    from PIL import Image, ImageDraw, ImageFont

    pixels = _to_pixels(images[:limit], transform, raw_uint8)
    n, h, w, c = pixels.shape
    zoom = max(1, math.ceil(MIN_TILE / max(h, w)))
    th, tw = h * zoom, w * zoom
    font = ImageFont.load_default()
    text_w = max((int(font.getlength(t)) for t in captions[:n]), default=0)
    cell_w = max(tw, text_w + 4) + 4
    cell_h = th + CAPTION + 4
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    top = CAPTION + 4 if title else 0
    sheet = Image.new("RGB", (cols * cell_w + 4, rows * cell_h + top + 4), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 2), title, fill="black", font=font)
    for i in range(n):
        tile = pixels[i][:, :, 0] if c < 3 else pixels[i][:, :, :3]  # 2 channels: the first alone
        im = Image.fromarray(np.ascontiguousarray(tile), "L" if c < 3 else "RGB").resize((tw, th), Image.NEAREST)
        x0 = 4 + (i % cols) * cell_w + (cell_w - 4 - tw) // 2
        y0 = top + 4 + (i // cols) * cell_h
        sheet.paste(im.convert("RGB"), (x0, y0))
        if i < len(captions):
            draw.text((4 + (i % cols) * cell_w, y0 + th + 1), captions[i], fill="black", font=font)
    return sheet
