"""Reduction: Caffe's forward and gradient by its formula, in numpy; shapes and located errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.net import build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml
from tests.layers import graph_errors, net_of


def net_text(layer: str, inputs: str = "{x: [2, 3, 4]}") -> str:
    return net_of(layer, inputs)


def reduction(layer: str, inputs: str = "{x: [2, 3, 4]}"):
    return build_net(net_from_source(parse_yaml(net_text(layer, inputs))), "TRAIN")


def caffe_reduction(x: np.ndarray, op: str, axis: int, coeff: float) -> tuple[np.ndarray, np.ndarray]:
    """reduction_layer.cpp: num_ = count(0, axis) rows of dim_ = count(axis); MEAN is coeff / dim_;
    the bottom diff per row is top_diff * coeff times 1, sign(x) or 2x (with top_diff 1 here)."""
    rows = x.reshape(int(np.prod(x.shape[:axis])), -1)
    dim = rows.shape[1]
    c = coeff / dim if op == "MEAN" else coeff
    val = {"SUM": rows.sum(1), "MEAN": rows.sum(1), "ASUM": np.abs(rows).sum(1), "SUMSQ": (rows * rows).sum(1)}[op]
    diff = {"SUM": np.ones_like(rows), "MEAN": np.ones_like(rows), "ASUM": np.sign(rows), "SUMSQ": 2 * rows}[op]
    return (val * c).reshape(x.shape[:axis]), (diff * c).reshape(x.shape)


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis, caffe_axis", [(1, 1), (2, 2), (-1, 3)])
def test_forward_and_gradient_are_caffes(op, axis, caffe_axis):
    x = np.random.default_rng(0).normal(size=(2, 2, 3, 4))
    x[0, 0, 0, 0] = 0.0  # Caffe's sign(0) is 0: no gradient there for ASUM
    net = reduction(f"{{name: r, type: Reduction, operation: {op}, axis: {axis}, coeff: -1.5}}", "{x: [2, 3, 4]}")
    t = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    y = net(x=t)["r"]
    want, diff = caffe_reduction(x, op, caffe_axis, -1.5)
    assert y.shape == want.shape
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-5, atol=1e-5)
    y.sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), diff, rtol=1e-5, atol=1e-6)


def test_gradcheck_in_float64():
    for op in ("SUM", "ASUM", "SUMSQ", "MEAN"):
        net = reduction(f"{{name: r, type: Reduction, operation: {op}, axis: 2, coeff: 0.5}}").double()
        x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: net(x=x)["r"], (x,))


def test_default_is_a_per_sample_sum_and_a_loss_weight_sums_the_batch_as_caffes_axis_0():
    net = reduction("{name: r, type: Reduction, loss_weight: 1}")
    x = torch.randn(5, 2, 3, 4)
    out = net(x=x)
    torch.testing.assert_close(out["r"], x.flatten(1).sum(1))
    torch.testing.assert_close(net.loss(out), x.sum())  # Caffe: axis 0 SUM, loss weight 1


def test_float16_sums_in_float32_and_keeps_its_dtype():
    """4096 squares of 200 sum to 1.6e8, past float16's 65504, before coeff brings them back."""
    net = reduction("{name: r, type: Reduction, operation: SUMSQ, coeff: 0.000244140625}",
                    "{x: {shape: [4096], dtype: float16}}")
    y = net(x=torch.full((2, 4096), 200.0, dtype=torch.float16))["r"]
    assert y.dtype == torch.float16 and y.tolist() == [40000.0, 40000.0]


@pytest.mark.parametrize("layer, words", [
    ("{name: r, type: Reduction, axis: 0}", "axis 0 would reduce over the batch; netcfg keeps it: use axis 1"),
    ("{name: r, type: Reduction, axis: 4}", "axis 4 is out of range for a 3-d input per sample [2, 3, 4]"),
    ("{name: r, type: Reduction, axis: -5}", "axis -5 is out of range"),
])
def test_bad_axes_are_located_errors(layer, words):
    e = graph_errors(net_text(layer))
    assert words in str(e) and "<string>:4:" in e.render() and ".axis" in e.render()


def test_integer_input_and_bad_operation_are_refused():
    e = graph_errors(net_text("{name: r, type: Reduction}", "{x: {shape: [3], dtype: int64}}"))
    assert "Reduction needs a floating-point input, got int64" in str(e)
    with pytest.raises(ConfigErrors) as e:
        net_from_source(parse_yaml(net_text("{name: r, type: Reduction, operation: PROD}")))
    assert "invalid value 'PROD' (valid: ASUM, MEAN, SUM, SUMSQ)" in str(e.value)
