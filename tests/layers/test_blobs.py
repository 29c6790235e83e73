"""Parameter (a learned blob as a top, the same for every sample: its gradient, param:,
fillers, training) and BatchReindex (Caffe's forward and backward, bad indices)."""

from __future__ import annotations

import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml
from tests.layers import graph_errors, net_of


def text(layers: str, inputs: str = "{x: [3, 2]}") -> str:
    return net_of(layers, inputs)


def test_the_top_is_the_blob_for_every_sample_and_its_gradient_sums_the_batch():
    net = build_net(net_from_source(parse_yaml(text("""
{name: p, type: Parameter, shape: [3, 2]}
{name: sum, type: Eltwise, bottom: [x, p], operation: PROD}
"""))), "TRAIN")
    assert dict(net.named_parameters())["p.weight"].shape == (1, 3, 2)
    with torch.no_grad():
        net.p.weight.copy_(torch.arange(6.0).reshape(1, 3, 2))
    x = torch.randn(4, 3, 2)
    out = net(x=x)
    torch.testing.assert_close(out["sum"], x * torch.arange(6.0).reshape(1, 3, 2))
    out["sum"].sum().backward()
    torch.testing.assert_close(net.p.weight.grad, x.sum(0, keepdim=True))  # Caffe: one blob, its diff summed


def test_starts_at_zero_as_caffe_or_at_its_filler_and_param_applies():
    spec = net_from_source(parse_yaml(text("""
{name: p, type: Parameter, shape: [5], param: {lr_mult: 0}}
{name: q, type: Parameter, bottom: x, shape: [], filler: {type: constant, value: 2}}
""")))
    graph = build_graph(spec)
    assert graph.total_params == 6 and graph.blobs["q"].shape == ()
    net = build_net(spec, "TRAIN")
    assert torch.equal(net.p.weight, torch.zeros(1, 5)) and torch.equal(net.q.weight, torch.full((1,), 2.0))
    assert [n.trainable for n in graph.nodes] == [0, 1]


def test_learns_a_target_through_an_euclidean_loss():
    net = build_net(net_from_source(parse_yaml(text("""
{name: p, type: Parameter, shape: [3]}
{name: loss, type: EuclideanLoss, bottom: [p, y]}
""", "{x: [1], y: [3]}"))), "TRAIN")
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    y = torch.tensor([1.0, -2.0, 3.0]).expand(8, 3)
    for _ in range(50):
        opt.zero_grad()
        net.loss(net(x=torch.zeros(8, 1), y=y)).backward()
        opt.step()
    torch.testing.assert_close(net.p.weight.detach(), y[:1], atol=1e-4, rtol=0)


def test_the_blob_and_its_top_take_a_float_bottoms_dtype():
    """Was: a float64 net's Parameter made a float64 top that shape inference called float32."""
    spec = net_from_source(parse_yaml(text("{name: p, type: Parameter, shape: [2]}", "{x: {shape: [3], dtype: float64}}")))
    assert build_graph(spec).blobs["p"].dtype == "float64"
    assert build_net(spec, "TRAIN")(x=torch.zeros(2, 3, dtype=torch.float64))["p"].dtype == torch.float64


def test_a_dim_below_1_is_a_located_error():
    with pytest.raises(ConfigErrors) as e:
        net_from_source(parse_yaml(text("{name: p, type: Parameter, shape: [3, 0]}")))
    assert "<string>:4:" in e.value.render() and ".shape" in e.value.render()


# ---------------------------------------------------------------- BatchReindex

def caffe_batch_reindex(x, permut, top_diff):
    """batch_reindex_layer.cpp: out[i] = in[permut[i]]; the backward adds top_diff[i] into
    bottom_diff[permut[i]] (its GPU version sorts the indices to sum them)."""
    import numpy as np

    out = np.stack([x[int(k)] for k in permut])
    diff = np.zeros_like(x)
    for i, k in enumerate(permut):
        diff[int(k)] += top_diff[i]
    return out, diff


def reindex_net():
    return build_net(net_from_source(parse_yaml(text(
        "{name: r, type: BatchReindex, bottom: [x, i]}", "{x: [3, 2], i: {shape: [], dtype: int64}}"))), "TRAIN")


def test_batch_reindex_picks_samples_and_adds_the_gradients_of_repeats_as_caffe():
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([3, 0, 3, 1])  # sample 2 is dropped, sample 3 taken twice
    y = reindex_net()(x=x, i=index)["r"]
    g = torch.randn_like(y)
    y.backward(g)
    want, diff = caffe_batch_reindex(x.detach().numpy(), index.numpy(), g.numpy())
    assert torch.equal(y.detach(), torch.from_numpy(want)) and torch.equal(x.grad, torch.from_numpy(diff))


@pytest.mark.parametrize("index", [[0, 4], [-1, 0]])
def test_batch_reindex_index_outside_the_batch_is_a_clear_error(index):
    with pytest.raises(ValueError, match=f"BatchReindex: index {index[-1] if index[-1] > 3 else index[0]} is outside "
                                         "the batch of 4 samples"):
        reindex_net()(x=torch.randn(4, 3, 2), i=torch.tensor(index))


@pytest.mark.parametrize("inputs, words", [
    ("{x: [3], i: {shape: [2], dtype: int64}}", "one integer sample index per sample, got shape [2] int64"),
    ("{x: [3], i: []}", "got shape [] float32"),
])
def test_batch_reindex_needs_one_integer_index_per_sample(inputs, words):
    e = graph_errors(text("{name: r, type: BatchReindex, bottom: [x, i]}", inputs))
    assert words in str(e) and "<string>:4:" in e.render()
