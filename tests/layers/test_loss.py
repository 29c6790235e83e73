"""Loss layers against Caffe's formulas written out by hand, plus shape and config checks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml

INT_LABEL = "{shape: [], dtype: int64}"


def spec(inputs: dict[str, str], layers: str):
    ins = "\n".join(f"  {k}: {v}" for k, v in inputs.items())
    return net_from_source(parse_yaml(f"name: t\ninputs:\n{ins}\nlayers:\n{layers}\n"))


def one_loss(inputs: dict[str, str], layer: str):
    """A net whose one layer, 'loss', reads every input in order."""
    bottoms = ", ".join(inputs)
    return build_net(spec(inputs, f"  - {{name: loss, bottom: [{bottoms}], {layer}}}"))


def shape_error(inputs: dict[str, str], layer: str) -> str:
    bottoms = ", ".join(inputs)
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(inputs, f"  - {{name: loss, bottom: [{bottoms}], {layer}}}"))
    return str(e.value)


def config_error(layer: str) -> str:
    with pytest.raises(ConfigErrors) as e:
        spec({"x": "[4]", "label": INT_LABEL}, f"  - {{name: loss, bottom: [x, label], {layer}}}")
    return str(e.value)


# ---------------------------------------------------------------- references (Caffe's loops)


def caffe_softmax_loss(x, label, axis=1, ignore=None, norm="VALID", smoothing=0.0):
    x = x.movedim(axis, -1).double()  # (..., C)
    logp = x - x.logsumexp(-1, keepdim=True)
    n_classes = x.shape[-1]
    total, valid = 0.0, 0
    for idx in itertools.product(*map(range, label.shape)):
        y = int(label[idx])
        if ignore is not None and y == ignore:
            continue
        lp = logp[idx]
        total += -(1 - smoothing) * lp[y] - smoothing / n_classes * lp.sum()
        valid += 1
    outer = math.prod(label.shape[:axis])
    normalizer = {"VALID": valid if ignore is not None else label.numel(), "BATCH_SIZE": outer,
                  "FULL": label.numel(), "NONE": 1}[norm]
    return total / max(1, normalizer)


def caffe_sigmoid_loss(x, t, ignore=None, norm="BATCH_SIZE"):
    total, valid = 0.0, 0
    for xi, ti in zip(x.flatten().double().tolist(), t.flatten().double().tolist()):
        if ignore is not None and int(ti) == ignore:
            continue
        # Caffe's stable form
        total -= xi * (ti - (xi >= 0)) - math.log(1 + math.exp(xi - 2 * xi * (xi >= 0)))
        valid += 1
    normalizer = {"VALID": valid, "BATCH_SIZE": x.shape[0], "FULL": x.numel(), "NONE": 1}[norm]
    return total / max(1, normalizer)


def caffe_hinge(x, label, norm):
    x = x.reshape(x.shape[0], -1).double().clone()
    for i in range(x.shape[0]):
        x[i, int(label[i])] *= -1
    margin = (1 + x).clamp(min=0)
    return (margin.abs().sum() if norm == "L1" else (margin * margin).sum()) / x.shape[0]


def caffe_contrastive(a, b, sim, margin, legacy):
    total = 0.0
    for i in range(a.shape[0]):
        d2 = float(((a[i].double() - b[i].double()) ** 2).sum())
        if int(sim[i]):
            total += d2
        elif legacy:
            total += max(margin - d2, 0.0)
        else:
            total += max(margin - math.sqrt(d2), 0.0) ** 2
    return total / a.shape[0] / 2


# ---------------------------------------------------------------- SoftmaxWithLoss


@pytest.mark.parametrize("norm", ["VALID", "BATCH_SIZE", "FULL", "NONE"])
@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_loss_matches_caffe(norm, ignore):
    torch.manual_seed(0)
    x, label = torch.randn(6, 5), torch.tensor([0, 2, 4, 2, 1, 3])
    extra = f", ignore_label: {ignore}" if ignore is not None else ""
    net = one_loss({"x": "[5]", "label": INT_LABEL}, f"type: SoftmaxWithLoss, normalization: {norm}{extra}")
    out = net(x=x, label=label)["loss"]
    assert out.shape == ()
    assert out.item() == pytest.approx(float(caffe_softmax_loss(x, label, ignore=ignore, norm=norm)), rel=1e-5)


@pytest.mark.parametrize("norm", ["VALID", "BATCH_SIZE", "FULL"])
def test_softmax_loss_dense_with_ignore(norm):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 5)
    label = torch.randint(0, 3, (2, 4, 5))
    label[0, :2] = 255
    net = one_loss({"x": "[3, 4, 5]", "label": "{shape: [4, 5], dtype: int64}"},
                   f"type: SoftmaxWithLoss, ignore_label: 255, normalization: {norm}")
    want = caffe_softmax_loss(x, label, ignore=255, norm=norm)
    assert net(x=x, label=label)["loss"].item() == pytest.approx(float(want), rel=1e-5)
    # Caffe's (N, 1, H, W) label layout gives the same loss
    net = one_loss({"x": "[3, 4, 5]", "label": "{shape: [1, 4, 5], dtype: int64}"},
                   f"type: SoftmaxWithLoss, ignore_label: 255, normalization: {norm}")
    assert net(x=x, label=label[:, None])["loss"].item() == pytest.approx(float(want), rel=1e-5)


def test_softmax_loss_last_axis_and_int32_label():
    torch.manual_seed(2)
    x, label = torch.randn(2, 7, 4), torch.randint(0, 4, (2, 7), dtype=torch.int32)
    net = one_loss({"x": "[7, 4]", "label": "{shape: [7], dtype: int32}"},
                   "type: SoftmaxWithLoss, axis: -1, normalization: BATCH_SIZE")
    # BATCH_SIZE is Caffe's outer count: every axis before the class axis (2 * 7 here)
    want = caffe_softmax_loss(x, label.long(), axis=2, norm="BATCH_SIZE")
    assert net(x=x, label=label)["loss"].item() == pytest.approx(float(want), rel=1e-5)


def test_softmax_loss_label_smoothing():
    torch.manual_seed(3)
    x, label = torch.randn(8, 6), torch.randint(0, 6, (8,))
    label[0] = -1
    net = one_loss({"x": "[6]", "label": INT_LABEL}, "type: SoftmaxWithLoss, label_smoothing: 0.1, ignore_label: -1")
    want = caffe_softmax_loss(x, label, ignore=-1, smoothing=0.1)
    assert net(x=x, label=label)["loss"].item() == pytest.approx(float(want), rel=1e-5)


def test_softmax_loss_all_ignored_is_zero_and_gradients_flow():
    net = one_loss({"x": "[3]", "label": INT_LABEL}, "type: SoftmaxWithLoss, ignore_label: 0")
    x = torch.randn(4, 3, requires_grad=True)
    loss = net(x=x, label=torch.zeros(4, dtype=torch.long))["loss"]
    assert loss.item() == 0.0  # Caffe's normalizer is at least 1: no NaN
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    x.grad = None
    label = torch.tensor([0, 1, 2, 1])
    net(x=x, label=label)["loss"].backward()
    assert torch.equal(x.grad[0], torch.zeros(3))  # ignored sample: no gradient
    p = x.detach()[1:].softmax(1)  # Caffe's gradient: (softmax - onehot) / valid
    want = (p - torch.nn.functional.one_hot(label[1:], 3)) / 3
    torch.testing.assert_close(x.grad[1:], want)


def test_softmax_loss_is_exact_where_caffe_clips_the_probability():
    """The documented deviation: Caffe's Forward_cpu takes log(max(prob, FLT_MIN))
    (softmax_loss_layer.cpp), capping a label's loss at -ln(FLT_MIN) = 87.3365; netcfg's is
    the exact -log softmax. The gradient, Caffe's Backward_cpu prob - one-hot, is the same."""
    net = one_loss({"x": "[2]", "label": INT_LABEL}, "type: SoftmaxWithLoss")
    x = torch.tensor([[0.0, 200.0], [3.0, 1.0]], requires_grad=True)
    label = torch.tensor([0, 0])
    loss = net(x=x, label=label)["loss"]
    caffe_cap = -math.log(torch.finfo(torch.float32).tiny)
    assert caffe_cap == pytest.approx(87.3365, abs=1e-4)
    exact = (200.0 + math.log1p(math.exp(-2.0))) / 2  # sample 0 gaps 200, sample 1 is right by 2
    assert loss.item() == pytest.approx(exact, rel=1e-6) and loss.item() > caffe_cap / 2
    loss.backward()
    p = x.detach().softmax(1)
    torch.testing.assert_close(x.grad, (p - torch.nn.functional.one_hot(label, 2)) / 2)


def test_softmax_loss_shape_errors_name_shapes_and_field():
    msg = shape_error({"x": "[10]", "label": "{shape: [3], dtype: int64}"}, "type: SoftmaxWithLoss")
    assert "layers[0].bottom" in msg and "label shape [3]" in msg and "scores shape [10]" in msg
    msg = shape_error({"x": "[5, 4, 4]", "label": "{shape: [4, 3], dtype: int64}"}, "type: SoftmaxWithLoss")
    assert "[4, 3]" in msg and "[5, 4, 4]" in msg and "expected [4, 4]" in msg
    msg = shape_error({"x": "[10]", "label": "[]"}, "type: SoftmaxWithLoss")
    assert "integer class indices" in msg and "float32" in msg and "dtype: int64" in msg
    msg = shape_error({"x": "[10]", "label": INT_LABEL}, "type: SoftmaxWithLoss, axis: 2")
    assert "layers[0].axis" in msg and "axis 2 is out of range" in msg
    msg = shape_error({"x": "[10]"}, "type: SoftmaxWithLoss")
    assert "takes 2 bottom(s), got 1" in msg


def test_softmax_loss_config_errors():
    assert "label_smoothing" in config_error("type: SoftmaxWithLoss, label_smoothing: 1.0")
    msg = config_error("type: SoftmaxWithLoss, normalization: MEAN")
    assert "normalization" in msg and "VALID" in msg and "BATCH_SIZE" in msg
    assert one_loss({"x": "[4]", "label": INT_LABEL}, "type: SoftmaxWithLoss, normalization: full").graph
    assert "unknown key 'normalize'" in config_error("type: SoftmaxWithLoss, normalize: true")


# ---------------------------------------------------------------- SigmoidCrossEntropyLoss


@pytest.mark.parametrize("norm", ["VALID", "BATCH_SIZE", "FULL", "NONE"])
@pytest.mark.parametrize("ignore", [None, -1])
def test_sigmoid_loss_matches_caffe(norm, ignore):
    torch.manual_seed(4)
    x, t = torch.randn(4, 2, 3) * 3, torch.rand(4, 2, 3).round()
    t[0, 0] = -1.0
    if ignore is None:
        t = t.clamp(min=0)
    extra = f", ignore_label: {ignore}" if ignore is not None else ""
    net = one_loss({"x": "[2, 3]", "t": "[6]"}, f"type: SigmoidCrossEntropyLoss, normalization: {norm}{extra}")
    want = caffe_sigmoid_loss(x, t, ignore=ignore, norm=norm)
    assert net(x=x, t=t.reshape(4, 6))["loss"].item() == pytest.approx(float(want), rel=1e-5)


def test_sigmoid_loss_default_is_batch_size_and_backward():
    net = one_loss({"x": "[5]", "t": "[5]"}, "type: SigmoidCrossEntropyLoss")
    x, t = torch.randn(3, 5, requires_grad=True), torch.rand(3, 5)
    net(x=x, t=t)["loss"].backward()
    torch.testing.assert_close(x.grad, (x.detach().sigmoid() - t) / 3)  # Caffe: (sigmoid - t) / N
    msg = shape_error({"x": "[5]", "t": "[4]"}, "type: SigmoidCrossEntropyLoss")
    assert "[5] and [4]" in msg and "layers[0].bottom" in msg


# ---------------------------------------------------------------- EuclideanLoss, HingeLoss, ContrastiveLoss


def test_euclidean_loss():
    torch.manual_seed(5)
    net = one_loss({"a": "[3, 2]", "b": "[6]"}, "type: EuclideanLoss")
    a, b = torch.randn(4, 3, 2, requires_grad=True), torch.randn(4, 6)
    out = net(a=a, b=b)["loss"]
    want = sum(float(((a[i].detach().flatten() - b[i]) ** 2).sum()) for i in range(4)) / (2 * 4)
    assert out.shape == () and out.item() == pytest.approx(float(want), rel=1e-5)
    out.backward()
    torch.testing.assert_close(a.grad, (a.detach() - b.reshape(4, 3, 2)) / 4)
    assert "[3] and [4]" in shape_error({"a": "[3]", "b": "[4]"}, "type: EuclideanLoss")


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss(norm):
    torch.manual_seed(6)
    x, label = torch.randn(5, 4, requires_grad=True), torch.tensor([0, 3, 1, 1, 2])
    net = one_loss({"x": "[4]", "label": INT_LABEL}, f"type: HingeLoss, norm: {norm}")
    out = net(x=x, label=label)["loss"]
    assert out.item() == pytest.approx(float(caffe_hinge(x.detach(), label, norm)), rel=1e-5)
    out.backward()
    assert x.grad.abs().sum() > 0
    msg = shape_error({"x": "[4]", "label": "[]"}, "type: HingeLoss")
    assert "integer class indices" in msg
    assert "one value per sample" in shape_error({"x": "[4]", "label": "{shape: [2], dtype: int64}"}, "type: HingeLoss")
    assert "norm" in config_error("type: HingeLoss, norm: L3")


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss(legacy):
    torch.manual_seed(7)
    a, b = torch.randn(6, 3) * 0.5, torch.randn(6, 3) * 0.5
    b[0] = a[0]  # zero distance: the gradient must stay finite
    a.requires_grad_(True)
    sim = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    net = one_loss({"a": "[3]", "b": "[3]", "sim": "[]"},
                   f"type: ContrastiveLoss, margin: 2.0, legacy_version: {str(legacy).lower()}")
    out = net(a=a, b=b, sim=sim)["loss"]
    assert out.item() == pytest.approx(float(caffe_contrastive(a.detach(), b, sim, 2.0, legacy)), rel=1e-5)
    out.backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    # an integer similarity blob works too
    net = one_loss({"a": "[3]", "b": "[3]", "sim": INT_LABEL}, "type: ContrastiveLoss")
    assert net(a=a, b=b, sim=sim.long())["loss"].item() == pytest.approx(
        caffe_contrastive(a.detach(), b, sim, 1.0, False), rel=1e-5)
    assert "one value per sample" in shape_error({"a": "[3]", "b": "[3]", "sim": "[2]"}, "type: ContrastiveLoss")
    assert "takes 3 bottom(s)" in shape_error({"a": "[3]", "b": "[3]"}, "type: ContrastiveLoss")


# ---------------------------------------------------------------- nets


@pytest.mark.parametrize("inputs, layer", [
    ({"x": "[5]", "label": INT_LABEL}, "type: SoftmaxWithLoss"),
    ({"x": "[3, 4, 4]", "label": "{shape: [4, 4], dtype: int64}"}, "type: SoftmaxWithLoss"),
    ({"x": "[4, 3]", "label": "{shape: [4], dtype: int64}"}, "type: SoftmaxWithLoss, axis: 2"),
    ({"x": "[5, 2]", "t": "[10]"}, "type: SigmoidCrossEntropyLoss"),
    ({"a": "[5]", "b": "[5]"}, "type: EuclideanLoss"),
    ({"x": "[5]", "label": INT_LABEL}, "type: HingeLoss"),
    ({"a": "[5]", "b": "[5]", "sim": "[1]"}, "type: ContrastiveLoss"),
])
def test_infer_matches_forward(inputs, layer):
    net = one_loss(inputs, layer)
    feed = {}
    for name, blob in net.graph.inputs.items():
        shape = (2, *blob.shape)
        feed[name] = torch.randint(0, 2, shape) if blob.dtype == "int64" else torch.rand(shape)
    out = net(**feed)["loss"]
    assert tuple(out.shape) == net.graph.blobs["loss"].shape == ()
    assert net.loss_weights == {"loss": 1.0}


def test_two_weighted_losses_sum_in_net_loss():
    torch.manual_seed(8)
    net = build_net(spec({"x": "[4]", "y": "[4]", "label": INT_LABEL}, """
  - {name: ip, type: InnerProduct, bottom: x, num_output: 4}
  - {name: cls, type: SoftmaxWithLoss, bottom: [ip, label]}
  - {name: reg, type: EuclideanLoss, bottom: [ip, y], loss_weight: 0.25}
"""))
    x, y, label = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 3])
    out = net(x=x, y=y, label=label)
    assert net.loss_weights == {"cls": 1.0, "reg": 0.25}
    total = net.loss(out)
    torch.testing.assert_close(total, out["cls"] + 0.25 * out["reg"])
    ip = net.ip(x).detach()
    want = caffe_softmax_loss(ip, label) + 0.25 * float(((ip - y) ** 2).sum()) / 6
    assert total.item() == pytest.approx(float(want), rel=1e-5)
    total.backward()
    assert net.ip.weight.grad is not None and net.ip.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- half precision


@pytest.mark.parametrize("inputs, layer, scale", [
    ({"x": "[100]", "y": "[100]"}, "type: EuclideanLoss", 30.0),
    ({"x": "[100]", "y": INT_LABEL}, "type: HingeLoss, norm: L2", 30.0),
    ({"x": "[100]", "y": INT_LABEL}, "type: HingeLoss", 3000.0),
    ({"x": "[100]", "y": "[100]", "sim": INT_LABEL}, "type: ContrastiveLoss", 30.0),
    ({"x": "[100]", "y": INT_LABEL}, "type: SoftmaxWithLoss, normalization: NONE", 30.0),
    ({"x": "[100]", "y": "[100]"}, "type: SigmoidCrossEntropyLoss", 30.0),
])
def test_losses_under_float16_autocast_sum_in_float32(inputs, layer, scale):
    """A float16 activation (a layer under autocast) reaching a loss: Caffe sums the loss in
    float, so a batch whose summed terms pass float16's 65504 must not give inf."""
    torch.manual_seed(9)
    bottoms = ", ".join(["ip", *list(inputs)[1:]])
    net = build_net(spec(inputs, f"""
  - {{name: ip, type: InnerProduct, bottom: x, num_output: 100}}
  - {{name: loss, bottom: [{bottoms}], {layer}}}
"""))
    feed = {name: torch.randint(0, 2, (64, *blob.shape)) if blob.dtype == "int64" else torch.randn(64, *blob.shape)
            for name, blob in net.graph.inputs.items()}
    feed["x"] = feed["x"] * scale
    want = net(**feed)["loss"]
    with torch.autocast("cpu", dtype=torch.float16):
        got = net(**feed)["loss"]
    assert torch.isfinite(got), f"{layer}: float32 gives {want.item():.6g}, float16 autocast gives {got.item()}"
    assert got.item() == pytest.approx(want.item(), rel=1e-2)
    assert got.dtype == torch.float32  # as Caffe: the loss is a float
    got.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
