"""Caffe's weight fillers, applied in place to a layer's parameters.

A layer without a filler keeps PyTorch's default initialisation (Caffe's own
default, constant 0, would leave a net that cannot learn). Fan-in and fan-out are
Caffe's: fan_in = numel / shape[0], fan_out = numel / shape[1] (numel for a 1-d blob).
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import torch
from torch import nn

from netcfg.layers.base import FillerSpec, LayerSpec

__all__ = ["fill", "fill_module", "shapes_only"]

_SHAPES_ONLY = contextvars.ContextVar("netcfg_fill_shapes_only", default=False)


def _fans(t: torch.Tensor) -> tuple[int, int]:
    n = t.numel()
    if t.dim() == 0:  # a scalar blob (Scale with num_axes 0): Caffe has no rule, one value
        return n, n
    # Caffe's Xavier/MSRA: a 1-d blob (a bias, a Scale) has fan_in 1 and fan_out count
    return n // t.shape[0], (n // t.shape[1] if t.dim() > 1 else n)


def _scale_n(f: FillerSpec, t: torch.Tensor) -> float:
    fan_in, fan_out = _fans(t)
    return {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[f.variance_norm]


@contextlib.contextmanager
def shapes_only():
    """Within it, ``fill`` only checks that each filler fits its tensor (ValueError if not)
    and writes nothing: what a net's check runs on its meta-device modules."""
    token = _SHAPES_ONLY.set(True)
    try:
        yield
    finally:
        _SHAPES_ONLY.reset(token)


def _misfit(t: torch.Tensor, kind: str) -> str | None:
    if kind == "orthogonal" and t.dim() < 2:
        return f"orthogonal filler needs a matrix or more (2+ dimensions), not a {list(t.shape)} tensor"
    if kind == "bilinear" and (t.dim() != 4 or t.shape[-1] != t.shape[-2]):
        return f"bilinear filler needs a square 2-d kernel (a 4-d weight), not a {list(t.shape)} tensor"
    return None


@torch.no_grad()
def fill(t: torch.Tensor, f: FillerSpec) -> None:
    """Fill tensor ``t`` in place as Caffe's filler ``f`` would."""
    kind = f.type
    problem = _misfit(t, kind)
    if problem is not None:
        raise ValueError(problem)
    if _SHAPES_ONLY.get():
        return
    if kind == "constant":
        t.fill_(f.value)
    elif kind == "uniform":
        t.uniform_(f.min, f.max)
    elif kind == "gaussian":
        t.normal_(f.mean, f.std)
        if f.sparse is not None:  # Caffe: about `sparse` nonzero weights per input (column)
            t.mul_(torch.bernoulli(torch.full_like(t, min(1.0, f.sparse / t.shape[0]))))
    elif kind == "xavier":  # Glorot & Bengio 2010, Caffe's uniform variant
        a = math.sqrt(3.0 / _scale_n(f, t))
        t.uniform_(-a, a)
    elif kind == "msra":  # He et al. 2015
        t.normal_(0.0, math.sqrt(2.0 / _scale_n(f, t)))
    elif kind == "lecun":  # LeCun normal, for self-normalising (SELU) nets
        t.normal_(0.0, math.sqrt(1.0 / _scale_n(f, t)))
    elif kind == "orthogonal":
        nn.init.orthogonal_(t, gain=f.gain)
    elif kind == "positive_unitball":  # each output row (count / shape[0] values) sums to 1
        t.uniform_(0.0, 1.0)
        # Caffe's rows have count / num() values: one for a 1-d or scalar blob, which so
        # becomes all ones, as in Caffe
        rows = t.reshape(t.shape[0] if t.dim() else 1, -1)
        rows.div_(rows.sum(1, keepdim=True))
    elif kind == "bilinear":  # upsampling kernel for Deconvolution, Caffe's formula
        k = t.shape[-1]
        factor = math.ceil(k / 2)
        # centre (k - 1) / 2 in units of factor: a symmetric kernel for every k (Caffe's
        # BilinearFiller since its fix; the older (2 f - 1 - f % 2) / 2f shifted k = 2, 3, 6, 7)
        c = (k - 1) / (2.0 * factor)
        r = torch.arange(k, dtype=torch.float64)
        w1 = 1 - (r / factor - c).abs()
        t.copy_((w1[:, None] * w1[None, :]).to(t.dtype).expand_as(t))
    else:  # pragma: no cover - the spec's Literal keeps this unreachable
        raise ValueError(f"unknown filler {kind}")


def fill_module(spec: LayerSpec, module: nn.Module) -> None:
    """Apply the spec's ``weight_filler``/``bias_filler`` to ``module.weight``/``.bias``."""
    for field, attr in (("weight_filler", "weight"), ("bias_filler", "bias")):
        f = getattr(spec, field, None)
        p = getattr(module, attr, None)
        if f is None or not isinstance(p, torch.Tensor):
            continue
        if nn.utils.parametrize.is_parametrized(module, attr):
            # weight-normed: fill a plain tensor, then let the parametrization
            # split it into direction and norm (its right_inverse)
            with torch.no_grad():
                w = torch.empty_like(p)
                fill(w, f)
                setattr(module, attr, w)
        else:
            fill(p, f)
