"""The layer registry: ``@register``, ``registry()``, ``lookup(name)``, and ``AnyLayer``.

One registry for every layer type: a built-in registers itself when its file under
``netcfg/layers/`` is imported, a plugin when its module is (a net file's
``plugins:``, ``--plugin``, or a ``netcfg.layers`` entry point found by name). A
second class under the same name is an error naming both, unless it is the first one
defined again (the same module and class name: a notebook cell run twice). ``AnyLayer`` is the
pydantic field type of a net's ``layers:`` list: each entry is validated by the
class its ``type`` names.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Annotated, Any, Literal

from pydantic import PlainSerializer, PlainValidator, SerializationInfo, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from netcfg.errors import NetcfgError, did_you_mean
from netcfg.layers.base import LayerSpec

__all__ = ["AnyLayer", "RegistryError", "lookup", "register", "registry"]


class RegistryError(NetcfgError):
    pass


_REGISTRY: dict[str, type[LayerSpec]] = {}
_BUILTINS_LOADED = False


def register(cls: type[LayerSpec]) -> type[LayerSpec]:
    """Class decorator: make ``cls`` the layer type named by its ``type`` Literal."""
    ann = cls.model_fields["type"].annotation
    args = getattr(ann, "__args__", ())
    if getattr(ann, "__origin__", None) is not Literal or len(args) != 1:
        raise TypeError(f"{cls.__qualname__}.type must be Literal['LayerName']")
    name = args[0]
    prev = _REGISTRY.get(name)
    # the same class defined again (a notebook cell run twice, importlib.reload) replaces the first
    redefined = prev is not None and (prev.__module__, prev.__qualname__) == (cls.__module__, cls.__qualname__)
    if prev is not None and prev is not cls and not redefined:
        raise RegistryError(
            f"layer type '{name}' registered twice: by {prev.__module__}.{prev.__qualname__} "
            f"and by {cls.__module__}.{cls.__qualname__}"
        )
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:  # caught at import, not when a net first uses the type
        raise TypeError(f"layer type {cls.__qualname__} does not define {', '.join(missing)} "
                        "(see docs/adding-a-layer.md)")
    _REGISTRY[name] = cls
    return cls


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("netcfg.layers")


def registry() -> dict[str, type[LayerSpec]]:
    """Every registered layer type (built-ins, plus plugins loaded so far)."""
    _load_builtins()
    return dict(sorted(_REGISTRY.items()))


def _entry_point(name: str) -> bool:
    """Load the ``netcfg.layers`` entry point called ``name``, if one exists."""
    for ep in metadata.entry_points(group="netcfg.layers"):
        if ep.name == name:
            ep.load()  # importing the module runs its @register
            return name in _REGISTRY
    return False


def lookup(name: str) -> type[LayerSpec]:
    """The spec class for a type name; KeyError if unknown (after trying plugins)."""
    _load_builtins()
    if name in _REGISTRY or _entry_point(name):
        return _REGISTRY[name]
    raise KeyError(name)


def _dispatch(value: Any, info: ValidationInfo) -> LayerSpec:
    if isinstance(value, LayerSpec):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("layer_mapping", "a layer must be a mapping with name and type, got {value}", {"value": repr(value)})
    name = value.get("type")
    if name is None:
        raise PydanticCustomError("layer_type_missing", "layer has no 'type' key")
    if not isinstance(name, str):  # `type: [SELU]` or `type: 1`: a name is one string
        raise PydanticCustomError("layer_type", "a layer's type is one type name, got {value}{hint}",
                                  {"value": repr(name), "hint": _type_hint(name)})
    try:
        cls = lookup(name)
    except KeyError:
        hint = did_you_mean(name, _REGISTRY, show_all=0)
        raise PydanticCustomError(
            "layer_type", "unknown layer type '{name}' ({hint}`netcfg layers` lists all types)",
            {"name": str(name), "hint": f"{hint}; " if hint else ""},
        ) from None
    return cls.model_validate(value, context=info.context)


def _type_hint(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return f" (write type: {value[0]})"
    return " (`netcfg layers` lists all types)"


def _serialize(value: LayerSpec, info: SerializationInfo) -> dict[str, Any]:
    # serialise as the concrete type (the declared LayerSpec would drop its fields)
    return value.model_dump(mode=info.mode, exclude_unset=info.exclude_unset,
                            exclude_defaults=info.exclude_defaults, exclude_none=info.exclude_none)


# A field holding any registered layer: validated by the class its `type` names.
# The JSON Schema points at one definition that `netcfg schema` fills with all types.
AnyLayer = Annotated[
    LayerSpec,
    PlainValidator(_dispatch),
    PlainSerializer(_serialize),
    WithJsonSchema({"$ref": "#/$defs/Layer"}),
]
