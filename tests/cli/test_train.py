"""``netcfg train`` and ``netcfg test`` end to end: exit codes, messages, the files a run leaves."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from netcfg.solver import Solver
from netcfg.solver.spec import load_solver
from tests.cli import netcfg
from tests.solver.test_runner import DIVERGING, EXP_NET, MLP, metrics, write_solver

# ------------------------------------------------------------ stopping early


def test_ctrl_c_snapshots_and_says_how_to_resume(tmp_path, monkeypatch):
    solver = write_solver(tmp_path, MLP, max_iter=4, test=False)
    step, calls = Solver._train_step, []

    def interrupted_after_3(self):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(Solver, "_train_step", interrupted_after_3)
    code, out, err = netcfg("train", solver, "--set", "max_iter=8", "--out", tmp_path / "run")
    assert code == 130
    assert "interrupted (Ctrl-C) at iteration 3" in err
    assert (tmp_path / "run/tiny_iter_3.safetensors").is_file()
    assert (tmp_path / "run/tiny_iter_3.solverstate").is_file()
    # the run's log says why it stopped, as the terminal did (it ended at 'Snapshotting to ...')
    assert (tmp_path / "run/train.log").read_text().splitlines()[-1] == err.strip()
    command = shlex.split(err.split("Resume with: netcfg ")[1])
    state = tmp_path / "run/tiny_iter_3.solverstate"
    assert command == ["train", str(tmp_path / "run/config.yaml"), "--resume", str(state)]
    monkeypatch.setattr(Solver, "_train_step", step)
    code, out, err = netcfg(*command)  # the command as printed works, --set max_iter=8 included
    assert code == 0, err
    assert (tmp_path / "run/tiny_iter_8.solverstate").is_file()
    assert [r["iter"] for r in metrics(tmp_path / "run")] == list(range(8))


def test_divergence_exits_1_naming_the_layer_and_keeps_the_last_good_snapshot(tmp_path):
    solver = write_solver(tmp_path, EXP_NET, **DIVERGING)
    code, out, err = netcfg("train", solver, "--out", tmp_path / "run")
    assert code == 1
    assert "loss is nan at iteration 6" in err and "layer 'exp1'" in err
    assert f"last good snapshot: {tmp_path / 'run/tiny_iter_4.solverstate'}" in err
    assert (tmp_path / "run/tiny_iter_4.safetensors").is_file()
    assert not list((tmp_path / "run").glob("*.tmp-*"))
    assert "Traceback" not in err
    assert (tmp_path / "run/train.log").read_text().splitlines()[-1] == err.strip()
    # without snapshots the run leaves only config.yaml and metrics.jsonl; training
    # again into the same --out would append a second run to that metrics.jsonl
    code, out, err = netcfg("train", solver, "--set", "snapshot=0", "--out", tmp_path / "nosnap")
    assert code == 1 and "no good snapshot was written" in err
    assert not list((tmp_path / "nosnap").glob("*.solverstate"))
    code, out, err = netcfg("train", solver, "--set", "snapshot=0", "--out", tmp_path / "nosnap")
    assert code == 2 and "already holds a run" in err


# ------------------------------------------------------------ config errors

BAD_SOLVERS = {
    # name: (solver text, the line:col of the error, words the message has)
    "test_interval without test data": (
        "net: net.yaml\ndata:\n  train: {source: digits, split: train, batch_size: 8}\n"
        "base_lr: 0.1\nmax_iter: 1\ntest_interval: 10\n", "6:16", "test_interval"),
    "snapshot without snapshot_prefix": (
        "net: net.yaml\ndata:\n  train: {source: digits, split: train, batch_size: 8}\n"
        "base_lr: 0.1\nmax_iter: 1\nsnapshot: 5\n", "6:11", "snapshot_prefix"),
    "momentum on AdaGrad": (
        "net: net.yaml\ndata:\n  train: {source: digits, split: train, batch_size: 8}\n"
        "type: AdaGrad\nbase_lr: 0.1\nmomentum: 0.9\nmax_iter: 1\n", "6:11", "AdaGrad does not use momentum"),
    "missing net file": (
        "net: no_such_net.yaml\ndata:\n  train: {source: digits, split: train, batch_size: 8}\n"
        "base_lr: 0.1\nmax_iter: 1\n", "1:6", "net file not found"),
    "a net file, not a solver": (  # one error, not 'missing net', 'missing base_lr', ... 'unknown key layers'
        "name: n\ninputs: {data: [4]}\nlayers:\n  - {name: ip, type: InnerProduct, num_output: 2}\n", "3:1",
        "layers: this is a net file (it has layers:), but a solver file is needed here"),
}


@pytest.mark.parametrize("case", list(BAD_SOLVERS))
def test_solver_errors_are_located_and_exit_2(tmp_path, case):
    text, where, words = BAD_SOLVERS[case]
    (tmp_path / "net.yaml").write_text(MLP)
    (tmp_path / "bad.yaml").write_text(text)
    code, out, err = netcfg("train", tmp_path / "bad.yaml", "--out", tmp_path / "run")
    assert code == 2
    assert err.startswith(f"{tmp_path / 'bad.yaml'}:{where}: error: ")
    assert words in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_solver_file_given_as_a_net_says_so_and_names_its_net():
    import netcfg as api

    with pytest.raises(api.NetcfgError) as e:
        api.build_net(Path(__file__).resolve().parents[2] / "solvers" / "digits.yaml")
    assert e.value.render().endswith("digits.yaml:11:1: error: net: this is a solver file (it names a net:), but a net "
                                     "file is needed here (its net is ../configs/digits_cnn.yaml, relative to this file)")


# ------------------------------------------------------------ the run directory


def test_runs_never_overwrite_each_other_and_config_yaml_trains_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver = write_solver(tmp_path, MLP, max_iter=2)
    assert netcfg("train", solver)[0] == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "runs/solver").iterdir()}
    assert {"config.yaml", "metrics.jsonl", "train.log", "tiny_iter_2.safetensors",
            "tiny_iter_2.solverstate"} <= first.keys()
    code, out, err = netcfg("train", solver, "--set", "base_lr=0.05")
    assert code == 0, err
    assert "run directory runs/solver-2" in out
    assert {p.name: p.read_bytes() for p in (tmp_path / "runs/solver").iterdir()} == first
    # the run's config.yaml is a solver file with its net inline: it checks and trains as it is
    code, out, err = netcfg("check", "runs/solver-2/config.yaml")
    assert code == 0, err
    code, out, err = netcfg("train", "runs/solver-2/config.yaml", "--set", "max_iter=1", "--out", "again")
    assert code == 0, err
    assert "base_lr 0.05" in out
    assert (tmp_path / "again/tiny_iter_1.safetensors").is_file()
    # without --out, a run's config.yaml trains into a sibling of that run, not runs/config
    code, out, err = netcfg("train", "runs/solver-2/config.yaml", "--set", "max_iter=1")
    assert code == 0 and "run directory runs/solver-2-2" in out, out + err
    assert not (tmp_path / "runs/config").exists()
    # --out at a directory that holds a run's snapshots is refused
    code, out, err = netcfg("train", solver, "--out", "runs/solver")
    assert code == 2 and "--resume" in err
    # and at a folder of the user's, whose config.yaml the run would overwrite
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/config.yaml").write_text("my notes\n")
    (tmp_path / "mine/data.csv").write_text("1,2\n")
    code, out, err = netcfg("train", solver, "--out", "mine")
    assert code == 2 and "--out mine is a folder that holds other files (data.csv)" in err
    assert (tmp_path / "mine/config.yaml").read_text() == "my notes\n"


def test_weights_report_what_matched_when_the_last_layer_changes(tmp_path):
    solver = write_solver(tmp_path, MLP, max_iter=2, test=False)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    trained = tmp_path / "run/tiny_iter_2.safetensors"
    twelve = MLP.replace("num_output: 10", "num_output: 12").replace(
        "  - {name: loss,", "  - {name: ip3, type: InnerProduct, bottom: ip1, num_output: 4}\n"
                           "  - {name: silence, type: Silence, bottom: ip3}\n  - {name: loss,")
    solver2 = write_solver(tmp_path / "finetune", twelve, max_iter=0, test=False)
    code, out, err = netcfg("train", solver2, "--weights", trained, "--out", tmp_path / "ft")
    assert code == 0, err
    assert f"weights from {trained}: 2 blobs copied" in out
    assert ("shape mismatch, left as initialised: "
            "ip2.weight (file [10, 16], net [12, 16]), ip2.bias (file [10], net [12])") in out
    assert "not in the file, left as initialised: ip3.weight, ip3.bias" in out
    got, want = load_file(tmp_path / "ft/tiny_iter_0.safetensors"), load_file(trained)
    assert torch.equal(got["ip1.weight"], want["ip1.weight"]) and torch.equal(got["ip1.bias"], want["ip1.bias"])


def test_a_layer_with_a_blob_of_another_shape_is_left_whole(tmp_path):
    # a narrower hidden layer changes the classifier's weight ([10, 16] -> [10, 8]) but not its
    # bias ([10]): the bias alone was copied, a half-loaded classifier reported as fine-tuned
    deep = MLP.replace("  - {name: ip2,", "  - {name: hidden, type: InnerProduct, num_output: 16}\n  - {name: ip2,")
    solver = write_solver(tmp_path, deep, max_iter=2, test=False)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    trained = tmp_path / "run/tiny_iter_2.safetensors"
    narrower = deep.replace("hidden, type: InnerProduct, num_output: 16", "hidden, type: InnerProduct, num_output: 8")
    narrow = write_solver(tmp_path / "narrow", narrower, max_iter=0, test=False)
    code, out, err = netcfg("train", narrow, "--weights", trained, "--out", tmp_path / "ft")
    assert code == 0, err
    assert f"weights from {trained}: 2 blobs copied" in out  # ip1's
    assert "left as initialised with their layer, which has a shape mismatch: ip2.bias" in out
    fresh = write_solver(tmp_path / "fresh", narrower, max_iter=0, test=False)
    assert netcfg("train", fresh, "--out", tmp_path / "scratch")[0] == 0
    got, init = load_file(tmp_path / "ft/tiny_iter_0.safetensors"), load_file(tmp_path / "scratch/tiny_iter_0.safetensors")
    assert torch.equal(got["ip2.bias"], init["ip2.bias"])  # as its filler made it, like ip2.weight
    code, out, err = netcfg("weights", narrow, "--set", f"weights={trained}")
    assert code == 0, err
    assert "left as initialised with their layer, which has a shape mismatch (1): ip2.bias" in out
    assert "missing, left as initialised (4): hidden.weight, hidden.bias, ip2.weight, ip2.bias" in out
    # a net none of whose layers fits is refused, naming the shapes rather than asking about names
    code, out, err = netcfg("train", write_solver(tmp_path / "wide", MLP.replace("num_output: 16", "num_output: 8"),
                                                   max_iter=0, test=False), "--weights", trained, "--out", tmp_path / "x")
    assert code == 2 and "--weights: error: weights: no layer of the net can be filled from" in err, err
    assert "every layer they share by name differs in shape (3 blobs: ip1.weight (file [16, 64], net [8, 64])," in err


def test_weights_and_device_options_are_taken_as_given_and_named_in_errors(tmp_path):
    solver = write_solver(tmp_path, MLP, max_iter=2, test=False)
    assert netcfg("train", solver, "--out", tmp_path / "run #1")[0] == 0
    trained = tmp_path / "run #1/tiny_iter_2.safetensors"  # ' #' would start a YAML comment
    code, out, err = netcfg("train", solver, "--weights", trained, "--out", tmp_path / "ft")
    assert code == 0 and f"weights from {trained}: 4 blobs copied" in out, err
    for command in (["train", solver], ["test", solver, "--weights", trained]):
        code, _, err = netcfg(*command, "--device", "gpu")
        assert code == 2 and err.startswith("--device: error: device: string should match pattern"), err


# ------------------------------------------------------------ netcfg test


def test_test_prints_outputs_averaged_over_the_test_set(tmp_path):
    # 120 test samples in batches of 50: the last batch of 20 must weigh 20/120
    solver = write_solver(tmp_path, MLP, max_iter=20, test=False)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    trained = tmp_path / "run/tiny_iter_20.safetensors"
    with_test = write_solver(tmp_path, MLP, name="with_test", max_iter=20)
    code, out, err = netcfg("test", with_test, "--weights", trained, "--json")
    assert code == 0, err
    results = json.loads(out)
    assert set(results) == {"accuracy", "loss"}
    assert 0 <= results["accuracy"] <= 1
    # the same numbers from one batch of all 120 samples
    s = Solver(load_solver(with_test, ("data.test.batch_size=120", f"weights={trained}")), out=tmp_path / "one",
               log=lambda line: None)
    assert s.test() == pytest.approx(results, rel=1e-5)
    assert results["accuracy"] > 0.5  # the weights were loaded: untrained is about 0.1


# ------------------------------------------------------------ a real run


def test_digits_solver_learns(tmp_path):
    solver = Path(__file__).parents[2] / "solvers/digits.yaml"
    code, out, err = netcfg("train", solver, "--set", "max_iter=300", "--set", "test_interval=300",
                            "--set", "test_initialization=false", "--out", tmp_path / "run")
    assert code == 0, err
    tests = metrics(tmp_path / "run", "test")
    assert [r["iter"] for r in tests] == [300]
    assert tests[0]["accuracy"] > 0.9 and tests[0]["samples"] == 360


def test_test_refuses_weights_that_do_not_fill_the_test_net(tmp_path):
    solver = write_solver(tmp_path, MLP, max_iter=2, test=False)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    narrower = write_solver(tmp_path / "other", MLP.replace("num_output: 16", "num_output: 12"), max_iter=2)
    code, out, err = netcfg("test", narrower, "--weights", tmp_path / "run/tiny_iter_2.safetensors")
    assert code == 2 and "its weights do not fit this net" in err and "ip1.weight (file [16, 64], net [12, 64])" in err
    assert "accuracy" not in out  # no score of half-loaded weights
    # a run directory stands for its newest snapshot, as in weights: rules
    code, out, err = netcfg("test", write_solver(tmp_path / "same", MLP), "--weights", tmp_path / "run")
    assert code == 0 and f"weights from {tmp_path / 'run/tiny_iter_2.safetensors'}: 4 blobs copied" in out, err
    assert "Iteration 2, Testing net (120 samples)" in out  # the snapshot's iteration, not 0


def test_test_names_the_iteration_of_the_snapshot_it_tests(tmp_path):
    solver = write_solver(tmp_path, MLP, max_iter=6, snapshot=4, test=False)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    code, out, err = netcfg("test", tmp_path / "run/config.yaml", "--weights", tmp_path / "run/tiny_iter_4.safetensors",
                            "--set", "data.test={source: digits, split: test, batch_size: 60, limit: 120}")
    assert code == 0, err
    assert "Iteration 4, Testing net (120 samples)" in out
    # a state_dict .pt has no iteration: the line leaves it out rather than claim "Iteration 0"
    torch.save(load_file(tmp_path / "run/tiny_iter_4.safetensors"), tmp_path / "state_dict.pt")
    code, out, err = netcfg("test", tmp_path / "run/config.yaml", "--weights", tmp_path / "state_dict.pt",
                            "--set", "data.test={source: digits, split: test, batch_size: 60, limit: 120}")
    assert code == 0, err
    assert "\nTesting net (120 samples): loss = " in out and "Iteration" not in out


def test_resuming_an_older_snapshot_over_later_ones_needs_force(tmp_path):
    solver = write_solver(tmp_path, MLP, max_iter=6, snapshot=2, test=False)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.glob("tiny_iter_*")}
    code, out, err = netcfg("train", run / "config.yaml", "--resume", run / "tiny_iter_2.solverstate",
                            "--set", "max_iter=8")
    assert code == 2, out + err
    assert f"{run} holds 2 later snapshot(s) (tiny_iter_4, tiny_iter_6) that resuming from tiny_iter_2" in err
    assert {p.name: p.read_bytes() for p in run.glob("tiny_iter_*")} == before  # nothing overwritten
    code, out, err = netcfg("train", run / "config.yaml", "--resume", run / "tiny_iter_2.solverstate",
                            "--set", "max_iter=8", "--force")
    assert code == 0, err
    assert netcfg("train", run / "config.yaml", "--resume", run, "--set", "max_iter=10")[0] == 0  # the newest
    code, out, err = netcfg("train", run / "config.yaml", "--resume", run, "--set", "max_iter=7")
    assert code == 2 and "max_iter 7 is below the snapshot's iteration 10: nothing is left to train" in err


def test_resume_refuses_weights_and_out_it_would_ignore(tmp_path):
    solver = write_solver(tmp_path, MLP, max_iter=2, test=False)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    run = tmp_path / "run"
    other = write_solver(tmp_path / "other", MLP, max_iter=2, test=False, random_seed=7)
    assert netcfg("train", other, "--out", tmp_path / "other/run")[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    # --weights: the snapshot's weights would replace them; --out: the run would write in run/
    code, _, err = netcfg("train", run / "config.yaml", "--resume", run, "--set", "max_iter=4",
                          "--weights", tmp_path / "other/run")
    assert code == 2 and "--weights: error: --weights and --resume together" in err, err
    code, _, err = netcfg("train", run / "config.yaml", "--resume", run, "--set", "max_iter=4",
                          "--out", tmp_path / "branch")
    assert code == 2 and "--out: error: --out and --resume together" in err, err
    assert not (tmp_path / "branch").exists()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing trained, nothing written


def test_ctrl_c_before_training_starts_says_so(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Solver, "__init__", interrupted)  # while the data loads, say
    code, out, err = netcfg("train", write_solver(tmp_path, MLP), "--out", tmp_path / "run")
    assert code == 130 and err.strip() == "interrupted (Ctrl-C)"
    assert not (tmp_path / "run").exists()


# Ctrl-C while the data loads; a second one while Python runs its exit handlers (here a
# stand-in for torch's, registered first as torch's are)
CTRL_C_TWICE = """
import atexit, os, signal, sys, time
from netcfg.solver import Solver
from netcfg.cli.app import main

def exit_handler():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)

def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

atexit.register(exit_handler)
Solver.__init__ = interrupted
main(sys.argv[1:])
"""


def test_ctrl_c_twice_before_training_prints_no_traceback(tmp_path):
    solver = write_solver(tmp_path, MLP)
    done = subprocess.run([sys.executable, "-c", CTRL_C_TWICE, "train", str(solver), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.stderr.strip() == "interrupted (Ctrl-C)"  # no "Exception ignored ... KeyboardInterrupt"
    assert done.returncode == -signal.SIGINT  # the shell's 130


def test_sigterm_from_a_scheduler_snapshots_and_exits_143(tmp_path):
    # SLURM, Kubernetes and `timeout` send SIGTERM before they kill a job: the run stops
    # after its iteration with a snapshot to resume from, as at Ctrl-C
    solver = write_solver(tmp_path, MLP, max_iter=10**6, test=False)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "netcfg", "train", str(solver), "--out", str(run),
                             "--set", "display=1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text().strip():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM) at iteration" in err and "Traceback" not in err
    it = int(err.split("interrupted (SIGTERM) at iteration ")[1].split(";")[0])
    assert (run / f"tiny_iter_{it}.safetensors").is_file() and (run / f"tiny_iter_{it}.solverstate").is_file()


def test_a_closed_stdout_does_not_stop_the_run(tmp_path):
    # netcfg train ... | head -2: the first line after head left raised BrokenPipeError, and the run
    # died with exit 1, no message, no snapshot and a train.log cut short
    solver = write_solver(tmp_path, MLP, max_iter=30, test=False)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "netcfg", "train", str(solver), "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    proc.stdout.close()  # as head does once it has its lines (before the first here: no race with the run)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert err == ("netcfg train: stdout cannot be written (Broken pipe); training goes on, "
                   "its log in the run directory's train.log\n")
    assert (run / "tiny_iter_30.safetensors").is_file() and (run / "tiny_iter_30.solverstate").is_file()
    log = (run / "train.log").read_text().splitlines()
    assert log[0].startswith("Solving ") and log[-1] == "Optimization Done." and len(log) > 30  # every line


SIGTERM_AT_START = """
import os, signal, sys, time
from netcfg.solver import Solver
from netcfg.cli.app import main

def stopped(*args, **kwargs):  # SIGTERM while the data loads
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)

Solver.__init__ = stopped
main(sys.argv[1:])
"""


def test_sigterm_before_training_says_so_and_exits_143(tmp_path):
    solver = write_solver(tmp_path, MLP)
    done = subprocess.run([sys.executable, "-c", SIGTERM_AT_START, "train", str(solver), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert (done.returncode, done.stderr.strip()) == (143, "interrupted (SIGTERM)")  # was a silent death, -15
