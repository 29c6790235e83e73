"""The pydantic base every netcfg schema derives from, and pydantic errors -> ConfigErrors.

``Spec`` forbids unknown keys. ``validate`` runs a model over a located Source and
turns every pydantic error into a located ConfigError with a hint: the nearest
spelling for an unknown key, the valid choices for an enum, the bound for a number.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from netcfg.errors import ConfigError, ConfigErrors, did_you_mean
from netcfg.source import Source

__all__ = ["Spec", "validate", "errors_from_pydantic"]

M = TypeVar("M", bound=BaseModel)


class Spec(BaseModel):
    """Base of all config schemas: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True, protect_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _remember_model(cls, data: Any, info: ValidationInfo) -> Any:
        # Record which model validated which mapping so an unknown-key error can
        # list that model's keys. Keyed by id(): the mapping outlives validation.
        if isinstance(data, dict) and isinstance(info.context, dict):
            info.context.setdefault("models", {})[id(data)] = cls
        return data


def validate(model: type[M], src: Source, *, path: tuple = ()) -> M:
    """Validate ``src.data`` (or the sub-document at ``path``) against ``model``."""
    data = src.data
    for p in path:
        data = data[p]
    context: dict[str, Any] = {"models": {}}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        errors = errors_from_pydantic(e, src.data, context, prefix=path)
        raise ConfigErrors([_locate(src, err) for err in errors]) from None


def _locate(src: Source, err: ConfigError) -> ConfigError:
    at_key = getattr(err, "at_key", False)
    return src.locate(err, at_key=at_key)


_QUOTED = re.compile(r"'([^']*)'")


def errors_from_pydantic(
    exc: ValidationError, root: Any, context: dict, *, prefix: tuple = ()
) -> list[ConfigError]:
    out: list[ConfigError] = []
    seen = set()
    for e in exc.errors(include_url=False):
        path = prefix + tuple(e["loc"])
        kind = e["type"]
        parent = _walk(root, path[:-1])
        value = e.get("input")
        at_key = False
        hint = None
        if kind == "extra_forbidden":
            cls = context["models"].get(id(parent))
            key = path[-1]
            valid = [n for n in cls.model_fields] if cls else []
            msg = f"unknown key '{key}'"
            if cls is not None and "type" in cls.model_fields and isinstance(parent, dict):
                msg += f" for {parent.get('type')} layer" if parent.get("type") else ""
            hint = did_you_mean(str(key), valid, show_all=0) or None
            if hint is None and valid:
                hint = "valid keys: " + ", ".join(valid)
            at_key = True
        elif kind == "missing":
            msg = f"missing required key '{path[-1]}'"
            path = path[:-1]
        elif kind in ("literal_error", "enum"):
            choices = _QUOTED.findall(e.get("ctx", {}).get("expected", ""))
            msg = f"invalid value {value!r}"
            hint = did_you_mean(str(value), choices) if choices else None
        elif kind == "layer_type":
            msg = e["msg"]
            path = path + ("type",)
        elif kind.startswith("union_tag"):
            msg = e["msg"]
        else:
            msg = e["msg"][0].lower() + e["msg"][1:]
            if kind.startswith("value_error"):
                msg = msg.removeprefix("value error, ")
            elif not isinstance(value, (dict, list)) and value is not None:
                msg += f", got {value!r}"
            elif value is None:
                msg += ", got null"
        err = ConfigError(msg, path, hint=hint)
        err.at_key = at_key  # type: ignore[attr-defined]
        ident = (path, msg)
        if ident not in seen:
            seen.add(ident)
            out.append(err)
    return out


def _walk(root: Any, path: tuple) -> Any:
    node = root
    for p in path:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return None
    return node
