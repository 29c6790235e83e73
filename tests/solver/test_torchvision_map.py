"""``rename_map: torchvision_resnet``: a torchvision-style resnet18/50 state_dict loads into the zoo's resnets.

The checkpoint comes from a twin written here in plain PyTorch with torchvision's
module names (no torchvision, no download); after loading, the zoo net and the twin
agree in eval mode. BatchNorm running statistics are randomised first, so the test
also proves that buffers are mapped, not only parameters.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from netcfg.net import Net, build_graph
from netcfg.net.spec import net_from_source
from netcfg.solver.spec import load_solver
from netcfg.solver.weights import load_rules
from netcfg.source import load_yaml
from tests.cli.test_train import netcfg

ZOO = Path(__file__).resolve().parents[2] / "configs"


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.downsample = _project(cin, width, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # torchvision v1.5: stride on the 3x3
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU()
        self.downsample = _project(cin, width * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


def _project(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class TwinResNet(nn.Module):
    """torchvision.models.ResNet's layout and state_dict names, in a few lines."""

    def __init__(self, block, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, 2 if j == 0 and i > 0 else 1))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _twin_checkpoint(tmp_path: Path, block, layers: list[int]) -> tuple[TwinResNet, Path]:
    torch.manual_seed(0)
    twin = TwinResNet(block, layers)
    with torch.no_grad():  # statistics and affines unlike the defaults, so a missed buffer shows
        for m in twin.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.2, 0.2)
                m.num_batches_tracked.fill_(7)
    path = tmp_path / "resnet.pth"
    torch.save(twin.state_dict(), path)
    return twin.eval(), path


def _solver(tmp_path: Path, config: str, **rule) -> Path:
    solver = {"net": str(ZOO / config), "base_lr": 0.1, "max_iter": 0,
              "weights": [{"file": "resnet.pth", "rename_map": "torchvision_resnet", **rule}]}
    path = tmp_path / "solver.yaml"
    path.write_text(yaml.safe_dump(solver, sort_keys=False))
    return path


@pytest.mark.parametrize("config, block, layers", [
    ("resnet18.yaml", BasicBlock, [2, 2, 2, 2]),
    ("resnet50.yaml", Bottleneck, [3, 4, 6, 3]),
])
def test_torchvision_state_dict_gives_the_same_outputs(tmp_path, config, block, layers):
    twin, _ = _twin_checkpoint(tmp_path, block, layers)
    spec = load_solver(_solver(tmp_path, config, strict=True))
    net = Net(build_graph(net_from_source(load_yaml(ZOO / config)), "TEST")).eval()
    lines = load_rules(spec, [net])
    blobs = [k for k in twin.state_dict() if not k.endswith("num_batches_tracked")]
    assert lines[-1] == f"weights: {len(blobs)} of {len(blobs)} net blobs filled from 1 rule(s)"
    x = torch.randn(1, 3, 224, 224)  # the net's shape: global pooling is sized at build time
    with torch.no_grad():
        want = twin(x)
        seen = []  # fc feeds the loss and accuracy, so it is no output: catch it on its way
        net.get_submodule("fc").register_forward_hook(lambda m, i, o: seen.append(o))
        net(data=x, label=torch.zeros(1, dtype=torch.long))
        got = seen[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_dry_run_lists_the_renames_and_refuses_a_strict_misfit(tmp_path):
    _twin_checkpoint(tmp_path, BasicBlock, [2, 2, 2, 2])
    code, out, err = netcfg("weights", _solver(tmp_path, "resnet18.yaml", strict=True))
    assert code == 0, err
    assert "layer1.0.conv1.weight -> layer1.block1.conv1.weight" in out
    assert "layer2.0.downsample.1.running_var -> layer2.block1.downsample.bn.running_var" in out
    assert "netcfg train would accept these weights" in out
    # resnet50's layout does not fit resnet18's blobs: strict refuses, at its key, with exit 2
    code, out, err = netcfg("weights", _solver(tmp_path, "resnet50.yaml", strict=True))
    assert code == 2
    assert "solver.yaml:" in err and "weights[0].strict: strict rule refuses" in err
    assert "shape mismatch" in out


def test_a_torchvision_file_loaded_without_its_map_is_named(tmp_path):
    # without rename_map only conv1, bn1 and fc have netcfg's names: the 114 other blobs were
    # listed as unused with no word on the map that would place them
    _twin_checkpoint(tmp_path, BasicBlock, [2, 2, 2, 2])
    hint = "hint: these are torchvision's ResNet names (layer1.0.conv1...): load them with rename_map: torchvision_resnet"
    solver = _solver(tmp_path, "resnet18.yaml")
    rules = yaml.safe_load(solver.read_text())
    del rules["weights"][0]["rename_map"]
    solver.write_text(yaml.safe_dump(rules))
    code, out, err = netcfg("weights", solver)
    assert code == 0 and f"  {hint}" in out, err
    code, out, err = netcfg("weights", solver, "--set", "weights=resnet.pth")  # `weights: FILE`, as train reads it
    assert code == 0 and f"  {hint}" in out, err
    code, out, err = netcfg("train", solver, "--set", "weights=resnet.pth", "--out", tmp_path / "run")
    assert code == 0 and f"  {hint}" in out, err
    with_map = _solver(tmp_path, "resnet18.yaml")
    assert "hint:" not in netcfg("weights", with_map)[1]
