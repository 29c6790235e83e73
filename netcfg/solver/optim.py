"""Torch optimizers for Caffe's solver types, with lr_mult/decay_mult groups and L1/L2 decay.

Caffe's update for a parameter with gradient ``g`` (``SGDSolver::ApplyUpdate``)
is: ``g += weight_decay * decay_mult * w`` (L2) or ``* sign(w)`` (L1), then the
solver type's rule at the rate ``lr * lr_mult``. Torch's optimizers do the same
once each param group carries ``lr = lr * lr_mult`` and ``weight_decay =
weight_decay * decay_mult``, which is what ``make_optimizer`` builds; the
groups also keep ``lr_mult`` and ``decay_mult`` so ``set_learning_rate`` and
``apply_l1`` can use them, and the parameter names as torch's ``param_names``.

Defaults where a hyperparameter is left out (Caffe's, except where noted)::

    SGD        momentum 0
    Nesterov   momentum must be given (> 0); Nesterov without momentum is SGD
    Adam       momentum 0.9, momentum2 0.999, delta 1e-8
    AdamW      as Adam; decay is decoupled (w *= 1 - lr * decay), not Caffe
    RMSProp    rms_decay 0.99, delta 1e-8, momentum 0
    AdaGrad    delta 1e-8 (torch's own default is 1e-10)
    AdaDelta   momentum 0.95, delta 1e-6 (Caffe's AdaDelta example values)

Known differences from Caffe:

* RMSProp and AdaGrad refuse momentum in Caffe; here RMSProp takes torch's.

Adam: Caffe adds ``delta`` to ``sqrt(v)`` before the bias correction, torch adds its
``eps`` to ``sqrt(v) / sqrt(1 - momentum2 ^ t)`` after it; ``set_learning_rate`` sets
each step's ``eps`` to ``delta / sqrt(1 - momentum2 ^ t)``, which is Caffe's update
exactly (a fixed ``eps`` would be a delta ``1 / sqrt(1 - momentum2 ^ t)`` times
smaller: 32x at the first step, for all of the first thousand steps more than 1.25x).
AdamW keeps torch's fixed ``eps``, as Loshchilov & Hutter's AdamW does.

SGD and Nesterov: Caffe's velocity holds steps, ``v = momentum * v + lr * g; w -= v``;
torch's holds gradients, ``v = momentum * v + g; w -= lr * v``. The two agree while the
rate is constant, but at a new rate torch would apply it to the whole velocity at once
(a step policy's drop to lr / 10 would cut the momentum's share of the next step tenfold)
where Caffe's old steps fade out at their own rate. ``set_learning_rate`` keeps Caffe's
rule: at a rate change it rescales torch's velocity by ``old / new`` (for SGD by giving
that one step the momentum ``momentum * old / new``, which costs nothing; for Nesterov,
whose step reads the momentum twice, by multiplying the buffers). The rate the velocity
is scaled for is the group's ``lr`` of the last update, which a snapshot keeps. One case
is not Caffe's: at a rate of exactly 0 torch does not move, where Caffe coasts on its
velocity (a warm-up from 0 starts as Caffe would, with an empty velocity).

L1 decay is not a torch option: the optimizer is built with no decay and the
runner must call ``apply_l1(optimizer, weight_decay)`` after ``backward()`` and
before ``optimizer.step()`` (after any gradient clipping, as Caffe does).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["OPTIMIZERS", "param_groups", "make_optimizer", "zero_momentum", "set_learning_rate", "apply_l1"]


def _fused(cls: type[torch.optim.Optimizer], groups: list[dict], **hyper) -> torch.optim.Optimizer:
    """``cls`` with ``fused=True`` where this torch has a fused kernel for these parameters
    (floating point, on a device it lists: the CPU and CUDA in torch 2.4 and later), else
    with ``foreach=True``. The fused update makes one pass over each parameter, its gradient
    and its state where the multi-tensor one makes several: on a 2-core CPU the MLP's SGD
    step (configs/mlp.yaml, batch 64) takes 2.04 ms fused, 2.29 ms foreach and 2.21 ms with
    torch's default for-loop (bench/README.md). SGD, Adam and AdamW have one."""
    params = [p[1] if isinstance(p, tuple) else p for g in groups for p in g["params"]]
    if cls is torch.optim.SGD and any(p.device.type == "cpu" and p.dtype in _HALF for p in params):
        # torch's fused CPU SGD leaves every whole SIMD block of a float16/bfloat16 tensor
        # un-updated (pytorch/pytorch#191763, in 2.12 and 2.13): a net declared bfloat16 never learns
        return cls(groups, **hyper, foreach=True)
    if all(p.is_floating_point() and p.device.type in _fused_devices() for p in params):
        try:  # on copies: a constructor fills the group dicts it is given
            return cls([dict(g) for g in groups], **hyper, fused=True)
        except TypeError:  # an older torch without fused=True for this optimizer
            pass
    return cls(groups, **hyper, foreach=True)


_HALF = (torch.float16, torch.bfloat16)


def _fused_devices() -> frozenset[str]:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # private to torch: without it, no fused kernels
        return frozenset()
    return frozenset(_get_fused_kernels_supported_devices())


def _sgd(groups, *, base_lr, momentum, **_) -> torch.optim.Optimizer:
    return _fused(torch.optim.SGD, groups, lr=base_lr, momentum=momentum or 0.0)


def _nesterov(groups, *, base_lr, momentum, **_) -> torch.optim.Optimizer:
    if not momentum:
        raise ValueError(
            "solver type 'Nesterov' needs momentum > 0 (e.g. momentum: 0.9); "
            "without momentum use type 'SGD'"
        )
    return _fused(torch.optim.SGD, groups, lr=base_lr, momentum=momentum, nesterov=True)


def _adam_args(base_lr, momentum, momentum2, delta) -> dict:
    betas = (
        0.9 if momentum is None else momentum,
        0.999 if momentum2 is None else momentum2,
    )
    return {"lr": base_lr, "betas": betas, "eps": 1e-8 if delta is None else delta}


def _adam(groups, *, base_lr, momentum, momentum2, delta, **_) -> torch.optim.Optimizer:
    args = _adam_args(base_lr, momentum, momentum2, delta)
    return _fused(torch.optim.Adam, groups, **args)


def _adamw(groups, *, base_lr, momentum, momentum2, delta, **_) -> torch.optim.Optimizer:
    args = _adam_args(base_lr, momentum, momentum2, delta)
    return _fused(torch.optim.AdamW, groups, **args)


def _rmsprop(groups, *, base_lr, momentum, delta, rms_decay, **_) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        groups,
        lr=base_lr,
        alpha=0.99 if rms_decay is None else rms_decay,
        eps=1e-8 if delta is None else delta,
        momentum=momentum or 0.0,
        foreach=True,
    )


def _adagrad(groups, *, base_lr, delta, **_) -> torch.optim.Optimizer:
    eps = 1e-8 if delta is None else delta
    return torch.optim.Adagrad(groups, lr=base_lr, eps=eps, foreach=True)


def _adadelta(groups, *, base_lr, momentum, delta, **_) -> torch.optim.Optimizer:
    return torch.optim.Adadelta(
        groups,
        lr=base_lr,
        rho=0.95 if momentum is None else momentum,
        eps=1e-6 if delta is None else delta,
        foreach=True,
    )


# Caffe's solver ``type`` names -> builder; the solver spec validates against the keys.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "SGD": _sgd,
    "Nesterov": _nesterov,
    "Adam": _adam,
    "AdamW": _adamw,
    "RMSProp": _rmsprop,
    "AdaGrad": _adagrad,
    "AdaDelta": _adadelta,
}


def param_groups(net, frozen: frozenset[str] = frozenset()) -> list[dict]:
    """The groups ``make_optimizer`` takes: one per distinct (lr_mult, decay_mult) of ``net``
    (a ``netcfg.net.Net``), since few groups keep torch's fused and multi-tensor updates
    fast. ``frozen`` names (``freeze:``) are left out."""
    groups: dict[tuple[float, float], dict] = {}
    for i in net.param_infos():
        if i.name in frozen:
            continue
        g = groups.setdefault((i.lr_mult, i.decay_mult),
                              {"params": [], "names": [], "lr_mult": i.lr_mult, "decay_mult": i.decay_mult})
        g["params"].append(i.param)
        g["names"].append(i.name)
    return list(groups.values())


def make_optimizer(
    type: str,
    groups: list[dict],
    *,
    base_lr: float,
    momentum: float | None = None,
    momentum2: float | None = None,
    delta: float | None = None,
    rms_decay: float | None = None,
    weight_decay: float = 0.0,
    regularization_type: str = "L2",
) -> torch.optim.Optimizer:
    """A torch optimizer for Caffe solver ``type`` over ``groups``.

    Each group is ``{"params": [tensor, ...], "names": [str, ...], "lr_mult":
    float, "decay_mult": float}``. Groups with ``lr_mult`` 0 are frozen and
    left out; setting their ``requires_grad`` to False is the caller's job.
    Hyperparameters a type does not use are ignored (the solver spec rejects
    them). With ``regularization_type`` "L1" the runner must call ``apply_l1``.
    """
    if type not in OPTIMIZERS:
        raise ValueError(f"unknown solver type '{type}' (valid: {', '.join(OPTIMIZERS)})")
    if regularization_type not in ("L1", "L2"):
        raise ValueError(
            f"unknown regularization_type '{regularization_type}' (valid: L1, L2)"
        )
    if type == "AdamW" and regularization_type == "L1" and weight_decay:
        raise ValueError(
            "solver type 'AdamW' decays weights decoupled from the gradient, "
            "which has no L1 form; use regularization_type L2 or type Adam"
        )
    l2 = weight_decay if regularization_type == "L2" else 0.0

    torch_groups = []
    for group in groups:
        lr_mult = float(group.get("lr_mult", 1.0))
        decay_mult = float(group.get("decay_mult", 1.0))
        if lr_mult == 0:
            continue  # frozen: Caffe's update is exactly zero, so skip the work
        params = list(group["params"])
        names = list(group.get("names") or ())
        if names and len(names) != len(params):
            raise ValueError(
                f"param group has {len(params)} params but {len(names)} names"
            )
        torch_groups.append({
            # torch stores (name, tensor) pairs' names as the group's param_names
            "params": list(zip(names, params)) if names else params,
            "lr": base_lr * lr_mult,
            "weight_decay": l2 * decay_mult,
            "lr_mult": lr_mult,
            "decay_mult": decay_mult,
        })
    if not torch_groups:  # nothing trains (netcfg test, max_iter: 0): one idle group, never stepped
        everything = [p for group in groups for p in group["params"]]
        if not everything:
            raise ValueError("the net has no parameters to optimize")
        torch_groups = [{"params": everything, "lr": 0.0, "weight_decay": 0.0, "lr_mult": 0.0, "decay_mult": 0.0}]

    optimizer = OPTIMIZERS[type](
        torch_groups,
        base_lr=base_lr,
        momentum=momentum,
        momentum2=momentum2,
        delta=delta,
        rms_decay=rms_decay,
    )
    if type == "Adam":  # Caffe's delta, turned into each step's eps by set_learning_rate
        for group in optimizer.param_groups:
            group["delta"] = group["eps"]
    zero_momentum(optimizer)
    if isinstance(optimizer, torch.optim.SGD):  # the solver's momentum; "momentum" is each step's
        for group in optimizer.param_groups:
            group["caffe_momentum"] = group["momentum"]
    return optimizer


def zero_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Give every SGD/Nesterov parameter without a momentum buffer a zero one. Without
    dampening (netcfg has none) a zero buffer takes the next step exactly as a missing one
    (``v = m * 0 + g = g``), and torch's fused kernel needs it: it takes all the buffers or
    none, and on a first step skipped for a non-finite gradient (fp16's scaler, the deferred
    NaN check) it would keep the uninitialised buffers it made for that step."""
    if not isinstance(optimizer, torch.optim.SGD):
        return
    for group in optimizer.param_groups:
        if group["momentum"] and not group["dampening"]:
            for p in group["params"]:
                if optimizer.state[p].get("momentum_buffer") is None:
                    optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float, it: int | None = None) -> None:
    """Set every group's rate to ``lr * lr_mult`` (call before each ``step()``), carrying an
    SGD velocity over a rate change as Caffe does; given the update's iteration ``it``
    (0-based), Adam's ``eps`` to Caffe's delta at step ``it + 1``."""
    for group in optimizer.param_groups:
        rate = lr * group.get("lr_mult", 1.0)
        if group.get("caffe_momentum"):
            _carry_velocity(optimizer, group, rate)
        group["lr"] = rate
        if it is not None and "delta" in group:  # Caffe's t = iter + 1 (AdamSolver::ComputeUpdateValue)
            group["eps"] = group["delta"] / math.sqrt(1.0 - group["betas"][1] ** (it + 1))


@torch.no_grad()
def _carry_velocity(optimizer: torch.optim.Optimizer, group: dict, rate: float) -> None:
    """Rescale ``group``'s velocity from the rate of its last update (its ``lr``) to ``rate``,
    so that torch's ``w -= rate * v`` takes Caffe's step (the module docstring). An SGD step
    that fp16's scaler skips (on the device, in the fused kernel) leaves the velocity at the
    old rate while ``lr`` moves on: that one change is then torch's rule, not Caffe's. Nesterov's
    buffers are rescaled here, before the step, so a skipped one keeps Caffe's rule."""
    momentum, old = group["caffe_momentum"], group["lr"]
    group["momentum"] = momentum
    if old == rate or rate == 0:  # at 0 torch stands still; the velocity waits at its old scale
        return
    buffers = [optimizer.state[p]["momentum_buffer"] for p in group["params"]]
    if old == 0:  # Caffe's velocity after steps at rate 0 (a warm-up's first) holds nothing
        torch._foreach_zero_(buffers)
    elif group["nesterov"]:  # its step reads the momentum twice: rescale the buffers themselves
        torch._foreach_mul_(buffers, old / rate)
    else:  # v = (momentum * old / rate) * v + g is the rescaled velocity's update, at no cost
        group["momentum"] = momentum * old / rate


@torch.no_grad()
def apply_l1(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    """Caffe's L1 decay: ``grad += weight_decay * decay_mult * sign(w)``, before ``step()``."""
    if not weight_decay:
        return
    for group in optimizer.param_groups:
        decay = weight_decay * group.get("decay_mult", 1.0)
        if not decay:
            continue
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            grads = [p.grad for p in params]
            torch._foreach_add_(grads, torch._foreach_sign(params), alpha=decay)
