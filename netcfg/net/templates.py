"""Block templates: ``blocks:`` of a net file expanded into explicit, scoped layers.

Runs on the plain data between the located Source and the NetSpec. A block is a
list of layers with parameters; an entry ``{name: stage2, block: bottleneck,
repeat: 4, args: {...}, first: {...}}`` in a layer list stands for its layers,
named ``stage2.block1.conv1`` ... The result is a Source without ``blocks:`` whose
``layers`` are explicit; it remembers which template line and which instance each
expanded layer came from, so errors point there. See docs/net-files.md, "Templates".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netcfg.errors import ConfigError, ConfigErrors, KeyPath
from netcfg.net.block_spec import BlockSpec, BlockUse, OrBlockUse
from netcfg.net.expander import Ctx, Expander
from netcfg.net.layer_dicts import is_layer_list, walk
from netcfg.net.template_hints import divide_hint, param_values
from netcfg.net.expr import has_expr
from netcfg.source import Source, value_at

__all__ = ["BlockSpec", "BlockUse", "ExpandedSource", "OrBlockUse", "expand_templates", "merge_repeats"]


@dataclass
class ExpandedSource(Source):
    """A Source whose errors are reported at the template lines they came from."""

    original: Source | None = None
    # expanded key path of a layer (or of a key the expansion wrote) -> (path in the file, instance)
    table: dict[KeyPath, tuple[KeyPath, str | None]] = field(default_factory=dict)
    # instance -> param -> (its value, the key path that set it: an arg, or the default)
    envs: dict[str, dict[str, tuple[Any, KeyPath | None]]] = field(default_factory=dict)

    def origin(self, path: KeyPath) -> tuple[KeyPath, str | None]:
        for n in range(len(path), 0, -1):
            hit = self.table.get(path[:n])
            if hit is not None:
                return hit[0] + path[n:], hit[1]
        return path, None

    def locate(self, err: ConfigError, *, at_key: bool = False) -> ConfigError:
        if err.line is not None or self.original is None:
            return err
        value = value_at(self.data, err.path)
        err.path, instance = self.origin(err.path)
        err.hint = divide_hint(value, value_at(self.original.data, err.path), err.hint)
        if has_expr(value) and instance:  # args: {width: "${4 * 2}"} in `layers:` is passed on as text
            err.hint = (f"{value!r} came from an argument written outside any block, where ${{...}} is not evaluated; "
                        "write the value itself there") + (f"; {err.hint}" if err.hint else "")
        if instance:
            err.instance, err.where_ = instance, self._values(instance, err.path)  # type: ignore[attr-defined]
            err.message += f" (in {instance}{err.where_})"  # type: ignore[attr-defined]
        return self.original.locate(err, at_key=at_key)

    def _values(self, instance: str, path: KeyPath) -> str:
        return param_values(self.original, self.envs, instance, path) if self.original else ""


def merge_repeats(errors: list[ConfigError]) -> list[ConfigError]:
    """One error per template line and message, naming every instance it occurs in."""
    groups: dict[tuple, list[ConfigError]] = {}
    for e in errors:
        inst = getattr(e, "instance", None)
        base = e.message.removesuffix(f" (in {inst}{e.where_})") if inst else e.message  # type: ignore[attr-defined]
        key = (e.file, e.line, e.col, e.path, base, e.hint, getattr(e, "where_", None)) if inst else (id(e),)
        groups.setdefault(key, []).append(e)
    out = []
    for group in groups.values():
        e = group[0]
        if len(group) > 1:
            names_ = [x.instance for x in group]  # type: ignore[attr-defined]
            more = f" and {len(names_) - 3} more" if len(names_) > 3 else ""
            shown = ", ".join(names_[:3]) + more
            e.message = e.message.replace(f" (in {names_[0]}{e.where_})", f" (in {shown}{e.where_})")  # type: ignore[attr-defined]
        out.append(e)
    return out


def expand_templates(src: Source) -> Source:
    """``src`` with every block instance replaced by its layers; ``src`` itself if it uses none."""
    data = src.data
    if not isinstance(data, dict) or ("blocks" not in data and not _uses_blocks(data.get("layers"))):
        return src
    ex = Expander(src)
    ex.read_blocks(data.get("blocks"))
    layers = data.get("layers")
    out = {k: v for k, v in data.items() if k != "blocks"}
    if isinstance(layers, list):
        inputs = data.get("inputs")
        first = next(iter(inputs), None) if isinstance(inputs, dict) and inputs else None
        out["layers"], _ = ex.graph_list([(x, ("layers", i)) for i, x in enumerate(layers)], Ctx(), first, ("inputs",))
    if ex.errors:
        raise ConfigErrors(merge_repeats(ex.errors))
    _plain(out)
    res = ExpandedSource(src.file, out, original=src, envs=ex.envs)
    _index(out.get("layers"), ("layers",), ex.origin, res.table)
    for path, _ in walk(out, ()):
        at, _ = res.origin(path)
        pos = _longest(src.positions, at)
        if pos is not None:
            res.positions[path] = pos
        key = src.key_positions.get(at)
        if key is not None:
            res.key_positions[path] = key
    return res


def _uses_blocks(layers: Any) -> bool:
    if isinstance(layers, list):
        return any(isinstance(x, dict) and ("block" in x or any(_uses_blocks(v) for v in x.values())) for x in layers)
    return False


def _plain(node: Any) -> None:
    """Turn marked names back into plain strings, in place (YAML dumps only plain types)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in list(items):
        if isinstance(v, str) and type(v) is not str:
            node[k] = str(v)
        else:
            _plain(v)


def _index(layers: Any, prefix: KeyPath, origin: dict, table: dict) -> None:
    """Record, per expanded key path of a layer, where it came from."""
    if not isinstance(layers, list):
        return
    for i, layer in enumerate(layers):
        path = prefix + (i,)
        for sub, hit in origin.get(id(layer), {}).items():
            table[path + sub] = hit
        if isinstance(layer, dict):
            for key, value in layer.items():
                if is_layer_list(value):
                    _index(value, path + (key,), origin, table)


def _longest(table: dict, path: KeyPath) -> tuple[int, int] | None:
    for n in range(len(path), -1, -1):
        if path[:n] in table:
            return table[path[:n]]
    return None
