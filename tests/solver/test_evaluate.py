"""The test pass: Accuracy's per-class top reported over the whole test split, exactly.

It used to be dropped: only 0-d outputs were summed, so a net with
``top: [accuracy, per_class]`` printed and recorded no per-class accuracy anywhere.
"""

from __future__ import annotations

import json

import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.net import Net, build_graph
from netcfg.net.spec import net_from_source
from netcfg.solver import Solver
from netcfg.solver.evaluate import OutputSums, sum_outputs
from netcfg.solver.spec import load_solver
from netcfg.source import parse_yaml
from tests.solver.test_runner import MLP, write_solver

PER_CLASS = MLP.replace("bottom: [ip2, label], include:", "bottom: [ip2, label], top: [accuracy, per_class], include:")

SCORES = """\
name: t
inputs: {scores: [3], label: {shape: [], dtype: int64}}
layers:
  - {name: acc, type: Accuracy, bottom: [scores, label], top: [accuracy, per_class]}
"""


def batch(predicted: list[int], label: list[int]) -> dict[str, torch.Tensor]:
    return {"scores": torch.nn.functional.one_hot(torch.tensor(predicted), 3).float(), "label": torch.tensor(label)}


def test_per_class_accuracy_is_hits_over_labels_over_all_batches():
    net = Net(build_graph(net_from_source(parse_yaml(SCORES)), "TEST"))
    # class 2 is absent from the first batch (Caffe's value there: 0) and 1 of its 4 labels
    # is in the second; class 0: 1 of 1 right, then 0 of 3 (a mean of the batches: 0.5)
    batches = [batch([0, 1, 1, 1], [0, 1, 1, 1]), batch([1, 1, 1, 2, 2, 0, 2, 1], [0, 0, 0, 2, 2, 2, 2, 1])]
    sums = sum_outputs(net, batches)
    means = sums.means()
    assert means["per_class"] == pytest.approx([1 / 4, 4 / 4, 3 / 4])
    assert means["accuracy"] == pytest.approx(8 / 12)
    assert sums.count == 12


def test_sums_of_two_ranks_add_up_to_those_of_one():
    net = Net(build_graph(net_from_source(parse_yaml(SCORES)), "TEST"))
    a, b = batch([0, 2], [0, 0]), batch([1, 2, 2], [1, 2, 1])
    ranks = OutputSums()
    for part in (sum_outputs(net, [a]), sum_outputs(net, [b])):
        ranks.add(part)
    one = sum_outputs(net, [a, b]).means()
    assert ranks.means()["per_class"] == pytest.approx(one["per_class"]) == [0.5, 0.5, 1.0]
    assert ranks.means()["accuracy"] == pytest.approx(one["accuracy"]) == pytest.approx(3 / 5)
    assert sum_outputs(net, [a]).means()["per_class"] == [0.5, 0.0, 0.0]  # no labels of a class: 0, as in Caffe


def test_a_test_of_the_loop_logs_and_records_the_per_class_list(tmp_path):
    lines: list[str] = []
    s = Solver(load_solver(write_solver(tmp_path, PER_CLASS, max_iter=5, test_interval=5)), out=tmp_path / "run", log=lines.append)
    s.solve()
    result = s.last_test["per_class"]
    assert len(result) == 10 and all(0.0 <= x <= 1.0 for x in result)
    # the same split as one batch: its per-class accuracy is hits over labels by definition
    parts = list(s.test_data.epoch_batches())  # 50, 50 and 20 samples
    whole = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    assert len(whole["label"]) == 120
    s.test_net.eval()
    with torch.no_grad():
        expected = s.test_net(**whole)["per_class"]
    assert result == pytest.approx(expected.tolist())
    assert any(", per_class = [" in line and line.count(", ") >= 11 for line in lines if "Testing net" in line)
    record = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["per_class"] for r in record if r["event"] == "test"][-1] == pytest.approx(result)


def test_snapshot_best_refuses_the_per_class_list(tmp_path):
    path = write_solver(tmp_path, PER_CLASS, test_interval=5, snapshot_best={"metric": "per_class", "mode": "max"})
    with pytest.raises(ConfigErrors, match=r"'per_class' is a list of 10 values \(one per class\), not a scalar"):
        Solver(load_solver(path), out=tmp_path / "run", log=lambda line: None)
