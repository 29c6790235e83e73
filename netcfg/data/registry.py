"""The registry of data sources: ``@register_source`` and ``source_types()``.

A data source is one loader function decorated with ``@register_source("name")``
in any module of ``netcfg.data``. A source with keys of its own (csv's
``columns``, cifar100's ``label``) passes a ``DataSourceSpec`` subclass
(spec.py) as ``spec=``::

    @register_source("npz", needs_path=True, spec=ArraysSpec)
    def load_npz(spec: ArraysSpec, path: Path, base_dir: Path | None) -> dict[str, np.ndarray]:
        ...  # {"data": (N, C, H, W) uint8 or float, "label": (N,) int64}

``path`` is the spec's ``path`` made absolute, ``base_dir`` the solver file's
directory (for other paths the spec names); see ``split.py`` for what a loader
may return.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from netcfg.data.spec import DataSourceSpec

__all__ = ["SourceType", "known_source", "register_source", "source_enum", "source_types"]


class SourceType(NamedTuple):
    """A registered data source: its name, loader, whether it reads ``path``, its spec class."""

    name: str
    load: Callable[..., Any]  # (spec, resolved path or None) -> {name: array} or SplitData
    needs_path: bool
    doc: str
    spec: type[DataSourceSpec]


_SOURCES: dict[str, SourceType] = {}
_BUILTINS_LOADED = False


def register_source(name: str, *, needs_path: bool = False, spec: type[DataSourceSpec] | None = None) -> Callable:
    """Decorator: make ``fn(spec, path)`` the loader of the source called ``name``."""

    def deco(fn: Callable) -> Callable:
        prev = _SOURCES.get(name)
        if prev is not None and prev.load is not fn:
            raise TypeError(
                f"data source '{name}' registered twice: by {prev.load.__module__}.{prev.load.__qualname__} "
                f"and by {fn.__module__}.{fn.__qualname__}"
            )
        from netcfg.data.spec import DataSourceSpec  # loaded: the loader's module imported it

        doc = (fn.__doc__ or "").strip().splitlines()
        _SOURCES[name] = SourceType(name, fn, needs_path, doc[0] if doc else "", spec or DataSourceSpec)
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


def source_enum(schema: dict[str, Any]) -> None:
    """The JSON Schema of ``source:``: every registered name (a plugin's too), listed in its
    description as well, which a hand-written list left incomplete (image_features)."""
    schema["enum"] = list(source_types())
    schema["description"] = "registered data source: " + ", ".join(schema["enum"])


# data set names users write as a source, and the source that reads them
_DATA_SETS = {"mnist": "idx", "fashion-mnist": "idx", "fashion_mnist": "idx", "fashionmnist": "idx", "kmnist": "idx",
              "emnist": "idx", "cifar": "cifar10", "cifar-10": "cifar10", "cifar-100": "cifar100"}


def known_source(v: str) -> str:
    """``v`` if a source of that name is registered; a data set's name gets the source that reads it."""
    known = source_types()
    if v.lower() in _DATA_SETS and v not in known:
        fetch = f"; `netcfg data fetch {v.lower()}` downloads it" if v.lower() in ("mnist", "fashion-mnist") else ""
        raise ValueError(f"'{v}' is a data set, not a source: its files are read by "
                         f"source: {_DATA_SETS[v.lower()]}{fetch}")
    if v not in known:
        # raised as a literal error so the located message lists the choices
        raise PydanticCustomError("literal_error", "Input should be {expected}",
                                  {"expected": " or ".join(f"'{n}'" for n in known)})
    return v
