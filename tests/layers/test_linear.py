"""InnerProduct against F.linear: Caffe's flattening from axis, fillers, weight norm."""

import pytest
import torch
from torch.nn import functional as F

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml


def text(shape, layer):
    return f"name: t\ninputs: {{x: {list(shape)}}}\nlayers:\n  - {{name: ip, type: InnerProduct, bottom: x, {layer}}}\n"


def test_flattens_from_axis_one_like_caffe():
    n = build_net(net_from_source(parse_yaml(text([3, 4, 5], "num_output: 7"))))
    x = torch.randn(2, 3, 4, 5)
    assert n.ip.weight.shape == (7, 60)
    assert torch.allclose(n(x=x)["ip"], F.linear(x.flatten(1), n.ip.weight, n.ip.bias), atol=1e-6)


@pytest.mark.parametrize("axis, out", [(2, (2, 3, 6)), (-1, (2, 3, 4, 6)), (3, (2, 3, 4, 6))])
def test_axis_keeps_the_leading_dims(axis, out):
    n = build_net(net_from_source(parse_yaml(text([3, 4, 5], f"num_output: 6, axis: {axis}"))))
    y = n(x=torch.randn(2, 3, 4, 5))["ip"]
    assert tuple(y.shape) == out
    assert n.graph.nodes[0].out_blobs[0].shape == out[1:]


def test_axis_out_of_range_names_the_valid_range():
    with pytest.raises(ConfigErrors) as e:
        build_graph(net_from_source(parse_yaml(text([3, 4], "num_output: 2, axis: 4"))))
    assert "layers[0].axis" in e.value.render() and "valid: 1..2" in e.value.render()


def test_fillers_and_bias_term():
    n = build_net(net_from_source(parse_yaml(text([4], "num_output: 3, bias_term: false, weight_filler: {type: constant, value: 2}"))))
    assert [k for k, _ in n.named_parameters()] == ["ip.weight"]
    assert torch.all(n.ip.weight == 2)


def test_weight_norm_keeps_the_effective_weight_differentiable():
    n = build_net(net_from_source(parse_yaml(text([4], "num_output: 3, weight_norm: true"))))
    y = n(x=torch.randn(5, 4))["ip"]
    y.sum().backward()
    assert n.ip.parametrizations.weight.original0.grad is not None


def test_flops_and_params():
    g = build_graph(net_from_source(parse_yaml(text([2, 3], "num_output: 4"))))
    assert g.nodes[0].params == 6 * 4 + 4
    assert g.nodes[0].flops == 2 * 6 * 4 + 4  # a multiply-add per weight, and the bias add (as Convolution)
    g = build_graph(net_from_source(parse_yaml(text([2, 3], "num_output: 4, bias_term: false"))))
    assert g.nodes[0].flops == 2 * 6 * 4


@pytest.mark.parametrize("layer", [
    "{name: ip, type: InnerProduct, num_output: 2, weight_norm: true, PARAM}",
    "{name: ip, type: Convolution, num_output: 2, kernel_size: 1, weight_norm: true, PARAM}",
])
def test_weight_norm_with_two_param_entries_is_ambiguous(layer):
    # the blobs are g, v, bias: Caffe's two-entry habit would give the bias's lr_mult to v
    two = layer.replace("PARAM", "param: [{lr_mult: 1}, {lr_mult: 2, decay_mult: 0}]")
    text = f"name: t\ninputs: {{x: [3, 4, 4]}}\nlayers:\n  - {two}\n"
    with pytest.raises(ConfigErrors, match=r"layers\[0\]\.param: with weight_norm: true the learnable blobs are g, v and bias"):
        build_graph(net_from_source(parse_yaml(text)))
    three = layer.replace("PARAM", "param: [{lr_mult: 1}, {lr_mult: 1}, {lr_mult: 2, decay_mult: 0}]")
    g = build_graph(net_from_source(parse_yaml(f"name: t\ninputs: {{x: [3, 4, 4]}}\nlayers:\n  - {three}\n")))
    assert [ps.lr_mult for _, ps in g.nodes[0].spec.param_entries()] == [1, 1, 2]
