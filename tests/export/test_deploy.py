"""The deploy form: losses, metrics and label inputs left out, outputs picked, layers kept by name."""

from __future__ import annotations

import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.exporting import DeployModule, deploy_form
from netcfg.net import Net, load_net
from tests.export.helpers import ROOT, spec_of

LENET = ROOT / "configs" / "lenet.yaml"

# Caffe's habits in one net: a TRAIN-only data-side layer, a label reshaped for the loss,
# an auxiliary head with its own loss, and a Silence for a blob nobody reads.
TWO_HEADS = """
name: TwoHeads
inputs:
  data: [3, 8, 8]
  label: {shape: [], dtype: int64}
  weight: [1]
layers:
  - {name: noise, type: Dropout, dropout_ratio: 0.1, top: data, include: {phase: TRAIN}}
  - {name: conv, type: Convolution, num_output: 4, kernel_size: 3}
  - {name: relu, type: ReLU, top: conv}
  - {name: aux, type: InnerProduct, bottom: conv, num_output: 5}
  - {name: label_vec, type: Reshape, bottom: label, shape: [1]}
  - {name: aux_loss, type: SoftmaxWithLoss, bottom: [aux, label_vec], loss_weight: 0.3}
  - {name: main, type: InnerProduct, bottom: conv, num_output: 5}
  - {name: spare, type: Split, bottom: main, top: [main_a, main_b]}
  - {name: quiet, type: Silence, bottom: [main_b, weight]}
  - {name: loss, type: SoftmaxWithLoss, bottom: [main_a, label]}
  - {name: accuracy, type: Accuracy, bottom: [main_a, label], include: {phase: TEST}}
"""


def test_lenet_deploy_form_drops_loss_accuracy_and_label():
    d = deploy_form(load_net(LENET))
    assert d.inputs == ["data"]
    assert d.outputs == ["ip2"]
    assert d.dropped == {"loss": "SoftmaxWithLoss", "accuracy": "Accuracy"}
    assert d.unused_inputs == ["label"]
    assert [n.name for n in d.graph.nodes] == ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2"]
    out = Net(d.graph)(data=torch.randn(3, 1, 28, 28))
    assert list(out) == ["ip2"] and out["ip2"].shape == (3, 10)


def test_predictions_of_every_loss_become_outputs_and_label_side_layers_go():
    d = deploy_form(spec_of(TWO_HEADS))
    assert d.outputs == ["aux", "main_a"]
    assert d.inputs == ["data"]  # label only fed losses; weight only a Silence
    assert set(d.dropped) == {"aux_loss", "loss", "accuracy", "quiet"}
    assert "label_vec" in d.pruned  # reshaped the label for nobody but a loss
    assert "noise" not in [n.name for n in d.graph.nodes]  # a TRAIN-only layer


def test_deploy_config_is_explicit_and_phase_free():
    d = deploy_form(spec_of(TWO_HEADS))
    for layer in d.config["layers"]:
        assert "include" not in layer and "exclude" not in layer
        assert layer["bottom"] and layer["top"]  # "previous layer's top" would shift once layers are gone
    assert list(d.config["inputs"]) == ["data"]
    # the same layers in either phase: it is the net that ships
    assert [n.name for n in deploy_form(d.spec, "TRAIN").graph.nodes] == [n.name for n in d.graph.nodes]


def test_train_phase_deploy_keeps_train_only_layers():
    d = deploy_form(spec_of(TWO_HEADS), "TRAIN")
    assert "noise" in [n.name for n in d.graph.nodes]
    assert "accuracy" not in d.dropped  # it is TEST-only


def test_chosen_outputs_may_be_read_later_and_prune_the_rest():
    d = deploy_form(load_net(LENET), outputs=["ip1", "pool1"])
    assert d.outputs == ["ip1", "pool1"]
    assert "ip2" in d.pruned
    out = Net(d.graph)(data=torch.randn(2, 1, 28, 28))
    assert out["ip1"].shape == (2, 500) and out["pool1"].shape == (2, 20, 12, 12)
    assert (out["ip1"] >= 0).all()  # relu1 is in place on ip1: the output is its final value


@pytest.mark.parametrize("top, message", [
    ("ip3", "output 'ip3' is not the top of any layer in phase TEST (did you mean 'ip2'?"),
    ("loss", "output 'loss' is the top of a loss or metric in phase TEST, which the deploy net leaves out"),
    ("label", "output 'label' is an input of the net; outputs are tops of layers"),
])
def test_bad_output_names_are_errors_with_choices(top, message):
    with pytest.raises(ConfigErrors) as e:
        deploy_form(load_net(LENET), outputs=[top])
    assert message in e.value.render()
    assert e.value.render().startswith("--top: error:")


def test_a_net_of_only_losses_has_no_deploy_form():
    spec = spec_of({"name": "L", "inputs": {"a": [3], "b": [3]},
                    "layers": [{"name": "l2", "type": "EuclideanLoss", "bottom": ["a", "b"]}]})
    with pytest.raises(ConfigErrors, match="has no outputs: every layer of phase TEST is a loss or a metric"):
        deploy_form(spec)


def test_deploy_module_takes_positional_inputs_and_keeps_weight_names():
    d = deploy_form(spec_of(TWO_HEADS))
    net = Net(d.graph)
    module = DeployModule(net)
    assert sorted(module.state_dict()) == sorted(net.state_dict())  # conv.weight, not net.conv.weight
    x = torch.randn(2, 3, 8, 8)
    aux, main = module(x)
    want = net(data=x)
    assert torch.equal(aux, want["aux"]) and torch.equal(main, want["main_a"])
    as_dict = DeployModule(net, as_dict=True)(x)
    assert list(as_dict) == ["aux", "main_a"]
