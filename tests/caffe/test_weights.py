""".caffemodel weights -> .safetensors: a small model written by a protobuf encoder here, read back by name."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from netcfg.caffe.net import import_net
from netcfg.caffe.weights import convert_weights, read_caffemodel
from netcfg.errors import ConfigError
from netcfg.net import build_net
from netcfg.net.spec import load_net
from tests.cli import run_cli

NET = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 2 } }
"""


# ---- a protobuf encoder: just enough of the wire format for NetParameter/LayerParameter/BlobProto
def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:  # length-delimited (wire type 2)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def blob(a: np.ndarray, *, legacy: bool = False, unpacked: bool = False) -> bytes:
    if legacy:  # num, channels, height, width (varints, fields 1-4)
        dims = (1,) * (4 - a.ndim) + a.shape
        head = b"".join(varint(i << 3 | 0) + varint(d) for i, d in enumerate(dims, 1))
    else:  # shape { dim: packed }
        head = field(7, field(1, b"".join(varint(d) for d in a.shape)))
    flat = a.astype("<f4").reshape(-1)
    if unpacked:  # one fixed32 field per float (wire type 5)
        return head + b"".join(varint(5 << 3 | 5) + struct.pack("<f", v) for v in flat)
    return head + field(5, flat.tobytes())


def layer(name: str, blobs: list[bytes], *, v1: bool = False) -> bytes:
    if v1:  # V1LayerParameter: name 4, blobs 6; in NetParameter.layers (2)
        return field(2, field(4, name.encode()) + b"".join(field(6, b) for b in blobs))
    return field(100, field(1, name.encode()) + field(2, b"X") + b"".join(field(7, b) for b in blobs))


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {"conv_w": rng.normal(size=(2, 3, 3, 3)), "conv_b": rng.normal(size=2),
            "mean": rng.normal(size=2) * 4, "var": rng.uniform(1, 2, size=2) * 4, "factor": np.array([4.0]),
            "gamma": rng.uniform(0.5, 2, size=2), "beta": rng.normal(size=2),
            "ip_w": rng.normal(size=(2, 8)), "ip_b": rng.normal(size=2)}


def caffemodel(a: dict, v1: bool = False) -> bytes:
    return field(1, b"small") + b"".join([
        layer("data", [], v1=v1),
        layer("conv", [blob(a["conv_w"]), blob(a["conv_b"], unpacked=True)], v1=v1),
        layer("bn", [blob(a["mean"]), blob(a["var"]), blob(a["factor"])], v1=v1),
        layer("sc", [blob(a["gamma"]), blob(a["beta"])], v1=v1),
        layer("ip", [blob(a["ip_w"], legacy=True), blob(a["ip_b"])], v1=v1),
        layer("loss_only_in_training", [blob(np.ones(3))], v1=v1),
    ])


def test_reader_decodes_names_shapes_and_both_float_encodings(tmp_path, arrays):
    path = tmp_path / "w.caffemodel"
    path.write_bytes(caffemodel(arrays))
    read = dict(read_caffemodel(path))
    assert list(read) == ["conv", "bn", "sc", "ip", "loss_only_in_training"]  # "data" has no blobs
    np.testing.assert_allclose(read["conv"][0], arrays["conv_w"], rtol=1e-6)
    np.testing.assert_allclose(read["conv"][1], arrays["conv_b"], rtol=1e-6)  # unpacked floats
    assert read["ip"][0].shape == (1, 1, 2, 8)  # Caffe's legacy 4-d shape, as stored


@pytest.mark.parametrize("v1", [False, True], ids=["layer", "v1-layers"])
def test_weights_land_by_layer_name_and_the_net_computes_caffes_output(tmp_path, arrays, v1):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "w.caffemodel").write_bytes(caffemodel(arrays, v1=v1))
    result = run_cli("import-caffe", str(tmp_path / "net.prototxt"), "--weights", str(tmp_path / "w.caffemodel"),
                     "-o", str(tmp_path / "net.yaml"))
    assert result.exit_code == 0, result.stderr
    assert "layers of the .caffemodel not in the net, ignored: loss_only_in_training" in result.stderr
    w = load_file(tmp_path / "net.safetensors")
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in arrays.items()}
    torch.testing.assert_close(w["bn.running_mean"], t["mean"] / 4)  # Caffe's sums over its factor
    torch.testing.assert_close(w["bn.weight"], t["gamma"])  # the folded Scale
    assert w["ip.weight"].shape == (2, 8)

    net = build_net(load_net(tmp_path / "net.yaml"), "TEST")
    net.load_state_dict(w)
    x = torch.randn(5, 3, 4, 4)
    y = F.conv2d(x, t["conv_w"], t["conv_b"])
    y = (y - t["mean"].view(1, 2, 1, 1) / 4) / torch.sqrt(t["var"].view(1, 2, 1, 1) / 4 + 1e-5)
    y = y * t["gamma"].view(1, 2, 1, 1) + t["beta"].view(1, 2, 1, 1)
    expected = y.reshape(5, 8) @ t["ip_w"].T + t["ip_b"]
    torch.testing.assert_close(net(data=x)["ip"], expected, rtol=1e-5, atol=1e-5)


def test_bad_files_are_refused_with_the_file_named(tmp_path, arrays):
    (tmp_path / "net.prototxt").write_text(NET)
    imported = import_net(tmp_path / "net.prototxt")
    truncated = tmp_path / "cut.caffemodel"
    truncated.write_bytes(caffemodel(arrays)[:-7])
    with pytest.raises(ConfigError, match="not a readable Caffe .caffemodel") as info:
        convert_weights(imported, truncated, tmp_path / "x.safetensors")
    assert info.value.file == str(truncated)
    other = tmp_path / "other.caffemodel"
    other.write_bytes(layer("conv", [blob(np.ones((4, 3, 3, 3))), blob(np.ones(4))]))
    with pytest.raises(ConfigError, match=r"conv -> conv.weight \(file \[4, 3, 3, 3\], net \[2, 3, 3, 3\]\)"):
        convert_weights(imported, other, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    # the same 54 numbers as a 3x3 kernel over 2 inputs for 3 outputs: Caffe refuses a shape mismatch too
    swapped = tmp_path / "swapped.caffemodel"
    swapped.write_bytes(layer("conv", [blob(np.ones((3, 2, 3, 3))), blob(np.ones(2))]))
    with pytest.raises(ConfigError, match=r"conv -> conv.weight \(file \[3, 2, 3, 3\], net \[2, 3, 3, 3\]\)"):
        convert_weights(imported, swapped, tmp_path / "x.safetensors")
    result = run_cli("import-caffe", str(tmp_path / "net.prototxt"), "--weights", str(other),
                     "-o", str(tmp_path / "net.yaml"))
    assert result.exit_code == 2 and f"{other}: error: blobs that do not fit the net" in result.stderr
    assert not (tmp_path / "net.yaml").exists() and not (tmp_path / "net.safetensors").exists()


def test_sparse_gaussian_filler_keeps_about_sparse_weights_per_input():
    from netcfg.layers.base import FillerSpec
    from netcfg.layers.fillers import fill

    torch.manual_seed(0)
    w = torch.empty(1000, 784)  # InnerProduct weight: (outputs, inputs), Caffe's autoencoder layer
    fill(w, FillerSpec(type="gaussian", std=1, sparse=15))
    nonzero_per_input = (w != 0).sum(0).float()
    assert abs(nonzero_per_input.mean().item() - 15) < 0.5
    assert abs(w[w != 0].std().item() - 1) < 0.05


def test_an_embed_net_imports_with_int64_ids_and_caffes_weight_layout(tmp_path):
    # every Caffe blob is float, so the ids' Input was imported float32 and the net then failed
    # its own check ("token ids must be integers, got a float32 input") with no way to fix the file
    (tmp_path / "net.prototxt").write_text(
        'name: "words"\n'
        'layer { name: "data" type: "Input" top: "words" input_param { shape { dim: 2 dim: 6 } } }\n'
        'layer { name: "emb" type: "Embed" bottom: "words" top: "emb" embed_param { num_output: 4 input_dim: 9 } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "emb" top: "ip" inner_product_param { num_output: 3 } }\n')
    rng = np.random.default_rng(0)
    table, bias, ip_w = rng.normal(size=(9, 4)), rng.normal(size=4), rng.normal(size=(3, 24))
    (tmp_path / "w.caffemodel").write_bytes(field(1, b"words") + layer("emb", [blob(table), blob(bias)])
                                            + layer("ip", [blob(ip_w), blob(np.zeros(3))]))
    result = run_cli("import-caffe", str(tmp_path / "net.prototxt"), "--weights", str(tmp_path / "w.caffemodel"),
                     "-o", str(tmp_path / "net.yaml"))
    assert result.exit_code == 0, result.stderr
    assert "input 'words' is declared int64: it holds the ids of Embed layer 'emb'" in result.stderr
    spec = load_net(tmp_path / "net.yaml")
    assert spec.inputs["words"].dtype == "int64"
    net = build_net(spec, "TEST")
    net.load_state_dict(load_file(tmp_path / "net.safetensors"))
    ids = torch.tensor([[0, 8, 3, 3, 1, 5], [2, 2, 7, 0, 6, 4]])
    one_hot = F.one_hot(ids, 9).double()  # Caffe's Embed: one-hot times the (input_dim, num_output) table
    expected = (one_hot @ torch.tensor(table) + torch.tensor(bias)).reshape(2, 24) @ torch.tensor(ip_w).T
    torch.testing.assert_close(net(words=ids)["ip"], expected.float(), rtol=1e-5, atol=1e-5)
