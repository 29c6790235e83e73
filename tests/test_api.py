"""netcfg used from a script or a notebook: errors across processes, arguments checked as the CLI's are."""

from __future__ import annotations

import errno
import multiprocessing
import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

import netcfg
from netcfg.errors import ConfigError, ConfigErrors, ReportedElsewhere
from netcfg.solver.checkpoint import CheckpointError, WriteError
from netcfg.solver import lock as lock_module
from netcfg.solver.distributed import RankError
from netcfg.solver.interrupt import Interrupted
from netcfg.zoo import ZooMissing
from tests.cli import netcfg as cli

ROOT = Path(__file__).resolve().parents[1]
BAD_NET = "name: X\ninputs: {data: [3]}\nlayers:\n  - {name: ip, type: InnerProduct, num_ouput: 2}\n"


def _errors() -> list[netcfg.NetcfgError]:
    located = ConfigError("unknown key", ("layers", 0, "num_ouput"), hint="did you mean 'num_output'?",
                          file="net.yaml", line=4, col=36)
    return [located, ConfigErrors([located, ConfigError("no such file", file="other.yaml")]),
            CheckpointError("run/x.solverstate", "truncated"),
            WriteError("run/x.safetensors", OSError(errno.ENOSPC, "No space left on device")),
            ZooMissing(Path("/nowhere/configs")), RankError(1, located), ReportedElsewhere("rank 1 failed", 3),
            Interrupted("interrupted (SIGTERM) at iteration 5", "SIGTERM")]


@pytest.mark.parametrize("error", _errors(), ids=lambda e: type(e).__name__)
def test_every_error_survives_pickling_as_it_was(error):
    # multiprocessing pickles a worker's error to send it back: ConfigErrors, CheckpointError and
    # others were rebuilt by calling __init__ with the message alone, which failed or garbled them
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert again.render() == error.render() and str(again) == str(error)
    assert again.exit_code == error.exit_code


def test_a_worker_s_config_error_reaches_the_parent(tmp_path):
    # a sweep over net files in a process pool: one typo broke the whole pool (BrokenProcessPool)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_NET)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        with pytest.raises(netcfg.ConfigErrors) as e:
            pool.submit(netcfg.load_net, bad).result(timeout=120)
    assert e.value.render().startswith(f"{bad}:4:36: error: layers[0].num_ouput: unknown key")


@pytest.mark.parametrize("device, words", [
    ("banana", "device 'banana' is not a device PyTorch knows"),
    ("cuda:99" if torch.cuda.is_available() else "cuda", "device cuda:99: only" if torch.cuda.is_available() else
     "no CUDA device is available"),
])
def test_build_net_names_a_device_it_cannot_use(device, words):
    # build_net(..., device="banana") raised torch's RuntimeError listing every device type, and
    # device="cuda" on a machine without CUDA an AssertionError; load_net_with_weights said it as this
    with pytest.raises(netcfg.ConfigError, match=words) as e:
        netcfg.build_net(ROOT / "configs" / "lenet.yaml", device=device)
    assert e.value.render().startswith("device: error: ")
    net = netcfg.build_net(ROOT / "configs" / "lenet.yaml", "TEST", device=torch.device("cpu"))
    assert next(net.parameters()).device.type == "cpu"


TAKER = ("import importlib.util, sys; from pathlib import Path; "
         "spec = importlib.util.spec_from_file_location('lock', sys.argv[2]); m = importlib.util.module_from_spec(spec); "
         "spec.loader.exec_module(m); m.RunLock.acquire(Path(sys.argv[1])).release()")


def _another_process_locks(run: Path) -> subprocess.CompletedProcess:
    """What ``netcfg train --resume RUN`` from a shell meets: the lock, taken by another process."""
    return subprocess.run([sys.executable, "-c", TAKER, str(run), lock_module.__file__], capture_output=True,
                          text=True, timeout=120)


def test_a_solver_lets_go_of_its_run_directory_when_closed(tmp_path):
    # a notebook kept its Solver, and with it the run directory's lock, until the kernel stopped:
    # `netcfg train --resume` from a shell was refused ('in use by another netcfg train') with no
    # way to let go from Python
    sets = ["max_iter=2", "snapshot=0", "test_interval=0", "display=0"]
    with netcfg.Solver.from_file(ROOT / "solvers" / "digits.yaml", sets, out=tmp_path / "run",
                                 log=lambda line: None) as solver:
        solver.solve()
        held = _another_process_locks(tmp_path / "run")
        assert held.returncode != 0 and "is in use by another netcfg train" in held.stderr
    assert _another_process_locks(tmp_path / "run").returncode == 0
    assert not (tmp_path / "run" / "train.lock").exists()
    solver.close()  # twice is harmless


def test_a_closed_solver_refuses_to_write_into_the_run_directory_it_let_go(tmp_path):
    # after `with ... as solver:` ended, solver.solve() trained on and wrote snapshots and metrics
    # into runs/api while a `netcfg train --resume runs/api` from a shell could be writing there too
    sets = ["max_iter=4", "snapshot=0", "test_interval=0", "display=1"]
    with netcfg.Solver.from_file(ROOT / "solvers" / "digits.yaml", sets, out=tmp_path / "run",
                                 log=lambda line: None) as solver:
        solver.step(2)
    files = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    for call in (lambda: solver.step(1), solver.solve, solver.snapshot, solver.test,
                 lambda: solver.restore(tmp_path / "run" / "x.solverstate")):
        with pytest.raises(netcfg.ConfigError, match="on a closed Solver") as e:
            call()
        assert e.value.render().startswith(f"{tmp_path / 'run'}: error: ")
        assert f"--resume {tmp_path / 'run'}" in e.value.render()
    assert solver.iter == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == files
    solver.close()  # twice is harmless
    assert solver.net(**{k: v for k, v in solver.train_data.next_batch().items()})["loss"].isfinite()


def test_a_run_from_python_writes_its_train_log_as_netcfg_train_does(tmp_path):
    # README lists train.log among a run's files, but Solver.from_file(...).solve() left none: only
    # the CLI wrote it, so a notebook's run kept its log nowhere once the cell's output was cleared
    sets = ["max_iter=6", "snapshot=3", "test_interval=3", "display=2"]
    shown = []
    with netcfg.Solver.from_file(ROOT / "solvers" / "digits.yaml", sets, out=tmp_path / "api",
                                 log=shown.append) as solver:
        solver.solve()
    assert (tmp_path / "api" / "train.log").read_text().splitlines() == shown
    assert any(line.startswith("Iteration 2 (epoch") for line in shown) and shown[-1] == "Optimization Done."
    solver.log("after close(): shown only")  # the directory is no longer this Solver's
    assert (tmp_path / "api" / "train.log").read_text().splitlines() == shown[:-1]
    code, out, err = cli("train", ROOT / "solvers" / "digits.yaml", "--out", tmp_path / "cli",
                         *(a for s in sets for a in ("--set", s)))
    assert code == 0, err
    assert (tmp_path / "cli" / "train.log").read_text() == out  # every printed line, once


def test_the_weights_report_logged_while_the_solver_is_set_up_reaches_train_log(tmp_path):
    # the weights: report is logged before the run directory is made (made last, so that a refused
    # run leaves none): it was shown but missing from train.log, the record of what a fine-tune loaded
    sets = ["max_iter=2", "snapshot=2", "test_interval=0", "display=1"]
    with netcfg.Solver.from_file(ROOT / "solvers" / "digits.yaml", sets, out=tmp_path / "first",
                                 log=lambda line: None) as first:
        first.solve()
    shown = []
    with netcfg.Solver.from_file(ROOT / "solvers" / "digits.yaml", [*sets, f"weights={tmp_path}/first"],
                                 out=tmp_path / "tuned", log=shown.append) as solver:
        solver.solve()
    report = [line for line in shown if "blobs copied" in line]
    assert report, shown
    assert (tmp_path / "tuned" / "train.log").read_text().splitlines() == shown


STAGED = """\
name: S
inputs: {data: [4]}
layers:
  - {name: ip, type: InnerProduct, bottom: data, num_output: 2}
  - {name: extra, type: InnerProduct, bottom: ip, num_output: 3, include: {stage: deploy}}
"""


def test_build_net_refuses_a_stage_no_rule_names_as_the_cli_does(tmp_path):
    # a typo in stages= built the net without the staged layers, silently; --stage refused it
    path = tmp_path / "net.yaml"
    path.write_text(STAGED)
    with pytest.raises(ConfigError, match=r"stage 'deplyo' is named by no include/exclude rule.*did you mean 'deploy'"):
        netcfg.build_net(path, stages=["deplyo"])
    assert netcfg.build_net(path, stages="deploy").outputs == ("extra",)  # a str is one stage
    assert netcfg.build_net(path).outputs == ("ip",)


def test_load_net_with_weights_refuses_an_unknown_stage(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(STAGED)
    pt = tmp_path / "w.pt"
    torch.save(netcfg.build_net(path, stages="deploy").state_dict(), pt)
    with pytest.raises(ConfigError, match="stage 'dep' is named by no include/exclude rule"):
        netcfg.load_net_with_weights(pt, path, stages=("dep",))
    assert netcfg.load_net_with_weights(pt, path, stages="deploy").outputs == ("extra",)
