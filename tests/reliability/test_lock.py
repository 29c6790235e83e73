"""The run-directory lock: another live process is refused, a dead one's lock is taken over."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netcfg.errors import ConfigError
from netcfg.solver import lock as lock_module
from netcfg.solver.lock import LOCK_NAME, RunLock, remove_stale_temporaries
from netcfg.solver.rundir import RunDir
from netcfg.solver.spec import load_solver
from tests.reliability import write_tiny_solver

HOLDER = textwrap.dedent("""
    import importlib.util, sys
    from pathlib import Path
    # lock.py alone: importing the netcfg.solver package would import torch (seconds)
    spec = importlib.util.spec_from_file_location("lock", sys.argv[2])
    lock_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_module)
    lock = lock_module.RunLock.acquire(Path(sys.argv[1]))
    print("locked", flush=True)
    sys.stdin.read()  # hold it until told to go
    lock.release()
""")


def test_another_live_process_is_refused_and_its_lock_freed_when_it_ends(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), lock_module.__file__],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError) as e:
            RunLock.acquire(tmp_path, "--resume")
        assert e.value.render().startswith(f"--resume: error: run directory {tmp_path} is in use by another "
                                           f"netcfg train (pid {holder.pid} on ")
    finally:
        holder.communicate("", timeout=60)
    assert not (tmp_path / LOCK_NAME).exists()  # released: the file goes with it
    lock = RunLock.acquire(tmp_path)
    assert lock.previous == ""  # a clean release leaves nothing stale
    lock.release()


def test_a_stale_lock_file_is_taken_over_and_reported(tmp_path):
    (tmp_path / LOCK_NAME).write_text("999999 elsewhere\n")  # a dead process's; nobody holds the flock
    lock = RunLock.acquire(tmp_path)
    assert lock.previous == "999999 elsewhere"
    assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_one_process_may_take_its_own_directory_again(tmp_path):
    first = RunLock.acquire(tmp_path)
    second = RunLock.acquire(tmp_path)  # a Solver resuming what an earlier Solver object wrote
    first.release()
    assert (tmp_path / LOCK_NAME).exists()  # still held by the second
    second.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_an_unwritable_directory_is_a_located_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        RunLock.acquire(tmp_path / "missing")
    assert e.value.render().startswith(f"--out: error: cannot lock the run directory {tmp_path / 'missing'}: ")


def test_only_a_dead_writers_temporaries_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"x_iter_3.safetensors.tmp-{dead.stdout.strip()}"
    live = tmp_path / "export.onnx.tmp-1"  # pid 1 is alive: another program is writing it
    kept = tmp_path / "notes.tmp-draft"
    for p in (stale, live, kept):
        p.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and kept.exists()


def test_a_run_refused_by_a_run_that_made_the_same_folder_a_moment_before_leaves_it_alone(tmp_path, monkeypatch):
    # two `netcfg train --out run` started together: the other one makes and locks the folder
    # just before this one makes it; this one is refused, and must not delete the other's folder
    spec, run = load_solver(write_tiny_solver(tmp_path)), tmp_path / "run"
    real_mkdir, holder = Path.mkdir, []

    def other_run_first(self, *args, **kwargs):
        if self == run and not holder:
            real_mkdir(run)
            (run / "config.yaml").write_text("the other run's\n")
            holder.append(subprocess.Popen([sys.executable, "-c", HOLDER, str(run), lock_module.__file__],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            assert holder[0].stdout.readline().strip() == "locked"
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", other_run_first)
    try:
        with pytest.raises(ConfigError) as e:
            RunDir.create(spec, run)
        assert "is in use by another netcfg train" in e.value.render()
        assert (run / "config.yaml").read_text() == "the other run's\n"
    finally:
        holder[0].communicate("", timeout=60)
