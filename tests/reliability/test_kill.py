"""kill -9 at random moments of real ``netcfg train`` processes: no snapshot is lost or half taken.

Each trial starts ``netcfg train`` in its own process (``victim.py``: the real
command, slowed so the kill can land anywhere, inside a snapshot write too; forked
from one warm process, so a trial does not pay for importing torch) and SIGKILLs
it at a moment drawn from a seeded RNG. Then: every snapshot file in the run
directory loads; the newest complete one is what ``--resume DIR`` takes, never a
``*.tmp-<pid>`` a write left behind; the stale lock is taken over; and the resumed
run ends with exactly the weights of a run never interrupted (CPU, bit for bit).
Trials run side by side, so the whole file takes seconds, not minutes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from netcfg.solver.checkpoint import load_tree
from netcfg.solver.rundir import newest_snapshot
from netcfg.solver.snapshot import check_state
from netcfg.solver.weights_file import load_weights
from netcfg.tools.plot import read_run
from tests.reliability import ROOT, netcfg, write_tiny_solver

VICTIM = Path(__file__).with_name("victim.py")
MAX_ITER, SNAPSHOT = 24, 3
STEP = 0.05  # seconds the victim sleeps after each iteration
# (name, write delay, when to kill): after N iterations, N <= 16 so that the run is still going
# (+ a random part of one; every file write slowed a little), or at a random point of the first
# 0.4 s of a snapshot file's write, slowed to 3 s so that a busy machine cannot miss it
TRIALS = [(f"random-{i}", 0.01, ("iterations", 4 + (i * 5) % 13)) for i in range(8)] + [
    ("weights-write", 3.0, ("writing", "tiny_iter_6.safetensors.tmp-")),
    ("state-write", 3.0, ("writing", "tiny_iter_9.solverstate.tmp-")),
    ("last-weights-write", 3.0, ("writing", f"tiny_iter_{MAX_ITER}.safetensors.tmp-")),
]


class Victims:
    """``netcfg train`` processes forked from one warm process (``victim.py``)."""

    def __init__(self, directory: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.server = subprocess.Popen([sys.executable, str(VICTIM)], cwd=ROOT, env=env, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.directory = directory
        self.lock = threading.Lock()

    def start(self, solver: Path, run: Path, write_delay: float, slow: str = ".tmp-", step: float = STEP) -> Victim:
        log = self.directory / f"{run.name}.log"
        request = {"step": step, "write": write_delay, "slow": slow, "args": [str(solver), "--out", str(run)],
                   "log": str(log)}
        with self.lock:
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
            line = self.server.stdout.readline()
        assert line.strip().isdigit(), f"victim.py did not start a run: {line!r}"
        return Victim(int(line), log)

    def close(self) -> None:
        self.server.stdin.close()
        self.server.kill()  # its children are on their own; no need to wait for its shutdown
        self.server.wait(timeout=30)


class Victim:
    """One forked ``netcfg train``: alive until killed (or done)."""

    def __init__(self, pid: int, log: Path):
        self.pid, self.log = pid, log

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            raise AssertionError(f"the run ended before the kill:\n{self.log.read_text()}") from None
        deadline = time.monotonic() + 30
        while self.alive():  # reaped by the kernel at once (victim.py ignores SIGCHLD)
            assert time.monotonic() < deadline, "the killed process does not go away"
            time.sleep(0.001)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The solver, the weights of the run nobody interrupts, and the process that starts victims."""
    base = tmp_path_factory.mktemp("kill")
    victims = Victims(base)
    solver = write_tiny_solver(base)
    code, out, err = netcfg("train", solver, "--out", base / "straight")
    assert code == 0, err
    yield solver, load_file(base / f"straight/tiny_iter_{MAX_ITER}.safetensors"), victims
    victims.close()


def iterations_done(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_text().count('"event": "train"')
    except FileNotFoundError:
        return 0


def wait_for(victim: Victim, ready, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not victim.alive():
            log = victim.log.read_text() if victim.log.exists() else ""
            raise AssertionError(f"the run ended before the kill:\n{log}")
        if time.monotonic() > deadline:
            victim.kill()
            raise AssertionError("timed out waiting for the moment to kill")
        time.sleep(0.002)


def run_trial(victims: Victims, solver: Path, run: Path, write_delay: float, when: tuple, seed: int) -> dict:
    """Start a run and kill -9 it at the moment ``when`` names; what it left behind."""
    rng = random.Random(seed)
    if when[0] == "iterations":
        victim = victims.start(solver, run, write_delay)
        wait_for(victim, lambda: iterations_done(run) >= when[1])
        time.sleep(rng.uniform(0, STEP))
    else:
        victim = victims.start(solver, run, write_delay, slow=when[1])
        wait_for(victim, lambda: run.is_dir() and any(when[1] in p.name for p in run.iterdir()))
        time.sleep(rng.uniform(0, 0.4))
    victim.kill()
    return {"temporaries": sorted(p.name for p in run.iterdir() if ".tmp-" in p.name)}


def check_after_kill(run: Path, left: dict, when: tuple) -> Path:
    """Every file named as a snapshot loads; the newest complete one is not a temporary."""
    for p in run.glob("*.solverstate"):
        check_state(load_tree(p)[0], p)
    for p in run.glob("*.safetensors"):
        load_weights(p)
    newest = newest_snapshot(run)
    assert newest is not None and ".tmp-" not in newest.name
    if when[0] == "writing":
        assert any(when[1] in t for t in left["temporaries"]), "the kill was meant to land inside a write"
        being_written = int(when[1].split("_iter_")[1].split(".")[0])
        assert int(newest.stem.rsplit("_", 1)[1]) == being_written - SNAPSHOT
    return newest


def test_kill_9_at_random_moments_then_resume_exactly(setup, tmp_path):
    solver, straight, victims = setup
    with ThreadPoolExecutor(max_workers=len(TRIALS)) as pool:  # mostly asleep: side by side
        futures = {name: pool.submit(run_trial, victims, solver, tmp_path / name, delay, when, seed)
                   for seed, (name, delay, when) in enumerate(TRIALS)}
        left = {name: f.result() for name, f in futures.items()}
    for name, _, when in TRIALS:
        run = tmp_path / name
        newest = check_after_kill(run, left[name], when)
        code, out, err = netcfg("train", run / "config.yaml", "--resume", run)  # the directory: its newest snapshot
        assert code == 0, f"{name}: {err}"
        assert f"Resumed from {newest}" in out
        assert "took over the stale lock" in out
        assert not [p for p in run.iterdir() if ".tmp-" in p.name or p.name == "train.lock"]
        resumed = load_file(run / f"tiny_iter_{MAX_ITER}.safetensors")
        assert resumed.keys() == straight.keys()
        for k in straight:
            assert torch.equal(resumed[k], straight[k]), f"{name}: {k} differs from the uninterrupted run"


def test_a_second_run_in_the_same_directory_is_refused_until_the_first_is_dead(setup, tmp_path):
    solver, straight, victims = setup
    run = tmp_path / "run"
    victim = victims.start(solver, run, write_delay=0.0, step=0.25)  # 6 s of training
    try:
        wait_for(victim, lambda: iterations_done(run) >= SNAPSHOT + 1)
        for args in (["--out", run], ["--resume", run]):
            code, out, err = netcfg("train", solver, *args)
            assert code == 2, err
            assert f"is in use by another netcfg train (pid {victim.pid} on " in err
            assert "Traceback" not in err
        assert victim.alive()  # the first run goes on, untouched
    finally:
        victim.kill()
    code, out, err = netcfg("train", run / "config.yaml", "--resume", run)
    assert code == 0, err
    assert f"took over the stale lock of a run that is gone ({victim.pid} " in out
    resumed = load_file(run / f"tiny_iter_{MAX_ITER}.safetensors")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    code, out, err = netcfg("train", solver, "--out", run)  # free now, but a new run would mix with the old
    assert code == 2 and "already holds a run" in err


def test_a_record_a_killed_run_left_half_written_is_cut_on_resume(setup, tmp_path):
    # a kill (or a power cut) in the middle of a record leaves a last line without its newline;
    # the resumed run appended after it, leaving a broken line mid-file that netcfg plot refused
    solver, straight, victims = setup
    run = tmp_path / "run"
    code, out, err = netcfg("train", solver, "--out", run, "--set", "max_iter=12")
    assert code == 0, err
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"event": "train", "iter": 12, "epoch": 1.5, "lo')
    with open(run / "train.log", "a") as f:
        f.write("Iteration 12 (epo")
    code, out, err = netcfg("train", run / "config.yaml", "--resume", run, "--set", f"max_iter={MAX_ITER}")
    assert code == 0, err
    assert "removed the half-written last line of metrics.jsonl (a record the run was writing when it was killed)" in out
    assert "removed the half-written last line of train.log" in out
    assert [r["iter"] for r in read_run(run).train] == list(range(MAX_ITER))
    assert (run / "train.log").read_text().count("Iteration 12 (epo") == 1  # the resumed run's line only
    resumed = load_file(run / f"tiny_iter_{MAX_ITER}.safetensors")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    code, out, err = netcfg("train", run / "config.yaml", "--resume", run, "--set", "max_iter=30")
    assert code == 0, err
    assert "half-written" not in out  # whole lines are left alone
