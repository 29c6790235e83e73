"""``netcfg time``: every layer timed, totals that add up, and a layer-wise backward that is the real one."""

from __future__ import annotations

import json

import pytest
import torch

from netcfg.net import Net, build_graph
from netcfg.net.spec import load_net
from netcfg.tools.timing import _Clock, layerwise_pass, synthetic_inputs, time_net
from tests.cli import run_cli
from tests.tools import RESNET, ROOT

DIGITS_LAYERS = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "ip1", "relu3", "drop1", "ip2", "loss"]


def time_json(*args: str) -> dict:
    result = run_cli("time", *args, "--json", "--iterations", "3", "--warmup", "1")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_json_lists_every_layer_with_numbers_and_consistent_totals():
    t = time_json(str(ROOT / "solvers" / "digits.yaml"))
    assert [x["name"] for x in t["layers"]] == DIGITS_LAYERS
    assert t["batch_size"] == 32 and t["device"] == "cpu"  # the solver's train batch size
    for x in t["layers"]:
        assert x["forward_ms"] > 0, x
        assert x["backward_ms"] is not None and x["backward_ms"] > 0, x  # every layer is on the loss's path
        assert x["total_ms"] == pytest.approx(x["forward_ms"] + x["backward_ms"])
    sums = t["layer_sum"]
    assert sums["forward_ms"] == pytest.approx(sum(x["forward_ms"] for x in t["layers"]))
    assert sums["backward_ms"] == pytest.approx(sum(x["backward_ms"] for x in t["layers"]))
    assert sums["total_ms"] == pytest.approx(sums["forward_ms"] + sums["backward_ms"])
    assert sum(x["share"] for x in t["layers"]) == pytest.approx(1.0)
    whole = t["whole_net"]
    assert whole["forward_backward_ms"] == pytest.approx(whole["forward_ms"] + whole["backward_ms"])
    assert whole["images_per_s"] == pytest.approx(32 / whole["forward_backward_ms"] * 1000)


def test_layers_without_a_gradient_have_no_backward(tmp_path):
    net = tmp_path / "res.yaml"
    net.write_text(RESNET)
    t = time_json(str(net), "--phase", "TEST", "--batch-size", "4")
    by_name = {x["name"]: x for x in t["layers"]}
    assert set(by_name) == {"stem.conv", "stem.bn", "stem.relu", "stage1.block1", "stage2.block1", "pool", "fc",
                            "loss", "accuracy"}
    assert by_name["accuracy"]["backward_ms"] is None  # argmax: no gradient reaches it
    assert by_name["stage1.block1"]["backward_ms"] > 0
    assert t["batch_size"] == 4


def test_table_is_sorted_slowest_first_and_names_the_throughput():
    result = run_cli("time", str(ROOT / "configs" / "lenet.yaml"), "-n", "2", "--warmup", "0", "-b", "8")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layer")) + 2
    rows = lines[start:start + 8]
    assert sorted(r.split()[0] for r in rows) == sorted(["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss"])
    totals = [float(r.split()[4]) for r in rows]
    assert totals == sorted(totals, reverse=True)
    assert "batch 8 on cpu" in lines[0]
    assert "images/s" in lines[-1]


def test_layerwise_backward_computes_the_same_gradients_as_autograd(tmp_path):
    """The per-layer backward is honest: run layer by layer, it produces exactly the
    parameter gradients of one ordinary loss.backward()."""
    (tmp_path / "res.yaml").write_text(RESNET)
    torch.manual_seed(0)
    net = Net(build_graph(load_net(tmp_path / "res.yaml"), "TRAIN"))
    inputs = synthetic_inputs(net.graph, 6, torch.device("cpu"))
    inputs["label"] = torch.arange(6) % 10
    net.loss(net(**inputs)).backward()
    expected = {k: p.grad.clone() for k, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    fwd, bwd = layerwise_pass(net, inputs, _Clock(torch.device("cpu")))
    assert len(fwd) == len(bwd) == len(net.graph.nodes)
    for k, p in net.named_parameters():
        torch.testing.assert_close(p.grad, expected[k], msg=f"gradient of {k}")


def test_a_net_without_a_loss_is_timed_forward_only(tmp_path):
    net = tmp_path / "noloss.yaml"
    net.write_text("name: Fwd\ninputs: {data: [4]}\nlayers:\n  - {name: ip, type: InnerProduct, num_output: 3}\n")
    timing = time_net(Net(build_graph(load_net(net))), 2, iterations=2, warmup=0)
    assert timing.net_backward_ms is None and timing.layers[0].backward_ms is None
    assert timing.images_per_s > 0
    result = run_cli("time", str(net), "-n", "1", "--warmup", "0")
    assert result.exit_code == 0 and "forward only" in result.stdout


def test_bf16_autocast_is_timed_and_reported():
    t = time_json(str(ROOT / "configs" / "digits_cnn.yaml"), "--precision", "bf16", "-b", "4")
    assert t["precision"] == "bf16" and len(t["layers"]) == len(DIGITS_LAYERS)


def test_bad_device_and_phase_are_errors():
    result = run_cli("time", str(ROOT / "configs" / "lenet.yaml"), "--device", "tpu")
    assert result.exit_code == 2 and "--device" in result.stderr
    result = run_cli("time", str(ROOT / "configs" / "lenet.yaml"), "--phase", "VAL")
    assert result.exit_code == 2 and "TRAIN or TEST" in result.stderr
    result = run_cli("time", str(ROOT / "configs" / "lenet.yaml"), "--precision", "fp16", "--device", "cpu")
    assert result.exit_code == 2 and "fp16 autocast needs a CUDA device" in result.stderr


def test_a_batch_too_small_for_batchnorm_statistics_is_an_error(tmp_path):
    net = tmp_path / "bn.yaml"
    net.write_text("name: bn\ninputs: {data: [6]}\nlayers:\n  - {name: ip, type: InnerProduct, num_output: 4}\n"
                   "  - {name: bn, type: BatchNorm}\n")
    result = run_cli("time", str(net), "-b", "1", "-n", "1", "--warmup", "0")
    assert result.exit_code == 2, result.stderr
    assert ("--batch-size: error: batch 1 is too small: layer 'bn' (BatchNorm) needs at least 2 samples a batch in "
            "TRAIN (batch statistics of its [4] input)") in result.stderr
    assert run_cli("time", str(net), "-b", "1", "-n", "1", "--warmup", "0", "--phase", "TEST").exit_code == 0


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_allocating(tmp_path):
    net = tmp_path / "big.yaml"
    net.write_text("name: big\ninputs: {x: [3, 10000, 10000]}\nlayers:\n  - {name: r, type: ReLU}\n")
    result = run_cli("time", str(net), "-b", "64")
    assert result.exit_code == 2, result.stderr
    assert "--batch-size: error: a train batch of 64 needs about 286.1 GiB" in result.stderr


def test_a_one_channel_image_net_trains_channels_last(tmp_path):
    """A one-conv net over MNIST-like one-channel images was left NCHW by memory_format: auto
    (every convolution reads one channel, as TextCNN's do), though its step is 1.3x faster in
    NHWC on CPU: only a one-channel input that needs its gradient (TextCNN's embedded sentence)
    is slow there. Embed's output, then, but not an image."""
    from netcfg.net import build_net
    from netcfg.solver.layout import use_channels_last

    net = tmp_path / "one_conv.yaml"
    net.write_text("name: one_conv\ninputs: {data: [1, 28, 28], label: {shape: [], dtype: int64}}\nlayers:\n"
                   "  - {name: conv1, type: Convolution, bottom: data, num_output: 8, kernel_size: 5}\n"
                   "  - {name: ip, type: InnerProduct, num_output: 10}\n"
                   "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}\n")
    assert use_channels_last("auto", build_net(net))
    assert not use_channels_last("auto", build_net(ROOT / "configs" / "text_cnn.yaml"))
    assert use_channels_last("auto", build_net(ROOT / "configs" / "text_cnn.yaml", overrides=["layers.embed.param=[{lr_mult: 0}]"]))


def test_a_conv_net_is_timed_in_the_layout_it_trains_in():
    """Training runs a conv net channels_last (memory_format: auto), 1.2-1.6x faster on CPU;
    `time` timed it in NCHW, so its images/s were not a training step's."""
    t = time_json(str(ROOT / "solvers" / "digits.yaml"))
    assert t["memory_format"] == "channels_last"
    assert time_json(str(ROOT / "solvers" / "digits.yaml"), "--set", "memory_format=contiguous")["memory_format"] == "contiguous"
    assert time_json(str(ROOT / "configs" / "mlp.yaml"), "-b", "2")["memory_format"] == "contiguous"  # nothing to gain
    # every convolution reads the one-channel sentence: NHWC trained it 7x slower on CPU
    assert time_json(str(ROOT / "configs" / "text_cnn.yaml"), "-b", "2")["memory_format"] == "contiguous"
    net = Net(build_graph(load_net(ROOT / "configs" / "digits_cnn.yaml")))
    seen = []
    net.conv2.register_forward_hook(lambda m, args, out: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    time_net(net, 4, iterations=1, warmup=0, channels_last=True)
    assert seen and all(seen)  # the layer-wise and the whole-net passes both
