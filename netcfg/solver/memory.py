"""Memory a training run needs, checked before anything is allocated; out-of-memory errors made readable.

The estimate is a floor, not a forecast: every blob of the graph (inputs and each
layer's tops; no layer writes in place) held for a whole batch, twice in training
(the activations autograd keeps for backward, and their gradients), plus the
parameters with their gradients and optimizer slots. A run whose floor exceeds
the memory available is refused with the numbers; a run that fits the floor may
still run out, and ``OutOfMemory`` reports that with the same advice.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from netcfg.errors import ConfigError, ConfigErrors, NetcfgError

__all__ = ["Estimate", "estimate", "available_memory", "check_fits", "check_memory", "OutOfMemory", "is_out_of_memory",
           "out_of_memory_error", "batch_advice", "split_batch", "human_bytes"]

DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "uint8": 1, "bool": 1}
# optimizer buffers per parameter (momentum, Adam's two moments...), at most
OPTIMIZER_SLOTS = {"SGD": 1, "Nesterov": 1, "Adam": 2, "AdamW": 2, "RMSProp": 2, "AdaGrad": 1, "AdaDelta": 2}


class OutOfMemory(NetcfgError):
    """The device ran out of memory during training; the snapshot it could write is named.

    Exit code 1, as for a diverged run: the config was valid and the run started
    (exit 2 is for input refused before anything ran, such as ``check_fits``)."""

    exit_code = 1


@dataclass
class Estimate:
    """Bytes a phase of a net needs for one batch."""

    per_sample: int          # every blob of one sample
    largest: tuple[str, str, int, str]  # (layer, top, bytes per sample, shape text) of the biggest blob
    fixed: int               # parameters (+ gradients and optimizer slots in training)
    batch: int
    factor: int              # 2 in training (activations + their gradients), 1 in testing

    @property
    def total(self) -> int:
        return self.fixed + self.per_sample * self.batch * self.factor

    def max_batch(self, available: int) -> int:
        """The largest batch whose estimate fits in ``available`` bytes (0: not even one)."""
        room = available - self.fixed
        return max(room // max(self.per_sample * self.factor, 1), 0)


def human_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def estimate(graph, batch: int, *, train: bool, optimizer: str = "SGD", precision: str = "fp32") -> Estimate:
    """The memory floor of ``graph`` (a checked ``netcfg.net.Graph``) at ``batch`` samples."""
    half = precision in ("bf16", "fp16")  # autocast keeps most float activations in 16 bits

    def size(blob) -> int:
        item = 2 if half and blob.dtype.startswith("float") else DTYPE_BYTES.get(blob.dtype, 4)
        return math.prod(blob.shape) * item

    per_sample = sum(size(b) for b in graph.inputs.values())
    largest = ("", "", 0, "")
    for node in graph.nodes:
        for top, blob in zip(node.tops, node.out_blobs):
            n = size(blob)
            per_sample += n
            if n > largest[2]:
                largest = (node.name, top, n, str(blob))
    copies = 2 + OPTIMIZER_SLOTS.get(optimizer, 2) if train else 1  # weights, gradients, slots
    return Estimate(per_sample, largest, graph.total_params * 4 * copies, batch, 2 if train else 1)


def _cgroup_room() -> int | None:
    """What the container's memory limit leaves (cgroup v2, then v1), if there is a limit."""
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = Path(limit).read_text().strip()
            if text == "max" or int(text) >= 2**60:  # v1 writes a huge number for "no limit"
                return None
            return max(int(text) - int(Path(used).read_text().strip()), 0)
        except (OSError, ValueError):
            continue
    return None


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes free, what they are) on ``device``, or None when it cannot be told."""
    if device.type == "cuda":
        try:
            free, total = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):
            return None
        return int(free), f"free on {torch.cuda.get_device_name(device)} ({human_bytes(total)} in all)"
    if device.type != "cpu":
        return None
    room = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    room = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if room is None:
        try:
            room = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    limit = _cgroup_room()
    if limit is not None and limit < room:
        return limit, "left under this container's memory limit"
    return room, "of RAM available"


def split_batch(batch: int, fits: int) -> tuple[int, int, bool]:
    """(batch_size, steps, exact): ``steps`` batches of at most ``fits`` samples making up
    ``batch``; exactly when a divisor of ``batch`` near ``fits`` allows."""
    fits = max(min(fits, batch), 1)
    divisor = max(d for d in range(1, fits + 1) if batch % d == 0)
    if 2 * divisor >= fits:  # an exact split, not much smaller than what fits
        return divisor, batch // divisor, True
    steps = math.ceil(batch / fits)
    return math.ceil(batch / steps), steps, False


def batch_advice(batch: int, fits: int, iter_size: int) -> str:
    """'lower batch_size to 16 and set iter_size: 4', keeping the effective batch (batch x iter_size)."""
    smaller, steps, exact = split_batch(batch, fits)
    kept = "to keep" if exact else "to keep about"
    return f"lower batch_size to {smaller} and set iter_size: {iter_size * steps} {kept} the effective batch of {batch * iter_size}"


def check_fits(graph, batch: int, device: torch.device, *, train: bool, optimizer: str, precision: str,
               iter_size: int, split: str, available=None) -> ConfigError | None:
    """A ConfigError (at ``data.<split>.batch_size``, or at the largest layer when even one
    sample cannot fit) if the estimate exceeds the memory ``available`` on ``device``."""
    room = (available or available_memory)(device)
    if room is None:
        return None
    free, what = room
    est = estimate(graph, batch, train=train, optimizer=optimizer, precision=precision)
    if est.total <= free:
        return None
    fits = est.max_batch(free)
    if est.fixed > free:  # the weights alone
        node = max(graph.nodes, key=lambda n: n.params)
        return ConfigError(
            f"the net's {graph.total_params:,} parameters need about {human_bytes(est.fixed)}"
            + (" with their gradients and optimizer state" if train else "")
            + f", more than the {human_bytes(free)} {what} (largest: layer '{node.name}', {node.params:,} parameters)",
            node.spec._path, hint="reduce num_output or the input size")
    layer, top, big, shape = est.largest
    if fits < 1:
        est.batch, batch = 1, 1
    parts = (f"activations {human_bytes(est.per_sample)} per sample x {batch}"
             + (" x 2 for backward" if train else "") + f", + {human_bytes(est.fixed)} of parameters"
             + (", gradients and optimizer state" if train else ""))
    need = (f"about {human_bytes(est.total)} ({parts}), more than the {human_bytes(free)} {what}; "
            f"largest blob: '{top}' of layer '{layer}', {shape}, {human_bytes(big)} per sample")
    if fits >= 1:
        return ConfigError(f"a {split} batch of {batch} needs {need}", ("data", split, "batch_size"),
                           hint=batch_advice(batch, fits, iter_size) if train else f"lower batch_size to {fits}")
    node = next(n for n in graph.nodes if n.name == layer)
    return ConfigError(f"even one sample needs {need}", node.spec._path,
                       hint="the net is too large for this device: reduce num_output or the input size, or add a stride")


def check_memory(spec, train_graph, test_graph, device: torch.device) -> None:
    """Raise ConfigErrors, located in the solver file ``spec`` (a SolverSpec), for each split
    whose batch (or a layer) could not fit on ``device``."""
    errors = []
    for split, graph in (("train", train_graph), ("test", test_graph)):
        ds = getattr(spec.data, split)
        if graph is not None and ds is not None:
            err = check_fits(graph, ds.batch_size, device, train=split == "train", optimizer=spec.type,
                             precision=spec.precision, iter_size=spec.iter_size, split=split)
            errors += [spec.locate(err)] if err is not None else []
    if errors:
        raise ConfigErrors(errors)


_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "defaultcpuallocator")


def is_out_of_memory(e: BaseException) -> bool:
    """True for CUDA, MPS and CPU allocation failures, whatever torch version raised them."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(e, (MemoryError, oom)):
        return True
    return isinstance(e, RuntimeError) and any(t in str(e).lower() for t in _OOM_TEXT)


def _while_testing(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if getattr(code, "co_qualname", code.co_name) == "Solver.test":
            return True
        tb = tb.tb_next
    return False


def out_of_memory_error(solver, e: BaseException) -> OutOfMemory:
    """Free what the failed iteration held, snapshot (unless the weights were half updated)
    and say what to change. ``solver`` is the ``netcfg.solver.Solver`` that ran out."""
    import gc
    import shlex

    testing = _while_testing(e)
    first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
    e.__traceback__ = None  # its frames hold the iteration's tensors
    solver.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if solver.device.type == "cuda":
        torch.cuda.empty_cache()
    if solver._updating:  # a snapshot now could hold a mix of old and new weights
        last = solver.run.latest_snapshot()
        saved = f"no snapshot written (it failed inside the update); last snapshot: {last or 'none'}"
        state = None
    else:
        solver._roll_back_iteration()
        try:
            weights = solver.snapshot()
            state = weights.with_suffix(".solverstate")
            saved = f"snapshot written: {weights}"
        except Exception as again:  # out of memory again, or a full disk: still report the first
            last = solver.run.latest_snapshot()
            saved = f"no snapshot written ({again}); last snapshot: {last or 'none'}"
            state = None
    split = "test" if testing else "train"
    ds = getattr(solver.spec.data, split)
    iter_size, batch = solver.spec.iter_size, ds.batch_size
    smaller, steps, _ = split_batch(batch, batch // 2)
    if batch == 1:
        advice, sets = "even a batch of one does not fit: use a smaller net or a device with more memory", []
    elif testing:
        advice = f"lower data.test.batch_size (now {batch}), e.g. to {smaller}"
        sets = [f"data.test.batch_size={smaller}"]
    else:
        advice = (f"lower data.train.batch_size (now {batch}) and raise iter_size (now {iter_size}) to keep "
                  f"the effective batch: e.g. batch_size: {smaller}, iter_size: {iter_size * steps}")
        sets = [f"data.train.batch_size={smaller}", f"iter_size={iter_size * steps}"]
    if solver.spec.precision == "fp32" and solver.device.type == "cuda":
        advice += ", or precision: bf16"
    resume = ""
    if state is not None and sets:
        config = shlex.quote(str(solver.run.path / "config.yaml"))
        resume = (f" Resume with: netcfg train {config} --resume {shlex.quote(str(state))} "
                  + " ".join(f"--set {s}" for s in sets) + " --force")
    where = f"testing at iteration {solver.iter}" if testing else f"iteration {solver.iter}"
    return OutOfMemory(f"out of memory on {solver.device} at {where} ({first}); {saved}. "
                       f"{advice[0].upper()}{advice[1:]}.{resume}")
