"""A CSV file read with the stdlib csv module, keeping each cell's line and column for errors.

Cells stay strings; ``numbers`` and ``strings`` turn columns into arrays and
report each bad cell (missing, not a number) as ``FILE:LINE:COL``, up to
``MAX_ERRORS`` at once. Files are cached per process by path, size and mtime.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netcfg.errors import ConfigError, ConfigErrors

__all__ = ["Table", "read_table", "no_header_hint", "MAX_ERRORS"]

MAX_ERRORS = 10


@dataclass
class Table:
    """Header, rows of cell strings, and where each row starts in the file."""

    file: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]        # 1-based line of each row
    offsets: list[list[int]]  # 1-based column of each cell on its row's first line

    def at(self, row: int, col: int, message: str, hint: str | None = None) -> ConfigError:
        """An error located at one cell (row index into ``rows``, column index into ``header``)."""
        offs = self.offsets[row]
        return ConfigError(message, hint=hint, file=self.file, line=self.lines[row],
                           col=offs[col] if col < len(offs) else (offs[-1] if offs else 1))

    def subset(self, part: slice) -> Table:
        return Table(self.file, self.header, self.rows[part], self.lines[part], self.offsets[part])

    def numbers(self, cols: Sequence[int], missing: frozenset[str], errors: list[ConfigError]) -> np.ndarray:
        """(rows, len(cols)) float64; bad cells are appended to ``errors`` (as NaN here)."""
        out = np.empty((len(self.rows), len(cols)), np.float64)
        for i, row in enumerate(self.rows):
            for k, j in enumerate(cols):
                cell = row[j].strip()
                value = np.nan
                try:
                    if cell in missing or cell.lower() in ("nan", "+nan", "-nan"):
                        raise KeyError(cell)
                    value = float(cell)  # "inf" and 1e999 read as infinity
                except KeyError:
                    self._bad(errors, i, j, f"missing value in column '{self.header[j]}' (data row {i + 1})",
                              "fill it in or drop the row")
                except ValueError:
                    self._bad(errors, i, j, f"{cell!r} in numeric column '{self.header[j]}' is not a number",
                              "declare text columns as {column: NAME, encode: id} or onehot")
                else:
                    if math.isinf(value):
                        value = np.nan
                        self._bad(errors, i, j, f"{cell!r} in numeric column '{self.header[j]}' is infinite",
                                  "give a finite number, or mark the cell missing and drop the row")
                out[i, k] = value
        return out

    def strings(self, col: int, missing: frozenset[str], errors: list[ConfigError]) -> list[str]:
        out = []
        for i, row in enumerate(self.rows):
            cell = row[col].strip()
            if cell in missing:
                self._bad(errors, i, col, f"missing value in column '{self.header[col]}' (data row {i + 1})",
                          "fill it in or drop the row")
            out.append(cell)
        return out

    def _bad(self, errors: list[ConfigError], row: int, col: int, message: str, hint: str) -> None:
        if len(errors) < MAX_ERRORS:
            errors.append(self.at(row, col, message, hint))
        elif len(errors) == MAX_ERRORS:
            errors.append(ConfigError(f"more problems in '{self.file}' not shown", file=self.file,
                                      line=self.lines[-1] + 1, col=1))


def read_table(path: Path, delimiter: str) -> Table:
    """The whole file; ConfigErrors for unreadable text and rows of the wrong length."""
    stat = path.stat()
    return _read(str(path), delimiter, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read(file: str, delimiter: str, size: int, mtime_ns: int) -> Table:
    try:
        text = Path(file).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = Path(file).read_bytes()[: e.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text: byte 0x{e.object[e.start]:02x}", file=file, line=line, col=1,
                          hint="save the file as UTF-8") from None
    physical = text.splitlines(keepends=True)
    reader = csv.reader(physical, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows, lines, offsets, errors = [], [], [], []
    consumed = 0
    try:
        for record in reader:
            first = consumed + 1
            consumed = reader.line_num
            if not record or all(not c.strip() for c in record) and len(record) <= 1:
                continue  # blank line
            if header is None:
                header = [c.strip() for c in record]
                _check_header(header, file, first, _offsets(physical[first - 1], delimiter), errors)
                continue
            offs = _offsets(physical[first - 1], delimiter)
            if len(record) != len(header):
                what = "a missing field" if len(record) < len(header) else "an extra field"
                if len(errors) < MAX_ERRORS:
                    errors.append(ConfigError(f"row has {_fields(len(record))} but the header has {len(header)} ({what})",
                                              file=file, line=first, col=len(physical[first - 1].rstrip("\r\n")) + 1,
                                              hint=f"columns: {', '.join(header)}"))
                continue
            rows.append(record)
            lines.append(first)
            offsets.append(offs)
    except csv.Error as e:
        raise ConfigError(f"malformed CSV: {e}", file=file, line=reader.line_num, col=1,
                          hint="check the quotes on this line") from None
    if header is None:
        raise ConfigError("the file is empty (no header row)", file=file, line=1, col=1,
                          hint="the first row names the columns")
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    return Table(file, header, rows, lines, offsets)


def _check_header(header: list[str], file: str, line: int, offs: list[int], errors: list[ConfigError]) -> None:
    seen: dict[str, int] = {}
    for j, name in enumerate(header):
        col = offs[j] if j < len(offs) else 1
        if not name:
            errors.append(ConfigError(f"column {j + 1} of the header has no name", file=file, line=line, col=col))
        elif name in seen:
            errors.append(ConfigError(f"column name '{name}' appears twice in the header (columns {seen[name] + 1} "
                                      f"and {j + 1})", file=file, line=line, col=col, hint=no_header_hint(header)))
        seen.setdefault(name, j)


def no_header_hint(header: list[str]) -> str | None:
    """A hint when the first row is numbers, not names: a file written without a header
    (pandas' to_csv(header=False), numpy.savetxt), whose first sample was taken for one."""
    try:
        [float(name) for name in header]
    except ValueError:
        return None
    return (f"the first row ({', '.join(header[:4])}{', ...' if len(header) > 4 else ''}) looks like data: "
            "the csv source reads columns by name, so the file needs a header row naming them")


def _offsets(line: str, delimiter: str) -> list[int]:
    """1-based start column of each field of one physical line (quotes respected)."""
    out, quoted = [1], False
    for i, ch in enumerate(line):
        if ch == '"':  # a doubled quote inside quotes toggles twice
            quoted = not quoted
        elif ch == delimiter and not quoted:
            out.append(i + 2)
    return out


def _fields(n: int) -> str:
    return f"{n} field" + ("" if n == 1 else "s")
