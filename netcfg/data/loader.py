"""BatchLoader: a whole split kept in memory as stored (uint8 images), batched and transformed on the device.

No per-sample Python: each epoch draws one permutation from a generator seeded
with (seed, epoch), a batch is one ``index_select`` per tensor, and each image
tensor's ``ImageTransform`` (normalise, crop, mirror, erase) runs as a few tensor
ops on the whole batch. State is two ints (epoch, position): a resumed run
recomputes the permutation and continues with exactly the batches it would have seen.

Where the split lives: on the training device when ``device_resident`` (the
default on CPU, and on CUDA for a split under a quarter of the GPU's memory);
otherwise in host memory, each batch gathered into pinned memory and copied
with ``non_blocking``. Streamed images (a folder too large for memory) are
decoded by worker processes, the next batch while the current one trains.
Under ``torchrun`` each rank takes every ``world_size``-th sample of the epoch's
permutation: padded by wrapping round for training (``even``), so every rank
makes the same number of batches and the ranks' batches together are one
process's batch of ``world_size`` times the size; unpadded for testing, so each
test sample is counted once. Throughput: ``python bench/data_loader.py`` (numbers in its header).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from netcfg.data.augment import batch_generator
from netcfg.data.spec import DataSourceSpec
from netcfg.data.split import SplitData
from netcfg.errors import ConfigError

__all__ = ["BatchLoader"]

Batch = dict[str, torch.Tensor]
RESIDENT_FRACTION = 0.25  # of the GPU's memory a split may take by default


class BatchLoader:
    """Batches of one split: ``next_batch()`` for training, ``epoch_batches()`` for testing.

    ``split`` is a ``SplitData`` (``load_source``'s result) or, for convenience, a
    mapping of whole-split tensors keyed by the source's names. Batches are keyed
    by net input name; image tensors come out float32 (or as ``deliver`` says) and
    transformed, everything else as stored.
    """

    def __init__(self, split: SplitData | Mapping[str, torch.Tensor], spec: DataSourceSpec, *, seed: int,
                 device: str | torch.device = "cpu", rank: int | None = None, world_size: int | None = None,
                 even: bool = True):
        if not isinstance(split, SplitData):
            split = SplitData.build(spec, split)
        self.split = split
        self.spec = spec
        self.seed = int(seed)
        self.device = torch.device(device)
        self.batch_size = spec.batch_size
        self.shuffle = bool(spec.shuffle)
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        self.total_samples = split.num_samples
        self.even = even  # every rank the same number of samples (the last ones wrap round)
        self.num_samples = self._shard_size(self.world_size)  # this rank's share
        if spec.drop_last and self.batch_size > self.num_samples:
            raise ConfigError(f"batch_size {self.batch_size} is larger than the {self.num_samples} samples "
                              f"and drop_last is set, so no batch would be made", ("batch_size",),
                              hint=f"use batch_size <= {self.num_samples}, or drop_last: false")
        self.resident = self._decide_residency()
        place = self.device if self.resident else torch.device("cpu")
        self._tensors = {name: t.to(place) if isinstance(t, torch.Tensor) else t for name, t in split.tensors.items()}
        self._pin = not self.resident and self.device.type == "cuda"
        self._transforms = {name: tr.to(self.device) for name, tr in split.transforms.items()}
        self.epoch = 0      # epochs completed before the current one
        self.position = 0   # samples of the current epoch already handed out
        self._orders: dict[int, torch.Tensor | None] = {}

    def deliver(self, dtypes: Mapping[str, torch.dtype]) -> None:
        """Deliver the floating-point tensors named in ``dtypes`` in that dtype, as the net that
        reads them is built (float64, float16): stored floats are cast once, here, and images
        are normalised straight into it, so no batch costs an extra cast. Integer tensors are
        left as stored: an integer the net wants as a float is a mismatch ``match_inputs`` names."""
        for name, dtype in dtypes.items():
            t = self._tensors.get(name)
            if name in self._transforms:
                self._transforms[name] = self._transforms[name].with_dtype(dtype)
            elif isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dtype:
                self._tensors[name] = t.to(dtype)

    def _decide_residency(self) -> bool:
        if any(not isinstance(t, torch.Tensor) for t in self.split.tensors.values()):
            return False  # streamed images are decoded on the host, batch by batch
        if self.spec.device_resident is not None:
            return self.spec.device_resident
        if self.device.type == "cuda":
            size = sum(t.numel() * t.element_size() for t in self.split.tensors.values())
            return size < RESIDENT_FRACTION * torch.cuda.get_device_properties(self.device).total_memory
        return True

    # ------------------------------------------------------------ iteration

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.spec.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    @property
    def samples_per_epoch(self) -> int:
        return self._samples_per_epoch(self.num_samples)

    def _samples_per_epoch(self, shard: int) -> int:
        return shard // self.batch_size * self.batch_size if self.spec.drop_last else shard

    def _shard_size(self, world_size: int) -> int:
        """Samples of one rank's share of an epoch among ``world_size`` ranks (this rank's, if not even)."""
        if self.even or world_size != self.world_size:
            return math.ceil(self.total_samples / world_size)
        return len(range(self.rank, self.total_samples, world_size))

    @property
    def epoch_float(self) -> float:
        """Epochs done, fractional: 1.5 means halfway through the second epoch."""
        return self.epoch + self.position / self.samples_per_epoch

    def next_batch(self) -> Batch:
        """The next training batch; endless, a new order each epoch when shuffling."""
        if self.position >= self.samples_per_epoch:
            self.epoch += 1
            self.position = 0
        start = self.position
        self.position = min(start + self.batch_size, self.samples_per_epoch)
        batch = self._batch(start, self.position, self.order(self.epoch), train=True, epoch=self.epoch)
        self._prefetch(*self._following(self.epoch, self.position))
        return batch

    def epoch_batches(self) -> Iterator[Batch]:
        """One pass over the split in the current epoch's order (file order unless
        shuffling); the last partial batch is kept unless ``drop_last``. It does
        not move ``epoch`` or ``position``."""
        order = self.order(self.epoch)
        for start in range(0, self.samples_per_epoch, self.batch_size):
            stop = min(start + self.batch_size, self.samples_per_epoch)
            if stop < self.samples_per_epoch:
                self._prefetch(self.epoch, stop)
            yield self._batch(start, stop, order)

    __iter__ = epoch_batches

    def permutation(self, epoch: int) -> torch.Tensor | None:
        """Sample order of ``epoch`` (all ranks), or None for file order (no shuffle).

        Drawn on the CPU from (seed, epoch) alone, so it is the same on every device
        and every rank (each rank takes its own shard of it, see ``order``).
        """
        if not self.shuffle:
            return None
        mixed = np.random.SeedSequence([self.seed % 2**64, epoch]).generate_state(1, np.uint64)[0]
        gen = torch.Generator().manual_seed(int(mixed))
        return torch.randperm(self.total_samples, generator=gen)

    def order(self, epoch: int) -> torch.Tensor | None:
        """This rank's sample indices for ``epoch``, where its tensors live (None: file order)."""
        if epoch not in self._orders:
            perm = self.permutation(epoch)
            if self.world_size > 1 and not self.even:
                perm = (perm if perm is not None else torch.arange(self.total_samples))[self.rank::self.world_size]
            elif self.world_size > 1:
                base = perm if perm is not None else torch.arange(self.total_samples)
                padded = base.repeat(math.ceil(self.num_samples * self.world_size / self.total_samples))
                perm = padded[: self.num_samples * self.world_size][self.rank::self.world_size]
            if len(self._orders) >= 2:  # the current epoch and the next are all that is needed
                self._orders.pop(min(self._orders))
            place = self.device if self.resident else torch.device("cpu")
            self._orders[epoch] = perm.to(place) if perm is not None else None
        return self._orders[epoch]

    # ------------------------------------------------------------ batches

    def _batch(self, start: int, stop: int, order: torch.Tensor | None, train: bool = False, epoch: int = 0) -> Batch:
        index = order[start:stop] if order is not None else None
        gen = None
        if train and any(tr.augments for tr in self._transforms.values()):
            gen = batch_generator(self.seed, epoch, start, self.rank)
        batch = {}
        for name, t in self._tensors.items():
            x = self._take(t, index, start, stop)
            tr = self._transforms.get(name)
            batch[name] = tr(x, train=train, gen=gen) if tr is not None else x
        return batch

    def _take(self, t: Any, index: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
        """Rows ``index`` (or ``start:stop``) of one whole-split tensor, on the training device."""
        if not isinstance(t, torch.Tensor):  # streamed images: decoded by workers, on the host
            x = t.take(index if index is not None else torch.arange(start, stop))
            return x.to(self.device, non_blocking=True) if self.device.type != "cpu" else x
        if self.resident:
            return t[start:stop] if index is None else t.index_select(0, index)
        if index is None:
            index = torch.arange(start, stop)
        # gathered straight into pinned memory: the copy to the GPU does not block the host,
        # and torch's pinned-memory cache keeps the buffer until the copy is done
        out = torch.empty((len(index),) + tuple(t.shape[1:]), dtype=t.dtype, pin_memory=self._pin)
        torch.index_select(t, 0, index, out=out)
        return out.to(self.device, non_blocking=self._pin)

    def _following(self, epoch: int, position: int) -> tuple[int, int]:
        """(epoch, start) of the training batch after one ending at ``position``."""
        return (epoch + 1, 0) if position >= self.samples_per_epoch else (epoch, position)

    def _prefetch(self, epoch: int, start: int) -> None:
        """Let streamed tensors decode the batch at (epoch, start) in the background."""
        streamed = [t for t in self._tensors.values() if not isinstance(t, torch.Tensor)]
        if not streamed:
            return
        order = self.order(epoch)
        stop = min(start + self.batch_size, self.samples_per_epoch)
        index = order[start:stop] if order is not None else torch.arange(start, stop)
        for t in streamed:
            t.prefetch(index)

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, int]:
        """Where the data order stands: plain ints, safe to store anywhere (``world_size``
        only under torchrun, where ``position`` counts this rank's share)."""
        state = {"epoch": self.epoch, "position": self.position}
        return {**state, "world_size": self.world_size} if self.world_size > 1 else state

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue where ``state`` stood. A state saved with another number of ranks
        continues at the same fraction of the epoch, rounded to a batch (the order within
        the epoch then differs from the saved run's)."""
        epoch, position = int(state["epoch"]), int(state["position"])
        world = int(state.get("world_size", 1))
        per_epoch = self._samples_per_epoch(self._shard_size(world)) if world >= 1 else -1
        if epoch < 0 or not 0 <= position <= per_epoch:
            raise ValueError(f"loader state {state} does not fit {per_epoch} samples per epoch; "
                             "did the data set, limit, batch_size or drop_last change?")
        if world != self.world_size:
            batches = round(position / per_epoch * self.samples_per_epoch / self.batch_size)
            position = min(batches * self.batch_size, self.samples_per_epoch)
        self.epoch, self.position = epoch, position

    def __repr__(self) -> str:
        where = "resident" if self.resident else ("pinned host memory" if self._pin else "host memory")
        shard = f", rank {self.rank} of {self.world_size}" if self.world_size > 1 else ""
        return (f"BatchLoader({self.spec.source}/{self.spec.split}: {self.num_samples} samples{shard}, "
                f"batch {self.batch_size}, {len(self)} batches/epoch, shuffle={self.shuffle}, {self.device} {where})")


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else torch.distributed's (set up by the runner under torchrun), else (0, 1)."""
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    rank, world_size = rank or 0, world_size or 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return rank, world_size
