"""``log: {tensorboard: true}``: the run's metrics also land as TensorBoard scalars."""

from __future__ import annotations

import importlib.util
import json

import pytest

from netcfg.solver import Solver
from tests.cli import run_cli
from tests.solver.test_runner import write_solver


def test_scalars_mirror_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = write_solver(tmp_path, max_iter=20, display=5, test_interval=10, log={"tensorboard": True})
    Solver.from_file(path, out=tmp_path / "run", log=lambda line: None).solve()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "test/loss", "test/accuracy"} <= tags
    train = [r for r in records if r["event"] == "train"]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("train/loss")] == [(r["iter"], r["loss"]) for r in train]
    test = [r for r in records if r["event"] == "test"]
    assert [e.step for e in events.Scalars("test/accuracy")] == [r["iter"] for r in test] == [0, 10, 20]


def test_a_per_class_list_becomes_one_scalar_per_class():
    """Accuracy's per-class top (a list in the test record) was dropped from TensorBoard,
    silently: only numbers were written. Now each class is a scalar of its own."""
    from netcfg.solver.tensorboard import TensorBoardLog

    written = []

    class Writer:  # SummaryWriter's two calls TensorBoardLog makes; the package may not be installed
        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

    log = object.__new__(TensorBoardLog)
    log.writer = Writer()
    log.write({"event": "test", "iter": 30, "loss": 0.5, "accuracy": 0.75, "per_class": [1.0, 0.5],
               "samples": 8, "seconds": 0.1})
    assert written == [("test/loss", 0.5, 30), ("test/accuracy", 0.75, 30), ("test/per_class/0", 1.0, 30),
                       ("test/per_class/1", 0.5, 30), ("test/test_seconds", 0.1, 30)]


def test_asking_for_tensorboard_without_the_package_is_a_located_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    path = write_solver(tmp_path, log={"tensorboard": True})
    result = run_cli("train", str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert f"{path}:" in result.stderr and "log.tensorboard" in result.stderr
    assert "pip install 'netcfg[tensorboard]'" in result.stderr
    assert not (tmp_path / "run").exists()
