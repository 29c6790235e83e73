"""TensorBoard scalars for a run (``log: {tensorboard: true}``), mirroring metrics.jsonl.

Each train and test record the solver writes to metrics.jsonl becomes scalars
``train/<key>`` and ``test/<key>`` at step ``iter`` (a list, Accuracy's per-class top, one
scalar per element: ``test/per_class/0``, ...), in ``<run>/tensorboard``:

    tensorboard --logdir runs/

Needs the tensorboard package (``pip install 'netcfg[tensorboard]'``); the solver
file's check reports it missing before anything runs.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TensorBoardLog"]

_SKIP = {"event", "iter", "samples"}


class TensorBoardLog:
    """Writes metrics records as TensorBoard scalars; flushed after every record."""

    def __init__(self, run_path: Path):
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard

        self.path = Path(run_path) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.path))

    def write(self, record: dict) -> None:
        event = record.get("event")
        if event not in ("train", "test"):
            return
        step = int(record["iter"])
        for key, value in record.items():
            if event == "test" and key == "seconds":
                key = "test_seconds"  # a test record's seconds is the test's own duration
            if isinstance(value, list):  # Accuracy's per-class top: test/per_class/0, test/per_class/1, ...
                for i, v in enumerate(value):
                    self.writer.add_scalar(f"{event}/{key}/{i}", v, step)
            elif key not in _SKIP and not isinstance(value, bool) and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{event}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
