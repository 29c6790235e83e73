"""Every format, loaded the way its users load it, computes what the eager TEST net computes."""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open

import netcfg
from netcfg.exporting.deploy import DeployModule
from netcfg.exporting.load import load_weights_into
from netcfg.layers._registry import registry
from netcfg.net import Net
from tests.export.helpers import (
    ROOT,
    examples_net,
    max_diff,
    random_inputs,
    reference,
    spec_of,
    write_weights,
)

NETS = [ROOT / "configs" / "lenet.yaml", ROOT / "configs" / "digits_cnn.yaml"]
FORMATS = ["safetensors", "pt", "torchscript", "exported", "onnx"]
TOL = 1e-4  # max abs diff in fp32
SUFFIX = {"exported": ".pt2"}  # what torch.export.load wants; the others are named after the format


@pytest.fixture(scope="module")
def exported(zoo_weights, tmp_path_factory):
    """(config, format) -> ExportResult, each exported once (unchecked: the tests check)."""
    folder = tmp_path_factory.mktemp("exported")
    done: dict = {}

    def get(config, fmt):
        if (config, fmt) not in done:
            _, weights = zoo_weights(config)
            done[config, fmt] = netcfg.export(config, weights, fmt, folder / f"{config.stem}{SUFFIX.get(fmt, '.' + fmt)}", check=False)
        return done[config, fmt]

    return get


def load_runner(fmt: str, path, config):
    """How a user of each format runs the file: positional/named inputs -> {top: tensor}."""
    if fmt == "safetensors":
        net = netcfg.load_net_with_weights(path)  # the net config travels in the file
        return lambda x: net(**x)
    if fmt == "pt":  # a state_dict: the net comes from its file
        net = netcfg.load_net_with_weights(path, net=config, deploy=True)
        return lambda x: net(**x)
    if fmt == "torchscript":
        module = torch.jit.load(str(path))
        return lambda x: dict(zip(["ip2"], module(x["data"])))
    if fmt == "exported":
        module = torch.export.load(str(path)).module()
        return lambda x: module(x["data"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda x: dict(zip(names, map(torch.from_numpy, session.run(None, {"data": x["data"].numpy()}))))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("config", NETS, ids=lambda p: p.stem)
def test_format_matches_the_eager_net_at_any_batch(config, fmt, zoo_weights, exported):
    spec, weights = zoo_weights(config)
    result = exported(config, fmt)
    assert result.path.is_file() and result.deploy.outputs == ["ip2"]
    run = load_runner(fmt, result.path, config)
    for batch in (1, 5):  # the batch dimension is dynamic
        x = random_inputs(result.deploy.graph, batch, seed=batch)
        want = reference(spec, weights, {**x, "label": torch.zeros(batch, dtype=torch.long)})["ip2"]
        with torch.no_grad():
            got = run(x)["ip2"]
        assert max_diff(got, want) < TOL


def test_export_checks_the_file_itself_and_says_so(zoo_weights, tmp_path):
    config = NETS[0]
    _, weights = zoo_weights(config)
    result = netcfg.export(config, weights, "onnx", tmp_path / "lenet.onnx")
    assert result.checked_batches == (1, 5) and result.max_abs_diff < TOL
    text = "\n".join(result.lines())
    assert "output  ip2 [batch, 10] float32" in text
    assert "left out: loss (SoftmaxWithLoss), accuracy (Accuracy), input label" in text
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed into place


def test_default_output_name_sits_beside_the_weights(zoo_weights, tmp_path):
    config = NETS[1]
    spec, _ = zoo_weights(config)
    weights = write_weights(spec, tmp_path / "digits_iter_500.safetensors")
    names = {fmt: netcfg.export(config, weights, fmt, check=False).path.name for fmt in ("safetensors", "pt")}
    assert names == {"safetensors": "digits_iter_500.deploy.safetensors", "pt": "digits_iter_500.pt"}


def test_fixed_batch_size_makes_static_graphs(zoo_weights, exported, tmp_path):
    config = NETS[0]
    _, weights = zoo_weights(config)
    onnx_path = netcfg.export(config, weights, "onnx", tmp_path / "b3.onnx", batch_size=3).path
    dims = onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 1, 28, 28]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="dimension"):
        session.run(None, {"data": torch.randn(5, 1, 28, 28).numpy()})
    program = torch.export.load(str(netcfg.export(config, weights, "exported", tmp_path / "b3.pt2", batch_size=3).path))
    assert program.module()(torch.randn(3, 1, 28, 28))["ip2"].shape == (3, 10)
    with pytest.raises(AssertionError, match=r"Guard failed: .*size\(\)\[0\] == 3"):
        program.module()(torch.randn(5, 1, 28, 28))
    dynamic = onnx.load(str(exported(config, "onnx").path))
    assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("opset", [11, 20])  # one below 18 (TorchScript-based exporter), one above
def test_opset_is_honoured(opset, zoo_weights, tmp_path):
    config = NETS[0]
    _, weights = zoo_weights(config)
    result = netcfg.export(config, weights, "onnx", tmp_path / "o.onnx", opset=opset)  # checked in onnxruntime
    model = onnx.load(str(result.path))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert result.max_abs_diff < TOL


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_every_file_carries_the_deploy_net_config(zoo_weights, exported):
    config = NETS[0]
    _, weights = zoo_weights(config)
    path = {f: exported(config, f).path for f in FORMATS}
    with safe_open(str(path["safetensors"]), "pt") as f:
        meta = f.metadata()
    props = {p.key: p.value for p in onnx.load(str(path["onnx"])).metadata_props}
    extra = {"netcfg.net.txt": "", "netcfg.export.txt": ""}
    torch.jit.load(str(path["torchscript"]), _extra_files=extra)
    program_extra = {"netcfg.net.txt": "", "netcfg.export.txt": ""}
    torch.export.load(str(path["exported"]), extra_files=program_extra)
    for stored in (meta["netcfg.net"], props["netcfg.net"], extra["netcfg.net.txt"].decode(),
                   program_extra["netcfg.net.txt"]):
        assert "SoftmaxWithLoss" not in stored and "Accuracy" not in stored and "label" not in stored
        assert "name: ip2" in stored
    info = json.loads(props["netcfg.export"])
    assert info["inputs"] == {"data": {"shape": [1, 28, 28], "dtype": "float32"}}
    assert info["outputs"] == ["ip2"] and info["weights"] == weights.name
    state = torch.load(path["pt"], weights_only=True)  # tensors only: no code runs on load
    assert sorted(state) == sorted(netcfg.build_net(config, phase="TEST").state_dict())


def test_load_net_with_weights_round_trip(zoo_weights, tmp_path):
    config = NETS[1]
    spec, weights = zoo_weights(config)
    snapshot_net = netcfg.load_net_with_weights(weights)  # a training snapshot: the whole TEST net
    assert set(snapshot_net.outputs) == {"loss", "accuracy"} and not snapshot_net.training
    deploy = netcfg.load_net_with_weights(weights, deploy=True)
    assert deploy.input_names == ("data",) and deploy.outputs == ("ip2",)
    exported = netcfg.export(weights, None, "safetensors", tmp_path / "d.safetensors").path  # NET = the weights file
    again = netcfg.load_net_with_weights(exported)
    assert again.input_names == ("data",) and again.outputs == ("ip2",) and not again.training
    x = torch.randn(4, 1, 8, 8)
    label = torch.zeros(4, dtype=torch.long)
    assert torch.equal(again(data=x)["ip2"], deploy(data=x)["ip2"])
    assert torch.equal(again(data=x)["ip2"], reference(spec, weights, {"data": x, "label": label})["ip2"])
    from_pt = netcfg.load_net_with_weights(netcfg.export(config, weights, "pt", tmp_path / "d.pt").path, net=config)
    assert torch.equal(from_pt(data=x, label=label)["accuracy"], snapshot_net(data=x, label=label)["accuracy"])


# ------------------------------------------------------------------ every layer type


def every_layer_net() -> dict:
    """One net holding every built-in layer type a deploy net can hold: each type's first
    example, plus every example with a weight_norm or a dtype other than float32."""

    def keep(type_name: str, i: int, example: dict) -> bool:
        special = example.get("weight_norm") or any(isinstance(v, dict) and v.get("dtype", "float32") != "float32"
                                                    for v in example["inputs"].values())
        return not i or bool(special)

    return examples_net("EveryLayer", keep)


@pytest.mark.parametrize("fmt", ["torchscript", "exported", "onnx"])
def test_every_layer_type_exports(fmt, tmp_path):
    spec = spec_of(every_layer_net())
    weights = write_weights(spec, tmp_path / "every.safetensors")
    # export() runs the written file at batch 1 and 5 against the eager net and refuses on a mismatch
    result = netcfg.export(spec, weights, fmt, tmp_path / f"every{SUFFIX.get(fmt, '.' + fmt)}")
    types = {n.spec.type for n in result.deploy.graph.nodes}
    built_in = {t for t, c in registry().items() if c.__module__.startswith("netcfg.layers.")}
    assert types == built_in - {"Accuracy", "Silence"} - {t for t in built_in if registry()[t].is_loss}
    normed = {n.spec.type for n in result.deploy.graph.nodes if getattr(n.spec, "weight_norm", False)}
    assert normed == {"Convolution", "Deconvolution", "InnerProduct"}  # folded into plain weights on export
    assert result.max_abs_diff < TOL and result.checked_batches == (1, 5)


@pytest.mark.parametrize("fmt", ["torchscript", "exported", "onnx"])
def test_layers_named_like_keywords_or_reserved_attributes_export(fmt, tmp_path):
    # the written programs say `self.<layer>`: a keyword (`class`, `None`), nn.Module's own
    # `forward`, or torch.fx GraphModule's `code` and `graph` cannot be that name
    names = ["class", "forward", "None", "scope.in", "scope.code", "code", "graph", "class_"]
    layers = [{"name": n, "type": "InnerProduct", "num_output": 3} for n in names]
    spec = spec_of({"name": "clash", "inputs": {"data": [4]}, "layers": layers})
    weights = write_weights(spec, tmp_path / "w.safetensors")
    result = netcfg.export(spec, weights, fmt, tmp_path / f"clash{SUFFIX.get(fmt, '.' + fmt)}")
    assert result.path.is_file() and result.max_abs_diff < TOL
    assert sorted(DeployModule(Net(result.deploy.graph))._modules) == ["None_", "class_", "class__", "code_", "forward_", "graph_",
                                                          "scope"]


def test_batch_statistics_in_the_deploy_net_are_checked_at_two_samples_or_more(tmp_path):
    # use_global_stats: false asks for batch statistics in every phase (Caffe): one sample of a
    # (C,) blob has none, so the check runs at batch 2 and 5, and a static batch of 1 is refused
    spec = spec_of({"name": "bn", "inputs": {"data": [6]},
                    "layers": [{"name": "ip", "type": "InnerProduct", "num_output": 4},
                               {"name": "bn", "type": "BatchNorm", "use_global_stats": False}]})
    weights = write_weights(spec, tmp_path / "w.safetensors")
    result = netcfg.export(spec, weights, "onnx", tmp_path / "bn.onnx")
    assert result.checked_batches == (2, 5) and result.max_abs_diff < TOL
    with pytest.raises(netcfg.NetcfgError, match="batch size 1 is too small: layer 'bn' .BatchNorm. uses batch"):
        netcfg.export(spec, weights, "onnx", tmp_path / "bn1.onnx", batch_size=1)


@pytest.mark.parametrize("opset", [13, 18])  # the TorchScript-based exporter dropped 'ref' below 18
def test_an_input_read_only_for_its_shape_stays_an_onnx_input(opset, tmp_path):
    spec = spec_of({"name": "crop", "inputs": {"data": [3, 10, 10], "ref": [1, 6, 6]},
                    "layers": [{"name": "conv", "type": "Convolution", "num_output": 2, "kernel_size": 1},
                               {"name": "crop", "type": "Crop", "bottom": ["conv", "ref"], "axis": 2, "offset": [2]}]})
    weights = write_weights(spec, tmp_path / "w.safetensors")
    result = netcfg.export(spec, weights, "onnx", tmp_path / "crop.onnx", opset=opset)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("data", ["batch", 3, 10, 10]),
                                                                 ("ref", ["batch", 1, 6, 6])]
    x = random_inputs(result.deploy.graph, 3)
    (got,) = session.run(None, {k: v.numpy() for k, v in x.items()})  # every input by name, as documented
    with torch.no_grad():
        want = netcfg.load_net_with_weights(weights, net=spec, deploy=True)(**x)["crop"]
    assert max_diff(torch.from_numpy(got), want) < TOL


def test_a_restored_onnx_input_has_its_declared_shape_when_a_layer_rebinds_its_name(tmp_path):
    # an in-place Reshape rebinds 'ref': the graph's last blob of that name is [6, 1, 6], the input [1, 6, 6]
    spec = spec_of({"name": "crop", "inputs": {"data": [3, 10, 10], "ref": [1, 6, 6]},
                    "layers": [{"name": "conv", "type": "Convolution", "num_output": 2, "kernel_size": 1},
                               {"name": "r", "type": "Reshape", "bottom": "ref", "top": "ref", "shape": {"dim": [0, 6, 1, 6]}},
                               {"name": "crop", "type": "Crop", "bottom": ["conv", "ref"], "axis": 2, "offset": [2]}]})
    weights = write_weights(spec, tmp_path / "w.safetensors")
    result = netcfg.export(spec, weights, "onnx", tmp_path / "crop.onnx", opset=13)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()][1] == ("ref", ["batch", 1, 6, 6])


def test_blobs_named_like_the_exporters_own_values_keep_their_names(tmp_path):
    # the torch.export-based exporter names its values after ops (relu, linear); an input or output
    # blob called so became a second definition of that name: 'Duplicate definition of name (relu)',
    # the net refused as a whole
    spec = spec_of({"name": "names", "inputs": {"relu": [4]},
                    "layers": [{"name": "ip1", "type": "InnerProduct", "bottom": "relu", "top": "x", "num_output": 6},
                               {"name": "r", "type": "ReLU", "bottom": "x", "top": "y"},
                               {"name": "ip2", "type": "InnerProduct", "bottom": "y", "top": "linear", "num_output": 3},
                               {"name": "r2", "type": "ReLU", "bottom": "linear", "top": "linear_1"}]})
    weights = write_weights(spec, tmp_path / "w.safetensors")
    result = netcfg.export(spec, weights, "onnx", tmp_path / "names.onnx", outputs=["linear", "linear_1", "x"])
    onnx.checker.check_model(onnx.load(str(result.path)), full_check=True)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["relu"]
    x = random_inputs(result.deploy.graph, 3)
    got = session.run(["linear", "linear_1", "x"], {"relu": x["relu"].numpy()})
    net = Net(result.deploy.graph)
    load_weights_into(net, weights)
    with torch.no_grad():
        want = DeployModule(net)(x["relu"])
    for g, w in zip(got, want):
        assert max_diff(torch.from_numpy(g), w) < TOL

