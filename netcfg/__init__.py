"""netcfg: Caffe-style, config-driven neural-net training on PyTorch.

The public API, imported lazily so that ``import netcfg`` (and ``netcfg --help``)
never loads torch:

Nets
    ``load_net(path, overrides=())``      read and validate a net file -> ``NetSpec``
    ``build_net(net, phase="TRAIN")``     a net file or NetSpec -> ``Net`` (a ``torch.nn.Module``)
    ``load_net_with_weights(weights)``    a ``.safetensors`` written by netcfg -> ready ``Net``
Training
    ``Solver.from_file(path, overrides=())``, ``load_solver(path)`` -> ``SolverSpec``
Deployment
    ``export(net, weights, format, out)`` safetensors, pt, torchscript, exported, onnx
Custom layers
    ``register``, ``LayerSpec``, ``Blob``, ``registry()``
Errors
    ``NetcfgError`` (every error caused by input), ``ConfigError`` (one located problem),
    ``ConfigErrors`` (several), ``ShapeError`` (raised by a layer's ``infer``),
    ``FieldError`` (raised by a cross-field rule)

Example::

    import netcfg, torch
    net = netcfg.build_net("configs/lenet.yaml", phase="TEST")
    out = net(data=torch.randn(8, 1, 28, 28), label=torch.zeros(8, dtype=torch.long))
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
    "load_net_with_weights": "netcfg.exporting",
    "Solver": "netcfg.solver",
    "SolverSpec": "netcfg.solver",
    "load_solver": "netcfg.solver",
    "export": "netcfg.exporting",
    "ExportResult": "netcfg.exporting",
    "register": "netcfg.layers",
    "registry": "netcfg.layers",
    "LayerSpec": "netcfg.layers",
    "Blob": "netcfg.layers",
    "NetcfgError": "netcfg.errors",
    "ConfigError": "netcfg.errors",
    "ConfigErrors": "netcfg.errors",
    "ShapeError": "netcfg.errors",
    "FieldError": "netcfg.errors",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'netcfg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
