"""Dropout and AlphaDropout: inverted scaling in TRAIN, identity in TEST, validation."""

from __future__ import annotations

import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml


def spec_of(layer: str, inputs: str = "data: [100, 100]"):
    return net_from_source(parse_yaml(f"name: t\ninputs:\n  {inputs}\nlayers:\n  - {{name: drop, {layer}}}\n"))


@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.9])
def test_dropout_train_zeroes_and_rescales(ratio):
    torch.manual_seed(0)
    net = build_net(spec_of(f"type: Dropout, dropout_ratio: {ratio}"))
    assert net.training
    x = torch.ones(2, 100, 100)
    out = net(data=x)["drop"]
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - ratio) < 0.02  # 20,000 draws
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - ratio)))
    assert torch.equal(x, torch.ones_like(x))  # not in place


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_backward_passes_the_kept_gradients_scaled(dtype):
    torch.manual_seed(0)
    net = build_net(spec_of("type: Dropout, dropout_ratio: 0.3"))
    x = torch.ones(4, 100, 100, dtype=dtype, requires_grad=True)
    out = net(data=x)["drop"]
    assert out.dtype == dtype
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # d(x * m)/dx = m, and out = 1 * m
    assert abs((out == 0).float().mean().item() - 0.3) < 0.01  # 40,000 draws, bf16 too


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch 2.13 deprecates torch.jit.script
def test_dropout_module_scripts():
    # netcfg exports by tracing; a user may still torch.jit.script a built net
    from netcfg.layers.dropout import InvertedDropout

    m = InvertedDropout(0.3)
    scripted = torch.jit.script(m)
    x = torch.ones(1000)
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(0)
    assert torch.equal(a, scripted(x)) and torch.equal(scripted.eval()(x), x)


def test_dropout_draws_from_the_global_generator():
    # seeds and an exact resume rely on it: the same seed, the same mask
    net = build_net(spec_of("type: Dropout"))
    x = torch.ones(2, 100, 100)
    torch.manual_seed(5)
    a = net(data=x)["drop"]
    torch.manual_seed(5)
    assert torch.equal(a, net(data=x)["drop"])
    assert not torch.equal(a, net(data=x)["drop"])


def test_dropout_is_identity_in_test_and_eval():
    x = torch.randn(2, 100, 100)
    spec = spec_of("type: Dropout")
    test_net = build_net(spec, "TEST")
    assert not test_net.training and torch.equal(test_net(data=x)["drop"], x)
    train_net = build_net(spec)
    train_net.eval()
    assert torch.equal(train_net(data=x)["drop"], x)
    train_net.train()
    assert not torch.equal(train_net(data=x)["drop"], x)


def test_dropout_ratio_zero_is_identity_in_train():
    x = torch.randn(2, 100, 100)
    net = build_net(spec_of("type: Dropout, dropout_ratio: 0"))
    assert torch.equal(net(data=x)["drop"], x)


def test_dropout_default_ratio_is_caffes():
    assert spec_of("type: Dropout").layers[0].dropout_ratio == 0.5


def test_alpha_dropout_keeps_selu_statistics():
    torch.manual_seed(0)
    net = build_net(spec_of("type: AlphaDropout, dropout_ratio: 0.1"))
    x = torch.randn(2, 100, 100)
    out = net(data=x)["drop"]
    assert not torch.equal(out, x)
    assert abs(out.mean().item()) < 0.03 and abs(out.std().item() - 1) < 0.03
    # dropped entries all land on one value: the affine image of SELU's saturation
    assert (out == out.flatten().mode().values).float().mean().item() == pytest.approx(0.1, abs=0.01)
    net.eval()
    assert torch.equal(net(data=x)["drop"], x)


@pytest.mark.parametrize("layer", ["type: Dropout", "type: AlphaDropout"])
@pytest.mark.parametrize("shape", [[3, 4, 5], [7], []])
def test_infer_matches_forward(layer, shape):
    spec = spec_of(layer, f"data: {shape}")
    out = build_net(spec)(data=torch.randn(2, *shape))["drop"]
    assert build_graph(spec).blobs["drop"] == (tuple(out.shape[1:]), "float32")
    assert build_graph(spec).total_params == 0


@pytest.mark.parametrize("layer, text", [
    ("type: Dropout, dropout_ratio: 1", "input should be less than 1, got 1"),
    ("type: Dropout, dropout_ratio: -0.1", "input should be greater than or equal to 0, got -0.1"),
    ("type: AlphaDropout, dropout_ratio: 1.5", "input should be less than 1, got 1.5"),
    ("type: Dropout, ratio: 0.5", "unknown key 'ratio' for Dropout layer"),
])
def test_bad_ratio_is_rejected(layer, text):
    with pytest.raises(ConfigErrors) as e:
        spec_of(layer)
    assert text in str(e.value) and "<string>:5:" in str(e.value)


def test_integer_input_is_a_located_shape_error():
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec_of("type: Dropout", "data: {shape: [], dtype: int64}"))
    assert "Dropout layer 'drop': Dropout needs a floating-point input, got int64" in str(e.value)
