"""YAML text -> plain data plus the line and column of every node.

Only YAML's standard scalar types are accepted (safe loading); tabs in
indentation, duplicate keys, unknown tags, empty files, non-mappings and bytes that
are not UTF-8 are located errors; ``<<`` merge keys follow YAML (a key of the mapping
itself overrides a merged one). ``--set a.b=v`` overrides are applied here, on the
plain data, so the spec layer sees one document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netcfg.errors import ConfigError, ConfigErrors, KeyPath

__all__ = ["Source", "YAML_SUFFIXES", "load_yaml", "parse_yaml", "to_yaml", "value_at", "document_kind"]

YAML_SUFFIXES = (".yaml", ".yml")  # the names a folder's net and solver files are found by

# Tags PyYAML's safe constructor turns into plain data; anything else (!!python/...,
# !custom) is refused rather than silently read as a string.
_YAML_TAG = "tag:yaml.org,2002:"
_STANDARD_TAGS = {
    _YAML_TAG + t
    for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}
_MAX_NODES = 1_000_000  # guards against alias bombs ("billion laughs")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a number as YAML 1.2 does (PyYAML's 1.1 rules
    want ``1.0e-3`` and would make it a string, which the strict schemas refuse)."""


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper resolving plain scalars as ``_Loader`` does, so it quotes every string
    the loader would read as something else ('1e3', 'null', 'yes', '0x10')."""


_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver(_YAML_TAG + "float", _EXPONENT_FLOAT, list("-+0123456789"))
_Dumper.add_implicit_resolver(_YAML_TAG + "float", _EXPONENT_FLOAT, list("-+0123456789"))


def to_yaml(data: Any, *, flow: bool = False, width: int | None = None) -> str:
    """YAML text that ``parse_yaml`` reads back as ``data`` (keys in their order): every
    netcfg writer (run config.yaml, weights metadata, deploy forms, expand) goes through it."""
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=flow, width=width, sort_keys=False,
                     allow_unicode=True)
_MAX_DEPTH = 64  # no config nests deeper; bounds the recursion of building


@dataclass
class Source:
    """A loaded document: its data and where each key path sits in the file."""

    file: str
    data: Any
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    overridden: dict[KeyPath, str] = field(default_factory=dict)  # path -> "--set a.b=v"
    # where this document sits in the one --set keys address (a solver's net: ("net",)), so an
    # error a --set caused shows the key path as typed: net.layers[6].num_output
    set_prefix: KeyPath = ()
    # a solver's net.KEY=VALUE overrides for a net that is a file: (KEY parts, value, "--set ..."),
    # applied to that file when it is read (netcfg.overrides.apply_net_sets)
    net_sets: list[tuple[list[str], Any, str]] = field(default_factory=list)

    def locate(self, err: ConfigError, *, at_key: bool = False) -> ConfigError:
        """Fill in file:line:col for ``err`` from the longest known prefix of its path
        (or name the ``--set`` that wrote the value there)."""
        if err.line is not None or err.file in self.overridden.values():
            return err  # located already (a --set has no line)
        if err.file and err.file != self.file and err.file not in err.message:
            err.message = f"{err.file}: {err.message}"  # a data file (an image) without lines: kept in the text
        path = err.path
        for n in range(len(path), 0, -1):
            if path[:n] in self.overridden:
                err.file, err.path = self.overridden[path[:n]], self.set_prefix + path
                return err
        err.file = self.file
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

    def under(self, key: str) -> Source:
        """The mapping at ``key`` as a document of its own (a run's config.yaml inlines its
        net), its keys still located in this file and its --set keys still named."""
        def strip(table: dict) -> dict:
            return {k[1:]: v for k, v in table.items() if k[:1] == (key,)}

        return Source(self.file, self.data[key], strip(self.positions), strip(self.key_positions),
                      strip(self.overridden), self.set_prefix + (key,))


def document_kind(data: Any) -> str | None:
    """``"solver"`` for a mapping that names a ``net:`` and has no ``layers:``, ``"net"`` for one
    with ``layers:`` and no ``net:``; None otherwise (the schema then says what is wrong)."""
    if not isinstance(data, dict) or ("net" in data) == ("layers" in data):
        return None
    return "solver" if "net" in data else "net"


def value_at(root: Any, path: KeyPath) -> Any:
    """The value at key path ``path`` of a plain document, or None where it holds nothing."""
    node = root
    for p in path:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def read_text(path: str | Path, kind: str = "YAML", binary_hint: str | None = None) -> str:
    """A config file's text; a missing file, a directory or bytes that are not UTF-8
    are located ConfigErrors (``kind`` names the expected format in the message)."""
    path = Path(path)
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if name == "-":  # the Unix spelling of "read stdin", which a bare "no such file" leaves a puzzle
            raise ConfigError("no such file: netcfg reads config files by path, not from stdin", file=name,
                              hint="save it to a file and give its path") from None
        raise ConfigError("no such file", file=name) from None
    except IsADirectoryError:
        raise ConfigError(f"is a directory, not a {kind} file", file=name) from None
    except OSError as e:
        raise ConfigError(f"cannot read the file: {e.strerror}", file=name) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            f"byte 0x{raw[e.start]:02x} is not UTF-8 text", file=name, line=line, col=col,
            hint=binary_hint or f"is this a {kind} file? save it as UTF-8",
        ) from None


def load_yaml(path: str | Path) -> Source:
    """Read and parse one YAML file; every problem is a located ConfigError."""
    return parse_yaml(read_text(path), str(path))


def parse_yaml(text: str, file: str = "<string>") -> Source:
    """Parse YAML text into a Source whose top level is a mapping."""
    if text.startswith("\ufeff"):
        text = text[1:]
    tabs = []
    for i, line in enumerate(text.splitlines(), start=1):
        indent = len(line) - len(line.lstrip(" \t"))
        if "\t" in line[:indent]:
            tabs.append(ConfigError("tab character in indentation", file=file, line=i,
                                    col=line.index("\t") + 1, hint="YAML indents with spaces only"))
    if tabs:
        raise ConfigErrors(tabs)
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:  # a control character anywhere in the text (a NUL, say)
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise ConfigError(f"character U+{e.character:04X} is not allowed in YAML text", file=file, line=line,
                          col=col, hint="YAML forbids control characters other than tab and newline; "
                                        "is this a binary file?") from None
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(e, file) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML syntax: {e}", file=file, line=1, col=1) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError("YAML nested too deeply to read", file=file, line=1, col=1) from None
    finally:
        loader.dispose()
    if node is None or (isinstance(node, yaml.ScalarNode) and node.value == "" and not node.style):
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


def _syntax_error(e: yaml.MarkedYAMLError, file: str) -> ConfigError:
    """PyYAML's parser message in plain words, with a hint for the common slips."""
    problem = e.problem or e.context or "invalid YAML"
    mark, opened = e.problem_mark or e.context_mark, e.context_mark
    at = f"line {opened.line + 1}, column {opened.column + 1}" if opened else ""
    hint = None
    if e.context and "flow mapping" in e.context:
        msg, hint = f"{problem}; the '{{' at {at} is not closed", "add the missing '}'"
    elif e.context and "flow sequence" in e.context:
        msg, hint = f"{problem}; the '[' at {at} is not closed", "add the missing ']'"
    elif "<block end>" in problem and opened:
        msg = f"bad indentation: this line does not line up with the block that starts at {at}"
        hint = "indent the keys or '- ' items of one block by the same number of spaces"
    elif "mapping values are not allowed" in problem:
        msg = "unexpected ':' (mapping values are not allowed here)"
        hint = "check this line's indentation, or quote a value that contains ': '"
    elif "quoted scalar" in (e.context or "") and opened:
        msg, hint, mark = f"the quote at {at} is never closed", "add the closing quote", opened
    elif "simple key" in (e.context or "") and opened:
        msg, hint, mark = "expected 'key: value' but this line has no ':'", "add ': value', or make it a '- ' list item", opened
    elif "another document" in problem:
        msg = "a second YAML document ('---') is not allowed here"
        hint = "a config file holds one document: remove this '---' and what follows"
    elif "undefined alias" in problem:
        name = problem.rsplit(" ", 1)[-1].strip("'")
        msg, hint = problem, f"define it before use with &{name}"
    elif e.context and e.problem:
        msg = f"{problem} ({e.context} at {at})" if at else f"{problem} ({e.context})"
    else:
        msg = problem
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return ConfigError(f"YAML syntax: {msg}", file=file, line=line, col=col, hint=hint)


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag


class _Builder:
    """Turns a composed node tree into plain data, recording positions."""

    def __init__(self, src: Source, loader: _Loader):
        self.src = src
        self.loader = loader
        self.errors: list[ConfigError] = []
        self.count = 0
        self.open: set[int] = set()  # ids of the nodes being built: the current path
        self.own: dict[int, set[int]] = {}  # id(mapping node) -> ids of its own key nodes

    def _err(self, node: yaml.Node, message: str, path: KeyPath = (), hint: str | None = None) -> None:
        m = node.start_mark
        if any((e.line, e.col, e.message) == (m.line + 1, m.column + 1, message) for e in self.errors):
            return  # the same node again, reached through an alias
        self.errors.append(ConfigError(message, path, file=self.src.file, line=m.line + 1,
                                       col=m.column + 1, hint=hint))

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            self._err(node, f"document expands to more than {_MAX_NODES:,} nodes", path,
                      hint="an alias bomb? use fewer nested aliases (*name)")
            raise ConfigErrors(self.errors)
        if id(node) in self.open:  # &a [*a]: PyYAML composes it; building it would never end
            self._err(node, "this alias refers to a node that contains it (a cycle)", path,
                      hint="an alias (*name) may only repeat a node defined outside it")
            return None
        if len(path) > _MAX_DEPTH:
            self._err(node, f"nested more than {_MAX_DEPTH} levels deep", path[:4])  # the start of the path is enough
            return None
        self.open.add(id(node))
        try:
            return self._build(node, path)
        finally:
            self.open.discard(id(node))

    def _build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.src.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if node.tag not in _STANDARD_TAGS:
            self._err(node, f"tag '{_tag_name(node.tag)}' is not allowed", path,
                      hint="netcfg reads plain YAML only: mappings, lists, strings, numbers, booleans, null")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v, path + (i,)) for i, v in enumerate(node.value)]
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            self._err(node, f"cannot read value: {getattr(e, 'problem', e)}", path)
            return None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        # flatten_mapping resolves '<<' merge keys in place, merged pairs first; an
        # aliased node is built again later, so remember which pairs were its own.
        own = self.own.get(id(node))
        if own is None:
            own = self.own[id(node)] = {id(k) for k, _ in node.value if k.tag != _YAML_TAG + "merge"}
            try:
                self.loader.flatten_mapping(node)
            except yaml.MarkedYAMLError as e:
                self._err(node, f"bad '<<' merge: {e.problem}", path)
                return {}
        out: dict[str, Any] = {}
        merged: set[str] = set()  # keys a '<<' merge supplied; an own key overrides them
        for knode, vnode in node.value:
            key = self.build(knode, path + ("<key>",))
            if isinstance(key, (dict, list)) or key is None:
                self._err(knode, "a mapping key must be a plain string or number", path)
                continue
            key = key if isinstance(key, str) else str(key)
            kpath = path + (key,)
            if key in out and key not in merged:
                first = self.src.key_positions[kpath]
                self._err(knode, f"duplicate key '{key}'; first defined at line {first[0]}, column {first[1]}",
                          kpath, hint="remove one of them")
                continue
            if key in merged:  # forget where the overridden value sat
                for p in [p for p in self.src.positions if p[:len(kpath)] == kpath]:
                    del self.src.positions[p]
            if id(knode) in own:
                merged.discard(key)
            else:
                merged.add(key)
            self.src.key_positions[kpath] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            out[key] = self.build(vnode, kpath)
        return out
