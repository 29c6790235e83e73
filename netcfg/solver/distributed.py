"""DistributedDataParallel under torchrun: where a rank stands, its collectives, DDP's wrapping.

``Distributed`` is made by ``netcfg.solver.launch.setup`` from torchrun's
environment; alone (``ONE_PROCESS``) every helper here is the identity, so a
one-process run takes no extra step. Every collective below is called by all
ranks at the same point of the loop, which is what keeps a NaN or a Ctrl-C on
one rank from hanging the others (see docs/distributed.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from netcfg.errors import NetcfgError, ReportedElsewhere
from netcfg.solver.evaluate import OutputSums

__all__ = ["ONE_PROCESS", "Distributed", "RankError", "rank_seed", "unused_parameters"]

CPU = torch.device("cpu")


def rank_seed(seed: int, rank: int, it: int) -> int:
    """Seed of rank ``rank``'s dropout stream in iteration ``it`` (ranks > 0 only)."""
    from netcfg.data.augment import mix64

    return mix64(seed, rank, it, 0xD15) >> 1


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = CPU
    active: bool = False  # a process group is in use (torchrun), even with one rank

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, logs and writes the run directory."""
        return self.rank == 0

    # ------------------------------------------------------------ wrapping

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module | None:
        """``net`` in DistributedDataParallel (rank 0's weights broadcast to all), or None alone."""
        if not self.active:
            return None
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        unused = unused_parameters(net)
        if not unused:
            return DistributedDataParallel(net, device_ids=ids)
        # a head no loss reads never gets a gradient: DDP must look for such parameters from the
        # outputs, so the outputs it sees hold the loss path only (no_sync rules out static_graph)
        return DistributedDataParallel(_LossPath(net), device_ids=ids, find_unused_parameters=True)

    @staticmethod
    def no_sync(ddp: torch.nn.Module | None, accumulate: bool):
        """DDP's ``no_sync`` for a micro-batch of ``iter_size`` that is not the last: its
        gradients stay local and are averaged with the last one's, in one all-reduce."""
        return ddp.no_sync() if ddp is not None and accumulate else contextlib.nullcontext()

    def seed_dropout(self, seed: int, it: int) -> None:
        """Ranks > 0, at the start of iteration ``it``: seed the generators dropout draws from with
        (seed, rank, it), so each rank drops its own units and a resume draws what the run would
        have, with only rank 0's stream in the snapshot. (1 us; ``torch.manual_seed``: 100 us.)"""
        if self.active and self.rank > 0:
            s = rank_seed(seed, self.rank, it)
            torch.default_generator.manual_seed(s)
            if self.device.type == "cuda":
                torch.cuda.default_generators[self.device.index].manual_seed(s)

    # ------------------------------------------------------------ collectives (all ranks call them)

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (Ctrl-C seen by one rank stops all)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def average_step(self, total: float, outs: dict[str, float], diverged: bool) -> tuple[float, dict[str, float], list[int]]:
        """One iteration's loss and scalar outputs averaged over the ranks (the global batch's,
        as every rank's batch has the same size), and the ranks whose loss was not finite."""
        if not self.active:
            return total, outs, [0] if diverged else []
        keys = sorted(outs)
        flags = [0.0] * self.world_size
        flags[self.rank] = 1.0 if diverged else 0.0
        finite = [v if not diverged else 0.0 for v in [total] + [outs[k] for k in keys]]
        t = torch.tensor(finite + flags, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        values = (t[: len(finite)] / self.world_size).tolist()
        bad = [r for r, f in enumerate(t[len(finite):].tolist()) if f]
        return values[0], dict(zip(keys, values[1:])), bad

    @contextlib.contextmanager
    def together(self):
        """A block with no collective in it (set-up, a resume) that may fail on some ranks only:
        at its end the ranks learn whether any failed, and all stop, instead of the others
        waiting in the next collective until torchrun kills them. An error every rank had alike
        is reported once, by rank 0 (as one process reports it); one that differs between ranks,
        by each rank that had it, marked with its rank (``RankError``); a rank that did not fail
        raises ``ReportedElsewhere``, which the CLI does not print."""
        error = None
        try:
            yield
        except Exception as e:  # every rank must reach the all-gather below
            if not self.active:
                raise
            error = e
        if not self.active:
            return
        mine = None if error is None else (_report(error), getattr(error, "exit_code", 1))
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, mine)
        failed = [r for r, g in enumerate(gathered) if g is not None]
        if not failed:
            return
        if error is None:
            raise ReportedElsewhere(f"rank {self.rank}: stopped, as rank(s) {', '.join(map(str, failed))} failed "
                                    "(they say why)", gathered[failed[0]][1])
        if len(failed) == self.world_size and len({g[0] for g in gathered}) == 1:  # the same on every rank
            if self.is_main:
                raise error
            raise ReportedElsewhere(f"rank {self.rank}: stopped with the error rank 0 reports", mine[1])
        if isinstance(error, NetcfgError):
            raise RankError(self.rank, error) from None
        raise error  # a bug: its traceback, which torch marks with the rank

    def sum_over_ranks(self, sums: OutputSums) -> OutputSums:
        """Test metrics: every rank's ``evaluate.OutputSums`` (metric x samples, sample counts), added up."""
        if not self.active:
            return sums
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, sums)  # a rank with no test batch has no keys
        total = OutputSums()
        for part in gathered:
            total.add(part)
        return total

    def sync_buffers(self, net: torch.nn.Module) -> None:
        """Rank 0's BatchNorm statistics everywhere, so every rank tests the net rank 0 saves."""
        if self.active:
            for b in net.buffers():
                dist.broadcast(b, src=0)

    def shared_run_dir(self, create, follow):
        """Rank 0 makes the run directory (``create()``); the others learn its path and get
        ``follow(path)``, a run directory they do not write to."""
        if not self.active:
            return create()
        if self.is_main:
            try:
                run = create()
            except BaseException as e:
                dist.broadcast_object_list([getattr(e, "exit_code", 1)], src=0)  # let the others stop too
                raise
            dist.broadcast_object_list([str(run.path)], src=0)
            return run
        box: list = [None]
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], int):  # rank 0's exit code: it prints why
            raise ReportedElsewhere(f"rank {self.rank}: rank 0 could not create the run directory", box[0])
        return follow(Path(box[0]))

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else CPU


ONE_PROCESS = Distributed()


class RankError(NetcfgError):
    """A user error that only some torchrun ranks had (their own data shard, say): every line
    marked with the rank, as torch marks a rank's traceback."""

    def __init__(self, rank: int, error: NetcfgError):
        super().__init__(str(error))
        self.rank, self.error, self.exit_code = rank, error, error.exit_code

    def render(self) -> str:
        return "\n".join(f"[rank{self.rank}]: {line}" for line in self.error.render().splitlines())


def _report(error: Exception) -> str:
    """What a rank would print for ``error``: equal texts on every rank are printed once."""
    return error.render() if isinstance(error, NetcfgError) else f"{type(error).__name__}: {error}"


class _LossPath(torch.nn.Module):
    """A Net whose outputs outside its losses come out detached (they are only displayed)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(**inputs)
        return {k: v if k in self.net.loss_weights else v.detach() for k, v in out.items()}


def unused_parameters(net: torch.nn.Module) -> list[str]:
    """Names of trainable parameters of layers that no loss depends on (a Net's graph, walked back)."""
    graph = getattr(net, "graph", None)
    if graph is None:
        return []
    needed: set[str] = set()
    used: set[int] = set()
    for node in reversed(graph.nodes):  # positional: a top counts only for layers after it
        if any(node.loss_weights) or any(t in needed for t in node.tops):
            needed.difference_update(node.tops)
            needed.update(node.bottoms)
            used.update(id(p) for p in _layer_module(net, node.name).parameters())
    return [n for n, p in net.named_parameters() if p.requires_grad and id(p) not in used]


def _layer_module(net: torch.nn.Module, name: str) -> torch.nn.Module:
    """The module of layer ``name`` (dotted names are nested; a layer may be called "forward")."""
    module = net
    for part in name.split("."):
        module = module._modules[part]
    return module
