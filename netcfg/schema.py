"""JSON Schemas and the generated layer reference, both read off the registry."""

from __future__ import annotations

import inspect
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticUndefined

from netcfg.layers.base import LayerSpec
from netcfg.layers._registry import registry

__all__ = ["net_schema", "solver_schema", "layer_fields", "layer_summary", "layer_reference"]


def _schema(root: type[BaseModel]) -> dict[str, Any]:
    layers = list(registry().values())
    _, doc = models_json_schema([(m, "validation") for m in [root, *layers]], ref_template="#/$defs/{model}")
    defs = doc["$defs"]
    defs["Layer"] = {
        "oneOf": [{"$ref": f"#/$defs/{c.__name__}"} for c in layers],
        "discriminator": {"propertyName": "type",
                          "mapping": {t: f"#/$defs/{c.__name__}" for t, c in registry().items()}},
    }
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema", **defs[root.__name__], "$defs": defs}
    out["title"] = f"netcfg {root.__name__}"
    return out


def net_schema() -> dict[str, Any]:
    from netcfg.net.spec import NetSpec

    return _schema(NetSpec)


def solver_schema() -> dict[str, Any]:
    from netcfg.solver.spec import SolverSpec

    return _schema(SolverSpec)


def _type_name(ann: Any) -> str:
    """A short, readable rendering of a field's annotation (``list[int] | None``)."""
    origin, args = get_origin(ann), get_args(ann)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (list, dict, tuple):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if ann is type(None):
        return "null"
    return ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")


def layer_fields(cls: type[LayerSpec], *, own_only: bool = False) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) for each field of a layer type."""
    rows = []
    base = set(LayerSpec.model_fields) - {"type"}
    for name, f in cls.model_fields.items():
        if name == "type" or (own_only and name in base):
            continue
        if f.is_required():
            default = "required"
        elif f.default_factory is not None:
            default = repr(f.default_factory())
        else:
            default = repr(f.default) if f.default is not PydanticUndefined else ""
        rows.append((name, _type_name(f.annotation), default, f.description or ""))
    return rows


def layer_summary(cls: type[LayerSpec]) -> str:
    """The docstring's first paragraph, on one line: what the type computes."""
    return layer_description(cls)[0] if inspect.getdoc(cls) else ""


def layer_description(cls: type[LayerSpec]) -> list[str]:
    """Every paragraph of the docstring, each on one line: the summary, then the details
    a user must see (how netcfg deviates from Caffe's layer of that name)."""
    doc = inspect.getdoc(cls) or ""
    return [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]


def layer_reference() -> str:
    """docs/layers.md, generated; tests fail when the committed copy is stale."""
    lines = [
        "# Layer reference",
        "",
        "Generated from the layer registry by `python -m netcfg.schema > docs/layers.md`;",
        "do not edit by hand. Every layer also takes the common fields:",
        "",
        "| field | type | default | description |",
        "|---|---|---|---|",
    ]
    for name, ann, default, desc in layer_fields(registry()["InnerProduct"]):
        if name in LayerSpec.model_fields:
            lines.append(f"| `{name}` | {_md(ann)} | {_md(default)} | {_md(desc)} |")
    lines += ["", "## Types", ""]
    for t, cls in registry().items():
        lines.append(f"- [{t}](#{t.lower()}) ({cls.__module__.rsplit('.', 1)[-1]}): {_md(layer_summary(cls))}")
    for t, cls in registry().items():
        lines += ["", f"## {t}", ""]
        for paragraph in layer_description(cls):
            lines += [paragraph, ""]
        lines += [f"bottoms: {_n(cls.n_bottoms)}; tops: {_n(cls.n_tops)}"
                  + ("; a loss (default loss_weight 1)" if cls.is_loss else ""), ""]
        rows = layer_fields(cls, own_only=True)
        if rows:
            lines += ["| field | type | default | description |", "|---|---|---|---|"]
            lines += [f"| `{n}` | {_md(a)} | {_md(d)} | {_md(x)} |" for n, a, d, x in rows]
        else:
            lines.append("No parameters of its own.")
    return "\n".join(lines) + "\n"


def _n(bounds: tuple[int, int | None]) -> str:
    lo, hi = bounds
    return str(lo) if lo == hi else (f"{lo} or more" if hi is None else f"{lo} to {hi}")


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    print(layer_reference(), end="")
