"""The device a tool runs on: its --device option, else its solver's ``device``, else auto."""

from __future__ import annotations

import re

from netcfg.errors import ConfigError, ConfigErrors
from netcfg.solver.spec import SolverSpec

__all__ = ["pick_device"]


def pick_device(option: str | None, solver: SolverSpec | None):
    """The torch device of a ``--device`` option, else of the solver's ``device``, else auto;
    errors blame the option or the solver's line."""
    from netcfg.net.device import resolve_device

    if option is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", option):
        raise ConfigError(f"unknown device '{option}'", file="--device", hint="use auto, cpu, cuda, cuda:N or mps")
    try:
        return resolve_device(option or (solver.device if solver is not None else "auto"))
    except ConfigError as e:
        if option is None and solver is not None:
            raise ConfigErrors([solver.locate(e)]) from None
        raise ConfigError(e.message, file="--device", hint=e.hint) from None
