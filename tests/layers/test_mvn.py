"""MVN: Caffe's forward and backward (mvn_layer.cpp) in numpy, constant channels, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.net import build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml
from tests.layers import graph_errors, net_of


def net_text(fields: str, inputs: str = "{x: [3, 4, 5]}") -> str:
    return net_of(f"{{name: m, type: MVN{fields}}}", inputs)


def mvn(fields: str = "", inputs: str = "{x: [3, 4, 5]}"):
    return build_net(net_from_source(parse_yaml(net_text(fields, inputs))), "TRAIN").double()


def caffe_mvn(x: np.ndarray, dy: np.ndarray, across: bool, variance: bool, eps: float):
    """mvn_layer.cpp: rows of num = N (across channels) or N*C, each of dim = count / num values;
    top = (x - mean) / (sqrt(E((x - mean)^2)) + eps); bottom_diff =
    (dy - mean(dy) - top * mean(top * dy)) / (std + eps), or dy - mean(dy) without the variance."""
    num = x.shape[0] if across else x.shape[0] * x.shape[1]
    rows, g = x.reshape(num, -1), dy.reshape(num, -1)
    d = rows - rows.mean(1, keepdims=True)
    if not variance:
        return d.reshape(x.shape), (g - g.mean(1, keepdims=True)).reshape(x.shape)
    s = np.sqrt((d * d).mean(1, keepdims=True)) + eps
    y = d / s
    dx = (g - g.mean(1, keepdims=True) - y * (y * g).mean(1, keepdims=True)) / s
    return y.reshape(x.shape), dx.reshape(x.shape)


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize("variance", [True, False])
@pytest.mark.parametrize("eps", [1e-9, 0.5])
def test_forward_and_backward_are_caffes(across, variance, eps):
    rng = np.random.default_rng(0)
    x, dy = rng.normal(2, 3, size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    net = mvn(f", across_channels: {str(across).lower()}, normalize_variance: {str(variance).lower()}, eps: {eps}")
    t = torch.tensor(x, requires_grad=True)
    y = net(x=t)["m"]
    y.backward(torch.tensor(dy))
    want_y, want_dx = caffe_mvn(x, dy, across, variance, eps)
    np.testing.assert_allclose(y.detach().numpy(), want_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(t.grad.numpy(), want_dx, rtol=1e-9, atol=1e-12)


def test_eps_is_added_to_the_std_not_the_variance():
    x = torch.tensor([[[0.0, 2.0]]], dtype=torch.float64)  # (1, 1, 2): mean 1, std 1
    assert mvn(", eps: 1", "{x: [1, 2]}")(x=x)["m"].tolist() == [[[-0.5, 0.5]]]  # / (1 + 1), not / sqrt(1 + 1)


def test_a_constant_channel_gives_zeros_and_a_finite_gradient():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    x[0, 1] = 7.0
    x.requires_grad_()
    y = mvn()(x=x)["m"]
    y.backward(torch.randn_like(y))
    assert torch.equal(y[0, 1], torch.zeros(4, 5, dtype=torch.float64)) and torch.isfinite(x.grad).all()


def test_gradcheck_in_float64():
    for fields in ("", ", across_channels: true", ", normalize_variance: false"):
        net = mvn(fields)
        x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: net(x=x)["m"], (x,))


def test_float16_input_is_normalised_in_float32():
    net = build_net(net_from_source(parse_yaml(net_text("", "{x: {shape: [1, 64], dtype: float16}}"))), "TRAIN")
    x = (torch.arange(64, dtype=torch.float32) * 1000).reshape(1, 1, 64).repeat(2, 1, 1)  # squares past 65504
    y = net(x=x.half())["m"]
    want = (x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True)
    assert y.dtype == torch.float16 and torch.allclose(y.float(), want, atol=2e-3)


@pytest.mark.parametrize("fields, inputs, words", [
    ("", "{x: [6]}", "each channel of a (C,) input [6] is one value, which MVN would set to 0"),
    ("", "{x: [2, 3, 4, 5]}", "MVN expects a 1-d or 2-d or 3-d input per sample"),
    ("", "{x: {shape: [3, 4], dtype: int64}}", "MVN needs a floating-point input, got int64"),
])
def test_bad_inputs_are_located_errors(fields, inputs, words):
    e = graph_errors(net_text(fields, inputs))
    assert words in str(e) and "<string>:4:" in e.render()


def test_eps_must_be_positive():
    with pytest.raises(ConfigErrors) as e:
        net_from_source(parse_yaml(net_text(", eps: 0")))
    assert "eps" in str(e.value) and "greater than 0" in str(e.value)
