"""Residual blocks: output against a hand-written reference, naming, fillers, shapes, errors."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from netcfg.errors import ConfigErrors
from netcfg.layers.base import Blob, LayerSpec
from netcfg.layers._registry import lookup
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml

BLOCK = """
name: t
inputs: {data: [4, 8, 8]}
layers:
  - name: res1
    type: Residual
    body:
      - {name: conv1, type: Convolution, num_output: 8, kernel_size: 3, pad: 1, stride: 2}
      - {name: relu1, type: ReLU}
      - {name: conv2, type: Convolution, num_output: 8, kernel_size: 3, pad: 1}
    shortcut:
      - {name: proj, type: Convolution, num_output: 8, kernel_size: 1, stride: 2}
"""

IDENTITY = """
name: t
inputs: {data: [4, 6, 6]}
layers:
  - name: res1
    type: Residual
    activation: ACT
    body:
      - {name: conv1, type: Convolution, num_output: 4, kernel_size: 3, pad: 1}
      - {name: relu1, type: ReLU}
      - {name: conv2, type: Convolution, num_output: 4, kernel_size: 3, pad: 1}
"""


def net_spec(text: str):
    return net_from_source(parse_yaml(text))


def errors(text: str, *, graph: bool = False) -> str:
    with pytest.raises(ConfigErrors) as e:
        s = net_spec(text)
        if graph:
            build_graph(s)
    return e.value.render()


def conv(m, x, stride=1, pad=0):
    return F.conv2d(x, m.weight, m.bias, stride, pad)


@pytest.mark.parametrize(("act", "fn"), [("ReLU", F.relu), ("null", lambda y: y), ("Sigmoid", torch.sigmoid)])
def test_identity_block_matches_reference(act, fn):
    net = build_net(net_spec(IDENTITY.replace("ACT", act)))
    x = torch.randn(2, 4, 6, 6)
    b = net.res1.body
    ref = fn(conv(b.conv2, F.relu(conv(b.conv1, x, pad=1)), pad=1) + x)
    torch.testing.assert_close(net(data=x)["res1"], ref)


def test_projection_block_matches_reference_and_names_params():
    net = build_net(net_spec(BLOCK))
    x = torch.randn(2, 4, 8, 8)
    b, s = net.res1.body, net.res1.shortcut
    ref = F.relu(conv(b.conv2, F.relu(conv(b.conv1, x, 2, 1)), pad=1) + conv(s.proj, x, 2))
    torch.testing.assert_close(net(data=x)["res1"], ref)
    assert [n for n, _ in net.named_parameters()] == [
        "res1.body.conv1.weight", "res1.body.conv1.bias", "res1.body.conv2.weight", "res1.body.conv2.bias",
        "res1.shortcut.proj.weight", "res1.shortcut.proj.bias"]
    assert {i.name for i in net.param_infos()} == {n for n, _ in net.named_parameters()}


def test_graph_counts_params_and_flops():
    graph = build_graph(net_spec(BLOCK))
    node = graph.nodes[0]
    assert node.out_blobs == [Blob((8, 4, 4))]
    assert node.params == sum(p.numel() for p in build_net(net_spec(BLOCK)).parameters())
    body, short = node.spec.body, node.spec.shortcut
    blobs = [Blob((4, 8, 8)), Blob((8, 4, 4)), Blob((8, 4, 4)), Blob((8, 4, 4))]
    inner = sum(layer.flops([blobs[i]], [blobs[i + 1]]) for i, layer in enumerate(body))
    inner += short[0].flops([blobs[0]], [blobs[1]])
    relu = lookup("ReLU").model_validate({"name": "a", "type": "ReLU"})
    assert node.flops == inner + 8 * 4 * 4 + relu.flops([blobs[3]], [blobs[3]])  # + the add, + the activation
    assert inner > 0


def test_inner_fillers_are_applied():
    text = BLOCK.replace("pad: 1, stride: 2}", "pad: 1, stride: 2, weight_filler: {type: constant, value: 0.5}}")
    text = text.replace("kernel_size: 1, stride: 2}", "kernel_size: 1, stride: 2, bias_filler: {type: constant, value: 3}}")
    net = build_net(net_spec(text))
    assert torch.all(net.res1.body.conv1.weight == 0.5)
    assert torch.all(net.res1.shortcut.proj.bias == 3)


@pytest.mark.parametrize(("shape", "body", "shortcut"), [
    ((4, 8, 8), "[{name: c, type: Convolution, num_output: 4, kernel_size: 3, pad: 1}]", "[]"),
    ((4, 8, 8), "[{name: c, type: Convolution, num_output: 6, kernel_size: 3, pad: 1, stride: 2}]",
     "[{name: p, type: Convolution, num_output: 6, kernel_size: 1, stride: 2}, {name: bn, type: BatchNorm}]"),
    ((10,), "[{name: fc1, type: InnerProduct, num_output: 7}, {name: r, type: ReLU}, "
            "{name: fc2, type: InnerProduct, num_output: 10}]", "[]"),
    ((3, 9), "[{name: c, type: Convolution, num_output: 5, kernel_size: 3}]",
     "[{name: p, type: Convolution, num_output: 5, kernel_size: 3}]"),
])
def test_infer_matches_forward(shape, body, shortcut):
    text = (f"name: t\ninputs: {{x: {list(shape)}}}\nlayers:\n"
            f"  - {{name: res, type: Residual, body: {body}, shortcut: {shortcut}}}\n")
    graph = build_graph(net_spec(text))
    net = build_net(net_spec(text))
    y = net(x=torch.randn(2, *shape))["res"]
    assert tuple(y.shape[1:]) == graph.nodes[0].out_blobs[0].shape


def test_nested_blocks_and_repeated_names_across_blocks():
    inner = "{name: r, type: Residual, body: [{name: c, type: Convolution, num_output: 3, kernel_size: 1}]}"
    text = (f"name: t\ninputs: {{x: [3, 4, 4]}}\nlayers:\n"
            f"  - {{name: outer, type: Residual, activation: null, body: [{inner}, {inner.replace('name: r', 'name: r2')}]}}\n"
            f"  - {{name: res2, type: Residual, body: [{{name: c, type: Convolution, num_output: 3, kernel_size: 1}}]}}\n")
    net = build_net(net_spec(text))
    names = [n for n, _ in net.named_parameters()]
    assert "outer.body.r.body.c.weight" in names and "outer.body.r2.body.c.weight" in names
    assert "res2.body.c.weight" in names
    x = torch.randn(2, 3, 4, 4)
    o = net.outer.body
    h = F.relu(conv(o.r.body.c, x) + x)
    h = F.relu(conv(o.r2.body.c, h) + h)
    torch.testing.assert_close(net(x=x)["res2"], F.relu(conv(net.res2.body.c, h + x) + h + x))


def test_param_entries_prefix_inner_blobs():
    s = net_spec(BLOCK.replace("kernel_size: 1, stride: 2}", "kernel_size: 1, stride: 2, param: [{lr_mult: 0}]}"))
    res = s.layers[0]
    assert res.blob_names() == []
    entries = res.param_entries()
    assert [p for p, _ in entries] == ["body.conv1.weight", "body.conv1.bias", "body.conv2.weight",
                                       "body.conv2.bias", "shortcut.proj.weight", "shortcut.proj.bias"]
    assert entries[4][1].lr_mult == 0 and entries[5][1] is None


@pytest.mark.skipif(not hasattr(LayerSpec, "param_entries"), reason="Net does not read param_entries yet")
def test_inner_lr_mult_is_honoured_by_the_net():
    net = build_net(net_spec(BLOCK.replace("kernel_size: 1, stride: 2}",
                                           "kernel_size: 1, stride: 2, param: [{lr_mult: 0}, {lr_mult: 2}]}")))
    infos = {i.name: i.lr_mult for i in net.param_infos()}
    assert infos["res1.shortcut.proj.weight"] == 0 and infos["res1.shortcut.proj.bias"] == 2
    assert infos["res1.body.conv1.weight"] == 1
    assert not net.res1.shortcut.proj.weight.requires_grad


def test_shape_mismatch_quotes_both_shapes_and_suggests_projection():
    text = BLOCK[: BLOCK.index("    shortcut")]
    msg = errors(text, graph=True)
    assert "<string>:5:" in msg and "Residual layer 'res1'" in msg
    assert "body output 8x4x4 and shortcut output 4x8x8" in msg
    assert "projection shortcut" in msg and "num_output: 8, kernel_size: 1, stride: 2" in msg


def test_inner_shape_error_names_the_inner_layer():
    text = BLOCK.replace("{name: conv2, type: Convolution, num_output: 8, kernel_size: 3, pad: 1}",
                         "{name: conv2, type: Convolution, num_output: 8, kernel_size: 9}")
    msg = errors(text, graph=True)
    assert "layers[0].body[2].kernel_size: Residual layer 'res1': body layer 'conv2' (Convolution): kernel extent 9" in msg


@pytest.mark.parametrize(("inner", "expect"), [
    ("{name: c, type: Convolution, num_output: 4, kernel_size: 1, bottom: data}", "body layer 'c' sets bottom/top"),
    ("{name: c, type: Convolution, num_output: 4, kernel_size: 1}, {name: c, type: ReLU}",
     "body layer 'c': duplicate name"),
    ("{name: c, type: ReLU, include: {phase: TRAIN}}", "include/exclude rules, which are not supported"),
    ("{name: forward, type: ReLU}", "must not contain '.' or be a torch.nn.Module attribute"),
    ("{name: a.b, type: ReLU}", "must not contain '.'"),
    ("{name: l, type: SoftmaxWithLoss}", "cannot sit inside a Residual"),
    ("{name: c, type: Convolution, num_output: 4, kernel_size: 1, param: [{}, {}, {}]}",
     "param lists 3 entries but a Convolution has 2 learnable blob(s)"),
    ("{name: c, type: Convolution, num_outputs: 4, kernel_size: 1}", "layers[0].body[0].num_outputs: unknown key"),
])
def test_inner_layer_validation(inner, expect):
    text = f"name: t\ninputs: {{data: [4, 6, 6]}}\nlayers:\n  - {{name: res, type: Residual, body: [{inner}]}}\n"
    msg = errors(text)
    assert expect in msg, msg
    assert "<string>:4:" in msg


@pytest.mark.parametrize(("fields", "expect"), [
    ("body: []", "layers[0].body: list should have at least 1 item"),
    ("activation: relu", "did you mean 'ReLU'?"),
    ("activation: PReLU", "invalid value 'PReLU'"),
    ("param: [{lr_mult: 0}]", "give `param:` on the inner layers"),
])
def test_block_validation(fields, expect):
    body = "" if "body" in fields else ", body: [{name: r, type: ReLU}]"
    text = f"name: t\ninputs: {{data: [4]}}\nlayers:\n  - {{name: res, type: Residual, {fields}{body}}}\n"
    msg = errors(text)
    assert expect in msg, msg


def test_every_offered_activation_is_registered_and_parameter_free():
    cls = lookup("Residual")
    for name in cls.model_fields["activation"].annotation.__args__[0].__args__:
        s = cls.model_validate({"name": "r", "type": "Residual", "activation": name,
                                "body": [{"name": "fc", "type": "InnerProduct", "num_output": 3}]})
        m = s.build([Blob((3,))])
        assert m(torch.randn(2, 3)).shape == (2, 3), name
        assert [n for n, _ in m.named_parameters()] == ["body.fc.weight", "body.fc.bias"]


def test_json_schema_points_inner_layers_at_the_layer_union():
    from netcfg.schema import net_schema

    props = net_schema()["$defs"]["Residual"]["properties"]
    assert props["body"]["items"] == {"$ref": "#/$defs/Layer"}
    assert props["shortcut"]["items"] == {"$ref": "#/$defs/Layer"}
