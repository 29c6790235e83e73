"""What net a path means: a net or solver file, a run directory, or a ``.safetensors`` netcfg wrote.

One reader for every command that takes a net (check, expand, draw, time, export) and for
``load_net_with_weights``. They differ in one thing, which the caller says: a run directory
stands for its config.yaml (the solver it trained) or for its newest snapshot (the weights
it reached, as ``weights:`` and ``--weights`` read one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from netcfg.net.spec import NetSpec, net_from_source
from netcfg.overrides import apply_overrides
from netcfg.solver.checkpoint import CheckpointError
from netcfg.solver.rundir import run_config
from netcfg.solver.weights_file import STAGES_KEY, program_kind, stored_net
from netcfg.solver.spec import SolverSpec, solver_from_source
from netcfg.solver.weights_spec import resolve_file
from netcfg.source import Source, document_kind, load_yaml

__all__ = ["EXPORT_KEY", "NetFile", "read_net_file", "read_net_source", "weights_file"]

EXPORT_KEY = "netcfg.export"  # metadata: JSON {phase, stages, inputs, outputs, weights} of a deploy export
_STORED = (".safetensors", ".solverstate")  # files whose net is in a snapshot's metadata


@dataclass
class NetFile:
    """A net read from a user's path, and what that path says beyond the layers."""

    file: Path                     # the file read: the path, a run's config.yaml or snapshot, a state's weights
    source: Source                 # its YAML (a weights file's stored net); read_net_file applies --set to it
    stages: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per phase: a solver's, snapshot's, export's
    weights: Path | None = None    # the file itself, when the net came from a weights file
    outputs: tuple[str, ...] = ()  # a deploy export's outputs
    net: NetSpec | None = None     # the spec, once read_net_file built it
    solver: SolverSpec | None = None  # when the file was a solver

    def stages_of(self, phase: str) -> tuple[str, ...]:
        """The stages the file names for ``phase`` (TRAIN or TEST)."""
        return tuple(self.stages.get(str(phase).upper(), ()))


def weights_file(path: str | Path) -> Path:
    """``path``; for a run directory its newest snapshot's weights, as `weights:` and
    --weights read one (a directory without a snapshot is left for the loader to refuse);
    for a snapshot's ``.solverstate`` the weights beside it (a state without them is left
    for the loader to refuse, naming them)."""
    path = Path(path)
    if path.is_dir():
        return resolve_file(str(path), Path.cwd())
    if path.suffix == ".solverstate" and path.with_suffix(".safetensors").is_file():
        return path.with_suffix(".safetensors")
    return path


def read_net_source(path: str | Path, *, run_dir: Literal["config", "snapshot"],
                    no_net_hint: str = "give the net file") -> NetFile:
    """The file ``path`` means and its YAML, no spec built yet: a net or solver file as is; a
    run directory its config.yaml (``run_dir="config"``) or its newest snapshot's stored net
    (``"snapshot"``); a ``.safetensors`` (or the ``.solverstate`` beside one) its stored net,
    refused with ``no_net_hint`` when it holds none."""
    if run_dir not in ("config", "snapshot"):
        raise ValueError(f"run_dir must be 'config' or 'snapshot', not {run_dir!r}")
    path = Path(path)
    if run_dir == "config" and path.is_dir():
        path = run_config(path)  # its config.yaml; a directory without one is refused
    if not path.is_dir() and path.suffix not in _STORED:
        program = program_kind(path) if path.is_file() else None
        if program:  # netcfg export's output given back as the net: say so, not 'byte 0x.. is not UTF-8'
            raise CheckpointError(path, f"is {program}, not a net: give a net or solver file, a run "
                                        "directory, or a .safetensors snapshot")
        return NetFile(path, load_yaml(path))
    file = weights_file(path)
    src, meta = stored_net(file, hint=no_net_hint)
    stages = {k: tuple(v) for k, v in json.loads(meta.get(STAGES_KEY, "{}")).items()}  # a snapshot's solver's
    export = json.loads(meta.get(EXPORT_KEY, "{}"))  # a deploy export's; its net has no phase rules
    if "stages" in export:
        stages["TEST"] = tuple(export["stages"])
    return NetFile(file, src, stages, file, tuple(export.get("outputs", ())))


def read_net_file(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
                  run_dir: Literal["config", "snapshot"], no_net_hint: str = "give the net file") -> NetFile:
    """``read_net_source`` with ``overrides`` (``--set`` keys) applied and the net built; for a
    solver file (it names a ``net`` and has no ``layers``) the solver too, and its stages."""
    read = read_net_source(path, run_dir=run_dir, no_net_hint=no_net_hint)
    kind = document_kind(read.source.data)  # before --set: layers.x=... on a solver file is a wrong key of the solver
    if overrides:
        apply_overrides(read.source, overrides)
    if kind != "solver":
        return replace(read, net=net_from_source(read.source))
    solver = solver_from_source(read.source, read.file.resolve().parent)
    return replace(read, net=solver.net_spec, solver=solver,
                   stages={"TRAIN": tuple(solver.train_stages), "TEST": tuple(solver.test_stages)})
