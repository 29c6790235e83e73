"""Image decoding with Pillow, for the folder source; runs in worker processes too.

This module imports only numpy and Pillow, so a worker process starts fast
(no torch). Errors come back as values, a (file, message) pair, since an
exception from a worker would lose the file it concerns.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_images", "decode_errors", "image_size", "require_pillow", "EXTENSIONS"]

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def require_pillow():
    """The PIL.Image module, or ImportError with the install command."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("the folder source decodes images with Pillow, which is not installed: "
                          "pip install 'netcfg[images]' (or pip install Pillow)") from None
    return Image


def decode_errors() -> tuple[type[Exception], ...]:
    """What Pillow raises for a file it will not decode: unreadable or corrupt (its
    UnidentifiedImageError is an OSError), or too many pixels (a decompression bomb)."""
    Image = require_pillow()
    return OSError, ValueError, SyntaxError, Image.DecompressionBombError


def image_size(file: str) -> tuple[int, int]:
    """(height, width) upright, from the file's header, without decoding the pixels."""
    Image = require_pillow()
    with Image.open(file) as im:
        return (im.width, im.height) if _orientation(im) in _QUARTER_TURNS else (im.height, im.width)


def decode_images(files: list[str], channels: int, size: tuple[int, int] | None
                  ) -> tuple[np.ndarray | None, tuple[str, str, str] | None]:
    """(len(files), C, H, W) uint8, or (None, (file, problem, hint)) for the first file that fails.

    Images are turned upright by their EXIF orientation. ``size`` (height, width)
    resizes with bilinear filtering; without it every image must already share
    the first one's size.
    """
    Image = require_pillow()
    mode = "L" if channels == 1 else "RGB"
    out = None
    for i, file in enumerate(files):
        try:
            with Image.open(file) as im:
                im = _eight_bit(_upright(im), Image).convert(mode)
                if size is not None and (im.height, im.width) != tuple(size):
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                pixels = np.asarray(im, dtype=np.uint8)
        except _NoFixedRange as e:
            return None, (file, str(e), "convert the images to 8-bit or 16-bit, or store them as an array for "
                                        "the npz source with the scale you choose")
        except decode_errors() as e:
            return None, (file, f"cannot decode the image ({e})", "remove or replace the file")
        if out is None:
            out = np.empty((len(files), channels) + pixels.shape[:2], np.uint8)
        if pixels.shape[:2] != out.shape[2:]:
            return None, (file, f"the image is {pixels.shape[0]}x{pixels.shape[1]} but {files[0]} is "
                                f"{out.shape[2]}x{out.shape[3]}", "set image_size: [H, W] to resize them all")
        out[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return (out if out is not None else np.zeros((0, channels, 1, 1), np.uint8)), None


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class _NoFixedRange(ValueError):
    """A 32-bit integer or floating-point image: no range to map to 0..255 from the file alone."""


def _eight_bit(im, Image):
    """A 16-bit grayscale image (PNG, TIFF) mapped 0..65535 -> 0..255; Pillow's convert
    would clip it, every pixel above 255 white. 32-bit integer and float images (TIFF
    depth maps, microscopy) are refused: convert clips them too (a float image in 0..1
    decoded all black). Other images as they are."""
    if im.mode in _SIXTEEN_BIT or (im.mode == "I" and im.format == "PNG"):  # older Pillow opens 16-bit PNGs as I
        wide = np.asarray(im).astype(np.float64)
        return Image.fromarray(np.rint(np.clip(wide, 0, 65535) / 257).astype(np.uint8), "L")
    if im.mode in ("I", "F"):
        kind = "floating-point" if im.mode == "F" else "integer"
        raise _NoFixedRange(f"the image is 32-bit {kind} (Pillow mode {im.mode}), whose values have no fixed range "
                            f"to map to 0..255 (Pillow would clip them)")
    return im


_ORIENTATION = 0x0112  # the EXIF tag a camera sets instead of rotating the pixels
_QUARTER_TURNS = (5, 6, 7, 8)  # orientations that swap height and width


def _orientation(im) -> int:
    return int(im.getexif().get(_ORIENTATION, 1) or 1)


def _upright(im):
    """The image as a viewer shows it: a phone's portrait photo is stored landscape with an
    EXIF orientation, and decoding it as stored would train on it lying on its side."""
    if _orientation(im) == 1:
        return im
    from PIL import ImageOps

    return ImageOps.exif_transpose(im)
