"""InfogainLoss and MultinomialLogisticLoss against Caffe's layers, written out in numpy: forward,
backward, normalisation, ignore_label, H from the net file or a third bottom; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.net import build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml
from tests.layers import graph_errors, net_of

H3 = [[1.0, 0.5, 0.0], [0.25, 2.0, 0.0], [0.0, 1.0, 3.0]]


def text(layer: str, inputs: str) -> str:
    return net_of(layer, inputs)


def net(layer: str, inputs: str = "{s: [3, 2], y: {shape: [2], dtype: int64}}"):
    return build_net(net_from_source(parse_yaml(text(layer, inputs))), "TRAIN").double()


def caffe_infogain(x: np.ndarray, label: np.ndarray, H: np.ndarray, ignore=None, normalization="VALID"):
    """Loss and bottom diff of Caffe's layer for scores (outer, K, inner), labels (outer, inner)."""
    outer, k, inner = x.shape
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss, count, diff = 0.0, 0, np.zeros_like(x)
    for i in range(outer):
        for j in range(inner):
            lab = int(label[i, j])
            if ignore is not None and lab == ignore:
                continue
            for c in range(k):
                loss -= H[lab, c] * np.log(max(p[i, c, j], 1e-20))
                diff[i, c, j] = p[i, c, j] * H[lab].sum() - H[lab, c]
            count += 1
    norm = {"VALID": count, "FULL": outer * inner, "BATCH_SIZE": outer, "NONE": 1}[normalization]
    norm = max(1.0, norm)
    return loss / norm, diff / norm


@pytest.mark.parametrize("normalization", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
@pytest.mark.parametrize("ignore", [None, 2])
def test_forward_and_backward_are_caffes(normalization, ignore):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 2)) * 3
    label = np.array([[0, 1], [2, 2], [1, 0], [2, 1]])
    fields = f", ignore_label: {ignore}" if ignore is not None else ""
    m = net(f"{{name: loss, type: InfogainLoss, bottom: [s, y], infogain: {H3}, normalization: {normalization}{fields}}}")
    t = torch.tensor(x, requires_grad=True)
    loss = m(s=t, y=torch.tensor(label))["loss"]
    loss.backward()
    want, diff = caffe_infogain(x, label, np.array(H3), ignore, normalization)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(t.grad.numpy(), diff, rtol=1e-10, atol=1e-12)


def test_a_probability_under_1e_20_is_clipped_in_the_forward_only_as_in_caffe():
    x = np.array([[60.0, 0.0, 0.0]])  # p_1 = p_2 = e^-60 < 1e-20
    m = net(f"{{name: loss, type: InfogainLoss, bottom: [s, y], infogain: {H3}}}",
            "{s: [3], y: {shape: [], dtype: int64}}")
    t = torch.tensor(x, requires_grad=True)
    loss = m(s=t, y=torch.tensor([1]))["loss"]
    loss.backward()
    want, diff = caffe_infogain(x[:, :, None], np.array([[1]]), np.array(H3))
    assert loss.item() == pytest.approx(want, rel=1e-12)  # 2 * -log(1e-20) + ... not 2 * 60
    np.testing.assert_allclose(t.grad.numpy(), diff[:, :, 0], rtol=1e-10)


def test_identity_h_is_softmax_with_loss():
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 4, (5,))
    m = net(f"{{name: loss, type: InfogainLoss, bottom: [s, y], infogain: {np.eye(4).tolist()}}}",
            "{s: [4], y: {shape: [], dtype: int64}}")
    torch.testing.assert_close(m(s=x, y=y)["loss"], torch.nn.functional.cross_entropy(x, y))


def test_h_as_a_third_bottom_per_sample():
    rng = np.random.default_rng(1)
    x, label = rng.normal(size=(2, 3)), np.array([2, 0])
    Hs = rng.uniform(size=(2, 3, 3))
    m = net("{name: loss, type: InfogainLoss, bottom: [s, y, H]}", "{s: [3], y: {shape: [], dtype: int64}, H: [3, 3]}")
    t = torch.tensor(x, requires_grad=True)
    loss = m(s=t, y=torch.tensor(label), H=torch.tensor(Hs))["loss"]
    loss.backward()
    parts = [caffe_infogain(x[i:i + 1, :, None], label[i:i + 1, None], Hs[i]) for i in range(2)]
    assert loss.item() == pytest.approx((parts[0][0] + parts[1][0]) / 2, rel=1e-12)
    np.testing.assert_allclose(t.grad.numpy(), np.concatenate([d[:, :, 0] for _, d in parts]) / 2, rtol=1e-10)


def test_gradcheck_in_float64():
    m = net(f"{{name: loss, type: InfogainLoss, bottom: [s, y], infogain: {H3}, ignore_label: 0}}")
    x, y = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True), torch.tensor([[0, 1], [2, 1], [1, 0]])
    assert torch.autograd.gradcheck(lambda x: m(s=x, y=y)["loss"], (x,))


@pytest.mark.parametrize("layer, inputs, words", [
    ("{name: l, type: InfogainLoss, bottom: [s, y]}", "", "InfogainLoss needs its matrix H (3 x 3): give infogain"),
    ("{name: l, type: InfogainLoss, bottom: [s, y], infogain: [[1, 0], [0, 1]]}", "",
     "infogain is 2 x 2, but the scores have 3 classes on axis 1"),
    (f"{{name: l, type: InfogainLoss, bottom: [s, y, H], infogain: {H3}}}", ", H: [3, 3]",
     "H is given twice: as infogain and as the third bottom"),
    ("{name: l, type: InfogainLoss, bottom: [s, y, H]}", ", H: [3, 2]",
     "the third bottom is H, 3 x 3 per sample for 3 classes, got shape [3, 2]"),
    (f"{{name: l, type: InfogainLoss, bottom: [s, z], infogain: {H3}}}", ", z: [2]",
     "the label must hold integer class indices, got a float32 blob"),
])
def test_located_errors(layer, inputs, words):
    ins = "{s: [3, 2], y: {shape: [2], dtype: int64}" + inputs + "}"
    e = graph_errors(text(layer, ins))
    assert words in str(e) and "<string>:4:" in e.render()


def test_a_ragged_matrix_is_refused_at_infogain():
    with pytest.raises(ConfigErrors) as e:
        net_from_source(parse_yaml(text("{name: l, type: InfogainLoss, bottom: [s, y], infogain: [[1, 0], [1]]}",
                                        "{s: [2], y: {shape: [], dtype: int64}}")))
    assert "infogain must be a square matrix (K rows of K values), got rows of [2, 1] values" in str(e.value)
    assert ".infogain" in e.value.render()


# ---------------------------------------------------------------- MultinomialLogisticLoss

def caffe_multinomial_logistic(p: np.ndarray, label: np.ndarray) -> tuple[float, np.ndarray]:
    """multinomial_logistic_loss_layer.cpp: -sum log(max(p[i, label], 1e-20)) / num, and the
    bottom diff -1 / max(p[i, label], 1e-20) / num at the label, 0 elsewhere."""
    num = p.shape[0]
    flat, diff = p.reshape(num, -1), np.zeros((num, p[0].size))
    loss = 0.0
    for i in range(num):
        prob = max(flat[i, label[i]], 1e-20)
        loss -= np.log(prob)
        diff[i, label[i]] = -1.0 / prob / num
    return loss / num, diff.reshape(p.shape)


def test_multinomial_logistic_loss_is_caffes_including_the_clip_and_its_gradient():
    # 1e-30 is clipped to 1e-20, and so is a negative value (a Softmax output of another net)
    p = np.array([[0.7, 0.2, 0.1], [0.3, 1e-30, 0.7], [0.5, 0.25, 0.25], [-0.5, 1.0, 0.5]])
    label = np.array([0, 1, 2, 0])
    m = net("{name: loss, type: MultinomialLogisticLoss, bottom: [p, y]}", "{p: [3], y: {shape: [], dtype: int64}}")
    t = torch.tensor(p, requires_grad=True)
    loss = m(p=t, y=torch.tensor(label))["loss"]
    loss.backward()
    want, diff = caffe_multinomial_logistic(p, label)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(t.grad.numpy(), diff, rtol=1e-12)  # -1e20 / 4 at the clipped ones, as Caffe


def test_multinomial_logistic_loss_of_softmax_is_softmax_with_loss():
    x, y = torch.randn(4, 5, 1, 1, dtype=torch.float64), torch.randint(0, 5, (4, 1))
    m = net("""{name: loss, type: MultinomialLogisticLoss, bottom: [p, y]}""", "{p: [5, 1, 1], y: {shape: [1], dtype: int64}}")
    got = m(p=torch.softmax(x, 1), y=y)["loss"]
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(x.flatten(1), y[:, 0]))


@pytest.mark.parametrize("inputs, words", [
    ("{p: [3], y: {shape: [2], dtype: int64}}", "the label must be one integer class index per sample, got shape [2]"),
    ("{p: [3], y: []}", "got shape [] float32"),
    ("{p: {shape: [3], dtype: int64}, y: {shape: [], dtype: int64}}", "needs a floating-point probabilities"),
])
def test_multinomial_logistic_loss_located_errors(inputs, words):
    e = graph_errors(text("{name: l, type: MultinomialLogisticLoss, bottom: [p, y]}", inputs))
    assert words in str(e) and "<string>:4:" in e.render()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_infogain_of_a_16_bit_net_uses_the_matrix_as_written(dtype):
    # the net's cast to 16 bits cast H too (0.3 -> 0.30078 in bfloat16): the loss, computed in
    # float32 from the 16-bit scores, was about 1e-3 off the float32 net's on the same scores
    layer = "{name: loss, type: InfogainLoss, bottom: [s, y], infogain: [[1, 0.3, 0.7], [0.3, 1, 0.1], [0.7, 0.1, 1]]}"
    half = build_net(net_from_source(parse_yaml(text(layer, f"{{s: {{shape: [3], dtype: {dtype}}}, "
                                                             "y: {shape: [], dtype: int64}}"))), "TRAIN")
    full = build_net(net_from_source(parse_yaml(text(layer, "{s: [3], y: {shape: [], dtype: int64}}"))), "TRAIN")
    s = torch.randn(6, 3).to(getattr(torch, dtype))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(half(s=s, y=y)["loss"].float(), full(s=s.float(), y=y)["loss"], rtol=1e-6, atol=0)
