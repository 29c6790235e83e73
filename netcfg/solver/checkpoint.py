"""Pickle-free state files: tensors and plain values in one safetensors file, written atomically.

A *tree* is nested dicts (str or int keys), lists, tuples, torch tensors, numpy
arrays and scalars, and Python int/float/bool/str/None/bytes: what optimizer
``state_dict()``s and RNG states are made of. ``save_tree`` stores each tensor
(and array) as a safetensors tensor named by where it sits (``state[0].exp_avg``)
and the rest as a JSON document in the file's metadata under ``netcfg.tree``,
with tagged objects for what JSON lacks::

    {"$tensor": name}  {"$ndarray": name, "scalar": bool}  {"$tuple": [...]}
    {"$bytes": base64}  {"$float": "nan" | "inf" | "-inf"}
    {"$dict": [[key, value], ...]}   (a dict with int keys or a "$..." str key)

Loading never runs code (no pickle): a file that is not exactly such a
document is refused with a ``CheckpointError`` naming it.
"""

from __future__ import annotations

import base64
import json
import math
import os

import numpy as np
import safetensors.torch
import torch

from netcfg.errors import NetcfgError, format_path

__all__ = ["CheckpointError", "WriteError", "save_tree", "load_tree", "atomic_write_bytes"]

TREE_KEY = "netcfg.tree"
FORMAT_KEY = "netcfg.format"
FORMAT = "1"  # bump when the tree encoding changes incompatibly


class CheckpointError(NetcfgError):
    """A state file that cannot be read back: missing, truncated, foreign or corrupt."""

    def __init__(self, path: str | os.PathLike, message: str):
        super().__init__(f"{os.fspath(path)}: {message}")
        self.path = os.fspath(path)
        self.message = message

    def render(self) -> str:  # FILE: error: ..., as a config error without a line
        return f"{self.path}: error: {self.message}"


class WriteError(NetcfgError, OSError):
    """A file that could not be written (disk full, no permission); an older file of
    that name is left as it was. Exit code 1: the run had started."""

    exit_code = 1

    def __init__(self, path: str | os.PathLike, cause: OSError, note: str = ""):
        OSError.__init__(self, cause.errno, cause.strerror or str(cause))
        self.path = os.fspath(path)
        self.note = note

    def __str__(self) -> str:
        return f"{self.path}: cannot write: {self.strerror}{self.note}"

    def render(self) -> str:
        return f"{self.path}: error: cannot write: {self.strerror}{self.note}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never a mix.

    The bytes go to ``path.tmp-<pid>`` in the same directory (``os.replace`` is
    only atomic within a file system), are flushed to disk, then renamed over
    ``path``. A failure (disk full, no permission) removes the temporary file and
    raises ``WriteError``.
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(path, e) from None
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _fsync_dir(directory: str) -> None:
    # Makes the rename itself durable; POSIX only, and best effort there.
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_tree(
    path: str | os.PathLike, tree, *, metadata: dict[str, str] | None = None
) -> None:
    """Write ``tree`` (see the module docstring) and string ``metadata`` to ``path`` atomically."""
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if key in (TREE_KEY, FORMAT_KEY):
            raise ValueError(f"metadata key '{key}' is reserved for netcfg")
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
    tensors: dict[str, torch.Tensor] = {}
    document = _encode(tree, (), tensors, set())
    metadata[TREE_KEY] = json.dumps(document, allow_nan=False, separators=(",", ":"))
    metadata[FORMAT_KEY] = FORMAT
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=metadata))


def load_tree(path: str | os.PathLike) -> tuple[object, dict[str, str]]:
    """Read a file written by ``save_tree``: ``(tree, metadata)``, tensors on the CPU."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    try:
        # validates the whole layout: header, offsets, and that the data covers the file
        tensors = safetensors.torch.load(data)
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
    except Exception as e:  # the parser's errors name no file; ours does
        raise CheckpointError(path, f"not a safetensors file ({e})") from None
    metadata = dict(header.get("__metadata__") or {})
    if TREE_KEY not in metadata:
        raise CheckpointError(path, f"not a netcfg state file (no '{TREE_KEY}' metadata)")
    if metadata.get(FORMAT_KEY) != FORMAT:
        raise CheckpointError(
            path,
            f"unsupported netcfg state format {metadata.get(FORMAT_KEY)!r} "
            f"(this netcfg reads format {FORMAT})",
        )
    used: set[str] = set()
    try:
        tree = _decode(json.loads(metadata.pop(TREE_KEY)), tensors, used)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as e:
        raise CheckpointError(path, f"corrupt state tree ({e})") from None
    if used != tensors.keys():
        extra = ", ".join(sorted(tensors.keys() - used))
        raise CheckpointError(path, f"tensors not in the state tree: {extra}")
    metadata.pop(FORMAT_KEY)
    return tree, metadata


def _encode(node, path: tuple, tensors: dict, storages: set):
    if node is None or isinstance(node, (bool, str)):
        return node
    if isinstance(node, int):  # after bool, which is an int too
        return int(node)
    if isinstance(node, float):
        if math.isfinite(node):
            return float(node)
        return {"$float": "nan" if math.isnan(node) else ("inf" if node > 0 else "-inf")}
    if isinstance(node, torch.Tensor):
        return {"$tensor": _add_tensor(node, path, tensors, storages)}
    if isinstance(node, (np.ndarray, np.generic)):
        scalar = isinstance(node, np.generic)
        array = np.array(node, order="C")  # a writable copy; 0-d for a scalar
        if array.dtype.hasobject or array.dtype.kind not in "biufc":
            raise TypeError(f"{_where(path)}: cannot store numpy dtype {array.dtype}")
        name = _add_tensor(torch.from_numpy(array), path, tensors, storages)
        return {"$ndarray": name, "scalar": scalar}
    if isinstance(node, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(node)).decode("ascii")}
    if isinstance(node, tuple):
        return {"$tuple": [_encode(v, path + (i,), tensors, storages) for i, v in enumerate(node)]}
    if isinstance(node, list):
        return [_encode(v, path + (i,), tensors, storages) for i, v in enumerate(node)]
    if isinstance(node, dict):
        for key in node:
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"{_where(path)}: dict keys must be str or int, got {key!r}")
        items = [(k, _encode(v, path + (k,), tensors, storages)) for k, v in node.items()]
        if all(isinstance(k, str) and not k.startswith("$") for k in node):
            return dict(items)
        return {"$dict": [[k, v] for k, v in items]}
    raise TypeError(f"{_where(path)}: cannot store a {type(node).__name__} in a state file")


def _add_tensor(t: torch.Tensor, path: tuple, tensors: dict, storages: set) -> str:
    t = t.detach().cpu().contiguous()
    # safetensors refuses tensors that share memory; a repeat gets its own copy
    if t.numel() and t.untyped_storage().data_ptr() in storages:
        t = t.clone()
    if t.numel():
        storages.add(t.untyped_storage().data_ptr())
    name = base = format_path(path) or "$"
    n = 1
    while name in tensors:  # {"a.b": x} and {"a": {"b": y}} share a path text
        n += 1
        name = f"{base}#{n}"
    tensors[name] = t
    return name


def _where(path: tuple) -> str:
    return f"tree at '{format_path(path)}'" if path else "tree"


def _decode(node, tensors: dict, used: set):
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, tensors, used) for v in node]
    if not isinstance(node, dict):
        raise TypeError(f"unexpected JSON value {node!r}")
    tags = [k for k in node if k.startswith("$")]
    if not tags:
        return {k: _decode(v, tensors, used) for k, v in node.items()}
    tag = tags[0]
    if len(tags) > 1 or set(node) - {tag, "scalar"}:
        raise ValueError(f"malformed tagged object {sorted(node)}")
    if tag == "$tensor" or tag == "$ndarray":
        name = node[tag]
        if not isinstance(name, str) or name not in tensors:
            raise KeyError(f"missing tensor {name!r}")
        used.add(name)
        if tag == "$tensor":
            return tensors[name]
        array = tensors[name].numpy()
        return array[()] if node.get("scalar") else array
    if tag == "$tuple":
        return tuple(_decode(v, tensors, used) for v in _as_list(node[tag]))
    if tag == "$bytes":
        return base64.b64decode(node[tag], validate=True)
    if tag == "$float":
        value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(node[tag])
        if value is None:
            raise ValueError(f"bad $float {node[tag]!r}")
        return value
    if tag == "$dict":
        out = {}
        for pair in _as_list(node[tag]):
            key, value = _as_list(pair)
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"bad dict key {key!r}")
            out[key] = _decode(value, tensors, used)
        return out
    raise ValueError(f"unknown tag {tag!r}")


def _as_list(value) -> list:
    if not isinstance(value, list):
        raise TypeError(f"expected a JSON list, got {value!r}")
    return value
