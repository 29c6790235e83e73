"""What export refuses, and how: the layer a format cannot hold is named at its line; nothing is written."""

from __future__ import annotations

import importlib.util
from typing import Literal

import numpy as np
import pytest
import torch
from torch import nn

import netcfg
from netcfg.errors import NetcfgError
from netcfg.layers import _registry
from netcfg.layers.base import Blob, LayerSpec
from tests.cli import netcfg as netcfg_cli
from tests.export.helpers import ROOT, spec_of, write_weights

LENET = ROOT / "configs" / "lenet.yaml"


class NumpySorted(nn.Module):
    """Sorts through numpy: eager PyTorch runs it, but tracers see a constant, and
    torch.export cannot follow a tensor into numpy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.sort(x.detach().numpy(), axis=-1))


class NumpySort(LayerSpec):
    """A third-party layer type that only eager PyTorch can run."""

    type: Literal["NumpySort"]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        return list(bottoms)

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return NumpySorted()


SORTING_NET = """\
name: SortingNet
inputs:
  data: [1, 8, 8]
  label: {shape: [], dtype: int64}
layers:
  - {name: ip1, type: InnerProduct, num_output: 16}
  - {name: sorter, type: NumpySort}
  - {name: ip2, type: InnerProduct, num_output: 10}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
"""


@pytest.fixture
def sorting_net(tmp_path, monkeypatch):
    monkeypatch.setitem(_registry._REGISTRY, "NumpySort", NumpySort)  # registered for this test only
    path = tmp_path / "sorting.yaml"
    path.write_text(SORTING_NET)
    return path, write_weights(spec_of(SORTING_NET), tmp_path / "sorting.safetensors")


@pytest.mark.parametrize("fmt, title", [("torchscript", "TorchScript"), ("exported", "torch.export"), ("onnx", "ONNX")])
def test_a_layer_the_format_cannot_hold_is_named_at_its_line(fmt, title, sorting_net, tmp_path):
    net, weights = sorting_net
    out = tmp_path / ("out.pt2" if fmt == "exported" else "out.file")
    code, _, stderr = netcfg_cli("export", net, "--weights", weights, "--format", fmt, "-o", out)
    assert code == 2
    assert stderr.startswith(f"{net}:7:5: error: layers[1]: layer 'sorter' (NumpySort) cannot be exported to {title}: ")
    assert "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # nothing half-written is left


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_weight_formats_hold_any_layer(fmt, sorting_net, tmp_path):
    net, weights = sorting_net
    result = netcfg.export(net, weights, fmt, tmp_path / f"w.{fmt}")
    assert result.checked_batches == (1, 5)


def test_refusal_without_a_single_culprit_names_the_net(sorting_net, tmp_path, monkeypatch):
    from netcfg.exporting import api

    net, weights = sorting_net
    monkeypatch.setattr(api, "culprit", lambda job, attempt: None)  # as if each layer exported alone
    with pytest.raises(NetcfgError, match="cannot export net 'SortingNet' to ONNX: "):
        netcfg.export(net, weights, "onnx", tmp_path / "x.onnx")


def test_weights_that_do_not_fit_are_refused(tmp_path):
    digits = write_weights(spec_of((ROOT / "configs" / "digits_cnn.yaml").read_text()), tmp_path / "digits.safetensors")
    code, _, stderr = netcfg_cli("export", LENET, "--weights", digits, "-f", "onnx", "-o", tmp_path / "x.onnx")
    assert code == 2
    # the refusal named neither net, and said the blobs were 'left as initialised' though nothing was exported
    assert stderr.startswith(f"{digits}: error: its weights do not fit this net ('LeNet'; the file's net is "
                             "'DigitsCNN'):\n  shape mismatch: conv1.weight (file [32, 1, 3, 3], net [20, 1, 5, 5]), ")
    assert "left as initialised" not in stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("args, message", [
    (["-f", "onnxx"], "--format: error: unknown export format 'onnxx' (did you mean 'onnx'?"),
    (["-f", "pt", "--opset", "13"], "--opset: error: --opset applies to the onnx format only, not pt"),
    (["-f", "onnx", "--opset", "5"], "--opset: error: opset 5 is out of range (this installation writes opsets 9 to "),
    (["-f", "pt", "--batch-size", "0"], "--batch-size: error: batch size must be 'dynamic' or a whole number >= 1, got '0'"),
    (["-f", "pt", "--top", "ip3"], "--top: error: output 'ip3' is not the top of any layer in phase TEST (did you mean 'ip2'?"),
    (["-f", "pt", "--phase", "deploy"], "--phase: error: phase must be TRAIN or TEST, got 'DEPLOY'"),
])
def test_bad_options_are_one_line_errors(args, message, tmp_path):
    weights = write_weights(spec_of(LENET.read_text()), tmp_path / "lenet.safetensors")
    code, _, stderr = netcfg_cli("export", LENET, "--weights", weights, *args)
    assert code == 2
    assert stderr.startswith(message), stderr


def test_the_python_api_checks_its_arguments_too(tmp_path):
    weights = write_weights(spec_of(LENET.read_text()), tmp_path / "lenet.safetensors")
    with pytest.raises(netcfg.ConfigError, match="opset must be an integer, got '13'"):
        netcfg.export(LENET, weights, "onnx", tmp_path / "x.onnx", opset="13")
    with pytest.raises(netcfg.ConfigError, match="phase must be TRAIN or TEST"):
        netcfg.load_net_with_weights(weights, phase="VAL")


def test_missing_weights_and_files(tmp_path):
    code, _, stderr = netcfg_cli("export", LENET, "-f", "onnx")
    assert code == 2 and stderr.startswith("--weights: error: no weights given (pass the trained weights: ")
    code, _, stderr = netcfg_cli("export", tmp_path / "nope.yaml", "-f", "onnx", "--weights", tmp_path / "w.safetensors")
    assert code == 2 and "nope.yaml: error: no such file" in stderr
    code, _, stderr = netcfg_cli("export", LENET, "-f", "onnx", "--weights", tmp_path / "w.safetensors")
    assert code == 2 and "w.safetensors: error: weights file not found" in stderr


def test_the_output_may_not_overwrite_an_input(tmp_path):
    weights = write_weights(spec_of(LENET.read_text()), tmp_path / "lenet.safetensors")
    code, _, stderr = netcfg_cli("export", weights, "-f", "safetensors", "-o", weights)
    assert code == 2 and "is an input of the export; it would be overwritten" in stderr


def test_a_weights_file_without_a_net_config_needs_the_net(tmp_path):
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"ip2.weight": torch.zeros(10, 500)}, str(bare))
    with pytest.raises(NetcfgError, match="has no net config in its metadata"):
        netcfg.load_net_with_weights(bare)
    code, _, stderr = netcfg_cli("export", bare, "-f", "onnx")
    assert code == 2 and "not written by netcfg" in stderr


def test_a_solver_state_names_its_weights_file(tmp_path):
    from netcfg.solver.checkpoint import save_tree

    state = tmp_path / "lenet_iter_2.solverstate"  # was read as YAML: "byte 0x.. is not UTF-8 text"
    save_tree(state, {"iter": 2, "rng": torch.zeros(4, dtype=torch.uint8)})
    code, _, stderr = netcfg_cli("export", state, "-f", "onnx")
    assert code == 2 and stderr.startswith(f"{state}: error: is a solver state"), stderr
    assert f"its weights are {tmp_path / 'lenet_iter_2.safetensors'}" in stderr


def test_onnx_without_its_extra_says_what_to_install(tmp_path, monkeypatch):
    weights = write_weights(spec_of(LENET.read_text()), tmp_path / "lenet.safetensors")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(NetcfgError, match=r"ONNX export needs onnxscript, which is not installed; pip install 'netcfg\[onnx\]'"):
        netcfg.export(LENET, weights, "onnx", tmp_path / "x.onnx")


def test_an_existing_file_is_not_overwritten_without_force(tmp_path):
    import netcfg
    from netcfg.errors import ConfigError
    from netcfg.net import build_net
    from netcfg.solver.weights_file import save_weights
    from netcfg.net.spec import load_net

    config = "configs/lenet.yaml"
    weights = tmp_path / "w.safetensors"
    save_weights(weights, build_net(config), load_net(config).model_dump(mode="json", exclude_unset=True))
    out = tmp_path / "lenet.pt"
    out.write_bytes(b"mine")
    with pytest.raises(ConfigError, match="already exists"):
        netcfg.export(config, weights, "pt", out, check=False)
    assert out.read_bytes() == b"mine"
    netcfg.export(config, weights, "pt", out, check=False, force=True)
    assert out.read_bytes() != b"mine"


def test_a_place_that_cannot_be_written_is_said_before_the_work(tmp_path, monkeypatch):
    # -o below a file was a traceback (mkdir's FileExistsError); an unwritable folder made TorchScript
    # and torch.export blame the net ("cannot export net 'LeNet' ... each layer exports alone") after
    # exporting every layer alone, and the other formats name a hidden temporary file
    import builtins
    import errno

    from netcfg.exporting import api, output

    weights = write_weights(spec_of(LENET.read_text()), tmp_path / "lenet.safetensors")
    (tmp_path / "afile").write_text("mine")
    code, _, stderr = netcfg_cli("export", weights, "-f", "torchscript", "-o", tmp_path / "afile/lenet.pt")
    assert code == 2, stderr
    assert stderr == (f"-o: error: cannot write {tmp_path / 'afile/lenet.pt'}: Not a directory "
                      "(choose a file in a folder you can write)\n")
    assert (tmp_path / "afile").read_text() == "mine"

    def read_only(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(output, "open", read_only, raising=False)
    monkeypatch.setattr(api, "culprit", lambda *a: pytest.fail("a layer was blamed for a folder"))
    for fmt in ("torchscript", "safetensors"):
        out = tmp_path / "out" / f"lenet.{fmt}"
        code, _, stderr = netcfg_cli("export", weights, "-f", fmt, "-o", out)
        assert code == 2, stderr
        assert stderr == f"-o: error: cannot write {out}: Permission denied (choose a file in a folder you can write)\n"
    assert not (tmp_path / "out").exists()  # nor the folder made for it


def test_a_read_only_file_system_is_said_not_a_traceback(tmp_path, monkeypatch):
    # -o on a read-only mount was an OSError traceback: removing the temporary file that could not
    # be made said "Read-only file system" too (not "no such file"), over the error being reported
    import builtins
    import errno
    from pathlib import Path

    from netcfg.exporting import output

    def read_only_open(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return builtins.open(path, mode, *args, **kwargs)

    real_unlink = Path.unlink

    def read_only_unlink(path, *args, **kwargs):
        if path.parent == tmp_path / "ro":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_unlink(path, *args, **kwargs)

    weights = write_weights(spec_of(LENET.read_text()), tmp_path / "lenet.safetensors")
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(output, "open", read_only_open, raising=False)
    monkeypatch.setattr(Path, "unlink", read_only_unlink)
    out = tmp_path / "ro" / "lenet.onnx"
    code, _, stderr = netcfg_cli("export", weights, "-f", "pt", "-o", out)
    assert code == 2, stderr
    assert stderr == f"-o: error: cannot write {out}: Read-only file system (choose a file in a folder you can write)\n"


@pytest.mark.parametrize("fmt", ["torchscript", "exported", "pt"])
def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch, fmt):
    # TorchScript and torch.export wrote through their own C++ file code: a full disk was
    # "cannot export net 'LeNet' to TorchScript: [enforce fail at inline_container.cc...]", after
    # every layer was exported alone to find the one to blame
    import builtins
    import errno

    from netcfg.exporting import api
    from netcfg.solver import checkpoint

    def full(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if "w" in mode and ".tmp-" in str(path):
            def write(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    weights = write_weights(spec_of(LENET.read_text()), tmp_path / "lenet.safetensors")
    monkeypatch.setattr(checkpoint, "open", full, raising=False)
    monkeypatch.setattr(api, "culprit", lambda *a: pytest.fail("a layer was blamed for a full disk"))
    out = tmp_path / "out" / f"lenet.{'pt2' if fmt == 'exported' else fmt}"
    code, _, stderr = netcfg_cli("export", weights, "-f", fmt, "-o", out)
    assert code == 1, stderr
    assert stderr == f"{out}: error: cannot write: No space left on device\n"
    assert not (tmp_path / "out").exists()  # nor the folder made for it


def test_ctrl_c_mid_export_leaves_no_temporary_file(tmp_path, monkeypatch):
    # Ctrl-C during a long ONNX export left '.lenet.onnx.<pid>.tmp.onnx' (empty) beside the output
    from netcfg.exporting import api

    def interrupted(job):
        raise KeyboardInterrupt

    monkeypatch.setitem(api.FORMATS, "pt", api.FORMATS["pt"]._replace(write=interrupted))
    weights = write_weights(spec_of(LENET.read_text()), tmp_path / "lenet.safetensors")
    out = tmp_path / "out" / "lenet.pt"
    with pytest.raises(KeyboardInterrupt):
        netcfg.export(LENET, weights, "pt", out)
    assert not (tmp_path / "out").exists()  # nor the folder made for it


def test_an_in_place_layer_before_the_culprit_is_not_blamed(tmp_path, monkeypatch):
    # alone, an in-place ReLU (top: ip1 on bottom: ip1) had an ONNX input and output of one
    # name, which onnxruntime refuses: every ONNX refusal of a LeNet-like net blamed 'relu1'
    monkeypatch.setitem(_registry._REGISTRY, "NumpySort", NumpySort)
    net = SORTING_NET.replace("  - {name: sorter", "  - {name: relu1, type: ReLU, top: ip1}\n  - {name: sorter")
    path = tmp_path / "sorting.yaml"
    path.write_text(net)
    weights = write_weights(spec_of(net), tmp_path / "sorting.safetensors")
    with pytest.raises(NetcfgError, match=r":8:5: error: layers\[2\]: layer 'sorter' \(NumpySort\) cannot be exported to ONNX"):
        netcfg.export(path, weights, "onnx", tmp_path / "x.onnx")


@pytest.mark.parametrize("fmt, what", [("torchscript", "a TorchScript program"), ("exported", "a torch.export program"),
                                       ("onnx", "an ONNX model")])
def test_an_exported_program_given_as_weights_or_net_is_named_so(fmt, what, tmp_path):
    # the exported model passed back as --weights was 'not a readable .safetensors weights file (Error
    # while deserializing header: header too large)', or for a TorchScript .pt 'this pickle holds Python
    # objects other than tensors ... convert it to .safetensors yourself'
    weights = write_weights(spec_of(LENET.read_text()), tmp_path / "lenet.safetensors")
    program = netcfg.export(LENET, weights, fmt, tmp_path / {"torchscript": "lenet.pt", "exported": "lenet.pt2"}.get(fmt, f"lenet.{fmt}"),
                            check=False).path
    code, _, stderr = netcfg_cli("export", LENET, "--weights", program, "-f", "pt", "-o", tmp_path / "again.pt")
    assert code == 2
    assert stderr == (f"{program}: error: is {what}, not weights; netcfg reads weights from .safetensors (a snapshot, "
                      "or netcfg export --format safetensors) or a state_dict in .pt/.pth/.ckpt/.bin "
                      "(netcfg export --format pt)\n")
    # and given as the net ('byte 0x.. is not UTF-8 text (is this a YAML file?')
    code, _, stderr = netcfg_cli("export", program, "-f", "pt", "-o", tmp_path / "again.pt")
    assert code == 2
    assert stderr == (f"{program}: error: is {what}, not a net: give a net or solver file, a run directory, "
                      "or a .safetensors snapshot\n")


def test_an_onnx_output_named_as_an_input_is_refused_with_the_way_out(tmp_path, monkeypatch):
    # an in-place layer on the input made output 'data' a second value of the input's name: the
    # written file did not load ('Duplicate definition of name (data)'), every layer was exported
    # alone, and the message blamed their combination
    from netcfg.exporting import api

    spec = spec_of({"name": "inplace", "inputs": {"data": [4]},
                    "layers": [{"name": "s", "type": "Scale", "bottom": "data", "top": "data"},
                               {"name": "ip", "type": "InnerProduct", "bottom": "data", "num_output": 3}]})
    weights = write_weights(spec, tmp_path / "w.safetensors")
    monkeypatch.setattr(api, "culprit", lambda *a: pytest.fail("a layer was blamed for a name"))
    with pytest.raises(NetcfgError, match=r"^ONNX cannot hold output 'data': it has the name of an input, which "
                                          r"layer 's' rewrites in place, .* \(give 's' a top of its own, such as "
                                          r"top: data_out, or leave 'data' out of --top\)$"):
        netcfg.export(spec, weights, "onnx", tmp_path / "x.onnx", outputs=["data", "ip"])
    assert list(tmp_path.glob("*.onnx")) == [] and list(tmp_path.glob(".x.onnx*")) == []

