"""Named rename maps for ``weights:`` rules: other libraries' state_dict names -> the zoo's.

A map is an ordered list of (regex, replacement) applied with ``re.sub`` to every
blob name of the file, before the rule's own ``rename``. A replacement may be a
function of the match, which is how indices shift: torchvision counts a stage's
blocks from 0 (``layer1.0.conv1``), the zoo's block templates from 1
(``layer1.block1.conv1``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["RENAME_MAPS", "RenameStep", "apply_map", "map_hint"]

RenameStep = tuple[re.Pattern, str | Callable[[re.Match], str]]


def _block_from_one(m: re.Match) -> str:
    return f"layer{m.group(1)}.block{int(m.group(2)) + 1}."


# torchvision.models.resnet{18,34,50,101,152} -> configs/resnet18.yaml, resnet50.yaml:
#   conv1, bn1, fc                          same names
#   layer2.0.conv1.weight                   layer2.block1.conv1.weight
#   layer2.0.downsample.0.weight            layer2.block1.downsample.conv.weight
#   layer2.0.downsample.1.running_mean      layer2.block1.downsample.bn.running_mean
# BatchNorm blobs (weight, bias, running_mean, running_var, num_batches_tracked) keep
# torch's names in netcfg, so they need no mapping.
TORCHVISION_RESNET: list[RenameStep] = [
    (re.compile(r"^layer(\d+)\.(\d+)\."), _block_from_one),
    (re.compile(r"\.downsample\.0\."), ".downsample.conv."),
    (re.compile(r"\.downsample\.1\."), ".downsample.bn."),
]

RENAME_MAPS: dict[str, list[RenameStep]] = {
    "torchvision_resnet": TORCHVISION_RESNET,
}


def apply_map(name: str, steps: list[RenameStep]) -> str:
    """``name`` after every step of a map, in order."""
    for pattern, replacement in steps:
        name = pattern.sub(replacement, name)
    return name


# names that give a map away: a file holding one of these, loaded without its map, fills
# conv1/bn1/fc only and leaves every block as initialised
_TELLS = {"torchvision_resnet": re.compile(r"^layer\d+\.\d+\.")}


def map_hint(unused: list[str]) -> str | None:
    """A hint naming the rename_map for file blobs the net lacks, when their names are that map's source's."""
    for name, tell in _TELLS.items():
        if any(tell.match(n) for n in unused):
            return (f"these are torchvision's ResNet names (layer1.0.conv1...): load them with rename_map: {name} "
                    f"(weights: [{{file: FILE, rename_map: {name}}}])")
    return None
