"""Every YAML file netcfg writes reads back as the same net, names that look like numbers included."""

from __future__ import annotations

from netcfg.solver.weights_file import net_config_of
from tests.cli import netcfg
from tests.solver.test_runner import write_solver

# names YAML reads as a float (1e3 under netcfg's YAML 1.2 rule), null, a bool and an int
NET = """\
name: '1e3'
inputs:
  data: [1, 8, 8]
  label: {shape: [], dtype: int64}
layers:
  - {name: '1e3', type: InnerProduct, bottom: data, top: '1e3', num_output: 16}
  - {name: 'null', type: ReLU, bottom: '1e3', top: 'null'}
  - {name: 'yes', type: InnerProduct, bottom: 'null', top: 'yes', num_output: 10}
  - {name: '0x10', type: SoftmaxWithLoss, bottom: ['yes', label]}
"""
NAMES = ["1e3", "null", "yes", "0x10"]


def test_train_config_snapshot_and_export_keep_names_that_look_like_numbers(tmp_path):
    solver = write_solver(tmp_path, NET, max_iter=2, snapshot=2)
    code, out, err = netcfg("train", solver, "--out", tmp_path / "run")
    assert code == 0, err
    code, out, err = netcfg("check", tmp_path / "run/config.yaml")
    assert code == 0, err
    assert "1e3 (TRAIN): 4 layers" in out
    weights = tmp_path / "run/tiny_iter_2.safetensors"
    assert [layer["name"] for layer in net_config_of(weights)["layers"]] == NAMES
    code, out, err = netcfg("export", tmp_path / "run", "-f", "safetensors", "-o", tmp_path / "deploy.safetensors")
    assert code == 0, err
    assert [layer["name"] for layer in net_config_of(tmp_path / "deploy.safetensors")["layers"]] == NAMES[:3]
    code, out, err = netcfg("export", tmp_path / "deploy.safetensors", "-f", "pt", "-o", tmp_path / "deploy.pt")
    assert code == 0, err


def test_expand_output_checks_with_names_that_look_like_numbers(tmp_path):
    (tmp_path / "net.yaml").write_text(NET)
    code, out, err = netcfg("expand", tmp_path / "net.yaml", "-o", tmp_path / "expanded.yaml")
    assert code == 0, err
    code, out, err = netcfg("check", tmp_path / "expanded.yaml")
    assert code == 0, err
    assert "outputs: 0x10; loss: 0x10 x 1" in out
