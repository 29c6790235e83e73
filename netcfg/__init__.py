"""netcfg: Caffe-style, config-driven neural-net training on PyTorch.

The public API is imported lazily so that ``netcfg --help`` never loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "build_net": "netcfg.net",
    "load_net": "netcfg.net",
    "Net": "netcfg.net",
    "NetSpec": "netcfg.net",
    "Solver": "netcfg.solver",
    "NetcfgError": "netcfg.errors",
    "ConfigError": "netcfg.errors",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'netcfg' has no attribute {name!r}")
