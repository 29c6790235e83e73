"""The ``device`` key: auto, cpu, cuda or cuda:N, checked against what this machine has."""

from __future__ import annotations

import torch

from netcfg.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device is cuda but no CUDA device is available", ("device",), hint="use device: auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name}: only {torch.cuda.device_count()} CUDA device(s)", ("device",))
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device is mps but this machine or PyTorch build has no MPS (Apple GPU) device", ("device",),
                          hint="use device: auto or cpu")
    return dev
