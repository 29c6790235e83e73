"""Accuracy against Caffe's counting loop: top-k, ignore_label, per-class, dense labels."""

from __future__ import annotations

import itertools

import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml

INT_LABEL = "{shape: [], dtype: int64}"


def spec(inputs: dict[str, str], layer: str):
    ins = "\n".join(f"  {k}: {v}" for k, v in inputs.items())
    return net_from_source(parse_yaml(f"name: t\ninputs:\n{ins}\nlayers:\n  - {{name: acc, type: Accuracy, "
                                      f"bottom: [{', '.join(inputs)}]{', ' if layer else ''}{layer}}}\n"))


def accuracy_net(inputs: dict[str, str], layer: str = ""):
    return build_net(spec(inputs, layer), "TEST")


def error(inputs: dict[str, str], layer: str = "") -> str:
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(inputs, layer))
    return str(e.value)


def caffe_accuracy(x, label, top_k=1, axis=1, ignore=None):
    """Caffe's AccuracyLayer::Forward_cpu: a label is right when fewer than top_k other
    classes score at least as high (num_better_predictions starts at -1 and counts >=);
    returns (accuracy, per-class accuracy)."""
    x = x.movedim(axis, -1)  # (..., C)
    n_classes = x.shape[-1]
    right, count = 0, 0
    hits, totals = [0] * n_classes, [0] * n_classes
    for idx in itertools.product(*map(range, label.shape)):
        y = int(label[idx])
        if ignore is not None and y == ignore:
            continue
        totals[y] += 1
        count += 1
        better = sum(1 for c in range(n_classes) if x[idx][c] >= x[idx][y]) - 1
        if better < top_k:
            right += 1
            hits[y] += 1
    per_class = [h / t if t else 0.0 for h, t in zip(hits, totals)]
    return (right / count if count else 0.0), per_class


@pytest.mark.parametrize("top_k", [1, 3])
@pytest.mark.parametrize("ignore", [None, 1])
def test_accuracy_matches_caffe(top_k, ignore):
    torch.manual_seed(0)
    x, label = torch.randn(20, 5), torch.randint(0, 5, (20,))
    extra = f", ignore_label: {ignore}" if ignore is not None else ""
    net = accuracy_net({"x": "[5]", "label": INT_LABEL}, f"top_k: {top_k}{extra}, top: [acc, per_class]")
    out = net(x=x, label=label)
    want, per_class = caffe_accuracy(x, label, top_k, ignore=ignore)
    assert out["acc"].shape == () and out["acc"].dtype == torch.float32
    assert out["acc"].item() == pytest.approx(want)
    assert out["per_class"].shape == (5,)
    assert out["per_class"].tolist() == pytest.approx(per_class)


def test_accuracy_ties_count_as_wrong_like_caffe():
    """Caffe counts a class tied with the label as a better prediction, so constant scores
    (a dead net) score 0, not 100%."""
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [0.0, 0.0, 0.0], [3.0, 3.0, 1.0]])
    label = torch.tensor([1, 1, 2, 0])
    net = accuracy_net({"x": "[3]", "label": INT_LABEL}, "top: [acc, per_class]")
    out = net(x=x, label=label)
    assert out["acc"].item() == 0.0 and out["per_class"].tolist() == [0.0, 0.0, 0.0]
    assert out["acc"].item() == caffe_accuracy(x, label)[0]
    top2 = accuracy_net({"x": "[3]", "label": INT_LABEL}, "top_k: 2")(x=x, label=label)["acc"].item()
    assert top2 == caffe_accuracy(x, label, 2)[0] == 0.75  # only the three-way tie misses the top 2


def test_accuracy_dense_and_last_axis():
    torch.manual_seed(1)
    x, label = torch.randn(2, 4, 3, 3), torch.randint(0, 4, (2, 3, 3))
    label[0, 0] = 255
    net = accuracy_net({"x": "[4, 3, 3]", "label": "{shape: [3, 3], dtype: int64}"}, "ignore_label: 255")
    assert net(x=x, label=label)["acc"].item() == pytest.approx(caffe_accuracy(x, label, ignore=255)[0])
    net = accuracy_net({"x": "[4, 3, 3]", "label": "{shape: [1, 3, 3], dtype: int64}"}, "ignore_label: 255")
    assert net(x=x, label=label[:, None])["acc"].item() == pytest.approx(caffe_accuracy(x, label, ignore=255)[0])
    x, label = torch.randn(3, 6, 4), torch.randint(0, 4, (3, 6))
    net = accuracy_net({"x": "[6, 4]", "label": "{shape: [6], dtype: int64}"}, "axis: -1, top_k: 2")
    assert net(x=x, label=label)["acc"].item() == pytest.approx(caffe_accuracy(x, label, 2, axis=2)[0])


def test_accuracy_all_ignored_is_zero_and_not_a_loss():
    net = accuracy_net({"x": "[3]", "label": INT_LABEL}, "ignore_label: 0, top: [acc, per_class]")
    x = torch.randn(4, 3, requires_grad=True)
    out = net(x=x, label=torch.zeros(4, dtype=torch.long))
    assert out["acc"].item() == 0.0 and out["per_class"].tolist() == [0.0, 0.0, 0.0]
    assert not out["acc"].requires_grad
    assert net.loss_weights == {}
    with pytest.raises(ConfigErrors, match="has no loss"):
        net.loss(out)


def test_accuracy_infer_matches_forward():
    for inputs, layer in [
        ({"x": "[5]", "label": INT_LABEL}, ""),
        ({"x": "[5]", "label": INT_LABEL}, "top: [a, b]"),
        ({"x": "[3, 2, 2]", "label": "{shape: [2, 2], dtype: int64}"}, "top: [a, b], top_k: 2"),
    ]:
        net = accuracy_net(inputs, layer)
        feed = {"x": torch.randn(2, *net.graph.inputs["x"].shape),
                "label": torch.randint(0, 2, (2, *net.graph.inputs["label"].shape))}
        out = net(**feed)
        for top in net.outputs:
            assert tuple(out[top].shape) == net.graph.blobs[top].shape


def test_accuracy_errors():
    msg = error({"x": "[5]", "label": INT_LABEL}, "top_k: 6")
    assert "layers[0].top_k" in msg and "top_k 6 is larger than the 5 classes" in msg
    msg = error({"x": "[5, 4]", "label": "{shape: [5], dtype: int64}"})
    assert "label shape [5]" in msg and "scores shape [5, 4]" in msg and "expected [4]" in msg
    assert "integer class indices" in error({"x": "[5]", "label": "[]"})
    assert "makes 1 to 2 top(s), got 3" in error({"x": "[5]", "label": INT_LABEL}, "top: [a, b, c]")
    with pytest.raises(ConfigErrors, match="top_k"):
        spec({"x": "[5]", "label": INT_LABEL}, "top_k: 0")
