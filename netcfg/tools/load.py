"""Read a file that is either a net or a solver, as the tools accept both.

A run directory stands for its config.yaml, and a ``.safetensors`` written by netcfg
for the net stored in its metadata (``netcfg.solver.rundir.run_config``), as
``netcfg export`` reads them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from netcfg.errors import ConfigError, ConfigErrors
from netcfg.net.spec import NetSpec, net_from_source
from netcfg.solver.rundir import run_config
from netcfg.solver.spec import SolverSpec, solver_from_source
from netcfg.overrides import apply_overrides
from netcfg.source import Source, document_kind, load_yaml

__all__ = ["NetFile", "load_net_or_solver", "net_file_source", "pick_device"]


@dataclass
class NetFile:
    """What a net-reading command was given: the net, the solver when it was a solver file,
    and the stages the file names per phase (a solver's, or a snapshot's)."""

    net: NetSpec
    solver: SolverSpec | None = None
    stages: dict[str, list[str]] = field(default_factory=dict)

    def stages_of(self, phase: str) -> list[str]:
        return list(self.stages.get(phase.upper(), []))


def net_file_source(path: str | Path) -> tuple[Path, Source, dict]:
    """(the file read, its YAML Source, stages by phase) for a net or solver file, a run
    directory (its config.yaml) or a netcfg ``.safetensors`` (its stored net)."""
    file = run_config(path, weights_ok=True)
    if file.suffix == ".solverstate":
        file = file.with_suffix(".safetensors")  # its weights, beside it, hold the net
    if file.suffix != ".safetensors":
        return file, load_yaml(file), {}
    from netcfg.solver.snapshot import STAGES_KEY, stored_net

    src, meta = stored_net(file, hint="give the net file")
    return file, src, json.loads(meta.get(STAGES_KEY, "{}"))  # a training snapshot's: {"TRAIN": [...], "TEST": [...]}


def load_net_or_solver(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> NetFile:
    """The net of ``path``, and the solver too when ``path`` is a solver file (it names a
    ``net`` and has no ``layers``); see ``net_file_source`` for what ``path`` may be."""
    file, src, stages = net_file_source(path)
    kind = document_kind(src.data)  # before --set: layers.x=... on a solver file is a wrong key of the solver
    if overrides:
        apply_overrides(src, overrides)
    if kind == "solver":
        solver = solver_from_source(src, file.resolve().parent)
        return NetFile(solver.net_spec, solver, {"TRAIN": solver.train_stages, "TEST": solver.test_stages})
    return NetFile(net_from_source(src), None, stages)


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
