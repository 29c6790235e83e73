"""BatchNorm, LayerNorm, InstanceNorm, GroupNorm against torch.nn.functional and Caffe's rules."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml


def spec(shape: list[int], layer: str, dtype: str = "float32"):
    text = f"name: t\ninputs:\n  x: {{shape: {shape}, dtype: {dtype}}}\nlayers:\n  - {{name: n, bottom: x, {layer}}}\n"
    return net_from_source(parse_yaml(text))


def run(shape: list[int], layer: str, x: torch.Tensor | None = None, train: bool = True):
    """Build a one-layer net, run it on x (default a random batch of 2); return (net, output)."""
    net = build_net(spec(shape, layer))
    net.train(train)
    x = torch.randn(2, *shape) if x is None else x
    out = net(x=x)["n"]
    assert tuple(out.shape[1:]) == net.graph.nodes[0].out_blobs[0].shape  # infer agrees with forward
    return net, out


def config_error(layer: str, shape: list[int] = [3, 4, 4]) -> str:
    with pytest.raises(ConfigErrors) as e:
        spec(shape, layer)
    return str(e.value)


def shape_error(shape: list[int], layer: str, dtype: str = "float32") -> str:
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(shape, layer, dtype))
    return str(e.value)


def batch_stats(x: torch.Tensor):
    dims = [0, *range(2, x.dim())]
    return x.mean(dims), x.var(dims, unbiased=False), x.var(dims, unbiased=True)


def normalise(x, mean, var, eps=1e-5):
    view = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.view(view)) / (var.view(view) + eps).sqrt()


# ---------------------------------------------------------------- BatchNorm


@pytest.mark.parametrize("shape", [[6], [3, 5], [3, 4, 5], [2, 3, 4, 5]])
def test_batchnorm_train_uses_batch_stats_and_updates_running_stats(shape):
    x = torch.randn(4, *shape) * 3 + 1
    net, out = run(shape, "type: BatchNorm, moving_average_fraction: 0.9", x)
    mean, var, var_unbiased = batch_stats(x)
    torch.testing.assert_close(out, normalise(x, mean, var))
    bn = net.n
    assert bn.momentum == pytest.approx(0.1)
    # PyTorch's EMA from (0, 1); the stored variance carries Bessel's correction, as Caffe's does
    torch.testing.assert_close(bn.running_mean, 0.1 * mean)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * var_unbiased)
    assert int(bn.num_batches_tracked) == 1
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]


def test_batchnorm_test_phase_uses_running_stats_and_leaves_them():
    net = build_net(spec([3, 4, 4], "type: BatchNorm"))
    bn = net.n
    bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    net.eval()
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(net(x=x)["n"], normalise(x, bn.running_mean, bn.running_var))
    torch.testing.assert_close(bn.running_mean, torch.tensor([1.0, -2.0, 0.5]))
    assert int(bn.num_batches_tracked) == 0


def test_batchnorm_default_momentum_is_caffes_fraction():
    net, _ = run([3], "type: BatchNorm")
    assert net.n.momentum == pytest.approx(1 - 0.999)
    assert net.n.use_global_stats is None


def test_batchnorm_use_global_stats_true_is_frozen_in_train_mode():
    net = build_net(spec([3, 4, 4], "type: BatchNorm, use_global_stats: true"))
    bn = net.n
    bn.running_mean.fill_(2.0)
    bn.running_var.fill_(9.0)
    net.train()
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = net(x=x)["n"]
    torch.testing.assert_close(out, (x - 2.0) / (9.0 + 1e-5) ** 0.5)
    out.sum().backward()
    assert bn.weight.grad is not None and x.grad is not None
    assert (bn.running_mean == 2.0).all() and int(bn.num_batches_tracked) == 0


def test_batchnorm_use_global_stats_false_uses_batch_stats_in_test_mode():
    x = torch.randn(4, 3, 5) * 2 + 3
    net, out = run([3, 5], "type: BatchNorm, use_global_stats: false", x, train=False)
    mean, var, _ = batch_stats(x)
    torch.testing.assert_close(out, normalise(x, mean, var))
    assert (net.n.running_mean == 0).all()  # not updated while testing
    net.train()
    net(x=x)
    torch.testing.assert_close(net.n.running_mean, 0.001 * mean)  # tracked while training


@pytest.mark.parametrize("shape, use_global_stats, train, test", [
    ([6], None, 2, 1), ([6], False, 2, 2), ([6], True, 1, 1), ([3, 5], None, 1, 1), ([3, 4, 4], False, 1, 1)])
def test_batchnorm_min_batch_is_two_only_for_batch_statistics_of_a_channel_vector(shape, use_global_stats, train, test):
    layer = "type: BatchNorm" + ("" if use_global_stats is None else f", use_global_stats: {str(use_global_stats).lower()}")
    for phase, need in (("TRAIN", train), ("TEST", test)):
        graph = build_graph(spec(shape, layer), phase)
        assert graph.min_batch()[0] == need
        net = build_net(spec(shape, layer), phase)
        net(x=torch.randn(need, *shape))  # runs with that many samples
        if need == 2:
            with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
                net(x=torch.randn(1, *shape))


def test_batchnorm_affine_blobs_and_fillers():
    net, out = run([4, 3], "type: BatchNorm, weight_filler: {type: constant, value: 0}, "
                           "param: [{lr_mult: 1}, {lr_mult: 2, decay_mult: 0}]")
    assert (out == 0).all()  # zero-init scale: the layer starts as a zero branch
    infos = {i.name: (i.lr_mult, i.decay_mult) for i in net.param_infos()}
    assert infos == {"n.weight": (1.0, 1.0), "n.bias": (2.0, 0.0)}
    assert net.graph.total_params == 8
    plain = build_net(spec([4, 3], "type: BatchNorm, affine: false"))
    assert list(plain.parameters()) == [] and plain.graph.total_params == 0


def test_batchnorm_config_errors():
    assert "moving_average_fraction" in config_error("type: BatchNorm, moving_average_fraction: 1.0")
    assert "less than 1" in config_error("type: BatchNorm, moving_average_fraction: 1.0")
    assert "eps" in config_error("type: BatchNorm, eps: 0")
    assert "need affine: true" in config_error("type: BatchNorm, affine: false, weight_filler: {type: constant}")
    assert "use_global_stats" in config_error("type: BatchNorm, use_global_stats: maybe")


def test_batchnorm_shape_errors_are_located():
    msg = shape_error([], "type: BatchNorm")
    assert "layers[0]" in msg and "got shape []" in msg and "1-d or 2-d or 3-d or 4-d" in msg
    msg = shape_error([5], "type: BatchNorm", dtype="int64")
    assert "floating-point input, got int64" in msg and "layers[0].bottom" in msg


# ---------------------------------------------------------------- LayerNorm


@pytest.mark.parametrize("shape, num_axes, normalized", [
    ([7], None, [7]), ([5, 8], None, [5, 8]), ([5, 8], 1, [8]), ([3, 4, 6], 2, [4, 6]), ([3, 4, 6], None, [3, 4, 6]),
])
def test_layernorm_matches_functional(shape, num_axes, normalized):
    extra = "" if num_axes is None else f", num_axes: {num_axes}"
    net, out = run(shape, f"type: LayerNorm, eps: 0.001{extra}")
    ln = net.n
    with torch.no_grad():
        ln.weight.normal_(), ln.bias.normal_()
    x = torch.randn(2, *shape)
    torch.testing.assert_close(net(x=x)["n"], F.layer_norm(x, normalized, ln.weight, ln.bias, 1e-3))
    assert list(ln.weight.shape) == normalized


def test_layernorm_without_affine_and_errors():
    net, out = run([5, 8], "type: LayerNorm, num_axes: 1, elementwise_affine: false")
    assert list(net.parameters()) == []
    msg = shape_error([5, 8], "type: LayerNorm, num_axes: 3")
    assert "layers[0].num_axes" in msg and "num_axes 3 is more than the 2 dim(s) of the input [5, 8]" in msg
    assert "num_axes" in config_error("type: LayerNorm, num_axes: 0")


# ---------------------------------------------------------------- InstanceNorm


@pytest.mark.parametrize("shape", [[3, 6], [3, 4, 5]])
@pytest.mark.parametrize("affine", [False, True])
def test_instancenorm_matches_functional(shape, affine):
    net, _ = run(shape, f"type: InstanceNorm, affine: {str(affine).lower()}, eps: 0.0001")
    w = getattr(net.n, "weight", None)
    if affine:
        with torch.no_grad():
            w.normal_(), net.n.bias.normal_()
    assert net.graph.total_params == (2 * shape[0] if affine else 0)
    x = torch.randn(2, *shape)
    for train in (True, False):  # instance statistics in both phases
        net.train(train)
        torch.testing.assert_close(net(x=x)["n"], F.instance_norm(x, weight=w, bias=getattr(net.n, "bias", None), eps=1e-4))


def test_instancenorm_shape_errors():
    assert "more than 1 position per channel" in shape_error([3, 1, 1], "type: InstanceNorm")
    assert "2-d or 3-d" in shape_error([3], "type: InstanceNorm")


# ---------------------------------------------------------------- GroupNorm


@pytest.mark.parametrize("shape, groups", [([8], 4), ([6, 5], 3), ([8, 4, 4], 2), ([8, 4, 4], 8), ([4, 2, 3, 3], 1)])
def test_groupnorm_matches_functional(shape, groups):
    net, _ = run(shape, f"type: GroupNorm, num_groups: {groups}")
    with torch.no_grad():
        net.n.weight.normal_(), net.n.bias.normal_()
    x = torch.randn(2, *shape)
    torch.testing.assert_close(net(x=x)["n"], F.group_norm(x, groups, net.n.weight, net.n.bias, 1e-5))
    assert net.graph.nodes[0].spec.blob_names() == ["weight", "bias"]


def test_groupnorm_errors():
    msg = shape_error([16, 4, 4], "type: GroupNorm, num_groups: 3")
    assert "layers[0].num_groups" in msg and "num_groups 3 does not divide the 16 input channels" in msg
    assert "num_groups" in config_error("type: GroupNorm")  # required
    assert "greater than or equal to 1" in config_error("type: GroupNorm, num_groups: 0")
