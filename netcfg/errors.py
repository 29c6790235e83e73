"""User-facing errors: every bad input becomes a NetcfgError that says where and why.

A ConfigError carries a *key path* into the YAML document (``("layers", 3,
"num_output")``); the file, line and column are filled in by whoever holds the
located source (see ``netcfg.source.Source.locate``). Code below the loader never
needs to know about YAML positions: it raises with a key path and moves on.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "NetcfgError",
    "ReportedElsewhere",
    "ConfigError",
    "ConfigErrors",
    "ShapeError",
    "FieldError",
    "did_you_mean",
    "format_path",
]

KeyPath = tuple[str | int, ...]


class NetcfgError(Exception):
    """Base of every error caused by user input; the CLI prints it and exits 2."""

    exit_code = 2

    def render(self) -> str:
        return f"error: {self}"

    def __reduce__(self):
        # pickled as it is, not by calling __init__ again with ``args`` (the message), which most
        # subclasses take other arguments for: multiprocessing sends a worker's error back this way
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[NetcfgError], args: tuple, state: dict) -> NetcfgError:
    error = cls.__new__(cls, *args)
    if isinstance(error, OSError):  # WriteError: errno and strerror are read from args
        OSError.__init__(error, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class ReportedElsewhere(NetcfgError):
    """torchrun: this rank stops because other ranks failed, and they print why; the CLI
    prints nothing for it, and exits with the failing rank's code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(NetcfgError):
    """One located problem in a config file.

    ``path`` is the key path inside the document, ``file``/``line``/``col`` the
    position once located (1-based). ``hint`` says what would be right.
    """

    def __init__(
        self,
        message: str,
        path: Sequence[str | int] = (),
        *,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
        col: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.path: KeyPath = tuple(path)
        self.hint = hint
        self.file = file
        self.line = line
        self.col = col

    def prefixed(self, prefix: Sequence[str | int]) -> ConfigError:
        """The same error with its key path moved under ``prefix`` (if not located yet)."""
        if self.line is None:
            self.path = tuple(prefix) + self.path
        return self

    @property
    def where(self) -> str:
        if self.file is None:
            return "<config>"
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"

    def __str__(self) -> str:
        key = format_path(self.path)
        text = f"{key}: {self.message}" if key else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def render(self) -> str:
        return f"{self.where}: error: {self}"


class ConfigErrors(NetcfgError):
    """Several independent ConfigErrors found in one pass; all are reported."""

    def __init__(self, errors: Iterable[ConfigError]):
        unique: dict[str, ConfigError] = {}
        for e in errors:  # the same problem found twice (a csv read for train and test statistics) once
            unique.setdefault(e.render(), e)
        self.errors = sorted(unique.values(), key=_order)
        super().__init__("\n".join(e.render() for e in self.errors))

    def render(self) -> str:
        lines = [e.render() for e in self.errors]
        if len(lines) > 1:
            lines.append(f"{len(lines)} errors")
        return "\n".join(lines)


def _order(e: ConfigError) -> tuple:
    return (e.file or "", e.line or 0, e.col or 0)


class FieldError(ValueError):
    """Raised by a spec's cross-field validator to blame one key (``key``, or a path).

    pydantic reports a model validator's error at the mapping; the error
    converter in ``netcfg.spec`` moves it down to ``key`` so the message points at
    the line to change.
    """

    def __init__(self, message: str, key: str | tuple = ()):
        super().__init__(message)
        self.key = (key,) if isinstance(key, str) else tuple(key)


class ShapeError(ValueError):
    """Raised by a layer's shape inference; the graph locates it at the layer.

    ``key`` names the layer field to point at (``"kernel_size"``), if any, or a path
    inside the layer (``("body", 0, "kernel_size")``).
    """

    def __init__(self, message: str, key: str | tuple[str | int, ...] | None = None):
        super().__init__(message)
        self.key = key


def format_path(path: Sequence[str | int]) -> str:
    """``("layers", 3, "num_output")`` -> ``layers[3].num_output``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, choices: Iterable[str], *, show_all: int = 12) -> str:
    """A hint naming the nearest spelling, and the valid choices when few enough."""
    choices = sorted(set(choices))
    # a case slip ("relu" for "ReLU") is the commonest typo, and it wins over a closer-looking
    # spelling: difflib ranks 'Deconvolution' above 'Convolution' for "convolution"
    close = [c for c in choices if c.lower() == str(word).lower()][:1]
    if not close:
        close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    parts = []
    if close:
        parts.append(f"did you mean '{close[0]}'?")
    if choices and len(choices) <= show_all:
        parts.append("valid: " + ", ".join(choices))
    elif not close and show_all > 0:
        parts.append(f"valid: {', '.join(choices[:show_all])}, ... ({len(choices)} in all)")
    return "; ".join(parts)
