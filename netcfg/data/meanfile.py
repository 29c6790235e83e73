"""Mean images for ``mean_file``: a .npy array, or Caffe's .binaryproto read without protobuf.

A binaryproto is one serialised ``BlobProto`` (caffe.proto): ``shape`` (field 7,
a ``BlobShape`` whose ``dim`` is field 1), ``data`` (field 5, float32, packed or
not), ``double_data`` (field 8), and the legacy ``num/channels/height/width``
(fields 1-4). Only those fields are read; any other field is skipped by its wire
type, as protobuf does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    if mean.ndim == 4 and mean.shape[0] == 1:  # Caffe's (1, C, H, W)
        mean = mean[0]
    if mean.ndim == 2:  # (H, W): one channel
        mean = mean[None]
    if mean.ndim not in (1, 3):
        raise ConfigError(f"mean file '{file}' has shape {list(mean.shape)}", key,
                          hint="expected (C, H, W), (H, W), (1, C, H, W) or one value per channel (C,)")
    return np.ascontiguousarray(mean, dtype=np.float32)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(buf):
            raise ValueError("the file ends inside a number")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("a number is longer than 10 bytes")


def _fields(buf: bytes):
    """(field number, wire type, value) of each field; value is an int or bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire} for field {field}")
        if i > len(buf):
            raise ValueError(f"field {field} runs past the end of the file")
        yield field, wire, value


def read_binaryproto(raw: bytes, name: str = "<binaryproto>") -> np.ndarray:
    """A Caffe BlobProto as a float32 array in its shape (legacy 4-D shape if no ``shape``)."""
    dims: list[int] = []
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    chunks: list[np.ndarray] = []
    try:
        for field, wire, value in _fields(raw):
            if field == 7 and wire == 2:  # BlobShape: repeated int64 dim = 1 (packed or not)
                for f, w, v in _fields(value):
                    if f == 1 and w == 2:
                        j = 0
                        while j < len(v):
                            d, j = _varint(v, j)
                            dims.append(d)
                    elif f == 1 and w == 0:
                        dims.append(v)
            elif field in (5, 8):  # data (float32) / double_data (float64)
                dtype = "<f4" if field == 5 else "<f8"
                if wire == 2:
                    chunks.append(np.frombuffer(value, dtype))
                elif wire in (5, 1):
                    chunks.append(np.frombuffer(value, dtype, count=1))
            elif field in legacy and wire == 0:
                legacy[field] = value
    except ValueError as e:
        raise ConfigError(f"'{name}' is not a valid Caffe binaryproto: {e}", ("mean_file",)) from None
    data = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    shape = dims or [d for d in (legacy[1], legacy[2], legacy[3], legacy[4])]
    if not shape or int(np.prod(shape)) != data.size or data.size == 0:
        raise ConfigError(f"'{name}' is not a valid Caffe binaryproto mean: shape {shape} but {data.size} values",
                          ("mean_file",), hint="the file may be truncated; compute it again")
    return data.reshape(shape)


def write_binaryproto(mean: np.ndarray) -> bytes:
    """A BlobProto with ``shape`` and packed ``data`` (for tests and interchange with Caffe)."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(num: int, payload: bytes) -> bytes:
        return varint(num << 3 | 2) + varint(len(payload)) + payload

    dims = b"".join(varint(d) for d in mean.shape)
    data = np.ascontiguousarray(mean, "<f4").tobytes()
    return field(7, field(1, dims)) + field(5, data)
