"""Mean images for ``mean_file``: a .npy array, or Caffe's .binaryproto read without protobuf.

A binaryproto is one serialised ``BlobProto`` (caffe.proto), decoded by
``netcfg.caffe.blobproto`` (shared with the .caffemodel reader).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netcfg.caffe.blobproto import WireError, read_blob, write_blob
from netcfg.errors import ConfigError

__all__ = ["read_mean_file", "read_binaryproto", "write_binaryproto"]


def read_mean_file(file: Path) -> np.ndarray:
    """The mean as float32: (C, H, W), (C, 1, 1) or (C,) as stored; ConfigError if unreadable."""
    key = ("mean_file",)
    if not file.is_file():
        raise ConfigError(f"mean file not found: {file}", key,
                          hint="a relative path resolves against the solver file's directory")
    if file.suffix == ".npy":
        try:
            mean = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ConfigError(f"'{file}' is not a readable .npy array ({e})", key) from None
    elif file.suffix == ".binaryproto":
        mean = read_binaryproto(file.read_bytes(), str(file))
    else:
        raise ConfigError(f"mean file '{file.name}' is neither .npy nor .binaryproto", key,
                          hint="`netcfg data stats SOLVER --mean-file mean.npy` writes one")
    if mean.dtype.kind not in "fiu":
        raise ConfigError(f"mean file '{file}' holds {mean.dtype}, not numbers", key)
    if mean.dtype.kind == "f" and not np.isfinite(mean).all():
        raise ConfigError(f"mean file '{file}' holds {np.count_nonzero(~np.isfinite(mean))} NaN or infinite "
                          f"value(s)", key, hint="compute it again: netcfg data stats SOLVER --mean-file mean.npy")
    if mean.ndim == 4 and mean.shape[0] == 1:  # Caffe's (1, C, H, W)
        mean = mean[0]
    if mean.ndim == 2:  # (H, W): one channel
        mean = mean[None]
    if mean.ndim not in (1, 3):
        raise ConfigError(f"mean file '{file}' has shape {list(mean.shape)}", key,
                          hint="expected (C, H, W), (H, W), (1, C, H, W) or one value per channel (C,)")
    return np.ascontiguousarray(mean, dtype=np.float32)


def read_binaryproto(raw: bytes, name: str = "<binaryproto>") -> np.ndarray:
    """A Caffe BlobProto as a float32 array in its shape (legacy 4-D shape if no ``shape``)."""
    try:
        data, shape = read_blob(raw)
    except WireError as e:
        raise ConfigError(f"'{name}' is not a valid Caffe binaryproto: {e}", ("mean_file",)) from None
    if not shape or int(np.prod(shape)) != data.size or data.size == 0:
        raise ConfigError(f"'{name}' is not a valid Caffe binaryproto mean: shape {shape} but {data.size} values",
                          ("mean_file",), hint="the file may be truncated; compute it again")
    return data.reshape(shape)


def write_binaryproto(mean: np.ndarray) -> bytes:
    """A BlobProto with ``shape`` and packed ``data`` (for tests and interchange with Caffe)."""
    return write_blob(mean)
