"""Solver files (SolverSpec), the training loop (Solver), lr policies, optimizers, snapshots."""

from netcfg.solver.runner import Interrupted, Solver, TrainingDiverged
from netcfg.solver.spec import SolverSpec, load_solver

__all__ = ["Interrupted", "Solver", "SolverSpec", "TrainingDiverged", "load_solver"]
