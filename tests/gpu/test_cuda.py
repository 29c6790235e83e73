"""The CUDA paths of the solver, run where a CUDA device is (CI has none: all skip there).

What only a GPU exercises: the default NaN/Inf check without a host sync (DeferredCheck),
fused optimizer kernels on the device, snapshots of device tensors resumed on the device
and read on the CPU, fp16 with its gradient scaler, bf16 autocast, torch.compile, the
check-time memory estimate against the card's free memory, a real CUDA out-of-memory
error in the middle of training, and torchrun with NCCL (one rank: NCCL takes one GPU a
rank, and these machines lend one). Then the solver's features on the device: an SGD
velocity carried over a rate change by the fused kernel, the weight average (ema) and its
snapshots, debug_info, early stopping with the best snapshot, nets declared 16-bit.
``bench/gpu_session.sh`` runs this module first.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.distributed as dist

from netcfg.solver import Solver, TrainingDiverged
from netcfg.solver.distributed import Distributed
from netcfg.solver.launch import ENV
from netcfg.solver.memory import OutOfMemory
from netcfg.solver.optim import make_optimizer, set_learning_rate
from netcfg.solver.spec import load_solver
from tests.cli.test_train import netcfg
from tests.reliability import write_tiny_solver
from tests.solver.test_deferred_check import params, poison
from tests.solver.test_ema import replayed_average
from tests.solver.test_distributed import free_port
from tests.solver.test_optim import MOMENTUM
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


# ------------------------------------------------------------ the solver's features on the device


@pytest.mark.parametrize("type, caffe", [("SGD", -1.6), ("Nesterov", -1.9)])  # tests/solver/test_optim.py's values
def test_the_fused_kernel_carries_the_velocity_over_a_rate_change_without_a_host_sync(type, caffe):
    w = torch.zeros(1, device="cuda", requires_grad=True)
    opt = make_optimizer(type, [{"params": [w], "lr_mult": 1, "decay_mult": 1}], base_lr=1.0, momentum=0.5)
    assert opt.param_groups[0]["fused"]
    opt.found_inf = torch.zeros((), device="cuda")  # the deferred check's flag, read by the kernel on the device
    w.grad = torch.ones(1, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # a host sync in set_learning_rate or the step raises
    try:
        for lr in (1.0, 0.1):  # the velocity is 1 after the first step; the second is at a tenth of the rate
            set_learning_rate(opt, lr)
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert w.item() == pytest.approx(caffe)
    assert opt.param_groups[0]["caffe_momentum"] == 0.5


@pytest.mark.parametrize("type", ["SGD", "Nesterov"])
def test_a_step_the_fused_kernel_skips_leaves_clean_momentum_on_cuda(type):
    # the CPU's test_a_skipped_first_step_leaves_clean_momentum, with CUDA's kernel
    def make():
        w = torch.ones(64, device="cuda", requires_grad=True)
        return w, make_optimizer(type, [{"params": [w], "lr_mult": 1, "decay_mult": 1}], base_lr=0.1, momentum=0.9)

    w, opt = make()
    ref_w, ref = make()
    opt.found_inf = torch.ones((), device="cuda")  # what GradScaler.step sets on an overflow
    w.grad = torch.full((64,), float("inf"), device="cuda")
    opt.step()
    assert torch.equal(w, torch.ones(64, device="cuda"))
    assert torch.equal(opt.state[w]["momentum_buffer"], torch.zeros(64, device="cuda"))
    opt.found_inf = torch.zeros((), device="cuda")
    w.grad, ref_w.grad = torch.full((64,), 2.0, device="cuda"), torch.full((64,), 2.0, device="cuda")
    opt.step()
    ref.step()
    assert torch.equal(w, ref_w)


@pytest.mark.parametrize("type", ["SGD", "Nesterov"])
def test_a_rate_drop_on_cuda_trains_as_on_the_cpu_under_either_check(tmp_path, type):
    # a step policy drops the rate tenfold at 5 and 10: each drop rescales the velocity (optim.py)
    keys = {"type": type, "momentum": 0.9, "lr_policy": "step", "gamma": 0.1, "stepsize": 5, "max_iter": 12,
            "display": 0, "test": False}
    cpu = solve(write_solver(tmp_path / "cpu", device="cpu", **keys), tmp_path / "cpu/run")
    path = write_solver(tmp_path / "gpu", device="cuda", **keys)
    deferred = quiet(path, tmp_path / "gpu/deferred")
    deferred.solve()
    each = quiet(path, tmp_path / "gpu/each", deferred_check=False)
    each.solve()
    assert deferred._deferred is not None and all(g["fused"] for g in deferred.optimizer.param_groups)
    close(list(weights(deferred).values()), list(weights(each).values()), **EXACT)
    close(list(weights(cpu).values()), list(weights(deferred).values()), rtol=1e-3, atol=1e-4)


EMA = {"decay": 0.9, "warmup": 3}


def test_ema_on_cuda_averages_as_on_the_cpu_and_its_snapshot_resumes_on_the_cpu(tmp_path):
    keys = {"max_iter": 12, "snapshot": 6, "display": 0, "test": False, "ema": EMA}
    cpu_path = write_solver(tmp_path / "cpu", device="cpu", **keys)
    cpu = solve(cpu_path, tmp_path / "cpu/run")
    gpu = solve(write_solver(tmp_path / "gpu", device="cuda", **keys), tmp_path / "gpu/run")
    assert all(a.is_cuda for a in gpu.ema.average) and gpu.ema.updates == 12
    for it in (6, 12):  # the snapshots hold the average
        a = safetensors.torch.load_file(str(tmp_path / f"cpu/run/tiny_iter_{it}.safetensors"))
        b = safetensors.torch.load_file(str(tmp_path / f"gpu/run/tiny_iter_{it}.safetensors"))
        assert set(a) == set(b)
        close([a[k] for k in a], [b[k] for k in a], rtol=1e-3, atol=1e-4)
    # the CUDA run's iteration-6 state goes on on the CPU, average and trained weights, as the CPU's run did
    resumed = quiet(cpu_path, tmp_path / "resumed")
    resumed.restore(tmp_path / "gpu/run/tiny_iter_6.solverstate")
    assert resumed.ema.updates == 6 and all(a.device.type == "cpu" for a in resumed.ema.average)
    resumed.solve()
    close(list(weights(cpu).values()), list(weights(resumed).values()), rtol=1e-3, atol=1e-4)
    a = safetensors.torch.load_file(str(tmp_path / "cpu/run/tiny_iter_12.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "resumed/tiny_iter_12.safetensors"))
    close([a[k] for k in a], [b[k] for k in a], rtol=1e-3, atol=1e-4)


def test_the_average_of_a_bfloat16_net_is_float32_on_cuda_and_moves(tmp_path):
    # tests/solver/test_ema.py's bfloat16 test on the device: the run's own updates, averaged in float64
    net = MLP.replace("data: [1, 8, 8]", "data: {shape: [1, 8, 8], dtype: bfloat16}")
    path = write_solver(tmp_path, net, device="cuda", test=False, max_iter=30, snapshot=30, display=0, base_lr=0.5,
                        ema={"decay": 0.999, "warmup": 0})
    _, start, average = replayed_average(path, 30, 0.999)
    s = solve(path, tmp_path / "run")
    assert {(a.dtype, a.device.type) for a in s.ema.average} == {(torch.float32, "cuda")}
    assert {p.dtype for p in s.net.parameters()} == {torch.bfloat16}
    saved = safetensors.torch.load_file(str(tmp_path / "run/tiny_iter_30.safetensors"))
    assert saved["ip1.weight"].dtype == torch.bfloat16
    assert (average["ip1.weight"] - start["ip1.weight"]).abs().max() > 1e-3
    for k, v in average.items():
        torch.testing.assert_close(saved[k].double(), v.cpu(), rtol=8e-3, atol=1e-4)


def _debug_lines(tmp_path: Path, device: str, debug_info: bool, **keys) -> tuple[Solver, list[str]]:
    lines: list[str] = []
    path = write_solver(tmp_path / f"{device}-{debug_info}", device=device, max_iter=4, display=2, test=False,
                        debug_info=debug_info, **keys)
    s = Solver(load_solver(path), out=tmp_path / f"{device}-{debug_info}/run", log=lines.append)
    s.solve()
    return s, [x for x in lines if x.startswith("    [")]


NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")  # not the 1 of ip1 or L1


def test_debug_info_on_cuda_logs_what_the_cpu_logs_and_changes_no_update(tmp_path):
    _, cpu = _debug_lines(tmp_path, "cpu", True)
    watched, gpu = _debug_lines(tmp_path, "cuda", True)
    plain, _ = _debug_lines(tmp_path, "cuda", False)
    assert watched._deferred is not None  # CUDA's default check, read at each display
    close(list(weights(watched).values()), list(weights(plain).values()), **EXACT)
    assert [NUMBER.sub("#", x) for x in gpu] == [NUMBER.sub("#", x) for x in cpu]
    assert sum("[Update] Layer" in x for x in gpu) == 2 * 4  # iterations 0 and 2, four parameters
    for a, b in zip(cpu, gpu, strict=True):
        want = [float(v) for v in NUMBER.findall(a)]
        assert [float(v) for v in NUMBER.findall(b)] == pytest.approx(want, rel=1e-3, abs=1e-6), b


def test_debug_info_shows_an_update_fp16s_scaler_skips_on_cuda(tmp_path):
    # the fused kernel is called and skips on the scaler's found_inf: one "skipped" line, not
    # [Update] lines with a step of 0
    path = write_tiny_solver(tmp_path, device="cuda", precision="fp16", max_iter=2, display=1, snapshot=0,
                             debug_info=True)
    lines: list[str] = []
    s = Solver(load_solver(path), out=tmp_path / "run", log=lines.append)
    assert all(g["fused"] for g in s.optimizer.param_groups) and s._deferred is None
    start = s.scaler.get_scale()
    poison(s, 0)
    s.solve()
    assert s.scaler.get_scale() == start / 2  # iteration 0's overflow halved it; iteration 1's update was taken
    shown = [i for i, x in enumerate(lines) if x.startswith("Iteration ")]
    first, second = lines[:shown[0]], lines[shown[0] + 1:shown[1]]
    assert [x for x in first if "[Update]" in x] == [
        "    [Update] skipped: the fp16 gradient scaler found an inf or NaN gradient"]
    assert sum("[Update] Layer" in x for x in second) == 4


@pytest.mark.parametrize("base_lr", [0.1, 1e-20])  # 1e-20 moves no weight: the test at 0 stays the best
def test_early_stopping_and_the_best_snapshot_under_the_deferred_check(tmp_path, base_lr):
    path = write_solver(tmp_path, device="cuda", base_lr=base_lr, max_iter=24, test_interval=4, display=0, ema=EMA,
                        snapshot_best={"metric": "loss", "mode": "min", "patience": 2})
    runs = []
    for deferred in (True, False):
        s = quiet(path, tmp_path / f"run-{deferred}", deferred_check=deferred)
        assert (s._deferred is not None) == deferred
        s.solve()
        runs.append(s)
    a, b = runs
    assert (a.iter, a.stopped_early, a.best.iter) == (b.iter, b.stopped_early, b.best.iter)
    assert [r["iter"] for r in metrics(a.run.path, "test")] == [r["iter"] for r in metrics(b.run.path, "test")]
    if base_lr == 1e-20:  # tests at 0, 4 and 8: two without improvement on 0's
        assert (a.iter, a.stopped_early, a.best.iter) == (8, True, 0)
    best = [safetensors.torch.load_file(str(s.run.path / "tiny_best.safetensors")) for s in runs]
    close([best[0][k] for k in best[0]], [best[1][k] for k in best[0]], **EXACT)
    close(list(weights(a).values()), list(weights(b).values()), **EXACT)


@pytest.mark.parametrize("type", ["SGD", "Nesterov", "Adam", "AdamW"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_fused_cuda_kernels_update_16_bit_weights_whole(type, dtype):
    # tests/solver/test_optim.py's test on the CPU's kernels, on CUDA's
    def trained(dt):
        w = (torch.arange(64, dtype=torch.float32, device="cuda") / 640).to(dt).requires_grad_()
        opt = make_optimizer(type, [{"params": [w], "lr_mult": 1, "decay_mult": 1}], base_lr=0.1,
                             momentum=MOMENTUM.get(type))
        assert opt.param_groups[0]["fused"]
        for it in range(2):
            w.grad = torch.full_like(w, 0.05)
            set_learning_rate(opt, 0.1, it)
            opt.step()
        return w.detach().float()

    start = (torch.arange(64, dtype=torch.float32, device="cuda") / 640).to(dtype).float()
    want, got = trained(torch.float32), trained(dtype)
    assert (want - start).abs().min() > 1e-3
    torch.testing.assert_close(got - start, want - start, rtol=0.05, atol=2e-3)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_net_declared_16_bit_trains_on_cuda_in_its_dtype(tmp_path, dtype):
    # fed in its dtype on the device, checked without a host sync (the deferred check on 16-bit gradients)
    net = MLP.replace("data: [1, 8, 8]", f"data: {{shape: [1, 8, 8], dtype: {dtype}}}")
    path = write_solver(tmp_path, net, device="cuda", max_iter=6, test_interval=6, display=3)
    s = quiet(path, tmp_path / "run")
    start = weights(s)
    assert s._deferred is not None
    s.solve()
    batch = s.train_data.next_batch()
    assert (batch["data"].dtype, batch["data"].device.type) == (getattr(torch, dtype), "cuda")
    for k, v in weights(s).items():
        assert v.dtype == getattr(torch, dtype) and v.is_cuda, k
        assert not torch.equal(v, start[k]), k  # every tensor moved
    assert math.isfinite(s.last_test["loss"])
