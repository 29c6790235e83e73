"""Edits of a layer written as plain data (a dict from YAML), which block expansion makes.

Before validation a layer is a dict: its ``bottom``/``top`` a name or a list, its top
defaulting to its name. These read and rewrite them (scoping, an in-place tail renamed
to the instance's output) and walk nested values.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from netcfg.errors import KeyPath
from netcfg.layers.base import Rule

__all__ = ["add_rules", "blobs", "listed", "in_place_blob", "is_layer_list", "put_key", "rename_blob", "scope_shares", "tops", "walk"]


def put_key(layer: dict, key: str, value: Any) -> None:
    """Set bottom/top where Caffe writes them, after name and type (for `netcfg expand`)."""
    if key in layer:
        layer[key] = value
        return
    head = {k: layer.pop(k) for k in ("name", "type", "bottom") if k in layer}
    rest = dict(layer)
    layer.clear()
    layer.update(head)
    layer[key] = value
    layer.update(rest)


def blobs(layer: dict, key: str) -> list:
    value = layer.get(key, layer.get("name") if key == "top" else None)
    return value if isinstance(value, list) else [value]


def in_place_blob(layers: list) -> str | None:
    """The blob a copy's last layer works on in place (``bottom: x, top: x``, a Dropout or
    ReLU; the bottom may be left to default) when an earlier layer of the copy makes it; else None."""
    last, before = layers[-1], layers[-2] if len(layers) > 1 else None
    top = blobs(last, "top")[0]
    # no bottom: the previous layer's first top (`{name: drop, type: Dropout, top: ip}`)
    bottoms = blobs(last, "bottom") if "bottom" in last else blobs(before, "top")[:1] if isinstance(before, dict) else []
    if not isinstance(top, str) or top not in bottoms:
        return None
    made = any(isinstance(x, dict) and top in blobs(x, "top") for x in layers[:-1])
    return top if made else None


def rename_blob(layer: Any, old: str, new: str) -> bool:
    """Blob ``old`` -> ``new`` in a layer's bottom and top; True if it makes ``new``."""
    if not isinstance(layer, dict):
        return False
    if "bottom" in layer:
        layer["bottom"] = [new if b == old else b for b in layer["bottom"]] if isinstance(layer["bottom"], list) \
            else new if layer["bottom"] == old else layer["bottom"]
    tops = blobs(layer, "top")
    if old not in tops:
        return False
    renamed = [new if t == old else t for t in tops]
    put_key(layer, "top", renamed if isinstance(layer.get("top"), list) else renamed[0])
    return True


def tops(item: dict) -> list[str]:
    """Blob names an entry of a block produces (its tops, or its name)."""
    top = item.get("top", item.get("name"))
    return [t for t in (top if isinstance(top, list) else [top]) if isinstance(t, str)]


def is_layer_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(x, dict) and ("type" in x or "block" in x) for x in value)


def scope_shares(param: Any, prefix: str) -> None:
    """``param: [{name: w}]`` -> ``{name: <prefix>.w}`` in place; a leading '/' keeps a name global."""
    for p in param if isinstance(param, list) else [param]:
        if isinstance(p, dict) and isinstance(p.get("name"), str):
            n = p["name"]
            p["name"] = n[1:] if n.startswith("/") else f"{prefix}.{n}"


def walk(node: Any, path: KeyPath):
    """(key path, value) of every node under ``node``."""
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from walk(v, path + (k,))


def add_rules(layer: dict, include: list[Rule], exclude: list[Rule]) -> bool:
    """A block instance's ``include``/``exclude`` on one of its layers: its exclude rules are
    added to the layer's; its include rules are and-ed with the layer's (each pair of rules
    becomes one that needs both). False when no pair can ever match (an instance kept in
    TEST only around a TRAIN-only Dropout): the layer is never in the net."""
    if exclude:
        layer["exclude"] = [*listed(layer.get("exclude")), *(_dump(r) for r in exclude)]
    if not include:
        return True
    own = listed(layer.get("include"))
    try:
        mine = [Rule.model_validate(r) for r in own] or [Rule()]
    except ValidationError:  # the layer's validation reports it, at its line
        return True
    both = [r for a in include for b in mine if (r := _both(a, b)) is not None]
    if not both:
        return False
    layer["include"] = [_dump(r) for r in both]
    return True


def _both(a: Rule, b: Rule) -> Rule | None:
    """One rule that matches where both ``a`` and ``b`` do, or None where they never both match."""
    if a.phase and b.phase and a.phase != b.phase:
        return None
    stage = list(dict.fromkeys([*a.stage, *b.stage]))
    not_stage = list(dict.fromkeys([*a.not_stage, *b.not_stage]))
    low = max((v for v in (a.min_level, b.min_level) if v is not None), default=None)
    high = min((v for v in (a.max_level, b.max_level) if v is not None), default=None)
    if set(stage) & set(not_stage) or (low is not None and high is not None and low > high):
        return None
    return Rule(phase=a.phase or b.phase, stage=stage, not_stage=not_stage, min_level=low, max_level=high)


def _dump(rule: Rule) -> dict:
    return rule.model_dump(exclude_defaults=True)


def listed(value: Any) -> list:
    """A value written alone or as a list (a rule, a rule's stage), as a list; None as []."""
    return value if isinstance(value, list) else [] if value is None else [value]
