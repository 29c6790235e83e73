"""The pydantic base every netcfg schema derives from, and pydantic errors -> ConfigErrors.

``Spec`` forbids unknown keys. ``validate`` runs a model over a located Source and
turns every pydantic error into a located ConfigError with a hint: the nearest
spelling for an unknown key, the valid choices for an enum, the bound for a number.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator

from netcfg.errors import ConfigError, ConfigErrors, FieldError, did_you_mean
from netcfg.source import Source, value_at

__all__ = ["Spec", "validate", "errors_from_pydantic"]

M = TypeVar("M", bound=BaseModel)


class Spec(BaseModel):
    """Base of all config schemas: unknown keys are errors, defaults are validated, numbers are finite."""

    # allow_inf_nan=False: a .inf or .nan (1e400 reads as inf) in any rate, scale or weight
    # only shows up as a NaN loss later; no field means "unbounded" by infinity
    model_config = ConfigDict(extra="forbid", validate_default=True, protect_namespaces=(), strict=True,
                              allow_inf_nan=False)

    @classmethod
    def unknown_key_hint(cls, key: str) -> str | None:
        """What to say of an unknown ``key`` when there is more to say than its nearest spelling."""
        return None

    @model_validator(mode="before")
    @classmethod
    def _remember_model(cls, data: Any, info: ValidationInfo) -> Any:
        # Record which model validated which mapping so an unknown-key error can
        # list that model's keys. Keyed by id(): the mapping outlives validation.
        if isinstance(data, dict) and isinstance(info.context, dict):
            info.context.setdefault("models", {})[id(data)] = cls
        return data

    @field_validator("*")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        # names become file names and paths; the OS refuses a NUL with a ValueError deep
        # inside pathlib, so say it here, at the key
        if isinstance(v, str) and "\0" in v:
            raise ValueError(f"{v!r} contains a NUL character (\\0), which no name or path can hold")
        return v


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

# type errors, whose hint is the field's description (what the value should be)
_TYPE_ERRORS = ("_type", "_parsing", "int_from_float")


def errors_from_pydantic(
    exc: ValidationError, root: Any, context: dict, *, prefix: tuple = ()
) -> list[ConfigError]:
    out: list[ConfigError] = []
    seen = set()
    raw = [(prefix + tuple(e["loc"]), e) for e in exc.errors(include_url=False)]
    # A misspelt required key shows up twice: unknown 'num_ouput' and missing
    # 'num_output'. The unknown key's hint already names the fix; drop the other.
    typos = set()
    for path, e in raw:
        if e["type"] == "extra_forbidden":
            cls = context["models"].get(id(value_at(root, path[:-1])))
            near = difflib.get_close_matches(str(path[-1]), list(cls.model_fields) if cls else [], n=1, cutoff=0.6)
            typos.update((path[:-1], n) for n in near)
    for path, e in raw:
        kind = e["type"]
        if kind == "missing" and (path[:-1], path[-1]) in typos:
            continue
        path = _as_written(root, path)
        parent = value_at(root, path[:-1])
        value = e.get("input")
        ctx = e.get("ctx") or {}
        at_key = False
        hint = None
        if kind == "extra_forbidden":
            cls = context["models"].get(id(parent))
            key = path[-1]
            valid = [n for n in cls.model_fields] if cls else []
            msg = f"unknown key '{key}'"
            if cls is not None and "type" in cls.model_fields and isinstance(parent, dict) and parent.get("type"):
                # a layer's type names the layer; a solver's names its optimizer
                kind_of = "optimizer" if cls.__name__ == "SolverSpec" else "layer"
                msg += f" for {parent.get('type')} {kind_of}"
            hint = (cls.unknown_key_hint(str(key)) if cls else None) or did_you_mean(str(key), valid, show_all=0) or None
            if hint is None and valid:
                hint = "valid keys: " + ", ".join(valid)
            at_key = True
        elif kind == "missing":
            msg = f"missing required key '{path[-1]}'"
            hint = _description(context, root, path)
            path = path[:-1]
        elif kind in ("literal_error", "enum"):
            choices = _QUOTED.findall(ctx.get("expected", ""))
            msg = f"invalid value {_show(value)}"
            hint = did_you_mean(str(value), choices) if choices else None
        elif kind == "layer_type":
            msg = e["msg"]
            path = path + ("type",)
        elif kind == "layer_type_missing":
            msg, hint = e["msg"], "add `type: <LayerType>`; `netcfg layers` lists all types"
        elif kind.startswith("union_tag"):
            msg = e["msg"]
        elif kind.startswith("value_error"):
            msg = e["msg"].removeprefix("Value error, ")
            cause = ctx.get("error")
            if isinstance(cause, FieldError) and isinstance(value_at(root, path), dict):
                path = path + cause.key  # a cross-field rule blaming one key
        else:
            msg = e["msg"][0].lower() + e["msg"][1:]
            msg = msg.replace(" after validation", "")  # too_short/too_long: pydantic's jargon
            if kind == "model_type":  # "or instance of BestSpec": a Python class the file cannot hold
                msg = msg.split(" or instance of ")[0]
            if "got " not in msg and value not in ([], {}):  # custom errors may name the value already
                msg += f", got {_show(value)}"
            if kind.endswith(_TYPE_ERRORS):
                hint = _description(context, root, path)
        err = ConfigError(msg, path, hint=hint)
        err.at_key = at_key  # type: ignore[attr-defined]
        ident = (path, msg)
        if ident not in seen:
            seen.add(ident)
            out.append(err)
    return out


def _show(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it: YAML flow style, cut short when long."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {_show(v, limit)}" for k, v in value.items()) + "}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_show(v, limit) for v in value) + "]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _description(context: dict, root: Any, path: tuple) -> str | None:
    """The description of the field at ``path``, if a model validated its parent."""
    cls = context["models"].get(id(value_at(root, path[:-1])))
    field = cls.model_fields.get(str(path[-1])) if cls is not None and path else None
    return field.description if field is not None else None


def _as_written(root: Any, path: tuple) -> tuple:
    """The key path as the file spells it. Shorthands wrap values before pydantic sees
    them (``kernel_size: 5`` -> ``[5]``, ``data: [1, 28, 28]`` -> ``{shape: [...]}``);
    drop the path steps that exist only inside such a wrapper."""
    node, out = root, []
    for i, p in enumerate(path):
        if isinstance(p, int) and not isinstance(node, list):
            continue  # a scalar or mapping wrapped in a list
        if isinstance(p, str) and isinstance(node, list):
            continue  # a list wrapped in a mapping
        out.append(p)
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return tuple(out) + tuple(path[i + 1:])  # past what the file holds (a missing key)
    return tuple(out)
