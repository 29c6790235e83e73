"""A Solver's set-up: its nets, data loaders, optimizer and initial weights, from the spec.

Everything here may refuse the run (a shape the data does not match, memory, weights),
and nothing here talks to other ranks: ``Solver.__init__`` runs it inside
``dist.together()``, so under torchrun a rank that fails stops every rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from netcfg.errors import ConfigError, ConfigErrors
from netcfg.net import Net, build_graph
from netcfg.solver.check import checked_loader, nothing_to_train
from netcfg.solver.finite import DeferredCheck
from netcfg.solver.freeze import freeze
from netcfg.solver.keep import best_metric_errors
from netcfg.solver.layout import use_channels_last
from netcfg.solver.memory import check_memory
from netcfg.solver.optim import make_optimizer, param_groups
from netcfg.solver.spec import SolverSpec
from netcfg.solver.weights import load_file, load_rules

if TYPE_CHECKING:
    from netcfg.solver.runner import Solver

__all__ = ["build"]


def build(solver: Solver, spec: SolverSpec, deferred_check: bool | None, resuming: bool = False) -> None:
    """Nets, data, optimizer and initial weights: all of the set-up that runs no collective
    (``Solver.__init__`` runs it inside ``dist.together()``, so a failing rank stops them all).
    ``resuming``: a snapshot's weights replace the initial ones next (see ``_initial_weights``)."""
    if spec.precision == "fp16" and solver.device.type != "cuda":
        raise ConfigErrors([spec.locate(ConfigError("fp16 autocast needs a CUDA device", ("precision",),
                                                    hint="use bf16 on the CPU"))])
    torch.manual_seed(spec.random_seed)
    net_spec = spec.net_spec
    train_graph = build_graph(net_spec, "TRAIN", spec.train_stages)
    test_graph = build_graph(net_spec, "TEST", spec.test_stages) if spec.data.test is not None else None
    idle = nothing_to_train(spec, train_graph) + best_metric_errors(spec, test_graph)
    if idle:
        raise ConfigErrors([spec.locate(e) for e in idle])
    check_memory(spec, train_graph, test_graph, solver.device)  # before any weight is allocated
    solver.net = Net(train_graph).to(solver.device)
    solver.channels_last = use_channels_last(spec.memory_format, solver.net)
    if solver.channels_last:
        solver.net.to(memory_format=torch.channels_last)
    solver.test_net: Net | None = None
    if test_graph is not None:
        solver.test_net = Net(test_graph, share=solver.net).to(solver.device)
    solver.train_data = checked_loader(spec, "train", solver.net.graph, solver.device) if spec.data.train is not None else None
    solver.test_data = checked_loader(spec, "test", solver.test_net.graph, solver.device) if spec.data.test is not None else None
    for net in (solver.net, solver.test_net):  # checked_loader matched their batches to the inputs
        if net is not None:
            net.check_input_tensors = False
    solver.frozen = freeze(spec, solver.net)  # solver-level freeze: (see freeze.py)
    solver.optimizer = make_optimizer(
        spec.type, param_groups(solver.net, solver.frozen.params),
        base_lr=spec.base_lr, momentum=spec.momentum, momentum2=spec.momentum2, delta=spec.delta,
        rms_decay=spec.rms_decay, weight_decay=spec.weight_decay, regularization_type=spec.regularization_type)
    solver._params = [p for g in solver.optimizer.param_groups for p in g["params"]]
    solver.scaler = torch.amp.GradScaler("cuda") if spec.precision == "fp16" else None
    if deferred_check is None:
        deferred_check = solver.device.type == "cuda"
    solver._deferred = (DeferredCheck(solver.optimizer, solver._params, solver.device) if deferred_check
                        and solver.scaler is None and not solver.dist.active and DeferredCheck.supports(solver.optimizer)
                        else None)
    solver._forward = torch.compile(solver.net, dynamic=False) if spec.compile else solver.net
    _initial_weights(solver, spec, resuming)
    if warning := sixteen_bit_warning(spec, solver._params):
        solver.log(warning)


def _initial_weights(solver: Solver, spec: SolverSpec, resuming: bool) -> None:
    """``weights:``, into the nets. A resume whose snapshot holds every tensor they could fill
    (the TEST net has none of its own) does not read them: the snapshot replaces them, and the
    file (a pruned snapshot, a run directory since deleted) may be gone."""
    if not spec.weights:
        return
    if resuming and not _test_net_own_tensors(solver):
        solver.log("weights: not read again on resume; the snapshot holds every weight they gave")
        return
    if isinstance(spec.weights, list):  # rules: plan, refuse or copy, report (weights.py)
        for line in load_rules(spec, [solver.net, solver.test_net]):
            solver.log(line)
    else:  # a file, or a run directory: its newest snapshot; errors at weights:, as the rules'
        load_file(spec, solver.load_weights)


def _test_net_own_tensors(solver: Solver) -> list[str]:
    """Parameters and buffers of TEST-only layers, which a snapshot (the TRAIN net's) does not hold."""
    if solver.test_net is None:
        return []
    shared = {id(t) for t in [*solver.net.parameters(), *solver.net.buffers()]}
    return [n for n, t in [*solver.test_net.named_parameters(), *solver.test_net.named_buffers()] if id(t) not in shared]


def sixteen_bit_warning(spec: SolverSpec, params: list[torch.Tensor]) -> str | None:
    """A warning when the net trains 16-bit weights (a float16/bfloat16 input declares them):
    an update below a weight's rounding step is lost, so plain training stalls."""
    low = sorted({str(p.dtype).removeprefix("torch.") for p in params} & {"bfloat16", "float16"})
    if not low:
        return None
    inputs = ", ".join(f"'{n}'" for n, i in spec.net_spec.inputs.items() if i.dtype in low)
    bits = {"bfloat16": 8, "float16": 11}[low[0]]  # significand bits: an update below 2**-bits of a weight rounds away
    return (f"warning: the net's weights are {' and '.join(low)}, the dtype of its input {inputs}: an update smaller "
            f"than about 1/{2 ** bits:,} of a weight rounds away, so training can stall; to train in 16 bits declare "
            "the inputs float32 and set precision: bf16 (fp16 on CUDA), which keeps float32 weights")

