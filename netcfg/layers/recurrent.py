"""Sequences: Embed (token ids -> vectors), and batch-first LSTM and GRU stacks."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from netcfg.errors import FieldError, ShapeError
from netcfg.layers.base import Blob, FillerSpec, LayerSpec
from netcfg.layers._registry import register

__all__ = ["Embed", "LSTM", "GRU"]

_INT_DTYPES = ("int64", "int32", "uint8")


class EmbedTable(nn.Module):
    """Row lookup in a (input_dim, num_output) table, plus an optional bias."""

    def __init__(self, input_dim: int, num_output: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(input_dim, num_output))
        self.bias = nn.Parameter(torch.zeros(num_output)) if bias else None
        nn.init.normal_(self.weight)  # nn.Embedding's default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:  # F.embedding takes int32/int64 ids only
            x = x.long()
        y = F.embedding(x, self.weight)
        return y if self.bias is None else y + self.bias


@register
class Embed(LayerSpec):
    """Embedding lookup: integer ids of any per-sample shape S -> (*S, num_output), as
    Caffe's Embed (one-hot times a (input_dim, num_output) matrix, plus a bias).
    Weights start N(0, 1) as in nn.Embedding unless ``weight_filler`` is given."""

    type: Literal["Embed"]
    num_output: int = Field(..., ge=1, description="size of each embedding vector")
    input_dim: int = Field(..., ge=1, description="vocabulary size: ids run 0..input_dim-1 (`netcfg check` checks a solver's data against it)")
    bias_term: bool = Field(True, description="add a learned bias to every embedding (Caffe's default)")
    weight_filler: FillerSpec | None = Field(None, description="table initialisation; default: N(0, 1)")
    bias_filler: FillerSpec | None = Field(None, description="bias initialisation; default: zeros")

    examples: ClassVar[list[dict]] = [
        {"inputs": {"ids": {"shape": [5], "dtype": "int64"}}, "num_output": 4, "input_dim": 10},
        {"inputs": {"ids": {"shape": [2, 3], "dtype": "int32"}}, "num_output": 3, "input_dim": 2, "bias_term": False,
         "weight_filler": {"type": "uniform", "min": -0.1, "max": 0.1}},
        {"inputs": {"ids": {"shape": [4], "dtype": "uint8"}}, "num_output": 2, "input_dim": 3},
    ]

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        if x.dtype not in _INT_DTYPES:
            raise ShapeError(f"token ids must be integers, got a {x.dtype} input; declare the input in "
                             f"`inputs:` as {{shape: {list(x.shape)}, dtype: int64}}")
        return [Blob((*x.shape, self.num_output))]

    def blob_names(self) -> list[str]:
        return ["weight", "bias"] if self.bias_term else ["weight"]

    def label_classes(self, bottoms: list[Blob]) -> tuple[int, int, None]:
        return 0, self.input_dim, None  # the data's ids are checked against the table, not found mid-run

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return EmbedTable(self.input_dim, self.num_output, self.bias_term)

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        return math.prod(tops[0].shape) if self.bias_term else 0  # a gather, plus the bias add


class _LastStep:
    """Mixin for nn.LSTM/nn.GRU: return the whole top-layer sequence or its final state."""

    return_sequence: bool

    def _output(self, out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.return_sequence:
            return out  # (N, T, D * H)
        if self.bidirectional:  # forward's state after step T-1, backward's after step 0
            return torch.cat([h[-2], h[-1]], dim=-1)  # (N, 2H)
        return h[-1]  # (N, H), equal to out[:, -1]


class LSTMStack(_LastStep, nn.LSTM):
    """nn.LSTM (batch first) returning the output sequence or the final hidden state."""

    def __init__(self, *args, return_sequence: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.return_sequence = return_sequence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, (h, _) = super().forward(x)
        return self._output(out, h)


class GRUStack(_LastStep, nn.GRU):
    """nn.GRU (batch first) returning the output sequence or the final hidden state."""

    def __init__(self, *args, return_sequence: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.return_sequence = return_sequence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = super().forward(x)
        return self._output(out, h)


class _RecurrentBase(LayerSpec):
    """Fields and shape logic shared by LSTM and GRU."""

    num_output: int = Field(..., ge=1, description="hidden state size per direction")
    num_layers: int = Field(1, ge=1, le=64, description="stacked recurrent layers; each reads the one below's sequence")
    bidirectional: bool = Field(False, description="also run the sequence backwards; outputs 2 * num_output features")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on each layer's output except the last's (needs num_layers >= 2)")
    return_sequence: bool = Field(True, description="output every step (T, D*num_output); false: only the final state (D*num_output,)")
    bias_term: bool = Field(True, description="learn the input and hidden biases (bias_ih, bias_hh)")
    weight_filler: FillerSpec | None = Field(None, description="initialisation of every weight_* blob; default: PyTorch's")
    bias_filler: FillerSpec | None = Field(None, description="initialisation of every bias_* blob: bias_ih and bias_hh both, which add (constant 1 gives each gate a bias of 2); default: PyTorch's")

    gates: ClassVar[int] = 4  # gate blocks stacked in weight_ih / weight_hh
    module_class: ClassVar[type[nn.Module]] = LSTMStack

    @model_validator(mode="after")
    def _dropout_needs_layers(self):
        if self.dropout > 0 and self.num_layers < 2:
            raise FieldError(f"dropout {self.dropout} acts between stacked layers; set num_layers >= 2 "
                             "or put a Dropout layer after this one", key="dropout")
        return self

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def infer(self, bottoms: list[Blob]) -> list[Blob]:
        (x,) = bottoms
        if len(x.shape) != 2:
            hint = ("; for a 1-d sequence use a Reshape to (T, 1)" if len(x.shape) == 1
                    else "; token ids go through an Embed layer first" if not x.shape else "")
            raise ShapeError(f"{self.type} expects a (T, C) sequence per sample (time first, no batch "
                             f"dimension), got shape {list(x.shape)}{hint}")
        if x.dtype not in ("float32", "float64", "float16", "bfloat16"):
            raise ShapeError(f"{self.type} needs a floating-point input, got {x.dtype}; "
                             "token ids go through an Embed layer first")
        width = self.num_output * self.directions
        return [Blob((x.shape[0], width) if self.return_sequence else (width,), x.dtype)]

    def blob_names(self) -> list[str]:
        names = []
        for k in range(self.num_layers):
            for sfx in ("", "_reverse")[: self.directions]:
                names += [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"]
                if self.bias_term:
                    names += [f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"]
        return names

    def build(self, bottoms: list[Blob]) -> nn.Module:
        return self.module_class(bottoms[0].shape[1], self.num_output, self.num_layers, bias=self.bias_term,
                                 batch_first=True, dropout=self.dropout, bidirectional=self.bidirectional,
                                 return_sequence=self.return_sequence)

    def fill(self, module: nn.Module) -> None:
        from netcfg.layers.fillers import fill

        for name, p in module.named_parameters():
            f = self.weight_filler if name.startswith("weight_") else self.bias_filler
            if f is not None:
                fill(p, f)

    def _pointwise(self) -> int:
        """Element-wise operations per step and hidden unit, besides the gate matmuls."""
        return 4

    def flops(self, bottoms: list[Blob], tops: list[Blob]) -> int:
        """Gate matrix products, biases and the state update, per step; nonlinearities not counted."""
        t, c = bottoms[0].shape
        g, h = self.gates, self.num_output
        total = 0
        for k in range(self.num_layers):
            fan_in = (c if k == 0 else h * self.directions) + h
            per_step = 2 * g * h * fan_in + (2 * g * h if self.bias_term else 0) + self._pointwise() * h
            total += per_step * t * self.directions
        return total


@register
class LSTM(_RecurrentBase):
    """Long short-term memory stack (Hochreiter & Schmidhuber 1997), batch first:
    (T, C) per sample -> (T, D*num_output), or the final state (D*num_output,).

    Deviates from Caffe's LSTM (time-major input plus a continuation-indicator blob
    that resets the state mid-sequence, blobs W_xc/b_c/W_hc with gates i,f,o,g):
    here each sample is one sequence starting from a zero state, and the blobs are
    torch's (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ... with gates
    i,f,g,o), so ``param:`` entries follow that order. Stacking, bidirectional and
    dropout between layers are additions."""

    type: Literal["LSTM"]

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [5, 3]}, "num_output": 4},
        {"inputs": {"x": [4, 3]}, "num_output": 2, "num_layers": 2, "bidirectional": True, "dropout": 0.5,
         "return_sequence": False},
        {"inputs": {"x": [3, 2]}, "num_output": 3, "bias_term": False, "return_sequence": False,
         "weight_filler": {"type": "orthogonal"}},
    ]


@register
class GRU(_RecurrentBase):
    """Gated recurrent unit stack (Cho et al. 2014, https://arxiv.org/abs/1406.1078),
    batch first: (T, C) per sample -> (T, D*num_output), or the final state.
    Not in Caffe; blobs are torch's (weight_ih_l0, weight_hh_l0, bias_ih_l0, ...)."""

    type: Literal["GRU"]

    gates: ClassVar[int] = 3
    module_class: ClassVar[type[nn.Module]] = GRUStack

    examples: ClassVar[list[dict]] = [
        {"inputs": {"x": [5, 3]}, "num_output": 4, "bidirectional": True},
        {"inputs": {"x": [4, 3]}, "num_output": 2, "num_layers": 2, "return_sequence": False,
         "weight_filler": {"type": "xavier"}, "bias_filler": {"type": "constant", "value": 0}},
    ]

    def _pointwise(self) -> int:
        return 5  # r * (W_hn h), + W_in x, (1 - z), two products and a sum
