"""``netcfg export`` from the command line, as a user runs it after training."""

from __future__ import annotations

import json

import torch

import netcfg
from netcfg.layers import _registry
from tests.export.helpers import ROOT, spec_of, write_weights
from tests.export.test_refusals import LENET, SORTING_NET, NumpySort, netcfg_cli

DIGITS = ROOT / "configs" / "digits_cnn.yaml"


def test_export_a_snapshot_alone(tmp_path):
    weights = write_weights(spec_of(DIGITS.read_text()), tmp_path / "digits_iter_100.safetensors")
    code, out, err = netcfg_cli("export", weights, "--format", "exported")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 'digits_iter_100.pt2'} (torch.export, ")
    assert lines[1:4] == ["  input   data [batch, 1, 8, 8] float32", "  output  ip2 [batch, 10] float32",
                          "  left out: loss (SoftmaxWithLoss), accuracy (Accuracy), input label"]
    assert lines[4].startswith("  checked against PyTorch on random inputs at batch 1 and 5: max abs diff ")
    program = torch.export.load(str(tmp_path / "digits_iter_100.pt2")).module()
    assert program(torch.randn(7, 1, 8, 8))["ip2"].shape == (7, 10)


def test_export_json_and_options(tmp_path):
    weights = write_weights(spec_of(DIGITS.read_text()), tmp_path / "w.safetensors")
    code, out, err = netcfg_cli("export", DIGITS, "-w", weights, "-f", "onnx", "-o", tmp_path / "deploy" / "d.onnx",
                                "--top", "ip1", "--batch-size", "2", "--opset", "17", "--no-check", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["path"] == str(tmp_path / "deploy" / "d.onnx") and (tmp_path / "deploy" / "d.onnx").is_file()
    assert info["outputs"] == ["ip1"] and info["pruned"] == ["ip2"] and info["batch_size"] == 2
    assert info["opset"] == 17 and info["checked_batches"] == [] and info["max_abs_diff"] is None


def test_help_lists_the_formats():
    code, out, _ = netcfg_cli("export", "--help")
    assert code == 0
    assert all(f in out for f in ("safetensors", "torchscript", "exported", "onnx", "--batch-size", "--opset"))


def test_the_format_follows_the_output_name(tmp_path):
    weights = write_weights(spec_of(DIGITS.read_text()), tmp_path / "digits_iter_100.safetensors")
    for name, title in (("m.onnx", "ONNX"), ("m.pt2", "torch.export"), ("m.torchscript", "TorchScript"),
                        ("m.safetensors", "safetensors")):
        code, out, err = netcfg_cli("export", weights, "-o", tmp_path / name, "--no-check")
        assert code == 0, err
        assert out.startswith(f"wrote {tmp_path / name} ({title}, "), out
    code, out, err = netcfg_cli("export", weights, "--no-check")  # no -o, no --format: ONNX beside the weights
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'digits_iter_100.onnx'} (ONNX, "), err
    for name in ("m.pt", "m.pth", "m.bin"):  # a state_dict or TorchScript; nothing: say which to give
        code, out, err = netcfg_cli("export", weights, "-o", tmp_path / name)
        assert code == 2 and not (tmp_path / name).exists()
        assert f"--format: error: the format of '{tmp_path / name}' is not clear from its name" in err
        assert "give --format: safetensors (.safetensors), pt (.pt), torchscript (.torchscript)" in err


def test_export_says_which_weights_a_solver_state_or_run_stood_for(tmp_path):
    weights = write_weights(spec_of(DIGITS.read_text()), tmp_path / "digits_iter_100.safetensors")
    state = tmp_path / "digits_iter_100.solverstate"
    state.write_bytes(b"")  # not read: the weights beside it are
    code, out, err = netcfg_cli("export", DIGITS, "-w", state, "-f", "pt", "--no-check")
    assert code == 0, err
    assert f"  note: weights from {weights}" in out.splitlines()
    code, out, err = netcfg_cli("export", DIGITS, "-w", weights, "-f", "pt", "-o", tmp_path / "b.pt", "--no-check")
    assert code == 0 and "weights from" not in out  # the file given: nothing to say


def test_a_refused_export_leaves_no_folder_made_for_it(tmp_path, monkeypatch):
    # -o new/deeper/x.onnx made new/deeper before the work: a refused export left them, empty
    monkeypatch.setitem(_registry._REGISTRY, "NumpySort", NumpySort)  # a layer ONNX cannot hold
    net = tmp_path / "sorting.yaml"
    net.write_text(SORTING_NET)
    weights = write_weights(spec_of(SORTING_NET), tmp_path / "sorting.safetensors")
    code, _, stderr = netcfg_cli("export", net, "--weights", weights, "-o", tmp_path / "new" / "deeper" / "x.onnx")
    assert code == 2 and "layer 'sorter' (NumpySort) cannot be exported to ONNX" in stderr
    assert not (tmp_path / "new").exists()
    code, _, stderr = netcfg_cli("export", net, "--weights", weights, "-o", tmp_path / "new" / "x.onnx",
                                 "--top", "nothing")
    assert code == 2 and "nothing" in stderr
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there stays
    code, _, _ = netcfg_cli("export", net, "--weights", weights, "-o", tmp_path / "kept" / "new" / "x.onnx")
    assert code == 2 and list((tmp_path / "kept").iterdir()) == []
    result = netcfg.export(net, weights, "pt", tmp_path / "new" / "deeper" / "x.pt")  # a written file makes them
    assert result.path.is_file()


def test_a_torch_export_program_is_named_pt2(tmp_path):
    # -f exported -o m.exported wrote a file torch.export.load reads only through its deprecated
    # fallback ("Unable to load package. f must be a buffer or a file ending in .pt2")
    weights = write_weights(spec_of(LENET.read_text()), tmp_path / "lenet.safetensors")
    code, _, stderr = netcfg_cli("export", weights, "-f", "exported", "-o", tmp_path / "new" / "m.exported")
    assert code == 2
    assert stderr == ("-o: error: a torch.export program is a .pt2 file: torch.export.load reads 'm.exported' only "
                      "through a deprecated fallback, with a warning (name it m.pt2)\n")
    assert not (tmp_path / "new").exists()
