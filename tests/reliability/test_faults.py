"""Faults during a run: a full disk, an unwritable run directory, memory that runs out.

Each is a clear message and an exit code, never a traceback, and never costs the
snapshot before it: a full disk leaves the previous snapshot whole and loadable;
memory is estimated before anything is allocated, and an out-of-memory error in
the middle of training writes a snapshot first, which resumes exactly.
"""

from __future__ import annotations

import builtins
import errno
import shlex

import pytest
import torch
from safetensors.torch import load_file

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph, load_net
from netcfg.solver import Solver, checkpoint, memory, rundir, setup
from netcfg.solver.checkpoint import load_tree
from netcfg.solver.memory import estimate, is_out_of_memory, split_batch
from netcfg.solver.rundir import newest_snapshot
from netcfg.solver.spec import load_solver
from netcfg.tools.plot import read_run
from tests.reliability import ROOT, netcfg, tree, write_tiny_solver

MAX_ITER = 24


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The weights of the tiny run nobody interrupts."""
    base = tmp_path_factory.mktemp("straight")
    code, out, err = netcfg("train", write_tiny_solver(base), "--out", base / "run")
    assert code == 0, err
    return load_file(base / f"run/tiny_iter_{MAX_ITER}.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def disk_full_at(monkeypatch, name_part: str, module=checkpoint, when=lambda data: True) -> None:
    """The disk fills up when ``module`` writes ``data`` (``when(data)``) to a file whose
    name contains ``name_part``."""
    def full_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if ("w" in mode or "a" in mode) and name_part in str(path):
            real = f.write

            def write(data):
                if not when(data):
                    return real(data)
                real(data[: len(data) // 2])  # part of it made it to disk
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    monkeypatch.setattr(module, "open", full_open, raising=False)


# ------------------------------------------------------------ full disk


@pytest.mark.parametrize("which", ["tiny_iter_9.safetensors", "tiny_iter_9.solverstate"])
def test_a_full_disk_stops_the_run_and_keeps_the_previous_snapshot(tmp_path, monkeypatch, straight, which):
    solver = write_tiny_solver(tmp_path)
    run = tmp_path / "run"
    disk_full_at(monkeypatch, which + ".tmp-")
    code, out, err = netcfg("train", solver, "--out", run)
    assert code == 1
    assert "Traceback" not in err
    assert err == (f"{run / which}: error: cannot write: No space left on device; the snapshot of iteration 9 was "
                   f"not written, the previous one is intact: {run / 'tiny_iter_6.solverstate'}\n")
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]  # the half-written file is gone
    assert not (run / "train.lock").exists()
    assert newest_snapshot(run) == run / "tiny_iter_6.solverstate"
    load_tree(run / "tiny_iter_6.solverstate")
    monkeypatch.undo()  # space again: the run goes on from where it was
    code, out, err = netcfg("train", run / "config.yaml", "--resume", run)
    assert code == 0, err
    assert same(load_file(run / f"tiny_iter_{MAX_ITER}.safetensors"), straight)


def test_a_full_disk_for_the_metrics_is_a_message(tmp_path, monkeypatch):
    solver = write_tiny_solver(tmp_path)
    disk_full_at(monkeypatch, "metrics.jsonl", module=rundir, when=lambda text: '"iter": 5,' in text)
    code, out, err = netcfg("train", solver, "--out", tmp_path / "run")
    assert code == 1 and "Traceback" not in err
    assert err == f"{tmp_path / 'run/metrics.jsonl'}: error: cannot write: No space left on device\n"
    assert newest_snapshot(tmp_path / "run") == tmp_path / "run/tiny_iter_3.solverstate"
    assert not (tmp_path / "run/train.lock").exists()


def test_a_record_the_full_disk_cut_short_is_not_left_for_the_resumed_run(tmp_path, monkeypatch):
    # half of iteration 5's line reached the disk; a resume appending after it would leave
    # a broken line in the middle of metrics.jsonl, and netcfg plot would refuse the run
    solver = write_tiny_solver(tmp_path)
    disk_full_at(monkeypatch, "metrics.jsonl", module=rundir, when=lambda text: '"iter": 5,' in text)
    code, out, err = netcfg("train", solver, "--out", tmp_path / "run")
    assert code == 1
    text = (tmp_path / "run/metrics.jsonl").read_text()
    assert text.endswith("\n") and '"iter": 5,' not in text
    monkeypatch.undo()
    code, out, err = netcfg("train", tmp_path / "run/config.yaml", "--resume", tmp_path / "run")
    assert code == 0, err
    assert [r["iter"] for r in read_run(tmp_path / "run").train] == list(range(MAX_ITER))


def test_an_unwritable_run_directory_is_refused_before_training(tmp_path, monkeypatch):
    solver = write_tiny_solver(tmp_path)
    before = tree(tmp_path)

    def no_permission(path, mode="r", *args, **kwargs):
        if "w" in mode or "a" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr("netcfg.solver.lock.open", no_permission, raising=False)
    code, out, err = netcfg("train", solver, "--out", tmp_path / "run")
    assert code == 2 and "Traceback" not in err
    assert err == (f"--out: error: cannot lock the run directory {tmp_path / 'run'}: Permission denied "
                   "(is the directory writable?)\n")
    assert tree(tmp_path) == before and not (tmp_path / "run").exists()
    monkeypatch.undo()
    disk_full_at(monkeypatch, "config.yaml")
    code, out, err = netcfg("train", solver, "--out", tmp_path / "run")
    assert code == 2
    assert err.startswith(f"--out: error: cannot write in the run directory {tmp_path / 'run'}: No space left")
    assert tree(tmp_path) == before and not (tmp_path / "run").exists()


# ------------------------------------------------------------ memory


def test_the_estimate_counts_every_blob_of_a_batch():
    graph = build_graph(load_net(ROOT / "configs/lenet.yaml"), "TRAIN")
    floats = 784 + 20 * 24 * 24 + 20 * 12 * 12 + 50 * 8 * 8 + 50 * 4 * 4 + 500 + 500 + 10 + 1  # data ... loss
    est = estimate(graph, 64, train=True, optimizer="Adam")
    assert est.per_sample == 4 * floats + 8  # + the int64 label
    assert est.fixed == graph.total_params * 4 * 4  # weights, gradients, Adam's two moments
    assert est.total == est.fixed + est.per_sample * 64 * 2
    assert estimate(graph, 64, train=False).total == graph.total_params * 4 + est.per_sample * 64
    assert estimate(graph, 1, train=True, precision="bf16").per_sample < est.per_sample


@pytest.mark.parametrize("batch, fits, expected", [(64, 6, (4, 16, True)), (64, 16, (16, 4, True)),
                                                   (97, 10, (10, 10, False)), (100, 30, (25, 4, True))])
def test_split_batch_keeps_the_effective_batch(batch, fits, expected):
    smaller, steps, exact = split_batch(batch, fits)
    assert (smaller, steps, exact) == expected
    assert smaller <= fits and (smaller * steps == batch) == exact and smaller * steps >= batch


def test_a_batch_that_cannot_fit_is_refused_before_allocating(tmp_path, monkeypatch):
    solver = write_tiny_solver(tmp_path, data={"train": {"source": "digits", "split": "train", "batch_size": 1000,
                                                         "limit": 256}})
    spec = load_solver(solver)
    est = estimate(build_graph(spec.net_spec, "TRAIN"), 1000, train=True, optimizer="SGD")
    room = est.fixed + est.per_sample * 2 * 300  # room for a batch of 300
    monkeypatch.setattr(memory, "available_memory", lambda device: (room, "of RAM available"))
    allocated = []
    monkeypatch.setattr(setup, "checked_loader", lambda spec, split, graph, device: allocated.append(split))
    monkeypatch.chdir(tmp_path)  # where runs/ would be made
    before = tree(tmp_path)
    code, out, err = netcfg("train", solver)
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"{solver}:6:17: error: data.train.batch_size: a train batch of 1000 needs about ")
    assert f"more than the {memory.human_bytes(room)} of RAM available" in err
    assert "largest blob: 'ip1' of layer 'ip1', 16, 64 bytes per sample" in err
    assert err.endswith("(lower batch_size to 250 and set iter_size: 4 to keep the effective batch of 1000)\n")
    assert not allocated and tree(tmp_path) == before  # no data loaded, no run directory


def test_a_net_that_cannot_fit_even_one_sample_blames_its_largest_layer(tmp_path, monkeypatch):
    solver = write_tiny_solver(tmp_path)
    monkeypatch.setattr(memory, "available_memory", lambda device: (10_000, "of RAM available"))
    with pytest.raises(ConfigErrors) as e:
        Solver(load_solver(solver), out=tmp_path / "run", log=lambda line: None)
    assert e.value.errors[0].path == ("layers", 0)
    assert "parameters need about" in e.value.render()
    monkeypatch.setattr(memory, "available_memory", lambda device: (estimate(
        build_graph(load_solver(solver).net_spec), 1, train=True).fixed + 100, "of RAM available"))
    with pytest.raises(ConfigErrors, match="even one sample needs"):
        Solver(load_solver(solver), out=tmp_path / "run", log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_out_of_memory_mid_run_snapshots_advises_and_resumes_exactly(tmp_path, monkeypatch, straight):
    solver = write_tiny_solver(tmp_path)
    run = tmp_path / "run"
    step, calls = Solver._train_step, []

    def runs_out_at_iteration_10(self):
        calls.append(1)
        if len(calls) == 11:
            self.train_data.next_batch()  # the batch was drawn (and dropout drew) before memory ran out
            torch.rand(3)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(self)

    monkeypatch.setattr(Solver, "_train_step", runs_out_at_iteration_10)
    code, out, err = netcfg("train", solver, "--out", run)
    assert code == 1 and "Traceback" not in err
    state = run / "tiny_iter_10.solverstate"
    assert err.startswith(f"error: out of memory on cpu at iteration 10 (CUDA out of memory. Tried to allocate "
                          f"2.00 GiB); snapshot written: {run / 'tiny_iter_10.safetensors'}. Lower "
                          "data.train.batch_size (now 32) and raise iter_size (now 1) to keep the effective "
                          "batch: e.g. batch_size: 16, iter_size: 2.")
    command = shlex.split(err.split("Resume with: netcfg ")[1])
    assert command == ["train", str(run / "config.yaml"), "--resume", str(state), "--set",
                       "data.train.batch_size=16", "--set", "iter_size=2", "--force"]
    assert not (run / "train.lock").exists()
    monkeypatch.setattr(Solver, "_train_step", step)
    code, out, err = netcfg("train", run / "config.yaml", "--resume", state)  # as it was: exactly the straight run
    assert code == 0, err
    assert same(load_file(run / f"tiny_iter_{MAX_ITER}.safetensors"), straight)
    code, out, err = netcfg(*command)  # the advised command runs (half the batch, twice the steps)
    assert code == 0, err
    assert "warning: resuming with a changed config: data.train.batch_size: 32 -> 16" in out


def test_out_of_memory_inside_the_update_writes_no_snapshot(tmp_path, monkeypatch):
    solver = write_tiny_solver(tmp_path)
    s = Solver(load_solver(solver), out=tmp_path / "run", log=lambda line: None)
    real, calls = s.optimizer.step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)")
        return real(*args, **kwargs)

    s.optimizer.step = step
    with pytest.raises(memory.OutOfMemory) as e:
        s.solve()
    assert e.value.exit_code == 1
    assert ("no snapshot written (it failed inside the update); last snapshot: "
            f"{tmp_path / 'run/tiny_iter_3.solverstate'}") in str(e.value)
    assert "Resume with" not in str(e.value)
    assert newest_snapshot(tmp_path / "run") == tmp_path / "run/tiny_iter_3.solverstate"


def test_what_counts_as_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))  # a bug: its traceback stays
    assert not is_out_of_memory(ValueError("out of memory"))
    assert memory.human_bytes(1.5 * 2**30) == "1.5 GiB" and memory.human_bytes(100) == "100 bytes"


# ------------------------------------------------------------ NaN and Inf

SQRT_OF_ZERO = """\
name: SqrtOfZero
inputs:
  data: [1, 8, 8]
  label: {shape: [], dtype: int64}
layers:
  - {name: ip1, type: InnerProduct, num_output: 16, weight_filler: {type: constant}, bias_filler: {type: constant}}
  - {name: sqrt1, type: Power, power: 0.5}
  - {name: ip2, type: InnerProduct, num_output: 10}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
"""


def test_a_non_finite_gradient_stops_the_run_before_the_update(tmp_path):
    # ip1 outputs zeros; sqrt is finite there (the loss too) but its derivative is not
    solver = write_tiny_solver(tmp_path)
    (tmp_path / "net.yaml").write_text(SQRT_OF_ZERO)
    s = Solver(load_solver(solver), out=tmp_path / "run", log=lambda line: None)
    with pytest.raises(Exception) as e:
        s.solve()
    assert type(e.value).__name__ == "TrainingDiverged" and e.value.exit_code == 1
    assert str(e.value).startswith("a gradient is NaN or infinite (the loss is 2.3")
    assert "at iteration 0; first made by the backward pass of layer 'sqrt1'; no good snapshot was written" in str(e.value)
    assert all(torch.isfinite(p).all() for p in s.net.parameters())  # the update never ran
    code, out, err = netcfg("train", solver, "--out", tmp_path / "cli")
    assert code == 1 and "layer 'sqrt1'" in err and "Traceback" not in err
