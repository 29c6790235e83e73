"""CIFAR-10 / CIFAR-100 binary files written here: layout, labels, archives, refused pickles, corrupt files."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from netcfg.data.spec import DataSpec, source_spec
from netcfg.data.split import load_source
from netcfg.errors import ConfigError, NetcfgError
from netcfg.source import parse_yaml
from netcfg.spec import validate

NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def records(n: int, labels: int, seed: int, classes=(10,)) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lab = np.stack([rng.integers(0, c, n) for c in classes], 1).astype(np.uint8)
    pix = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([lab, pix], 1).tobytes(), lab.astype(np.int64), pix.reshape(n, 3, 32, 32)


def write_cifar10(root: Path, n: int = 6) -> dict[str, tuple]:
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    out = {}
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        raw, lab, pix = records(n, 1, i)
        (d / name).write_bytes(raw)
        out[name] = (lab[:, 0], pix)
    (d / "batches.meta.txt").write_text("\n".join(NAMES) + "\n\n")
    return out


def load(**kw):
    kw.setdefault("batch_size", 4)
    return load_source(source_spec(**kw))


def test_cifar10_train_and_test(tmp_path):
    files = write_cifar10(tmp_path)
    train = load(source="cifar10", path=str(tmp_path), split="train")
    assert train["data"].shape == (30, 3, 32, 32) and train["data"].dtype == torch.uint8
    want = np.concatenate([files[f"data_batch_{k}.bin"][1] for k in range(1, 6)])
    np.testing.assert_array_equal(train["data"].numpy(), want)  # planes R, G, B as stored
    np.testing.assert_array_equal(train["label"].numpy(), np.concatenate([files[f"data_batch_{k}.bin"][0] for k in range(1, 6)]))
    assert train.classes["label"] == NAMES
    test = load(source="cifar10", path=str(tmp_path / "cifar-10-batches-bin"), split="test")
    np.testing.assert_array_equal(test["label"].numpy(), files["test_batch.bin"][0])
    assert test.describe() == {"data": ((3, 32, 32), "float32"), "label": ((), "int64")}


def test_cifar10_read_from_the_archive(tmp_path):
    files = write_cifar10(tmp_path / "x")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "x" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    test = load(source="cifar10", path=str(archive), split="test")
    np.testing.assert_array_equal(test["data"].numpy(), files["test_batch.bin"][1])
    assert test.classes["label"] == NAMES
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "cifar-10-binary.tar.gz").write_bytes(archive.read_bytes())
    assert len(load(source="cifar10", path=str(tmp_path / "dl"), split="train")["label"]) == 30


@pytest.mark.parametrize("which, classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_fine_and_coarse(tmp_path, which, classes):
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    raw, lab, pix = records(9, 2, 0, classes=(20, 100))
    (d / "train.bin").write_bytes(raw)
    (d / "test.bin").write_bytes(records(3, 2, 1, classes=(20, 100))[0])
    (d / f"{which}_label_names.txt").write_text("\n".join(f"c{i}" for i in range(classes)))
    kw = {} if which == "fine" else {"label": "coarse"}
    t = load(source="cifar100", path=str(tmp_path), split="train", **kw)
    np.testing.assert_array_equal(t["label"].numpy(), lab[:, 1 if which == "fine" else 0])
    np.testing.assert_array_equal(t["data"].numpy(), pix)
    assert len(t.classes["label"]) == classes


def test_cifar100_label_is_checked_by_the_schema():
    with pytest.raises(NetcfgError) as e:
        validate(DataSpec, parse_yaml("train: {source: cifar100, path: x, split: train, batch_size: 4, label: medium}", "s.yaml"))
    assert "train.label" in e.value.render() and "coarse, fine" in e.value.render()
    with pytest.raises(NetcfgError) as e:  # only cifar100 has `label`
        validate(DataSpec, parse_yaml("train: {source: cifar10, path: x, split: train, batch_size: 4, label: fine}", "s.yaml"))
    assert "unknown key 'label'" in e.value.render()


@pytest.mark.parametrize("layout", ["cifar-10-batches-py", "data_batch_1", "cifar-10-python.tar.gz"])
def test_python_pickle_version_is_refused(tmp_path, layout):
    if layout.endswith(".gz"):
        (tmp_path / layout).write_bytes(b"\x1f\x8b")
    elif layout == "data_batch_1":
        (tmp_path / layout).write_bytes(b"\x80\x04")  # a pickle's first bytes: never read
    else:
        (tmp_path / layout).mkdir()
    with pytest.raises(ConfigError) as e:
        load(source="cifar10", path=str(tmp_path), split="train")
    text = str(e.value)
    assert "python (pickle) version" in text and "never unpickles" in text and "cifar-10-binary.tar.gz" in text


def test_missing_files_are_listed(tmp_path):
    (tmp_path / "README").write_text("x")
    with pytest.raises(ConfigError) as e:
        load(source="cifar10", path=str(tmp_path), split="train")
    assert "no CIFAR10 binary files" in str(e.value) and "README" in str(e.value)


def test_truncated_file(tmp_path):
    write_cifar10(tmp_path)
    f = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ConfigError) as e:
        load(source="cifar10", path=str(tmp_path), split="test")
    assert e.value.path == ("path",) and "not a whole number of 3073-byte records" in str(e.value)


def test_cifar100_file_read_as_cifar10_names_the_mixup(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    table = np.zeros((4, 3073), np.uint8)
    table[:, 0] = [3, 5, 42, 7]  # a label above 9: not CIFAR-10
    raw = table.tobytes()
    for name in [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]:
        (d / name).write_bytes(raw)
    with pytest.raises(ConfigError) as e:
        load(source="cifar10", path=str(tmp_path), split="test")
    assert "classes are 0..9" in str(e.value)


def test_damaged_archive(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        info.size = 3073
        tar.addfile(info, io.BytesIO(bytes(3073)))
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue()[:30])
    with pytest.raises(ConfigError, match="cannot read archive"):
        load(source="cifar10", path=str(tmp_path / "cifar-10-binary.tar.gz"), split="test")
