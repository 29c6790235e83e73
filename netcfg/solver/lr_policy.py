"""Learning-rate policies: Caffe's ``lr_policy`` formulas, plus cosine, linear and warm-up.

``learning_rate(it, ...)`` is the rate for the update made at iteration ``it``
(0-based, Caffe's ``iter_`` before it is incremented). It is a pure function of
``it``, so a resumed run needs no scheduler state.

Caffe's policies (``caffe/src/caffe/solvers/sgd_solver.cpp``, ``GetLearningRate``)::

    fixed      base_lr
    step       base_lr * gamma ^ floor(it / stepsize)
    exp        base_lr * gamma ^ it
    inv        base_lr * (1 + gamma * it) ^ (-power)
    multistep  base_lr * gamma ^ current_step        (see _multistep_count)
    poly       base_lr * (1 - it / max_iter) ^ power
    sigmoid    base_lr / (1 + exp(-gamma * (it - stepsize)))

and two that Caffe lacks, over the progress ``t = (it - warmup_iter) / (max_iter - warmup_iter)``::

    cosine     min_lr + (base_lr - min_lr) * (1 + cos(pi * t)) / 2
    linear     base_lr + (min_lr - base_lr) * t

Warm-up: for ``it < warmup_iter`` the policy's rate is scaled by
``warmup_start + (1 - warmup_start) * it / warmup_iter``, a line from
``warmup_start`` (a fraction of the rate, 0 = start from zero) up to 1. Caffe's
policies are evaluated at ``it`` itself, not shifted by the warm-up, so a
``step`` schedule drops at the iterations it names; cosine and linear start
their curve when the warm-up ends (during it they sit at ``base_lr``).

``poly``, ``cosine`` and ``linear`` clamp ``it`` to ``max_iter``: Caffe's poly
gives NaN past the end (a negative number to a fractional power), and the
end rate is what a run that goes on should keep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["POLICIES", "OPTIONAL", "learning_rate", "spec_learning_rate"]

# The hyperparameters each policy needs, by the keyword names of learning_rate;
# the solver spec checks a config against this table.
POLICIES: dict[str, tuple[str, ...]] = {
    "fixed": (),
    "step": ("gamma", "stepsize"),
    "exp": ("gamma",),
    "inv": ("gamma", "power"),
    "multistep": ("gamma", "stepvalue"),
    "poly": ("power", "max_iter"),
    "sigmoid": ("gamma", "stepsize"),
    "cosine": ("max_iter",),
    "linear": ("max_iter",),
}
# the optional ones each reads besides (min_lr defaults to 0)
OPTIONAL: dict[str, tuple[str, ...]] = {"cosine": ("min_lr",), "linear": ("min_lr",)}


def learning_rate(
    it: int,
    *,
    base_lr: float,
    lr_policy: str,
    gamma: float | None = None,
    power: float | None = None,
    stepsize: int | None = None,
    stepvalue: Sequence[int] = (),
    max_iter: int | None = None,
    warmup_iter: int = 0,
    warmup_start: float = 0.0,
    min_lr: float = 0.0,
) -> float:
    """The learning rate for the update at iteration ``it`` (see the module docstring)."""
    if lr_policy not in POLICIES:
        raise ValueError(
            f"unknown lr_policy '{lr_policy}' (valid: {', '.join(POLICIES)})"
        )
    given = {
        "gamma": gamma,
        "power": power,
        "stepsize": stepsize,
        "stepvalue": tuple(stepvalue) or None,  # an empty list is as good as none
        "max_iter": max_iter,
    }
    missing = [name for name in POLICIES[lr_policy] if given[name] is None]
    if missing:
        raise ValueError(
            f"lr_policy '{lr_policy}' needs {', '.join(missing)} "
            f"(it uses {', '.join(POLICIES[lr_policy])})"
        )
    if warmup_iter < 0:
        raise ValueError(f"warmup_iter must be >= 0, got {warmup_iter}")

    rate = _policy_rate(
        it, lr_policy, base_lr, gamma, power, stepsize, stepvalue, max_iter,
        warmup_iter, min_lr,
    )
    if it < warmup_iter:
        rate *= warmup_start + (1.0 - warmup_start) * it / warmup_iter
    return rate


def _policy_rate(
    it, policy, base_lr, gamma, power, stepsize, stepvalue, max_iter, warmup_iter, min_lr
) -> float:
    if policy == "fixed":
        return base_lr
    if policy == "step":
        if stepsize <= 0:
            raise ValueError(f"lr_policy 'step' needs stepsize > 0, got {stepsize}")
        return base_lr * gamma ** (it // stepsize)
    if policy == "exp":
        return base_lr * gamma**it
    if policy == "inv":
        return base_lr * (1.0 + gamma * it) ** (-power)
    if policy == "multistep":
        return base_lr * gamma ** _multistep_count(it, stepvalue)
    if policy == "sigmoid":
        z = gamma * (it - stepsize)
        # the same logistic, written so that exp never overflows
        if z >= 0:
            return base_lr / (1.0 + math.exp(-z))
        return base_lr * math.exp(z) / (1.0 + math.exp(z))

    if max_iter <= 0:
        raise ValueError(f"lr_policy '{policy}' needs max_iter > 0, got {max_iter}")
    if policy == "poly":
        return base_lr * (1.0 - min(it, max_iter) / max_iter) ** power
    # cosine and linear: the curve runs over what is left after the warm-up
    span = max_iter - warmup_iter
    if span <= 0:
        raise ValueError(
            f"lr_policy '{policy}' needs max_iter > warmup_iter, "
            f"got max_iter {max_iter} and warmup_iter {warmup_iter}"
        )
    t = min(max(it - warmup_iter, 0), span) / span
    if policy == "cosine":
        return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
    return base_lr + (min_lr - base_lr) * t  # linear


def _multistep_count(it: int, stepvalue: Sequence[int]) -> int:
    """Caffe's ``current_step_`` at iteration ``it`` of a run called every iteration from 0.

    Caffe advances at most one step per iteration, and only past the step it
    is on: ``if (it >= stepvalue[current_step]) current_step++``. For strictly
    increasing ``stepvalue`` that is "how many stepvalues are <= it"; a
    repeated value takes effect one iteration after its twin, and a value
    smaller than the one before it takes effect the iteration after that one.
    """
    count = 0
    advanced_at = -1  # iteration of the latest advance
    for value in stepvalue:
        advanced_at = max(advanced_at + 1, value)
        if advanced_at > it:
            break
        count += 1
    return count


def spec_learning_rate(spec, it: int, max_iter: int | None = None) -> float:
    """``learning_rate`` at ``it`` with a solver spec's settings (``max_iter`` in place of the spec's)."""
    return learning_rate(it, base_lr=spec.base_lr, lr_policy=spec.lr_policy, gamma=spec.gamma, power=spec.power,
                         stepsize=spec.stepsize, stepvalue=spec.stepvalue,
                         max_iter=spec.max_iter if max_iter is None else max_iter, warmup_iter=spec.warmup_iter,
                         warmup_start=spec.warmup_start, min_lr=spec.min_lr)
