"""ONNX at the low opsets (9-17, the TorchScript-based exporter): every example of every type
runs in onnxruntime but the documented exceptions; Pooling and SPP have no ceil_mode below 10."""

from __future__ import annotations

import itertools

import pytest

import netcfg
from netcfg.layers._registry import registry
from tests.export.helpers import examples_net, spec_of, write_weights

TOL = 1e-4


def pooling_grid(bottom: str, one_d: bool) -> list[dict]:
    """One Pooling layer reading ``bottom`` per op, kernel, stride, pad (< kernel) and round mode."""
    layers = []
    for op, k, s, mode in itertools.product(("MAX", "AVE"), (2, 3, 4), (1, 2, 3), ("CEIL", "FLOOR")):
        for p in range(k):
            layers.append({"name": f"{bottom}_{op}_k{k}s{s}p{p}{mode[0]}".lower(), "type": "Pooling",
                           "bottom": bottom, "pool": op, "kernel_size": k, "stride": s, "pad": p, "round_mode": mode})
    return layers


@pytest.mark.parametrize("opset", [9, 17])
def test_pooling_exports_at_any_opset_over_a_grid_of_shapes(opset, tmp_path):
    """Kernels 2-4, strides 1-3, every pad below the kernel, both round modes, MAX and AVE, on
    axes of 4 to 7 (2-d and 1-d), each an output of one net checked in onnxruntime against the
    eager net at batch 1 and 5. At opset 9 onnxruntime refused kernel 2, stride 2, pad 1 on a
    size-7 axis ('Pad should be smaller than kernel') and others gave the wrong shape or, for
    AVE, divided the last window by the kernel instead of Caffe's clipped window."""
    inputs = {"x": [2, 7, 6], "y": [2, 5, 4], "z": [2, 7]}
    layers = [*pooling_grid("x", False), *pooling_grid("y", False), *pooling_grid("z", True)]
    spec = spec_of({"name": "PoolGrid", "inputs": inputs, "layers": layers})
    weights = write_weights(spec, tmp_path / "p.safetensors")
    result = netcfg.export(spec, weights, "onnx", tmp_path / "p.onnx", opset=opset)  # checked in onnxruntime
    assert len(result.deploy.outputs) == len(layers)
    assert result.max_abs_diff < TOL and result.checked_batches == (1, 5)


@pytest.mark.parametrize("opset", [9, 17])
def test_spp_exports_below_opset_10(opset, tmp_path):
    """SPP's (7, 6) input at 4 x 4 bins: the exporter padded the end past the kernel at opset 9,
    which onnxruntime refused."""
    spec = spec_of({"name": "S", "inputs": {"x": [2, 7, 6]},
                    "layers": [{"name": "spp", "type": "SPP", "pyramid_height": 3}]})
    weights = write_weights(spec, tmp_path / "s.safetensors")
    result = netcfg.export(spec, weights, "onnx", tmp_path / "s.onnx", opset=opset)  # checked in onnxruntime
    assert result.max_abs_diff < TOL and result.checked_batches == (1, 5)


def refused_below(type_name: str, example: dict) -> int:
    """The lowest opset onnxruntime runs this example at, as docs/export.md's table says."""
    if type_name == "ArgMax":
        return 11  # float Equal (ONNX 11) in top_k > 1, Flip (ONNX 10) in top_k 1
    float64 = any(isinstance(v, dict) and v.get("dtype") == "float64" for v in example["inputs"].values())
    if type_name == "ReLU" and example.get("negative_slope") and float64:
        return 16  # onnxruntime's LeakyRelu takes float64 from opset 16
    return 9


def every_example_net(opset: int) -> dict:
    """Every example of every built-in type a deploy net can hold that runs at ``opset``."""
    return examples_net("EveryExample", lambda type_name, i, example: refused_below(type_name, example) <= opset)


def test_every_example_exports_at_opset_9_but_the_documented_ones(tmp_path):
    spec = spec_of(every_example_net(9))
    weights = write_weights(spec, tmp_path / "every.safetensors")
    result = netcfg.export(spec, weights, "onnx", tmp_path / "every.onnx", opset=9)  # checked in onnxruntime
    assert "Pooling" in {n.spec.type for n in result.deploy.graph.nodes}
    assert result.max_abs_diff < TOL and result.checked_batches == (1, 5)


@pytest.mark.parametrize(("type_name", "opset"), [("ArgMax", 10), ("ReLU", 15)])
def test_the_documented_exceptions_are_refused_below_their_opset_at_their_line(type_name, opset, tmp_path):
    cls = registry()[type_name]
    example = next(e for e in cls.examples if refused_below(type_name, e) > 9)
    fields = {k: v for k, v in example.items() if k != "inputs"}
    spec = spec_of({"name": "T", "inputs": example["inputs"], "layers": [{"name": "l", "type": type_name, **fields}]})
    weights = write_weights(spec, tmp_path / "w.safetensors")
    with pytest.raises(netcfg.NetcfgError, match=f"layer 'l' \\({type_name}\\) cannot be exported to ONNX"):
        netcfg.export(spec, weights, "onnx", tmp_path / "x.onnx", opset=opset)
    assert not (tmp_path / "x.onnx").exists()
    result = netcfg.export(spec, weights, "onnx", tmp_path / "x.onnx", opset=opset + 1)
    assert result.max_abs_diff < TOL
