"""Devices checked against what this machine has: a solver's ``device`` key (auto, cpu, cuda,
cuda:N, mps) and the ``device=`` of the Python API (``build_net``, ``load_net_with_weights``)."""

from __future__ import annotations

import torch

from netcfg.errors import ConfigError

__all__ = ["device_argument", "resolve_device"]


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


def device_argument(device: str | torch.device) -> torch.device:
    """The device a Python call's ``device=`` names; a ConfigError naming ``device`` for one that
    PyTorch does not know (``"banana"``) or this machine lacks, not torch's RuntimeError or
    AssertionError from deep inside ``.to()``."""
    try:
        return resolve_device(str(device))
    except RuntimeError:  # torch.device("banana")
        raise ConfigError(f"device {str(device)!r} is not a device PyTorch knows", file="device",
                          hint="use cpu, cuda, cuda:N or mps") from None
    except ConfigError as e:
        raise ConfigError(e.message, file="device", hint=e.hint) from None
