"""snapshot_keep and snapshot_best: which snapshots a run keeps, and the best one by a test metric."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from netcfg.net import build_graph
from netcfg.solver import Solver
from netcfg.solver.checkpoint import load_tree
from netcfg.solver.keep import Best, prune_snapshots, reported_scalars
from netcfg.solver.rundir import RunDir, later_snapshots, newest_snapshot
from netcfg.solver.spec import load_solver
from tests.cli.test_train import netcfg
from tests.solver.test_runner import metrics, solve, write_solver

ROOT = Path(__file__).resolve().parents[2]
BEST_ACC = {"metric": "accuracy", "mode": "max"}


def fake_snapshot(directory: Path, name: str, it: int) -> Path:
    """A <name>.safetensors with the iteration in its metadata, and its .solverstate."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(1)}, directory / f"{name}.safetensors", metadata={"iter": str(it)})
    (directory / f"{name}.solverstate").write_bytes(b"state")
    return directory / f"{name}.solverstate"


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# ------------------------------------------------------------ units

def test_best_improves_by_mode_and_never_on_nan():
    up, down = Best("accuracy", "max"), Best("loss", "min")
    assert up.improves(0.1) and down.improves(5.0)  # the first finite value is the best so far
    up.value, down.value = 0.5, 1.0
    assert up.improves(0.6) and not up.improves(0.5) and not up.improves(0.4)
    assert down.improves(0.9) and not down.improves(1.0) and not down.improves(1.1)
    assert not up.improves(float("nan")) and not down.improves(float("inf"))
    assert not Best("accuracy", "max").improves(float("nan"))


def test_a_stored_best_continues_only_for_the_same_metric_and_mode(tmp_path):
    spec = load_solver(write_solver(tmp_path, test_interval=2, snapshot_best=BEST_ACC))
    stored = {"metric": "accuracy", "mode": "max", "value": 0.75, "iter": 40}
    assert Best.of(spec, stored) == Best("accuracy", "max", 0.75, 40)
    assert Best.of(spec, {**stored, "metric": "loss"}) == Best("accuracy", "max")  # another metric: start afresh
    assert Best.of(spec, {**stored, "mode": "min"}) == Best("accuracy", "max")
    assert Best.of(spec, None) == Best("accuracy", "max")  # a snapshot from before snapshot_best
    assert Best.of(load_solver(write_solver(tmp_path / "plain")), stored) is None


def test_prune_keeps_the_newest_and_touches_nothing_else(tmp_path):
    for it in (2, 4, 6, 8, 10):
        fake_snapshot(tmp_path, f"tiny_iter_{it}", it)
    fake_snapshot(tmp_path, "tiny_best", 4)
    fake_snapshot(tmp_path, "other_iter_2", 2)  # another prefix: not this run's
    (tmp_path / "tiny_iter_1.safetensors").write_bytes(b"weights a user renamed, no state")
    run = SimpleNamespace(path=tmp_path, prefix="tiny")
    # iteration 8 was just written; 10 is left from before a forced resume from an older snapshot
    removed = prune_snapshots(run, 8, keep=2)
    assert [p.name for p in removed] == ["tiny_iter_2.solverstate", "tiny_iter_4.solverstate"]
    assert names(tmp_path) == {f"{n}.{ext}" for n in ("tiny_iter_6", "tiny_iter_8", "tiny_iter_10", "tiny_best",
                                                      "other_iter_2") for ext in ("safetensors", "solverstate")} \
        | {"tiny_iter_1.safetensors"}
    assert prune_snapshots(run, 8, keep=1) == [tmp_path / "tiny_iter_6.solverstate"]


def test_prune_finishes_a_removal_a_kill_cut_short(tmp_path):
    fake_snapshot(tmp_path, "tiny_iter_2", 2).with_suffix(".safetensors").unlink()  # weights gone, state left
    fake_snapshot(tmp_path, "tiny_iter_4", 4)
    assert prune_snapshots(SimpleNamespace(path=tmp_path, prefix="tiny"), 4, keep=1) == [tmp_path / "tiny_iter_2.solverstate"]
    assert names(tmp_path) == {"tiny_iter_4.safetensors", "tiny_iter_4.solverstate"}


@pytest.mark.parametrize("best_iter, newest", [(6, "tiny_best"), (4, "tiny_iter_4"), (2, "tiny_iter_4")])
def test_newest_snapshot_takes_the_best_only_when_it_is_newer(tmp_path, best_iter, newest):
    fake_snapshot(tmp_path, "tiny_iter_2", 2)
    fake_snapshot(tmp_path, "tiny_iter_4", 4)
    best = fake_snapshot(tmp_path, "tiny_best", best_iter)
    assert newest_snapshot(tmp_path) == tmp_path / f"{newest}.solverstate"  # a tie: the periodic one
    assert later_snapshots(best) == [tmp_path / f"tiny_iter_{i}.solverstate" for i in (2, 4) if i > best_iter]


def test_newest_snapshot_skips_a_best_without_its_state(tmp_path):
    fake_snapshot(tmp_path, "tiny_iter_2", 2)
    fake_snapshot(tmp_path, "tiny_best", 8).unlink()  # killed between the two renames
    assert newest_snapshot(tmp_path) == tmp_path / "tiny_iter_2.solverstate"


def test_reported_scalars_are_the_batch_means_the_test_reports(tmp_path):
    spec = load_solver(write_solver(tmp_path))
    assert sorted(reported_scalars(build_graph(spec.net_spec, "TEST"))) == ["accuracy", "loss"]


# ------------------------------------------------------------ training runs

def test_a_digits_run_keeps_the_newest_snapshots_and_the_best(tmp_path):
    out = tmp_path / "run"
    code, text, err = netcfg("train", ROOT / "solvers/digits.yaml", "--out", out, "--set", "max_iter=200",
                             "--set", "test_interval=50", "--set", "snapshot=50", "--set", "display=0",
                             "--set", "snapshot_keep=2", "--set", "snapshot_best={metric: accuracy, mode: max}")
    assert code == 0, err
    assert names(out) == {"config.yaml", "metrics.jsonl", "train.log"} | {
        f"digits_{n}.{ext}" for n in ("iter_150", "iter_200", "best") for ext in ("safetensors", "solverstate")}
    tests = metrics(out, "test")
    top = max(tests, key=lambda r: r["accuracy"])  # the first of equals: a later tie is no improvement
    with safe_open(str(out / "digits_best.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert int(meta["iter"]) == top["iter"]
    assert json.loads(meta["netcfg.best"])["value"] == pytest.approx(top["accuracy"])
    assert load_tree(out / "digits_best.solverstate")[0]["iter"] == top["iter"]
    bests = metrics(out, "best")
    assert [r["value"] for r in bests] == sorted({r["value"] for r in bests})  # each one an improvement
    assert bests[-1]["iter"] == top["iter"]
    assert f"new best accuracy {top['accuracy']:.4f} at iteration {top['iter']}: digits_best.safetensors" in text
    assert "Removed digits_iter_50 (snapshot_keep: 2)" in text
    # export and weights: RUN take the newest snapshot; the best is exported by naming it
    assert netcfg("export", out, "-f", "onnx", "-o", tmp_path / "newest.onnx")[0] == 0
    code, _, err = netcfg("export", out / "digits_best.safetensors", "-f", "onnx", "-o", tmp_path / "best.onnx")
    assert code == 0, err


def test_best_weights_are_the_tested_weights(tmp_path):
    # test_interval 3 and snapshot 4 never meet: the best pair is the only record of its iteration
    path = write_solver(tmp_path, max_iter=12, test_interval=3, snapshot=4, snapshot_best={"metric": "loss", "mode": "min"})
    s = solve(path, tmp_path / "run")
    best = min(metrics(tmp_path / "run", "test"), key=lambda r: r["loss"])
    assert s.best == Best("loss", "min", pytest.approx(best["loss"]), best["iter"])
    # testing the best weights again gives the loss they were kept for
    t = Solver(load_solver(path), run_dir=RunDir.follow(tmp_path / "run", load_solver(path)), log=lambda line: None)
    t.load_weights(tmp_path / "run/tiny_best.safetensors")
    assert t.test()["loss"] == pytest.approx(best["loss"], rel=1e-6)


def test_a_resumed_run_remembers_the_best(tmp_path):
    path = write_solver(tmp_path, max_iter=16, test_interval=4, snapshot=8, snapshot_keep=1, snapshot_best=BEST_ACC)
    assert netcfg("train", path, "--out", tmp_path / "straight")[0] == 0
    assert netcfg("train", path, "--out", tmp_path / "split", "--set", "max_iter=8")[0] == 0
    first = metrics(tmp_path / "split", "best")
    assert first[-1]["iter"] <= 8
    code, out, err = netcfg("train", tmp_path / "split", "--resume", tmp_path / "split", "--set", "max_iter=16")
    assert code == 0, err
    assert f"best accuracy so far {first[-1]['value']:.4f} at iteration {first[-1]['iter']}" in out
    # the same bests as the straight run: none rewritten for merely matching the one from before the resume
    assert metrics(tmp_path / "split", "best") == metrics(tmp_path / "straight", "best")
    assert names(tmp_path / "split") == names(tmp_path / "straight")
    assert load_file(tmp_path / "split/tiny_best.safetensors").keys() == load_file(
        tmp_path / "straight/tiny_best.safetensors").keys()


def test_a_run_resumes_from_its_best_snapshot(tmp_path):
    path = write_solver(tmp_path, max_iter=8, test_interval=2, snapshot=0, snapshot_after_train=False,
                        snapshot_best={"metric": "loss", "mode": "min"})
    solve(path, tmp_path / "run").run.close()
    best = load_tree(tmp_path / "run/tiny_best.solverstate")[0]["iter"]
    assert newest_snapshot(tmp_path / "run") == tmp_path / "run/tiny_best.solverstate"  # the only snapshot
    code, out, err = netcfg("train", tmp_path / "run", "--resume", tmp_path / "run", "--set", "max_iter=10")
    assert code == 0, err
    assert f"Resumed from {tmp_path / 'run/tiny_best.solverstate'} at iteration {best}" in out


def test_a_best_state_beside_weights_of_another_iteration_is_refused(tmp_path):
    path = write_solver(tmp_path, max_iter=6, test_interval=2, snapshot=2, snapshot_best={"metric": "loss", "mode": "min"})
    solve(path, tmp_path / "run").run.close()
    best = load_tree(tmp_path / "run/tiny_best.solverstate")[0]["iter"]
    other = 6 if best != 6 else 4
    shutil.copy(tmp_path / f"run/tiny_iter_{other}.safetensors", tmp_path / "run/tiny_best.safetensors")
    code, _, err = netcfg("train", tmp_path / "run", "--resume", tmp_path / "run/tiny_best.solverstate", "--force")
    assert code == 2
    assert f"is the state of iteration {best}, but its weights tiny_best.safetensors are of iteration {other}" in err


def test_a_rank_that_does_not_write_keeps_no_files(tmp_path):
    # torchrun: ranks > 0 follow rank 0's run directory; they track the best but write nothing
    path = write_solver(tmp_path, max_iter=6, test_interval=2, snapshot=2, snapshot_keep=1, snapshot_best=BEST_ACC)
    (tmp_path / "run").mkdir()
    spec = load_solver(path)
    s = Solver(spec, run_dir=RunDir.follow(tmp_path / "run", spec), log=lambda line: None)
    s.solve()
    assert s.best.value is not None
    assert names(tmp_path / "run") == set()


# ------------------------------------------------------------ early stopping: snapshot_best.patience

def test_patience_ends_training_after_that_many_tests_without_improvement(tmp_path):
    # a rate too small to move the weights: the test at iteration 0 stays the best (a tie does
    # not improve), so the tests at 2, 4 and 6 are three without improvement
    lines: list[str] = []
    path = write_solver(tmp_path, base_lr=1e-20, max_iter=40, test_interval=2, display=0,
                        snapshot_best={**BEST_ACC, "patience": 3})
    s = Solver(load_solver(path), out=tmp_path / "run", log=lines.append)
    s.solve()
    assert s.iter == 6 and s.stopped_early
    assert "Early stop: accuracy has not improved on" in "\n".join(lines)
    assert "(iteration 0) in 3 tests; stopping at iteration 6 of 40" in "\n".join(lines)
    assert [r["iter"] for r in metrics(tmp_path / "run", "test")] == [0, 2, 4, 6]  # no second test at 6
    assert metrics(tmp_path / "run", "early_stop") == [
        {"event": "early_stop", "iter": 6, "metric": "accuracy", "best": pytest.approx(s.best.value), "best_iter": 0}]
    assert {"tiny_iter_6.safetensors", "tiny_best.safetensors"} <= names(tmp_path / "run")  # the end's snapshot

    # a resume is out of patience at once; more patience (--force) trains on
    code, out, err = netcfg("train", path, "--resume", tmp_path / "run")
    assert code == 0, err
    assert "stopping at iteration 6 of 40" in out and not (tmp_path / "run/tiny_iter_8.safetensors").exists()
    code, out, err = netcfg("train", path, "--resume", tmp_path / "run", "--force",
                            "--set", "snapshot_best.patience=5")
    assert code == 0, err
    assert "stopping at iteration 10 of 40" in out  # five tests after the best at 0


def test_patience_waits_from_the_latest_best():
    best = Best("accuracy", "max", 0.9, 3000)
    assert [best.waited(it, 500) for it in (3000, 3500, 5000, 5500)] == [0, 1, 4, 5]
    assert Best("accuracy", "max").waited(500, 500) == 0  # no test yet
