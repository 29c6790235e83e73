"""``netcfg import-caffe`` from the command line: files written, `netcfg check` passes, LeNet trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.caffe.test_net import SHARED, needs_shared
from tests.caffe.test_solver import FASHION, IDX, needs_fashion
from tests.cli import run_cli

SOLVERS = {  # each shared solver with the net file it names
    "mnist__lenet_solver": "mnist__lenet_train_test", "mnist__lenet_multistep_solver": "mnist__lenet_train_test",
    "mnist__lenet_solver_adam": "mnist__lenet_train_test", "mnist__lenet_solver_rmsprop": "mnist__lenet_train_test",
    "mnist__lenet_adadelta_solver": "mnist__lenet_train_test",
    "mnist__mnist_autoencoder_solver_nesterov": "mnist__mnist_autoencoder",
    "cifar10__cifar10_quick_solver": "cifar10__cifar10_quick_train_test",
    "cifar10__cifar10_full_sigmoid_solver_bn": "cifar10__cifar10_full_sigmoid_train_test_bn",
}


def ok(*args) -> str:
    result = run_cli(*map(str, args))
    assert result.exit_code == 0, result.stderr
    return result.stdout


@needs_shared
def test_net_to_stdout_and_to_a_file_that_checks(tmp_path):
    text = ok("import-caffe", SHARED / "mnist__lenet_train_test.prototxt")
    assert text.startswith(f"# Imported from {SHARED / 'mnist__lenet_train_test.prototxt'} by `netcfg import-caffe`.")
    assert "# LeNet: 8 layers (TRAIN), 431,080 parameters" in text
    assert yaml.safe_load(text)["layers"][0]["name"] == "conv1"
    out = tmp_path / "lenet.yaml"
    result = run_cli("import-caffe", str(SHARED / "mnist__lenet_train_test.prototxt"), "-o", str(out),
                     "--input", "data=1,28,28")
    assert result.exit_code == 0 and result.stdout == ""
    assert f"wrote {out}: LeNet: 8 layers (TRAIN), 431,080 parameters" in result.stderr
    assert "assumed" not in out.read_text()  # the shape was given
    doc = json.loads(ok("check", out, "--json", "--phase", "TEST"))
    assert doc["total_params"] == 431_080 and "accuracy" in [layer["name"] for layer in doc["layers"]]


@needs_shared
@pytest.mark.parametrize("stem", sorted(p.stem for p in SHARED.glob("*.prototxt") if "solver" not in p.name))
def test_every_bvlc_net_file_passes_netcfg_check(tmp_path, stem):
    out = tmp_path / f"{stem}.yaml"
    ok("import-caffe", SHARED / f"{stem}.prototxt", "-o", out)
    assert "parameters" in ok("check", out)


def _fake_cifar10(directory: Path) -> None:
    """A few records in CIFAR-10's binary layout (1 label byte + 3x32x32 pixels)."""
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = np.concatenate([rng.integers(0, 10, (4, 1)), rng.integers(0, 256, (4, 3072))], axis=1)
        (directory / name).write_bytes(records.astype(np.uint8).tobytes())


@needs_shared
@needs_fashion
@pytest.mark.parametrize("stem", SOLVERS)
def test_every_bvlc_solver_converts_and_passes_netcfg_check(tmp_path, stem):
    from netcfg.data.registry import source_types

    out = tmp_path / "solver.yaml"
    net = SHARED / f"{SOLVERS[stem]}.prototxt"
    if "cifar" not in stem:
        data = IDX
    elif "cifar10" in source_types():
        _fake_cifar10(tmp_path)
        data = f"cifar10:{tmp_path}"
    else:  # no CIFAR-10 source in this build: the solver still converts, and asks for its data
        ok("import-caffe", "--solver", SHARED / f"{stem}.prototxt", net, "-o", out)
        result = run_cli("check", str(out))
        assert result.exit_code == 2 and "data has no train split" in result.stderr
        return
    ok("import-caffe", "--solver", SHARED / f"{stem}.prototxt", net, "--data", data, "-o", out)
    solver = yaml.safe_load(out.read_text())
    assert solver["net"] == f"{SOLVERS[stem]}.yaml" and (tmp_path / solver["net"]).is_file()
    assert "parameters" in ok("check", out)


@needs_shared
def test_solver_without_data_is_written_with_a_template(tmp_path):
    out = tmp_path / "quick.yaml"
    result = run_cli("import-caffe", "--solver", str(SHARED / "cifar10__cifar10_quick_solver.prototxt"),
                     str(SHARED / "cifar10__cifar10_quick_train_test.prototxt"), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert "note: no data: section" in result.stderr
    text = out.read_text()
    assert "#   train: {source: '?', path: examples/cifar10/cifar10_train_lmdb, split: train, batch_size: 100}" in text
    check = run_cli("check", str(out))
    assert check.exit_code == 2 and "data has no train split to train on" in check.stderr


@needs_shared
def test_solver_to_stdout_inlines_its_net():
    doc = yaml.safe_load(ok("import-caffe", "--solver", SHARED / "mnist__lenet_solver.prototxt",
                            SHARED / "mnist__lenet_train_test.prototxt"))
    assert doc["net"]["name"] == "LeNet" and doc["type"] == "SGD" and "data" not in doc


def test_errors_exit_2_with_the_place_and_write_nothing(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n')
    out = tmp_path / "out.yaml"
    result = run_cli("import-caffe", str(bad), "-o", str(out))
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.startswith(f"{bad}:5:1: error: the '{{' at line 2, column 7 is never closed")
    assert "Traceback" not in result.stderr
    for args, words in ((["import-caffe"], "give a Caffe net"),
                        (["import-caffe", str(bad), "--input", "data=1,a"], "bad --input 'data=1,a'"),
                        (["import-caffe", str(bad), "--weights", "w.caffemodel"], "give -o NET.yaml"),
                        (["import-caffe", str(bad), "--data", "lmdb:/x"], "unknown data source 'lmdb'")):
        result = run_cli(*args)
        assert result.exit_code == 2 and words in result.stderr, result.stderr


@needs_shared
def test_a_data_path_that_is_not_there_is_blamed_on_the_data_option(tmp_path):
    """The source's complaint names --data, the option to fix, not '<config>'."""
    missing = tmp_path / "no_such_dir"
    for args in ([SHARED / "mnist__lenet_train_test.prototxt"],
                 ["--solver", SHARED / "mnist__lenet_solver.prototxt", SHARED / "mnist__lenet_train_test.prototxt"]):
        result = run_cli("import-caffe", *map(str, args), "--data", f"idx:{missing}")
        assert result.exit_code == 2
        assert result.stderr.startswith(f"--data: error: path: directory '{missing}' does not exist"), result.stderr


@needs_shared
@needs_fashion
def test_imported_lenet_solver_trains_on_fashion_mnist(tmp_path):
    out = tmp_path / "lenet_solver.yaml"
    ok("import-caffe", "--solver", SHARED / "mnist__lenet_solver.prototxt",
       SHARED / "mnist__lenet_train_test.prototxt", "--data", f"idx:{FASHION}", "-o", out)
    run = tmp_path / "run"
    ok("train", out, "--out", run, "--set", "max_iter=24", "--set", "display=4", "--set", "test_interval=24",
       "--set", "test_iter=2", "--set", "test_initialization=false", "--set", "snapshot=0")
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e.get("event") == "train" and "loss" in e]
    tests = [e for e in events if e.get("event") == "test"]
    assert len(losses) >= 5 and losses[-1] < losses[0]  # it learns: 2.3 (chance) falls within 24 iterations
    assert tests and 0 <= tests[-1]["accuracy"] <= 1
    assert (run / "lenet_iter_24.safetensors").is_file()


def test_existing_files_are_not_overwritten_without_force(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text('name: "N"\ninput: "data"\ninput_shape { dim: 1 dim: 3 }\n'
                     'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                     'inner_product_param { num_output: 2 } }\n')
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 10\n')
    out, beside = tmp_path / "out.yaml", tmp_path / "net.yaml"  # the solver's net is written beside it
    for target, args in ((out, [proto]), (beside, ["--solver", solver])):
        target.write_text("mine\n")
        result = run_cli("import-caffe", *map(str, args), "-o", str(out))
        assert result.exit_code == 2 and f"{target} already exists (pass --force" in result.stderr, result.stderr
        assert target.read_text() == "mine\n"
        assert run_cli("import-caffe", *map(str, args), "-o", str(out), "--force").exit_code == 0
        assert target.read_text() != "mine\n"
        out.unlink(), beside.unlink(missing_ok=True)


def test_an_input_name_the_net_does_not_have_is_refused(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text('name: "N"\ninput: "data"\ninput_shape { dim: 1 dim: 3 }\n'
                     'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    result = run_cli("import-caffe", str(proto), "--input", "dat=3")
    assert result.exit_code == 2, result.stderr
    assert "--input dat: the net has no input 'dat' (did you mean 'data'?" in result.stderr


def test_within_channel_lrn_drops_k_as_caffe_ignores_it(tmp_path):
    proto = tmp_path / "lrn.prototxt"
    proto.write_text('name: "L"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
                     'layer { name: "n" type: "LRN" bottom: "data" top: "n" lrn_param { local_size: 3 alpha: 0.5 '
                     'beta: 0.75 k: 2 norm_region: WITHIN_CHANNEL } }\n')
    result = run_cli("import-caffe", str(proto))
    assert result.exit_code == 0, result.stderr
    layer = yaml.safe_load(result.stdout)["layers"][0]
    assert "k" not in layer and layer["norm_region"] == "WITHIN_CHANNEL"
    assert "layer 'n' (LRN): k: 2 dropped: Caffe's WITHIN_CHANNEL LRN ignores k and adds 1" in result.stderr


def test_names_that_read_as_numbers_are_quoted_so_the_file_checks(tmp_path):
    # '1e3' is a number to netcfg's loader (YAML 1.2) though PyYAML's writer leaves it bare
    proto = tmp_path / "net.prototxt"
    proto.write_text('name: "2e5"\ninput: "1e3"\ninput_shape { dim: 1 dim: 4 }\n'
                     'layer { name: "1E-2" type: "InnerProduct" bottom: "1e3" top: "+3e1" '
                     'inner_product_param { num_output: 2 } }\n'
                     'layer { name: "on" type: "ReLU" bottom: "+3e1" top: "null" }\n')
    out = tmp_path / "net.yaml"
    ok("import-caffe", proto, "-o", out)
    doc = json.loads(ok("check", out, "--json"))
    assert doc["name"] == "2e5" and [layer["name"] for layer in doc["layers"]] == ["1E-2", "on"]


def test_a_one_layer_one_parameter_net_is_counted_in_the_singular(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text('name: "hs"\ninput: "x"\ninput_shape { dim: 1 dim: 1 }\n'
                     'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
                     'inner_product_param { num_output: 1 bias_term: false } }\n')
    out = tmp_path / "net.yaml"
    result = run_cli("import-caffe", str(proto), "-o", str(out))
    assert f"wrote {out}: hs: 1 layer (TRAIN), 1 parameter" in result.stderr, result.stderr
    assert "hs (TRAIN): 1 layer, 1 parameter (1 trainable)," in ok("check", out)
