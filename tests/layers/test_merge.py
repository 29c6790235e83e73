"""Concat, Eltwise, Slice, Split, Silence: values against torch references, wiring, errors."""

from __future__ import annotations

import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.layers.base import Blob
from netcfg.layers.merge import Concat, Eltwise, Slice, Split
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml


def net(layers: str, inputs: str = "{a: [4, 3, 3], b: [2, 3, 3], c: [4, 3, 3]}", phase: str = "TRAIN"):
    text = f"name: t\ninputs: {inputs}\nlayers:\n" + "".join(f"  - {line}\n" for line in layers.strip().splitlines())
    return build_net(net_from_source(parse_yaml(text)), phase)


def errors(layers: str, inputs: str = "{a: [4, 3, 3], b: [2, 3, 3], c: [4, 3, 3]}", graph: bool = False) -> str:
    text = f"name: t\ninputs: {inputs}\nlayers:\n" + "".join(f"  - {line}\n" for line in layers.strip().splitlines())
    with pytest.raises(ConfigErrors) as e:
        spec = net_from_source(parse_yaml(text))
        if graph:
            build_graph(spec)
    assert "<string>:4:" in e.value.render()
    return str(e.value)


def check_infer(layer, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Run the module on a batch of 2 and check every top against infer."""
    blobs = [Blob(s) for s in shapes]
    tops = layer.infer(blobs)
    out = layer.build(blobs)(*[torch.randn(2, *s) for s in shapes])
    out = list(out) if isinstance(out, tuple) else [out]
    assert [tuple(o.shape[1:]) for o in out] == [t.shape for t in tops]
    return out


# ---------------------------------------------------------------- Concat

def test_concat_channels_and_other_axes():
    x = {k: torch.randn(2, *s) for k, s in dict(a=(4, 3, 3), b=(2, 3, 3), c=(4, 3, 3)).items()}
    y = net("""
{name: cat, type: Concat, bottom: [a, b, c]}
{name: cat_w, type: Concat, bottom: [a, c], axis: -1}
{name: cat_h, type: Concat, bottom: [a, c], axis: 2}
""")(**x)
    torch.testing.assert_close(y["cat"], torch.cat([x["a"], x["b"], x["c"]], 1))
    torch.testing.assert_close(y["cat_w"], torch.cat([x["a"], x["c"]], 3))
    torch.testing.assert_close(y["cat_h"], torch.cat([x["a"], x["c"]], 2))
    assert y["cat"].shape == (2, 10, 3, 3)


@pytest.mark.parametrize("axis, shapes", [(1, [(3,), (5,)]), (-1, [(2, 3), (2, 1)]), (2, [(2, 3, 4), (2, 1, 4)]), (1, [(4, 2)])])
def test_concat_infer_matches_forward(axis, shapes):
    check_infer(Concat(name="c", type="Concat", axis=axis), shapes)


def test_concat_errors():
    msg = errors("{name: cat, type: Concat, bottom: [a, b], axis: 2}", graph=True)
    assert "bottom 1 has shape [2, 3, 3] and bottom 0 has [4, 3, 3]" in msg and "layers[0].bottom" in msg
    msg = errors("{name: cat, type: Concat, bottom: [a, b], axis: 0}", graph=True)
    assert "axis 0 is the batch axis" in msg and "layers[0].axis" in msg
    msg = errors("{name: cat, type: Concat, bottom: [a, b], axis: 4}", graph=True)
    assert "axis 4 is out of range for a 3-d input per sample [4, 3, 3] (valid: 1..3 or -1..-3" in msg
    msg = errors("{name: cat, type: Concat, bottom: [a, l]}", "{a: [3], l: {shape: [3], dtype: int64}}", graph=True)
    assert "bottom 1 is int64 and bottom 0 is float32" in msg


# ---------------------------------------------------------------- Eltwise

def test_eltwise_operations():
    a, c = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    y = net("""
{name: sum, type: Eltwise, bottom: [a, c]}
{name: diff, type: Eltwise, bottom: [a, c, a], coeff: [1, -1, 0.5]}
{name: prod, type: Eltwise, bottom: [a, c], operation: PROD}
{name: max, type: Eltwise, bottom: [a, c, a], operation: MAX}
""", "{a: [4, 3, 3], c: [4, 3, 3]}")(a=a, c=c)
    torch.testing.assert_close(y["sum"], a + c)
    torch.testing.assert_close(y["diff"], 1.5 * a - c)
    torch.testing.assert_close(y["prod"], a * c)
    torch.testing.assert_close(y["max"], torch.maximum(a, c))


def test_eltwise_max_gradient_on_ties_follows_caffes_mask():
    """Caffe's Forward_cpu: bottoms 0 and 1 compare as a > b ? a : b, so their tie goes to
    bottom 1; a later bottom takes over only when strictly larger. The gradient follows
    that mask (torch.maximum would split a tie)."""
    a = torch.ones(1, 3, requires_grad=True)
    b = torch.tensor([[1.0, 2.0, 0.0]], requires_grad=True)
    Eltwise(name="m", type="Eltwise", operation="MAX").build([Blob((3,))] * 2)(a, b).sum().backward()
    assert a.grad.tolist() == [[0.0, 0.0, 1.0]] and b.grad.tolist() == [[1.0, 1.0, 0.0]]
    # column 0: a wins; column 1: b and c tie above a; column 2: all three tie
    a, b, c = (torch.tensor([row], requires_grad=True) for row in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]))
    y = Eltwise(name="m", type="Eltwise", operation="MAX").build([Blob((3,))] * 3)(a, b, c)
    y.sum().backward()
    assert y.tolist() == [[1.0, 1.0, 0.0]]
    assert a.grad.tolist() == [[1.0, 0.0, 0.0]]
    assert b.grad.tolist() == [[0.0, 1.0, 1.0]] and c.grad.tolist() == [[0.0, 0.0, 0.0]]


def test_eltwise_infer_and_flops():
    layer = Eltwise(name="e", type="Eltwise", coeff=[1, 2, 3])
    check_infer(layer, [(5, 2)] * 3)
    assert layer.flops([Blob((5, 2))] * 3, [Blob((5, 2))]) == 10 * 2 * 2
    assert Eltwise(name="e", type="Eltwise").flops([Blob((5, 2))] * 2, [Blob((5, 2))]) == 10


def test_eltwise_errors():
    msg = errors("{name: e, type: Eltwise, bottom: [a, b]}", graph=True)
    assert "bottom 1 has shape [2, 3, 3] but bottom 0 has [4, 3, 3]; SUM needs equal shapes" in msg
    assert "layers[0].bottom" in msg
    assert "coeff has 3 value(s) for 2 bottom(s)" in errors("{name: e, type: Eltwise, bottom: [a, c], coeff: [1, 2, 3]}")
    assert "coeff applies only to operation SUM, not MAX" in errors(
        "{name: e, type: Eltwise, bottom: [a, c], operation: MAX, coeff: [1, 2]}")
    assert "invalid value 'AVE'" in errors("{name: e, type: Eltwise, bottom: [a, c], operation: AVE}")
    assert "takes at least 2 bottom(s), got 1" in errors("{name: e, type: Eltwise, bottom: [a]}", graph=True)


# ---------------------------------------------------------------- Slice

def test_slice_points_and_equal_parts():
    a = torch.randn(2, 4, 3, 3)
    y = net("""
{name: s, type: Slice, bottom: a, top: [s1, s2, s3], slice_point: [1, 3]}
{name: halves, type: Slice, bottom: a, top: [h1, h2], axis: -1, slice_point: 2}
{name: thirds, type: Slice, bottom: a, top: [t1, t2, t3], axis: 2}
{name: d, type: Slice, bottom: a, slice_point: [2]}
""", "{a: [4, 3, 3]}")(a=a)
    for got, want in zip([y["s1"], y["s2"], y["s3"]], torch.split(a, [1, 2, 1], 1)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(y["h1"], a[..., :2])
    torch.testing.assert_close(y["h2"], a[..., 2:])
    for i, t in enumerate(["t1", "t2", "t3"]):
        torch.testing.assert_close(y[t], a[:, :, i:i + 1])
    torch.testing.assert_close(y["d_0"], a[:, :2])  # default tops: <name>_<i>
    torch.testing.assert_close(y["d_1"], a[:, 2:])


@pytest.mark.parametrize("cfg, shape", [
    (dict(slice_point=[1, 2, 5]), (6, 2)),
    (dict(top=["x", "y"], axis=2), (3, 4)),
    (dict(top=["x"]), (3, 4)),
    (dict(slice_point=[3], axis=-1), (2, 2, 7)),
])
def test_slice_infer_matches_forward(cfg, shape):
    layer = Slice(name="s", type="Slice", **cfg)
    out = check_infer(layer, [shape])
    assert len(out) == (len(cfg["top"]) if "top" in cfg else layer.num_tops())


def test_slice_errors():
    assert "slice_point must be strictly increasing, got [2, 2]" in errors(
        "{name: s, type: Slice, bottom: a, slice_point: [2, 2]}")
    assert "1 slice_point(s) make 2 tops, but top names 3" in errors(
        "{name: s, type: Slice, bottom: a, slice_point: 2, top: [x, y, z]}")
    assert "give slice_point, or name the tops" in errors("{name: s, type: Slice, bottom: a}")
    msg = errors("{name: s, type: Slice, bottom: a, slice_point: [1, 4]}", graph=True)
    assert "slice_point [1, 4] must lie inside axis 1 of size 4 (input [4, 3, 3])" in msg
    assert "layers[0].slice_point" in msg
    msg = errors("{name: s, type: Slice, bottom: a, top: [x, y]}", "{a: [3, 2]}", graph=True)
    assert "axis 1 of size 3 (input [3, 2]) does not split into 2 equal parts" in msg


# ---------------------------------------------------------------- Split and Silence

def test_split_fans_out_and_gradients_add():
    x = torch.randn(2, 3, requires_grad=True)
    y = net("""
{name: sp, type: Split, bottom: a}
{name: e, type: Eltwise, bottom: [sp_0, sp_1], coeff: [2, 3]}
{name: three, type: Split, bottom: a, top: [p, q, r]}
""", "{a: [3]}")(a=x)
    assert set(y) == {"e", "p", "q", "r"}
    for t in "pqr":
        torch.testing.assert_close(y[t], x)
    y["e"].sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 5.0))
    assert check_infer(Split(name="s", type="Split", top=["only"]), [(3,)])[0].shape == (2, 3)


def test_silence_consumes_its_bottoms():
    n = net("""
{name: s, type: Slice, bottom: a, top: [keep, drop], slice_point: 1}
{name: quiet, type: Silence, bottom: [drop, b]}
""", "{a: [3], b: [2]}")
    assert n.outputs == ("keep",)
    assert list(n(a=torch.randn(2, 3), b=torch.randn(2, 2))) == ["keep"]
    g = n.graph
    assert [node.tops for node in g.nodes] == [["keep", "drop"], []]
    assert "makes 0 top(s), got 1" in errors("{name: quiet, type: Silence, bottom: a, top: x}", "{a: [3]}", graph=True)
