"""What an error in an expanded template adds: the values an expression read, with the
line that set each, and why a whole float came out where a count is wanted ('/')."""

from __future__ import annotations

import json
import re
from typing import Any

from netcfg.errors import ConfigError, KeyPath
from netcfg.net.expr import ExprError, has_expr, names
from netcfg.source import Source, value_at

__all__ = ["divide_hint", "param_values"]


def param_values(src: Source, envs: dict, instance: str, path: KeyPath) -> str:
    """"; width = 64 from line 40" for the params the template value at ``path`` reads in ``instance``."""
    value = value_at(src.data, path)
    env = envs.get(instance, {})
    try:
        used = sorted(names(value) & set(env)) if has_expr(value) else []
    except ExprError:
        used = []
    parts = []
    for n in used:
        v, at = env[n]
        text = f"{n} = {json.dumps(v, default=str)}"
        if at is not None:
            e = src.locate(ConfigError("", at))
            text += f" from line {e.line}" if e.line is not None and e.file == src.file else f" from {e.where}"
        parts.append(text)
    return "; " + ", ".join(parts) if parts else ""


_DIVIDE = re.compile(r"(?<!/)/(?!/)")


def divide_hint(value: Any, template: Any, hint: str | None) -> str | None:
    """``hint``, led by why a whole float refused where a count is wanted came from ``/``:
    ``${width / 2}`` is 8.0 (Python's division), ``${width // 2}`` is 8."""
    if not (isinstance(value, float) and value.is_integer() and has_expr(template) and _DIVIDE.search(template)):
        return hint
    fix = f"'/' divides to a float ({value!r} here), '//' to an integer: {_DIVIDE.sub('//', template)}"
    return fix + (f"; {hint}" if hint else "")
