"""``netcfg export`` from the command line, as a user runs it after training."""

from __future__ import annotations

import json

import torch

from tests.export.helpers import ROOT, spec_of, write_weights
from tests.export.test_refusals import netcfg_cli

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
