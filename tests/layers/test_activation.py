"""Activation layers (activation.py, activation_math.py): outputs against torch
references, inferred shapes against real forwards, validation and shape errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml

SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def spec_of(layer: str, inputs: str = "data: [3, 4, 5]"):
    """A one-layer net spec; ``layer`` is the inside of a YAML flow mapping."""
    return net_from_source(parse_yaml(f"name: t\ninputs:\n  {inputs}\nlayers:\n  - {{name: act, {layer}}}\n"))


def run(layer: str, x: torch.Tensor) -> torch.Tensor:
    shape = list(x.shape[1:])
    net = build_net(spec_of(layer, f"data: {shape}"))
    return net(data=x)["act"]


def config_error(layer: str, inputs: str = "data: [3, 4, 5]") -> str:
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec_of(layer, inputs))
    return str(e.value)


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


REFERENCES = [
    ("type: ReLU", F.relu),
    ("type: ReLU, negative_slope: 0.1", lambda x: torch.where(x > 0, x, 0.1 * x)),
    ("type: PReLU", lambda x: torch.where(x > 0, x, 0.25 * x)),
    ("type: PReLU, channel_shared: true, filler: {type: constant, value: -0.5}", lambda x: torch.where(x > 0, x, -0.5 * x)),
    ("type: ELU", lambda x: torch.where(x > 0, x, torch.exp(x) - 1)),
    ("type: ELU, alpha: 0.5", lambda x: torch.where(x > 0, x, 0.5 * (torch.exp(x) - 1))),
    ("type: SELU", lambda x: SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * (torch.exp(x) - 1))),
    ("type: GELU", lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
    ("type: GELU, approximate: tanh", gelu_tanh),
    ("type: Sigmoid", lambda x: 1 / (1 + torch.exp(-x))),
    ("type: TanH", torch.tanh),
    ("type: Swish", lambda x: x / (1 + torch.exp(-x))),
    ("type: Swish, beta: 2.5", lambda x: x / (1 + torch.exp(-2.5 * x))),
    ("type: AbsVal", torch.abs),
    ("type: BNLL", lambda x: torch.log1p(torch.exp(x))),
    ("type: Threshold", lambda x: (x > 0).float()),
    ("type: Threshold, threshold: 0.3", lambda x: (x > 0.3).float()),
    ("type: Clip, min: -0.5, max: 0.7", lambda x: x.clamp(-0.5, 0.7)),
    ("type: Clip, min: 0.2, max: 0.2", lambda x: torch.full_like(x, 0.2)),
    ("type: Power", lambda x: x),
    ("type: Power, power: 2, scale: 0.5, shift: 3", lambda x: (3 + 0.5 * x) ** 2),
    ("type: Power, power: 0.5, shift: 10", lambda x: torch.sqrt(10 + x)),
    ("type: Power, power: 3, scale: 0", lambda x: torch.zeros_like(x)),
    ("type: Exp", torch.exp),
    ("type: Exp, base: 2, scale: 0.5, shift: 1", lambda x: 2 ** (1 + 0.5 * x)),
    ("type: Exp, base: 2.718281828459045, scale: -1", lambda x: torch.exp(-x)),
    ("type: Log, shift: 10", lambda x: torch.log(10 + x)),
    ("type: Log, base: 10, scale: 2, shift: 10", lambda x: torch.log10(10 + 2 * x)),
    ("type: Log, base: 2, scale: -1, shift: 5", lambda x: torch.log2(5 - x)),
    ("type: Softmax", lambda x: torch.exp(x) / torch.exp(x).sum(1, keepdim=True)),
    ("type: Softmax, axis: -1", lambda x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True)),
    ("type: Softmax, axis: 2", lambda x: torch.exp(x) / torch.exp(x).sum(2, keepdim=True)),
]


@pytest.mark.parametrize("layer, ref", REFERENCES, ids=[r[0] for r in REFERENCES])
def test_output_matches_reference(layer, ref):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).float()
    torch.testing.assert_close(run(layer, x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shift", [40, 400])
def test_exp_with_a_large_shift_stays_finite_where_the_output_is(shift):
    """base^shift past float's range: 10^40 made every output inf, 10^400 crashed the build
    with Python's OverflowError (a traceback from netcfg check), though 10^(shift + x) is
    ordinary for x near -shift."""
    x = torch.tensor([[-shift - 1.0, -shift + 0.5, -shift + 2.0]])
    got = run(f"type: Exp, base: 10, shift: {shift}", x)
    torch.testing.assert_close(got, torch.tensor([[0.1, 10 ** 0.5, 100.0]]), rtol=1e-4, atol=0)  # float32 x near -400


ELEMENTWISE = [r[0] for r in REFERENCES if "Softmax" not in r[0] and "PReLU" not in r[0]]


@pytest.mark.parametrize("layer", ELEMENTWISE + ["type: PReLU, channel_shared: true"])
@pytest.mark.parametrize("shape", [[3, 4, 5], [7], [2, 9], []])
def test_infer_matches_forward_any_rank(layer, shape):
    graph = build_graph(spec_of(layer, f"data: {shape}"))
    out = build_net(spec_of(layer, f"data: {shape}"))(data=torch.rand(2, *shape))["act"]
    assert graph.blobs["act"].shape == tuple(out.shape[1:]) == tuple(shape)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("layer", ELEMENTWISE + ["type: PReLU", "type: Softmax"])
def test_never_in_place(layer):
    # an in-place layer (top = bottom) rebinds the name; the caller's tensor is untouched
    spec = net_from_source(parse_yaml(
        f"name: t\ninputs:\n  data: [3, 4]\nlayers:\n  - {{name: act, {layer}, bottom: data, top: data}}\n"))
    x = torch.randn(2, 3, 4)
    before = x.clone()
    build_net(spec)(data=x)
    assert torch.equal(x, before)


def test_float64_and_half_keep_dtype():
    for dtype in ("float64", "bfloat16"):
        spec = spec_of("type: GELU", f"data: {{shape: [4], dtype: {dtype}}}")
        assert build_graph(spec).blobs["act"].dtype == dtype
        out = build_net(spec)(data=torch.randn(2, 4, dtype=getattr(torch, dtype)))["act"]
        assert str(out.dtype) == f"torch.{dtype}"


# ----------------------------------------------------------------- PReLU


def test_prelu_slope_is_a_learnable_per_channel_blob():
    spec = spec_of("type: PReLU, filler: {type: constant, value: 0.1}, param: [{lr_mult: 2, decay_mult: 0}]")
    graph = build_graph(spec)
    assert graph.total_params == 3  # one slope per channel (axis 1)
    net = build_net(spec)
    (info,) = net.param_infos()
    assert (info.name, info.lr_mult, info.decay_mult) == ("act.weight", 2.0, 0.0)
    assert torch.equal(info.param.detach(), torch.full((3,), 0.1))
    x = -torch.ones(2, 3, 4, 5)
    x[:, 1] *= 2
    net(data=x)["act"].sum().backward()
    torch.testing.assert_close(info.param.grad, torch.tensor([-40.0, -80.0, -40.0]))


def test_prelu_channel_shared_and_frozen():
    spec = spec_of("type: PReLU, channel_shared: true, param: [{lr_mult: 0}]")
    assert build_graph(spec).total_params == 1
    (info,) = build_net(spec).param_infos()
    assert info.param.shape == (1,) and not info.param.requires_grad


def test_prelu_rejects_a_second_param_entry():
    assert "param lists 2 entries but PReLU has 1 learnable blob" in config_error(
        "type: PReLU, param: [{lr_mult: 1}, {lr_mult: 1}]")


# ---------------------------------------------------------------- ArgMax


def argmax_net(layer: str, shape=(3, 4, 5), dtype="float32"):
    spec = spec_of(f"type: ArgMax, {layer}" if layer else "type: ArgMax", f"data: {{shape: {list(shape)}, dtype: {dtype}}}")
    return build_graph(spec).blobs["act"], build_net(spec)


def test_argmax_flattened_sample_default():
    blob, net = argmax_net("")
    x = torch.randn(2, 3, 4, 5)
    out = net(data=x)["act"]
    assert blob.shape == (1, 1) and blob.dtype == "int64"
    assert out.shape == (2, 1, 1) and out.dtype == torch.int64
    assert torch.equal(out[:, 0, 0], x.flatten(1).argmax(1))


def test_argmax_flattened_with_values_is_caffe_block():
    blob, net = argmax_net("top_k: 3, out_max_val: true")
    x = torch.randn(2, 3, 4, 5)
    out = net(data=x)["act"]
    values, indices = x.flatten(1).topk(3, dim=1)
    assert blob == (((2, 3)), "float32") and out.shape == (2, 2, 3) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], indices.float()) and torch.equal(out[:, 1], values)


@pytest.mark.parametrize("axis, dim", [(1, 1), (2, 2), (-1, 3)])
def test_argmax_along_axis(axis, dim):
    blob, net = argmax_net(f"axis: {axis}, top_k: 2")
    x = torch.randn(2, 3, 4, 5)
    out = net(data=x)["act"]
    assert blob.shape == tuple(out.shape[1:]) and blob.dtype == "int64"
    assert torch.equal(out, x.topk(2, dim=dim).indices)
    blob, net = argmax_net(f"axis: {axis}, top_k: 2, out_max_val: true")
    out = net(data=x)["act"]
    assert blob == (tuple(out.shape[1:]), "float32")
    assert torch.equal(out, x.topk(2, dim=dim).values)


def test_argmax_on_integers_and_scalars():
    blob, net = argmax_net("axis: 1", shape=(6,), dtype="int64")
    x = torch.randint(0, 100, (2, 6))
    last_max = 5 - x.flip(1).argmax(1)  # Caffe: a tie goes to the larger index
    assert blob == ((1,), "int64") and torch.equal(net(data=x)["act"][:, 0], last_max)
    blob, net = argmax_net("", shape=())
    assert blob.shape == (1, 1) and net(data=torch.randn(2))["act"].shape == (2, 1, 1)


def test_argmax_ties_go_to_the_larger_index_like_caffe():
    """Caffe's ArgMax partial_sorts (value, index) pairs with std::greater: on equal values
    the larger index comes first, in every top_k slot."""
    x = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, 1.0]])
    _, net = argmax_net("axis: 1, top_k: 4", shape=(6,))
    assert net(data=x)["act"].tolist() == [[4, 2, 1, 5]]
    _, net = argmax_net("top_k: 2, out_max_val: true", shape=(6,))
    assert net(data=x)["act"].tolist() == [[[4.0, 2.0], [3.0, 3.0]]]
    _, net = argmax_net("axis: 1", shape=(3, 2, 2))
    assert net(data=torch.zeros(1, 3, 2, 2))["act"].tolist() == [[[[2, 2], [2, 2]]]]


@pytest.mark.parametrize("top_k", [1, 2])
def test_argmax_counts_a_nan_as_the_largest_like_torch_topk(top_k):
    # a NaN never equals the maximum it makes: the index must still be the NaN's, not -1
    _, net = argmax_net(f"axis: 1, top_k: {top_k}", shape=(4,))
    out = net(data=torch.tensor([[1.0, float("nan"), 3.0, 2.0]]))["act"]
    assert out.tolist() == [[1, 2][:top_k]]


def test_argmax_shape_errors():
    msg = config_error("type: ArgMax, top_k: 6, axis: -1")
    assert "layers[0].top_k: ArgMax layer 'act': top_k 6 is more than the 5 entries along axis -1 of input [3, 4, 5]" in msg
    assert "top_k 61 is more than the 60 element(s) of each sample" in config_error("type: ArgMax, top_k: 61")
    assert "axis 4 is not a per-sample axis" in config_error("type: ArgMax, axis: 4")
    assert "ArgMax expects a numeric input, got bool" in config_error("type: ArgMax", "data: {shape: [3], dtype: bool}")


# --------------------------------------------------------------- errors


@pytest.mark.parametrize("layer, text", [
    ("type: Clip, min: 1, max: 0", "Clip needs min <= max, got min 1.0 > max 0.0"),
    ("type: Clip, min: 1", "missing required key 'max'"),
    ("type: Clip, min: -.inf, max: 1", "input should be a finite number"),
    ("type: ReLU, negative_slope: .nan", "input should be a finite number"),
    ("type: ELU, alpha: -1", "input should be greater than or equal to 0, got -1"),
    ("type: Swish, beta: -2", "input should be greater than or equal to 0, got -2"),
    ("type: GELU, approximate: erf", "invalid value 'erf' (valid: none, tanh)"),
    ("type: Exp, base: 0", "Exp base must be -1 (meaning e) or > 0, got 0.0"),
    ("type: Exp, base: -2", "Exp base must be -1 (meaning e) or > 0, got -2.0"),
    ("type: Log, base: 1", "Log base must be -1 (meaning e) or > 0 and != 1, got 1.0"),
    ("type: Softmax, axis: 1.5", "input should be a valid integer"),
    ("type: PReLU, filler: {type: glorot}", "invalid value 'glorot'"),
    ("type: Sigmoid, slope: 2", "unknown key 'slope' for Sigmoid layer"),
])
def test_bad_values_are_rejected(layer, text):
    with pytest.raises(ConfigErrors) as e:
        spec_of(layer)
    assert text in str(e.value)
    assert "<string>:5:" in str(e.value)  # located at the layer's line


@pytest.mark.parametrize("layer, inputs, text", [
    ("type: Softmax, axis: 4", "data: [3, 4, 5]", "layers[0].axis: Softmax layer 'act': axis 4 is not a per-sample axis "
                                                  "of a 3-d input per sample (axis 0 is the batch; valid: 1..3 or -1..-3)"),
    ("type: Softmax, axis: 0", "data: [3, 4, 5]", "axis 0 is not a per-sample axis"),
    ("type: Softmax, axis: -4", "data: [3, 4, 5]", "axis -4 is not a per-sample axis"),
    ("type: Softmax", "data: []", "Softmax needs at least a 1-d input per sample to work along axis 1, got a scalar"),
    ("type: PReLU", "data: []", "layers[0].channel_shared: PReLU layer 'act': PReLU with one slope per channel"),
    ("type: Sigmoid", "data: {shape: [], dtype: int64}", "Sigmoid needs a floating-point input, got int64"),
    ("type: ReLU", "data: {shape: [4], dtype: uint8}", "ReLU needs a floating-point input, got uint8"),
])
def test_shape_errors_are_located(layer, inputs, text):
    msg = config_error(layer, inputs)
    assert text in msg and "<string>:5:" in msg


def test_flops_count_elements():
    assert build_graph(spec_of("type: ReLU")).flops == 60
    assert build_graph(spec_of("type: Power, scale: 2")).flops == 60
    assert build_graph(spec_of("type: Power")).flops == 0
