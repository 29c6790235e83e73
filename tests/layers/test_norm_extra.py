"""Scale, Bias and LRN against Caffe's formulas written out by hand."""

from __future__ import annotations

import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml


def spec(inputs: dict[str, list[int]], layer: str):
    ins = "\n".join(f"  {k}: {v}" for k, v in inputs.items())
    bottoms = ", ".join(inputs)
    return net_from_source(parse_yaml(f"name: t\ninputs:\n{ins}\nlayers:\n  - {{name: n, bottom: [{bottoms}], {layer}}}\n"))


def run(inputs: dict[str, list[int]], layer: str, randomise: bool = True):
    """One-layer net on a random batch of 2, learned blobs randomised; returns (net, inputs, output)."""
    net = build_net(spec(inputs, layer))
    if randomise:
        with torch.no_grad():
            for p in net.parameters():
                p.normal_()
    xs = {k: torch.randn(2, *v) for k, v in inputs.items()}
    out = net(**xs)["n"]
    assert tuple(out.shape[1:]) == net.graph.nodes[0].out_blobs[0].shape  # infer agrees with forward
    return net, xs, out


def error(inputs: dict[str, list[int]], layer: str, graph: bool = True) -> str:
    with pytest.raises(ConfigErrors) as e:
        s = spec(inputs, layer)
        if graph:
            build_graph(s)
    return str(e.value)


X = {"x": [3, 4, 5]}


# ---------------------------------------------------------------- Scale / Bias


@pytest.mark.parametrize("extra, view", [
    ("", (3, 1, 1)),                      # Caffe's default: per channel
    ("axis: 2", (4, 1)),                  # per row
    ("axis: -1", (5,)),                   # the last axis
    ("num_axes: 0", ()),                  # one scalar
    ("num_axes: -1", (3, 4, 5)),          # everything from axis 1 on
    ("axis: 1, num_axes: 2", (3, 4, 1)),
])
def test_scale_learned_spans(extra, view):
    net, xs, out = run(X, f"type: Scale, bias_term: true, {extra}" if extra else "type: Scale, bias_term: true")
    w, b = net.n.weight, net.n.bias
    torch.testing.assert_close(out, xs["x"] * w.reshape(view) + b.reshape(view))
    assert net.graph.total_params == 2 * w.numel()
    assert net.graph.nodes[0].spec.blob_names() == ["weight", "bias"]


def test_scale_defaults_to_identity_and_fills():
    net, xs, out = run(X, "type: Scale", randomise=False)
    torch.testing.assert_close(out, xs["x"])  # Caffe's default filler: constant 1
    assert [n for n, _ in net.named_parameters()] == ["n.weight"]
    net, xs, out = run(X, "type: Scale, bias_term: true, filler: {type: constant, value: 2}, "
                          "bias_filler: {type: constant, value: -1}, param: [{lr_mult: 0}]", randomise=False)
    torch.testing.assert_close(out, 2 * xs["x"] - 1)
    assert not net.n.weight.requires_grad and net.n.bias.requires_grad


@pytest.mark.parametrize("s_shape, view", [([3], (2, 3, 1, 1)), ([3, 4], (2, 3, 4, 1)), ([3, 4, 5], (2, 3, 4, 5))])
def test_scale_by_second_bottom(s_shape, view):
    net, xs, out = run({"x": [3, 4, 5], "s": s_shape}, "type: Scale")
    torch.testing.assert_close(out, xs["x"] * xs["s"].reshape(view))
    assert list(net.parameters()) == []
    net, xs, out = run({"x": [3, 4, 5], "s": s_shape}, "type: Scale, axis: 0, bias_term: true")
    assert net.graph.nodes[0].spec.blob_names() == ["bias"] and list(net.n.bias.shape) == s_shape
    torch.testing.assert_close(out, xs["x"] * xs["s"].reshape(view) + net.n.bias.reshape(view[1:]))


def test_scale_gradients_reach_both_bottoms():
    net = build_net(spec({"x": [3, 4], "s": [3]}, "type: Scale"))
    x, s = torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    net(x=x, s=s)["n"].sum().backward()
    torch.testing.assert_close(s.grad, x.detach().sum(-1))


def test_bias_learned_and_from_bottom():
    net, xs, out = run(X, "type: Bias")
    torch.testing.assert_close(out, xs["x"] + net.n.bias.reshape(3, 1, 1))
    assert net.graph.nodes[0].spec.blob_names() == ["bias"]
    net, xs, out = run(X, "type: Bias, filler: {type: constant, value: 0.5}", randomise=False)
    torch.testing.assert_close(out, xs["x"] + 0.5)
    net, xs, out = run({"x": [3, 4, 5], "b": [3, 4]}, "type: Bias")
    torch.testing.assert_close(out, xs["x"] + xs["b"][..., None])
    assert list(net.parameters()) == [] and net.graph.nodes[0].spec.blob_names() == []


def test_scale_bias_errors():
    assert "layers[0].axis" in error(X, "type: Scale, axis: 0")
    assert "batch axis" in error(X, "type: Bias, axis: 0")
    assert "out of range" in error(X, "type: Scale, axis: 4")
    msg = error(X, "type: Scale, axis: 2, num_axes: 3")
    assert "layers[0].num_axes" in msg and "reaches past the input [3, 4, 5]" in msg
    msg = error({"x": [3, 4, 5], "s": [3]}, "type: Scale, axis: 1")
    assert "axis must be 0" in msg and "layers[0].axis" in msg
    msg = error({"x": [3, 4, 5], "s": [4]}, "type: Scale")
    assert "second bottom of shape [4] does not match the leading dims of the input [3, 4, 5]" in msg
    assert "bias_filler needs bias_term: true" in error(X, "type: Scale, bias_filler: {type: constant}", graph=False)
    assert "num_axes" in error(X, "type: Bias, num_axes: -2", graph=False)
    assert "param lists 2 entries" in error(X, "type: Bias, param: [{lr_mult: 1}, {lr_mult: 1}]")


# ---------------------------------------------------------------- LRN (Caffe's formulas, by hand)


def caffe_lrn_across(x, n, alpha, beta, k):
    out = torch.empty_like(x)
    c_count = x.shape[1]
    for c in range(c_count):
        lo, hi = max(0, c - (n - 1) // 2), min(c_count, c + (n - 1) // 2 + 1)
        s = (x[:, lo:hi] ** 2).sum(1)
        out[:, c] = x[:, c] * (k + alpha / n * s) ** -beta
    return out


def caffe_lrn_within(x, n, alpha, beta, k=1.0):
    """Caffe: AVE pooling of x^2 (pad (n - 1) / 2, stride 1, Caffe's pool_size), then (k + alpha * avg)^-beta."""
    pad = (n - 1) // 2
    spatial = x.shape[2:]
    out = torch.empty_like(x)
    for pos in torch.cartesian_prod(*[torch.arange(d) for d in spatial]).reshape(-1, len(spatial)).tolist():
        window, size = [], 1
        for p, d in zip(pos, spatial):
            start, end = p - pad, min(p - pad + n, d + pad)
            size *= end - start  # Caffe counts padding in the divisor
            window.append(slice(max(start, 0), min(end, d)))
        s = (x[(slice(None), slice(None), *window)] ** 2).sum(tuple(range(2, x.dim())))
        idx = (slice(None), slice(None), *pos)
        out[idx] = x[idx] * (k + alpha * s / size) ** -beta
    return out


@pytest.mark.parametrize("shape", [[7, 4, 5], [6, 9]])
@pytest.mark.parametrize("n, alpha, beta, k", [(5, 1.0, 0.75, 1.0), (3, 0.0001, 0.75, 2.0), (1, 0.5, 0.5, 1.0)])
def test_lrn_across_channels(shape, n, alpha, beta, k):
    _, xs, out = run({"x": shape}, f"type: LRN, local_size: {n}, alpha: {alpha}, beta: {beta}, k: {k}")
    torch.testing.assert_close(out, caffe_lrn_across(xs["x"], n, alpha, beta, k))


@pytest.mark.parametrize("shape", [[2, 6, 7], [3, 8]])
@pytest.mark.parametrize("n, alpha, beta", [(5, 1.0, 0.75), (3, 2.0, 0.5)])
def test_lrn_within_channel(shape, n, alpha, beta):
    _, xs, out = run({"x": shape}, f"type: LRN, norm_region: WITHIN_CHANNEL, local_size: {n}, alpha: {alpha}, beta: {beta}")
    torch.testing.assert_close(out, caffe_lrn_within(xs["x"], n, alpha, beta))


def test_lrn_within_channel_uses_k():
    _, xs, out = run({"x": [2, 5, 5]}, "type: LRN, norm_region: WITHIN_CHANNEL, local_size: 3, k: 2")
    torch.testing.assert_close(out, caffe_lrn_within(xs["x"], 3, 1.0, 0.75, k=2.0))


def test_lrn_errors():
    assert "local_size must be odd" in error(X, "type: LRN, local_size: 4", graph=False)
    msg = error(X, "type: LRN, norm_region: ACROSS", graph=False)
    assert "ACROSS_CHANNELS" in msg and "WITHIN_CHANNEL" in msg
    assert "alpha" in error(X, "type: LRN, alpha: -1", graph=False)
    assert "2-d or 3-d" in error({"x": [8]}, "type: LRN")


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_under_float16_autocast_squares_in_float32(region):
    """AlexNet's LRN after conv1 under fp16 autocast: activations past 256 square past float16's
    65504, so the denominator was inf and the output 0 (Caffe squares in float)."""
    torch.manual_seed(10)
    net = build_net(net_from_source(parse_yaml(f"""name: t
inputs: {{x: [3, 9, 9]}}
layers:
  - {{name: conv, type: Convolution, num_output: 6, kernel_size: 3, pad: 1}}
  - {{name: n, type: LRN, local_size: 5, alpha: 0.0001, beta: 0.75, k: 2, norm_region: {region}}}
""")))
    x = torch.randn(2, 3, 9, 9) * 200
    want = net(x=x)["n"]
    with torch.autocast("cpu", dtype=torch.float16):
        got = net(x=x)["n"]
    assert got.dtype == torch.float16  # the activation stays in autocast's dtype
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-1)
    got.float().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
