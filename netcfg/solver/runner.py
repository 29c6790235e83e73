"""Solver: Caffe's training loop over a Net, with tests, display, snapshots and resume.

One iteration (Caffe's ``Solver::Step``): test when ``iter % test_interval == 0``
(and at 0 if ``test_initialization``), ``iter_size`` forward/backward passes
with the loss divided by ``iter_size``, gradient clipping, regularisation, an
update at ``learning_rate(iter)``, the smoothed loss displayed every
``display`` iterations, a snapshot every ``snapshot`` iterations.

Ctrl-C (Caffe's SIGINT action) or SIGTERM (a scheduler's stop) lets the running
iteration finish, snapshots and stops; a second one stops at once, rolling the
unfinished iteration's batches and random numbers back first (one that comes during
the optimizer's update, which no roll-back could undo, lets the iteration finish
instead). Either way the snapshot resumes bit for bit.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch

from netcfg.errors import ConfigError, ConfigErrors
from netcfg.solver import launch
from netcfg.solver.debug_info import watch
from netcfg.solver.display import RunLog, display, open_tensorboard, opening_lines
from netcfg.solver.ema import WeightAverage
from netcfg.solver.testing import loop_test, out_of_patience, run_test
from netcfg.solver.keep import Best, keep_periodic
from netcfg.solver.interrupt import Interrupted, StopAfterIteration, Terminated
from netcfg.solver.iteration import autocast, train_step
from netcfg.solver.finite import DeferredCheck, TrainingDiverged, diverged, diverged_elsewhere, settle
from netcfg.solver.lr_policy import spec_learning_rate
from netcfg.solver.memory import is_out_of_memory, out_of_memory_error
from netcfg.net.device import resolve_device
from netcfg.solver.rundir import RunDir
from netcfg.solver.resume import restore, training_state
from netcfg.solver.weights_file import copy_into_nets
from netcfg.solver.setup import build
from netcfg.solver.spec import SolverSpec, load_solver
from netcfg.solver.state import iteration_start, rewind

__all__ = ["Solver", "TrainingDiverged"]


class Solver:
    """Trains the net of a solver file; ``solve()`` runs to ``max_iter``."""

    def __init__(self, spec: SolverSpec, *, out: str | Path | None = None, log=print, run_dir: RunDir | None = None,
                 on_step=None, deferred_check: bool | None = None, resuming: bool = False):
        """``log(line)`` shows every message (the run directory's train.log gets them too, ``display.RunLog``);
        ``on_step(solver, loss)`` is called after
        each iteration (the CLI's progress bar). ``deferred_check``: check for NaN/Inf
        without a host sync per iteration (``finite.DeferredCheck``); default: on CUDA,
        where the optimizer is fused and neither torchrun nor fp16's scaler is in use.
        ``resuming``: ``restore`` follows, so ``weights:`` need not be read where the
        snapshot holds all they fill."""
        if not isinstance(spec, SolverSpec):
            raise TypeError(f"Solver() takes a SolverSpec, got {type(spec).__name__}"
                            + (": for a solver file use Solver.from_file(path)" if isinstance(spec, (str, Path)) else ""))
        self.spec = spec
        self.log = RunLog(log)
        self.on_step = on_step
        try:
            self.device = resolve_device(spec.device)
            self.dist = launch.setup(spec.device, self.device)  # torchrun: join the ranks' group
            self.device = self.dist.device if self.dist.active else self.device  # cuda:LOCAL_RANK
        except ConfigError as e:
            raise ConfigErrors([spec.locate(e)]) from None
        if not self.dist.is_main:  # torchrun: rank 0 prints and logs for every rank
            self.log, self.on_step = RunLog(lambda line: None), None
        self._shown_loss = float("nan")  # the last displayed loss: what on_step gets under a deferred check
        self._compiling = spec.compile
        self.iter = 0
        self._undo: dict | None = None  # set while an iteration runs (see _roll_back_iteration)
        self.losses: deque[float] = deque(maxlen=spec.average_loss)
        self._updating = False  # inside optimizer.step(): the weights may be half updated
        self._ctrl_c = StopAfterIteration()  # step()'s, while it runs: holds a second Ctrl-C during an update
        self._in_train_mode = False  # net.train() (and frozen BatchNorm in eval) done for this step()
        self.last_test: dict[str, float | list[float]] = {}
        self._seconds = 0.0  # training time of earlier sessions (resume)
        self.best = Best.of(spec)  # snapshot_best's value so far; a resume restores it
        self.stopped_early = False  # snapshot_best.patience ran out (solve() ends there)
        self.ema: WeightAverage | None = None  # made once the net's tensors are in place, below
        with self.dist.together():  # torchrun: a rank that fails here stops every rank, a common error printed once
            build(self, spec, deferred_check, resuming)  # nets, data, optimizer, weights (setup.py)
        self._ddp = self.dist.wrap(self.net)  # torchrun: gradients averaged over the ranks
        # after everything that moves the weights' tensors (device, layout, DDP): it holds them
        self.ema = WeightAverage(self.net, spec.ema.decay, spec.ema.warmup) if spec.ema else None
        if self._ddp is not None:
            self._forward = torch.compile(self._ddp, dynamic=False) if spec.compile else self._ddp
        # last: a run refused above (bad weights, data, memory) leaves no directory behind
        self.run = run_dir if run_dir is not None else self.dist.shared_run_dir(
            lambda: RunDir.create(spec, out), lambda path: RunDir.follow(path, spec))
        self.log.attach(self.run)
        self.tensorboard = open_tensorboard(self)  # metrics.jsonl records mirrored as TensorBoard scalars

    # ------------------------------------------------------------ construction

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = (), **kwargs) -> Solver:
        """Load a solver file (and its net), applying ``--set``-style overrides."""
        return cls(load_solver(path, overrides), **kwargs)

    # ------------------------------------------------------------ training

    def _autocast(self):
        return autocast(self.spec.precision, self.device)

    def lr(self, it: int | None = None) -> float:
        """The learning rate of the update at ``it`` (default: the next one)."""
        return spec_learning_rate(self.spec, self.iter if it is None else it)

    def _train_step(self) -> tuple[float, dict[str, float], int]:
        """One iteration (``iteration.train_step``); returns (loss, scalar outputs, images)."""
        return train_step(self)

    def _diverged(self, batch: dict, value: float, gradient: bool = False) -> None:
        raise diverged(self.net, self.run, self.iter, batch, value, gradient=gradient)

    def _diverged_elsewhere(self, ranks: list[int]) -> None:
        raise diverged_elsewhere(self.run, self.iter, ranks)

    def _settle(self) -> None:
        """Read a deferred NaN check's flag: stop at the iteration that went bad (``finite.settle``)."""
        settle(self)

    def step(self, n: int) -> None:
        """Run ``n`` iterations (Caffe's Solver::Step)."""
        self._check_open("step()")
        s = self.spec
        stop = self.iter + n
        t0 = time.perf_counter()
        images = 0
        last_display, paused = (t0, 0), 0.0  # paused: seconds of tests and snapshots since the last display
        self._in_train_mode = False  # the caller may have put the net in eval mode
        with StopAfterIteration() as ctrl_c:
            self._ctrl_c = ctrl_c
            while self.iter < stop:
                if s.test_interval and self.iter % s.test_interval == 0 and (self.iter > 0 or s.test_initialization):
                    # a Ctrl-C or SIGTERM ends a test at once (a scheduler's grace period may be shorter than
                    # the test); the snapshot is of this iteration's start, so the resumed run tests again.
                    # Not under torchrun, where every rank must test every batch (the sums are all-reduced)
                    self._undo = self._iteration_start()
                    t_test = time.perf_counter()
                    loop_test(self, None if self.dist.active else lambda: ctrl_c.requested)
                    paused += time.perf_counter() - t_test
                    if out_of_patience(self):
                        break
                # what a Ctrl-C inside the step rolls back, so the snapshot resumes exactly
                self._undo = self._iteration_start()
                if self._deferred is not None:
                    self._deferred.recent[self.iter] = self._undo
                watched = s.debug_info and s.display and self.iter % s.display == 0 and self.dist.is_main
                compiling = self._compiling and not watched  # a watched iteration runs eagerly
                if compiling:  # torch.compile compiles on the first call: its time is reported apart
                    t_compile = time.perf_counter()
                if watched:
                    with watch(self, self.log):  # Caffe's per-layer lines for the iteration displayed
                        loss, outs, n_img = self._train_step()
                else:
                    loss, outs, n_img = self._train_step()
                if compiling:
                    self._compiling = False
                    self.log(f"torch.compile: the first iteration took {time.perf_counter() - t_compile:.1f} s "
                             "(compiling; later runs reuse the inductor cache)")
                self.iter += 1
                self._undo = None
                images += n_img
                self.losses.append(loss)
                ctrl_c.release()  # the update is counted: a second Ctrl-C stops at once again
                if self._deferred is not None and (self.iter - self._deferred.start >= DeferredCheck.EVERY or (
                        s.display and (self.iter - 1) % s.display == 0)):
                    self._settle()
                if s.display and (self.iter - 1) % s.display == 0:
                    now = time.perf_counter()  # training images/s: the tests and snapshots in between left out
                    rate = (images - last_display[1]) / max(now - last_display[0] - paused, 1e-9)
                    last_display, paused = (now, images), 0.0
                    display(self, self.iter - 1, outs, rate, self._seconds + now - t0)
                if self.on_step is not None:
                    self.on_step(self, loss if self._deferred is None else self._shown_loss)
                if s.snapshot and self.iter % s.snapshot == 0:
                    self._seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self.snapshot()
                    paused += time.perf_counter() - t0
                if self.dist.any(ctrl_c.requested):  # torchrun: all ranks stop after the same iteration
                    self.log(f"{ctrl_c.by or 'Ctrl-C on another rank'}: stopping after iteration {self.iter - 1}")
                    raise KeyboardInterrupt
        self._settle()
        self._seconds += time.perf_counter() - t0

    def _iteration_start(self) -> dict:
        return iteration_start(self.train_data, self.device)

    def _roll_back_iteration(self) -> None:
        """Undo what an interrupted iteration drew: its batches and its random numbers.
        (The weights change only in ``optimizer.step()``, at the iteration's very end.)"""
        undo, self._undo = self._undo, None
        if undo is not None:
            rewind(undo, self.train_data, self.device)

    def solve(self) -> dict[str, float]:
        """Train to ``max_iter``; snapshot at the end; return the last test results."""
        self._check_open("solve()")
        s = self.spec
        for line in opening_lines(self):
            self.log(line)
        try:
            self.step(s.max_iter - self.iter)
            if s.snapshot_after_train and (not s.snapshot or self.iter % s.snapshot):
                self.snapshot()
            if s.display and self.iter % s.display == 0 and self.losses:
                self.log(f"Iteration {self.iter}, loss = {float(sum(self.losses) / len(self.losses)):.4f}")
            if self.stopped_early:  # the test at this iteration was the last
                self._record({"event": "early_stop", "iter": self.iter, "metric": self.best.metric,
                              "best": self.best.value, "best_iter": self.best.iter})
            elif s.test_interval and self.iter % s.test_interval == 0 and self.test_net is not None:
                loop_test(self)
        except KeyboardInterrupt as e:
            self._roll_back_iteration()
            by = self._ctrl_c.by or ("SIGTERM" if isinstance(e, Terminated) else "Ctrl-C")
            raise Interrupted.after(self.iter, self.snapshot(), self.run.path / "config.yaml", by,
                                    launch.launcher()) from None
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            raise out_of_memory_error(self, e) from None
        finally:
            self._undo = None
        self.log("Optimization Done.")
        return self.last_test

    # ------------------------------------------------------------ testing

    def test(self, iterations: int | None = None, *, iteration_known: bool = True,
             stopped: Callable[[], bool] | None = None) -> dict[str, float | list[float]]:
        """Average every output of the TEST net that is a mean over the batch over the test set (or N batches)
        (``testing.run_test``), with the net's own weights: the tests of ``solve()`` and the
        snapshots use the weight average when there is one (``ema``), which ``netcfg test``
        reads back from a snapshot."""
        self._check_open("test()")  # its record goes to metrics.jsonl
        return run_test(self, iterations, iteration_known=iteration_known, stopped=stopped)

    def _averaged(self):
        """The weight average (``ema``) in the net for a test or a snapshot, or nothing to do."""
        return self.ema.in_net() if self.ema is not None else contextlib.nullcontext()

    def _record(self, rec: dict) -> None:
        """One metrics.jsonl record, mirrored to TensorBoard when it is on."""
        self.run.metric(rec)
        if self.tensorboard is not None:
            self.tensorboard.write(rec)

    # ------------------------------------------------------------ snapshots

    def state(self) -> dict:
        """Everything a resume needs besides the weights (``resume.training_state``)."""
        return training_state(self)

    def snapshot(self) -> Path:
        """Write <prefix>_iter_<N>.safetensors and .solverstate into the run directory."""
        self._check_open("snapshot()")
        self._settle()  # never a snapshot of weights a deferred NaN check has frozen
        return keep_periodic(self)

    def restore(self, path: str | Path, *, force: bool = False) -> None:
        """Continue from a .solverstate (and the weights file next to it) exactly.

        Refuses when the solver or net differ from the snapshot's, naming what
        differs, unless ``force`` (``max_iter`` may always grow)."""
        self._check_open("restore()")
        with self.dist.together():  # torchrun: every rank reads the snapshot; a refusal printed once
            restore(self, Path(path), force=force)

    def close(self) -> None:
        """Let another process train into the run directory (``netcfg train --resume`` from a
        shell) and close the TensorBoard writer; ``with Solver.from_file(...) as solver:`` calls
        it on the way out. Until then, or until the Solver is garbage-collected, this process
        holds the directory's lock, as a ``netcfg train`` does while it runs. A closed Solver, like a
        closed file, refuses what would write there (step, solve, test, snapshot, restore)."""
        self.run.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def _check_open(self, what: str) -> None:
        if self.run.closed:
            raise ConfigError(f"{what} on a closed Solver: close() (or the end of its `with` block) let go of this "
                              "run directory, which another run may now write in", file=str(self.run.path),
                              hint=f"call {what} before close(); to train on, resume the run: "
                                   f"netcfg train {self.run.path} --resume {self.run.path}")

    def __enter__(self) -> Solver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def load_weights(self, path: str | Path) -> None:
        """Initialise from a weights file by layer name, printing what matched."""
        copy_into_nets(self.net, self.test_net, path, self.log)
        if self.ema is not None:  # loaded after construction (from Python): the average starts here
            self.ema.resume(self.net, None)
