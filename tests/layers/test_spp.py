"""SPP against Caffe's spp_layer.cpp: each level's pooling parameters from GetPoolingParam,
pooled by Caffe's loops (tests/layers/test_pool.py), flattened and concatenated; errors."""

from __future__ import annotations

import math

import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml
from tests.layers.test_pool import caffe_pool, caffe_size
from tests.layers import graph_errors, net_of


def caffe_spp(x: torch.Tensor, height: int, op: str) -> torch.Tensor:
    """SPPLayer: level l has 2^l bins; kernel ceil(bottom / bins), remainder kernel * bins - bottom,
    pad (remainder + 1) / 2, stride = kernel; one level is its pooling, more are Flatten + Concat."""
    outs = []
    for level in range(height):
        bins = 2 ** level
        ks = [math.ceil(n / bins) for n in x.shape[2:]]
        ps = [(k * bins - n + 1) // 2 for k, n in zip(ks, x.shape[2:])]
        sizes = [caffe_size(n, k, k, p, True) for n, k, p in zip(x.shape[2:], ks, ps)]
        outs.append(caffe_pool(x, op, ks, ks, ps, sizes))
    return outs[0] if height == 1 else torch.cat([o.flatten(1) for o in outs], 1)


def spp(height: int, op: str, shape: list[int]):
    text = (f"name: t\ninputs: {{x: {shape}}}\nlayers:\n"
            f"  - {{name: s, type: SPP, pyramid_height: {height}, pool: {op}}}\n")
    return build_net(net_from_source(parse_yaml(text)), "TRAIN").double()


@pytest.mark.parametrize("op", ["MAX", "AVE"])
@pytest.mark.parametrize("height, shape", [(1, [3, 5, 4]), (2, [2, 5, 5]), (3, [2, 7, 6]), (3, [1, 13, 9]),
                                           (4, [2, 16, 15])])
def test_forward_is_caffes_and_gradcheck_passes(op, height, shape):
    net = spp(height, op, shape)
    x = torch.randn(2, *shape, dtype=torch.float64)
    y = net(x=x)["s"]
    want = caffe_spp(x, height, op)
    assert y.shape == want.shape
    torch.testing.assert_close(y, want)
    # one sample, one channel: every bin's gradient, at a twentieth of the cost (11 s for AVE 4 levels)
    one = spp(height, op, [1, *shape[1:]])
    assert torch.autograd.gradcheck(lambda x: one(x=x)["s"], (x[:1, :1].clone().requires_grad_(),))


def test_three_levels_of_c_channels_are_21_c_values():
    assert build_graph(net_from_source(parse_yaml(
        "name: t\ninputs: {x: [256, 13, 13]}\nlayers:\n  - {name: s, type: SPP, pyramid_height: 3}\n"
    ))).blobs["s"].shape == (256 * 21,)


@pytest.mark.parametrize("shape, height, words", [
    ([2, 3, 8], 3, "input [2, 3, 8] is too small for level 2 (4 x 4 bins): Caffe's pad 1 would not be below its "
                   "kernel 1; lower pyramid_height (at most 2)"),
    ([2, 8], 2, "SPP expects a 3-d input per sample"),
])
def test_bad_inputs_are_located_errors(shape, height, words):
    e = graph_errors(net_of(f"{{name: s, type: SPP, pyramid_height: {height}}}", f"{{x: {shape}}}"))
    assert words in str(e) and "<string>:4:" in e.render()


def test_pyramid_height_is_required():
    with pytest.raises(ConfigErrors) as e:
        net_from_source(parse_yaml("name: t\ninputs: {x: [2, 4, 4]}\nlayers:\n  - {name: s, type: SPP}\n"))
    assert "pyramid_height" in str(e.value)
