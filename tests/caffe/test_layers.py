"""Caffe layer types added after the first importer: each imports from a small .prototxt
with its parameters, and what netcfg cannot mean the same way is refused at its line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from netcfg.caffe.inputs import InputShape
from netcfg.caffe.net import import_net
from netcfg.errors import ConfigError, ConfigErrors
from netcfg.net import Net

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.prototxt"
    path.write_text(INPUT + text)
    return path


def errors_of(path: Path, **kw) -> list[ConfigError]:
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        import_net(path, **kw).check()
    return getattr(info.value, "errors", [info.value])


def layer(imported, name: str) -> dict:
    return next(x for x in imported.data["layers"] if x["name"] == name)


# ---------------------------------------------------------------- Reduction

def test_reduction_imports_its_parameters(tmp_path):
    net = import_net(write(tmp_path, 'layer { name: "r" type: "Reduction" bottom: "data" top: "r"\n'
                                     '  reduction_param { operation: SUMSQ axis: 2 coeff: 0.5 } }\n'))
    assert layer(net, "r") == {"name": "r", "type": "Reduction", "bottom": "data", "top": "r",
                               "operation": "SUMSQ", "axis": 2, "coeff": 0.5}
    assert net.check()["TRAIN"].blobs["r"].shape == (3,)


def test_reduction_over_the_batch_as_a_loss_becomes_per_sample_with_a_note(tmp_path):
    """Caffe's default axis 0 sums the batch too; as a weighted loss, netcfg's per-sample sums
    summed over the batch are the same number."""
    net = import_net(write(tmp_path, 'layer { name: "r" type: "Reduction" bottom: "data" top: "r" '
                                     'loss_weight: 2 reduction_param { operation: ASUM } }\n'))
    assert layer(net, "r")["axis"] == 1
    assert any("axis 0 (ASUM over the batch too) became axis 1" in n for n in net.notes)
    x = torch.randn(2, 3, 4, 4)
    model = Net(net.check()["TRAIN"])
    torch.testing.assert_close(model.loss(model(data=x)), 2 * x.abs().sum())


@pytest.mark.parametrize("param, line, words", [
    ("", 2, "its top is no loss"),
    ("reduction_param { axis: 0 }", 2, "its top is no loss"),
    ("loss_weight: 1 reduction_param { operation: MEAN }", 2, "its MEAN at axis 0 divides by the batch size"),
])
def test_reduction_over_the_batch_otherwise_is_refused_at_its_line(tmp_path, param, line, words):
    (e,) = errors_of(write(tmp_path, f'layer {{ name: "r" type: "Reduction" bottom: "data" top: "r" {param} }}\n'))
    assert e.line == line and words in e.render() and "reduction_param { axis: 1 }" in e.render()


# ---------------------------------------------------------------- Tile

def test_tile_imports_and_batch_tiling_is_refused_at_its_line(tmp_path):
    net = import_net(write(tmp_path, 'layer { name: "t" type: "Tile" bottom: "data" top: "t"\n'
                                     '  tile_param { axis: 2 tiles: 3 } }\n'))
    assert layer(net, "t") == {"name": "t", "type": "Tile", "bottom": "data", "top": "t", "axis": 2, "tiles": 3}
    assert net.check()["TRAIN"].blobs["t"].shape == (3, 12, 4)
    (e,) = errors_of(write(tmp_path, 'layer { name: "t" type: "Tile" bottom: "data" top: "t"\n'
                                     '  tile_param { axis: 0 tiles: 3 } }\n'))
    assert e.line == 3 and "axis 0 is the batch axis" in e.render()


# ---------------------------------------------------------------- MVN

def test_mvn_imports_its_parameters(tmp_path):
    net = import_net(write(tmp_path, 'layer { name: "m" type: "MVN" bottom: "data" top: "m"\n'
                                     '  mvn_param { across_channels: true normalize_variance: false eps: 0.001 } }\n'))
    assert layer(net, "m") == {"name": "m", "type": "MVN", "bottom": "data", "top": "m", "across_channels": True,
                               "normalize_variance": False, "eps": 0.001}
    x = torch.randn(2, 3, 4, 4)
    y = Net(net.check()["TEST"])(data=x)["m"]
    torch.testing.assert_close(y, x - x.mean((1, 2, 3), keepdim=True))


# ---------------------------------------------------------------- InfogainLoss

SCORES = ('layer { name: "in" type: "Input" top: "s" top: "y" input_param { shape { dim: 2 dim: 3 } '
          'shape { dim: 2 } } }\n')
LABEL = {"y": InputShape([], "int64")}  # --input y=:int64, as a user gives it


def test_infogain_loss_reads_its_matrix_from_the_binaryproto_source(tmp_path):
    import numpy as np

    from netcfg.caffe.blobproto import write_blob

    H = np.array([[1, 0.1, 0], [0.5, 2, 0], [0, 0, 3]], np.float32).reshape(1, 1, 3, 3)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "H.binaryproto").write_bytes(write_blob(H))
    path = tmp_path / "net.prototxt"
    path.write_text(SCORES + 'layer { name: "loss" type: "InfogainLoss" bottom: "s" bottom: "y" top: "loss"\n'
                             '  infogain_loss_param { source: "data/H.binaryproto" axis: 1 }\n'
                             '  loss_param { ignore_label: 2 normalization: FULL } }\n')
    net = import_net(path, inputs=LABEL)
    assert layer(net, "loss") == {"name": "loss", "type": "InfogainLoss", "bottom": ["s", "y"], "top": "loss",
                                  "infogain": [[1.0, 0.1, 0.0], [0.5, 2.0, 0.0], [0.0, 0.0, 3.0]], "axis": 1,
                                  "ignore_label": 2, "normalization": "FULL"}
    s, y = torch.randn(2, 3), torch.tensor([0, 1])
    got = Net(net.check()["TRAIN"])(s=s, y=y)["loss"]
    Hs = torch.tensor(H.reshape(3, 3))
    want = -(Hs[y] * torch.log_softmax(s, 1)).sum() / 2
    torch.testing.assert_close(got, want)


def test_infogain_loss_source_missing_or_not_square_is_refused_at_source(tmp_path):
    from netcfg.caffe.blobproto import write_blob

    text = SCORES + ('layer { name: "loss" type: "InfogainLoss" bottom: "s" bottom: "y"\n'
                     '  infogain_loss_param { source: "H.binaryproto" } }\n')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    (e,) = errors_of(path, inputs=LABEL)
    assert (e.line, e.col) == (3, 33) and "the infogain matrix 'H.binaryproto' is not found" in e.render()
    (tmp_path / "H.binaryproto").write_bytes(write_blob(torch.ones(2, 3).numpy()))
    (e,) = errors_of(path, inputs=LABEL)
    assert e.line == 3 and "holds 6 values (shape [2, 3]), not K x K" in e.render()


# ---------------------------------------------------------------- MultinomialLogisticLoss

def test_multinomial_logistic_loss_imports_after_a_softmax(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(SCORES + 'layer { name: "prob" type: "Softmax" bottom: "s" top: "prob" }\n'
                             'layer { name: "loss" type: "MultinomialLogisticLoss" bottom: "prob" bottom: "y" }\n')
    net = import_net(path, inputs=LABEL)
    assert layer(net, "loss") == {"name": "loss", "type": "MultinomialLogisticLoss", "bottom": ["prob", "y"]}
    s, y = torch.randn(2, 3), torch.tensor([2, 0])
    got = Net(net.check()["TRAIN"])(s=s, y=y)["loss"]
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(s, y))


# ---------------------------------------------------------------- SPP

def test_spp_imports_and_stochastic_is_refused_at_its_line(tmp_path):
    net = import_net(write(tmp_path, 'layer { name: "spp" type: "SPP" bottom: "data" top: "spp"\n'
                                     '  spp_param { pyramid_height: 2 pool: AVE engine: CAFFE } }\n'))
    assert layer(net, "spp") == {"name": "spp", "type": "SPP", "bottom": "data", "top": "spp", "pyramid_height": 2,
                                 "pool": "AVE"}
    assert net.check()["TRAIN"].blobs["spp"].shape == (3 * 5,)
    (e,) = errors_of(write(tmp_path, 'layer { name: "spp" type: "SPP" bottom: "data" top: "spp"\n'
                                     '  spp_param { pyramid_height: 2 pool: STOCHASTIC } }\n'))
    assert e.line == 3 and "no STOCHASTIC pooling" in e.render()


# ---------------------------------------------------------------- Parameter

def test_parameter_imports_with_its_caffemodel_blob(tmp_path):
    import numpy as np

    from netcfg.caffe.weights import convert_weights
    from netcfg.solver.snapshot import copy_weights
    from tests.caffe.test_weights import blob, layer as caffe_layer

    net = import_net(write(tmp_path, 'layer { name: "p" type: "Parameter" top: "p"\n'
                                     '  parameter_param { shape { dim: 1 dim: 3 } } }\n'
                                     'layer { name: "s" type: "Eltwise" bottom: "data" bottom: "data" top: "s" }\n'
                                     'layer { name: "b" type: "Bias" bottom: "s" bottom: "p" top: "b" '
                                     'bias_param { axis: 0 } }\n'))
    assert layer(net, "p") == {"name": "p", "type": "Parameter", "top": "p", "shape": [3]}
    assert any("Caffe's Parameter has no bottom" in n for n in net.notes)
    value = np.array([[1.0, -2.0, 0.5]], np.float32)
    (tmp_path / "w.caffemodel").write_bytes(caffe_layer("p", [blob(value)]))
    convert_weights(net, tmp_path / "w.caffemodel", tmp_path / "w.safetensors")
    model = Net(net.check()["TEST"])
    copy_weights(model, tmp_path / "w.safetensors", strict=True)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(model(data=x)["b"], 2 * x + torch.tensor(value).reshape(1, 3, 1, 1))


@pytest.mark.parametrize("dims, axis", [([3], ""), ([], "scale_param { axis: 0 }")])
def test_parameter_without_a_batch_axis_imports_for_a_scale_at_axis_1(tmp_path, dims, axis):
    """Caffe's usual Parameter: a (3,) blob a Scale multiplies channel-wise at its default axis 1
    (a scalar one at any axis). Was: refused, with a hint that Caffe broadcasts a leading 1, which it does not."""
    import numpy as np

    from netcfg.caffe.weights import convert_weights
    from netcfg.solver.snapshot import copy_weights
    from tests.caffe.test_weights import blob, layer as caffe_layer

    shape = "".join(f"dim: {d} " for d in dims)
    net = import_net(write(tmp_path, f'layer {{ name: "p" type: "Parameter" top: "p" parameter_param {{ shape {{ {shape}}} }} }}\n'
                                     f'layer {{ name: "s" type: "Scale" bottom: "data" bottom: "p" top: "s" {axis} }}\n'))
    assert layer(net, "p")["shape"] == dims and "axis" not in layer(net, "s")
    assert any("Caffe's blob" in n and "has no batch axis" in n for n in net.notes)
    value = np.array([2.0, -1.0, 0.5] if dims else 2.0, np.float32)  # Caffe's blob: (3,) or a scalar
    (tmp_path / "w.caffemodel").write_bytes(caffe_layer("p", [blob(value)]))
    convert_weights(net, tmp_path / "w.caffemodel", tmp_path / "w.safetensors")
    model = Net(net.check()["TEST"])
    copy_weights(model, tmp_path / "w.safetensors", strict=True)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(model(data=x)["s"], x * torch.tensor(value).reshape(1, -1, 1, 1))


def test_parameter_without_a_batch_axis_at_another_axis_is_refused_at_it(tmp_path):
    (e,) = errors_of(write(tmp_path, 'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 3 } } }\n'
                                     'layer { name: "b" type: "Bias" bottom: "data" bottom: "p" top: "b"\n'
                                     '  bias_param { axis: 0 } }\n'))
    assert e.line == 4 and "Bias with a second bottom and axis 0: the second bottom 'p' is a Parameter's blob without a " \
                           "batch axis" in e.render() and "Caffe's default axis: 1 there" in e.render()


# ---------------------------------------------------------------- BatchReindex

def test_batch_reindex_imports(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(SCORES + 'layer { name: "r" type: "BatchReindex" bottom: "s" bottom: "y" top: "r" }\n')
    net = import_net(path, inputs=LABEL)
    assert layer(net, "r") == {"name": "r", "type": "BatchReindex", "bottom": ["s", "y"], "top": "r"}
    s = torch.randn(2, 3)
    torch.testing.assert_close(Net(net.check()["TEST"])(s=s, y=torch.tensor([1, 1]))["r"], s[[1, 1]])
