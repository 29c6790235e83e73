"""torchrun's environment and the process group's life: who this process is, set-up, teardown.

``torchrun`` starts one process per device and gives each RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT. ``setup`` turns them into one process
group (NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``; Gloo on the CPU) and
returns the ``Distributed`` that the solver's collectives go through
(netcfg/solver/distributed.py); without them it returns ``ONE_PROCESS``, and a
one-process run takes no extra step (see docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

from netcfg.errors import ConfigError, NetcfgError, ReportedElsewhere
from netcfg.solver.distributed import ONE_PROCESS, Distributed

__all__ = ["ENV", "env_local_rank", "env_rank", "launched", "launcher", "once_per_machine", "setup", "teardown"]

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_owned = False  # the process group is ours to destroy (not one the caller set up)


def launched() -> bool:
    """Started by torchrun (or anything that sets its environment)."""
    return all(k in os.environ for k in ENV)


def env_rank() -> int:
    """This process's rank before any set-up: what the CLI needs to decide who prints."""
    return int(os.environ["RANK"]) if launched() else 0


def env_local_rank() -> int:
    """This process's rank on its machine before any set-up (torchrun's LOCAL_RANK), 0 alone."""
    return int(os.environ["LOCAL_RANK"]) if launched() else 0


@contextlib.contextmanager
def once_per_machine():
    """A command reading its files before the process group exists: a machine's ranks read
    the same files, so its LOCAL_RANK 0 prints an error they had, and the others stop
    silently (``ReportedElsewhere``) with its exit code."""
    try:
        yield
    except NetcfgError as e:
        if env_local_rank() > 0:
            raise ReportedElsewhere(f"local rank {env_local_rank()}: stopped with the error local rank 0 reports",
                                    e.exit_code) from None
        raise


def launcher() -> str:
    """The command that starts this run again with as many ranks: ``netcfg`` alone; under
    torchrun on one machine its ``--nproc_per_node``; across machines, torchrun as it was started."""
    if not launched():
        return "netcfg"
    per_node = os.environ.get("LOCAL_WORLD_SIZE")
    if per_node is not None and per_node == os.environ["WORLD_SIZE"]:
        return f"torchrun --nproc_per_node {per_node} -m netcfg"
    return "torchrun <as started> -m netcfg"


def setup(device_name: str, device: torch.device) -> Distributed:
    """The process group torchrun's environment asks for (made once), or ``ONE_PROCESS``.

    ``device`` is the solver's resolved device; under torchrun a CUDA device
    becomes ``cuda:LOCAL_RANK``. Raises ConfigError (key ``device``) for a device
    that cannot be shared out one per rank."""
    global _owned
    if not launched() and not (dist.is_available() and dist.is_initialized()):
        return ONE_PROCESS
    if not dist.is_available():
        raise NetcfgError("started by torchrun, but this PyTorch build has no torch.distributed")
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device_name.startswith("cuda:"):
            raise ConfigError(f"device {device_name} under torchrun would put every rank on one GPU",
                              ("device",), hint="use device: auto or cuda; each rank then takes cuda:LOCAL_RANK")
        if local >= torch.cuda.device_count():
            raise ConfigError(f"rank {rank} has LOCAL_RANK {local}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)", ("device",),
                              hint="start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"device {device_name} cannot be used under torchrun", ("device",),
                          hint="use cuda (NCCL) or cpu (Gloo)")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        _owned = True
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, device=device,
                       active=True)


def teardown(finished: bool = False) -> None:
    """Destroy the process group ``setup`` made; nothing otherwise. ``finished``: every rank
    ended the run normally, so all can meet, before and after: a rank that closed its Gloo
    connections (or exited) while another was still finishing a collective or tearing its
    own down made that one abort now and then ("terminate called without an active
    exception", SIGABRT at exit, about one run in 50 on a loaded machine). They meet in the
    launcher's store, whose connections the teardown leaves alone, not with a collective
    (whose own last messages would be in flight). After an error the ranks may not all get
    here, so they do not wait for each other."""
    global _owned
    if _owned and dist.is_initialized():
        store, world = (_launcher_store(), dist.get_world_size()) if finished else (None, 1)
        if store is not None:
            _meet(store, "netcfg/teardown/start", world)  # no collective in flight on any rank
        elif finished:
            dist.barrier()
        dist.destroy_process_group()
        if store is not None:
            _meet(store, "netcfg/teardown/end", world)  # no rank leaves while another still closes
    _owned = False


def _launcher_store():
    """The process group's key-value store (torchrun's TCP store), or None where torch has no
    such accessor (then a Gloo barrier, the best left)."""
    try:
        return dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None


def _meet(store, key: str, world: int) -> None:
    """Wait until all ``world`` ranks have got here, through ``store``."""
    if store.add(key, 1) == world:
        store.set(f"{key}/all", "1")
    store.wait([f"{key}/all"])
