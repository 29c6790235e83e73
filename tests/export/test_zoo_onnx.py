"""Every zoo net exports to ONNX, and onnxruntime agrees with the eager PyTorch net (fp32, 1e-4)."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

import netcfg
from netcfg.net import build_graph, build_net, load_net
from netcfg.solver.weights_file import copy_weights
from tests.export.helpers import CONFIGS, max_diff, random_inputs

SLOW_FLOPS = 5e9  # per sample: ImageNet-sized nets take 20 s and more to export on 2 cores
# AlexNet (61 M) and the VGG-16s (138 M) would write 0.25-0.55 GB of weights twice (safetensors,
# ONNX) and add about a minute and 2 GB of memory to CI; their layer types all export in the
# smaller nets here (by hand, 2026-11-25: AlexNet within 1.5e-8 of PyTorch, VGG-16 within 2.8e-7)
MAX_PARAMS = 50_000_000


def marks(path):
    graph = build_graph(load_net(path), "TEST")
    if graph.total_params > MAX_PARAMS:
        return [pytest.mark.skip(reason=f"{graph.total_params:,} parameters: too big to export in the suite; "
                                        "its layer types are exported in the smaller zoo nets")]
    return [pytest.mark.slow] if graph.flops > SLOW_FLOPS else []


def eager_tops(spec, weights, inputs: dict, deploy) -> dict[str, torch.Tensor]:
    """The deploy outputs as the full eager TEST net computes them (losses and all), caught
    at the layer that last writes each top: independent of the deploy form's pruning."""
    net = build_net(spec, "TEST")
    copy_weights(net, weights, strict=True)
    modules = dict(net.named_modules())
    writer = {t: (n.name, n.tops.index(t)) for n in net.graph.nodes for t in n.tops}
    caught: dict[str, torch.Tensor] = {}
    for top in deploy.outputs:
        layer, index = writer[top]

        def hook(module, args, out, top=top, index=index):
            caught[top] = out if isinstance(out, torch.Tensor) else out[index]

        modules[layer].register_forward_hook(hook)
    with torch.no_grad():
        net(**inputs)
    return caught


@pytest.mark.parametrize("config", [pytest.param(p, id=p.stem, marks=marks(p)) for p in CONFIGS])
def test_zoo_net_runs_in_onnxruntime_as_in_pytorch(config, zoo_weights, tmp_path):
    spec, weights = zoo_weights(config)
    result = netcfg.export(config, weights, "onnx", tmp_path / f"{config.stem}.onnx", check=False)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == result.deploy.inputs
    assert [o.name for o in session.get_outputs()] == result.deploy.outputs
    full = build_graph(spec, "TEST")
    for batch in (1, 5):
        inputs = random_inputs(full, batch, seed=batch)  # labels too: the eager TEST net runs its losses
        want = eager_tops(spec, weights, inputs, result.deploy)
        got = session.run(None, {n: inputs[n].numpy() for n in result.deploy.inputs})
        for name, value in zip(result.deploy.outputs, got):
            assert max_diff(torch.from_numpy(value), want[name]) < 1e-4, (config.stem, name, batch)
