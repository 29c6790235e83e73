"""Sources npz and npy: named arrays to named tensors, dtypes, layouts, refused pickles, located errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netcfg.data.spec import DataSpec, source_spec
from netcfg.data.split import load_source
from netcfg.errors import ConfigError, ConfigErrors, NetcfgError
from netcfg.source import parse_yaml
from netcfg.spec import validate

RNG = np.random.default_rng(0)


def load(**kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("split", "train")
    return load_source(source_spec(**kw))


def test_npz_maps_arrays_to_tensors(tmp_path):
    x = RNG.integers(0, 256, (10, 28, 28), dtype=np.uint8)       # Keras' mnist.npz layout
    y = RNG.integers(0, 10, 10).astype(np.uint8)
    f = RNG.random((10, 4))                                        # float64
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, feats=f)
    t = load(source="npz", path=str(tmp_path / "d.npz"), arrays={"data": "x_train", "label": "y_train", "tab": "feats"},
             scale=1 / 255)
    assert t.describe() == {"data": ((1, 28, 28), "float32"), "label": ((), "int64"), "tab": ((4,), "float32")}
    np.testing.assert_array_equal(t["data"].numpy()[:, 0], x)      # (N, H, W) uint8 -> one channel
    np.testing.assert_array_equal(t["label"].numpy(), y)
    np.testing.assert_allclose(t["tab"].numpy(), f.astype(np.float32))


def test_npz_channels_last(tmp_path):
    x = RNG.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "c.npz", x=x, y=np.arange(5))
    t = load(source="npz", path=str(tmp_path / "c.npz"), arrays={"data": "x", "label": "y"}, channels_last=True)
    np.testing.assert_array_equal(t["data"].numpy(), x.transpose(0, 3, 1, 2))
    assert t.describe()["data"] == ((3, 32, 32), "float32")


def test_npy_directory(tmp_path):
    np.save(tmp_path / "images.npy", RNG.random((6, 2, 4, 4)).astype(np.float32))
    np.save(tmp_path / "target.npy", RNG.random(6))
    np.save(tmp_path / "mask.npy", RNG.random((6, 3)) > 0.5)
    t = load(source="npy", path=str(tmp_path), arrays={"data": "images", "label": "target.npy", "mask": "mask"},
             inputs={"label": "price"})
    assert t.describe() == {"data": ((2, 4, 4), "float32"), "price": ((), "float32"), "mask": ((3,), "bool")}


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "objs.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "o.npz", x=np.array([[1], "a"], dtype=object), y=np.arange(2))
    with pytest.raises(ConfigError) as e:
        load(source="npy", path=str(tmp_path), arrays={"data": "objs"})
    assert e.value.path == ("arrays", "data") and "object arrays" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load(source="npz", path=str(tmp_path / "o.npz"), arrays={"data": "x", "label": "y"})
    assert e.value.path == ("arrays", "data") and "unpickling" in str(e.value)


def test_missing_arrays_suggest_names(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((3, 2)), y_train=np.zeros(3))
    with pytest.raises(ConfigErrors) as e:
        load(source="npz", path=str(tmp_path / "d.npz"), arrays={"data": "x_trian", "label": "labels"})
    first, second = e.value.errors
    assert first.path == ("arrays", "data") and "did you mean 'x_train'" in str(first)
    assert second.path == ("arrays", "label") and "y_train" in str(second)
    with pytest.raises(ConfigError) as e:
        load(source="npy", path=str(tmp_path), arrays={"data": "x"})
    assert "no file 'x.npy'" in str(e.value)


@pytest.mark.parametrize("arrays, words", [
    ({"x": np.zeros((3, 2)), "y": np.zeros(4)}, "differ in length"),
    ({"x": np.array(5.0), "y": np.zeros(1)}, "single value"),
    ({"x": np.array(["a", "b"]), "y": np.zeros(2)}, r"holds strings \(<U1\), not numbers; store labels as integer ids"),
    ({"x": np.zeros(2), "y": np.array([1, 2**63], dtype=np.uint64)}, r"holds 9223372036854775808 \(uint64\), more than int64 holds"),
    ({"x": np.array([[0.5, np.nan], [np.inf, 1.0]]), "y": np.zeros(2)},
     r"holds 2 NaN or infinite value\(s\), first nan at index \[0, 1\]"),  # a NaN loss iterations later
])
def test_bad_arrays(tmp_path, arrays, words):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ConfigError, match=words):
        load(source="npz", path=str(tmp_path / "d.npz"), arrays={"data": "x", "label": "y"})


def test_not_an_npz_file(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError) as e:
        load(source="npz", path=str(tmp_path / "d.npz"), arrays={"data": "x"})
    assert e.value.path == ("path",) and "not a readable .npz" in str(e.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load(source="npz", path=str(tmp_path / "nope.npz"), arrays={"data": "x"})


def test_arrays_is_required_and_checked():
    with pytest.raises(NetcfgError) as e:
        validate(DataSpec, parse_yaml("train: {source: npz, path: d.npz, split: train, batch_size: 4}", "s.yaml"))
    assert "missing required key 'arrays'" in e.value.render()
    with pytest.raises(NetcfgError) as e:
        validate(DataSpec, parse_yaml("train: {source: npz, path: d.npz, split: train, batch_size: 4, arrays: {x: y}, "
                                      "chanels_last: true}", "s.yaml"))
    assert "did you mean 'channels_last'" in e.value.render()


def test_int_images_keep_their_dtype_until_transformed(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.full((4, 1, 2, 2), 1000, np.int16), y=np.zeros(4, np.int32))
    t = load(source="npz", path=str(tmp_path / "d.npz"), arrays={"data": "x", "label": "y"}, scale=0.001)
    assert t["data"].dtype == torch.int16 and t["label"].dtype == torch.int64
