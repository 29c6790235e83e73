"""Write an imported net or solver as YAML in the zoo's style: one flow mapping a layer, comments on top.

``inputs``, ``data``, ``layers`` and an inline ``net`` are blocks; everything inside a
layer (or a data split) is one ``{...}`` wrapped at item boundaries. Scalars are
quoted by PyYAML's own rules for flow context, so every name round-trips.
"""

from __future__ import annotations

import textwrap
from typing import Any

from netcfg.source import to_yaml

__all__ = ["dump_yaml"]

_BLOCK_KEYS = ("inputs", "data", "net")
_WIDTH = 110


def _scalar(value: Any) -> str:
    # dumped inside a flow sequence, so PyYAML quotes what a flow context needs (',', '{', ': ')
    text = to_yaml([value], flow=True, width=10_000).strip()
    return text[1:-1]


def flow(value: Any) -> str:
    """One-line YAML flow text for ``value``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return _scalar(value)


def _wrapped(mapping: dict[str, Any], indent: int) -> list[str]:
    """``{k: v, ...}`` split over lines of at most _WIDTH characters, continuations aligned."""
    items = [f"{_scalar(k)}: {flow(v)}" for k, v in mapping.items()]
    lines, line = [], "{"
    for i, item in enumerate(items):
        piece = item + ("}" if i == len(items) - 1 else ",")
        if line != "{" and indent + len(line) + 1 + len(piece) > _WIDTH:
            lines.append(line)
            line = " " + piece
        else:
            line += ("" if line == "{" else " ") + piece
    lines.append(line if items else "{}")
    return [lines[0]] + [" " * indent + rest for rest in lines[1:]]


def _block(data: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for key, value in data.items():
        if key == "layers" and isinstance(value, list):
            out.append(f"{pad}layers:")
            for layer in value:
                first, *rest = _wrapped(layer, indent + 4)
                out += [f"{pad}  - {first}", *rest]
        elif key in _BLOCK_KEYS and isinstance(value, dict):
            out.append(f"{pad}{_scalar(key)}:")
            if key == "net":
                out += _block(value, indent + 2)
                continue
            width = max(len(_scalar(k)) for k in value) if value else 0
            for k, v in value.items():
                label = f"{_scalar(k)}:".ljust(width + 1)
                if isinstance(v, dict):
                    first, *rest = _wrapped(v, indent + 2 + len(label) + 1)
                    out += [f"{pad}  {label} {first}", *rest]
                else:
                    out.append(f"{pad}  {label} {flow(v)}")
        else:
            out.append(f"{pad}{_scalar(key)}: {flow(value)}")
    return out


def _comment(text: str) -> list[str]:
    """``text`` as comment lines of at most _WIDTH characters; a "  - item" wraps under its text."""
    body = text.lstrip(" ")
    lead = " " * (len(text) - len(body))
    more = lead + ("  " if body.startswith("- ") else "")
    wrapped = textwrap.wrap(body, _WIDTH - 2 - len(lead), break_long_words=False, break_on_hyphens=False)
    return [f"# {lead}{w}" if i == 0 else f"# {more}{w}" for i, w in enumerate(wrapped)] or ["#"]


def dump_yaml(data: dict[str, Any], header: list[str] = (), comments: list[str] = ()) -> str:
    """The YAML text: ``header`` lines as comments, the data, then ``comments`` (as comments)."""
    lines = [line for h in header for line in _comment(h)]
    lines += _block(data, 0)
    lines += [f"# {c}".rstrip() for c in comments]
    return "\n".join(lines) + "\n"
