"""Convolution and Deconvolution against torch.nn.functional, with Caffe's sizes and errors."""

import pytest
import torch
from torch.nn import functional as F

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml


def net_text(shape, layer):
    return f"name: t\ninputs: {{x: {list(shape)}}}\nlayers:\n  - {{name: c, bottom: x, {layer}}}\n"


def build(shape, layer):
    return build_net(net_from_source(parse_yaml(net_text(shape, layer))))


def error(shape, layer) -> str:
    with pytest.raises(ConfigErrors) as e:
        build_graph(net_from_source(parse_yaml(net_text(shape, layer))))
    return e.value.render()


@pytest.mark.parametrize("k, s, p, d, g", [(3, 1, 0, 1, 1), (5, 2, 2, 1, 1), (3, 2, 1, 2, 2), (1, 1, 0, 1, 4)])
def test_convolution_matches_conv2d(k, s, p, d, g):
    torch.manual_seed(0)
    n = build([4, 11, 9], f"type: Convolution, num_output: 8, kernel_size: {k}, stride: {s}, pad: {p}, dilation: {d}, group: {g}")
    x = torch.randn(2, 4, 11, 9)
    want = F.conv2d(x, n.c.weight, n.c.bias, s, p, d, g)
    got = n(x=x)["c"]
    assert torch.allclose(got, want, atol=1e-6)
    # Caffe's size rule: (in + 2 pad - dilation (k - 1) - 1) // stride + 1
    assert got.shape[2:] == tuple((size + 2 * p - d * (k - 1) - 1) // s + 1 for size in (11, 9))
    assert n.graph.nodes[0].out_blobs[0].shape == tuple(got.shape[1:])


def test_rectangular_kernel_and_per_axis_fields():
    n = build([2, 10, 8], "type: Convolution, num_output: 3, kernel_h: 3, kernel_w: 1, stride_h: 2, pad_w: 1")
    assert n.c.weight.shape == (3, 2, 3, 1)
    assert n(x=torch.randn(1, 2, 10, 8))["c"].shape == (1, 3, 4, 10)


def test_h_w_fields_override_one_axis_of_the_repeated_field():
    """kernel_h/stride_w/pad_h override one axis ("overrides kernel_size"); the other axis
    keeps the repeated field's value, not the field's default (kernel 0, stride 1, pad 0)."""
    n = build([2, 9, 9], "type: Convolution, num_output: 3, kernel_size: 3, kernel_h: 5, stride: 2, stride_w: 1, "
                         "pad: 1, pad_h: 2")
    assert n.c.weight.shape == (3, 2, 5, 3) and n.c.stride == (2, 1) and n.c.padding == (2, 1)
    assert n(x=torch.randn(1, 2, 9, 9))["c"].shape == (1, 3, 5, 9) == (1, *n.graph.nodes[0].out_blobs[0].shape)
    n = build([2, 9, 9], "type: Pooling, kernel_size: 3, kernel_w: 2, stride: 2, stride_h: 1")
    assert n(x=torch.randn(1, 2, 9, 9))["c"].shape == (1, 2, 7, 5) == (1, *n.graph.nodes[0].out_blobs[0].shape)


def test_one_d_convolution_on_sequences():
    n = build([5, 20], "type: Convolution, num_output: 7, kernel_size: 3, pad: 1")
    x = torch.randn(3, 5, 20)
    assert torch.allclose(n(x=x)["c"], F.conv1d(x, n.c.weight, n.c.bias, padding=1), atol=1e-6)


def test_deconvolution_matches_conv_transpose_and_caffes_size():
    torch.manual_seed(0)
    n = build([4, 5, 5], "type: Deconvolution, num_output: 6, kernel_size: 4, stride: 2, pad: 1, group: 2")
    x = torch.randn(2, 4, 5, 5)
    got = n(x=x)["c"]
    assert torch.allclose(got, F.conv_transpose2d(x, n.c.weight, n.c.bias, 2, 1, groups=2), atol=1e-6)
    assert got.shape[2:] == (2 * (5 - 1) + 4 - 2, 2 * (5 - 1) + 4 - 2)  # stride (in - 1) + k - 2 pad


def test_parameters_are_named_by_layer_and_blob_and_bias_term_drops_the_bias():
    n = build([3, 8, 8], "type: Convolution, num_output: 4, kernel_size: 3, bias_term: false")
    assert [name for name, _ in n.named_parameters()] == ["c.weight"]


def test_weight_norm_reparameterises_per_output_channel():
    n = build([3, 6, 6], "type: Convolution, num_output: 4, kernel_size: 3, weight_norm: true")
    g = n.c.parametrizations.weight.original0
    v = n.c.parametrizations.weight.original1
    assert g.shape == (4, 1, 1, 1)
    assert torch.allclose(n.c.weight, g * v / v.flatten(1).norm(dim=1).view(4, 1, 1, 1), atol=1e-6)



@pytest.mark.parametrize("shape, group", [([4, 5, 5], 2), ([4, 5], 4)])
def test_weight_norm_of_a_grouped_deconvolution_is_per_output_channel(shape, group):
    """A transposed conv's weight is (in, out / group, k...): output channel (i, j) of group i is
    rows i * in / group.. and column j. Normalising column j alone (dim 1) gave group 4 (FCN's
    per-class upsampling) one g for every channel, and each channel's norm was not its g."""
    torch.manual_seed(0)
    n = build(shape, f"type: Deconvolution, num_output: 4, kernel_size: 3, group: {group}, weight_norm: true, "
                     "weight_filler: {type: gaussian}")
    g = n.c.parametrizations.weight.original0
    assert g.numel() == 4  # one per output channel
    blocks = n.c.weight.unflatten(0, (group, -1)).movedim(2, 1).flatten(0, 1)  # (out, in / group, k...)
    norms = blocks.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, g.flatten())
    with torch.no_grad():
        g.mul_(torch.arange(1.0, 5.0).reshape(g.shape))  # each channel's g scales that channel alone
    blocks = n.c.weight.unflatten(0, (group, -1)).movedim(2, 1).flatten(0, 1)
    torch.testing.assert_close(blocks.flatten(1).norm(dim=1), norms * torch.arange(1.0, 5.0))


def test_flops_count_multiply_adds_twice():
    g = build_graph(net_from_source(parse_yaml(net_text([2, 5, 5], "type: Convolution, num_output: 3, kernel_size: 3"))))
    # output 3x3x3 = 27 values, each 2*3*3 multiply-adds plus a bias add
    assert g.nodes[0].flops == 27 * (2 * 2 * 9) + 27
    assert g.nodes[0].params == 3 * 2 * 9 + 3
    g = build_graph(net_from_source(parse_yaml(net_text([2, 3, 3], "type: Deconvolution, num_output: 3, kernel_size: 3"))))
    # each of the 2*3*3 inputs scatters into 3 outputs x 3*3 taps; output 3x5x5 = 75 bias adds
    assert g.nodes[0].flops == 18 * 3 * 9 * 2 + 75


def test_kernel_larger_than_the_input_is_a_located_error():
    msg = error([1, 4, 4], "type: Convolution, num_output: 2, kernel_size: 7")
    assert "<string>:4:73: error: layers[0].kernel_size:" in msg  # at the key
    assert "kernel extent 7 is larger than the padded input 4" in msg


def test_group_must_divide_the_channels():
    msg = error([6, 4, 4], "type: Convolution, num_output: 4, kernel_size: 1, group: 4")
    assert "layers[0].group" in msg and "6 input channels are not divisible by group 4" in msg


def test_integer_input_is_refused():
    text = "name: t\ninputs: {x: {shape: [1, 4, 4], dtype: int64}}\nlayers:\n  - {name: c, type: Convolution, num_output: 2, kernel_size: 1}\n"
    with pytest.raises(ConfigErrors) as e:
        build_graph(net_from_source(parse_yaml(text)))
    assert "needs a floating-point input, got int64" in e.value.render()


def test_missing_kernel_points_at_kernel_size():
    with pytest.raises(ConfigErrors) as e:
        net_from_source(parse_yaml(net_text([1, 4, 4], "type: Convolution, num_output: 2")))
    assert "layers[0].kernel_size: give kernel_size, or both kernel_h and kernel_w" in e.value.render()


@pytest.mark.parametrize("layer, words", [
    ("type: Convolution, num_output: 2, kernel_size: [3, 9]", "layers[0].kernel_size: Convolution layer "
     "'c': kernel_size [3, 9] has two values, but a (C, L) input has one spatial axis: give one"),
    ("type: Convolution, num_output: 2, kernel_size: 3, stride_w: 4", "layers[0].stride_w: "),
    ("type: Pooling, kernel_size: [2, 7]", "layers[0].kernel_size: Pooling layer 'c': kernel_size [2, 7]"),
    ("type: Pooling, kernel_h: 2, kernel_w: 3", "layers[0].kernel_w: Pooling layer 'c': kernel_w is set"),
])
def test_a_second_value_on_a_one_axis_input_is_an_error(layer, words):
    # before: only the first value was used, silently
    with pytest.raises(ConfigErrors) as e:
        build_graph(net_from_source(parse_yaml(net_text([4, 10], layer))))
    assert words in str(e.value)
