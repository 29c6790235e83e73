"""The solver's ``freeze:``: parameters that are not trained, and norm layers whose statistics stay.

``freeze`` is a list of regexes matched (``re.match``, anchored at the start) against
the train net's parameter and buffer names (``conv1.weight``, ``bn1.running_mean``).
A frozen parameter gets ``requires_grad=False`` and is left out of the optimizer: no
update, no momentum, no weight decay. A layer with running statistics (BatchNorm)
whose ``running_mean`` is matched stays in eval mode while training, as timm's
``freeze`` and torchvision's ``FrozenBatchNorm2d`` do: it normalises with the stored
statistics and does not update them, so a frozen feature extractor really is fixed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from netcfg.errors import ConfigError, ConfigErrors

__all__ = ["Frozen", "freeze"]


@dataclass
class Frozen:
    """What ``freeze:`` froze: parameter names, the norm modules kept in eval mode, counts."""

    params: frozenset[str] = frozenset()
    norms: list = field(default_factory=list)          # modules kept in eval mode during training
    norm_names: list[str] = field(default_factory=list)
    frozen_count: int = 0                              # scalars, shared tensors once
    trainable_count: int = 0

    def hold(self) -> None:
        """Put the frozen norm layers back in eval mode (after ``net.train()``)."""
        for m in self.norms:
            m.eval()

    def line(self) -> str:
        total = self.frozen_count + self.trainable_count
        text = (f"freeze: {self.frozen_count:,} of {total:,} parameters frozen ({len(self.params)} tensors), "
                f"{self.trainable_count:,} trainable")
        if self.norm_names:
            text += f"; statistics fixed (eval mode) in {len(self.norm_names)} norm layer(s)"
        return text


def freeze(spec, net) -> Frozen:
    """Apply the spec's ``freeze:`` to ``net`` (the train net; the test net shares its layers)."""
    infos = net.param_infos()
    if not spec.freeze:  # (a net with every lr_mult 0 is check.nothing_to_train's)
        return Frozen(trainable_count=sum(i.param.numel() for i in infos))
    patterns = [re.compile(p) for p in spec.freeze]  # checked at load time
    buffers = [n for n, _ in net.named_buffers()]
    aliases = _aliases(net, infos)
    errors = []
    for j, p in enumerate(patterns):
        if not any(p.match(a) for i in infos for a in aliases[i.name]) and not any(p.match(b) for b in buffers):
            shown = ", ".join(i.name for i in infos[:6]) + (", ..." if len(infos) > 6 else "")
            errors.append(spec.locate(ConfigError(f"freeze pattern {spec.freeze[j]!r} matches no parameter of the net",
                                                  ("freeze", j), hint=f"parameters are <layer>.<blob>: {shown}")))
    names = {i.name for i in infos if any(p.match(a) for p in patterns for a in aliases[i.name])}
    if infos and len(names) == len(infos):
        errors.append(spec.locate(ConfigError("freeze matches every parameter: nothing is left to train",
                                              ("freeze",), hint="freeze the early layers only, e.g. ['conv']")))
    elif spec.max_iter > 0 and infos and not any(i.param.requires_grad for i in infos if i.name not in names):
        errors.append(spec.locate(ConfigError("freeze matches every parameter that lr_mult 0 leaves: nothing is "
                                              "left to train", ("freeze",), hint="freeze fewer layers")))
    if errors:
        raise ConfigErrors(errors)
    for i in infos:
        if i.name in names:
            i.param.requires_grad_(False)
    norms, norm_names = [], []
    for name, module in net.named_modules():
        has_stats = module._buffers.get("running_mean") is not None  # BatchNorm tracking statistics
        if has_stats and any(p.match(f"{name}.running_mean") for p in patterns):
            norms.append(module)
            norm_names.append(name)
    frozen = sum(i.param.numel() for i in infos if i.name in names)
    trainable = sum(i.param.numel() for i in infos if i.name not in names)
    return Frozen(frozenset(names), norms, norm_names, frozen, trainable)


def _aliases(net, infos) -> dict[str, list[str]]:
    """Every name each parameter answers to: a weight shared by layers p and q (``param:
    [{name: w}]``) is ``p.weight`` in ``param_infos`` and also ``q.weight`` in the state_dict,
    so ``freeze: ['q']`` freezes it (the one tensor both layers use)."""
    by_id = {id(i.param): i.name for i in infos}
    out: dict[str, list[str]] = {i.name: [i.name] for i in infos}
    for name, param in net.named_parameters(remove_duplicate=False):
        if id(param) in by_id and name not in out[by_id[id(param)]]:
            out[by_id[id(param)]].append(name)
    return out
