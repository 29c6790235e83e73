"""Registry-wide numerical gradient check (Caffe's GradientChecker): every registered
layer type, built from its own ``examples``, has analytic gradients (inputs and learnable
blobs) that match central differences of its forward in float64."""

from __future__ import annotations

import pytest
import torch

from netcfg.layers._registry import registry
from netcfg.net import Net
from tests.test_registry import BATCH, graph_of

# Layers whose output carries no gradient to check, and why.
NOT_DIFFERENTIABLE = {
    "Accuracy": "a metric: it reads detached scores and outputs counts",
    "ArgMax": "outputs indices (piecewise constant); its values form is a selection, like MAX pooling",
    "Threshold": "a step: zero gradient almost everywhere, and Caffe has no backward for it",
}

# Layers that read probabilities: N(0, 1) values under Caffe's 1e-20 clip would meet a flat forward
# and Caffe's gradient there (-1 / 1e-20), so their float inputs are drawn in (0.05, 1).
PROBABILITIES = {"MultinomialLogisticLoss"}

CASES = [pytest.param(t, i, id=f"{t}-{i}") for t, cls in registry().items() if t not in NOT_DIFFERENTIABLE
         for i in range(len(cls.examples))]


def float64_inputs(graph, seed: int = 0, probabilities: bool = False) -> dict[str, torch.Tensor]:
    """N(0, 1) floats in float64 (or in (0.05, 1)); integer inputs (labels, ids, similarity flags) in [0, 2)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, blob in graph.inputs.items():
        shape = (BATCH, *blob.shape)
        if blob.dtype.startswith(("float", "bfloat")) and probabilities:
            out[name] = 0.05 + 0.95 * torch.rand(shape, generator=gen, dtype=torch.float64)
        elif blob.dtype.startswith(("float", "bfloat")):
            out[name] = torch.randn(shape, generator=gen, dtype=torch.float64)
        else:
            out[name] = torch.randint(0, 2, shape, generator=gen).to(getattr(torch, blob.dtype))
    return out


@pytest.mark.parametrize(("type_name", "index"), CASES)
def test_gradients_match_finite_differences(type_name, index):
    graph = graph_of(type_name, index)
    net = Net(graph).double()
    inputs = float64_inputs(graph, probabilities=type_name in PROBABILITIES)
    # integer inputs are held fixed: labels and ids have no gradient
    float_names = [n for n, x in inputs.items() if x.is_floating_point()]
    param_names = [n for n, p in net.named_parameters() if p.requires_grad]
    params = dict(net.named_parameters())
    wrt = tuple(inputs[n].clone().requires_grad_() for n in float_names)
    wrt += tuple(params[n].detach().clone().requires_grad_() for n in param_names)
    if not wrt:
        pytest.skip("integer inputs only and no learnable blob: nothing to differentiate")

    def forward(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {**inputs, **dict(zip(float_names, xs))}
        with torch.random.fork_rng():  # one dropout mask for every evaluation
            torch.manual_seed(0)
            out = torch.func.functional_call(net, dict(zip(param_names, xs[len(float_names):])), kwargs=feed)
        return tuple(t for t in out.values() if t.is_floating_point())

    torch.autograd.gradcheck(forward, wrt, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
