"""Decoding images in worker processes: whole folders at once, or batch by batch (StreamedImages).

The workers run ``netcfg.data.decode`` (numpy and Pillow only) in processes
started with ``fork`` on Linux, as torch's DataLoader does (a script need not
guard its top level with ``if __name__ == "__main__"``; the workers never touch
torch, so its threads do not matter), ``spawn`` elsewhere. A batch is split into one
chunk per worker; ``prefetch`` starts decoding a batch before it is asked for,
so decoding overlaps with training.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
import weakref
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch

from netcfg.data.decode import decode_images
from netcfg.errors import ConfigError

__all__ = ["StreamedImages", "decode_all", "default_workers"]

_PREFETCHED = 2  # batches decoded ahead at most


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _pool(workers: int) -> ProcessPoolExecutor:
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                               initializer=_ignore_stop_signals)


def _ignore_stop_signals() -> None:
    """In a worker: a terminal's Ctrl-C and a scheduler's SIGTERM reach the whole process
    group; the training process handles them (finishing its iteration, snapshotting), and a
    worker they killed first would break the pool under it. The workers end with the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _chunks(files: list[str], parts: int) -> list[list[str]]:
    size = max(1, math.ceil(len(files) / parts))
    return [files[i:i + size] for i in range(0, len(files), size)]


def _join(results: list[tuple[np.ndarray | None, tuple[str, str, str] | None]], parts: list[list[str]]) -> np.ndarray:
    """The chunks' arrays as one; the first decoding problem (or size mismatch) as a ConfigError."""
    for array, problem in results:
        if problem is not None:
            file, message, hint = problem
            raise ConfigError(message, file=file, hint=hint)
    first = results[0][0].shape[2:]
    for (array, _), files in zip(results, parts):
        if array.shape[2:] != first and len(array):
            raise ConfigError(f"the image is {array.shape[2]}x{array.shape[3]} but {parts[0][0]} is "
                              f"{first[0]}x{first[1]}", file=files[0], hint="set image_size: [H, W] to resize them all")
    return np.concatenate([a for a, _ in results])


def decode_all(files: list[str], channels: int, size: tuple[int, int] | None, workers: int) -> np.ndarray:
    """Every file decoded, (N, C, H, W) uint8; in worker processes when there are many."""
    if workers <= 1 or len(files) < 512:
        return _join([decode_images(files, channels, size)], [files])
    with _pool(workers) as pool:
        parts = _chunks(files, workers * 4)
        results = list(pool.map(decode_images, parts, [channels] * len(parts), [size] * len(parts)))
    return _join(results, parts)


class StreamedImages:
    """A (N, C, H, W) uint8 image tensor of files, decoded by workers when a batch asks."""

    def __init__(self, files: list[str], channels: int, size: tuple[int, int], workers: int, resize: bool):
        self.files = list(files)
        self.channels = channels
        self.size = tuple(size)
        self.resize = resize  # resize every image to size (image_size); else each must have it
        self.workers = workers
        self.shape = torch.Size((len(self.files), channels) + self.size)
        self.dtype = torch.uint8
        self._executor: ProcessPoolExecutor | None = None
        self._pending: dict[bytes, list[tuple[list[str], Future]]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def dim(self) -> int:
        return 4

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return 1

    def __getitem__(self, part: slice) -> StreamedImages:
        if not isinstance(part, slice):
            raise TypeError("StreamedImages supports slices only (use take)")
        return StreamedImages(self.files[part], self.channels, self.size, self.workers, self.resize)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = _pool(self.workers)
            weakref.finalize(self, self._executor.shutdown, wait=True, cancel_futures=True)
        return self._executor

    def _submit(self, index: torch.Tensor) -> list[tuple[list[str], Future]]:
        parts = _chunks([self.files[i] for i in index.tolist()], self.workers)
        size = self.size if self.resize else None
        return [(part, self._pool().submit(decode_images, part, self.channels, size)) for part in parts]

    def prefetch(self, index: torch.Tensor) -> None:
        """Start decoding the rows ``index`` (a later ``take`` of the same rows collects them)."""
        key = index.cpu().numpy().tobytes()
        if key not in self._pending:
            while len(self._pending) >= _PREFETCHED:
                self._pending.pop(next(iter(self._pending)))
            self._pending[key] = self._submit(index.cpu())

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` decoded: (len(index), C, H, W) uint8 on the CPU."""
        index = index.cpu()
        jobs = self._pending.pop(index.numpy().tobytes(), None) or self._submit(index)
        array = _join([f.result() for _, f in jobs], [part for part, _ in jobs])
        if array.shape[2:] != self.size:
            raise ConfigError(f"the image is {array.shape[2]}x{array.shape[3]} but {self.files[0]} is "
                              f"{self.size[0]}x{self.size[1]}", file=jobs[0][0][0],
                              hint="set image_size: [H, W] to resize them all")
        return torch.from_numpy(array)

    def __repr__(self) -> str:
        return f"StreamedImages({len(self.files)} files, {list(self.shape[1:])}, {self.workers} workers)"
