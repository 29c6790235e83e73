"""What every format writer gets: the deploy net with its weights, the options, the file to write."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.utils import parametrize

from netcfg.exporting.deploy import Deploy, DeployModule, example_inputs
from netcfg.net.module import Net

__all__ = ["ExportJob", "Runner", "int_bounds", "plain_copy", "quiet"]

# runs an artefact: positional inputs -> outputs in the deploy net's output order
Runner = Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]


@dataclass
class ExportJob:
    """One export: the deploy net (weights loaded), where to write, and the options."""

    deploy: Deploy
    net: Net
    path: Path
    batch: int | None = None         # None: a dynamic batch dimension
    opset: int | None = None         # ONNX only
    metadata: dict[str, str] = field(default_factory=dict)  # stored in the file where the format allows

    @property
    def example_batch(self) -> int:
        # 2, not 1: tracers treat a size-1 dimension as a constant
        return self.batch if self.batch is not None else 2

    def example(self, batch: int | None = None, seed: int = 0) -> tuple[torch.Tensor, ...]:
        return example_inputs(self.deploy.graph, batch or self.example_batch, seed, int_bounds(self.deploy))

    def module(self, *, as_dict: bool = False) -> DeployModule:
        """A copy of the deploy net as a plain-signature module, weight-norm folded (see ``plain_copy``)."""
        return DeployModule(plain_copy(self.net), as_dict=as_dict)


def int_bounds(deploy: Deploy) -> dict[str, int]:
    """For each integer input, an exclusive upper bound every layer reading it accepts
    (an Embed's ``input_dim``; 1 for BatchReindex's sample indices, since only index 0 lies
    inside every batch size the check runs); 2 otherwise, as for class labels."""
    bounds: dict[str, int] = {}
    for node in deploy.graph.nodes:
        limit = getattr(node.spec, "input_dim", None)
        reads = node.bottoms
        if node.spec.type == "BatchReindex":
            limit, reads = 1, node.bottoms[1:]
        if isinstance(limit, int):
            for b in reads:
                if b in deploy.graph.inputs:
                    bounds[b] = min(bounds.get(b, limit), limit)
    return bounds


def plain_copy(net: Net) -> Net:
    """A copy of ``net`` with every parametrization (weight_norm) folded into a plain
    tensor: the same numbers, one tensor per weight, graphs exporters read without
    surprises. Rebuilt from the graph, not deep-copied: a parametrized module's class is
    made per instance and folding edits that class, which a deep copy would share."""
    copy = Net(net.graph)
    copy.load_state_dict(net.state_dict())
    for sub in copy.modules():
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations):
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    return copy.train(net.training)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' chatter (deprecation notices for TorchScript, which the
    user asked for by name; torchvision-not-installed and version-converter notes)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "torch.fx")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)
