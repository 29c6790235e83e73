"""Loss layers (Caffe's): softmax and sigmoid cross-entropy, Euclidean, hinge, contrastive.

Each takes per-sample blobs and returns one scalar (no batch dimension); the net's
total loss is the sum of loss tops times their ``loss_weight`` (default 1).
Normalisation follows Caffe's LossParameter: the summed loss is divided by the
count of non-ignored labels (VALID), the outer count (BATCH_SIZE), every label
(FULL) or nothing (NONE), never by less than 1.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn
from torch.nn import functional as F

from netcfg.errors import ShapeError
from netcfg.layers.base import INT_DTYPES, Blob, LayerSpec
from netcfg.layers._registry import register

__all__ = ["SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "EuclideanLoss", "HingeLoss", "ContrastiveLoss",
           "class_axis", "check_label", "loss_blob", "at_least_float32"]

Normalization = Literal["VALID", "BATCH_SIZE", "FULL", "NONE"]


def _upper(v):
    return v.upper() if isinstance(v, str) else v


def class_axis(scores: Blob, axis: int) -> int:
    """``axis`` (counting the batch as 0, negative from the end) as a batch-counting index >= 1."""
    rank = len(scores.shape)
    ax = axis if axis >= 0 else rank + 1 + axis
    if not 1 <= ax <= rank:
        raise ShapeError(f"axis {axis} is out of range for scores of shape {list(scores.shape)} per sample "
                         f"(valid: 1..{rank} or -1..-{rank}, counting the batch as axis 0)", key="axis")
    return ax


def check_label(scores: Blob, label: Blob, ax: int) -> bool:
    """Check an integer label of the scores' shape without the class axis; True if it
    keeps that axis with size 1 (Caffe's (N, 1, H, W) layout), to be squeezed."""
    want = scores.shape[:ax - 1] + scores.shape[ax:]
    kept = scores.shape[:ax - 1] + (1,) + scores.shape[ax:]
    if label.shape not in (want, kept):
        raise ShapeError(f"label shape {list(label.shape)} does not match scores shape {list(scores.shape)} "
                         f"without the class axis {ax}: expected {list(want)} per sample", key="bottom")
    if label.dtype not in INT_DTYPES:
        raise ShapeError(f"the label must hold integer class indices, got a {label.dtype} blob of shape "
                         f"{list(label.shape)}; declare the input as {{shape: {list(label.shape)}, dtype: int64}}",
                         key="bottom")
    return label.shape != want


def loss_blob(first: Blob) -> Blob:
    """The scalar loss top: float64 for float64 scores, float32 otherwise (see ``at_least_float32``)."""
    return Blob((), "float64" if first.dtype == "float64" else "float32")


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is float16/bfloat16 (a layer under autocast feeds one): Caffe sums
    its losses in float, and a batch of squared errors passes float16's 65504 long before the
    loss does, which gave inf."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _same_count(a: Blob, b: Blob, what: str) -> None:
    """Caffe's check: both bottoms hold the same number of values per sample."""
    if math.prod(a.shape) != math.prod(b.shape):
        raise ShapeError(f"{what} must hold as many values per sample as the first bottom: "
                         f"shapes {list(a.shape)} and {list(b.shape)} differ in count", key="bottom")


def _one_per_sample(b: Blob, what: str) -> None:
    if math.prod(b.shape) != 1:
        raise ShapeError(f"{what} must be one value per sample, got shape {list(b.shape)}", key="bottom")


def _normalize(total: torch.Tensor, mode: str, valid: torch.Tensor | None, outer: int, full: int) -> torch.Tensor:
    """Caffe's get_normalizer: divide the summed loss, by at least 1."""
    if mode == "VALID":
        if valid is None:
            return total / max(full, 1)
        return total / valid.sum().clamp(min=1).to(total.dtype)
    if mode == "BATCH_SIZE":
        return total / max(outer, 1)
    if mode == "FULL":
        return total / max(full, 1)
    return total


class SoftmaxCrossEntropy(nn.Module):
    """Softmax cross-entropy over a class axis with Caffe's ignore_label and normalisation."""

    def __init__(self, axis: int, ignore_label: int | None, normalization: str, label_smoothing: float, squeeze: bool):
        super().__init__()
        self.axis, self.ignore_label, self.normalization = axis, ignore_label, normalization
        self.label_smoothing, self.squeeze = label_smoothing, squeeze

    def forward(self, scores: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        label = label.long()
        if self.squeeze:
            label = label.squeeze(self.axis)
        outer = math.prod(label.shape[:self.axis])
        scores = at_least_float32(scores)  # what autocast does for cross_entropy, also without it
        if self.axis != 1:
            scores = scores.movedim(self.axis, 1)  # (N, C, ...) as cross_entropy wants
        ignore = self.ignore_label if self.ignore_label is not None else -100
        total = F.cross_entropy(scores, label, ignore_index=ignore, reduction="sum",
                                label_smoothing=self.label_smoothing)
        valid = label != self.ignore_label if self.ignore_label is not None else None
        return _normalize(total, self.normalization, valid, outer, label.numel())


class _LossBase(LayerSpec):
    n_bottoms = (2, 2)
    is_loss = True
    reduces_batch = True


@register
class SoftmaxWithLoss(_LossBase):
    """Multinomial logistic loss of the softmax of the scores over ``axis`` (Caffe's);
    ``label_smoothing`` is a netcfg extension. Labels must be integer class indices.

    Deviation from Caffe: the loss is the exact -log softmax. Caffe clips each label's
    probability at FLT_MIN before the log, so its loss per label never exceeds 87.3365
    (the number a diverged Caffe run prints); netcfg reports the larger true value there.
    The gradient (softmax minus one-hot) is the same."""

    type: Literal["SoftmaxWithLoss"]
    axis: int = Field(1, description="class axis, counting the batch as 0; -1 for the last")
    ignore_label: int | None = Field(None, description="labels with this value add no loss and no gradient")
    normalization: Normalization = Field(
        "VALID", description="divide the summed loss by: VALID non-ignored labels, BATCH_SIZE the count before "
                            "the class axis, FULL all labels, NONE nothing")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="mix the one-hot target with a uniform one "
                                                                "(Szegedy et al. 2016); 0 is plain cross-entropy")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"scores": [5], "label": {"shape": [], "dtype": "int64"}}},
        {"inputs": {"scores": [3, 4, 4], "label": {"shape": [1, 4, 4], "dtype": "int64"}}, "ignore_label": 1,
         "normalization": "BATCH_SIZE"},
        {"inputs": {"scores": [4, 3], "label": {"shape": [4], "dtype": "int32"}}, "axis": -1, "label_smoothing": 0.1,
         "normalization": "FULL"},
    ]

    _up = field_validator("normalization", mode="before")(_upper)

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        scores, label = bottoms
        check_label(scores, label, class_axis(scores, self.axis))
        return [loss_blob(bottoms[0])]

    def label_classes(self, bottoms: list[Blob]) -> tuple[int, int, int | None]:
        return 1, bottoms[0].shape[class_axis(bottoms[0], self.axis) - 1], self.ignore_label

    def build(self, bottoms: list[Blob]) -> nn.Module:
        scores, label = bottoms
        ax = class_axis(scores, self.axis)
        return SoftmaxCrossEntropy(ax, self.ignore_label, self.normalization, self.label_smoothing,
                                   check_label(scores, label, ax))

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return 4 * math.prod(bottoms[0].shape)  # max, exp, sum, divide per score


class SigmoidCrossEntropy(nn.Module):
    """Element-wise sigmoid cross-entropy with Caffe's ignore_label and normalisation."""

    def __init__(self, ignore_label: int | None, normalization: str):
        super().__init__()
        self.ignore_label, self.normalization = ignore_label, normalization

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = at_least_float32(logits)
        target = target.reshape(logits.shape)
        valid = None
        weight = None
        if self.ignore_label is not None:
            valid = target.to(torch.int64) != self.ignore_label  # Caffe compares static_cast<int>(target)
            target = torch.where(valid, target, torch.zeros_like(target))
            weight = valid.to(logits.dtype)
        total = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), weight=weight, reduction="sum")
        return _normalize(total, self.normalization, valid, logits.shape[0], logits.numel())


@register
class SigmoidCrossEntropyLoss(_LossBase):
    """Cross-entropy of sigmoid(logits) against targets in [0, 1], element-wise (Caffe's).
    Normalisation defaults to BATCH_SIZE, as in Caffe for this layer."""

    type: Literal["SigmoidCrossEntropyLoss"]
    ignore_label: int | None = Field(None, description="targets with this value (after truncation to int) add no loss")
    normalization: Normalization = Field(
        "BATCH_SIZE", description="divide the summed loss by: BATCH_SIZE the batch size, VALID non-ignored "
                                 "targets, FULL all targets, NONE nothing")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"logits": [4], "target": [4]}},
        {"inputs": {"logits": [2, 3], "target": {"shape": [6], "dtype": "int64"}}, "ignore_label": 1,
         "normalization": "VALID"},
    ]

    _up = field_validator("normalization", mode="before")(_upper)

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        _same_count(bottoms[0], bottoms[1], "the targets")
        return [loss_blob(bottoms[0])]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return SigmoidCrossEntropy(self.ignore_label, self.normalization)


class Euclidean(nn.Module):
    """sum ||a - b||^2 / (2 N)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = at_least_float32(a)
        diff = a - b.reshape(a.shape).to(a.dtype)
        return (diff * diff).sum() / (2 * a.shape[0])


@register
class EuclideanLoss(_LossBase):
    """Half the squared Euclidean distance between two blobs, averaged over the batch
    (Caffe's 1/(2N) sum ||a - b||^2)."""

    type: Literal["EuclideanLoss"]

    examples: ClassVar[list[dict]] = [
        {"inputs": {"a": [3, 2], "b": [6]}},
        {"inputs": {"a": {"shape": [4], "dtype": "float64"}, "b": {"shape": [4], "dtype": "float64"}}},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        _same_count(bottoms[0], bottoms[1], "the second bottom")
        return [loss_blob(bottoms[0])]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Euclidean()

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return 3 * math.prod(bottoms[0].shape)


class Hinge(nn.Module):
    """One-vs-all hinge: sum max(0, 1 - t x)^p / N with t = +1 for the label, -1 elsewhere."""

    def __init__(self, power: int):
        super().__init__()
        self.power = power

    def forward(self, scores: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        x = at_least_float32(scores.reshape(scores.shape[0], -1))  # (N, C)
        sign = F.one_hot(label.reshape(-1).long(), x.shape[1]).to(x.dtype) * 2 - 1
        margin = (1 - sign * x).clamp(min=0)
        return (margin if self.power == 1 else margin * margin).sum() / x.shape[0]


@register
class HingeLoss(_LossBase):
    """One-vs-all hinge loss of class scores against an integer label (Caffe's), L1 or
    squared (L2)."""

    type: Literal["HingeLoss"]
    norm: Literal["L1", "L2"] = Field("L1", description="L1: sum of hinge margins; L2: sum of squared margins")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"scores": [5], "label": {"shape": [], "dtype": "int64"}}},
        {"inputs": {"scores": {"shape": [2, 2], "dtype": "float64"}, "label": {"shape": [1], "dtype": "int32"}},
         "norm": "L2"},
    ]

    _up = field_validator("norm", mode="before")(_upper)

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        scores, label = bottoms
        if not scores.shape:
            raise ShapeError("the scores must have a class axis per sample, got a scalar", key="bottom")
        _one_per_sample(label, "the label")
        if label.dtype not in INT_DTYPES:
            raise ShapeError(f"the label must hold integer class indices, got a {label.dtype} blob; "
                             f"declare the input with dtype: int64", key="bottom")
        return [loss_blob(bottoms[0])]

    def label_classes(self, bottoms: list[Blob]) -> tuple[int, int, int | None]:
        return 1, bottoms[0].shape[0], None

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Hinge(1 if self.norm == "L1" else 2)


class Contrastive(nn.Module):
    """Hadsell et al.'s contrastive loss on pair distances, Caffe's form."""

    def __init__(self, margin: float, legacy: bool):
        super().__init__()
        self.margin, self.legacy = margin, legacy

    def forward(self, a: torch.Tensor, b: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
        n = a.shape[0]
        a = at_least_float32(a)
        diff = a.reshape(n, -1) - b.reshape(n, -1).to(a.dtype)  # (N, D)
        dist_sq = (diff * diff).sum(1)
        if self.legacy:
            apart = (self.margin - dist_sq).clamp(min=0)
        else:  # vector_norm's gradient is 0, not NaN, at distance 0
            apart = (self.margin - torch.linalg.vector_norm(diff, dim=1)).clamp(min=0) ** 2
        similar = sim.reshape(n).to(torch.int64) != 0  # Caffe: static_cast<int>(sim)
        return torch.where(similar, dist_sq, apart).sum() / (2 * n)


@register
class ContrastiveLoss(_LossBase):
    """Contrastive loss of feature pairs: 1/(2N) sum(y d^2 + (1 - y) max(margin - d, 0)^2)
    (Caffe's; Hadsell et al. 2006, http://yann.lecun.com/exdb/publis/pdf/hadsell-chopra-lecun-06.pdf)."""

    type: Literal["ContrastiveLoss"]
    n_bottoms = (3, 3)
    margin: float = Field(1.0, ge=0, description="dissimilar pairs closer than this are pushed apart")
    legacy_version: bool = Field(False, description="Caffe's original form: max(margin - d^2, 0) for dissimilar pairs")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"a": [4], "b": [4], "sim": {"shape": [], "dtype": "int64"}}},
        {"inputs": {"a": [2, 2], "b": [4], "sim": {"shape": [1], "dtype": "int64"}}, "margin": 2,
         "legacy_version": True},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        a, b, sim = bottoms
        _same_count(a, b, "the second feature bottom")
        _one_per_sample(sim, "the similarity (1 similar, 0 dissimilar)")
        return [loss_blob(bottoms[0])]

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return Contrastive(self.margin, self.legacy_version)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return 3 * math.prod(bottoms[0].shape)
