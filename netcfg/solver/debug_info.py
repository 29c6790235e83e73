"""Caffe's ``debug_info: true``: what every layer did in one iteration, as mean absolute values.

On each iteration the solver displays (Caffe: ``net_->set_debug_info(display &&
param_.debug_info())`` in ``Solver::Step``), the log gets Caffe's lines (``Net::
ForwardDebugInfo``, ``BackwardDebugInfo`` in net.cpp; the ``[Update]`` lines are
``UpdateDebugInfo``'s, which older Caffe's ``Net::Update`` printed)::

    [Forward] Input data data: 0.286
    [Forward] Layer conv1, top blob conv1 data: 0.0645
    [Forward] Layer conv1, param blob weight data: 0.00899
    [Backward] Layer conv1, bottom blob data diff: 1.4e-05
    [Backward] Layer conv1, param blob weight diff: 0.000212
    [Backward] All net params (data, diff): L1 norm = (1234, 5.6); L2 norm = (12.3, 0.45)
    [Update] Layer conv1, param weight data: 0.00899; diff: 2.1e-06

A blob's value is ``mean(|x|)``. Forward and blob-diff lines come for every ``iter_size``
pass; a parameter's diff is the gradient the update takes (summed over the passes and
divided by ``iter_size``, unscaled under fp16, after ``clip_gradients``), and an update's
diff is the step, ``mean(|w_after - w_before|)``; an update not taken (fp16's scaler or the
deferred NaN check found an inf or NaN: a fused kernel skips on the device) is one ``[Update]
skipped`` line. A vanishing or exploding layer shows as a value orders of magnitude from
its neighbours'. The iteration runs eagerly (not compiled), with hooks that only read;
under torchrun rank 0's own blobs are shown.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["watch"]


def _mean_abs(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().abs().mean()


@contextmanager
def watch(solver, log):
    """Hooks on ``solver``'s train net and optimizer for the iteration run inside; its lines
    go to ``log`` when the update is done (nothing is logged for an interrupted iteration)."""
    net = solver.net
    names = [n.name for n in net.graph.nodes]
    layer_of = {id(module): (name, bottoms, tops) for (module, bottoms, tops), name in zip(net._schedule, names)}
    passes: list[tuple[list, dict]] = []  # per iter_size pass: forward (line, value), layer -> [[blob, diff]]
    grads: dict[str, list] = {}  # layer -> [(param, tensor, mean |grad|)], as the update takes them
    before: dict[int, torch.Tensor] = {}  # id(param) -> its value before the update
    norms: list[float] = []  # L1 and L2 norms of all parameters and of their gradients, before the update
    found: list[torch.Tensor] = []  # the device flag a fused kernel skips the update on (fp16's scaler, deferred check)

    def start(_, args, inputs):  # the net's forward: a new pass
        passes.append(([(f"[Forward] Input {blob} data", _mean_abs(t)) for blob, t in inputs.items()
                        if t.is_floating_point()], {}))

    def pre(module, args):
        name, bottoms, _ = layer_of[id(module)]
        for blob, t in zip(bottoms, args):
            if isinstance(t, torch.Tensor) and t.requires_grad:
                entry = [blob, None]
                passes[-1][1].setdefault(name, []).append(entry)
                t.register_hook(lambda g, entry=entry: entry.__setitem__(1, _mean_abs(g)))

    def post(module, args, out):
        name, _, tops = layer_of[id(module)]
        forward = passes[-1][0]
        for blob, t in zip(tops, (out,) if len(tops) == 1 else tuple(out)):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                forward.append((f"[Forward] Layer {name}, top blob {blob} data", _mean_abs(t)))
        for pname, p in _params(module):
            forward.append((f"[Forward] Layer {name}, param blob {pname} data", _mean_abs(p)))

    def before_step(optimizer, args, kwargs):
        if getattr(optimizer, "found_inf", None) is not None:  # GradScaler removes its own after the step
            found.append(optimizer.found_inf)
        for module, _, _ in net._schedule:
            name = layer_of[id(module)][0]
            for pname, p in _params(module):
                if p.grad is not None:
                    grads.setdefault(name, []).append((pname, p, _mean_abs(p.grad)))
                    before[id(p)] = p.detach().clone()  # a shared blob once
        data, diff = [w.float() for w in before.values()], [p.grad.detach().float() for p in _unique(grads)]
        norms.extend(_norm(t, order) for order in (1, 2) for t in (data, diff))

    handles = [net.register_forward_pre_hook(start, with_kwargs=True)]
    handles += [m.register_forward_pre_hook(pre) for m, _, _ in net._schedule]
    handles += [m.register_forward_hook(post) for m, _, _ in net._schedule]
    handles.append(solver.optimizer.register_step_pre_hook(before_step))
    # a pass's blob gradients are of loss / iter_size (Caffe's: of the loss), times fp16's scale
    scale = (solver.scaler.get_scale() if solver.scaler is not None else 1.0) / solver.spec.iter_size
    forward, solver._forward = solver._forward, (solver._ddp or net)  # hooks need the eager modules
    try:
        yield
    finally:
        solver._forward = forward
        for h in handles:
            h.remove()
    for i, (lines, diffs) in enumerate(passes):
        for line, value in lines:
            log(f"    {line}: {float(value):.6g}")
        for name in reversed(names):  # Net::Backward: each layer's bottoms, then (once) its params
            for blob, value in diffs.get(name, ()):
                if value is not None:
                    log(f"    [Backward] Layer {name}, bottom blob {blob} diff: {float(value) / scale:.6g}")
            for pname, _, value in grads.get(name, ()) if i == len(passes) - 1 else ():
                log(f"    [Backward] Layer {name}, param blob {pname} diff: {float(value):.6g}")
    if grads:
        log("    [Backward] All net params (data, diff): L1 norm = ({:.6g}, {:.6g}); L2 norm = ({:.6g}, {:.6g})".format(*norms))
    # a non-fused optimizer's step is not called at all; a fused kernel is, and skips on the flag
    if not grads or any(bool(flag) for flag in found):
        log("    [Update] skipped: " + ("the fp16 gradient scaler found an inf or NaN gradient" if solver.scaler is not None
                                     else "the loss or a gradient is NaN or infinite (training stops)"))
        return
    for name in names:  # Net::Update, in the parameters' order
        for pname, p, _ in grads.get(name, ()):
            step = _mean_abs(p.detach() - before[id(p)])
            log(f"    [Update] Layer {name}, param {pname} data: {float(_mean_abs(p)):.6g}; diff: {float(step):.6g}")


def _norm(tensors: list[torch.Tensor], order: int) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t, order) for t in tensors]), order))


def _unique(grads: dict[str, list]) -> list[torch.Tensor]:
    return list({id(p): p for layer in grads.values() for _, p, _ in layer}.values())


def _params(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """A layer's learnable parameters, (name, tensor), frozen ones (lr_mult 0) left out."""
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]
