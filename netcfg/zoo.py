"""The model zoo: the net files in the repository's configs/, read from their header comments.

Nothing here builds a net: a zoo entry is the file's opening comment (what the model is, its
paper, ``Parameters: N``, what it reaches), its ``name:`` and its ``inputs:``, so listing the
whole zoo takes milliseconds. The zoo tests (tests/test_zoo.py) keep the headers honest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netcfg.errors import ConfigError, NetcfgError, did_you_mean

__all__ = ["ZooEntry", "ZooListing", "ZooMissing", "default_zoo_dir", "zoo_files", "zoo_entries", "zoo_listing",
           "find_entry", "solvers_using", "header_comment", "describe_inputs"]

# the repository's configs/ and solvers/ sit beside the package in a source checkout
_REPO = Path(__file__).resolve().parent.parent
_PARAMS = re.compile(r"Parameters:\s*([\d,]+)")
# a sentence ends at '.', ';' or ':' before a capital or a quote, not at "et al. 2016" or "e.g."
_SENTENCE_END = re.compile(r"(?<=[.;])\s+(?=[A-Z\"(])")
# the description stops before a colon, a parenthesis or a quoted title
_CLAUSE_END = re.compile(r': | \(|, "| "')
DESCRIPTION_WIDTH = 72


class ZooMissing(NetcfgError):
    """The zoo directory is not there (netcfg installed from a wheel, without the repository)."""

    def __init__(self, directory: Path):
        super().__init__(
            f"no model zoo at {directory}: the zoo's net files (configs/*.yaml) live in netcfg's source "
            "repository and are not installed with the package (a non-editable install). Clone the "
            "repository and `pip install -e .` there, or point at a folder of net files with --dir")
        self.directory = directory


@dataclass(frozen=True)
class ZooEntry:
    """One net file of the zoo, as its header and top-level keys describe it."""

    name: str                      # the file's stem: `netcfg zoo resnet18`
    path: Path
    title: str                     # the net's `name:` (ResNet-18)
    header: str                    # the opening comment, without the leading '# '
    parameters: int | None         # from 'Parameters: N' in the header; None when absent
    inputs: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)  # name -> (shape, dtype)
    is_solver: bool = False        # a solver file (net: and no layers:), not a net: left out of the listing

    @property
    def description(self) -> str:
        """The header's first sentence without the model's name, cut to one line."""
        return one_line(self.header)


def default_zoo_dir() -> Path:
    """The repository's configs/ (beside the netcfg package in a source checkout)."""
    return _REPO / "configs"


def header_comment(text: str) -> str:
    """The comment lines a file opens with, '# ' removed, joined by newlines."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines)


def one_line(header: str, width: int = DESCRIPTION_WIDTH) -> str:
    """The first sentence of a header, without a leading 'Name: ', at most ``width`` characters."""
    text = " ".join(header.split())
    text = _SENTENCE_END.split(text, maxsplit=1)[0].rstrip(".")
    head, sep, rest = text.partition(": ")
    if sep and len(head) <= 24 and rest:  # "ResNet-18: the 18-layer ..." -> "the 18-layer ..."
        text = rest
    text = _CLAUSE_END.split(text, maxsplit=1)[0]  # the paper's title and details stay in the header
    text = text[:1].upper() + text[1:]
    if len(text) > width:
        cut = text[: width - 3]
        text = cut[: cut.rfind(" ")].rstrip(",;:(") + "..." if " " in cut else cut + "..."
    return text


def _inputs(raw: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    out = {}
    for name, spec in (raw or {}).items() if isinstance(raw, dict) else ():
        shape, dtype = (spec.get("shape"), spec.get("dtype", "float32")) if isinstance(spec, dict) else (spec, "float32")
        if isinstance(shape, list) and all(isinstance(d, int) for d in shape):
            out[str(name)] = (tuple(shape), str(dtype))
    return out


def read_entry(path: Path) -> ZooEntry:
    """A zoo entry from one net file: header, name and inputs, without building anything."""
    from netcfg.source import load_yaml

    src = load_yaml(path)  # located errors for a file that is not YAML
    data = src.data if isinstance(src.data, dict) else {}
    header = header_comment(path.read_text(encoding="utf-8"))
    m = _PARAMS.search(header)
    return ZooEntry(name=path.stem, path=path, title=str(data.get("name", path.stem)), header=header,
                    parameters=int(m.group(1).replace(",", "")) if m else None, inputs=_inputs(data.get("inputs")),
                    is_solver="net" in data and "layers" not in data)


def zoo_files(directory: Path | None = None) -> list[Path]:
    """The net files of a zoo directory, by name; ZooMissing when there is no such directory."""
    if directory is not None and not directory.is_dir():  # the user's own --dir: no install advice
        raise ConfigError(f"--dir {directory} is not a folder", file="netcfg zoo",
                          hint="give a folder of net files (*.yaml, *.yml)")
    from netcfg.source import YAML_SUFFIXES

    directory = directory or default_zoo_dir()
    if not directory.is_dir():
        raise ZooMissing(directory)
    return sorted(p for p in directory.glob("*.y*ml") if p.suffix in YAML_SUFFIXES)


def zoo_entries(directory: Path | None = None) -> list[ZooEntry]:
    """Every net file of the zoo, read as a ZooEntry, sorted by name; solver files (a --dir of
    solvers/, or a folder holding both) are left out."""
    return [e for e in map(read_entry, zoo_files(directory)) if not e.is_solver]


@dataclass(frozen=True)
class ZooListing:
    """What `netcfg zoo` lists of a folder: its nets, and what it leaves out and why."""

    entries: list[ZooEntry]        # the net files, by name
    solvers: int                   # solver files in the folder, left out
    unreadable: list[NetcfgError]  # files that are not YAML (not UTF-8, a syntax error), each located


def zoo_listing(directory: Path | None = None) -> ZooListing:
    """Every readable net file of the zoo; one broken file (a --dir of the user's own) is left
    out with its error instead of stopping the whole listing."""
    read, unreadable = [], []
    for p in zoo_files(directory):
        try:
            read.append(read_entry(p))
        except NetcfgError as e:
            unreadable.append(e)
    nets = [e for e in read if not e.is_solver]
    return ZooListing(nets, len(read) - len(nets), unreadable)


def _readable(files: list[Path]):
    for p in files:
        try:
            yield read_entry(p)
        except NetcfgError:
            continue  # cannot be the net named: `netcfg zoo` lists why


def find_entry(name: str, directory: Path | None = None) -> ZooEntry:
    """The zoo entry called ``name`` (file stem, file name or the net's own name, any case)."""
    files = zoo_files(directory)
    key = name.removesuffix(".yaml").removesuffix(".yml").lower()
    for p in files:
        if p.stem.lower() == key:
            return read_entry(p)
    titled = [e for e in _readable(files) if e.title.lower() == name.lower()]
    if titled:
        return titled[0]
    stems = [p.stem for p in files]
    raise ConfigError(f"no net '{name}' in the zoo ({directory or default_zoo_dir()})", file="netcfg zoo",
                      hint=(did_you_mean(key, stems, show_all=0) or f"known: {', '.join(stems)}")
                      + "; `netcfg zoo` lists them")


def solvers_using(entry: ZooEntry, solvers_dir: Path | None = None) -> list[Path]:
    """The solver files whose `net:` names this entry's file (resolved against the solver's folder)."""
    solvers_dir = solvers_dir or entry.path.parent.parent / "solvers"
    if not solvers_dir.is_dir():
        return []
    import yaml

    target = entry.path.resolve()
    found = []
    for p in zoo_files(solvers_dir):
        try:
            net = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, OSError):
            continue  # a broken solver is `netcfg check`'s business, not the zoo listing's
        net = net.get("net") if isinstance(net, dict) else None
        if isinstance(net, str) and (p.parent / net).resolve() == target:
            found.append(p)
    return found


def describe_inputs(inputs: dict[str, tuple[tuple[int, ...], str]]) -> str:
    """'data 3x224x224, label int64': each input's per-sample shape, and its dtype when not float32."""
    parts = []
    for name, (shape, dtype) in inputs.items():
        dims = "x".join(map(str, shape)) if shape else ""
        kind = "" if dtype == "float32" else dtype
        parts.append(" ".join(x for x in (name, dims, kind) if x))
    return ", ".join(parts)
