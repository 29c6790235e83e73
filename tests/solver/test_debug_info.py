"""``debug_info: true``: Caffe's per-layer [Forward]/[Backward]/[Update] lines on displayed iterations."""

from __future__ import annotations

import re

import pytest
import torch

from netcfg.solver import Solver, TrainingDiverged
from netcfg.solver.spec import load_solver
from tests.reliability import write_tiny_solver
from tests.solver.test_deferred_check import poison
from tests.solver.test_runner import MLP, MLP_DROPOUT, metrics, write_solver

LINE = re.compile(r"    \[(Forward|Backward)\] (.*): ([-0-9.e+]+)$")


def train(tmp_path, net=MLP_DROPOUT, name="run", **keys) -> tuple[Solver, list[str]]:
    lines: list[str] = []
    s = Solver(load_solver(write_solver(tmp_path, net, test=False, **keys)), out=tmp_path / name, log=lines.append)
    s.solve()
    return s, lines


def values(lines: list[str]) -> list[tuple[str, float]]:
    return [(f"[{m[1]}] {m[2]}", float(m[3])) for m in map(LINE.match, lines) if m]


def test_the_lines_come_on_displayed_iterations_in_caffes_order(tmp_path):
    s, lines = train(tmp_path, max_iter=4, display=2, debug_info=True)
    shown = [i for i, x in enumerate(lines) if x.startswith("Iteration ")]
    blocks = [lines[a + 1:b] for a, b in zip([-1] + shown, shown)]  # what precedes each display line
    assert [bool(values(b)) for b in blocks] == [True, True, False]  # iterations 0 and 2; not 1, 3 (nor the end)
    first = [k for k, _ in values(blocks[0])]
    assert first == [
        "[Forward] Input data data",
        "[Forward] Layer ip1, top blob ip1 data",
        "[Forward] Layer ip1, param blob weight data",
        "[Forward] Layer ip1, param blob bias data",
        "[Forward] Layer relu1, top blob ip1 data",
        "[Forward] Layer drop1, top blob ip1 data",
        "[Forward] Layer ip2, top blob ip2 data",
        "[Forward] Layer ip2, param blob weight data",
        "[Forward] Layer ip2, param blob bias data",
        "[Forward] Layer loss, top blob loss data",
        "[Backward] Layer loss, bottom blob ip2 diff",
        "[Backward] Layer ip2, bottom blob ip1 diff",
        "[Backward] Layer ip2, param blob weight diff",
        "[Backward] Layer ip2, param blob bias diff",
        "[Backward] Layer drop1, bottom blob ip1 diff",
        "[Backward] Layer relu1, bottom blob ip1 diff",
        "[Backward] Layer ip1, param blob weight diff",  # the input data takes no gradient
        "[Backward] Layer ip1, param blob bias diff",
    ]
    got = dict(values(blocks[0]))
    assert got["[Forward] Layer loss, top blob loss data"] == pytest.approx(metrics(tmp_path / "run")[0]["loss"], rel=1e-5)
    # the first SGD step has an empty velocity and no decay: the step is base_lr * gradient
    updates = {m[1]: (float(m[2]), float(m[3])) for m in (re.match(r"    \[Update\] Layer (\w+, param \w+) data: "
                                                                     r"(\S+); diff: (\S+)$", x) for x in blocks[0]) if m}
    assert list(updates) == ["ip1, param weight", "ip1, param bias", "ip2, param weight", "ip2, param bias"]
    for layer, (data, step) in updates.items():
        name, param = layer.split(", param ")
        assert step == pytest.approx(0.1 * got[f"[Backward] Layer {name}, param blob {param} diff"], rel=1e-4)
    norms = next(x for x in blocks[0] if "All net params" in x)
    fresh = Solver(load_solver(write_solver(tmp_path / "fresh", MLP_DROPOUT, test=False)), out=tmp_path / "f",
                   log=lambda line: None)  # the same seed: the same initial weights
    l1 = sum(float(p.detach().abs().sum()) for p in fresh.net.parameters())
    assert float(re.search(r"L1 norm = \(([^,]+),", norms)[1]) == pytest.approx(l1, rel=1e-5)


def test_watching_does_not_change_the_training(tmp_path):
    watched, lines = train(tmp_path, max_iter=5, display=1, debug_info=True, name="watched")
    plain, _ = train(tmp_path, max_iter=5, display=1, name="plain")
    assert len([x for x in lines if "[Update]" in x]) == 5 * 4
    for (name, a), b in zip(watched.net.state_dict().items(), plain.net.state_dict().values()):
        assert torch.equal(a, b), name


def test_iter_size_shows_each_pass_with_caffes_unscaled_gradients(tmp_path):
    # the first of two passes of batch 16 sees the batch a single pass of 16 sees: Caffe's
    # blob diffs are of the loss, not of loss / iter_size
    _, two = train(tmp_path, MLP, max_iter=1, display=1, debug_info=True, iter_size=2, train={"batch_size": 16},
                   name="two")
    _, one = train(tmp_path, MLP, max_iter=1, display=1, debug_info=True, train={"batch_size": 16}, name="one")
    key = "[Backward] Layer loss, bottom blob ip2 diff"
    passes = [v for k, v in values(two) if k == key]
    assert len(passes) == 2 and len([k for k, _ in values(two) if k == "[Forward] Input data data"]) == 2
    assert passes[0] == pytest.approx(dict(values(one))[key], rel=1e-5)
    assert len([k for k, _ in values(two) if "param blob weight diff" in k]) == 2  # once per layer, not per pass


def test_under_compile_the_watched_iteration_runs_eagerly_and_the_compile_time_is_the_compiles(tmp_path):
    # iteration 0 is watched (eager), iteration 1 is the first compiled one: the log's
    # "torch.compile: the first iteration took" came after iteration 0, before anything compiled
    from torch._dynamo.utils import counters

    counters.clear()
    graphs: list[int] = []
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("torch.compile: the first iteration took"):
            graphs.append(counters["stats"]["unique_graphs"])

    path = write_solver(tmp_path, MLP, test=False, max_iter=2, display=2, compile=True, debug_info=True)
    Solver(load_solver(path), out=tmp_path / "run", log=log).solve()
    assert len(graphs) == 1 and graphs[0] > 0
    assert values(lines)  # iteration 0's per-layer lines, from the eager net's hooks


def test_an_update_the_deferred_check_skips_is_logged_as_skipped(tmp_path):
    # the fused kernel is called and skips on the device flag: its [Update] lines said "diff: 0",
    # as if the step had been taken (the per-iteration check stops before the lines are logged)
    path = write_tiny_solver(tmp_path, max_iter=4, display=1, snapshot=0, debug_info=True)
    lines: list[str] = []
    s = Solver(load_solver(path), out=tmp_path / "run", log=lines.append, deferred_check=True)
    poison(s, 2)
    with pytest.raises(TrainingDiverged, match="at iteration 2; first made by the backward pass of layer 'ip1'"):
        s.solve()
    block = lines[max(i for i, x in enumerate(lines) if x.startswith("Iteration 1 ")) + 1:]
    assert "    [Backward] Layer ip1, param blob weight diff: nan" in block  # the poisoned gradient, shown
    assert [x for x in block if "[Update]" in x] == [
        "    [Update] skipped: the loss or a gradient is NaN or infinite (training stops)"]
    assert sum("[Update] Layer" in x for x in lines) == 2 * 4  # iterations 0 and 1 were updated
