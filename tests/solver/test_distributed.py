"""torchrun: 2 CPU ranks (Gloo) train like one process with twice the batch; rank 0 alone writes;
test metrics are reduced over the ranks; a torchrun snapshot resumes in one process; a NaN on
one rank stops both. Plus the loader's shards and the unused-parameter walk, in process.

The 2-rank run is ``python -m torch.distributed.run -m netcfg train``, as a user starts
it, once for the module (about 10 s on an idle 2-core machine).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.distributed as dist
import yaml

from netcfg import load_net
from netcfg.data.loader import BatchLoader
from netcfg.data.spec import source_spec
from netcfg.data.split import load_source
from netcfg.net import Net, build_graph
from netcfg.solver import Solver
from netcfg.solver.check import checked_loader
from netcfg.solver.distributed import Distributed, unused_parameters
from netcfg.solver.launch import ENV, launcher
from netcfg.solver.evaluate import sum_outputs
from netcfg.solver.interrupt import Interrupted
from netcfg.solver.spec import load_solver
from tests.cli.test_train import netcfg
from tests.solver.test_runner import MLP, MLP_DROPOUT, metrics, solve, write_solver

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this PyTorch build has no Gloo")

# a side head no loss reads: DDP must be told to look for parameters without gradients
NET = MLP.replace("  - {name: loss,", "  - {name: side, type: InnerProduct, bottom: ip1, num_output: 3}\n  - {name: loss,")
# 256 training samples: per-rank batches of 8, two of them per update (iter_size), on 2 ranks
# cut each epoch's permutation where one process's batches of 32 do. 119 test samples:
# shards of 60 and 59, so a padded shard would count a sample twice
KEYS = {"train": {"batch_size": 8}, "iter_size": 2, "max_iter": 6, "snapshot": 3, "test_interval": 6,
        "weight_decay": 0.001}
TEST = {"batch_size": 25, "limit": 119}


def write(where: Path, net: str = NET, **keys) -> Path:
    """``write_solver`` with KEYS and the test split above."""
    path = write_solver(where, net, **{**KEYS, **keys})
    spec = yaml.safe_load(path.read_text())
    spec["data"]["test"].update(TEST)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cwd: Path, *args: str, command: str = "train") -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m netcfg COMMAND ARGS`` on a free local port, one thread a rank."""
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[2]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "netcfg", command, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)


def load(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """(directory, run directory, finished torchrun) of the 2-rank run."""
    where = tmp_path_factory.mktemp("ddp")
    solver = write(where)
    done = torchrun(where, str(solver), "--out", "run")
    assert done.returncode == 0, done.stdout + done.stderr
    return where, where / "run", done


def test_two_ranks_of_batch_b_train_as_one_process_of_batch_2b(two_ranks, tmp_path):
    _, run, done = two_ranks
    one = solve(write(tmp_path, train={"batch_size": 32}, iter_size=1), tmp_path / "run")
    got = load(run / "tiny_iter_6.safetensors")
    want = {k: v.detach() for k, v in one.net.state_dict().items()}
    assert not torch.equal(got["ip1.weight"], load(run / "tiny_iter_3.safetensors")["ip1.weight"])  # it trained
    assert set(got) == set(want)
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5)
    # the logged loss is the global batch's (averaged over the ranks), as one process logs it
    for a, b in zip(metrics(run), metrics(tmp_path / "run"), strict=True):
        assert (a["iter"], a["epoch"]) == (b["iter"], b["epoch"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert "DistributedDataParallel over 2 ranks: batch_size 8 per rank, 32 images per update" in done.stdout


def test_only_rank_0_prints_and_writes(two_ranks):
    where, run, done = two_ranks
    assert done.stdout.count("Optimization Done.") == 1
    assert done.stdout.count("Solving TinyMLP") == 1
    assert sorted(p.name for p in where.iterdir()) == ["net.yaml", "run", "solver.yaml"]  # no runs/ of rank 1
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.yaml", "metrics.jsonl", "train.log"]
        + [f"tiny_iter_{i}.{x}" for i in (3, 6) for x in ("safetensors", "solverstate")])
    assert [r["iter"] for r in metrics(run)] == list(range(6))  # each record once
    assert (run / "train.log").read_text().count("Optimization Done.") == 1


def test_test_metrics_are_reduced_over_the_ranks(two_ranks, tmp_path):
    where, run, _ = two_ranks
    final = metrics(run, "test")[-1]
    assert (final["iter"], final["samples"]) == (6, 119)  # each shard tested once, none padded
    alone = Solver(load_solver(where / "solver.yaml"), out=tmp_path / "one", log=lambda line: None)
    alone.load_weights(run / "tiny_iter_6.safetensors")
    whole = alone.test()
    assert final["accuracy"] == pytest.approx(whole["accuracy"], abs=1e-9)
    assert final["loss"] == pytest.approx(whole["loss"], rel=1e-5)


def test_netcfg_test_under_torchrun_prints_the_whole_splits_results_once(two_ranks):
    where, run, _ = two_ranks
    done = torchrun(where, "solver.yaml", "--weights", str(run), "--json", command="test")
    assert done.returncode == 0, done.stderr
    alone = netcfg("test", where / "solver.yaml", "--weights", run, "--json")
    assert alone[0] == 0, alone[2]
    (line,) = done.stdout.splitlines()  # rank 0's alone
    got, want = json.loads(line), json.loads(alone[1])
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5)
    done = torchrun(where, "solver.yaml", "--weights", str(run), command="test")
    assert done.stdout.count("blobs copied") == 1 and done.stdout.count("Testing net (119 samples)") == 1


def copy_snapshot(run: Path, to: Path, it: int) -> Path:
    to.mkdir()
    for name in ("config.yaml", f"tiny_iter_{it}.safetensors", f"tiny_iter_{it}.solverstate"):
        shutil.copy(run / name, to / name)
    return to / f"tiny_iter_{it}.solverstate"


def test_a_torchrun_snapshot_resumes_in_one_process(two_ranks, tmp_path):
    _, run, _ = two_ranks
    # with the same global batch (32 in one process): it goes on exactly as the 2 ranks did
    state = copy_snapshot(run, tmp_path / "same", 3)
    code, out, err = netcfg("train", state.parent / "config.yaml", "--resume", state, "--force",
                            "--set", "data.train.batch_size=32", "--set", "iter_size=1")
    assert code == 0, out + err
    assert "the snapshot was written by 2 process(es), this run has 1 (batch_size is per process: 32 images " in out
    got, want = load(state.parent / "tiny_iter_6.safetensors"), load(run / "tiny_iter_6.safetensors")
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5)
    # unchanged, per-rank batch_size as the whole batch: it resumes without --force
    state = copy_snapshot(run, tmp_path / "plain", 3)
    code, out, err = netcfg("train", state.parent / "config.yaml", "--resume", state.parent)
    assert code == 0, out + err
    assert [r["iter"] for r in metrics(state.parent)] == [3, 4, 5]


def test_a_torchrun_resume_on_as_many_ranks_is_exact_with_dropout_and_augmentation(tmp_path):
    # every rank draws its own dropout masks and crops/flips: the resumed ranks must draw
    # what they would have drawn had the run gone on, so the weights agree bit for bit
    net = MLP_DROPOUT.replace("data: [1, 8, 8]", "data: [1, 6, 6]")
    solver = write(tmp_path, net, train={"batch_size": 8, "crop_size": 6, "mirror": True}, test_interval=0)
    spec = yaml.safe_load(solver.read_text())
    spec["data"]["test"]["crop_size"] = 6  # centred
    solver.write_text(yaml.safe_dump(spec, sort_keys=False))
    done = torchrun(tmp_path, str(solver), "--out", "run")
    assert done.returncode == 0, done.stdout + done.stderr
    state = copy_snapshot(tmp_path / "run", tmp_path / "resumed", 3)
    done = torchrun(tmp_path, str(state.parent / "config.yaml"), "--resume", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Resumed from" in done.stdout and "warning" not in done.stdout
    got, want = load(state.parent / "tiny_iter_6.safetensors"), load(tmp_path / "run" / "tiny_iter_6.safetensors")
    assert not torch.equal(want["ip1.weight"], load(state.with_suffix(".safetensors"))["ip1.weight"])  # it trained
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(got[k], v), k


def test_a_nan_on_one_rank_stops_both(tmp_path):
    data = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    data[1, 0, 3, 3] = 1000.0  # exp: inf in sample 1, rank 1's first batch (no shuffle, every 2nd sample a rank)
    np.savez(tmp_path / "nan.npz", x=data, y=np.arange(8) % 10)
    train = {"source": "npz", "path": "nan.npz", "split": "train", "arrays": {"data": "x", "label": "y"},
             "batch_size": 2, "shuffle": False}
    exp_first = MLP.replace("  - {name: ip1, type: InnerProduct, bottom: data,",
                            "  - {name: exp0, type: Exp, bottom: data, top: e}\n  - {name: ip1, type: InnerProduct, bottom: e,")
    solver = write_solver(tmp_path, exp_first, test=False, max_iter=4, snapshot=0)
    spec = yaml.safe_load(solver.read_text())
    spec["data"]["train"] = train
    solver.write_text(yaml.safe_dump(spec))
    done = torchrun(tmp_path, str(solver), "--out", "run")  # the timeout would catch a hang
    assert done.returncode != 0
    assert "loss is NaN or infinite at iteration 0 on rank(s) 1" in done.stderr
    assert "first non-finite output: layer 'exp0', top 'e'" in done.stderr


def test_a_bad_command_line_is_reported_once_not_by_every_rank(tmp_path):
    solver = write_solver(tmp_path, MLP, test=False)
    done = torchrun(tmp_path, str(solver), "--set", "base_lr=abc")
    assert done.returncode == 1  # torchrun's own; each rank's 2 is in its report (docs/distributed.md)
    assert "exitcode  : 2 " in done.stderr
    assert done.stderr.count("--set base_lr=abc: error: base_lr: input should be a valid number") == 1
    done = torchrun(tmp_path, str(solver), "--resume", "nowhere")
    assert done.returncode != 0
    assert done.stderr.count("--resume: error: solver state not found: nowhere") == 1
    done = torchrun(tmp_path, str(solver), command="test")  # netcfg test's own checks too
    assert done.returncode != 0
    assert done.stderr.count("--weights: error: missing option --weights") == 1, done.stderr


def test_an_error_in_the_set_up_is_printed_once_and_every_rank_stops(tmp_path):
    solver = write_solver(tmp_path, MLP, test=False)
    done = torchrun(tmp_path, str(solver), "--weights", "missing.safetensors")  # in Solver(): every rank
    assert done.returncode != 0
    assert done.stderr.count("--weights: error: weights: weights file not found: ") == 1, done.stderr
    assert done.stderr.count("missing.safetensors (files there: ") == 1, done.stderr
    assert not (tmp_path / "runs").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    done = torchrun(tmp_path, str(solver), "--out", "busy")  # refused by rank 0 alone, which makes the directory
    assert done.returncode != 0
    assert done.stderr.count("--out busy is a folder that holds other files (notes.txt)") == 1
    assert "could not create the run directory" not in done.stderr  # rank 1 stops silently


def test_an_error_of_one_rank_alone_is_printed_with_its_rank(tmp_path):
    # 121 test samples: shards of 61 and 60, so a batch of 61 with drop_last makes no batch on rank 1 only
    solver = write_solver(tmp_path, MLP)
    spec = yaml.safe_load(solver.read_text())
    spec["data"]["test"].update(limit=121, batch_size=61, drop_last=True)
    solver.write_text(yaml.safe_dump(spec))
    done = torchrun(tmp_path, str(solver))
    assert done.returncode != 0
    assert "[rank1]: " in done.stderr and "batch_size 61 is larger than the 60 samples" in done.stderr
    assert done.stderr.count("batch_size 61 is larger") == 1


def test_a_refused_resume_is_printed_once(two_ranks, tmp_path):
    _, run, _ = two_ranks
    state = copy_snapshot(run, tmp_path / "again", 6)
    done = torchrun(tmp_path, str(state.parent / "config.yaml"), "--resume", str(state), "--set", "max_iter=4")
    assert done.returncode != 0
    assert done.stderr.count("max_iter 4 is below the snapshot's iteration 6") == 1


# ------------------------------------------------------------ in process


def digits_loader(rank: int, world: int, even: bool, **keys) -> BatchLoader:
    spec = source_spec(**{"source": "digits", "split": "test", "batch_size": 16, "limit": 119, **keys})
    return BatchLoader(load_source(spec), spec, seed=3, rank=rank, world_size=world, even=even)


def test_training_shards_are_even_and_test_shards_cover_each_sample_once():
    even = [digits_loader(r, 3, True, shuffle=True) for r in range(3)]
    assert {len(x) for x in even} == {3} and {x.samples_per_epoch for x in even} == {40}
    perm = even[0].permutation(0)
    shards = [x.order(0) for x in even]
    assert torch.equal(torch.stack(shards, 1).reshape(-1)[:119], perm)  # rank r: every 3rd from r
    exact = [digits_loader(r, 3, False) for r in range(3)]
    assert [x.samples_per_epoch for x in exact] == [40, 40, 39]
    assert sorted(torch.cat([x.order(0) for x in exact]).tolist()) == list(range(119))


def test_a_rank_whose_test_shard_is_empty_tests_nothing(tmp_path, monkeypatch):
    # one test sample on 2 ranks: rank 1's shard is empty; it was a StopIteration traceback
    spec = load_solver(write_solver(tmp_path, MLP))
    spec.data.test.limit = 1
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    net = Net(build_graph(spec.net_spec, "TEST"))
    loader = checked_loader(spec, "test", net.graph, torch.device("cpu"))
    assert (loader.rank, loader.num_samples, len(loader)) == (1, 0, 0)
    sums = sum_outputs(net, loader.epoch_batches())
    assert (sums.sums, sums.count) == ({}, 0)  # added to rank 0's sample by sum_over_ranks


def test_a_data_position_moves_to_the_same_fraction_of_the_epoch_for_another_world_size():
    two = digits_loader(0, 2, True, split="train", limit=256, batch_size=8)
    for _ in range(6):
        two.next_batch()
    one = digits_loader(0, 1, True, split="train", limit=256, batch_size=16)
    one.load_state_dict(two.state_dict())
    assert two.state_dict() == {"epoch": 0, "position": 48, "world_size": 2}
    assert one.state_dict() == {"epoch": 0, "position": 96}
    with pytest.raises(ValueError, match="does not fit"):
        one.load_state_dict({"epoch": 0, "position": 129, "world_size": 2})


def test_a_rank_above_0_draws_its_dropout_from_the_seed_its_rank_and_the_iteration():
    def masks(rank: int, it: int, drawn_before: int) -> torch.Tensor:
        torch.manual_seed(0)
        torch.rand(drawn_before)  # what earlier iterations drew
        Distributed(rank=rank, world_size=4, active=True).seed_dropout(5, it)
        return torch.nn.functional.dropout(torch.ones(256), 0.5, training=True)

    assert torch.equal(masks(1, 7, 10), masks(1, 7, 1000))  # a resume at iteration 7 draws the same masks
    assert not torch.equal(masks(1, 7, 10), masks(1, 8, 10))
    assert not torch.equal(masks(1, 7, 10), masks(2, 7, 10))  # the ranks drop different units
    assert not torch.equal(masks(0, 7, 10), masks(0, 7, 1000))  # rank 0 goes on with its stream, which the snapshot holds


def test_the_resume_command_after_ctrl_c_starts_as_many_ranks(monkeypatch):
    for key in ENV + ("LOCAL_WORLD_SIZE",):
        monkeypatch.delenv(key, raising=False)
    assert launcher() == "netcfg"
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    e = Interrupted.after(5, Path("run/tiny_iter_5.safetensors"), Path("run/config.yaml"), "Ctrl-C", launcher())
    assert str(e).endswith("Resume with: torchrun --nproc_per_node 2 -m netcfg train run/config.yaml "
                           "--resume run/tiny_iter_5.solverstate")
    monkeypatch.setenv("WORLD_SIZE", "4")  # 2 machines of 2: torchrun's rendezvous options are the user's
    assert launcher() == "torchrun <as started> -m netcfg"


def test_unused_parameters_are_the_layers_no_loss_depends_on(tmp_path):
    def net(text: str) -> Net:
        (tmp_path / "net.yaml").write_text(text)
        return Net(build_graph(load_net(tmp_path / "net.yaml"), "TRAIN"))

    assert unused_parameters(net(NET)) == ["side.weight", "side.bias"]
    assert unused_parameters(net(MLP)) == []


def test_a_finished_teardown_meets_in_the_store_before_and_after_destroying(monkeypatch):
    # a rank closing its Gloo connections (or exiting) while another still finished a
    # collective or tore its own down made that one abort at exit, about 1 run in 30 under
    # load (tests/solver: the two_ranks fixture): the ranks now meet in the store around it
    from torch.distributed import HashStore

    from netcfg.solver import launch

    store, seen = HashStore(), []
    monkeypatch.setattr(launch, "_owned", True)
    monkeypatch.setattr(launch.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(launch.dist, "get_world_size", lambda: 1)
    monkeypatch.setattr(launch.dist.distributed_c10d, "_get_default_store", lambda: store)
    monkeypatch.setattr(launch.dist, "barrier", lambda: seen.append("gloo barrier"))

    def destroy():
        seen.append(("destroy", store.check(["netcfg/teardown/start/all"]), store.check(["netcfg/teardown/end/all"])))

    monkeypatch.setattr(launch.dist, "destroy_process_group", destroy)
    launch.teardown(finished=True)
    assert seen == [("destroy", True, False)] and store.check(["netcfg/teardown/end/all"])
    assert launch._owned is False
    seen.clear()
    keys = store.num_keys()
    monkeypatch.setattr(launch, "_owned", True)
    launch.teardown(finished=False)  # after an error: no waiting for ranks that may never come
    assert [s[0] for s in seen] == ["destroy"] and store.num_keys() == keys  # nothing new in the store
