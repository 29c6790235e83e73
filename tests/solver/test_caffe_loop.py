"""Whole Solver iterations against Caffe's Solver::Step and SGDSolver::ApplyUpdate, written out by hand.

``tests/solver/test_optim.py`` checks each update rule on one tensor; here the tiny
MLP of ``test_runner.py`` trains a few iterations through ``Solver.solve()`` and its
weights are compared with Caffe's loop replayed on the same batches: ``iter_size``
forward/backward passes summed, ``ClipGradients`` on that sum, ``Normalize`` (divide by
``iter_size``), ``Regularize`` (L2 or L1 times decay_mult), ``ComputeUpdateValue``.
"""

from __future__ import annotations

import math

import pytest
import torch

from netcfg.solver import Solver
from netcfg.solver.spec import load_solver
from tests.solver.test_runner import MLP, write_solver

STEPS = 6


def caffe_loop(s: Solver, steps: int, clip_gradients: float | None) -> int:
    """Caffe's iterations on ``s``'s net and data (updates in float64); how many of them clipped."""
    spec, infos, clipped = s.spec, {i.name: i for i in s.net.param_infos()}, 0
    history = {n: torch.zeros_like(i.param, dtype=torch.float64) for n, i in infos.items()}
    history2 = {n: torch.zeros_like(i.param, dtype=torch.float64) for n, i in infos.items()}  # Adam's v
    s.net.train()
    for it in range(steps):
        s.net.zero_grad(set_to_none=True)
        for _ in range(spec.iter_size):  # Net::ForwardBackward adds into the diffs
            s.net.loss(s.net(**s.train_data.next_batch())).backward()
        diff = {n: i.param.grad.double() for n, i in infos.items()}
        norm = math.sqrt(sum(float((d * d).sum()) for d in diff.values()))
        if clip_gradients is not None and norm > clip_gradients:  # ClipGradients, before Normalize
            diff = {n: d * (clip_gradients / norm) for n, d in diff.items()}
            clipped += 1
        with torch.no_grad():
            for n, info in infos.items():
                w, d = info.param.double(), diff[n] / spec.iter_size  # Normalize
                decay = spec.weight_decay * info.decay_mult  # Regularize
                d = d + decay * (torch.sign(w) if spec.regularization_type == "L1" else w)
                rate = s.lr(it) * info.lr_mult
                if spec.type == "Adam":  # AdamSolver: delta before the bias correction, t = iter + 1
                    history[n] = spec.momentum * history[n] + (1 - spec.momentum) * d
                    history2[n] = spec.momentum2 * history2[n] + (1 - spec.momentum2) * d * d
                    correction = math.sqrt(1 - spec.momentum2 ** (it + 1)) / (1 - spec.momentum ** (it + 1))
                    info.param.copy_(w - rate * correction * history[n] / (history2[n].sqrt() + spec.delta))
                    continue
                previous = history[n]
                history[n] = spec.momentum * previous + rate * d
                step = history[n] if spec.type == "SGD" else (1 + spec.momentum) * history[n] - spec.momentum * previous
                info.param.copy_(w - step)
    return clipped


BIAS_MULTS = MLP.replace("num_output: 10, weight_filler: {type: xavier}}",
                         "num_output: 10, weight_filler: {type: xavier}, "
                         "param: [{lr_mult: 1}, {lr_mult: 2, decay_mult: 0}]}")


@pytest.mark.parametrize("keys", [
    {},
    {"weight_decay": 0.01},
    {"weight_decay": 0.01, "regularization_type": "L1"},
    {"type": "Nesterov", "weight_decay": 0.01},
    {"iter_size": 2, "train": {"batch_size": 16}},
    {"clip_gradients": 0.5},
    {"iter_size": 4, "train": {"batch_size": 8}, "clip_gradients": 0.5, "weight_decay": 0.01,
     "regularization_type": "L1"},
    {"type": "Adam", "base_lr": 0.01, "momentum": 0.9, "momentum2": 0.999, "delta": 0.01, "weight_decay": 0.01},
    # a changing rate: Caffe's velocity keeps the old steps at their own rate
    {"lr_policy": "step", "stepsize": 2, "gamma": 0.1, "weight_decay": 0.01},
    {"type": "Nesterov", "lr_policy": "step", "stepsize": 2, "gamma": 0.1, "weight_decay": 0.01},
    {"lr_policy": "inv", "gamma": 0.5, "power": 0.75},
    {"lr_policy": "multistep", "stepvalue": [2, 4], "gamma": 3.0, "warmup_iter": 2},  # from a rate of 0
], ids=["sgd", "l2", "l1", "nesterov", "iter_size", "clip", "iter_size_clip_l1", "adam",
        "step", "nesterov_step", "inv", "warmup_rising"])
def test_iterations_match_caffes_loop(tmp_path, keys):
    path = write_solver(tmp_path, BIAS_MULTS, test=False, max_iter=STEPS, display=0, **keys)
    # netcfg clips the mean of the iter_size gradients, Caffe their sum: Caffe's threshold is
    # netcfg's times iter_size (docs/solver-files.md; netcfg import-caffe converts it)
    clip = keys.get("clip_gradients")
    caffe_clip = clip * keys.get("iter_size", 1) if clip else None
    got = Solver(load_solver(path), out=tmp_path / "run", log=lambda line: None)
    got.solve()
    ref = Solver(load_solver(path), out=tmp_path / "ref", log=lambda line: None)
    initial = {k: v.clone() for k, v in ref.net.state_dict().items()}
    clipped = caffe_loop(ref, STEPS, caffe_clip)
    assert clipped > 0 if clip else clipped == 0
    for name, value in got.net.state_dict().items():
        assert not torch.equal(value, initial[name])  # it trained
        torch.testing.assert_close(value, ref.net.state_dict()[name], rtol=2e-5, atol=1e-6)
