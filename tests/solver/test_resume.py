"""Snapshot and resume: a resumed CPU run repeats the straight run bit for bit, and a changed solver is refused."""

from __future__ import annotations

import os
import signal

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from netcfg.solver import Solver
from netcfg.solver.rundir import RunDir
from netcfg.solver.interrupt import Interrupted
from netcfg.solver.spec import load_solver
from tests.cli.test_train import netcfg
from tests.solver.test_runner import MLP, MLP_DROPOUT, metrics, solve, write_solver

OPTIMIZERS = {
    "sgd-momentum": dict(type="SGD", base_lr=0.1, momentum=0.9, weight_decay=0.001),
    "adam": dict(type="Adam", base_lr=0.01, weight_decay=0.001),
    # the rate drops at 3 and 6: the velocity resumed at 5 is scaled for the last update's rate
    "sgd-step": dict(type="SGD", base_lr=0.1, momentum=0.9, lr_policy="step", stepsize=3, gamma=0.1),
    "nesterov-step": dict(type="Nesterov", base_lr=0.1, momentum=0.9, lr_policy="step", stepsize=3, gamma=0.1),
}


# a conv net trains in channels_last (memory_format: auto) while a snapshot stores its
# tensors contiguous: the fused optimizers must get their state back in the weights' layout
CONV = MLP_DROPOUT.replace(
    "  - {name: ip1, type: InnerProduct, bottom: data, num_output: 16, weight_filler: {type: xavier}}",
    "  - {name: conv1, type: Convolution, bottom: data, num_output: 4, kernel_size: 3, weight_filler: {type: xavier}}\n"
    "  - {name: conv2, type: Convolution, num_output: 4, kernel_size: 3, weight_filler: {type: xavier}}\n"
    "  - {name: ip1, type: InnerProduct, num_output: 16, weight_filler: {type: xavier}}")
assert CONV != MLP_DROPOUT


def train_losses(run, start: int) -> list[tuple[int, float]]:
    return [(r["iter"], r["loss"]) for r in metrics(run) if r["iter"] >= start]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def resumed_from(path, state) -> Solver:
    """The run of the solver file ``path`` resumed from ``state`` in its run directory, trained to the end."""
    resumed = Solver(load_solver(path), run_dir=RunDir.resume(load_solver(path), state), log=lambda line: None)
    resumed.restore(state)
    resumed.solve()
    return resumed


@pytest.mark.parametrize("net", ["mlp", "conv"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_resume_repeats_the_straight_run_bit_for_bit(tmp_path, optimizer, net):
    # 12 iterations straight, or 5, then --resume with max_iter grown back to 12; the
    # 256-sample epoch of 8 batches ends inside the resumed part, dropout draws on the RNG
    solver = write_solver(tmp_path, {"mlp": MLP_DROPOUT, "conv": CONV}[net], max_iter=12, test_interval=4,
                          **OPTIMIZERS[optimizer])
    assert netcfg("train", solver, "--out", tmp_path / "straight")[0] == 0
    assert netcfg("train", solver, "--out", tmp_path / "split", "--set", "max_iter=5")[0] == 0
    code, out, err = netcfg("train", solver, "--resume", tmp_path / "split/tiny_iter_5.solverstate")
    assert code == 0, err
    assert "Resumed from" in out and "iteration 5" in out
    assert_same_weights(load_file(tmp_path / "straight/tiny_iter_12.safetensors"),
                        load_file(tmp_path / "split/tiny_iter_12.safetensors"))
    assert train_losses(tmp_path / "split", 5) == train_losses(tmp_path / "straight", 5)
    tested = [{k: r[k] for k in ("iter", "loss", "accuracy")} for r in metrics(tmp_path / "split", "test")]
    assert tested == [{k: r[k] for k in ("iter", "loss", "accuracy")} for r in metrics(tmp_path / "straight", "test")]


@pytest.fixture
def ctrl_c_enabled():
    """Python's own SIGINT handler, as in a terminal: a process started in the background
    by a non-interactive shell (``cmd &``, nohup) inherits SIGINT ignored, and netcfg
    rightly leaves an ignored SIGINT ignored."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.mark.parametrize("how", ["KeyboardInterrupt", "SIGINT", "SIGTERM"])
def test_ctrl_c_inside_an_iteration_resumes_exactly(tmp_path, how, ctrl_c_enabled):
    # Ctrl-C lands while the net computes iteration 4, after its batch was drawn and
    # dropout drew its mask. A real SIGINT lets the iteration finish (Caffe's way); a
    # KeyboardInterrupt raised there (a second Ctrl-C) rolls the iteration back.
    # Either way the snapshot must resume as if nothing had happened.
    path = write_solver(tmp_path, MLP_DROPOUT, max_iter=10, test=False)
    straight = solve(path, tmp_path / "straight")
    lines = []
    s = Solver(load_solver(path), out=tmp_path / "run", log=lines.append)
    calls = []

    def interrupt(module, args, output):
        calls.append(1)
        if len(calls) == 5:
            if how == "KeyboardInterrupt":
                raise KeyboardInterrupt
            os.kill(os.getpid(), getattr(signal, how))  # SIGTERM: a scheduler's stop, taken as Ctrl-C

    s.net.ip2.register_forward_hook(interrupt)
    with pytest.raises(Interrupted) as e:
        s.solve()
    stopped = 4 if how == "KeyboardInterrupt" else 5
    assert s.iter == stopped and f"tiny_iter_{stopped}.solverstate" in str(e.value)
    if how != "KeyboardInterrupt":
        by = "SIGTERM" if how == "SIGTERM" else "Ctrl-C"
        assert f"{by}: stopping after iteration 4" in lines
        assert f"interrupted ({by}) at iteration 5" in str(e.value)
        assert e.value.exit_code == (143 if how == "SIGTERM" else 130)
    state = tmp_path / f"run/tiny_iter_{stopped}.solverstate"
    assert_same_weights(straight.net.state_dict(), resumed_from(path, state).net.state_dict())
    assert train_losses(tmp_path / "run", 0) == train_losses(tmp_path / "straight", 0)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize("type", ["SGD", "Nesterov"])
def test_a_second_ctrl_c_in_the_iteration_the_rate_drops_resumes_exactly(tmp_path, type):
    # iteration 4 drops the rate tenfold, and a KeyboardInterrupt during its forward rolls it
    # back: the SGD velocity's rescale to the new rate, set up at the iteration's start, went
    # into the snapshot with the new rate, so the resumed update never rescaled it
    path = write_solver(tmp_path, MLP_DROPOUT, max_iter=8, test=False, type=type, lr_policy="step", stepsize=4,
                        gamma=0.1)
    straight = solve(path, tmp_path / "straight")
    s = Solver(load_solver(path), out=tmp_path / "run", log=lambda line: None)
    calls = []

    def interrupt(module, args, output):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt

    s.net.ip2.register_forward_hook(interrupt)
    with pytest.raises(Interrupted):
        s.solve()
    state = tmp_path / "run/tiny_iter_4.solverstate"
    assert_same_weights(straight.net.state_dict(), resumed_from(path, state).net.state_dict())


def test_a_second_ctrl_c_during_the_update_lets_it_finish(tmp_path, ctrl_c_enabled):
    # Ctrl-C twice while the optimizer updates iteration 4 (several kernels, one per parameter
    # group): stopped there, the snapshot held iteration 4's new weights labelled as iteration 4,
    # which the resumed run then trained on again. The update and its count finish first.
    path = write_solver(tmp_path, MLP_DROPOUT, max_iter=10, test=False)
    straight = solve(path, tmp_path / "straight")
    s = Solver(load_solver(path), out=tmp_path / "run", log=lambda line: None)
    real, calls = s.optimizer.step, []

    def step(*args, **kwargs):
        done = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 5:  # the weights are updated; the iteration is not counted yet
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return done

    s.optimizer.step = step
    with pytest.raises(Interrupted) as e:
        s.solve()
    assert s.iter == 5 and "tiny_iter_5.solverstate" in str(e.value)
    state = tmp_path / "run/tiny_iter_5.solverstate"
    assert_same_weights(straight.net.state_dict(), resumed_from(path, state).net.state_dict())
    assert train_losses(tmp_path / "run", 0) == train_losses(tmp_path / "straight", 0)


AVERAGED_BEST = {"ema": {"decay": 0.9, "warmup": 2}, "snapshot_best": {"metric": "accuracy", "mode": "max"}}


@pytest.mark.parametrize("keys", [{}, AVERAGED_BEST], ids=["plain", "ema-best"])
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_a_stop_during_a_test_ends_it_at_once_and_resumes_exactly(tmp_path, how, keys, ctrl_c_enabled):
    # a scheduler's SIGTERM (or Ctrl-C) while the run tests at iteration 4: the whole test ran
    # first, and a scheduler whose grace period is shorter than the test killed the run before
    # its snapshot. The test stops after the batch it is on; the snapshot is of iteration 4's
    # start, and the resumed run tests again, as the straight run did. With ema the average
    # is out of the net before the snapshot puts it in again, and the best pair is the same
    path = write_solver(tmp_path, MLP_DROPOUT, max_iter=10, test_interval=4, **keys)
    straight = solve(path, tmp_path / "straight")
    s = Solver(load_solver(path), out=tmp_path / "run", log=lambda line: None)
    tested = []

    def stop(module, args, output):
        if not module.training:  # the layer is shared with the TRAIN net
            tested.append(s.iter)
            if tested.count(4) == 2:  # the 2nd of iteration 4's 3 test batches
                os.kill(os.getpid(), getattr(signal, how))

    s.test_net.ip2.register_forward_hook(stop)
    with pytest.raises(Interrupted) as e:
        s.solve()
    assert tested.count(4) == 2  # no batch after the stop
    assert s.iter == 4 and f"interrupted ({'SIGTERM' if how == 'SIGTERM' else 'Ctrl-C'}) at iteration 4" in str(e.value)
    assert e.value.exit_code == (143 if how == "SIGTERM" else 130)
    assert [r["iter"] for r in metrics(tmp_path / "run", "test")] == [0]  # no record of half a test
    state = tmp_path / "run/tiny_iter_4.solverstate"
    assert_same_weights(straight.net.state_dict(), resumed_from(path, state).net.state_dict())
    assert train_losses(tmp_path / "run", 0) == train_losses(tmp_path / "straight", 0)

    def scores(run):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in metrics(run, "test")]
    assert scores(tmp_path / "run") == scores(tmp_path / "straight")
    for name in ["tiny_iter_10", "tiny_best"] if keys else ["tiny_iter_10"]:  # with ema: the average, alike
        assert_same_weights(load_file(tmp_path / f"straight/{name}.safetensors"),
                            load_file(tmp_path / f"run/{name}.safetensors"))


def test_resume_refuses_a_changed_solver_unless_forced(tmp_path):
    solver = write_solver(tmp_path, MLP, max_iter=3, test=False)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    state = tmp_path / "run/tiny_iter_3.solverstate"
    code, out, err = netcfg("train", solver, "--resume", state, "--set", "base_lr=0.2", "--set", "max_iter=5")
    assert code == 2
    assert "base_lr: 0.1 -> 0.2" in err and "--force" in err
    assert "max_iter" not in err  # growing max_iter needs no confirmation
    assert not (tmp_path / "run/tiny_iter_5.solverstate").exists()
    assert load_solver(tmp_path / "run/config.yaml").base_lr == 0.1
    code, out, err = netcfg("train", solver, "--resume", state, "--set", "base_lr=0.2", "--set", "max_iter=5",
                            "--force")
    assert code == 0, err
    assert "base_lr" in out  # the warning
    assert (tmp_path / "run/tiny_iter_5.solverstate").is_file()
    assert [r["lr"] for r in metrics(tmp_path / "run")] == [0.1] * 3 + [0.2] * 2
    # config.yaml now holds what the run continued with, so resuming it again goes on from there
    again = load_solver(tmp_path / "run/config.yaml")
    assert (again.base_lr, again.max_iter) == (0.2, 5)


def test_a_run_from_before_the_test_split_refused_mirror_resumes_once_it_is_removed(tmp_path):
    # a run's config.yaml and snapshot from before data.test refused mirror (it was ignored):
    # the refusal says to remove it, and then the resume goes on without --force
    solver = write_solver(tmp_path, MLP, max_iter=2, test_interval=2)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    state = tmp_path / "run/tiny_iter_2.solverstate"
    with safe_open(state, "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    old = yaml.safe_load(meta["solver"])
    old["data"]["test"]["mirror"] = True
    save_file(tensors, state, {**meta, "solver": yaml.safe_dump(old)})
    config = tmp_path / "run/config.yaml"
    config.write_text(config.read_text().replace("split: test\n", "split: test\n    mirror: true\n"))
    code, out, err = netcfg("train", config, "--resume", state, "--set", "max_iter=4")
    assert code == 2 and "data.test.mirror: mirror augments training images only" in err and "remove it" in err
    config.write_text(config.read_text().replace("    mirror: true\n", ""))
    code, out, err = netcfg("train", config, "--resume", state, "--set", "max_iter=4")
    assert code == 0, err
    assert "changed config" not in out and (tmp_path / "run/tiny_iter_4.solverstate").is_file()
    for later in (tmp_path / "run").glob("tiny_iter_4.*"):
        later.unlink()
    old["data"]["train"]["mirror"] = True  # where it did something, a change still needs --force
    save_file(tensors, state, {**meta, "solver": yaml.safe_dump(old)})
    code, out, err = netcfg("train", config, "--resume", state, "--set", "max_iter=4")
    assert code == 2 and "data.train.mirror: True -> (removed)" in err and "data.test" not in err


def test_resume_refuses_a_changed_net(tmp_path):
    solver = write_solver(tmp_path, MLP, max_iter=2, test=False)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    (tmp_path / "net.yaml").write_text(MLP.replace("num_output: 16", "num_output: 24"))
    log = (tmp_path / "run/train.log").read_text()
    code, out, err = netcfg("train", solver, "--resume", tmp_path / "run/tiny_iter_2.solverstate")
    assert code == 2
    assert (tmp_path / "run/train.log").read_text() == log  # a refused resume leaves the run as it was
    assert "net.layers.ip1.num_output: 16 -> 24" in err  # named as --set writes it


def test_forced_resume_trains_with_the_new_hyperparameters(tmp_path):
    path = write_solver(tmp_path, MLP, max_iter=2, test=False, weight_decay=0.001)
    solve(path, tmp_path / "run")
    state = tmp_path / "run/tiny_iter_2.solverstate"
    changed = load_solver(path, ("weight_decay=0.01", "momentum=0.5"))
    s = Solver(changed, run_dir=RunDir.resume(changed, state), log=lambda line: None)
    s.restore(state, force=True)
    assert {g["weight_decay"] for g in s.optimizer.param_groups} == {0.01}
    assert {g["momentum"] for g in s.optimizer.param_groups} == {0.5}
    assert s.optimizer.state  # the momentum buffers came back all the same


def test_forced_resume_with_a_layer_unfrozen_trains_it_and_keeps_the_other_buffers(tmp_path):
    # the head trained with ip1 frozen, then --resume --force --set freeze=[] to fine-tune the
    # whole net: the optimizer's groups had other parameters, and the resume was refused with
    # torch's "loaded state dict contains a parameter group that doesn't match the size"
    path = write_solver(tmp_path, MLP, max_iter=4, test=False, freeze=["ip1"])
    head = solve(path, tmp_path / "run")
    saved = {n: head.optimizer.state[p]["momentum_buffer"].clone() for n, p in head.net.named_parameters()
             if n.startswith("ip2")}
    state = tmp_path / "run/tiny_iter_4.solverstate"
    unfrozen = load_solver(path, ("freeze=[]", "max_iter=6"))
    lines = []
    s = Solver(unfrozen, run_dir=RunDir.resume(unfrozen, state), log=lines.append)
    s.restore(state, force=True)
    params = dict(s.net.named_parameters())
    for name, buffer in saved.items():  # the head's velocity goes on
        assert torch.equal(s.optimizer.state[params[name]]["momentum_buffer"], buffer)
    assert not s.optimizer.state[params["ip1.weight"]]["momentum_buffer"].any()  # a fresh one
    assert any("2 parameter(s)" in line and "fresh optimizer buffers: ip1.weight, ip1.bias" in line for line in lines)
    before = params["ip1.weight"].detach().clone()
    s.solve()
    assert not torch.equal(params["ip1.weight"], before)


@pytest.mark.parametrize("to", [("Adam", "momentum=null"), ("RMSProp", "momentum=null"), ("Nesterov", "momentum=0.9")])
def test_forced_resume_with_another_optimizer_starts_its_buffers_afresh(tmp_path, to):
    # SGD's momentum buffers loaded into Adam or RMSProp: the forced resume was refused with "the
    # optimizer state does not fit this net's parameters ('step')".
    # Nesterov keeps SGD's velocity (as AdamW keeps Adam's moments): the buffers are the same
    type, momentum = to
    path = write_solver(tmp_path, MLP, max_iter=3, test=False)
    solve(path, tmp_path / "run")
    code, out, err = netcfg("train", path, "--resume", tmp_path / "run", "--force", "--set", "max_iter=5",
                            "--set", f"type={type}", "--set", momentum, "--set", "base_lr=0.01")
    assert code == 0, err
    assert ("its buffers start afresh" in out) == (type != "Nesterov")
    if type != "Nesterov":
        assert f"warning: the optimizer changed from SGD to {type}: its buffers start afresh" in out
    assert (tmp_path / "run/tiny_iter_5.safetensors").is_file()


@pytest.mark.parametrize("policy", [dict(lr_policy="cosine"), dict(lr_policy="linear", min_lr=0.01),
                                    dict(lr_policy="poly", power=2.0)])
def test_resume_with_a_grown_max_iter_warns_that_the_lr_curve_jumps(tmp_path, policy):
    solver = write_solver(tmp_path, MLP, max_iter=6, snapshot=3, test=False, **policy)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    lr_at_3 = [r["lr"] for r in metrics(tmp_path / "run")][3]
    code, out, err = netcfg("train", solver, "--resume", tmp_path / "run/tiny_iter_3.solverstate",
                            "--set", "max_iter=12", "--force")  # --force: over the later snapshot
    assert code == 0, err
    (line,) = [x for x in out.splitlines() if "lr curve" in x]
    resumed = metrics(tmp_path / "run")[6:]  # after the first run's iterations 0..5
    assert resumed[0]["iter"] == 3
    after = resumed[0]["lr"]  # the rate the resumed run really used there
    assert line == (f"warning: max_iter 6 -> 12 reshapes the {policy['lr_policy']} lr curve: at iteration 3 the lr "
                    f"jumps from {lr_at_3:.6g} to {after:.6g}; resume with max_iter=6 to keep the old curve")
    assert after > lr_at_3


def test_extending_a_finished_run_says_its_curve_had_ended(tmp_path):
    solver = write_solver(tmp_path, MLP, max_iter=4, test=False, lr_policy="cosine")
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    code, out, err = netcfg("train", tmp_path / "run", "--resume", tmp_path / "run", "--set", "max_iter=8")
    assert code == 0, err
    assert ("warning: max_iter 4 -> 8 reshapes the cosine lr curve: at iteration 4 the lr jumps from 0 to 0.05 "
            "(the snapshot's curve ended at iteration 4)") in out.splitlines()


@pytest.mark.parametrize("policy", [dict(lr_policy="fixed"), dict(lr_policy="step", gamma=0.5, stepsize=2)])
def test_a_curve_that_ignores_max_iter_resumes_without_a_warning(tmp_path, policy):
    solver = write_solver(tmp_path, MLP, max_iter=4, test=False, **policy)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    code, out, err = netcfg("train", solver, "--resume", tmp_path / "run", "--set", "max_iter=6")
    assert code == 0, err
    assert "lr curve" not in out


@pytest.mark.parametrize("rules", [False, True])
def test_a_fine_tuned_run_resumes_after_its_initial_weights_are_gone(tmp_path, rules):
    # the weights: file (a pruned snapshot, a deleted run) was read again on resume, only for
    # the snapshot to replace it: --resume failed with 'weights file not found'
    assert netcfg("train", write_solver(tmp_path / "base", MLP, max_iter=3), "--out", tmp_path / "base/run")[0] == 0
    (tmp_path / "init.safetensors").write_bytes((tmp_path / "base/run/tiny_iter_3.safetensors").read_bytes())
    given = [{"file": str(tmp_path / "init.safetensors")}] if rules else str(tmp_path / "init.safetensors")
    solver = write_solver(tmp_path, MLP_DROPOUT, max_iter=8, test_interval=4, weights=given)
    assert netcfg("train", solver, "--out", tmp_path / "straight")[0] == 0
    assert netcfg("train", solver, "--out", tmp_path / "split", "--set", "max_iter=5")[0] == 0
    (tmp_path / "init.safetensors").unlink()
    code, out, err = netcfg("train", solver, "--resume", tmp_path / "split/tiny_iter_5.solverstate")
    assert code == 0, err
    assert "weights: not read again on resume; the snapshot holds every weight they gave" in out
    assert_same_weights(load_file(tmp_path / "straight/tiny_iter_8.safetensors"),
                        load_file(tmp_path / "split/tiny_iter_8.safetensors"))


def test_a_resume_still_reads_the_weights_of_layers_only_the_test_net_has(tmp_path):
    # a snapshot holds the TRAIN net's tensors: a TEST-only layer's come from weights: alone
    test_only = MLP.replace("  - {name: loss,", "  - {name: calib, type: InnerProduct, bottom: ip2, num_output: 10, "
                                                "include: {phase: TEST}}\n  - {name: loss,")
    assert test_only != MLP
    base = write_solver(tmp_path / "base", test_only, max_iter=2)
    assert netcfg("train", base, "--out", tmp_path / "base/run")[0] == 0
    solver = write_solver(tmp_path, test_only, max_iter=4, weights=str(tmp_path / "base/run/tiny_iter_2.safetensors"))
    assert netcfg("train", solver, "--out", tmp_path / "split", "--set", "max_iter=2")[0] == 0
    (tmp_path / "base/run/tiny_iter_2.safetensors").unlink()
    code, _, err = netcfg("train", solver, "--resume", tmp_path / "split/tiny_iter_2.solverstate")
    assert code == 2 and "tiny_iter_2.safetensors" in err and "not found" in err, err
