"""Source csv: columns of a table, chosen by name, to named tensors, standardised with train statistics.

``columns:`` maps each tensor to one column or a list of numeric columns
(float32 (D,), standardised by default), or to ``{column: NAME, encode: id}``
(int64 category ids, for an Embed layer) or ``encode: onehot`` (float32 (K,)).
``label:`` names the label column(s). Statistics (means, standard deviations,
the category list) always come from the train split, so the test split is
transformed exactly as the train split: with ``test_fraction`` one file holds
both (the last rows are the test split), otherwise the test split reads the
train file named by ``train_path``. Bad cells are reported as ``FILE:LINE:COL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from netcfg.data.csvfile import Table, no_header_hint, read_table
from netcfg.data.spec import DataSourceSpec
from netcfg.data.registry import register_source
from netcfg.data.split import Arrays
from netcfg.errors import ConfigError, ConfigErrors, FieldError, did_you_mean
from netcfg.spec import Spec

__all__ = ["CsvSpec", "CategoricalColumn", "csv_statistics", "column_statistics"]

MISSING = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "?"]


class CategoricalColumn(Spec):
    """A text or code column turned into categories (numbered in the train split's sorted order)."""

    column: str = Field(..., min_length=1, description="the column's name in the header")
    encode: Literal["id", "onehot"] = Field("id", description="id: an int64 per sample (for Embed); onehot: float32 (K,)")


class CsvSpec(DataSourceSpec):
    """csv: which columns feed which tensors, the label, and where the train statistics come from."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("path", "mean_file", "train_path")

    columns: dict[str, str | list[str] | CategoricalColumn] = Field(
        default_factory=dict, description="tensor name -> a numeric column, a list of them, or {column, encode: id|onehot}")
    label: str | list[str] | None = Field(None, min_length=1, description="the label column (or several: a (K,) label)")
    label_type: Literal["auto", "class", "int", "float"] = Field(
        "auto", description="class: ids of the train split's sorted values; int: int64 as written; float: float32; "
                            "auto: one column: int if all are integers, float if numbers, else class; several: float")
    standardize: bool = Field(True, description="numeric columns become (x - mean) / std with the train split's statistics")
    delimiter: str | None = Field(None, min_length=1, max_length=1, description="field separator; default ',' (tab for .tsv)")
    missing: list[str] = Field(MISSING, description="cell texts that mean a missing value (reported as errors)")
    train_path: str | None = Field(None, min_length=1, description="the train split's CSV, whose statistics transform this split (default: path)")
    test_fraction: float | None = Field(None, gt=0, lt=1, description="path holds both splits: this last fraction of its rows is the test split")

    @model_validator(mode="after")
    def _something_to_read(self) -> CsvSpec:
        if not self.columns and not self.label:
            raise FieldError("csv needs columns (tensor -> column names) or a label", "columns")
        if self.label and "label" in self.columns:
            raise FieldError("the tensor name 'label' is taken by the label column", ("columns", "label"))
        return self


@register_source("csv", needs_path=True, spec=CsvSpec)
def load_csv(spec: CsvSpec, path: Path, base_dir: Path | None = None) -> Arrays:
    """Tabular data: a header row, then one sample per row (stdlib csv module)."""
    part, train, _ = _tables(spec, path, base_dir)
    errors: list[ConfigError] = []
    out: dict[str, np.ndarray] = {}
    classes: dict[str, list[str]] = {}
    stats = csv_statistics(spec, train, errors) if train is not None else {}
    missing = frozenset(spec.missing)
    for name, group in spec.columns.items():
        if isinstance(group, CategoricalColumn):
            cats = stats[name]
            ids = _category_ids(part, part.header.index(group.column), cats, missing, errors)
            out[name] = ids if group.encode == "id" else np.eye(len(cats), dtype=np.float32)[ids]
        else:
            cols = [part.header.index(c) for c in _names(group)]
            x = part.numbers(cols, missing, errors)
            if spec.standardize:
                mean, std = stats[name]
                x = (x - mean) / std
            out[name] = x.astype(np.float32)
    if spec.label:
        kind, cats = stats["label"] if train is not None else (_label_kind(spec, part, missing, errors), None)
        out["label"] = _labels(spec, part, kind, cats, missing, errors)
        if kind == "class":
            classes["label"] = cats
    if errors:
        # the train split's cells are read twice (statistics and values): report each once
        unique = list({(e.file, e.line, e.col, e.message): e for e in errors}.values())
        raise unique[0] if len(unique) == 1 else ConfigErrors(unique)
    origins = {name: ("columns", name) for name in spec.columns}
    return Arrays(out, classes, {**origins, "label": ("label",)} if spec.label else origins)


def csv_statistics(spec: CsvSpec, train: Table, errors: list[ConfigError]) -> dict[str, object]:
    """The train split's statistics: ``{tensor: (mean, std)}`` for numeric groups,
    ``{tensor: categories}`` for categorical ones, ``{"label": (kind, categories)}``."""
    missing = frozenset(spec.missing)
    stats: dict[str, object] = {}
    for name, group in spec.columns.items():
        if isinstance(group, CategoricalColumn):
            stats[name] = _sorted(set(train.strings(train.header.index(group.column), missing, errors)))
        elif spec.standardize:
            stats[name] = column_statistics(train.numbers([train.header.index(c) for c in _names(group)], missing, errors))
    if spec.label:
        kind = _label_kind(spec, train, missing, errors)
        cats = _sorted(set(train.strings(train.header.index(spec.label), missing, errors))) if kind == "class" else None
        stats["label"] = (kind, cats)
    return stats


def column_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (mean, std) of the train rows (N, D), for ``(x - mean) / std``; a
    constant column gets std 1, so it standardises to 0, not NaN."""
    std = x.std(0)
    return x.mean(0), np.where(std > 0, std, 1.0)


def _tables(spec: CsvSpec, path: Path, base_dir: Path | None) -> tuple[Table, Table | None, Table]:
    """(this split's rows, the train split's rows or None if not needed, the file read)."""
    table = _read(spec, path, ("path",))
    _check_columns(spec, table, ("path",))
    if spec.test_fraction is not None:
        n_test = max(1, round(len(table.rows) * spec.test_fraction))
        if n_test >= len(table.rows):
            raise ConfigError(f"test_fraction {spec.test_fraction} of {len(table.rows)} rows leaves no train rows",
                              ("test_fraction",))
        train = table.subset(slice(None, len(table.rows) - n_test))
        return (train if spec.split == "train" else table.subset(slice(len(train.rows), None))), train, table
    if spec.split == "train":
        return table, table, table
    if spec.train_path is None:
        if _needs_statistics(spec):
            raise ConfigError("the test split is transformed with the train split's statistics (means, std, "
                              "categories), but no train file is named", ("path",),
                              hint="add train_path: <the train CSV>, or test_fraction: 0.2 to cut one file in two")
        return table, None, table
    train = _read(spec, spec.resolve(spec.train_path, base_dir), ("train_path",))
    _check_columns(spec, train, ("train_path",))
    return table, train, table


def _needs_statistics(spec: CsvSpec) -> bool:
    categorical = any(isinstance(g, CategoricalColumn) for g in spec.columns.values())
    numeric = any(not isinstance(g, CategoricalColumn) for g in spec.columns.values())
    return categorical or (spec.standardize and numeric) or (bool(spec.label) and spec.label_type in ("auto", "class"))


def _read(spec: CsvSpec, path: Path, key: tuple) -> Table:
    if not path.is_file():
        raise ConfigError(f"'{path}' is not a file" if path.exists() else f"file '{path}' does not exist", key,
                          hint="a relative path resolves against the solver file's directory")
    table = read_table(path, _delimiter(spec, path))
    if not table.rows:
        raise ConfigError(f"'{path}' has a header but no rows", key)
    return table


def _check_columns(spec: CsvSpec, table: Table, key: tuple) -> None:
    """Every named column exists in the header; errors point at the name in the solver file."""
    errors = []
    where: list[tuple[str, tuple]] = []
    for name, group in spec.columns.items():
        if isinstance(group, CategoricalColumn):
            where.append((group.column, ("columns", name, "column")))
        elif isinstance(group, str):
            where.append((group, ("columns", name)))
        else:
            where += [(c, ("columns", name, i)) for i, c in enumerate(group)]
    if spec.label:
        labels = [spec.label] if isinstance(spec.label, str) else spec.label
        where += [(c, ("label",) if isinstance(spec.label, str) else ("label", i)) for i, c in enumerate(labels)]
    delimiter = _delimiter(spec, Path(table.file))
    for column, at in where:
        if column not in table.header:
            errors.append(ConfigError(f"no column '{column}' in {Path(table.file).name}", at,
                                      hint=_other_delimiter(column, table.header, delimiter)
                                      or no_header_hint(table.header) or did_you_mean(column, table.header)))
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)


def _delimiter(spec: CsvSpec, path: Path) -> str:
    return spec.delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")


def _other_delimiter(column: str, header: list[str], delimiter: str) -> str | None:
    """A hint when the header splits into ``column`` on another common separator (a
    semicolon-separated file read with the default comma)."""
    for other in (",", ";", "\t", "|"):
        if other != delimiter and any(column in (c.strip() for c in h.split(other)) for h in header):
            return f"the header is separated by {other!r}, not {delimiter!r}: add delimiter: {other!r}"
    return None


def _names(group: str | list[str]) -> list[str]:
    return [group] if isinstance(group, str) else list(group)


def _sorted(values: set[str]) -> list[str]:
    """Numbers by value, then text: the category order (and so the ids)."""
    def key(v: str):
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)
    return sorted(values, key=key)


def _category_ids(part: Table, col: int, cats: list[str], missing: frozenset[str], errors: list) -> np.ndarray:
    index = {c: i for i, c in enumerate(cats)}
    ids = np.zeros(len(part.rows), np.int64)
    for i, value in enumerate(part.strings(col, missing, errors)):
        if value in index:
            ids[i] = index[value]
        elif value not in missing and len(errors) < 10:
            errors.append(part.at(i, col, f"category {value!r} of column '{part.header[col]}' is not in the train split",
                                  hint=did_you_mean(value, cats)))
    return ids


def _label_kind(spec: CsvSpec, table: Table, missing: frozenset[str], errors: list) -> str:
    if spec.label_type != "auto":
        return spec.label_type
    if not isinstance(spec.label, str):
        return "float"  # several columns: regression targets, or multi-label 0/1 for a sigmoid loss
    cols = [table.header.index(c) for c in _names(spec.label)]
    values = [table.rows[i][j].strip() for i in range(len(table.rows)) for j in cols]
    try:
        numbers = [float(v) for v in values if v not in missing]
    except ValueError:
        return "class"
    return "int" if all(v.is_integer() for v in numbers) else "float"


def _labels(spec: CsvSpec, part: Table, kind: str, cats: list[str] | None, missing: frozenset[str], errors: list) -> np.ndarray:
    if kind == "class":
        if not isinstance(spec.label, str):
            raise ConfigError("label_type class needs one label column", ("label_type",), hint="use int or float")
        return _category_ids(part, part.header.index(spec.label), cats or [], missing, errors)
    cols = [part.header.index(c) for c in _names(spec.label)]
    x = part.numbers(cols, missing, errors)
    if kind == "int":
        frac = np.flatnonzero(np.nan_to_num(x) % 1 != 0)
        if len(frac) and len(errors) < 10:
            i, k = divmod(int(frac[0]), len(cols))
            errors.append(part.at(i, cols[k], f"label {part.rows[i][cols[k]].strip()!r} is not an integer",
                                  hint="use label_type: float for a regression target"))
        x = np.nan_to_num(x).astype(np.int64)
    else:
        x = x.astype(np.float32)
    return x[:, 0] if isinstance(spec.label, str) else x
