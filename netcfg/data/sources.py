"""Built-in data sources digits and idx (``load_source`` and friends live in split.py).

Both return whole splits as arrays: ``data`` (N, C, H, W) uint8 images and
``label`` (N,) int64. Decoded IDX files are cached per process (keyed by file,
size and mtime), and the tensors returned share that memory: treat them as read-only.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import re
import zlib
from pathlib import Path

import numpy as np

from netcfg.data.spec import DataSourceSpec
from netcfg.data.registry import register_source
from netcfg.data.split import SplitData, check_tensors, describe_source, load_source
from netcfg.errors import ConfigError

__all__ = ["load_source", "describe_source", "check_tensors", "read_idx", "SplitData"]

DIGITS_TRAIN = 1437  # the first 80% of scikit-learn's 1,797 digits; the rest is test


# ---------------------------------------------------------------- digits


@register_source("digits")
def load_digits(spec: DataSourceSpec, path: Path | None, base_dir: Path | None = None) -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits, 10 classes, bundled (no download)."""
    images, labels = _digits()
    part = slice(None, DIGITS_TRAIN) if spec.split == "train" else slice(DIGITS_TRAIN, None)
    return {"data": images[part], "label": labels[part]}


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    # 0..16 -> 0..255, so the MNIST scale 1/256 gives the same [0, 1) range
    images = np.rint(d.images * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    return images, d.target.astype(np.int64)


# ---------------------------------------------------------------- idx (MNIST format)

_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@register_source("idx", needs_path=True)
def load_idx(spec: DataSourceSpec, path: Path | None, base_dir: Path | None = None) -> dict[str, np.ndarray]:
    """MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), gzipped or raw.

    Reads ``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]``
    from ``path``, with prefix ``train`` for the train split and ``t10k`` for test.
    """
    assert path is not None  # the spec requires it
    prefix = ""
    if not path.exists() and path.parent.is_dir() and path.name in _prefixes(path.parent):
        path, prefix = path.parent, path.name + "-"  # EMNIST: emnist-balanced-train-images-idx3-ubyte.gz
    if not path.exists():
        raise ConfigError(f"directory '{path}' does not exist", ("path",),
                          hint=None if Path(spec.path or "").expanduser().is_absolute()
                          else "a relative path resolves against the solver file's directory")
    if not path.is_dir():
        raise ConfigError(f"'{path}' is not a directory", ("path",), hint="give the directory holding the IDX files")
    images = read_idx(_find(path, spec.split, "images", 3, prefix))
    labels = read_idx(_find(path, spec.split, "labels", 1, prefix))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ConfigError(f"images file holds {images.dtype} of {images.ndim} dimensions, expected uint8 (N, H, W)", ("path",))
    if labels.ndim != 1:
        raise ConfigError(f"labels file has {labels.ndim} dimensions, expected 1", ("path",))
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise ConfigError(f"labels file holds {labels.dtype} values that are not whole numbers "
                          f"(e.g. {labels[labels != np.round(labels)][0]:g})", ("path",),
                          hint="class labels are integers 0..K-1")
    if len(images) != len(labels):
        raise ConfigError(f"the {spec.split} images file has {len(images)} samples but the labels file has {len(labels)}",
                          ("path",), hint="are both files from the same data set and download?")
    return {"data": images[:, None], "label": labels.astype(np.int64)}  # (N, 1, H, W)


def _find(directory: Path, split: str, kind: str, ndim: int, prefix: str = "") -> Path:
    names = [f"{prefix}{p}-{kind}{sep}idx{ndim}-ubyte{gz}" for p in _PREFIXES[split] for sep in "-." for gz in (".gz", "")]
    for name in names:
        if (directory / name).is_file():
            return directory / name
    present = sorted(os.listdir(directory))
    shown = ", ".join(present[:12]) + (f", ... ({len(present)} in all)" if len(present) > 12 else "")
    sets = _prefixes(directory)
    named = f"; to read the {sets[0]}-* files, give path: {directory / sets[0]}" if sets and not prefix else ""
    raise ConfigError(f"no {split} {kind} file in '{directory}'", ("path",),
                      hint=f"expected {names[0]} or {names[1]}{named}; the directory holds: {shown or 'nothing'}")


_PREFIXED = re.compile(r"(.+)-(?:train|t10k|test)-(?:images|labels)[-.]idx[13]-ubyte(?:\.gz)?")


def _prefixes(directory: Path) -> list[str]:
    """The prefixes of the IDX sets whose names start with one (EMNIST's emnist-balanced-, emnist-letters-...)."""
    return sorted({m.group(1) for n in os.listdir(directory) if (m := _PREFIXED.fullmatch(n))})


def read_idx(file: Path) -> np.ndarray:
    """One IDX file (gzipped or raw) as a numpy array; ConfigError if it is not valid IDX."""
    stat = file.stat()
    return _read_idx_cached(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_idx_cached(file: str, size: int, mtime_ns: int) -> np.ndarray:
    def bad(problem: str) -> ConfigError:
        return ConfigError(f"'{file}' is not a valid IDX file: {problem}", ("path",),
                           hint="the file may be truncated or corrupt; download it again")

    try:
        with open(file, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise bad(f"cannot decompress ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise bad("the header does not start with the IDX magic number")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise bad(f"unknown element type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if ndim == 0:
        raise bad("the header gives 0 dimensions")
    if len(raw) < header:
        raise bad(f"the header promises {ndim} dimensions but the file ends at byte {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    want = header + math.prod(dims) * dtype.itemsize  # Python ints: a corrupt header must not overflow
    if len(raw) != want:
        what = "is truncated" if len(raw) < want else "has trailing bytes"
        raise bad(f"it {what}: shape {list(dims)} needs {want} bytes, the file has {len(raw)}")
    array = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # native order, writable (torch needs both)
