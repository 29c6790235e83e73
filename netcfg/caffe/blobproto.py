"""Protobuf's wire format, read without protobuf: enough for Caffe's BlobProto (weights and mean files).

Each field is a varint key (number << 3 | wire type) then a varint (type 0), 8 bytes
(1), a length and that many bytes (2) or 4 bytes (5); fields a reader does not know are
skipped by their wire type, as protobuf does. A BlobProto holds ``shape`` (7, a
BlobShape whose ``dim`` is field 1, packed or not), ``data`` (5, float32, packed or
one at a time), ``double_data`` (8) and the legacy ``num/channels/height/width``
(1-4). Only numpy is needed: ``netcfg.data`` reads mean files with this module.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["WireError", "varint", "fields", "read_blob", "write_blob"]


class WireError(ValueError):
    """The bytes are not a complete protobuf message."""


def varint(buf: bytes | memoryview, i: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``buf[i]``."""
    out, shift = 0, 0
    while True:
        if i >= len(buf):
            raise WireError("a varint runs past the end")
        if shift > 63:
            raise WireError("a varint is longer than 10 bytes")
        b = buf[i]
        out |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return out, i
        shift += 7


def fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes | memoryview]]:
    """(field number, wire type, value) of one message; value is an int or the raw bytes."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        elif wire == 2:
            size, i = varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            raise WireError(f"wire type {wire} in field {number} (groups are not used by Caffe)")
        if i > len(buf):
            raise WireError(f"field {number} runs past the end")
        yield number, wire, value


def _packed_varints(value: int | bytes | memoryview) -> list[int]:
    if isinstance(value, int):  # one unpacked element
        return [value]
    out, i = [], 0
    while i < len(value):
        v, i = varint(value, i)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)  # int64
    return out


def read_blob(buf: bytes | memoryview) -> tuple[np.ndarray, list[int]]:
    """A BlobProto's values (flat float32) and its shape: ``shape.dim``, else the legacy
    num/channels/height/width (a missing one counts 1), else []. Raises WireError."""
    shape: list[int] = []
    legacy: dict[int, int] = {}
    chunks: list[np.ndarray] = []
    for number, wire, value in fields(buf):
        if number == 7 and wire == 2:
            for n, _, v in fields(value):
                if n == 1:
                    shape += _packed_varints(v)
        elif number in (1, 2, 3, 4) and wire == 0:
            legacy[number] = value
        elif number == 5 and wire in (2, 5):
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif number == 8 and wire in (1, 2):
            chunks.append(np.frombuffer(value, dtype="<f8").astype(np.float32))
    data = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if not shape and legacy:
        shape = [legacy.get(k, 1) for k in (1, 2, 3, 4)]
    return data, shape


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def write_blob(array: np.ndarray) -> bytes:
    """A BlobProto with ``shape`` and packed float32 ``data``."""
    def field(number: int, payload: bytes) -> bytes:
        return _varint_bytes(number << 3 | 2) + _varint_bytes(len(payload)) + payload

    dims = b"".join(_varint_bytes(d) for d in array.shape)
    return field(7, field(1, dims)) + field(5, np.ascontiguousarray(array, "<f4").tobytes())
