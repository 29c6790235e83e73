"""Read a file that is either a net or a solver, as the tools accept both."""

from __future__ import annotations

import re
from pathlib import Path

from netcfg.errors import ConfigError, ConfigErrors
from netcfg.net.spec import NetSpec, net_from_source
from netcfg.solver.spec import SolverSpec, solver_from_source
from netcfg.overrides import apply_overrides
from netcfg.source import document_kind, load_yaml

__all__ = ["load_net_or_solver", "pick_device"]


def load_net_or_solver(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[NetSpec, SolverSpec | None]:
    """The net of ``path``, and the solver too when ``path`` is a solver file (it names a
    ``net`` and has no ``layers``)."""
    path = Path(path)
    src = load_yaml(path)
    if overrides:
        apply_overrides(src, overrides)
    if document_kind(src.data) == "solver":
        solver = solver_from_source(src, path.resolve().parent)
        return solver.net_spec, solver
    return net_from_source(src), None


def pick_device(option: str | None, solver: SolverSpec | None):
    """The torch device of a ``--device`` option, else of the solver's ``device``, else auto;
    errors blame the option or the solver's line."""
    from netcfg.solver.device import resolve_device

    if option is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", option):
        raise ConfigError(f"unknown device '{option}'", file="--device", hint="use auto, cpu, cuda, cuda:N or mps")
    try:
        return resolve_device(option or (solver.device if solver is not None else "auto"))
    except ConfigError as e:
        if option is None and solver is not None:
            raise ConfigErrors([solver.locate(e)]) from None
        raise ConfigError(e.message, file="--device", hint=e.hint) from None
