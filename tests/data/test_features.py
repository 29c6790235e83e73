"""Source image_features: features measured right on hand-made images, train statistics, label groups, the zoo recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from netcfg.data.features import FEATURES, feature_names, image_features
from netcfg.data.sources import DIGITS_TRAIN, _digits
from netcfg.data.spec import DataSpec, source_spec
from netcfg.data.split import load_source
from netcfg.errors import ConfigError, ConfigErrors, NetcfgError
from netcfg.solver import Solver
from netcfg.solver.check import check_solver
from netcfg.solver.spec import load_solver
from netcfg.source import parse_yaml
from netcfg.spec import validate
from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
SOLVER = ROOT / "solvers" / "multitask_fashion_mnist.yaml"
FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
PARITY = {"even": [0, 2, 4, 6, 8], "odd": [1, 3, 5, 7, 9]}


def features_of(*images: np.ndarray, **kw) -> dict[str, np.ndarray]:
    """Every feature of (H, W) uint8 images, by name (profiles as arrays)."""
    batch = np.stack(images)[:, None]
    out, col = {}, 0
    values = image_features(batch, list(FEATURES), **kw)
    for name in FEATURES:
        width = kw.get("bins", 4) if name.endswith("_profile") else 1
        out[name] = values[:, col:col + width] if width > 1 else values[:, col]
        col += width
    return out


def test_features_of_a_block_in_the_top_left_corner():
    img = np.zeros((4, 4), np.uint8)
    img[:2, :2] = 255  # a 2x2 white block, top left
    f = {k: v[0] for k, v in features_of(img, bins=2).items()}
    assert f["ink"] == pytest.approx(0.25) and f["area"] == pytest.approx(0.25)
    assert f["height"] == pytest.approx(0.5) and f["width"] == pytest.approx(0.5)
    assert f["centroid_y"] == pytest.approx(0.25) and f["centroid_x"] == pytest.approx(0.25)  # pixel centres 1/8, 3/8
    assert f["spread_y"] == pytest.approx(0.125) and f["spread_x"] == pytest.approx(0.125)
    assert f["symmetry_lr"] == pytest.approx(0) and f["symmetry_ud"] == pytest.approx(0)  # its mirror image misses it
    assert f["edges"] == pytest.approx(1 / 6)  # 2 of the 12 horizontal neighbour pairs differ by 1, same vertically
    np.testing.assert_allclose(f["row_profile"], [0.5, 0]) and np.testing.assert_allclose(f["col_profile"], [0.5, 0])


def test_features_of_symmetric_blank_and_faint_images():
    bar = np.zeros((5, 6), np.uint8)
    bar[0:3, 2:4] = 200  # a bar in the top middle: left-right symmetric, not top-bottom
    blank = np.zeros((5, 6), np.uint8)
    faint = np.full((5, 6), 40, np.uint8)  # below the 0.2 threshold everywhere
    f = features_of(bar, blank, faint, bins=3)
    assert f["symmetry_lr"][0] == pytest.approx(1) and f["symmetry_ud"][0] < 1
    assert f["height"][0] == pytest.approx(3 / 5) and f["width"][0] == pytest.approx(2 / 6)
    assert f["centroid_x"][0] == pytest.approx(0.5)
    # a blank image: no object, centred, perfectly symmetric, nothing NaN
    assert [f[k][1] for k in ("ink", "height", "centroid_y", "spread_x", "symmetry_lr")] == [0, 0, 0.5, 0, 1]
    assert f["ink"][2] == pytest.approx(40 / 255) and f["area"][2] == 0 and f["height"][2] == 0
    assert f["row_profile"].shape == (3, 3)  # 5 rows in 3 bands of 2, 2, 1
    assert not np.isnan(np.concatenate([np.atleast_2d(v).reshape(3, -1) for v in f.values()], 1)).any()


def test_light_background_and_colour_images():
    img = np.zeros((6, 6), np.uint8)
    img[1:5, 2:3] = 255
    dark = image_features(img[None, None], list(FEATURES))
    light = image_features((255 - img)[None, None], list(FEATURES), light_background=True)
    np.testing.assert_allclose(light, dark, atol=1e-6)
    rgb = np.repeat(img[None, None], 3, axis=1)  # channels are averaged: grey RGB = grey
    np.testing.assert_allclose(image_features(rgb, list(FEATURES)), dark, atol=1e-6)
    floats = image_features(img[None, None].astype(np.float32) / 255, list(FEATURES))  # floats are read as 0..1
    np.testing.assert_allclose(floats, dark, atol=1e-6)


def digits_split(split: str, **keys) -> dict:
    return {"source": "image_features", "split": split, "batch_size": 16, "of": {"source": "digits"}, **keys}


def test_both_splits_are_standardised_with_train_statistics():
    images, labels = _digits()
    raw = image_features(images, list(FEATURES))
    mean, std = raw[:DIGITS_TRAIN].mean(0), raw[:DIGITS_TRAIN].std(0)
    std = np.where(std > 0, std, 1)
    train = load_source(source_spec(**digits_split("train")))
    test = load_source(source_spec(**digits_split("test")))
    np.testing.assert_allclose(train["features"].numpy(), (raw[:DIGITS_TRAIN] - mean) / std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(test["features"].numpy(), (raw[DIGITS_TRAIN:] - mean) / std, rtol=1e-4, atol=1e-5)
    assert abs(float(test["features"].mean())) > 1e-3  # not re-centred on the test split
    # limit picks samples, not statistics: the first 50 rows are the same rows
    short = load_source(source_spec(**digits_split("train", limit=50)))
    torch.testing.assert_close(short["features"], train["features"][:50])
    torch.testing.assert_close(train["data"], torch.from_numpy(images[:DIGITS_TRAIN]))  # images pass through
    assert torch.equal(train["label"], torch.from_numpy(labels[:DIGITS_TRAIN]))
    spec = source_spec(**digits_split("train", standardize=False, features=["ink", "row_profile"], profile_bins=2))
    raw_train = load_source(spec)
    assert raw_train.describe()["features"] == ((3,), "float32")
    assert feature_names(spec) == ["ink", "row_profile0", "row_profile1"]
    np.testing.assert_allclose(raw_train["features"][:, 0].numpy(), raw[:DIGITS_TRAIN, 0], rtol=1e-5)


def test_label_groups_add_a_group_label_with_names():
    data = load_source(source_spec(**digits_split("test", label_groups=PARITY, inputs={"group": "parity"})))
    assert torch.equal(data["parity"], data["label"] % 2)
    assert data.classes["parity"] == ["even", "odd"]
    assert data.describe()["parity"] == ((), "int64")


def spec_error(split: dict) -> NetcfgError:
    with pytest.raises(NetcfgError) as e:
        validate(DataSpec, parse_yaml(yaml.safe_dump({"train": split}, sort_keys=False), "solver.yaml"))
    return e.value


@pytest.mark.parametrize("keys, where, words", [
    ({"label_groups": {"a": [1, 2], "b": [3, 2]}}, (13, 7), "label 2 is in group 'a' and again in 'b'"),
    ({"label_groups": {"all": [0, 1]}}, (8, 5), "at least two groups"),
    ({"label_groups": {"a": [1], "b": []}}, (10, 8), "group 'b' lists no labels"),
    ({"features": ["ink", "centroid"]}, (9, 5), "did you mean 'centroid_y'"),
    ({"scale": 0.5}, (7, 10), "scale belongs under of:"),
    ({"of": {"source": "multi", "sources": [{"source": "digits"}]}}, (6, 13), "of: must be an image source"),
])
def test_spec_errors_are_located(keys, where, words):
    text = spec_error(digits_split("train", **keys)).render()
    assert words in text and f"solver.yaml:{where[0]}:{where[1]}:" in text, text


def write_solver(tmp_path: Path, **train_keys) -> Path:
    path = tmp_path / "solver.yaml"
    path.write_text(yaml.safe_dump({"net": str(ROOT / "configs/multitask.yaml"), "data": {
        "train": digits_split("train", **train_keys)}, "max_iter": 1, "base_lr": 0.1}, sort_keys=False))
    return path


def check_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigErrors) as e:
        check_solver(load_solver(path))
    return e.value.errors[0]


def test_load_time_group_errors_are_located(tmp_path):
    err = check_error(write_solver(tmp_path, label_groups={"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 9]}))
    line = next(i + 1 for i, s in enumerate((tmp_path / "solver.yaml").read_text().splitlines())
                if s.strip() == "label_groups:")
    assert err.line == line + 1 and "label(s) 8 of the train split are in no group" in str(err)
    err = check_error(write_solver(tmp_path, label_groups={"low": ["zero"], "high": [1]}))
    assert err.path == ("data", "train", "label_groups", "low", 0) and "names no classes" in str(err)
    err = check_error(write_solver(tmp_path, of={"source": "digits", "inputs": {"data": "image"}}))
    assert err.path == ("data", "train", "image") and "no tensor 'data' (valid: image, label)" in str(err)
    # of.classes relabels 0..N-1 before grouping: every sample fell into one group, silently
    groups = {"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8, 9]}
    err = check_error(write_solver(tmp_path, label_groups=groups, of={"source": "digits", "classes": [0, 5]}))
    assert err.path == ("data", "train", "of", "classes") and "of.classes has relabelled them" in str(err)


def test_a_huge_listed_label_is_not_a_table_size():
    # 10**30 sized the label -> group table: torch.full overflowed (a traceback), 10**9 would take 8 GB
    groups = {"low": [0, 1, 2, 3, 4, 10**30], "high": [5, 6, 7, 8, 9]}
    data = load_source(source_spec(**digits_split("test", label_groups=groups)))
    assert torch.equal(data["group"], (data["label"] >= 5).long())  # no digit has it, as with 10 before


@needs_fashion
def test_recipe_shapes_match_the_zoo_net():
    result = run_cli("check", str(SOLVER))
    assert result.exit_code == 0, result.stderr
    assert "features    input            features    19" in result.stdout
    # fewer profile bins give 15 features, not the net's 19: located at the features key
    result = run_cli("check", str(SOLVER), "--set", "data.train.profile_bins=2")
    assert result.exit_code == 2
    line = next(i + 1 for i, s in enumerate(SOLVER.read_text().splitlines()) if s.strip().startswith("source: image_features"))
    assert f"multitask_fashion_mnist.yaml:{line}:5: error: data.train.features: " in result.stderr
    assert "'features' has per-sample shape [15] but the net's input 'features' is [19]" in result.stderr


@needs_fashion
def test_both_heads_learn_fashion_mnist(tmp_path):
    # 200 iterations on 2,000 images: 80% and 99% here (the full recipe: see its header)
    overrides = ["max_iter=200", "test_interval=200", "test_iter=5", "display=0", "snapshot=0",
                 "data.train.limit=2000", "data.test.limit=500"]
    solver = Solver.from_file(SOLVER, overrides, out=tmp_path / "run", log=lambda line: None)
    before = solver.test()
    after = solver.solve()
    assert before["accuracy"] < 0.3 and after["accuracy"] > 0.65, (before, after)
    assert after["group_accuracy"] > 0.9 and after["group_loss"] < before["group_loss"] / 5, (before, after)


def test_json_schema_offers_image_features_without_recursing():
    from netcfg.schema import solver_schema

    text = str(solver_schema())  # `of:` offers the image sources, not image_features itself (no endless schema)
    assert "label_groups" in text and "profile_bins" in text and "'image_features'" in text
