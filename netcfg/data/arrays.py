"""Sources npz and npy: named numpy arrays to named tensors, never unpickled.

``arrays:`` maps each tensor (a net input, after ``inputs:`` renaming) to an
array: a key of the .npz file, or a .npy file in the ``path`` directory. Every
array's first dimension is the sample. Element types as delivered: floats as
float32; integer arrays that are not images as int64 (labels, ids for Embed);
bool as bool. Image arrays are (N, C, H, W), or (N, H, W) for one channel, or
(N, H, W, C) with ``channels_last``; they get the transforms.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from netcfg.data.spec import DataSourceSpec
from netcfg.data.registry import register_source
from netcfg.data.split import Arrays
from netcfg.errors import ConfigError, ConfigErrors, did_you_mean

__all__ = ["ArraysSpec", "convert_array"]


class ArraysSpec(DataSourceSpec):
    """npz / npy: which array feeds which tensor, and the layout of image arrays."""

    arrays: dict[str, str] = Field(..., min_length=1, description="tensor name -> array (npz: a key of the file; npy: a file in path)")
    channels_last: bool = Field(False, description="image arrays are (N, H, W, C), as Keras and TensorFlow store them")

    @field_validator("arrays")
    @classmethod
    def _nonempty_names(cls, v: dict[str, str]) -> dict[str, str]:
        empty = [k for k, a in v.items() if not a]
        if empty:
            raise ValueError(f"arrays: no array named for {', '.join(empty)}")
        return v


@register_source("npz", needs_path=True, spec=ArraysSpec)
def load_npz(spec: ArraysSpec, path: Path, base_dir: Path | None = None) -> Arrays:
    """Arrays of one .npz file (numpy.savez), by key."""
    if not path.is_file():
        raise ConfigError(f"'{path}' is not a file" if path.exists() else f"file '{path}' does not exist", ("path",),
                          hint="give the .npz file; a relative path resolves against the solver file's directory")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            out, errors = {}, []
            for name, key in spec.arrays.items():
                if key not in keys:
                    errors.append(ConfigError(f"'{path.name}' has no array '{key}'", ("arrays", name),
                                              hint=did_you_mean(key, keys)))
                    continue
                out[name] = _checked(npz, key, name, path.name, spec.channels_last, errors)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ConfigError(f"'{path}' is not a readable .npz file ({e})", ("path",),
                          hint="write it with numpy.savez; the file may be truncated") from None
    return _done(out, errors)


@register_source("npy", needs_path=True, spec=ArraysSpec)
def load_npy(spec: ArraysSpec, path: Path, base_dir: Path | None = None) -> Arrays:
    """One .npy file (numpy.save) per tensor, in the ``path`` directory."""
    if not path.is_dir():
        raise ConfigError(f"'{path}' is not a directory" if path.exists() else f"directory '{path}' does not exist",
                          ("path",), hint="give the directory holding the .npy files")
    present = sorted(p.name for p in path.glob("*.npy"))
    out, errors = {}, []
    for name, file in spec.arrays.items():
        f = path / (file if file.endswith(".npy") else file + ".npy")
        if not f.is_file():
            errors.append(ConfigError(f"no file '{f.name}' in '{path}'", ("arrays", name),
                                      hint=did_you_mean(f.name, present) or "the directory has no .npy files"))
            continue
        try:
            out[name] = _checked({f.name: np.load(f, allow_pickle=False)}, f.name, name, f.name, spec.channels_last, errors)
        except (OSError, ValueError, EOFError) as e:
            errors.append(ConfigError(f"'{f}' is not a readable .npy file ({e})", ("arrays", name),
                                      hint="write it with numpy.save; object arrays (pickles) are refused"))
    return _done(out, errors)


def _checked(store, key: str, name: str, file: str, channels_last: bool, errors: list) -> np.ndarray | None:
    try:
        array = store[key]
    except ValueError as e:  # object arrays: allow_pickle=False refuses them
        errors.append(ConfigError(f"array '{key}' of '{file}' cannot be read without unpickling ({e})", ("arrays", name),
                                  hint="store numbers (numpy.save of a numeric array), not Python objects"))
        return None
    try:
        return convert_array(array, channels_last)
    except ValueError as e:
        errors.append(ConfigError(f"array '{key}' of '{file}': {e}", ("arrays", name)))
        return None


def convert_array(array: np.ndarray, channels_last: bool = False) -> np.ndarray:
    """An array as netcfg delivers it (see the module docstring); ValueError if unusable."""
    if array.ndim == 0:
        raise ValueError("is a single value; the first dimension must be the sample")
    if array.dtype.kind not in "biuf":
        what = "strings" if array.dtype.kind in "US" else "objects" if array.dtype.kind == "O" else array.dtype
        raise ValueError(f"holds {what} ({array.dtype}), not numbers; store labels as integer ids, "
                         "e.g. np.unique(names, return_inverse=True)[1]")
    image = array.dtype == np.uint8 and array.ndim == 3 or array.ndim == 4
    if image and array.ndim == 3:
        array = array[:, None]                                   # (N, H, W) -> (N, 1, H, W)
    elif image and channels_last:
        array = array.transpose(0, 3, 1, 2)                      # (N, H, W, C) -> (N, C, H, W)
    if array.dtype.kind == "f":
        array = array.astype(np.float32, copy=False)
        finite = np.isfinite(array)
        if not finite.all():  # a NaN would train as a NaN loss, found iterations later
            where = np.argwhere(~finite)[0]
            raise ValueError(f"holds {int((~finite).sum()):,} NaN or infinite value(s), first {array[tuple(where)]} at "
                             f"index {list(map(int, where))}; clean or impute them first")
    elif array.dtype.kind in "iu" and not image:
        array = _cast(array, np.int64)
    elif array.dtype.kind in "iu" and array.dtype not in (np.uint8, np.int16, np.int32, np.int64):
        array = _cast(array, np.int32)                           # torch lacks uint16/uint32 arithmetic
    return np.ascontiguousarray(array)


def _cast(array: np.ndarray, dtype) -> np.ndarray:
    """``array`` as ``dtype``, refusing values that would wrap around (uint64 labels past 2**63)."""
    top = np.iinfo(dtype).max
    if array.dtype.kind == "u" and array.size and np.iinfo(array.dtype).max > top and array.max() > top:
        raise ValueError(f"holds {array.max()} ({array.dtype}), more than {np.dtype(dtype).name} holds ({top})")
    return array.astype(dtype, copy=False)


def _done(out: dict, errors: list[ConfigError]) -> Arrays:
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    return Arrays(out, origins={name: ("arrays", name) for name in out})
