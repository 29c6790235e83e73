"""Source csv: columns to tensors, train statistics for both splits, categories, labels, located errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from netcfg.data.spec import DataSpec, source_spec
from netcfg.data.split import load_source
from netcfg.errors import ConfigError, ConfigErrors, NetcfgError
from netcfg.source import parse_yaml
from netcfg.spec import validate

HOUSES = """area,rooms,city,price,kind
50,2,Paris,100.5,flat
70,3,Lyon,150,flat
"80",1,"Paris",170,house
90,4,Lyon,200.25,house
40,1,Nice,90,flat
"""


def write(tmp_path: Path, text: str = HOUSES, name: str = "houses.csv") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def load(f: Path, base_dir: Path | None = None, **kw):
    kw.setdefault("batch_size", 2)
    kw.setdefault("split", "train")
    return load_source(source_spec(source="csv", path=str(f), **kw), base_dir)


def test_numeric_columns_are_standardised(tmp_path):
    t = load(write(tmp_path), columns={"x": ["area", "rooms"], "a": "area"}, label="price")
    area = np.array([50, 70, 80, 90, 40.0])
    np.testing.assert_allclose(t["a"].numpy()[:, 0], (area - area.mean()) / area.std(), rtol=1e-6)
    assert t.describe() == {"x": ((2,), "float32"), "a": ((1,), "float32"), "label": ((), "float32")}
    np.testing.assert_allclose(t["label"].numpy(), [100.5, 150, 170, 200.25, 90])
    raw = load(write(tmp_path), columns={"a": "area"}, standardize=False)
    np.testing.assert_array_equal(raw["a"].numpy()[:, 0], area)


def test_test_fraction_uses_train_statistics(tmp_path):
    f = write(tmp_path)
    kw = dict(columns={"a": "area"}, label="kind", test_fraction=0.4)
    train, test = load(f, **kw), load(f, split="test", **kw)
    assert len(train["a"]) == 3 and len(test["a"]) == 2
    area = np.array([50, 70, 80.0])                  # the first 60% of the rows
    np.testing.assert_allclose(test["a"].numpy()[:, 0], (np.array([90, 40.0]) - area.mean()) / area.std(), rtol=1e-6)
    assert test["label"].tolist() == [1, 0] and test.classes["label"] == ["flat", "house"]


def test_unknown_category_in_test_is_located(tmp_path):
    f = write(tmp_path)
    with pytest.raises(ConfigError) as e:
        load(f, split="test", columns={"city": {"column": "city"}}, test_fraction=0.4)
    err = e.value
    assert (Path(err.file).name, err.line, err.col) == ("houses.csv", 6, 6)
    assert "category 'Nice' of column 'city' is not in the train split" in err.message and "Lyon, Paris" in err.hint


def test_train_path_for_a_separate_test_file(tmp_path):
    write(tmp_path)
    test = write(tmp_path, "rooms,area,city,price,kind\n2,60,Lyon,1,flat\n", "test.csv")  # other column order
    t = load(test, tmp_path, split="test", columns={"a": "area", "city": {"column": "city"}}, label="kind",
             train_path="houses.csv")  # relative to the solver file's directory
    area = np.array([50, 70, 80, 90, 40.0])
    assert t["a"].item() == pytest.approx((60 - area.mean()) / area.std(), rel=1e-6)
    assert t["city"].tolist() == [0] and t.classes["label"] == ["flat", "house"] and t["label"].tolist() == [0]


def test_test_split_without_train_statistics_is_an_error(tmp_path):
    f = write(tmp_path)
    with pytest.raises(ConfigError) as e:
        load(f, split="test", columns={"a": "area"})
    assert "train_path" in e.value.hint and "test_fraction" in e.value.hint
    assert len(load(f, split="test", columns={"a": "area"}, standardize=False)["a"]) == 5  # nothing to learn


def test_categorical_ids_and_one_hot(tmp_path):
    t = load(write(tmp_path), columns={"city": {"column": "city"}, "oh": {"column": "city", "encode": "onehot"}})
    assert t["city"].dtype == torch.int64 and t["city"].tolist() == [2, 0, 2, 0, 1]   # Lyon, Nice, Paris
    assert t["oh"].tolist()[0] == [0.0, 0.0, 1.0] and t.describe()["oh"] == ((3,), "float32")


@pytest.mark.parametrize("label, label_type, dtype, values", [
    ("rooms", "auto", torch.int64, [2, 3, 1, 4, 1]),
    ("price", "auto", torch.float32, [100.5, 150, 170, 200.25, 90]),
    ("kind", "auto", torch.int64, [0, 0, 1, 1, 0]),
    ("rooms", "float", torch.float32, [2, 3, 1, 4, 1]),
    ("city", "class", torch.int64, [2, 0, 2, 0, 1]),
])
def test_label_types(tmp_path, label, label_type, dtype, values):
    t = load(write(tmp_path), label=label, label_type=label_type)
    assert t["label"].dtype == dtype and t["label"].tolist() == values


def test_several_label_columns(tmp_path):
    t = load(write(tmp_path), label=["area", "rooms"], label_type="float")
    assert t.describe() == {"label": ((2,), "float32")}


def test_missing_value_is_located(tmp_path):
    f = write(tmp_path, "area,rooms,price\n50,2,100\n70,,150\n80,NA,170\n")
    with pytest.raises(ConfigErrors) as e:
        load(f, columns={"x": ["area", "rooms"]}, label="price")
    rendered = [x.render() for x in e.value.errors]
    assert rendered[0] == f"{f}:3:4: error: missing value in column 'rooms' (data row 2) (fill it in or drop the row)"
    assert rendered[1].startswith(f"{f}:4:4: error: missing value in column 'rooms' (data row 3)")


def test_row_with_a_missing_field(tmp_path):
    f = write(tmp_path, "area,rooms,price\n50,2,100\n70,150\n")
    with pytest.raises(ConfigError) as e:
        load(f, columns={"x": ["area", "rooms"]})
    assert e.value.render().startswith(f"{f}:3:7: error: row has 2 fields but the header has 3 (a missing field)")


def test_not_a_number(tmp_path):
    f = write(tmp_path, 'area,name,price\n50,"Smith, J",100\n7O,x,1\n')
    with pytest.raises(ConfigError) as e:
        load(f, columns={"x": ["area"]}, label="price")
    assert (e.value.line, e.value.col) == (3, 1) and "'7O' in numeric column 'area' is not a number" in e.value.message
    with pytest.raises(ConfigError) as e:
        load(f, columns={"x": ["price", "name"]}, test_fraction=0.5)  # quoted comma: columns still right
    assert (e.value.line, e.value.col) == (2, 4) and "'Smith, J'" in e.value.message


def test_nan_and_infinite_cells_are_errors_at_their_cell(tmp_path):
    # float() reads them all; they trained as a NaN loss with no cell named
    f = write(tmp_path, "a,price\n1,2\nNAN,3\ninf,4\n1e999,5\n-Infinity,6\n")
    with pytest.raises(ConfigErrors) as e:
        load(f, columns={"x": ["a"]}, label="price")
    got = [(err.line, err.message) for err in e.value.errors]
    assert got == [(3, "missing value in column 'a' (data row 2)"), (4, "'inf' in numeric column 'a' is infinite"),
                   (5, "'1e999' in numeric column 'a' is infinite"),
                   (6, "'-Infinity' in numeric column 'a' is infinite")]


def test_the_same_bad_cell_is_reported_once_though_both_splits_read_it():
    from netcfg.errors import ConfigError, ConfigErrors

    twice = [ConfigError("missing value", file="a.csv", line=3, col=4) for _ in range(2)]
    assert ConfigErrors(twice + [ConfigError("other", file="a.csv", line=2, col=1)]).render() == (
        "a.csv:2:1: error: other\na.csv:3:4: error: missing value\n2 errors")


def test_many_errors_are_capped(tmp_path):
    f = write(tmp_path, "a\n" + "x\n" * 30)
    with pytest.raises(ConfigErrors) as e:
        load(f, columns={"v": "a"}, standardize=False)
    assert len(e.value.errors) == 11 and "more problems" in e.value.errors[-1].message


def test_unknown_column_names_point_at_the_solver_key(tmp_path):
    f = write(tmp_path)
    with pytest.raises(ConfigErrors) as e:
        load(f, columns={"x": ["area", "room"]}, label="prise")
    paths = [err.path for err in e.value.errors]
    assert ("columns", "x", 1) in paths and ("label",) in paths
    assert "did you mean 'rooms'" in str(e.value.errors[paths.index(("columns", "x", 1))])


def test_a_file_with_another_delimiter_says_which(tmp_path):
    f = write(tmp_path, "a;b\n1;2\n3;4\n", "semi.csv")
    with pytest.raises(ConfigError) as e:
        load(f, columns={"x": "a"})
    assert e.value.hint == "the header is separated by ';', not ',': add delimiter: ';'"
    assert load(f, columns={"x": "a"}, delimiter=";", standardize=False)["x"].tolist() == [[1], [3]]


def test_a_file_without_a_header_says_so(tmp_path):
    # numpy.savetxt and to_csv(header=False) write no header: its first sample was taken for the names
    from tests.cli import netcfg

    hint = "the first row (5.1, 3.5, 1.4, 0.2, ...) looks like data: the csv source reads columns by name"
    f = write(tmp_path, "5.1,3.5,1.4,0.2,0\n4.9,3.0,1.4,0.2,1\n", "iris.csv")
    with pytest.raises(ConfigError) as e:
        load(f, columns={"x": ["sepal_length"]})
    assert e.value.hint.startswith(hint)  # was: valid: 0, 0.2, 1.4, 3.5, 5.1
    with pytest.raises(ConfigErrors) as e:  # repeated values were 'column name '0' appears twice'
        load(write(tmp_path, "0,0,1,1\n1,0,1,0\n", "bits.csv"), columns={"x": ["a"]})
    assert all("the first row (0, 0, 1, 1) looks like data" in err.hint for err in e.value.errors)
    (tmp_path / "net.yaml").write_text("name: N\ninputs: {x: [1]}\nlayers:\n  - {name: ip, type: InnerProduct, bottom: x, "
                                       "num_output: 1}\n  - {name: loss, type: EuclideanLoss, bottom: [ip, x]}\n")
    (tmp_path / "s.yaml").write_text("net: net.yaml\ndata:\n  train: {source: csv, path: iris.csv, split: train, "
                                     "batch_size: 2, columns: {x: [sepal_length]}}\nbase_lr: 0.1\nmax_iter: 1\n")
    code, _, err = netcfg("check", tmp_path / "s.yaml")
    assert code == 2 and "data.train.columns.x[0]: no column 'sepal_length' in iris.csv (" + hint in err, err


def test_tsv_and_bad_files(tmp_path):
    f = write(tmp_path, "a\tb\n1\t2\n3\t4\n", "t.tsv")
    assert load(f, columns={"x": ["a", "b"]}, standardize=False)["x"].tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ConfigError, match="empty"):
        load(write(tmp_path, "", "e.csv"), columns={"x": "a"})
    with pytest.raises(ConfigError, match="no rows"):
        load(write(tmp_path, "a,b\n", "h.csv"), columns={"x": "a"})
    dup = write(tmp_path, "a,a\n1,2\n", "d.csv")
    with pytest.raises(ConfigError) as e:
        load(dup, columns={"x": "a"})
    assert (e.value.line, e.value.col) == (1, 3) and "appears twice" in e.value.message
    (tmp_path / "b.csv").write_bytes(b"a\n1\n\xff\n")
    with pytest.raises(ConfigError) as e:
        load(tmp_path / "b.csv", columns={"x": "a"})
    assert e.value.line == 3 and "UTF-8" in e.value.message


def test_spec_rules():
    for yaml, words in [
        ("train: {source: csv, path: a.csv, split: train, batch_size: 2}", "columns"),
        ("train: {source: csv, path: a.csv, split: train, batch_size: 2, label: y, columns: {label: x}}", "taken"),
        ("train: {source: csv, path: a.csv, split: train, batch_size: 2, label: y, test_fraction: 1.5}", "test_fraction"),
        ("train: {source: csv, path: a.csv, split: train, batch_size: 2, columns: {c: {column: c, encode: hot}}}",
         "did you mean 'onehot'"),
    ]:
        with pytest.raises(NetcfgError) as e:
            validate(DataSpec, parse_yaml(yaml, "s.yaml"))
        assert words in e.value.render(), e.value.render()
