"""Accuracy: Caffe's top-k classification accuracy, overall and per class."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from netcfg.errors import ShapeError
from netcfg.layers.base import Blob, LayerSpec
from netcfg.layers._registry import register
from netcfg.layers.loss import check_label, class_axis

__all__ = ["Accuracy"]


class TopKAccuracy(nn.Module):
    """Fraction of labels with fewer than ``top_k`` other classes scoring at least as high
    (Caffe's count: a class tied with the label counts as better)."""

    def __init__(self, axis: int, top_k: int, ignore_label: int | None, squeeze: bool, per_class: bool):
        super().__init__()
        self.axis, self.top_k, self.ignore_label = axis, top_k, ignore_label
        self.squeeze, self.per_class = squeeze, per_class
        self.class_count: torch.Tensor | None = None  # labels of each class in the last batch

    def forward(self, scores: torch.Tensor, label: torch.Tensor):
        scores = scores.detach()
        label = label.long()
        if self.squeeze:
            label = label.squeeze(self.axis)
        if self.axis != 1:
            scores = scores.movedim(self.axis, 1)  # (N, C, ...)
        if self.ignore_label is not None:
            valid = label != self.ignore_label
            label = torch.where(valid, label, torch.zeros_like(label))  # any in-range index; masked below
        else:
            valid = torch.ones_like(label, dtype=torch.bool)
        true_score = scores.gather(1, label.unsqueeze(1))  # (N, 1, ...)
        better = (scores >= true_score).sum(1) - 1  # (N, ...): other classes scoring at least the label's
        correct = (better < self.top_k) & valid
        accuracy = correct.sum().float() / valid.sum().clamp(min=1).float()  # 0 when every label is ignored
        if not self.per_class:
            return accuracy
        n_classes = scores.shape[1]
        zeros = torch.zeros(n_classes, device=scores.device)
        count = zeros.scatter_add(0, label.flatten(), valid.flatten().float())
        hits = zeros.scatter_add(0, label.flatten(), correct.flatten().float())
        self.class_count = count
        return accuracy, hits / count.clamp(min=1)  # 0 for a class with no labels, as in Caffe

    def element_weights(self, top: int) -> torch.Tensor | None:
        """The per-class top's weights for a test's sum (``Net.element_weights``): each class's
        labels in the last batch, so the test's per-class accuracy is hits over labels."""
        return self.class_count if top == 1 else None


@register
class Accuracy(LayerSpec):
    """Top-k accuracy of class scores against integer labels (Caffe's); a second top, if
    named, gets the accuracy of each class (shape: number of classes), which tests report over the whole split."""

    type: Literal["Accuracy"]
    n_bottoms = (2, 2)
    n_tops = (1, 2)
    reduces_batch = True
    differentiable = False  # the scores are detached: a count, not a loss
    top_k: int = Field(1, ge=1, description="a prediction is right if the label is among the k highest scores")
    axis: int = Field(1, description="class axis, counting the batch as 0; -1 for the last")
    ignore_label: int | None = Field(None, description="labels with this value are not counted")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"scores": [5], "label": {"shape": [], "dtype": "int64"}}, "top_k": 2},
        {"inputs": {"scores": [3, 4], "label": {"shape": [1, 4], "dtype": "int64"}}, "ignore_label": 0,
         "top": ["accuracy", "per_class"]},
        {"inputs": {"scores": [2, 3], "label": {"shape": [2], "dtype": "int64"}}, "axis": -1},
    ]

    def _per_class(self) -> bool:
        return self.top is not None and len(self.top) == 2

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        scores, label = bottoms
        ax = class_axis(scores, self.axis)
        check_label(scores, label, ax)
        n_classes = scores.shape[ax - 1]
        if self.top_k > n_classes:
            raise ShapeError(f"top_k {self.top_k} is larger than the {n_classes} classes of scores "
                             f"{list(scores.shape)}", key="top_k")
        return [Blob(())] + ([Blob((n_classes,))] if self._per_class() else [])

    def label_classes(self, bottoms: list[Blob]) -> tuple[int, int, int | None]:
        return 1, bottoms[0].shape[class_axis(bottoms[0], self.axis) - 1], self.ignore_label

    def build(self, bottoms: list[Blob]) -> nn.Module:
        scores, label = bottoms
        ax = class_axis(scores, self.axis)
        return TopKAccuracy(ax, self.top_k, self.ignore_label, check_label(scores, label, ax), self._per_class())
