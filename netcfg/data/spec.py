"""DataSpec: the ``data:`` section of a solver file, and the registry of data sources.

A data source is one loader function decorated with ``@register_source("name")``
in any module of ``netcfg.data`` (``sources.py`` holds digits and idx). The
``source:`` field accepts every registered name, lists them in its errors and in
the JSON Schema, so a new source is one decorated function and nothing else::

    @register_source("npz", needs_path=True)
    def load_npz(spec: DataSourceSpec, path: Path | None) -> dict[str, np.ndarray]:
        ...  # {"data": (N, C, H, W) uint8 or float, "label": (N,) int64}
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from netcfg.spec import Spec

__all__ = ["DataSourceSpec", "DataSpec", "SourceType", "register_source", "source_types"]


class SourceType(NamedTuple):
    """A registered data source: its name, loader, and whether it reads ``path``."""

    name: str
    load: Callable[..., dict[str, Any]]  # (spec, resolved path or None) -> {name: array}
    needs_path: bool
    doc: str


_SOURCES: dict[str, SourceType] = {}
_BUILTINS_LOADED = False


def register_source(name: str, *, needs_path: bool = False) -> Callable:
    """Decorator: make ``fn(spec, path)`` the loader of the source called ``name``."""

    def deco(fn: Callable) -> Callable:
        prev = _SOURCES.get(name)
        if prev is not None and prev.load is not fn:
            raise TypeError(
                f"data source '{name}' registered twice: by {prev.load.__module__}.{prev.load.__qualname__} "
                f"and by {fn.__module__}.{fn.__qualname__}"
            )
        doc = (fn.__doc__ or "").strip().splitlines()
        _SOURCES[name] = SourceType(name, fn, needs_path, doc[0] if doc else "")
        return fn

    return deco


def source_types() -> dict[str, SourceType]:
    """Every registered data source, the built-ins in ``netcfg.data`` included."""
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        package = importlib.import_module("netcfg.data")
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"netcfg.data.{info.name}")
    return dict(sorted(_SOURCES.items()))


def _source_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = list(source_types())


class DataSourceSpec(Spec):
    """One split of one data set and how its batches are made (Caffe's data layer)."""

    source: str = Field(..., description="registered data source: digits (scikit-learn 8x8 digits), idx (MNIST-format files), ...",
                        json_schema_extra=_source_enum)
    path: str | None = Field(None, min_length=1, description="directory of the files (idx); relative paths resolve against the solver file")
    split: Literal["train", "test"] = Field(..., description="which part of the data set")
    batch_size: int = Field(..., ge=1, description="samples per batch")
    shuffle: bool | None = Field(None, description="new random order every epoch; default: true for train, false for test")
    scale: float = Field(1.0, description="multiply raw pixel values (0.00390625 = 1/256 maps uint8 to [0, 1))")
    mean_value: list[float] | float | None = Field(None, description="subtracted before scale, one value or one per channel (Caffe's order)")
    std: list[float] | float | None = Field(None, description="divide by this after mean and scale, one value or one per channel")
    crop_size: int | None = Field(None, ge=1, description="crop images to crop_size x crop_size: random in training, centred in testing")
    pad: int = Field(0, ge=0, description="zero-pad images by this many pixels before a random training crop (random shifts)")
    mirror: bool = Field(False, description="flip training images left-right at random")
    drop_last: bool = Field(False, description="drop the last partial batch of each epoch")
    limit: int | None = Field(None, ge=1, description="use only the first N samples (quick runs)")
    inputs: dict[str, str] | None = Field(None, description="rename the source's tensors (data, label) to the net's input names")

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        known = source_types()
        if v not in known:
            # raised as a literal error so the located message lists the choices
            raise PydanticCustomError("literal_error", "Input should be {expected}",
                                      {"expected": " or ".join(f"'{n}'" for n in known)})
        return v

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: list[float] | float | None) -> list[float] | float | None:
        values = v if isinstance(v, list) else [v] if v is not None else []
        if any(s <= 0 for s in values):
            raise ValueError(f"every std value must be positive, got {v}")
        if isinstance(v, list) and not v:
            raise ValueError("std must list at least one value")
        return v

    @field_validator("mean_value")
    @classmethod
    def _nonempty_mean(cls, v: list[float] | float | None) -> list[float] | float | None:
        if isinstance(v, list) and not v:
            raise ValueError("mean_value must list at least one value")
        return v

    @field_validator("inputs")
    @classmethod
    def _distinct_names(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None:
            targets = list(v.values())
            dup = sorted({t for t in targets if targets.count(t) > 1})
            if dup:
                raise ValueError(f"inputs maps several tensors to the same name: {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> DataSourceSpec:
        kind = _SOURCES.get(self.source)
        if kind is not None and kind.needs_path and self.path is None:
            raise ValueError(f"missing required key 'path': source '{self.source}' reads its files from a directory, "
                             f"e.g. path: /usr/share/datasets/fashion-mnist")
        if self.shuffle is None:
            self.shuffle = self.split == "train"
        return self

    def resolved_path(self, base_dir: str | Path | None) -> Path | None:
        """``path`` with ``~`` expanded, made absolute against ``base_dir`` if relative."""
        if self.path is None:
            return None
        p = Path(self.path).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        return p.resolve()

    def input_name(self, tensor: str) -> str:
        """The net input a source tensor feeds (identity unless ``inputs`` renames it)."""
        return (self.inputs or {}).get(tensor, tensor)


class DataSpec(Spec):
    """The ``data:`` section: a train split, a test split, or both."""

    train: DataSourceSpec | None = Field(None, description="batches for training (TRAIN phase)")
    test: DataSourceSpec | None = Field(None, description="batches for testing (TEST phase)")
