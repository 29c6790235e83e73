"""``--set KEY=VALUE`` overrides: dotted key paths applied to a located Source's plain data.

A list item is its index or, in a list of named mappings, its name, dots and all
(``layers.stage2.block1.conv1.num_output``, the layers of an expanded template);
``layers[0]`` is read as ``layers.0``, the form error messages print. Each override is remembered with
the paths it wrote, so errors later found there name the ``--set`` instead of a line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from netcfg.errors import ConfigError, ConfigErrors, did_you_mean
from netcfg.source import Source, parse_yaml

__all__ = ["FlagOverride", "apply_net_sets", "apply_overrides"]

# an override a CLI option of its own makes (--device cuda: ("device", "cuda", "--device")):
# the value is taken as is, not read as YAML (a path may hold ' #'), and errors name the option
FlagOverride = tuple[str, object, str]

# a key part: a mapping key, a list index, or a (part of a) layer name, which may hold any
# character but whitespace (conv1/3x3, conv-a) and dots, which nest it (stage2.block1.conv1)
_KEY = re.compile(r"[^\s.\[\]=]+")
_INDEX = re.compile(r"\[([^\s\[\]=]+)\]")


def apply_overrides(src: Source, overrides: str | Iterable[str | FlagOverride]) -> Source:
    """Apply ``key.path=value`` strings (values parsed as YAML) to ``src.data``; one string
    is one override (``overrides="max_iter=200"`` from Python is not read letter by letter).
    A ``FlagOverride`` tuple sets its value as is, and its errors name its option.

    A list index is a number (``layers.2.num_output=64``); for lists of named
    mappings, the name works too (``layers.conv1.num_output=64``). Errors later
    found in an overridden value point at its ``--set``, not at the file.

    On a solver, ``net.KEY=...`` sets KEY in the net it names once every other key is set
    (so after a ``net=other.yaml``): in the inline net, or, when ``net:`` is a file, in that
    file's data as the solver reads it (``src.net_sets``, see ``apply_net_sets``).
    """
    errors: list[ConfigError] = []
    net_keys = []
    for item in [overrides] if isinstance(overrides, str) else overrides:
        parsed = _parse(item, errors)
        if parsed is None:
            continue
        if parsed[0][0] == "net" and len(parsed[0]) > 1 and isinstance(src.data, dict) and "layers" not in src.data:
            net_keys.append(parsed)
        else:
            _set(src, *parsed, errors)
    for parts, value, where in net_keys:
        net = src.data.get("net")
        if isinstance(net, str):
            src.net_sets.append((parts[1:], value, where))
        elif "net" not in src.data:
            errors.append(ConfigError(f"this solver names no net to set {'.'.join(parts[1:])} in", ("net",), file=where,
                                      hint="name it in the solver file with net: NET.yaml, or add --set net=NET.yaml"))
        else:
            _set(src, parts, value, where, errors)
    if errors:
        raise ConfigErrors(errors)
    return src


def apply_net_sets(solver: Source, net: Source) -> Source:
    """Apply a solver's ``net.KEY=...`` overrides to ``net``, the net file its ``net:`` names;
    their errors name the ``--set`` as typed, with the key path under ``net``."""
    errors: list[ConfigError] = []
    net.set_prefix = ("net",)
    for parts, value, where in solver.net_sets:
        _set(net, parts, value, where, errors)
    if errors:
        raise ConfigErrors(errors)
    return net


def _parse(item: str | FlagOverride, errors: list[ConfigError]) -> tuple[list[str], object, str] | None:
    """(key parts, value, what errors name) of one override; None, with its error added, if bad."""
    if isinstance(item, tuple):
        key, value, where = item
        return key.split("."), value, where
    where = f"--set {item}"
    if "=" not in item:
        errors.append(ConfigError("expected KEY=VALUE", file=where, hint="e.g. --set base_lr=0.01"))
        return None
    key, _, value_text = item.partition("=")
    parts = _INDEX.sub(r".\1", key.strip()).split(".")  # layers[2].x, as errors print paths: layers.2.x
    if not all(_KEY.fullmatch(p) for p in parts):
        errors.append(ConfigError(f"bad key path '{key}'", file=where,
                                  hint="dotted names and list indices, e.g. layers.conv1.num_output "
                                       "or layers[0].num_output"))
        return None
    try:
        return parts, parse_yaml(f"v: {value_text}", where).data["v"], where
    except ConfigErrors as e:  # a tag or a duplicate key: refused, as in a file
        errors += [ConfigError(x.message, file=where, hint=x.hint) for x in e.errors]
        return None
    except ConfigError:
        return parts, value_text, where  # not valid YAML on its own: take it as a plain string


def _set(src: Source, parts: list[str], value: object, where: str, errors: list[ConfigError]) -> None:
    """Set ``parts`` to ``value`` in ``src.data`` and remember ``where`` for the paths written;
    messages show the path from ``src.set_prefix`` on, as the ``--set`` typed it."""
    shown = [str(p) for p in src.set_prefix]
    node = src.data
    path: list[str | int] = []
    created: tuple | None = None  # the first key this --set adds: what is missing under it is the --set's
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(node, list):
            found = _list_item(node, parts, i)
            if found is None:
                missing, hint = _list_hint(node, parts, i)
                errors.append(ConfigError(f"no item '{missing}' in {'.'.join(shown + parts[:i])}", file=where,
                                          hint=hint))
                return
            idx, i = found
            path.append(idx)
            if i == len(parts):
                node[idx] = value
            else:
                node = node[idx]
            continue
        last = i == len(parts) - 1
        i += 1
        if isinstance(node, dict):
            path.append(part)
            if part not in node and created is None:
                created = tuple(path)
            if last:
                node[part] = value  # unknown keys are caught by the schema, with a hint
            else:
                node = node.setdefault(part, {})
        else:
            errors.append(ConfigError(f"'{'.'.join(shown + parts[:i - 1])}' is a value ({node!r}), not a mapping or list",
                                      file=where))
            return
    src.overridden[created or tuple(path)] = where


def _list_item(items: list, parts: list[str], i: int) -> tuple[int, int] | None:
    """(index of the item ``parts[i:]`` starts with, where the parts after it start): an index,
    or a name, whose dots (stage2.block1.conv1, as expanded templates name layers) span parts;
    the longest name that matches wins."""
    for end in range(len(parts), i, -1):
        idx = _list_index(items, ".".join(parts[i:end]))
        if idx is not None:
            return idx, end
    return None


def _list_index(items: list, part: str) -> int | None:
    if part.isdigit():
        idx = int(part)
        return idx if idx < len(items) else None
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    return None


def _list_hint(items: list, parts: list[str], i: int) -> tuple[str, str]:
    """(the item not found, the hint): the longest dotted run of ``parts[i:]`` that has a name
    near it (layer1.block1.conv3: did you mean 'layer1.block1.conv2'?), else ``parts[i]``."""
    names = [str(item["name"]) for item in items if isinstance(item, dict) and "name" in item]
    if not items:
        return parts[i], "the list is empty"
    span = f"indices 0..{len(items) - 1}" + (" or a name" if names else "")
    if names and not parts[i].isdigit():  # the last part is most likely the key to set: tried last
        for end in [*range(len(parts) - 1, i, -1), len(parts)]:
            near = did_you_mean(".".join(parts[i:end]), names, show_all=0)
            if near:
                return ".".join(parts[i:end]), f"{near}; {span}"
    return parts[i], span
