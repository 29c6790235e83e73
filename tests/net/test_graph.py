"""Graph semantics (Caffe's): phases and stages, wiring, in place, fan-out, outputs, sharing."""

import pytest
import torch

from netcfg.errors import ConfigError, ConfigErrors
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml

NET = """\
name: t
inputs:
  x: [4]
  label: {shape: [], dtype: int64}
layers:
  - {name: a, type: InnerProduct, bottom: x, num_output: 3}
  - {name: relu, type: ReLU, bottom: a, top: a}
  - {name: b, type: InnerProduct, bottom: a, num_output: 2}
  - {name: c, type: InnerProduct, bottom: a, num_output: 2, include: {phase: TEST}}
  - {name: d, type: InnerProduct, bottom: a, num_output: 2, include: {stage: extra}}
  - {name: e, type: InnerProduct, bottom: a, num_output: 2, exclude: {stage: extra}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [b, label]}
"""


def spec(text=NET):
    return net_from_source(parse_yaml(text))


def test_phase_and_stage_rules_pick_layers():
    names = lambda g: [n.name for n in g.nodes]  # noqa: E731
    assert names(build_graph(spec(), "TRAIN")) == ["a", "relu", "b", "e", "loss"]
    assert names(build_graph(spec(), "TEST")) == ["a", "relu", "b", "c", "e", "loss"]
    assert names(build_graph(spec(), "TRAIN", ["extra"])) == ["a", "relu", "b", "d", "loss"]


def test_a_stage_no_rule_names_is_an_error_with_the_nearest_stage():
    # Caffe builds the net without complaint: a typo ('extar') silently builds another net
    assert spec().stage_names() == {"extra"}
    assert spec().stage_error(["extra"], "test_stages") is None
    err = spec().stage_error(["extra", "extar"], "test_stages")
    assert err.path == ("test_stages", 1)
    assert "stage 'extar' is named by no include/exclude rule of net 't'" in err.message
    assert err.hint.startswith("did you mean 'extra'?")
    bare = spec(NET.replace(", include: {stage: extra}", "").replace(", exclude: {stage: extra}", ""))
    err = bare.stage_error(["extra"], "--stage")
    assert err.file == "--stage" and "name no stage" in err.hint


def test_outputs_are_the_tops_nobody_reads_and_losses_are_weighted():
    g = build_graph(spec(), "TEST")
    assert g.outputs == ["c", "e", "loss"]
    assert g.losses == {"loss": 1.0}


def test_in_place_rebinding_and_fan_out_gradients_add():
    net = build_net(spec(), "TEST")
    x = torch.randn(5, 4, requires_grad=True)
    out = net(x=x, label=torch.zeros(5, dtype=torch.long))
    assert torch.all(out["c"] == net.c(torch.relu(net.a(x))))  # ReLU applied before the readers
    (out["c"].sum() + out["e"].sum()).backward()
    assert net.a.weight.grad is not None and net.b.weight.grad is None


def test_a_missing_input_names_it_and_the_nearest_given_one():
    net = build_net(spec())
    with pytest.raises(TypeError, match=r"net 't' needs the input\(s\) 'label'; given: \['labels', 'x'\] \(did you mean 'labels'\?\)"):
        net(x=torch.randn(3, 4), labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"needs the input\(s\) 'x', 'label'; given: none$"):
        net()


@pytest.mark.parametrize("x, label, error, message", [
    (torch.randn(3, 5), torch.zeros(3, dtype=torch.long), ValueError,
     "net 't': input 'x' has shape [3, 5], but the net declares [4] per sample, so a batch of N is [N, 4]"),
    (torch.randn(4), torch.zeros((), dtype=torch.long), ValueError, "input 'x' has shape [4], but the net declares [4]"),
    (torch.randn(3, 4), torch.zeros(3), ValueError, "input 'label' is float32, but the net declares int64 (x.to(torch.int64))"),
    (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, dtype=torch.long), ValueError, "input 'x' is int64, but the net declares float32"),
    (torch.randn(3, 4).numpy(), torch.zeros(3, dtype=torch.long), TypeError, "must be a torch.Tensor, got ndarray (torch.from_numpy"),
])
def test_a_wrong_input_tensor_is_named_before_any_layer_runs(x, label, error, message):
    """Not torch's "mat1 and mat2 shapes cannot be multiplied" from inside a layer, nor a float
    label silently read as class probabilities."""
    with pytest.raises(error) as e:
        build_net(spec())(x=x, label=label)
    assert message in str(e.value)


def test_loss_weight_scales_a_top_into_the_total_loss():
    text = NET.replace("bottom: [b, label]}", "bottom: [b, label], loss_weight: 0.5}").replace(
        "num_output: 2, exclude", "num_output: 2, loss_weight: 2, exclude")
    net = build_net(spec(text))
    out = net(x=torch.randn(3, 4), label=torch.zeros(3, dtype=torch.long))
    assert torch.allclose(net.loss(out), 0.5 * out["loss"] + 2 * out["e"].sum())


@pytest.mark.parametrize("layer, why", [
    ("{name: w, type: ArgMax, bottom: b, loss_weight: WEIGHT}", "top 0 is int64 (shape [1, 1]), which carries no gradient"),
    ("{name: w, type: Accuracy, bottom: [b, label], loss_weight: WEIGHT}", "no gradient flows back through Accuracy"),
    ("{name: w, type: Threshold, bottom: b, loss_weight: WEIGHT}", "no gradient flows back through Threshold"),
])
def test_loss_weight_on_a_top_without_gradient_is_refused(layer, why):
    """Caffe refuses to backpropagate through these; netcfg added a constant to the loss, or,
    with no other loss, failed in backward ('element 0 of tensors does not require grad')."""
    text = NET.replace("  - {name: loss,", f"  - {layer}\n  - {{name: loss,")
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(text.replace("WEIGHT", "0.5")))
    assert f"loss_weight 0.5 on a top that cannot be learned from: {why}" in str(e.value)
    assert "layers[6].loss_weight" in e.value.render()
    build_graph(spec(text.replace("WEIGHT", "0")))  # a zero weight stays allowed


def test_loss_weight_on_a_float16_top_sums_in_float32():
    """Caffe sums a weighted top in float: 32 x 4096 ones sum past float16's 65504 (inf before)."""
    text = "name: t\ninputs: {x: {shape: [4096], dtype: float16}}\nlayers:\n" \
           "  - {name: act, type: AbsVal, bottom: x, loss_weight: 0.001}\n"
    net = build_net(spec(text))
    loss = net.loss(net(x=torch.ones(32, 4096, dtype=torch.float16)))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, torch.tensor(131.072))


def test_shared_param_names_tie_tensors_and_count_once():
    text = """\
name: t
inputs: {x: [4]}
layers:
  - {name: p, type: InnerProduct, bottom: x, num_output: 4, param: [{name: w}, {name: bias}]}
  - {name: q, type: InnerProduct, bottom: p, num_output: 4, param: [{name: w}, {name: bias}]}
"""
    net = build_net(spec(text))
    assert net.p.weight is net.q.weight
    assert net.graph.total_params == 4 * 4 + 4
    assert len(net.param_infos()) == 2


def test_shared_param_shape_mismatch_is_located():
    text = """\
name: t
inputs: {x: [4]}
layers:
  - {name: p, type: InnerProduct, bottom: x, num_output: 3, param: {name: w}}
  - {name: q, type: InnerProduct, bottom: p, num_output: 3, param: {name: w}}
"""
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(text))
    assert "<string>:5:68: error: layers[1].param:" in e.value.render()
    assert "shared param 'w' has shape [3, 3] here but [3, 4] in layer 'p'" in e.value.render()


SHARED_MULTS = """\
name: t
inputs: {x: [4]}
layers:
  - {name: p, type: InnerProduct, bottom: x, num_output: 4, param: [{name: w%s}]}
  - {name: q, type: InnerProduct, bottom: p, num_output: 4, param: [{name: w%s}]}
"""


@pytest.mark.parametrize("first, second, words", [
    ("", ", lr_mult: 2", "5:88: error: layers[1].param[0].lr_mult: InnerProduct layer 'q': shared param 'w' has "
                         "lr_mult 2 here but 1 (the default) in layer 'p', which declares it first"),
    (", decay_mult: 0", ", decay_mult: 1", "layers[1].param[0].decay_mult: InnerProduct layer 'q': shared param 'w' "
                                           "has decay_mult 1 here but 0 in layer 'p'"),
])
def test_a_shared_param_with_another_lr_mult_or_decay_mult_is_refused(first, second, words):
    # it trained at the first layer's multipliers, the second's silently ignored (Caffe refuses it too)
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(SHARED_MULTS % (first, second)))
    assert words in e.value.render()


def test_a_shared_param_may_repeat_its_multipliers_or_leave_them_out():
    for first, second in ((", lr_mult: 2, decay_mult: 0", ", lr_mult: 2, decay_mult: 0"), (", lr_mult: 2", "")):
        net = build_net(spec(SHARED_MULTS % (first, second)))
        assert [(i.name, i.lr_mult) for i in net.param_infos()] == [("p.weight", 2), ("p.bias", 1), ("q.bias", 1)]


def test_dotted_names_nest_modules_and_name_parameters():
    text = "name: t\ninputs: {x: [4]}\nlayers:\n  - {name: stage1.block1.fc, type: InnerProduct, num_output: 2}\n"
    net = build_net(spec(text))
    assert [k for k, _ in net.named_parameters()] == ["stage1.block1.fc.weight", "stage1.block1.fc.bias"]
    assert net(x=torch.randn(2, 4))["stage1.block1.fc"].shape == (2, 2)


def test_a_layer_may_be_named_like_a_module_attribute():
    text = "name: t\ninputs: {x: [4]}\nlayers:\n  - {name: forward, type: InnerProduct, num_output: 2}\n"
    net = build_net(spec(text))
    assert net(x=torch.randn(1, 4))["forward"].shape == (1, 2)


def test_parameters_that_could_not_fit_in_memory_are_refused_at_check_time():
    text = "name: huge\ninputs: {x: [200000]}\nlayers:\n  - {name: fc, type: InnerProduct, num_output: 200000}\n"
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(text))  # 4e10 parameters: counted on the meta device, nothing allocated
    msg = e.value.render()
    assert "<string>:4:5: error: layers[0]:" in msg and "40,000,200,000 parameters" in msg and "GiB" in msg


def test_one_error_per_mistake_downstream_layers_stay_quiet():
    text = NET.replace("bottom: x, num_output: 3", "bottom: y, num_output: 3")
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(text))
    assert len(e.value.errors) == 1 and "bottom 'y' is not an input" in e.value.render()


def test_layers_without_bottoms_after_a_failed_layer_stay_quiet():
    # each layer reads the previous top implicitly; after conv fails, the ReLU and the second conv
    # must read its (unknown) top, not fall back to the input and fail again
    text = """\
name: chain
inputs: {x: [8]}
layers:
  - {name: conv, type: Convolution, num_output: 2, kernel_size: 3}
  - {name: relu, type: ReLU}
  - {name: conv2, type: Convolution, num_output: 2, kernel_size: 1}
"""
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(text))
    assert len(e.value.errors) == 1 and "Convolution layer 'conv'" in e.value.render()


def test_trainable_params_count_each_blob_by_its_lr_mult():
    # a layer with one frozen blob is not all trainable; a Residual body's lr_mult counts too
    text = """name: frz
inputs: {x: [4, 6, 6]}
layers:
  - {name: a, type: Convolution, num_output: 4, kernel_size: 3, pad: 1, param: [{lr_mult: 0}, {lr_mult: 1}]}
  - name: res
    type: Residual
    body:
      - {name: c, type: Convolution, num_output: 4, kernel_size: 3, pad: 1, param: [{lr_mult: 0}, {lr_mult: 0}]}
      - {name: bn, type: BatchNorm}
  - {name: b, type: InnerProduct, num_output: 3, param: [{name: shared_w, lr_mult: 0}]}
  - {name: b2, type: InnerProduct, bottom: res, num_output: 3, param: [{name: shared_w}]}
"""
    graph = build_graph(spec(text))
    net = build_net(spec(text))
    params = {id(p): p for p in net.parameters()}.values()  # a shared blob once
    assert graph.total_params == sum(p.numel() for p in params) == 148 + 156 + 435 + 3  # b2 adds its bias only
    assert graph.trainable_params == sum(p.numel() for p in params if p.requires_grad) == 4 + 8 + 3 + 3  # biases and the BatchNorm


@pytest.mark.parametrize("first, second", [("a.b", "a"), ("a", "a.b.c")])
def test_a_layer_named_like_another_layers_scope_is_an_error(first, second):
    # Net nests "a.b" inside module "a": one of the two would lose its weights in the state_dict
    text = (f"name: x\ninputs: {{x: [3]}}\nlayers:\n  - {{name: {first}, type: InnerProduct, num_output: 3}}\n"
            f"  - {{name: {second}, type: InnerProduct, num_output: 2}}\n")
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(text))
    assert f"layers[1].name: layer name '{second}' and layer '{first}' nest into each other" in str(e.value)


@pytest.mark.parametrize("phase", ["VAL", None, "tset"])
def test_the_phase_must_be_train_or_test(phase):
    with pytest.raises(ConfigError, match="phase must be TRAIN or TEST"):
        build_graph(spec(), phase)
    with pytest.raises(ConfigError, match="phase must be TRAIN or TEST"):
        build_net(spec(), phase)


def test_an_input_larger_than_memory_or_int32_is_refused_at_check():
    text = "name: h\ninputs: {x: [3, 1000000, 1000000]}\nlayers:\n  - {name: r, type: ReLU}\n"
    with pytest.raises(ConfigErrors, match=r"inputs.x: one sample of input 'x' \(3 x 1000000 x 1000000 float32\) is "
                                           r"11,175.9 GiB, more than this machine's"):
        build_graph(spec(text))
    with pytest.raises(ConfigErrors, match="less than or equal to 2147483647"):
        spec(text.replace("[3, 1000000, 1000000]", "[100000000000000000000000, 3]"))


def test_a_batch_mean_feeds_only_layers_that_take_one():
    # a loss or metric top has no batch axis: a per-sample layer on it passed check and crashed at run time
    head = "name: m\ninputs: {x: [5], y: {shape: [], dtype: int64}}\nlayers:\n"
    bad = head + ("  - {name: loss, type: SoftmaxWithLoss, bottom: [x, y]}\n"
                  "  - {name: r, type: Reshape, shape: [1]}\n  - {name: cat, type: Concat, bottom: [x, r]}\n")
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(bad))
    assert str(e.value).count("error:") == 1  # the Concat after it is not reported again
    assert "layers[1]: bottom 'loss' is a mean over the batch, made by layer 'loss' (it has no batch axis); " \
           "Reshape works on per-sample blobs" in str(e.value)
    good = head + ("  - {name: a, type: SoftmaxWithLoss, bottom: [x, y], loss_weight: 0}\n"
                   "  - {name: b, type: SoftmaxWithLoss, bottom: [x, y], loss_weight: 0}\n"
                   "  - {name: total, type: Eltwise, bottom: [a, b], loss_weight: 1}\n"
                   "  - {name: acc, type: Accuracy, bottom: [x, y]}\n  - {name: quiet, type: Silence, bottom: acc}\n")
    net = build_net(spec(good))
    x, y = torch.randn(4, 5), torch.randint(0, 5, (4,))
    torch.testing.assert_close(net.loss(net(x=x, y=y)), 2 * torch.nn.functional.cross_entropy(x, y))


def test_a_bottom_whose_layer_the_phase_leaves_out_says_so():
    text = ("name: n\ninputs: {x: [3]}\nlayers:\n  - {name: a, type: InnerProduct, num_output: 2, include: {phase: TRAIN}}\n"
            "  - {name: b, type: ReLU, bottom: a, loss_weight: .nan}\n")
    with pytest.raises(ConfigErrors, match=r"loss_weight: input should be a finite number"):
        spec(text)
    with pytest.raises(ConfigErrors) as e:
        build_graph(spec(text.replace(", loss_weight: .nan", "")), "TEST")
    assert "layers[1].bottom: bottom 'a' is made by layer 'a', which is not in phase TEST" in str(e.value)
