"""``--set KEY=VALUE`` overrides: dotted key paths applied to a located Source's plain data.

A list item is its index or, in a list of named mappings, its name; ``layers[0]`` is
read as ``layers.0``, the form error messages print. Each override is remembered with
the paths it wrote, so errors later found there name the ``--set`` instead of a line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from netcfg.errors import ConfigError, ConfigErrors, did_you_mean
from netcfg.source import Source, parse_yaml

__all__ = ["FlagOverride", "apply_overrides"]

# an override a CLI option of its own makes (--device cuda: ("device", "cuda", "--device")):
# the value is taken as is, not read as YAML (a path may hold ' #'), and errors name the option
FlagOverride = tuple[str, object, str]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_INDEX = re.compile(r"\[(\d+|[A-Za-z_][A-Za-z0-9_]*)\]")


def apply_overrides(src: Source, overrides: str | Iterable[str | FlagOverride]) -> Source:
    """Apply ``key.path=value`` strings (values parsed as YAML) to ``src.data``; one string
    is one override (``overrides="max_iter=200"`` from Python is not read letter by letter).
    A ``FlagOverride`` tuple sets its value as is, and its errors name its option.

    A list index is a number (``layers.2.num_output=64``); for lists of named
    mappings, the name works too (``layers.conv1.num_output=64``). Errors later
    found in an overridden value point at its ``--set``, not at the file.
    """
    errors = []
    for text in [overrides] if isinstance(overrides, str) else overrides:
        if isinstance(text, tuple):
            key, value, where = text
            parts = key.split(".")
        else:
            where = f"--set {text}"
            if "=" not in text:
                errors.append(ConfigError("expected KEY=VALUE", file=where, hint="e.g. --set base_lr=0.01"))
                continue
            key, _, value_text = text.partition("=")
            parts = _INDEX.sub(r".\1", key.strip()).split(".")  # layers[2].x, as errors print paths: layers.2.x
            if not all(_KEY.fullmatch(p) for p in parts):
                errors.append(ConfigError(f"bad key path '{key}'", file=where,
                                          hint="dotted names and list indices, e.g. layers.conv1.num_output "
                                               "or layers[0].num_output"))
                continue
            try:
                value = parse_yaml(f"v: {value_text}", where).data["v"]
            except ConfigErrors as e:  # a tag or a duplicate key: refused, as in a file
                errors += [ConfigError(x.message, file=where, hint=x.hint) for x in e.errors]
                continue
            except ConfigError:
                value = value_text  # not valid YAML on its own: take it as a plain string
        node = src.data
        path: list[str | int] = []
        created: tuple | None = None  # the first key this --set adds: what is missing under it is the --set's
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                idx = _list_index(node, part)
                if idx is None:
                    errors.append(ConfigError(f"no item '{part}' in {'.'.join(parts[:i])}", file=where,
                                              hint=_list_hint(node, part)))
                    break
                path.append(idx)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                path.append(part)
                if part not in node and created is None:
                    created = tuple(path)
                if last:
                    node[part] = value  # unknown keys are caught by the schema, with a hint
                else:
                    node = node.setdefault(part, {})
            else:
                errors.append(ConfigError(f"'{'.'.join(parts[:i])}' is a value ({node!r}), not a mapping or list",
                                          file=where, hint=_net_file_hint(src, path, node, parts[i:], where)))
                break
        else:
            src.overridden[created or tuple(path)] = where
    if errors:
        raise ConfigErrors(errors)
    return src


def _net_file_hint(src: Source, path: list, node: object, rest: list[str], where: str) -> str | None:
    """For ``net.layers...`` on a solver whose ``net:`` names a file: where such a key can be set."""
    if path != ["net"] or not isinstance(node, str):
        return None
    net_file = os.path.normpath(Path(src.file).parent / node)
    value = where.partition("=")[2] if where.startswith("--set ") else "VALUE"
    return (f"this solver's net is the file {net_file}: change it there, check it alone with "
            f"`netcfg check {net_file} --set {'.'.join(rest)}={value}`, or set net.{'.'.join(rest)} on a run's "
            "config.yaml, which holds the net inline")


def _list_index(items: list, part: str) -> int | None:
    if part.isdigit():
        idx = int(part)
        return idx if idx < len(items) else None
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    return None


def _list_hint(items: list, part: str) -> str:
    names = [str(item["name"]) for item in items if isinstance(item, dict) and "name" in item]
    if not items:
        return "the list is empty"
    near = did_you_mean(part, names, show_all=0) if names and not part.isdigit() else ""
    span = f"indices 0..{len(items) - 1}" + (" or a name" if names else "")
    return f"{near}; {span}" if near else span
