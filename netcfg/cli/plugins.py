"""``--plugin MODULE``: import the modules a user names on the command line, and nothing else.

This and a net file's ``plugins:`` list are the only ways netcfg imports code it
does not ship (besides installed packages' ``netcfg.layers`` entry points, which
are loaded when a net names a layer type they provide). A plugin registers layer
types or data sources when imported; see docs/security.md.
"""

from __future__ import annotations

import importlib
import re

__all__ = ["import_plugins", "PLUGIN_HELP"]

PLUGIN_HELP = "import this Python module first (your layer types or data sources; repeatable)"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def import_plugins(modules: list[str]) -> None:
    """Import each module by its dotted name; a ConfigError (at ``--plugin NAME``) if one
    cannot be found. Errors raised by the module's own code are its author's bugs and
    keep their traceback."""
    from netcfg.errors import ConfigError, ConfigErrors

    errors = []
    for name in modules:
        where = f"--plugin {name}"
        if not _MODULE.fullmatch(name):
            errors.append(ConfigError(f"'{name}' is not a Python module name", file=where,
                                      hint="a dotted name such as mypkg.layers, not a file path"))
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            errors.append(ConfigError(f"cannot import plugin module '{name}': {e}", file=where,
                                      hint="is it installed, or on PYTHONPATH?"))
    if errors:
        raise ConfigErrors(errors)
