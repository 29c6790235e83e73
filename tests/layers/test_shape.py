"""Flatten, Reshape, Crop, Tile: values against torch references, Caffe's shape rules, errors."""

from __future__ import annotations

import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.layers.base import Blob
from netcfg.layers.shape import Crop, Flatten, Reshape, Tile
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml

INPUTS = "{a: [4, 6, 5], b: [4, 3, 2]}"


def text(layers: str, inputs: str = INPUTS) -> str:
    return f"name: t\ninputs: {inputs}\nlayers:\n" + "".join(f"  - {line}\n" for line in layers.strip().splitlines())


def errors(layers: str, inputs: str = INPUTS, graph: bool = False) -> str:
    with pytest.raises(ConfigErrors) as e:
        spec = net_from_source(parse_yaml(text(layers, inputs)))
        if graph:
            build_graph(spec)
    assert "<string>:4:" in e.value.render()
    return str(e.value)


def check_infer(layer, shapes: list[tuple[int, ...]]) -> torch.Tensor:
    blobs = [Blob(s) for s in shapes]
    (top,) = layer.infer(blobs)
    y = layer.build(blobs)(*[torch.randn(2, *s) for s in shapes])
    assert tuple(y.shape[1:]) == top.shape
    return y


# ---------------------------------------------------------------- Flatten

def test_flatten():
    a = torch.randn(2, 4, 6, 5)
    y = build_net(net_from_source(parse_yaml(text("""
{name: all, type: Flatten, bottom: a}
{name: hw, type: Flatten, bottom: a, axis: 2}
{name: ch, type: Flatten, bottom: a, axis: 1, end_axis: 2}
{name: neg, type: Flatten, bottom: a, axis: -2, end_axis: -1}
""", "{a: [4, 6, 5]}"))))(a=a)
    torch.testing.assert_close(y["all"], a.flatten(1))
    torch.testing.assert_close(y["hw"], a.flatten(2))
    torch.testing.assert_close(y["ch"], a.flatten(1, 2))
    torch.testing.assert_close(y["neg"], a.flatten(2))


@pytest.mark.parametrize("cfg, shape, out", [
    ({}, (3, 4, 5), (60,)), (dict(axis=2), (3, 4, 5), (3, 20)), (dict(axis=3), (3, 4, 5), (3, 4, 5)),
    (dict(end_axis=1), (3, 4), (3, 4)), ({}, (7,), (7,)),
])
def test_flatten_infer_matches_forward(cfg, shape, out):
    layer = Flatten(name="f", type="Flatten", **cfg)
    assert layer.infer([Blob(shape)])[0].shape == out
    check_infer(layer, [shape])


def test_flatten_errors():
    msg = errors("{name: f, type: Flatten, bottom: a, axis: 3, end_axis: 2}", graph=True)
    assert "end_axis 2 comes before axis 3 for input [4, 6, 5]" in msg and "layers[0].end_axis" in msg
    msg = errors("{name: f, type: Flatten, bottom: a, axis: 0}", graph=True)
    assert "axis 0 is the batch axis" in msg
    msg = errors("{name: f, type: Flatten, bottom: l}", "{l: {shape: [], dtype: int64}}", graph=True)
    assert "axis 1 is out of range for a 0-d input per sample []" in msg


# ---------------------------------------------------------------- Reshape

def test_reshape_per_sample_and_caffe_forms():
    a = torch.randn(2, 4, 6, 5)
    y = build_net(net_from_source(parse_yaml(text("""
{name: flat, type: Reshape, bottom: a, shape: [-1]}
{name: copy, type: Reshape, bottom: a, shape: [0, -1, 10]}
{name: caffe, type: Reshape, bottom: a, shape: {dim: [0, -1]}}
{name: caffe_batch_inferred, type: Reshape, bottom: a, shape: {dim: [-1, 24, 5]}}
{name: part, type: Reshape, bottom: a, shape: [2, 3], axis: 2, num_axes: 1}
{name: append, type: Reshape, bottom: a, shape: [1, 1], axis: -1, num_axes: 0}
{name: caffe_axis1, type: Reshape, bottom: a, shape: {dim: [2, -1]}, axis: 1}
""", "{a: [4, 6, 5]}"))))(a=a)
    torch.testing.assert_close(y["flat"], a.reshape(2, 120))
    torch.testing.assert_close(y["copy"], a.reshape(2, 4, 3, 10))
    torch.testing.assert_close(y["caffe"], a.reshape(2, 120))
    torch.testing.assert_close(y["caffe_batch_inferred"], a.reshape(2, 24, 5))
    torch.testing.assert_close(y["part"], a.reshape(2, 4, 2, 3, 5))
    torch.testing.assert_close(y["append"], a.reshape(2, 4, 6, 5, 1, 1))
    torch.testing.assert_close(y["caffe_axis1"], a.reshape(2, 2, 60))


@pytest.mark.parametrize("cfg, shape, out", [
    (dict(shape=[-1]), (3, 4), (12,)),
    (dict(shape=[0, 0, -1]), (3, 4, 5, 2), (3, 4, 10)),
    (dict(shape=[6, -1], axis=1, num_axes=2), (2, 3, 5), (6, 1, 5)),
    (dict(shape=[1], axis=1, num_axes=0), (3,), (1, 3)),
    (dict(shape=[2, 2]), (4,), (2, 2)),
    (dict(shape=[-1]), (), (1,)),
])
def test_reshape_infer_matches_forward(cfg, shape, out):
    layer = Reshape(name="r", type="Reshape", **cfg)
    assert layer.infer([Blob(shape)])[0].shape == out
    check_infer(layer, [shape])


@pytest.mark.parametrize("layer, message, where", [
    ("shape: [-1, -1]", "shape [-1, -1] has more than one -1", "layers[0].shape"),
    ("shape: [-2]", "greater than or equal to -1", "layers[0].shape[0]"),
    ("shape: {dim: [4, -1]}", "the batch dim (first of [4, -1]) must be 0", "layers[0]"),
    ("shape: {dims: [0, -1]}", "Caffe's {dim: [...]}", "layers[0]"),
    ("shape: [-1], num_axes: -2", "greater than or equal to -1", "layers[0].num_axes"),
    ("shape: {dim: [0, -1]}, axes: 1", "unknown key 'axes' for Reshape layer (did you mean 'axis'?)", "layers[0].axes"),
])
def test_reshape_validation_errors(layer, message, where):
    msg = errors(f"{{name: r, type: Reshape, bottom: a, {layer}}}")
    assert message in msg and f"{where}:" in msg


@pytest.mark.parametrize("layer, message, key", [
    ("shape: [7, -1]", "cannot infer the -1 in shape [7, -1]: 120 elements of input [4, 6, 5] are not a multiple of 7", "shape"),
    ("shape: [10, 10]", "shape [10, 10] holds 100 elements, but the input [4, 6, 5] has 120", "shape"),
    ("shape: [0, 0, 0, 0]", "dim 3 is 0 (copy), but input [4, 6, 5] has no axis 4", "shape"),
    ("shape: [-1], axis: 5", "axis 5 is out of range for input [4, 6, 5]", "axis"),
    ("shape: [-1], axis: 2, num_axes: 3", "axis 2 with num_axes 3 runs past the input [4, 6, 5]", "num_axes"),
])
def test_reshape_shape_errors(layer, message, key):
    msg = errors(f"{{name: r, type: Reshape, bottom: a, {layer}}}", graph=True)
    assert message in msg and f"layers[0].{key}:" in msg and "layer 'r'" in msg


# ---------------------------------------------------------------- Crop

def test_crop():
    a, b = torch.randn(2, 4, 6, 5), torch.randn(2, 4, 3, 2)
    y = build_net(net_from_source(parse_yaml(text("""
{name: center, type: Crop, bottom: [a, b], offset: [1, 2]}
{name: corner, type: Crop, bottom: [a, b]}
{name: one, type: Crop, bottom: [a, b], offset: 1}
{name: all, type: Crop, bottom: [a, c], axis: 1, offset: [1, 0, 0]}
""", "{a: [4, 6, 5], b: [4, 3, 2], c: [2, 3, 2]}"))))(a=a, b=b, c=torch.randn(2, 2, 3, 2))
    torch.testing.assert_close(y["center"], a[:, :, 1:4, 2:4])
    torch.testing.assert_close(y["corner"], a[:, :, :3, :2])
    torch.testing.assert_close(y["one"], a[:, :, 1:4, 1:3])
    torch.testing.assert_close(y["all"], a[:, 1:3, :3, :2])


def test_crop_infer_keeps_the_first_bottoms_leading_dims():
    layer = Crop(name="c", type="Crop", axis=-1, offset=[2])
    assert layer.infer([Blob((4, 6, 5)), Blob((1, 1, 3))])[0].shape == (4, 6, 3)
    check_infer(layer, [(4, 6, 5), (1, 1, 3)])


def test_crop_gradient_reaches_only_the_window():
    a = torch.randn(1, 1, 4, 4, requires_grad=True)
    Crop(name="c", type="Crop", offset=1).build([Blob((1, 4, 4)), Blob((1, 2, 2))])(a, torch.zeros(1, 1, 2, 2)).sum().backward()
    assert a.grad[0, 0].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


def test_crop_errors():
    msg = errors("{name: c, type: Crop, bottom: [a, b], offset: [4, 0]}", graph=True)
    assert "cropping [4, 6, 5] to [4, 3, 2] at offset [4, 0] runs past axis 2 (4 + 3 > 6)" in msg
    assert "layers[0].offset:" in msg
    msg = errors("{name: c, type: Crop, bottom: [b, a]}", graph=True)
    assert "cropping [4, 3, 2] to [4, 6, 5]" in msg
    msg = errors("{name: c, type: Crop, bottom: [a, b], offset: [1, 1, 1]}", graph=True)
    assert "offset [1, 1, 1] needs 1 or 2 value(s)" in msg
    msg = errors("{name: c, type: Crop, bottom: [a, v]}", "{a: [4, 6, 5], v: [3]}", graph=True)
    assert "the bottoms must have the same rank to crop [4, 6, 5] to [3]" in msg
    assert "takes 2 bottom(s), got 1" in errors("{name: c, type: Crop, bottom: a}", graph=True)
    assert "greater than or equal to 0" in errors("{name: c, type: Crop, bottom: [a, b], offset: -1}")


# ---------------------------------------------------------------- Tile

def caffe_tile(x, axis: int, tiles: int):
    """tile_layer.cpp: for each of count(0, axis) outer blocks, the inner block count(axis) copied
    ``tiles`` times; the backward sums the copies' diffs into the inner block."""
    import numpy as np

    outer = int(np.prod(x.shape[:axis]))
    blocks = x.reshape(outer, -1)
    top = np.concatenate([blocks] * tiles, axis=1)
    shape = list(x.shape)
    shape[axis] *= tiles
    return top.reshape(shape)


@pytest.mark.parametrize("axis, caffe_axis", [(1, 1), (2, 2), (-1, 3)])
def test_tile_is_caffes_block_copy_and_its_gradient_sums_the_copies(axis, caffe_axis):
    import numpy as np

    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    net = build_net(net_from_source(parse_yaml(text(f"{{name: t, type: Tile, bottom: a, axis: {axis}, tiles: 3}}",
                                                    "{a: [4, 3, 2]}"))), "TRAIN").double()
    y = net(a=x)["t"]
    np.testing.assert_array_equal(y.detach().numpy(), caffe_tile(x.detach().numpy(), caffe_axis, 3))
    g = torch.randn_like(y)
    y.backward(g)  # Caffe: bottom_diff = the sum of the tiles' top diffs
    want = g.reshape(*x.shape[:caffe_axis], 3, -1).sum(caffe_axis).reshape(x.shape)
    torch.testing.assert_close(x.grad, want)
    assert torch.autograd.gradcheck(lambda x: net(a=x)["t"], (x.detach().requires_grad_(),))


def test_tile_infers_and_keeps_integer_dtypes():
    check_infer(Tile(name="t", type="Tile", axis=2, tiles=2), [(3, 4, 5)])
    assert Tile(name="t", type="Tile", tiles=2).infer([Blob((4,), "int64")]) == [Blob((8,), "int64")]


@pytest.mark.parametrize("layer, words", [
    ("{name: t, type: Tile, bottom: a, axis: 0, tiles: 2}", "axis 0 is the batch axis; Tile here works on the per-sample"),
    ("{name: t, type: Tile, bottom: a, axis: 4, tiles: 2}", "axis 4 is out of range for a 3-d input"),
])
def test_tile_bad_axis_is_a_located_error(layer, words):
    assert words in errors(layer, graph=True)


def test_tile_needs_a_positive_tiles():
    assert "tiles" in errors("{name: t, type: Tile, bottom: a}") and "required" in errors("{name: t, type: Tile, bottom: a}")
    assert "greater than or equal to 1" in errors("{name: t, type: Tile, bottom: a, tiles: 0}")
