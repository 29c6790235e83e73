"""The Solver's training loop: what one update does, seeding, loss weights, divergence, the run directory.

Every run here is a tiny MLP on the bundled 8x8 digits with ``limit:`` cutting the
data, a few iterations long. ``write_solver`` and ``solve`` are shared with
``test_resume.py`` and ``tests/cli/test_train.py``.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
import torch
import yaml

from netcfg.solver import Solver
from netcfg.solver.runner import TrainingDiverged
from netcfg.solver.spec import load_solver
from tests.cli import netcfg

MLP = """\
name: TinyMLP
inputs:
  data: [1, 8, 8]
  label: {shape: [], dtype: int64}
layers:
  - {name: ip1, type: InnerProduct, bottom: data, num_output: 16, weight_filler: {type: xavier}}
  - {name: relu1, type: ReLU, top: ip1}
  - {name: ip2, type: InnerProduct, num_output: 10, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
  - {name: accuracy, type: Accuracy, bottom: [ip2, label], include: {phase: TEST}}
"""

# the MLP with Dropout, so that exactness also depends on the RNG
MLP_DROPOUT = MLP.replace(
    "  - {name: ip2,", "  - {name: drop1, type: Dropout, dropout_ratio: 0.3, top: ip1}\n  - {name: ip2,"
)

TRAIN = {"source": "digits", "split": "train", "batch_size": 32, "scale": 0.00390625, "limit": 256}
TEST = {"source": "digits", "split": "test", "batch_size": 50, "scale": 0.00390625, "limit": 120}


def write_solver(directory: Path, net: str = MLP, *, name: str = "solver", test: bool = True, **keys) -> Path:
    """net.yaml and <name>.yaml in ``directory``: a short SGD run on digits, ``keys`` overriding."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "net.yaml").write_text(net)
    solver = {"net": "net.yaml", "data": {"train": dict(TRAIN), **({"test": dict(TEST)} if test else {})},
              "type": "SGD", "base_lr": 0.1, "momentum": 0.9, "max_iter": 10, "display": 1,
              "snapshot_prefix": "tiny", "random_seed": 1}
    for key, value in keys.items():
        if key in ("train", "test"):
            solver["data"][key].update(value)
        else:
            solver[key] = value
    if solver.get("type") not in ("SGD", "Nesterov") and "momentum" not in keys:
        del solver["momentum"]
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(solver, sort_keys=False))
    return path


def solve(path: Path, out: Path, overrides: tuple[str, ...] = ()) -> Solver:
    """Train the solver file to max_iter, quietly; the Solver is returned for inspection."""
    s = Solver(load_solver(path, overrides), out=out, log=lambda line: None)
    s.solve()
    return s


def weights(s: Solver) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in s.net.state_dict().items()}


def metrics(run: Path, event: str = "train") -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


# ------------------------------------------------------------ one update


def test_iter_size_2_of_half_batches_equals_one_full_batch(tmp_path):
    # 256 samples: the 64-batches and the pairs of 32-batches cut each epoch's
    # permutation at the same places, so both see the same samples per update
    keys = dict(weight_decay=0.01, max_iter=6, test=False)
    full = solve(write_solver(tmp_path / "a", train={"batch_size": 64}, iter_size=1, **keys), tmp_path / "a/run")
    half = solve(write_solver(tmp_path / "b", train={"batch_size": 32}, iter_size=2, **keys), tmp_path / "b/run")
    a, b = weights(full), weights(half)
    init = weights(Solver(load_solver(tmp_path / "a/solver.yaml"), out=tmp_path / "c", log=lambda line: None))
    assert not torch.equal(a["ip1.weight"], init["ip1.weight"])  # it trained
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    la, lb = metrics(tmp_path / "a/run"), metrics(tmp_path / "b/run")
    assert [r["iter"] for r in la] == [r["iter"] for r in lb] == list(range(6))
    for ra, rb in zip(la, lb):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        assert rb["epoch"] == ra["epoch"]  # iter_size batches count toward the epoch


def test_lr_mult_0_freezes_a_layer(tmp_path):
    net = MLP.replace("weight_filler: {type: xavier}}",
                      "weight_filler: {type: xavier}, param: [{lr_mult: 0}, {lr_mult: 0}]}", 1)
    path = write_solver(tmp_path, net, weight_decay=0.01, max_iter=5, test=False)
    before = weights(Solver(load_solver(path), out=tmp_path / "init", log=lambda line: None))
    after = weights(solve(path, tmp_path / "run"))
    assert torch.equal(after["ip1.weight"], before["ip1.weight"])
    assert torch.equal(after["ip1.bias"], before["ip1.bias"])
    assert not torch.equal(after["ip2.weight"], before["ip2.weight"])


def test_lr_mult_and_decay_mult_make_param_groups(tmp_path):
    net = MLP.replace("num_output: 10, weight_filler: {type: xavier}}",
                      "num_output: 10, weight_filler: {type: xavier}, "
                      "param: [{lr_mult: 1}, {lr_mult: 2, decay_mult: 0}]}")
    path = write_solver(tmp_path, net, base_lr=0.05, weight_decay=0.001, lr_policy="step", gamma=0.5,
                        stepsize=2, max_iter=3, test=False)
    s = solve(path, tmp_path / "run")
    groups = {name: g for g in s.optimizer.param_groups for name in g["param_names"]}
    assert len(s.optimizer.param_groups) == 2  # one per distinct (lr_mult, decay_mult)
    assert groups["ip2.weight"]["lr"] == pytest.approx(0.025)  # the step policy at iteration 2
    assert groups["ip2.bias"]["lr"] == pytest.approx(2 * groups["ip2.weight"]["lr"])
    assert groups["ip2.weight"]["weight_decay"] == pytest.approx(0.001)
    assert groups["ip2.bias"]["weight_decay"] == 0
    assert groups["ip1.bias"]["weight_decay"] == pytest.approx(0.001)  # decay_mult defaults to 1


def test_reported_loss_is_the_loss_weighted_sum_of_the_heads(tmp_path):
    net = MLP.replace(
        "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}\n",
        "  - {name: ip3, type: InnerProduct, bottom: ip1, num_output: 10}\n"
        "  - {name: loss_a, type: SoftmaxWithLoss, bottom: [ip2, label], loss_weight: 0.3}\n"
        "  - {name: loss_b, type: SoftmaxWithLoss, bottom: [ip3, label], loss_weight: 2}\n",
    ).replace("[ip2, label], top: accuracy", "[ip2, label]")
    s = solve(write_solver(tmp_path, net, max_iter=4, test=False), tmp_path / "run")
    records = metrics(tmp_path / "run")
    assert len(records) == 4
    for r in records:
        assert r["loss"] == pytest.approx(0.3 * r["loss_a"] + 2 * r["loss_b"], rel=1e-6)
    total, outs, _ = s._train_step()
    assert total == pytest.approx(0.3 * outs["loss_a"] + 2 * outs["loss_b"], rel=1e-6)


# ------------------------------------------------------------ seeding


def test_random_seed_repeats_a_cpu_run_bit_for_bit(tmp_path):
    path = write_solver(tmp_path, MLP_DROPOUT, max_iter=6, test=False)
    a = weights(solve(path, tmp_path / "a", ("random_seed=7",)))
    b = weights(solve(path, tmp_path / "b", ("random_seed=7",)))
    c = weights(solve(path, tmp_path / "c", ("random_seed=8",)))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in metrics(tmp_path / "a")] == [r["loss"] for r in metrics(tmp_path / "b")]
    assert not torch.equal(a["ip1.weight"], c["ip1.weight"])


# ------------------------------------------------------------ divergence

# exp() overflows once the rate jumps 10,000-fold at iteration 5
EXP_NET = MLP.replace("  - {name: relu1, type: ReLU, top: ip1}", "  - {name: exp1, type: Exp, top: ip1}")
DIVERGING = dict(lr_policy="step", gamma=10000, stepsize=5, snapshot=2, max_iter=20, test=False)


def test_divergence_names_the_layer_and_the_last_good_snapshot(tmp_path):
    s = Solver(load_solver(write_solver(tmp_path, EXP_NET, **DIVERGING)), out=tmp_path / "run",
               log=lambda line: None)
    with pytest.raises(TrainingDiverged) as e:
        s.solve()
    message = str(e.value)
    assert "layer 'exp1'" in message
    assert f"at iteration {s.iter}" in message
    good = Path(re.search(r"last good snapshot: (\S+\.solverstate)", message).group(1))
    assert good.is_file()
    # the snapshot taken at the diverging iteration holds the weights that diverged;
    # the one named must be of an iteration whose loss was still finite
    good_iter = int(good.stem.rsplit("_", 1)[1])
    assert good_iter < s.iter
    again = Solver(load_solver(tmp_path / "solver.yaml"), out=tmp_path / "again", log=lambda line: None)
    again.restore(good)
    assert math.isfinite(again._train_step()[0])
    assert not list((tmp_path / "run").glob("*.tmp-*"))


# ------------------------------------------------------------ the run directory


def test_metrics_record_train_and_test_events(tmp_path):
    s = solve(write_solver(tmp_path, max_iter=6, display=2, test_interval=3), tmp_path / "run")
    train = metrics(tmp_path / "run")
    assert [r["iter"] for r in train] == [0, 2, 4]
    for r in train:
        assert {"iter", "epoch", "loss", "lr", "images_per_s", "seconds"} <= r.keys()
        assert r["lr"] == 0.1 and r["images_per_s"] > 0 and math.isfinite(r["loss"])
    assert train[-1]["epoch"] == pytest.approx(5 * 32 / 256)
    assert train[-1]["seconds"] >= train[0]["seconds"]
    tests = metrics(tmp_path / "run", "test")
    assert [r["iter"] for r in tests] == [0, 3, 6]
    for r in tests:
        assert 0 <= r["accuracy"] <= 1 and r["loss"] > 0 and r["samples"] == 120
    assert s.last_test == {k: tests[-1][k] for k in ("loss", "accuracy")}
    snaps = metrics(tmp_path / "run", "snapshot")
    assert [r["iter"] for r in snaps] == [6]
    assert (tmp_path / "run" / snaps[0]["weights"]).is_file()


def test_images_per_s_leaves_out_tests_and_snapshots(tmp_path, monkeypatch):
    # a test or snapshot between two displays once counted as training time: the first
    # display after Caffe's iteration-0 test of Fashion-MNIST read "9 images/s"
    import netcfg.solver.runner as runner

    real_test, real_snapshot = runner.loop_test, Solver.snapshot

    def slow_test(*args, **kwargs):
        time.sleep(1.0)
        return real_test(*args, **kwargs)

    def slow_snapshot(self, *args, **kwargs):
        time.sleep(1.0)
        return real_snapshot(self, *args, **kwargs)

    monkeypatch.setattr(runner, "loop_test", slow_test)
    monkeypatch.setattr(Solver, "snapshot", slow_snapshot)
    solve(write_solver(tmp_path, max_iter=5, display=1, test_interval=2, snapshot=2), tmp_path / "run")
    train = metrics(tmp_path / "run")
    assert [r["iter"] for r in train] == [0, 1, 2, 3, 4]
    # a second of test or snapshot before iterations 0, 2 and 3 would cap them at 32 images/s
    assert min(r["images_per_s"] for r in train) > 100
    assert train[-1]["seconds"] > 3  # the elapsed time still holds them


def test_on_step_hears_of_every_iteration(tmp_path):
    seen = []
    s = Solver(load_solver(write_solver(tmp_path, max_iter=4, test=False)), out=tmp_path / "run",
               log=lambda line: None, on_step=lambda solver, loss: seen.append((solver.iter, loss)))
    s.solve()
    assert [it for it, _ in seen] == [1, 2, 3, 4]  # called once the iteration is done
    assert [loss for _, loss in seen] == [r["loss"] for r in metrics(tmp_path / "run")]


def test_config_yaml_loads_back_as_the_same_solver(tmp_path):
    path = write_solver(tmp_path, MLP_DROPOUT, max_iter=2, weight_decay=0.001)
    solve(path, tmp_path / "run", ("base_lr=0.05",))
    again = load_solver(tmp_path / "run/config.yaml")
    first = load_solver(path, ("base_lr=0.05",))
    assert again.base_lr == 0.05
    assert again.net_spec.model_dump() == first.net_spec.model_dump()
    assert again.model_dump(exclude={"net"}) == first.model_dump(exclude={"net"})


def test_weights_reach_layers_only_the_test_net_has(tmp_path):
    import torch
    from safetensors.torch import save_file

    net = MLP.replace("  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}\n",
                      "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}\n"
                      "  - {name: probe, type: InnerProduct, bottom: ip2, num_output: 3, include: {phase: TEST}}\n")
    path = write_solver(tmp_path, net, max_iter=0)
    weights = tmp_path / "w.safetensors"
    save_file({"probe.weight": torch.full((3, 10), 0.5), "probe.bias": torch.zeros(3)}, str(weights))
    s = Solver.from_file(path, [f"weights={weights}"], out=tmp_path / "run", log=lambda line: None)
    assert torch.all(s.test_net.probe.weight == 0.5)


BN_MLP = MLP.replace("  - {name: relu1,", "  - {name: bn1, type: BatchNorm, bottom: ip1, top: ip1}\n  - {name: relu1,")


@pytest.mark.parametrize("batch, limit, words", [
    (1, 256, "batch_size 1 is too small: layer 'bn1' (BatchNorm) needs at least 2 samples a batch in TRAIN "
             "(batch statistics of its [16] input) (use batch_size: 2 or more)"),
    (5, 256, "the last batch of each epoch would hold 1 sample(s) (256 = 51 x 5 + 1), but layer 'bn1' (BatchNorm) "
             "needs at least 2 samples a batch in TRAIN (batch statistics of its [16] input) (set drop_last: true")])
def test_a_batch_too_small_for_batchnorm_statistics_is_refused_before_training(tmp_path, batch, limit, words):
    # PyTorch raises mid-epoch (a traceback, nothing saved) on a BatchNorm batch of one sample of a (C,) blob
    path = write_solver(tmp_path, BN_MLP, train={"batch_size": batch, "limit": limit}, test=False, max_iter=60)
    for args in (["check", path], ["train", path]):
        code, out, err = netcfg(*map(str, args))
        assert code == 2 and words in err, err
    assert not (tmp_path / "runs").exists()
    spec = yaml.safe_load(path.read_text())
    spec["data"]["train"]["drop_last"] = True  # the single sample left over is skipped: it trains
    path.write_text(yaml.safe_dump(spec))
    if batch > 1:
        assert solve(path, tmp_path / "run").iter == 60


def test_a_net_with_every_lr_mult_0_tests_but_does_not_train(tmp_path):
    frozen = MLP.replace("weight_filler: {type: xavier}}", "weight_filler: {type: xavier}, "
                         "param: [{lr_mult: 0}, {lr_mult: 0}]}")
    path = write_solver(tmp_path, frozen, max_iter=0)
    s = solve(path, tmp_path / "run")  # max_iter: 0 writes the initial weights, as Caffe does
    code, out, err = netcfg("test", str(path), "--weights", str(tmp_path / "run/tiny_iter_0.safetensors"))
    assert code == 0 and "accuracy = " in out, err
    code, out, err = netcfg("train", str(path), "--set", "max_iter=5")
    assert code == 2 and "net: nothing to train: every parameter of the net has lr_mult 0" in err
    assert s.optimizer.param_groups[0]["lr"] == 0.0


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS device")
def test_an_mps_device_this_machine_lacks_is_a_located_error(tmp_path):
    code, out, err = netcfg("train", str(write_solver(tmp_path, device="mps")))
    assert code == 2 and "device: device is mps but this machine or PyTorch build has no MPS" in err


def test_a_solver_file_path_given_to_the_constructor_points_at_from_file(tmp_path):
    with pytest.raises(TypeError, match=r"Solver\(\) takes a SolverSpec, got str: for a solver file use Solver.from_file"):
        Solver("solvers/digits.yaml", out=tmp_path / "run")  # was AttributeError: 'str' object has no attribute 'device'
    assert not (tmp_path / "run").exists()
