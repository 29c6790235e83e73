"""The memory format a run trains in: channels_last for conv nets, where it wins.

Measured on 2 CPU cores (torch 2.13.0 CPU build, one thread, batch 128, a training step,
``python bench/overhead.py --options``): channels_last is 1.6x for LeNet, 1.35x for
ResNet-9 (28x28), 1.35x for the digits conv net and 1.2x for ResNet-20, because oneDNN's
convolutions run natively in NHWC and skip the reorders NCHW costs them. cuDNN likewise
prefers NHWC for convolutions under autocast. A net without 2-D convolutions (an MLP, a
recurrent net) has nothing to gain, so ``auto`` leaves it alone; so is a net whose every
convolution reads one channel that needs its gradient: TextCNN (configs/text_cnn.yaml,
5x128 filters over an embedded sentence) trained at 11-14 samples/s in channels_last against
82-110 in NCHW (batch 50), oneDNN's NHWC input gradient being slow for such filters (181 ms
against 12 for one 3x128 convolution's step, batch 50, one thread). A one-channel
convolution over an image (a one-conv net on MNIST) computes no input gradient and steps
1.3x faster in NHWC, so it counts as a convolution.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["use_channels_last", "to_layout"]


def use_channels_last(choice: str, net: nn.Module) -> bool:
    """``memory_format`` of the solver file -> whether to train channels_last."""
    if choice != "auto":
        return choice == "channels_last"
    graded: set[str] = set()  # blobs whose gradient backward computes: a layer with weights made them
    for node in net.graph.nodes:
        params = list(net.module_of(node.name).parameters())
        reads_graded = any(b in graded for b in node.bottoms)
        if reads_graded or any(p.requires_grad for p in params):
            graded.update(node.tops)
        # a 2-D (de)convolution's weight (out, in / groups, kh, kw) that reads several channels,
        # or one channel that needs no gradient (an image's): NHWC is fast for both
        if any(p.dim() == 4 and (p.shape[1] > 1 or not reads_graded) for p in params):
            return True
    return False


def to_layout(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Image batches (N, C, H, W) in channels_last; every other tensor as it is."""
    return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 and v.is_floating_point() else v
            for k, v in batch.items()}
