"""An exponential moving average of the weights (``ema: {decay, warmup}``), tested and snapshotted.

After every update the average moves towards the net's floating-point parameters and
buffers (BatchNorm's running statistics too, as Ultralytics' ``ModelEMA`` and timm's
``ModelEmaV2`` average them)::

    d = decay * (1 - exp(-updates / warmup))      # warmup 0: d = decay
    average = d * average + (1 - d) * weights

The ramp (Ultralytics' ``tau``) lets the early averages forget the random start. Tests
and snapshots see the average: the ``.safetensors`` of every snapshot (and of the best)
holds it, so ``netcfg test``, ``export`` and ``weights:`` take the averaged weights. The
``.solverstate`` keeps the trained weights themselves and the update count, so a resume
goes on exactly. The net itself always trains on its own weights.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

__all__ = ["WeightAverage", "own_weights"]

_HALF = (torch.float16, torch.bfloat16)


class WeightAverage:
    """The average of ``net``'s floating-point parameters and buffers."""

    def __init__(self, net: torch.nn.Module, decay: float, warmup: int):
        self.decay, self.warmup, self.updates = decay, warmup, 0
        named = [(n, t) for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_floating_point()]
        self.names = [n for n, _ in named]
        self.live = [t.detach() for _, t in named]
        # a 16-bit weight's average is kept in float32: at decay 0.9999 a bfloat16 one would never move
        # (each step adds 1e-4 of the difference, far below its 8-bit mantissa's resolution)
        self.average = [t.float() if t.dtype in _HALF else t.clone() for t in self.live]
        half = [t.dtype in _HALF for t in self.live]
        self._full = ([a for a, h in zip(self.average, half) if not h], [t for t, h in zip(self.live, half) if not h])
        self._half = ([a for a, h in zip(self.average, half) if h], [t for t, h in zip(self.live, half) if h])
        self._held: list[torch.Tensor] | None = None  # the net's own weights while the average is in it

    @torch.no_grad()
    def update(self) -> None:
        """Move the average after an update of the weights (inside the iteration's Ctrl-C hold)."""
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.warmup)) if self.warmup else self.decay
        if self._full[0]:
            torch._foreach_lerp_(*self._full, 1.0 - d)
        if self._half[0]:  # float32 copies of the 16-bit weights: only nets declared in 16 bits pay for them
            torch._foreach_lerp_(self._half[0], [t.float() for t in self._half[1]], 1.0 - d)

    @contextmanager
    def in_net(self):
        """The average in the net for a test or a snapshot; the net's own weights after, bit for bit."""
        if self._held is not None:  # already in (a snapshot inside a test's best)
            yield
            return
        with torch.no_grad():
            self._held = [t.clone() for t in self.live]
            torch._foreach_copy_(self.live, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.live, self._held)
            self._held = None

    def state(self) -> dict:
        """What a .solverstate keeps (the average is the snapshot's weights): the update count
        and the net's own weights, by name. Only while the average is ``in_net``."""
        if self._held is None:
            raise RuntimeError("WeightAverage.state() outside in_net(): the snapshot's weights would be the net's own")
        # the float32 average of 16-bit weights, which the snapshot's weights hold rounded: a resume goes on from it
        full = {n: a for n, a, t in zip(self.names, self.average, self.live) if t.dtype in _HALF}
        return {"updates": self.updates, "weights": dict(zip(self.names, self._held)), **({"average": full} if full else {})}

    @torch.no_grad()
    def resume(self, net: torch.nn.Module, stored: dict | None) -> None:
        """Continue from a state's ``ema`` (``net`` holds the snapshot's weights, the average):
        the average is those, the net gets its own back. Without one (an average switched on
        at a resume) the average starts from the weights as they are."""
        torch._foreach_copy_(self.average, self.live)
        if stored is not None:
            own_weights(net, stored)
            self.updates = int(stored.get("updates", 0))
            kept = stored.get("average") or {}
            for name, a in zip(self.names, self.average):
                if name in kept and kept[name].shape == a.shape:
                    a.copy_(kept[name])


@torch.no_grad()
def own_weights(net: torch.nn.Module, stored: dict) -> None:
    """Put a state's ``ema`` weights (the trained ones; the snapshot's .safetensors holds the
    average) back into ``net``: a resume with or without ``ema`` trains on from them."""
    weights = stored.get("weights") or {}
    for name, t in [*net.named_parameters(), *net.named_buffers()]:
        if name in weights:
            if weights[name].shape != t.shape:
                raise ValueError(f"its trained weights '{name}' have shape {list(weights[name].shape)}, "
                                 f"the net's {list(t.shape)}")
            t.copy_(weights[name])
