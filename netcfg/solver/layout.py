"""The memory format a run trains in: channels_last for conv nets, where it wins.

Measured on 2 CPU cores (torch 2.13.0 CPU build, one thread, batch 128, a training step,
``python bench/overhead.py --options``): channels_last is 1.6x for LeNet, 1.35x for
ResNet-9 (28x28), 1.35x for the digits conv net and 1.2x for ResNet-20, because oneDNN's
convolutions run natively in NHWC and skip the reorders NCHW costs them. cuDNN likewise
prefers NHWC for convolutions under autocast. A net without 2-D convolutions (an MLP, a
text net) has nothing to gain, so ``auto`` leaves it alone.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["use_channels_last", "to_layout"]


def use_channels_last(choice: str, net: nn.Module) -> bool:
    """``memory_format`` of the solver file -> whether to train channels_last."""
    if choice != "auto":
        return choice == "channels_last"
    return any(p.dim() == 4 for p in net.parameters())  # a 2-D (de)convolution's weight


def to_layout(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Image batches (N, C, H, W) in channels_last; every other tensor as it is."""
    return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 and v.is_floating_point() else v
            for k, v in batch.items()}
