"""Solver files (SolverSpec), the training loop (Solver), lr policies, optimizers, snapshots."""

from netcfg.solver.interrupt import Interrupted
from netcfg.solver.runner import Solver, TrainingDiverged
from netcfg.solver.spec import SolverSpec, load_solver

__all__ = ["Interrupted", "Solver", "SolverSpec", "TrainingDiverged", "load_solver"]
