"""YAML text -> plain data plus the line and column of every node.

Only YAML's standard scalar types are accepted (safe loading); tabs in
indentation, duplicate keys, unknown tags, empty files, non-mappings and bytes that
are not UTF-8 are located errors. ``--set a.b=v`` overrides are applied here, on the
plain data, so the spec layer sees one document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netcfg.errors import ConfigError, ConfigErrors, KeyPath

__all__ = ["Source", "load_yaml", "parse_yaml", "apply_overrides"]

# Tags PyYAML's safe constructor turns into plain data; anything else (!!python/...,
# !custom) is refused rather than silently read as a string.
_STANDARD_TAGS = {
    "tag:yaml.org,2002:" + t
    for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}
_MAX_NODES = 1_000_000  # guards against alias bombs ("billion laughs")


@dataclass
class Source:
    """A loaded document: its data and where each key path sits in the file."""

    file: str
    data: Any
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def locate(self, err: ConfigError, *, at_key: bool = False) -> ConfigError:
        """Fill in file:line:col for ``err`` from the longest known prefix of its path."""
        if err.line is not None:
            return err
        err.file = self.file
        path = err.path
        table = self.key_positions if at_key else self.positions
        for n in range(len(path), -1, -1):
            pos = table.get(path[:n]) or self.positions.get(path[:n])
            if pos is not None:
                err.line, err.col = pos
                break
        else:
            err.line, err.col = 1, 1
        return err

    def relocate_all(self, errors: list[ConfigError]) -> list[ConfigError]:
        return [self.locate(e) for e in errors]


def load_yaml(path: str | Path) -> Source:
    """Read and parse one YAML file; every problem is a located ConfigError."""
    path = Path(path)
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"file not found: {name}", file=name) from None
    except IsADirectoryError:
        raise ConfigError(f"is a directory, not a YAML file: {name}", file=name) from None
    except OSError as e:
        raise ConfigError(f"cannot read {name}: {e.strerror}", file=name) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            f"byte 0x{raw[e.start]:02x} is not UTF-8 text; is this a YAML file?",
            file=name, line=line, col=col,
        ) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, file: str = "<string>") -> Source:
    """Parse YAML text into a Source whose top level is a mapping."""
    if text.startswith("\ufeff"):
        text = text[1:]
    for i, line in enumerate(text.splitlines(), start=1):
        indent = len(line) - len(line.lstrip(" \t"))
        if "\t" in line[:indent]:
            raise ConfigError(
                "tab character in indentation", file=file, line=i,
                col=line.index("\t") + 1, hint="YAML indents with spaces only",
            )
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        msg = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            msg = f"{e.problem} ({e.context})"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError(f"YAML syntax: {msg}", file=file, line=line, col=col) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML syntax: {e}", file=file, line=1, col=1) from None
    finally:
        loader.dispose()
    if node is None:
        raise ConfigError("file is empty; expected a mapping of keys", file=file, line=1, col=1)
    src = Source(file=file, data=None)
    builder = _Builder(src, loader)
    src.data = builder.build(node, ())
    if builder.errors:
        raise ConfigErrors(builder.errors)
    if not isinstance(src.data, dict):
        kind = "a list" if isinstance(src.data, list) else f"the scalar {src.data!r}"
        raise ConfigError(
            f"expected a mapping of keys at the top level, found {kind}",
            file=file, line=node.start_mark.line + 1, col=node.start_mark.column + 1,
        )
    return src


class _Builder:
    """Turns a composed node tree into plain data, recording positions."""

    def __init__(self, src: Source, loader: yaml.SafeLoader):
        self.src = src
        self.loader = loader
        self.errors: list[ConfigError] = []
        self.count = 0

    def _err(self, node: yaml.Node, message: str, hint: str | None = None) -> None:
        m = node.start_mark
        self.errors.append(
            ConfigError(message, file=self.src.file, line=m.line + 1, col=m.column + 1, hint=hint)
        )

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            self._err(node, f"document expands to more than {_MAX_NODES} nodes (alias bomb?)")
            raise ConfigErrors(self.errors)
        self.src.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if node.tag not in _STANDARD_TAGS:
            self._err(node, f"tag '{node.tag}' is not allowed",
                      hint="netcfg reads plain YAML only: mappings, lists, strings, numbers, booleans, null")
            return None
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # resolves '<<' merge keys
            out: dict[str, Any] = {}
            for knode, vnode in node.value:
                key = self.build(knode, path + ("<key>",))
                if isinstance(key, (dict, list)) or key is None:
                    self._err(knode, "a mapping key must be a plain string or number")
                    continue
                key = key if isinstance(key, str) else str(key)
                if key in out:
                    first = self.src.key_positions[path + (key,)]
                    self._err(knode, f"duplicate key '{key}' (first defined at line {first[0]})")
                    continue
                kpos = (knode.start_mark.line + 1, knode.start_mark.column + 1)
                self.src.key_positions[path + (key,)] = kpos
                out[key] = self.build(vnode, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v, path + (i,)) for i, v in enumerate(node.value)]
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            self._err(node, f"cannot read value: {getattr(e, 'problem', e)}")
            return None


# ---------------------------------------------------------------- overrides

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")


def apply_overrides(src: Source, overrides: list[str]) -> Source:
    """Apply ``key.path=value`` strings (values parsed as YAML) to ``src.data``.

    A list index is a number (``layers.2.num_output=64``); for lists of named
    mappings, the name works too (``layers.conv1.num_output=64``).
    """
    errors = []
    for text in overrides:
        where = f"--set {text}"
        if "=" not in text:
            errors.append(ConfigError("expected KEY=VALUE", file=where, hint="e.g. --set base_lr=0.01"))
            continue
        key, _, value_text = text.partition("=")
        parts = key.strip().split(".")
        if not all(_KEY.fullmatch(p) for p in parts):
            errors.append(ConfigError(f"bad key path '{key}'", file=where, hint="dotted names, e.g. data.train.batch_size"))
            continue
        try:
            value = parse_yaml(f"v: {value_text}", where).data["v"]
        except ConfigError:
            value = value_text  # not valid YAML on its own: take it as a plain string
        node = src.data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                idx = _list_index(node, part)
                if idx is None:
                    errors.append(ConfigError(f"no item '{part}' in list {'.'.join(parts[:i]) or '<top>'}", file=where))
                    break
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value  # unknown keys are caught by the schema, with a hint
                else:
                    node = node.setdefault(part, {})
            else:
                errors.append(ConfigError(f"'{'.'.join(parts[:i])}' is a value, not a mapping", file=where))
                break
    if errors:
        raise ConfigErrors(errors)
    return src


def _list_index(items: list, part: str) -> int | None:
    if part.isdigit():
        idx = int(part)
        return idx if idx < len(items) else None
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    return None
