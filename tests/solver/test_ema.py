"""``ema``: an exponential moving average of the weights, which tests and snapshots use."""

from __future__ import annotations

import math

import pytest

import torch
from safetensors.torch import load_file

from netcfg.solver import Solver
from netcfg.solver.checkpoint import load_tree
from netcfg.solver.spec import load_solver
from tests.cli.test_train import netcfg
from tests.solver.test_resume import CONV, assert_same_weights
from tests.solver.test_runner import MLP_DROPOUT, metrics, write_solver

EMA = {"decay": 0.9, "warmup": 3}


def replayed_average(path, steps: int, decay: float, warmup: int = 0) -> tuple[Solver, dict, dict]:
    """(the solver of ``path`` without ema after ``steps`` updates, its initial weights, their
    average over those updates, taken one by one in float64 with ema's decay ramp)."""
    plain = Solver(load_solver(path, ["ema=null"]), out=path.parent / "plain", log=lambda line: None)
    start = {k: v.double().clone() for k, v in plain.net.state_dict().items() if v.is_floating_point()}
    average = dict(start)
    for t in range(1, steps + 1):
        plain.step(1)
        d = decay * (1 - math.exp(-t / warmup)) if warmup else decay
        for k, v in plain.net.state_dict().items():
            if k in average:
                average[k] = d * average[k] + (1 - d) * v.double()
    return plain, start, average


def test_the_snapshot_holds_the_average_and_the_net_trains_on_its_own(tmp_path):
    path = write_solver(tmp_path, MLP_DROPOUT, test=False, max_iter=6, display=0, ema=EMA)
    averaged = Solver(load_solver(path), out=tmp_path / "ema", log=lambda line: None)
    averaged.solve()
    plain, _, average = replayed_average(path, 6, EMA["decay"], EMA["warmup"])
    assert_same_weights(averaged.net.state_dict(), plain.net.state_dict())  # the average changes no update
    saved = load_file(tmp_path / "ema/tiny_iter_6.safetensors")
    for k, v in average.items():
        torch.testing.assert_close(saved[k].double(), v, rtol=1e-5, atol=1e-7)
        assert not torch.equal(saved[k], plain.net.state_dict()[k])
    state, _ = load_tree(tmp_path / "ema/tiny_iter_6.solverstate")
    assert state["ema"]["updates"] == 6
    assert_same_weights({k: state["ema"]["weights"][k] for k in average}, {k: plain.net.state_dict()[k] for k in average})


def test_tests_use_the_average(tmp_path):
    path = write_solver(tmp_path, max_iter=8, test_interval=4, display=0, ema=EMA)
    assert netcfg("train", path, "--out", tmp_path / "run")[0] == 0
    code, out, err = netcfg("test", path, "--weights", tmp_path / "run/tiny_iter_8.safetensors")
    assert code == 0, err
    last = metrics(tmp_path / "run", "test")[-1]
    assert f"accuracy = {last['accuracy']:.4f}" in out and f"loss = {last['loss']:.4f}" in out


def test_a_resumed_average_goes_on_bit_for_bit(tmp_path):
    solver = write_solver(tmp_path, CONV, max_iter=12, test_interval=4, ema=EMA, type="SGD", momentum=0.9)
    assert netcfg("train", solver, "--out", tmp_path / "straight")[0] == 0
    assert netcfg("train", solver, "--out", tmp_path / "split", "--set", "max_iter=5")[0] == 0
    code, out, err = netcfg("train", solver, "--resume", tmp_path / "split/tiny_iter_5.solverstate")
    assert code == 0, err
    assert_same_weights(load_file(tmp_path / "straight/tiny_iter_12.safetensors"),
                        load_file(tmp_path / "split/tiny_iter_12.safetensors"))
    a, _ = load_tree(tmp_path / "straight/tiny_iter_12.solverstate")
    b, _ = load_tree(tmp_path / "split/tiny_iter_12.solverstate")
    assert_same_weights(a["ema"]["weights"], b["ema"]["weights"])


def test_a_resume_without_ema_trains_on_from_the_weights_not_the_average(tmp_path):
    path = write_solver(tmp_path, test=False, max_iter=4, display=0, ema=EMA)
    assert netcfg("train", path, "--out", tmp_path / "run")[0] == 0
    s = Solver(load_solver(path, ["ema=null", "max_iter=6"]), out=tmp_path / "run2", log=lambda line: None)
    s.restore(tmp_path / "run/tiny_iter_4.solverstate", force=True)
    state, _ = load_tree(tmp_path / "run/tiny_iter_4.solverstate")
    assert_same_weights({k: v for k, v in s.net.state_dict().items() if k in state["ema"]["weights"]},
                        state["ema"]["weights"])


def test_a_damaged_average_state_is_refused_with_its_key(tmp_path):
    from netcfg.solver.checkpoint import save_tree

    path = write_solver(tmp_path, test=False, max_iter=2, display=0, ema=EMA)
    assert netcfg("train", path, "--out", tmp_path / "run")[0] == 0
    state = tmp_path / "run/tiny_iter_2.solverstate"
    tree, meta = load_tree(state)
    for bad in ("null", {"updates": 2, "weights": {}, "average": "x"},
                {"updates": 2, "weights": {"ip1.weight": torch.zeros(3)}}):
        save_tree(state, {**tree, "ema": bad}, metadata={k: v for k, v in meta.items() if k != "netcfg.tree"})
        code, out, err = netcfg("train", path, "--resume", tmp_path / "run", "--set", "max_iter=4")
        assert code == 2 and "Traceback" not in err, err
        assert ("have shape [3]" if isinstance(bad, dict) and "average" not in bad
                else "'ema' is not a weight average's state") in err


def test_the_average_of_a_bfloat16_net_moves_and_resumes_exactly(tmp_path):
    # a net declared bfloat16 has bfloat16 weights: an average kept in them would never move at
    # a decay near 1 (each update adds 0.1% of the difference, below bfloat16's resolution)
    net = MLP_DROPOUT.replace("data: [1, 8, 8]", "data: {shape: [1, 8, 8], dtype: bfloat16}")
    ema = {"decay": 0.999, "warmup": 0}
    path = write_solver(tmp_path, net, test=False, max_iter=30, snapshot=10, display=0, base_lr=0.5, ema=ema)
    _, start, average = replayed_average(path, 30, 0.999)
    assert netcfg("train", path, "--out", tmp_path / "straight")[0] == 0
    saved = load_file(tmp_path / "straight/tiny_iter_30.safetensors")
    assert saved["ip1.weight"].dtype == torch.bfloat16
    moved = (average["ip1.weight"] - start["ip1.weight"]).abs()
    assert moved.max() > 1e-3  # well above the rounding of a bfloat16 near 0.3 (1e-3)
    for k, v in average.items():
        torch.testing.assert_close(saved[k].double(), v, rtol=8e-3, atol=1e-4)
    # the float32 average goes on from a snapshot: bit for bit as the straight run
    assert netcfg("train", path, "--out", tmp_path / "split", "--set", "max_iter=10")[0] == 0
    code, out, err = netcfg("train", path, "--resume", tmp_path / "split/tiny_iter_10.solverstate")
    assert code == 0, err
    assert_same_weights(saved, load_file(tmp_path / "split/tiny_iter_30.safetensors"))


def test_ema_true_takes_the_defaults_and_false_none(tmp_path):
    on = load_solver(write_solver(tmp_path, ema=True))
    assert (on.ema.decay, on.ema.warmup) == (0.9999, 2000)
    assert load_solver(write_solver(tmp_path / "off", ema=False)).ema is None


def test_weights_loaded_from_python_restart_the_average(tmp_path):
    path = write_solver(tmp_path, test=False, max_iter=2, display=0)
    assert netcfg("train", path, "--out", tmp_path / "run")[0] == 0
    s = Solver(load_solver(path, ["ema={decay: 0.9, warmup: 0}"]), out=tmp_path / "ft", log=lambda line: None)
    s.load_weights(tmp_path / "run/tiny_iter_2.safetensors")
    with s.ema.in_net():  # the average is the loaded weights, not the random start
        assert_same_weights({k: v for k, v in s.net.state_dict().items() if v.is_floating_point()},
                            load_file(tmp_path / "run/tiny_iter_2.safetensors"))


def test_the_schema_takes_ema_as_a_switch_or_a_mapping():
    # an editor validating with `netcfg schema solver` flagged `ema: true`, which netcfg takes
    jsonschema = pytest.importorskip("jsonschema")
    from netcfg.schema import solver_schema

    validator = jsonschema.Draft202012Validator(solver_schema())
    base = {"net": "n.yaml", "base_lr": 0.1, "max_iter": 1}
    for ema in (True, False, None, {"decay": 0.99}):
        assert list(validator.iter_errors({**base, "ema": ema})) == [], ema
    assert list(validator.iter_errors({**base, "ema": "yes"}))
