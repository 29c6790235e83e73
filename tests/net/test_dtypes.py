"""Input dtypes end to end: a net whose inputs are declared float64 (or bfloat16) is built,
trained, tested, loaded and exported in that dtype, as its shape table says; a float input
of another dtype than the weights is named with its cast; integer and uint8 inputs where a
layer computes with real numbers are check-time errors naming the layer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from netcfg.cli.app import app
from netcfg.errors import ConfigErrors
from netcfg.exporting.load import load_net_with_weights
from netcfg.layers._registry import registry
from netcfg.net import Net, build_graph
from netcfg.net.spec import net_from_source
from netcfg.solver import Solver
from netcfg.solver.check import checked_loader
from netcfg.solver.spec import load_solver
from netcfg.source import parse_yaml
from tests.solver.test_runner import MLP, solve, write_solver
from tests.test_registry import check_outputs, make_inputs, net_doc

MLP64 = MLP.replace("data: [1, 8, 8]", "data: {shape: [1, 8, 8], dtype: float64}")


def retyped(example: dict, dtype: str) -> dict | None:
    """The example with every float32 input declared ``dtype`` (None if it has none)."""
    ex = copy.deepcopy(example)
    changed = False
    for name, declared in ex["inputs"].items():
        if isinstance(declared, list):
            ex["inputs"][name], changed = {"shape": declared, "dtype": dtype}, True
        elif declared.get("dtype", "float32") == "float32":
            declared["dtype"], changed = dtype, True
    return ex if changed else None


CASES = [pytest.param(t, i, d, id=f"{t}-{i}-{d}") for d in ("float64", "bfloat16")
         for t, cls in registry().items() for i, ex in enumerate(cls.examples) if retyped(ex, d)]


@pytest.mark.parametrize(("type_name", "index", "dtype"), CASES)
def test_every_layer_runs_in_the_dtype_its_input_is_declared(type_name, index, dtype):
    """Was: torch's "mat1 and mat2 must have the same dtype" in every layer with weights
    (InnerProduct, Convolution, PReLU, BatchNorm, LayerNorm, LSTM...), float32 weights
    meeting a float64 input."""
    doc = net_doc(type_name, retyped(registry()[type_name].examples[index], dtype))
    graph = build_graph(net_from_source(parse_yaml(yaml.safe_dump(doc, sort_keys=False))), "TRAIN")
    net = Net(graph)
    for name, p in net.named_parameters():
        assert p.dtype == getattr(torch, dtype), f"{name} is {p.dtype}, the input is declared {dtype}"
    outputs = net(**make_inputs(graph))
    check_outputs(graph, outputs)
    live = [t for t in outputs.values() if t.is_floating_point() and t.requires_grad]
    if live:
        sum(t.float().sum() for t in live).backward()


def test_a_float_input_of_another_dtype_than_the_weights_names_the_cast():
    net = Net(build_graph(net_from_source(parse_yaml(MLP64)), "TEST"))
    label = torch.zeros(2, dtype=torch.long)
    assert net(data=torch.randn(2, 1, 8, 8, dtype=torch.float64), label=label)["accuracy"].shape == ()
    with pytest.raises(ValueError, match=r"input 'data' is float32, but layer 'ip1', which computes with it, "
                                         r"holds float64 weights \(x.to\(torch.float64\)\)"):
        net(data=torch.randn(2, 1, 8, 8), label=label)
    net.float()  # the weights are looked at when called: a cast net takes the cast inputs
    assert net(data=torch.randn(2, 1, 8, 8), label=label)["loss"].dtype == torch.float32


def test_a_float64_net_trains_tests_and_exports_in_float64(tmp_path):
    """Was: `netcfg train` fed the float32 batches the loader makes to float32 weights while
    the shape table said float64, and load_net_with_weights and every export format then
    failed on the float64 inputs the net declares."""
    path = write_solver(tmp_path, MLP64, max_iter=4)
    s = solve(path, tmp_path / "run")
    assert {p.dtype for p in s.net.parameters()} == {torch.float64}
    batch = next(iter(s.train_data.epoch_batches()))
    assert batch["data"].dtype == torch.float64 and batch["label"].dtype == torch.int64
    assert np.isfinite(s.test()["loss"])
    net = load_net_with_weights(tmp_path / "run")
    assert net(data=torch.rand(3, 1, 8, 8, dtype=torch.float64), label=torch.zeros(3, dtype=torch.long))["loss"].dtype \
        == torch.float64
    for fmt in ("torchscript", "pt"):
        out = tmp_path / f"net.{fmt}"
        result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--format", fmt, "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert "[batch, 1, 8, 8] float64" in result.output and out.exists()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_training_16_bit_weights_warns_of_lost_updates_and_names_the_precision_setting(tmp_path, dtype):
    """Was: a net with a bfloat16 input trained bfloat16 weights in silence, where SGD's
    steps below 1/256 of a weight round away (the digits net stayed at chance)."""
    path = write_solver(tmp_path, MLP.replace("data: [1, 8, 8]", f"data: {{shape: [1, 8, 8], dtype: {dtype}}}"),
                        max_iter=1)
    lines: list[str] = []
    Solver(load_solver(path), out=tmp_path / "run", log=lines.append)
    warnings = [line for line in lines if line.startswith("warning:")]
    if dtype == "float64":
        assert warnings == []
    else:
        assert warnings == [f"warning: the net's weights are {dtype}, the dtype of its input 'data': an update "
                            f"smaller than about 1/{'256' if dtype == 'bfloat16' else '2,048'} of a weight rounds "
                            "away, so training can stall; to train in 16 bits declare the inputs float32 and set "
                            "precision: bf16 (fp16 on CUDA), which keeps float32 weights"]


def test_float_arrays_are_delivered_in_the_declared_dtype(tmp_path):
    """Features from an .npz (stored float32 by the source) reach a float64 net as float64,
    cast once when the split is loaded."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "xy.npz", x=rng.normal(size=(40, 5)), y=rng.integers(0, 3, 40))
    (tmp_path / "net.yaml").write_text(
        "name: Reg\ninputs:\n  x: {shape: [5], dtype: float64}\n  y: {shape: [], dtype: int64}\nlayers:\n"
        "  - {name: ip, type: InnerProduct, bottom: x, num_output: 3}\n"
        "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, y]}\n")
    (tmp_path / "solver.yaml").write_text(yaml.safe_dump({
        "net": "net.yaml", "base_lr": 0.1, "max_iter": 2,
        "data": {"train": {"source": "npz", "path": "xy.npz", "split": "train", "batch_size": 8,
                           "arrays": {"x": "x", "y": "y"}}}}))
    spec = load_solver(tmp_path / "solver.yaml")
    loader = checked_loader(spec, "train", build_graph(spec.net_spec, "TRAIN"), torch.device("cpu"))
    assert next(iter(loader.epoch_batches()))["x"].dtype == torch.float64


def test_uint8_images_declared_as_stored_are_refused_at_check_with_the_declaration_to_write():
    doc = MLP.replace("data: [1, 8, 8]", "data: {shape: [1, 8, 8], dtype: uint8}")
    with pytest.raises(ConfigErrors) as e:
        build_graph(net_from_source(parse_yaml(doc, "net.yaml")), "TRAIN")
    msg = str(e.value)
    assert "net.yaml:6:" in msg and "layer 'ip1'" in msg
    assert "declare the input as [1, 8, 8], not uint8" in msg


def test_an_integer_label_into_a_convolution_is_refused_at_check_naming_layer_and_input():
    doc = MLP.replace("bottom: data, num_output: 16", "bottom: label, num_output: 16")
    doc = doc.replace("type: InnerProduct, bottom: label", "type: Convolution, bottom: label, kernel_size: 1")
    with pytest.raises(ConfigErrors) as e:
        build_graph(net_from_source(parse_yaml(doc, "net.yaml")), "TRAIN")
    msg = str(e.value)
    assert "net.yaml:6:" in msg and "Convolution layer 'ip1'" in msg and "label: scalar int64" in msg
    assert "got int64" in msg and "is a label wired in by mistake?" in msg
