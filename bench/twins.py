"""Hand-written PyTorch twins of zoo nets, for the benchmarks: what a user would write instead.

Each twin is the plain ``nn.Module`` a PyTorch user writes for the same net, with the
same layers in the same order, so that ``copy_from(netcfg_net)`` can give it identical
weights (parameters and buffers copied in order, shapes checked) and its loss on a
batch equals netcfg's. ``logits(x)`` returns the scores, ``forward(x, y)`` the training loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    """configs/lenet.yaml: Caffe's LeNet (ceil-mode pooling, no ReLU after the convolutions)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.ip1, self.ip2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def logits(self, x):
        x = F.max_pool2d(self.conv1(x), 2, 2, ceil_mode=True)
        x = F.max_pool2d(self.conv2(x), 2, 2, ceil_mode=True)
        return self.ip2(F.relu(self.ip1(x.flatten(1))))

    def forward(self, x, y):
        return F.cross_entropy(self.logits(x), y)


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, pool: bool = False):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers, nn.BatchNorm2d(cout, momentum=0.1), nn.ReLU())


class Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a, self.b = ConvBN(c, c), ConvBN(c, c)

    def forward(self, x):
        return x + self.b(self.a(x))


class ResNet9(nn.Module):
    """configs/resnet9_28.yaml: ResNet-9 at a quarter width, with label smoothing 0.1."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(ConvBN(1, 16), ConvBN(16, 32, True), Res(32), ConvBN(32, 64, True),
                                  ConvBN(64, 128, True), Res(128), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.fc = nn.Linear(128, 10, bias=False)

    def logits(self, x):
        return self.fc(self.body(x)) * 0.125

    def forward(self, x, y):
        return F.cross_entropy(self.logits(x), y, label_smoothing=0.1)


class MLP(nn.Module):
    """configs/mlp.yaml: 784-512-256-10 with ReLU and dropout 0.2 after each hidden layer."""

    def __init__(self, hidden=(512, 256), dropout=0.2):
        super().__init__()
        sizes = (784, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.out = nn.Linear(sizes[-1], 10)
        self.dropout = dropout

    def logits(self, x):
        x = x.flatten(1)
        for fc in self.hidden:
            x = F.dropout(F.relu(fc(x)), self.dropout, self.training)
        return self.out(x)

    def forward(self, x, y):
        return F.cross_entropy(self.logits(x), y)


TWINS = {"lenet": LeNet, "resnet9_28": ResNet9, "mlp": MLP}

# The twin's SGD kernel (--twin-sgd): "default" is what ``torch.optim.SGD(...)`` picks with no
# flag (a for-loop over the tensors on the CPU, foreach on CUDA), what a user writes;
# "fused" is netcfg's own choice, so both sides do the same arithmetic (their accuracies
# then agree at every test) and only the tool's cost is left between them.
SGD_KERNELS = {"default": {}, "fused": {"fused": True}}


def sgd(groups: list[dict], kernel: str = "default", **hyper) -> torch.optim.SGD:
    """``torch.optim.SGD`` over ``groups`` with the twin's kernel (``SGD_KERNELS``)."""
    return torch.optim.SGD(groups, **hyper, **SGD_KERNELS[kernel])


def copy_from(twin: nn.Module, net: nn.Module) -> None:
    """Give ``twin`` the weights (and running statistics) of the netcfg ``net``, in order."""
    for kind in ("parameters", "buffers"):
        theirs = [t for t in getattr(net, kind)() if t.is_floating_point()]
        mine = [t for t in getattr(twin, kind)() if t.is_floating_point()]
        shapes = [tuple(t.shape) for t in theirs], [tuple(t.shape) for t in mine]
        if shapes[0] != shapes[1]:
            raise ValueError(f"the twin's {kind} differ from the net's: {shapes[1]} vs {shapes[0]}")
        with torch.no_grad():
            for a, b in zip(mine, theirs):
                a.copy_(b)
