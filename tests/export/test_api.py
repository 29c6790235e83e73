"""The public Python API: lazy names, what each returns, and the README's custom-layer example."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys

import pytest
import torch

import netcfg
from netcfg.layers import _registry
from tests.export.helpers import ROOT, write_weights


def test_import_netcfg_loads_no_torch_and_every_public_name_resolves():
    code = ("import sys, netcfg; assert 'torch' not in sys.modules, 'import netcfg loaded torch'; "
            "missing = [n for n in netcfg.__all__ if getattr(netcfg, n, None) is None]; print(missing)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_export_is_the_function_even_after_its_package_is_imported():
    import netcfg.exporting

    assert callable(netcfg.export) and netcfg.export.__module__ == "netcfg.exporting.api"
    assert netcfg.export.__doc__ and netcfg.load_net_with_weights.__doc__


def test_public_names_are_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    undocumented = [n for n in netcfg.__all__ if n != "__version__" and f"`{n}`" not in section]
    assert not undocumented


def test_readme_custom_layer_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme[readme.index("## Python API"):], re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry.registry()))  # the example's layer type goes with the test
    printed = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(block, "README.md (Python API)", "exec", dont_inherit=True), scope)  # as a script runs it
    assert scope["out"]["loss"].dim() == 0
    assert str(scope["onnx_file"]) == "tiny.onnx" and (tmp_path / "tiny.onnx").is_file()  # beside tiny.pt
    assert "unknown layer type 'LeCunTan' (did you mean 'LeCunTanh'?" in printed.getvalue()
    act = scope["net"].graph.nodes[1]
    assert act.spec.type == "LeCunTanh" and act.spec.b == 0.5


def test_solver_snapshot_loads_with_its_weights(tmp_path):
    solver = netcfg.Solver.from_file(ROOT / "solvers" / "digits.yaml", ["max_iter=3", "snapshot=0", "test_interval=0",
                                                                        "display=0"], out=tmp_path / "run",
                                     log=lambda line: None)
    solver.solve()
    (weights,) = sorted((tmp_path / "run").glob("*.safetensors"))
    net = netcfg.load_net_with_weights(weights)
    assert not net.training and set(net.outputs) == {"loss", "accuracy"}
    trained = dict(solver.net.named_parameters())
    for name, p in net.named_parameters():
        assert torch.equal(p, trained[name].detach().cpu()), name
    # a run directory stands for its newest snapshot, as in `weights:` and --weights
    by_dir = netcfg.load_net_with_weights(tmp_path / "run")
    assert all(torch.equal(p, dict(net.named_parameters())[n]) for n, p in by_dir.named_parameters())
    result = netcfg.export(tmp_path / "run", format="pt")
    assert result.path == weights.with_suffix(".pt") and result.path.is_file()
    # its .solverstate stands for the snapshot too, as in check, draw and test
    by_state = netcfg.export(weights.with_suffix(".solverstate"), format="pt", out=tmp_path / "by_state.pt")
    assert by_state.path.read_bytes() == result.path.read_bytes()
    with pytest.raises(netcfg.ConfigError, match="a directory without a snapshot"):
        netcfg.export(tmp_path, format="pt")  # no snapshot there: said so, not 'not a YAML file'
    for device, words in (("banana", "device 'banana' is not a device PyTorch knows"),
                          ("cuda:99", "device cuda:99: only" if torch.cuda.is_available() else "no CUDA device")):
        with pytest.raises(netcfg.ConfigError, match=words):
            netcfg.load_net_with_weights(weights, device=device)


STAGED_SOLVER = """
net:
  name: staged
  inputs: {data: [1, 8, 8], label: {shape: [], dtype: int64}}
  layers:
    - {name: ip1, type: InnerProduct, bottom: data, top: ip1, num_output: 10}
    - {name: half, type: Power, bottom: ip1, top: ip1, scale: 0.5, include: {phase: TEST, stage: calibrated}}
    - {name: wide, type: Power, bottom: ip1, top: ip1, scale: 3.0, include: {phase: TRAIN, stage: warm}}
    - {name: loss, type: SoftmaxWithLoss, bottom: [ip1, label], top: loss}
data:
  train: {source: digits, split: train, batch_size: 16, scale: 0.00390625}
  test: {source: digits, split: test, batch_size: 60, scale: 0.00390625}
train_stages: [warm]
test_stages: [calibrated]
base_lr: 0.01
max_iter: 1
test_interval: 0
display: 0
"""


def test_snapshot_alone_exports_the_test_net_its_run_had(tmp_path):
    # the snapshot names its solver's stages: without them, the TEST-stage layer 'half' went missing
    (tmp_path / "solver.yaml").write_text(STAGED_SOLVER)
    netcfg.Solver.from_file(tmp_path / "solver.yaml", out=tmp_path / "run", log=lambda line: None).solve()
    (weights,) = sorted((tmp_path / "run").glob("*.safetensors"))
    assert [n.name for n in netcfg.load_net_with_weights(weights).graph.nodes] == ["ip1", "half", "loss"]
    assert [n.name for n in netcfg.load_net_with_weights(weights, phase="TRAIN").graph.nodes] == ["ip1", "wide", "loss"]
    result = netcfg.export(weights, format="pt", out=tmp_path / "w.pt")
    assert [n.name for n in result.deploy.graph.nodes] == ["ip1", "half"]
    result = netcfg.export(weights, format="pt", out=tmp_path / "train.pt", phase="TRAIN")
    assert [n.name for n in result.deploy.graph.nodes] == ["ip1", "wide"]


def test_export_result_repr_is_one_short_line(tmp_path):
    # a REPL echoes the result: the deploy form inside it used to fill the screen
    spec = netcfg.load_net(ROOT / "configs" / "lenet.yaml")
    weights = write_weights(spec, tmp_path / "lenet.safetensors")
    result = netcfg.export(ROOT / "configs" / "lenet.yaml", weights, format="pt", out=tmp_path / "lenet.pt")
    size = f"{(tmp_path / 'lenet.pt').stat().st_size / 1e6:.1f} MB"
    assert repr(result) == (f"ExportResult(format='pt', path='{tmp_path / 'lenet.pt'}', size='{size}', "
                            f"outputs=['ip2'], max_abs_diff={result.max_abs_diff:.2g})")


def test_errors_are_the_documented_classes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: X\ninputs: {data: [3]}\nlayers:\n  - {name: ip, type: InnerProduct, num_ouput: 2}\n")
    with pytest.raises(netcfg.ConfigErrors) as e:
        netcfg.load_net(bad)
    assert isinstance(e.value, netcfg.NetcfgError)
    assert e.value.render().startswith(f"{bad}:4:36: error: layers[0].num_ouput: unknown key")


def test_a_pt_exported_with_top_loads_with_its_outputs(tmp_path):
    # a .pt holds no config: exported with --top cls, the multitask net's other head 'grp' is not in it,
    # and load_net_with_weights(f, net=..., deploy=True) refused it ('not in the file: grp.weight, grp.bias')
    # with no way to name the tops
    config = ROOT / "configs" / "multitask.yaml"
    weights = write_weights(netcfg.load_net(config), tmp_path / "multitask.safetensors")
    result = netcfg.export(config, weights, "pt", tmp_path / "cls.pt", outputs=["cls"], check=False)
    net = netcfg.load_net_with_weights(result.path, net=config, deploy=True, outputs=["cls"])
    x = {"data": torch.randn(3, 1, 28, 28), "features": torch.randn(3, 19)}
    whole = netcfg.load_net_with_weights(weights, deploy=True)
    with torch.no_grad():
        assert torch.equal(net(**x)["cls"], whole(**x)["cls"]) and list(net(**x)) == ["cls"]
    with pytest.raises(netcfg.ConfigError, match="outputs= picks the tops of the deploy form"):
        netcfg.load_net_with_weights(result.path, net=config, outputs=["cls"])


def test_one_output_named_as_a_string_is_one_top(tmp_path):
    # outputs="cls" was read letter by letter: "output 'c' is not the top of any layer", three times
    config = ROOT / "configs" / "multitask.yaml"
    weights = write_weights(netcfg.load_net(config), tmp_path / "multitask.safetensors")
    net = netcfg.load_net_with_weights(weights, deploy=True, outputs="cls")
    assert net.outputs == ("cls",)
    result = netcfg.export(weights, format="pt", out=tmp_path / "cls.pt", outputs="cls", check=False)
    assert result.deploy.outputs == ["cls"]
