"""``netcfg check``: the layer table, ``--json``, ``--phase``, ``--set`` and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
LENET = str(ROOT / "configs" / "lenet.yaml")
LENET_LAYERS = ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss"]
# per-sample shapes, no batch dimension
LENET_SHAPES = {"conv1": [20, 24, 24], "pool1": [20, 12, 12], "conv2": [50, 8, 8], "pool2": [50, 4, 4],
                "ip1": [500], "ip2": [10], "loss": []}
LENET_PARAMS = {"conv1": 520, "conv2": 25_050, "ip1": 400_500, "ip2": 5_010}


def check_json(*args: str) -> dict:
    result = run_cli("check", LENET, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_table_lists_every_layer_and_the_total():
    result = run_cli("check", LENET)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    for name in LENET_LAYERS + ["data", "label"]:
        assert name in rows, f"no row for {name}"
    assert rows["conv1"][1] == "Convolution" and "20x24x24" in rows["conv1"]
    assert "400,500" in rows["ip1"]
    assert "LeNet (TRAIN): 8 layers, 431,080 parameters (431,080 trainable)" in result.stdout
    assert "accuracy" not in rows  # TEST only


def test_json_schema():
    doc = check_json()
    assert {"name", "phase", "layers", "total_params", "trainable_params", "flops"} <= set(doc)
    assert (doc["name"], doc["phase"]) == ("LeNet", "TRAIN")
    assert [layer["name"] for layer in doc["layers"]] == LENET_LAYERS
    for layer in doc["layers"]:
        assert {"name", "type", "bottoms", "tops", "shapes", "params", "flops"} <= set(layer)
        assert all(isinstance(v, int) and v >= 0 for v in (layer["params"], layer["flops"]))
        assert set(layer["shapes"]) == set(layer["tops"])
    by_name = {layer["name"]: layer for layer in doc["layers"]}
    for name, shape in LENET_SHAPES.items():
        (top,) = by_name[name]["tops"]
        assert by_name[name]["shapes"][top] == shape
    assert by_name["relu1"]["bottoms"] == by_name["relu1"]["tops"] == ["ip1"]  # in place
    assert by_name["loss"]["bottoms"] == ["ip2", "label"]
    assert {n: by_name[n]["params"] for n in LENET_PARAMS} == LENET_PARAMS
    assert doc["total_params"] == doc["trainable_params"] == 431_080
    assert doc["flops"] == sum(layer["flops"] for layer in doc["layers"]) > 0


def test_phase_test_adds_accuracy():
    doc = check_json("--phase", "TEST")
    assert doc["phase"] == "TEST"
    names = [layer["name"] for layer in doc["layers"]]
    assert names == LENET_LAYERS + ["accuracy"]
    assert doc["total_params"] == 431_080
    lower = run_cli("check", LENET, "--phase", "test")  # case-insensitive
    assert lower.exit_code == 0 and "accuracy" in lower.stdout


def test_bad_phase_exits_2():
    result = run_cli("check", LENET, "--phase", "VAL")
    assert result.exit_code == 2
    assert result.stderr == "--phase: error: --phase must be TRAIN or TEST, got 'VAL'\n"


@pytest.mark.parametrize("key", ["layers.ip1.num_output", "layers.4.num_output"])
def test_set_changes_num_output_and_totals(key):
    doc = check_json("--set", f"{key}=100")
    by_name = {layer["name"]: layer for layer in doc["layers"]}
    assert by_name["ip1"]["shapes"]["ip1"] == [100]
    assert by_name["ip1"]["params"] == 800 * 100 + 100
    assert by_name["ip2"]["params"] == 100 * 10 + 10
    assert doc["total_params"] == 520 + 25_050 + 80_100 + 1_010


def test_set_several_and_in_the_table():
    result = run_cli("check", LENET, "--set", "layers.conv1.num_output=10", "--set", "name=Tiny")
    assert result.exit_code == 0, result.stderr
    assert "Tiny (TRAIN)" in result.stdout
    assert f"{431_080 - 260 - 12_500:,} parameters" in result.stdout  # conv1 halves, conv2 sees 10 channels


@pytest.mark.parametrize("override, stderr", [
    ("layers.ip1.num_output=0",
     "--set layers.ip1.num_output=0: error: layers[4].num_output: input should be greater than or equal to 1, got 0\n"),
    ("layers.relu.negative_slope=0.1",
     "--set layers.relu.negative_slope=0.1: error: no item 'relu' in layers "
     "(did you mean 'relu1'?; indices 0..8 or a name)\n"),
    ("num_output", "--set num_output: error: expected KEY=VALUE (e.g. --set base_lr=0.01)\n"),
])
def test_bad_set_exits_2(override, stderr):
    result = run_cli("check", LENET, "--set", override)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", stderr)


def test_a_net_key_set_on_a_solver_is_one_error_at_the_set():
    # it was 15 errors: the added layers: made check read the solver file as a net
    result = run_cli("check", str(ROOT / "solvers" / "digits.yaml"), "--set", "layers.conv1.num_output=64")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines() if line.startswith("--set ")]
    assert result.stderr.startswith("--set layers.conv1.num_output=64: error: layers: unknown key 'layers'")
    assert result.stderr == run_cli("train", str(ROOT / "solvers" / "digits.yaml"), "--set",
                                    "layers.conv1.num_output=64").stderr  # as train says it


def test_a_net_key_set_on_a_solver_naming_a_net_file_sets_it_in_that_net():
    solver, net_file = ROOT / "solvers" / "digits.yaml", ROOT / "configs" / "digits_cnn.yaml"
    before = net_file.read_bytes()
    result = run_cli("check", str(solver), "--set", "net.layers.ip1.num_output=64")
    assert result.exit_code == 0, result.stderr
    assert "ip1    InnerProduct     ip1    64" in result.stdout
    assert net_file.read_bytes() == before  # the file is read with the key set, not rewritten
    result = run_cli("check", str(solver), "--set", "net.layers.ip1.num_output=0")
    assert (result.exit_code, result.stderr) == (2, "--set net.layers.ip1.num_output=0: error: net.layers[6].num_output: "
                                                    "input should be greater than or equal to 1, got 0\n")


def test_invalid_file_exits_2_and_missing_file_too(tmp_path):
    bad = tmp_path / "net.yaml"
    bad.write_text("name: x\ninputs: {data: [4]}\nlayers:\n  - {name: ip, type: InnerProduct, num_ouput: 3}\n")
    result = run_cli("check", str(bad))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"{bad}:4:36: error: layers[0].num_ouput: unknown key 'num_ouput'")
    result = run_cli("check", str(tmp_path / "nope.yaml"))
    assert (result.exit_code, result.stderr) == (2, f"{tmp_path / 'nope.yaml'}: error: no such file\n")


def test_float_labels_for_an_int64_input_say_to_store_integers(tmp_path):
    # labels saved as float64 (pandas, MATLAB): the hint said to declare the input float32, which
    # SoftmaxWithLoss then refuses, asking for int64 again
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 28, 28), np.uint8), y=np.arange(20.0) % 10)
    (tmp_path / "s.yaml").write_text(f"net: {ROOT / 'configs' / 'mlp.yaml'}\ndata:\n  train: {{source: npz, path: d.npz, "
                                     "arrays: {data: x, label: y}, split: train, batch_size: 10}\nbase_lr: 0.1\nmax_iter: 1\n")
    result = run_cli("check", str(tmp_path / "s.yaml"))
    assert result.exit_code == 2
    assert "'label' is float32 but the net's input 'label' is declared int64" in result.stderr
    assert "store the data as integers (numpy: y.astype(np.int64)" in result.stderr


@pytest.mark.parametrize("x, y, words", [
    # float images (N, H, W), as Keras keeps MNIST scaled to [0, 1]: the net wants (N, 1, H, W)
    (np.zeros((20, 28, 28), np.float32), np.arange(20) % 10,
     "'data' has per-sample shape [28, 28] but the net's input 'data' is [1, 28, 28] (the same values in another "
     "shape: store the array as (N, 1, 28, 28), numpy: x[:, None] (only uint8 (N, H, W) arrays are taken"),
    # labels (N, 1), as scipy.io.loadmat and many exports give them
    (np.zeros((20, 28, 28), np.uint8), (np.arange(20) % 10)[:, None],
     "'label' has per-sample shape [1] but the net's input 'label' is [] (the same values in another shape: "
     "store the array as (N,), numpy: x.reshape(len(x)))"),
])
def test_a_shape_that_differs_by_unit_dimensions_says_how_to_reshape(tmp_path, x, y, words):
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "s.yaml").write_text(f"net: {ROOT / 'configs' / 'mlp.yaml'}\ndata:\n  train: {{source: npz, path: d.npz, "
                                     "arrays: {data: x, label: y}, split: train, batch_size: 10}\nbase_lr: 0.1\nmax_iter: 1\n")
    result = run_cli("check", str(tmp_path / "s.yaml"))
    assert result.exit_code == 2 and words in result.stderr, result.stderr


@pytest.mark.parametrize("net, x, keys, words", [
    # MNIST as Keras stores it, (N, 28, 28, 1): the hint said to reshape, where the key is channels_last
    ("mlp.yaml", np.zeros((20, 28, 28, 1), np.uint8), "",
     "'data' has per-sample shape [28, 28, 1] but the net's input 'data' is [1, 28, 28] (the images are stored "
     "channels last (N, H, W, C): add channels_last: true to the npz/npy source, or store them as numpy's "
     "x.transpose(0, 3, 1, 2))"),
    # CIFAR as Keras stores it: the hint was 'change the net's inputs:, or crop_size/the data set'
    ("resnet56.yaml", np.zeros((20, 32, 32, 3), np.uint8), "",
     "'data' has per-sample shape [32, 32, 3] but the net's input 'data' is [3, 32, 32] (the images are stored "
     "channels last (N, H, W, C): add channels_last: true"),
    # and with a crop, the images were said to be 32x3: the hint was 'use crop_size <= 3'
    ("resnet56.yaml", np.zeros((20, 32, 32, 3), np.uint8), ", pad: 4, crop_size: 32",
     "crop_size 32 is larger than the images (32x3, pad 4) (use crop_size <= 11; or, if the images are 32x32 with "
     "3 channel(s) stored last, channels_last: true)"),
])
def test_channels_last_images_say_channels_last(tmp_path, net, x, keys, words):
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 10)
    (tmp_path / "s.yaml").write_text(f"net: {ROOT / 'configs' / net}\ndata:\n  train: {{source: npz, path: d.npz, "
                                     f"arrays: {{data: x, label: y}}, split: train, batch_size: 10{keys}}}\n"
                                     "base_lr: 0.1\nmax_iter: 1\n")
    result = run_cli("check", str(tmp_path / "s.yaml"))
    assert result.exit_code == 2 and words in result.stderr, result.stderr


@pytest.mark.parametrize("ids, words", [
    # a vocabulary counted without its padding or unknown token: the first batch holding it
    # stopped training with torch's "IndexError: index out of range in self" and a traceback
    (np.arange(40).reshape(20, 2) % 12,
     "the train data's 'tokens' holds ids 0..11 (6 outside 0..9, e.g. 10), but layer 'emb' (Embed) has "
     "input_dim 10 (set input_dim: 12 or more, or map the ids into 0..9)"),
    (np.arange(40).reshape(20, 2) % 10 - 1,  # -1 as padding: there is no input_dim to suggest
     "the train data's 'tokens' holds ids -1..8 (4 outside 0..9, e.g. -1), but layer 'emb' (Embed) has "
     "input_dim 10 (map the ids into 0..9)"),
])
def test_embed_ids_outside_the_table_are_named_before_training(tmp_path, ids, words):
    np.savez(tmp_path / "d.npz", x=ids, y=np.arange(20) % 3)
    (tmp_path / "n.yaml").write_text(
        "name: t\ninputs: {tokens: {shape: [2], dtype: int64}, label: {shape: [], dtype: int64}}\nlayers:\n"
        "  - {name: emb, type: Embed, bottom: tokens, num_output: 4, input_dim: 10}\n"
        "  - {name: ip, type: InnerProduct, num_output: 3}\n"
        "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}\n")
    (tmp_path / "s.yaml").write_text("net: n.yaml\ndata:\n  train: {source: npz, path: d.npz, "
                                     "arrays: {tokens: x, label: y}, split: train, batch_size: 10}\n"
                                     "base_lr: 0.1\nmax_iter: 1\n")
    result = run_cli("check", str(tmp_path / "s.yaml"))
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"{tmp_path / 's.yaml'}:3:54: error: data.train.arrays.tokens: {words}\n"


def test_a_missing_net_file_lists_the_yml_files_beside_it(tmp_path):
    # net: net.yaml beside a net.yml said '... has no .yaml files', steering away from the file there
    (tmp_path / "net.yml").write_text(Path(LENET).read_text())
    (tmp_path / "solver.yaml").write_text("net: net.yaml\ndata: {train: {source: digits, split: train, batch_size: 8}}\n"
                                           "base_lr: 0.1\nmax_iter: 1\n")
    result = run_cli("check", str(tmp_path / "solver.yaml"))
    assert result.exit_code == 2
    assert result.stderr == (f"{tmp_path / 'solver.yaml'}:1:6: error: net: net file not found: {tmp_path / 'net.yaml'} "
                             "(files there: net.yml, solver.yaml)\n")


def test_a_dash_for_stdin_says_files_are_read_by_path(tmp_path, monkeypatch):
    # 'netcfg expand x.yaml | netcfg check -' said '-: error: no such file'
    monkeypatch.chdir(tmp_path)
    result = run_cli("check", "-")
    assert (result.exit_code, result.stderr) == (2, "-: error: no such file: netcfg reads config files by path, not "
                                                    "from stdin (save it to a file and give its path)\n")
