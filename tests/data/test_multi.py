"""Source multi (image + tabular), and every source's tensors matched to the net's inputs by the solver."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from netcfg.data.loader import BatchLoader
from netcfg.data.sources import DIGITS_TRAIN, _digits
from netcfg.data.spec import DataSpec, source_spec
from netcfg.data.split import load_source
from netcfg.errors import ConfigError, ConfigErrors, NetcfgError
from netcfg.solver import Solver
from netcfg.solver.check import check_solver
from netcfg.solver.rundir import resolved_config
from netcfg.solver.spec import load_solver
from netcfg.source import parse_yaml
from netcfg.spec import validate

NET = """
name: DigitsPrice
inputs:
  image: [1, 8, 8]
  tab: [3]
  price: [1]
  label: {shape: [], dtype: int64}
layers:
  - {name: img, type: InnerProduct, bottom: image, num_output: 32}
  - {name: feat, type: InnerProduct, bottom: tab, num_output: 8}
  - {name: both, type: Concat, bottom: [img, feat]}
  - {name: relu, type: ReLU, top: both}
  - {name: cls, type: InnerProduct, bottom: both, num_output: 10}
  - {name: loss, type: SoftmaxWithLoss, bottom: [cls, label]}
  - {name: value, type: InnerProduct, bottom: both, num_output: 1}
  - {name: price_loss, type: EuclideanLoss, bottom: [value, price]}
  - {name: accuracy, type: Accuracy, bottom: [cls, label], include: {phase: TEST}}
"""


def write_tables(root: Path) -> None:
    """Per digit: ink, ink of the top half, ink of the left half; price = a made-up function of them."""
    images, _ = _digits()
    x = images[:, 0].astype(np.float64) / 255
    ink, top, left = x.mean((1, 2)), x[:, :4].mean((1, 2)), x[:, :, :4].mean((1, 2))
    price = 1 + 5 * ink - 2 * top
    for name, part in (("train.csv", slice(None, DIGITS_TRAIN)), ("test.csv", slice(DIGITS_TRAIN, None))):
        rows = ["ink,top,left,price"] + [f"{a:.5f},{b:.5f},{c:.5f},{p:.4f}"
                                          for a, b, c, p in zip(ink[part], top[part], left[part], price[part])]
        (root / name).write_text("\n".join(rows) + "\n")


def split_yaml(split: str, **extra) -> dict:
    tab = {"source": "csv", "path": f"{split}.csv", "columns": {"tab": ["ink", "top", "left"]},
           "label": ["price"], "label_type": "float", "inputs": {"label": "price"}}
    if split == "test":
        tab["train_path"] = "train.csv"
    return {"source": "multi", "split": split, "batch_size": 64 if split == "train" else 120,
            "sources": [{"source": "digits", "scale": 0.00390625, "inputs": {"data": "image"}}, tab], **extra}


def write_solver(root: Path, train: dict | None = None, test: dict | None = None, **keys) -> Path:
    write_tables(root)
    (root / "net.yaml").write_text(NET)
    solver = {"net": "net.yaml", "data": {"train": train or split_yaml("train"), "test": test or split_yaml("test")},
              "base_lr": 0.05, "momentum": 0.9, "max_iter": 120, "test_interval": 120, "display": 0,
              "snapshot_prefix": "m", "random_seed": 1, "device": "cpu", **keys}
    (root / "solver.yaml").write_text(yaml.safe_dump(solver, sort_keys=False))
    return root / "solver.yaml"


def test_multi_zips_sources_sample_by_sample(tmp_path):
    spec = load_solver(write_solver(tmp_path)).data.train
    data = load_source(spec, tmp_path)
    assert data.describe() == {"image": ((1, 8, 8), "float32"), "label": ((), "int64"), "tab": ((3,), "float32"),
                               "price": ((1,), "float32")}
    assert data.origins["tab"] == ("sources", 1, "columns", "tab") and data.origins["image"] == ("sources", 0, "inputs", "data")
    batch = BatchLoader(data, spec, seed=0).next_batch()
    # the tabular row belongs to the image: the unstandardised ink is the image's mean pixel
    ink = batch["image"].mean((1, 2, 3)) * 256 / 255
    tab = load_source(spec.sources[1].model_copy(update={"standardize": False}), tmp_path)
    order = BatchLoader(data, spec, seed=0).permutation(0)[:64]
    torch.testing.assert_close(tab["tab"][order, 0], ink.float(), atol=1e-4, rtol=0)


def test_solver_trains_an_image_plus_tabular_net(tmp_path):
    solver = Solver.from_file(write_solver(tmp_path), out=tmp_path / "run", log=lambda line: None)
    before = solver.test()
    after = solver.solve()
    assert after["accuracy"] > 0.8 > before["accuracy"]
    assert after["price_loss"] < before["price_loss"] / 10
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert str(tmp_path / "train.csv") in config  # every path of every sub-source is absolute in the run


def test_resolved_config_makes_every_path_absolute(tmp_path):
    spec = load_solver(write_solver(tmp_path))
    test = resolved_config(spec)["data"]["test"]
    assert test["sources"][1]["path"] == str(tmp_path / "test.csv")
    assert test["sources"][1]["train_path"] == str(tmp_path / "train.csv")


def test_check_locates_a_mismatch_at_the_sub_source(tmp_path):
    train = split_yaml("train")
    train["sources"][1]["columns"] = {"tab": ["ink", "top"]}           # 2 features, the net wants 3
    path = write_solver(tmp_path, train=train)
    with pytest.raises(ConfigErrors) as e:
        check_solver(load_solver(path))
    text = e.value.render()
    line = next(i + 1 for i, s in enumerate(path.read_text().splitlines()) if s.strip().startswith("tab:"))
    assert f"solver.yaml:{line + 1}:" in text  # the value: the block list under `tab:`
    assert "data.train.sources[1].columns.tab:" in text
    assert "'tab' has per-sample shape [2]" in text


def test_check_names_a_missing_input(tmp_path):
    train = split_yaml("train")
    train["sources"][1]["inputs"] = {"label": "prize"}
    with pytest.raises(ConfigErrors) as e:
        check_solver(load_solver(write_solver(tmp_path, train=train)))
    text = e.value.render()
    assert "the net's input 'price' is not among the train data's tensors" in text and "did you mean 'prize'" in text


def test_errors_inside_a_sub_source_are_located(tmp_path):
    train = split_yaml("train")
    train["sources"][1]["columns"] = {"tab": ["ink", "top", "lfet"]}
    path = write_solver(tmp_path, train=train)
    with pytest.raises(ConfigErrors) as e:
        check_solver(load_solver(path))
    err = e.value.errors[0]
    assert err.path == ("data", "train", "sources", 1, "columns", "tab", 2) and "did you mean 'left'" in str(err)
    assert err.line == next(i + 1 for i, s in enumerate(path.read_text().splitlines()) if "lfet" in s)


def test_sources_must_have_the_same_length(tmp_path):
    write_tables(tmp_path)
    spec = source_spec(source="multi", split="train", batch_size=4, sources=[
        {"source": "digits"}, {"source": "csv", "path": str(tmp_path / "test.csv"), "columns": {"t": "ink"}}])
    with pytest.raises(ConfigError) as e:
        load_source(spec)
    assert e.value.path == ("sources",) and "differ in length" in str(e.value)
    assert "sources[0] (digits) 1437, sources[1] (csv) 360" in str(e.value)
    spec = source_spec(source="multi", split="train", batch_size=4, limit=100, sources=[
        {"source": "digits"}, {"source": "digits", "inputs": {"data": "image", "label": "y"}}])
    assert load_source(spec).num_samples == 100


def test_tensor_names_must_not_collide():
    spec = source_spec(source="multi", split="test", batch_size=4,
                       sources=[{"source": "digits"}, {"source": "digits", "inputs": {"data": "image"}}])
    with pytest.raises(ConfigError) as e:
        load_source(spec)
    assert e.value.path == ("sources", 1) and "both give a tensor 'label'" in str(e.value)


@pytest.mark.parametrize("extra, words", [
    ({"scale": 0.5}, "scale belongs on the sub-source"),
    ({"sources": [{"source": "multi", "sources": [{"source": "digits"}]}]}, "do not nest"),
    ({"sources": [{"source": "digits", "split": "test"}]}, "sources[0] is split test"),
    ({"sources": [{"source": "digitz"}]}, "did you mean 'digits'"),
    ({"sources": [{"source": "digits", "sacle": 1}]}, "did you mean 'scale'"),
])
def test_multi_spec_rules(extra, words):
    doc = {"train": {"source": "multi", "split": "train", "batch_size": 4, "sources": [{"source": "digits"}], **extra}}
    with pytest.raises(NetcfgError) as e:
        validate(DataSpec, parse_yaml(yaml.safe_dump(doc), "s.yaml"))
    assert words in e.value.render(), e.value.render()
