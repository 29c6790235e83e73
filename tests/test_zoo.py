"""Every zoo file checks, its header's parameter count is right, and the recipes learn."""

import json
import re
from pathlib import Path

import pytest

from netcfg.net import build_graph, build_net, load_net
from netcfg.solver import Solver
from netcfg.solver.check import check_solver
from netcfg.solver.spec import load_solver

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SOLVERS = sorted((ROOT / "solvers").glob("*.yaml"))
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_header_states_its_parameter_count(path):
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    m = re.search(r"Parameters: ([\d,]+)", header)
    assert m, f"{path.name}: the header comment must state 'Parameters: N'"
    assert build_graph(load_net(path)).total_params == int(m.group(1).replace(",", ""))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_runs_forward_backward(path):
    import torch

    net = build_net(path)
    inputs = {}
    for name, blob in net.graph.inputs.items():
        if blob.dtype.startswith("int"):
            inputs[name] = torch.randint(0, 2, (2, *blob.shape))
        else:
            inputs[name] = torch.randn(2, *blob.shape)
    out = net(**inputs)
    net.loss(out).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("path", SOLVERS, ids=lambda p: p.stem)
def test_solver_checks(path):
    spec = load_solver(path)
    needs = [getattr(spec.data, s) for s in ("train", "test") if getattr(spec.data, s) is not None]
    if any(d.source == "idx" for d in needs) and not FASHION.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist")
    graphs = check_solver(spec)
    assert "TRAIN" in graphs


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_lenet_recipe_learns_fashion_mnist(tmp_path):
    # the first 1,000 iterations of Caffe's LeNet recipe; the full run reaches 90.7%
    s = Solver.from_file(ROOT / "solvers/lenet_fashion_mnist.yaml",
                         ["max_iter=1000", "test_interval=1000", "snapshot=0", "display=0"],
                         out=tmp_path / "run", log=lambda line: None)
    results = s.solve()
    assert results["accuracy"] > 0.82
    events = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [e["iter"] for e in events if e["event"] == "test"] == [0, 1000]
