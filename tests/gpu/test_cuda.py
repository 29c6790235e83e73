"""The CUDA paths of the solver, run where a CUDA device is (CI has none: all skip there).

What only a GPU exercises: the default NaN/Inf check without a host sync (DeferredCheck),
fused optimizer kernels on the device, snapshots of device tensors resumed on the device
and read on the CPU, fp16 with its gradient scaler, bf16 autocast, torch.compile, the
check-time memory estimate against the card's free memory, a real CUDA out-of-memory
error in the middle of training, and torchrun with NCCL (one rank: NCCL takes one GPU a
rank, and these machines lend one). ``bench/gpu_session.sh`` runs this module first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.distributed as dist

from netcfg.solver import Solver, TrainingDiverged
from netcfg.solver.distributed import ENV, Distributed
from netcfg.solver.memory import OutOfMemory
from netcfg.solver.spec import load_solver
from tests.cli.test_train import netcfg
from tests.reliability import write_tiny_solver
from tests.solver.test_deferred_check import params, poison
from tests.solver.test_distributed import free_port
from tests.solver.test_runner import MLP, metrics, solve, weights, write_solver

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

EXACT = {"rtol": 1e-6, "atol": 1e-7}  # one device, one set of kernels: the same numbers up to reordering


def quiet(path: Path, out: Path, **kwargs) -> Solver:
    return Solver(load_solver(path), out=out, log=lambda line: None, **kwargs)


def close(a: list[torch.Tensor], b: list[torch.Tensor], **tol) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.cpu(), y.cpu(), **tol)


def test_cuda_trains_as_the_cpu_does(tmp_path):
    # same data order (the loader draws its permutations on the CPU), same first weights
    cpu = solve(write_solver(tmp_path / "cpu", device="cpu", max_iter=20, test=False), tmp_path / "cpu/run")
    gpu = solve(write_solver(tmp_path / "gpu", device="cuda", max_iter=20, test=False), tmp_path / "gpu/run")
    assert gpu.device.type == "cuda" and gpu._deferred is not None  # CUDA's default check
    a, b = weights(cpu), weights(gpu)
    assert set(a) == set(b) and all(v.is_cuda for v in b.values())
    close(list(a.values()), list(b.values()), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("opt", [{"type": "SGD", "momentum": 0.9}, {"type": "Adam", "base_lr": 0.01}])
def test_the_deferred_check_trains_as_the_per_iteration_check(tmp_path, opt):
    path = write_tiny_solver(tmp_path, device="cuda", max_iter=12, display=5, snapshot=4, **opt)
    a = quiet(path, tmp_path / "a", deferred_check=False)
    a.solve()
    b = quiet(path, tmp_path / "b")  # deferred: the default here
    assert b._deferred is not None
    b.solve()
    close(params(a), params(b), **EXACT)
    c = quiet(path, tmp_path / "c")  # b's snapshot resumes on the device and goes on as b did
    c.restore(b.run.path / "tiny_iter_8.solverstate")
    c.solve()
    close(params(b), params(c), **EXACT)


def test_a_nan_gradient_on_cuda_stops_at_its_iteration(tmp_path):
    path = write_tiny_solver(tmp_path, device="cuda", max_iter=12, display=0, snapshot=3)
    runs = {}
    for deferred in (False, True):
        s = quiet(path, tmp_path / f"run-{deferred}", deferred_check=deferred)
        poison(s, 5)
        with pytest.raises(TrainingDiverged) as e:
            s.solve()
        runs[deferred] = (s, str(e.value))
    (a, msg_a), (b, msg_b) = runs[False], runs[True]
    assert "at iteration 5; first made by the backward pass of layer 'ip1'" in msg_a
    assert msg_b == msg_a.replace("run-False", "run-True")
    close(params(a), params(b), **EXACT)  # the bad update (and the one after) skipped on the device
    assert sorted(p.name for p in b.run.path.glob("*.safetensors")) == ["tiny_iter_3.safetensors"]


def test_a_cuda_snapshot_tests_on_the_cpu(tmp_path):
    path = write_solver(tmp_path, device="cuda", max_iter=10, snapshot=10)
    s = solve(path, tmp_path / "run")
    on_gpu = s.test()
    snap = tmp_path / "run/tiny_iter_10.safetensors"
    assert all(v.device.type == "cpu" for v in safetensors.torch.load_file(str(snap)).values())
    code, out, err = netcfg("test", path, "--weights", snap, "--set", "device=cpu", "--json")
    assert code == 0, out + err
    on_cpu = json.loads(out)
    assert on_cpu["accuracy"] == pytest.approx(on_gpu["accuracy"], abs=1 / 120)  # a near tie may flip
    assert on_cpu["loss"] == pytest.approx(on_gpu["loss"], rel=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, precision):
    path = write_solver(tmp_path, device="cuda", precision=precision, max_iter=60, display=10, test=False)
    s = solve(path, tmp_path / "run")
    assert (s.scaler is not None) == (precision == "fp16")
    assert s._deferred is None if precision == "fp16" else s._deferred is not None  # the scaler checks fp16
    first, last = metrics(s.run.path)[0]["loss"], metrics(s.run.path)[-1]["loss"]
    assert last < 0.7 * first


def test_compiled_trains_as_eager(tmp_path):
    eager = solve(write_solver(tmp_path / "e", device="cuda", max_iter=12, test=False), tmp_path / "e/run")
    compiled = solve(write_solver(tmp_path / "c", device="cuda", compile=True, max_iter=12, test=False),
                     tmp_path / "c/run")
    close(list(weights(eager).values()), list(weights(compiled).values()), rtol=1e-4, atol=1e-5)


def test_the_memory_check_refuses_what_the_card_cannot_hold(tmp_path):
    # 20 GB of weights, gradients and momentum (within the host's RAM), then 320 MB of
    # activations per sample: a batch of 1024 cannot fit on any card
    wide = MLP.replace("num_output: 16", "num_output: 20000000")
    path = write_solver(tmp_path, wide, device="cuda", train={"batch_size": 1024, "limit": 1024})
    code, out, err = netcfg("train", path, "--out", tmp_path / "run")
    assert code == 2, out + err
    assert "data.train.batch_size: a train batch of 1024 needs about" in err
    assert "free on " + torch.cuda.get_device_name(0) in err
    assert not (tmp_path / "run").exists()  # refused before a run directory


def test_running_out_of_cuda_memory_mid_run_snapshots_and_advises(tmp_path):
    net = MLP.replace("num_output: 16", "num_output: 65536")  # 64 MB of activations per batch of 256
    path = write_solver(tmp_path, net, device="cuda", train={"batch_size": 256}, max_iter=5, test=False)
    s = quiet(path, tmp_path / "run")
    torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")  # cuBLAS's workspace, before the card fills
    torch.cuda.synchronize()
    free = torch.cuda.mem_get_info()[0]
    blocker = None
    for margin in (16, 32, 64):  # fill the card but for a few MB, less than one batch needs
        try:
            blocker = torch.empty(free - margin * 2**20, dtype=torch.uint8, device="cuda")
            break
        except torch.OutOfMemoryError:
            continue
    assert blocker is not None
    try:
        with pytest.raises(OutOfMemory) as e:
            s.solve()
    finally:
        del blocker
        torch.cuda.empty_cache()
    msg = str(e.value)
    assert msg.startswith("out of memory on cuda") and "iteration 0" in msg
    assert "batch_size: 128, iter_size: 2" in msg and "or precision: bf16" in msg
    assert "snapshot written: " in msg and (tmp_path / "run/tiny_iter_0.safetensors").exists()


@pytest.mark.skipif(not (dist.is_available() and dist.is_nccl_available()), reason="no NCCL in this build")
def test_torchrun_with_nccl_trains_as_one_process(tmp_path):
    path = write_solver(tmp_path, device="cuda", max_iter=6, snapshot=6, test=False)
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "netcfg", "train", str(path), "--out", "ddp"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DistributedDataParallel over 1 rank" in done.stdout
    alone = solve(path, tmp_path / "alone")
    got = safetensors.torch.load_file(str(tmp_path / "ddp/tiny_iter_6.safetensors"))
    for k, v in weights(alone).items():
        torch.testing.assert_close(got[k], v.cpu(), rtol=1e-5, atol=1e-6)


def test_a_rank_above_0_draws_the_same_cuda_dropout_masks_in_an_iteration_whatever_came_before():
    # NCCL needs a GPU a rank, so no rank 1 trains here: its re-seeding is checked in process
    rank1 = Distributed(rank=1, world_size=2, device=torch.device("cuda", 0), active=True)
    ones = torch.ones(4096, device="cuda")

    def masks(drawn_before: int) -> torch.Tensor:
        torch.rand(drawn_before, device="cuda")  # what earlier iterations drew
        rank1.seed_dropout(3, 7)
        return torch.nn.functional.dropout(ones, 0.5, training=True)

    assert torch.equal(masks(10), masks(100_000))
