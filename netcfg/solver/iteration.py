"""One training iteration, Caffe's ``Solver::Step`` body and ``ApplyUpdate``.

``iter_size`` forward/backward passes under autocast, the loss divided by
``iter_size`` (under torchrun one gradient all-reduce, on the last), the NaN/Inf
checks, gradient clipping, L1 regularisation (L2 is the optimizer's weight decay),
then the update at ``learning_rate(iter)``.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import torch

from netcfg.solver.finite import gradients_finite
from netcfg.solver.layout import to_layout
from netcfg.solver.optim import apply_l1, set_learning_rate

if TYPE_CHECKING:
    from netcfg.solver.runner import Solver

__all__ = ["autocast", "train_step"]


def autocast(precision: str, device: torch.device):
    """``precision``'s autocast context (bf16 or fp16), or none for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def train_step(solver: Solver) -> tuple[float, dict[str, float], int]:
    """One iteration: returns its loss (averaged over ``iter_size``), its scalar outputs
    and the number of images it read, summed over the ranks."""
    s = solver.spec
    if not solver._in_train_mode:  # module.train() walks every module: once per step(), and after a test
        solver.net.train()
        solver.frozen.hold()  # frozen BatchNorm layers keep their statistics
        solver._in_train_mode = True
    solver.dist.seed_dropout(s.random_seed, solver.iter)  # torchrun: each rank's own dropout masks
    solver.optimizer.zero_grad(set_to_none=True)
    total, outs, images, bad = 0.0, {}, 0, None
    read = float if solver._deferred is None else torch.Tensor.detach  # deferred: no host sync
    for i in range(s.iter_size):
        batch = solver.train_data.next_batch()
        if solver.channels_last:
            batch = to_layout(batch)
        images += len(next(iter(batch.values())))
        with solver.dist.no_sync(solver._ddp, i < s.iter_size - 1):  # torchrun: one all-reduce per update
            with autocast(s.precision, solver.device):
                out = solver._forward(**batch)
                loss = solver.net.loss(out)
            scaled = loss / s.iter_size if s.iter_size > 1 else loss
            (solver.scaler.scale(scaled) if solver.scaler else scaled).backward()
        value = read(loss.detach())
        if solver._deferred is None and not math.isfinite(value) and bad is None:
            bad = (batch, value)
            if not solver.dist.active:
                solver._diverged(batch, value)
        total += value / s.iter_size
        for k, v in out.items():
            if v.dim() == 0:
                outs[k] = outs.get(k, 0.0) + read(v.detach()) / s.iter_size
    if solver.dist.active:  # every rank learns if any diverged, so all stop together (no hang)
        total, outs, ranks = solver.dist.average_step(total, outs, bad is not None)
        if bad is not None:
            solver._diverged(*bad)
        if ranks:
            solver._diverged_elsewhere(ranks)
    if solver._deferred is not None:
        solver._deferred.check(total)
    elif solver.scaler is None and not gradients_finite(solver._params):  # fp16's scaler skips such steps itself
        solver._diverged(batch, total, gradient=True)
    if solver.scaler:
        solver.scaler.unscale_(solver.optimizer)
    if s.clip_gradients:
        torch.nn.utils.clip_grad_norm_(solver._params, s.clip_gradients)
    if s.regularization_type == "L1":
        apply_l1(solver.optimizer, s.weight_decay)
    solver._ctrl_c.hold()  # released once step() has counted the iteration
    solver._updating = True
    # here, with the update: it rescales an SGD velocity (optim.py), which an iteration
    # stopped before its update (rolled back, then snapshotted) must not have done
    set_learning_rate(solver.optimizer, solver.lr(), solver.iter)
    if solver.scaler:
        solver.scaler.step(solver.optimizer)
        solver.scaler.update()
    else:
        solver.optimizer.step()
    if solver.ema is not None:  # inside the Ctrl-C hold: the average moves with the weights
        solver.ema.update()
    if solver._deferred is not None:
        solver._deferred.counted()
    solver._updating = False
    return total, outs, images * solver.dist.world_size

