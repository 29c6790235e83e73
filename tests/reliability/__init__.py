"""Reliability and security tests: bad input, killed runs, full disks, locks, untrusted files. Shared helpers here."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.cli import netcfg  # noqa: F401  (the reliability tests import it from here)

ROOT = Path(__file__).resolve().parents[2]

TINY_NET = """\
name: Tiny
inputs:
  data: [1, 8, 8]
  label: {shape: [], dtype: int64}
layers:
  - {name: ip1, type: InnerProduct, num_output: 16}
  - {name: relu1, type: ReLU, top: ip1}
  - {name: drop1, type: Dropout, dropout_ratio: 0.2, top: ip1}
  - {name: ip2, type: InnerProduct, num_output: 10}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
  - {name: accuracy, type: Accuracy, bottom: [ip2, label], include: {phase: TEST}}
"""


def write_tiny_solver(directory: Path, **keys) -> Path:
    """net.yaml and solver.yaml in ``directory``: SGD on 256 digits, batches of 32, dropout on
    (so an exact resume depends on the RNG too), a snapshot every 3 iterations."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "net.yaml").write_text(TINY_NET)
    solver = {"net": "net.yaml",
              "data": {"train": {"source": "digits", "split": "train", "batch_size": 32, "scale": 0.00390625,
                                 "limit": 256}},
              "type": "SGD", "base_lr": 0.1, "momentum": 0.9, "max_iter": 24, "display": 1, "snapshot": 3,
              "snapshot_prefix": "tiny", "random_seed": 3}
    solver.update(keys)
    path = directory / "solver.yaml"
    path.write_text(yaml.safe_dump(solver, sort_keys=False))
    return path


def tree(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory`` with its size and mtime: what "nothing written" compares
    (a lock file made and removed again leaves no trace here)."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if not p.is_dir()}
