"""``freeze:`` (netcfg/solver/freeze.py): which parameters stop learning, by any name they answer to."""

from __future__ import annotations

import torch

from netcfg.solver import Solver
from tests.solver.test_runner import write_solver

SHARED = """\
name: Shared
inputs:
  data: [1, 8, 8]
  label: {shape: [], dtype: int64}
layers:
  - {name: flat, type: Flatten, bottom: data}
  - {name: ip0, type: InnerProduct, num_output: 16}
  - {name: p, type: InnerProduct, num_output: 16, param: [{name: w}, {name: b}]}
  - {name: q, type: InnerProduct, num_output: 16, param: [{name: w}, {name: b}]}
  - {name: head, type: InnerProduct, num_output: 10}
  - {name: loss, type: SoftmaxWithLoss, bottom: [head, label]}
"""


def test_a_shared_weight_is_frozen_by_the_name_of_either_layer(tmp_path):
    # q.weight is in the state_dict (and the weights report) but param_infos holds the shared
    # tensor once, as p.weight: freeze: ['q'] was refused as matching no parameter
    lines = []
    s = Solver.from_file(write_solver(tmp_path, SHARED, test=False, freeze=["q"], max_iter=3),
                         out=tmp_path / "run", log=lines.append)
    before = {k: v.clone() for k, v in s.net.state_dict().items()}
    s.solve()
    after = s.net.state_dict()
    for name in ("p.weight", "p.bias", "q.weight", "q.bias"):  # one tensor each pair: frozen by either name
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert "freeze: 272 of 1,482 parameters frozen (2 tensors), 1,210 trainable" in lines
