"""The built-in layer types: every module in this package registers its own.

Importing this package imports each family file (conv, pool, ...), whose
``@register`` decorators fill the registry; adding a layer is adding a file.
"""

import importlib
import pkgutil

from netcfg.layers.base import Blob, LayerSpec
from netcfg.layers._registry import AnyLayer, lookup, register, registry

__all__ = ["AnyLayer", "Blob", "LayerSpec", "lookup", "register", "registry"]

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "fillers") and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
