"""Losses of log-probabilities (Caffe's): InfogainLoss, weighted by an infogain matrix H, and
MultinomialLogisticLoss, of probabilities given. A probability is clipped at Caffe's
kLOG_THRESHOLD (1e-20) before its log, and the gradient is Caffe's, as if the clip were not there."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from netcfg.errors import FieldError, ShapeError
from netcfg.layers.base import FLOAT_DTYPES, INT_DTYPES, Blob, check_float
from netcfg.layers._registry import register
from netcfg.layers.loss import (Normalization, _LossBase, _normalize, _upper, at_least_float32, check_label,
                                class_axis, loss_blob)

__all__ = ["InfogainLoss", "MultinomialLogisticLoss"]

LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD


def clip_forward_only(x: torch.Tensor, low: float) -> torch.Tensor:
    """max(x, low) in the forward; the gradient of x itself (Caffe's backward ignores its clip).
    The added term is exactly zero: x + (max(x, low) - x) would round 1e-20 away next to x = -1."""
    return x.detach().clamp(min=low) + (x - x.detach())


class Infogain(nn.Module):
    """-sum_l H[label, l] log(max(softmax(scores)_l, 1e-20)) per label, normalised as Caffe does."""

    def __init__(self, axis: int, ignore_label: int | None, normalization: str, squeeze: bool,
                 infogain: list[list[float]] | None):
        super().__init__()
        self.axis, self.ignore_label, self.normalization, self.squeeze = axis, ignore_label, normalization, squeeze
        # rebuilt from the config, which the weights file carries: not a learnable or saved blob
        H = torch.tensor(infogain, dtype=torch.float64) if infogain is not None else None
        self.register_buffer("H", H, persistent=False)

    def _apply(self, fn, recurse=True):
        """H follows the device only: a net cast to 16 bits kept its H in 16 bits too (0.3 became
        0.30078, the loss 1e-3 off Caffe's, which computes in float); rows are cast at use."""
        H = self.H
        super()._apply(fn, recurse)
        if H is not None:
            self.H = H.to(self.H.device)
        return self

    def forward(self, scores: torch.Tensor, label: torch.Tensor, H: torch.Tensor | None = None) -> torch.Tensor:
        label = label.long()
        if self.squeeze:
            label = label.squeeze(self.axis)
        logp = clip_forward_only(torch.log_softmax(at_least_float32(scores), self.axis), math.log(LOG_THRESHOLD))
        logp = logp.movedim(self.axis, -1)  # (N, *inner, K)
        valid = label != self.ignore_label if self.ignore_label is not None else None
        safe = torch.where(valid, label, torch.zeros_like(label)) if valid is not None else label
        if H is None:
            rows = self.H[safe]  # (N, *inner, K): row H[label] for every label
        else:  # a (K, K) matrix per sample
            H = H.reshape(H.shape[0], logp.shape[-1], logp.shape[-1])
            n = torch.arange(H.shape[0], device=H.device).reshape(-1, *(1,) * (safe.dim() - 1))
            rows = H[n, safe]
        per_label = -(rows.to(logp.dtype) * logp).sum(-1)
        if valid is not None:
            per_label = per_label * valid
        outer = math.prod(label.shape[:self.axis])
        return _normalize(per_label.sum(), self.normalization, valid, outer, label.numel())


@register
class InfogainLoss(_LossBase):
    """Caffe's InfogainLoss: the softmax of the scores over ``axis``, then for each label
    -sum_l H[label, l] log(p_l), H the infogain matrix (classes x classes; the identity gives
    SoftmaxWithLoss). H is ``infogain`` in the net file (import-caffe reads Caffe's
    ``source`` binaryproto into it) or a third bottom, one (K, K) matrix per sample.

    Deviations from Caffe: the second top (the softmax) is not offered: use a Softmax layer.
    A third bottom is per sample, as every netcfg blob; Caffe's is one matrix for the batch."""

    type: Literal["InfogainLoss"]
    n_bottoms = (2, 3)
    axis: int = Field(1, description="class axis, counting the batch as 0; -1 for the last")
    infogain: list[list[float]] | None = Field(
        None, description="the infogain matrix H, one row per true class (K x K); or give it as a third bottom")
    ignore_label: int | None = Field(None, description="labels with this value add no loss and no gradient")
    normalization: Normalization = Field(
        "VALID", description="divide the summed loss by: VALID non-ignored labels, BATCH_SIZE the count before "
                            "the class axis, FULL all labels, NONE nothing")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"scores": [3], "label": {"shape": [], "dtype": "int64"}},
         "infogain": [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 2]]},
        {"inputs": {"scores": [2, 3], "label": {"shape": [1, 3], "dtype": "int32"}, "H": [2, 2]},
         "ignore_label": 1, "normalization": "BATCH_SIZE"},
    ]

    _up = field_validator("normalization", mode="before")(_upper)

    @model_validator(mode="after")
    def _square(self):
        H = self.infogain
        if H is not None and (not H or any(len(row) != len(H) for row in H)):
            raise FieldError(f"infogain must be a square matrix (K rows of K values), got rows of "
                             f"{[len(row) for row in H]} values", key="infogain")
        return self

    def _check(self, bottoms: list[Blob]) -> tuple[int, bool]:
        scores, label = bottoms[:2]
        check_float(self, scores, "scores")
        ax = class_axis(scores, self.axis)
        squeeze = check_label(scores, label, ax)
        k = scores.shape[ax - 1]
        if len(bottoms) == 3:
            if self.infogain is not None:
                raise ShapeError("H is given twice: as infogain and as the third bottom; keep one", key="infogain")
            H = bottoms[2]
            if H.dtype not in FLOAT_DTYPES or math.prod(H.shape) != k * k:
                raise ShapeError(f"the third bottom is H, {k} x {k} per sample for {k} classes, got shape "
                                 f"{list(H.shape)} {H.dtype}", key="bottom")
        elif self.infogain is None:
            raise ShapeError(f"InfogainLoss needs its matrix H ({k} x {k}): give infogain: [[...], ...] or a third "
                             "bottom", key="infogain")
        elif len(self.infogain) != k:
            raise ShapeError(f"infogain is {len(self.infogain)} x {len(self.infogain)}, but the scores have {k} "
                             f"classes on axis {self.axis}", key="infogain")
        return ax, squeeze

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        self._check(bottoms)
        return [loss_blob(bottoms[0])]

    def label_classes(self, bottoms: list[Blob]) -> tuple[int, int, int | None]:
        return 1, bottoms[0].shape[class_axis(bottoms[0], self.axis) - 1], self.ignore_label

    def build(self, bottoms: list[Blob]) -> nn.Module:
        ax, squeeze = self._check(bottoms)
        return Infogain(ax, self.ignore_label, self.normalization, squeeze, self.infogain)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return 6 * math.prod(bottoms[0].shape)


class MultinomialLogistic(nn.Module):
    """-sum log(max(p[label], 1e-20)) / N, the gradient -1 / max(p[label], 1e-20) / N as Caffe's."""

    def forward(self, prob: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        p = at_least_float32(prob).flatten(1)  # (N, K): Caffe indexes the flattened sample
        picked = p.gather(1, label.long().reshape(-1, 1))
        return -clip_forward_only(picked, LOG_THRESHOLD).log().sum() / p.shape[0]


@register
class MultinomialLogisticLoss(_LossBase):
    """Caffe's MultinomialLogisticLoss: -log(p[label]) averaged over the batch, for
    probabilities computed already (a Softmax layer's output); p is clipped at 1e-20 first.
    The label is one integer per sample, indexing the flattened sample. From scores,
    SoftmaxWithLoss is the same loss computed stably."""

    type: Literal["MultinomialLogisticLoss"]

    examples: ClassVar[list[dict]] = [
        {"inputs": {"prob": [4], "label": {"shape": [], "dtype": "int64"}}},
        {"inputs": {"prob": [3, 1, 1], "label": {"shape": [1], "dtype": "int32"}}},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        prob, label = bottoms
        check_float(self, prob, "probabilities")
        if math.prod(label.shape) != 1 or label.dtype not in INT_DTYPES:
            raise ShapeError(f"the label must be one integer class index per sample, got shape {list(label.shape)} "
                             f"{label.dtype}; declare it as {{shape: [], dtype: int64}}", key="bottom")
        return [loss_blob(prob)]

    def label_classes(self, bottoms: list[Blob]) -> tuple[int, int, int | None]:
        return 1, math.prod(bottoms[0].shape), None

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return MultinomialLogistic()
