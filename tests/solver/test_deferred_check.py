"""The NaN/Inf check without a host sync per iteration (finite.DeferredCheck, CUDA's default),
run here on the CPU: it must train exactly as the per-iteration check does and stop
at the same iteration, with the same message and the same weights."""

from __future__ import annotations

import pytest
import torch

from netcfg.solver import Solver, TrainingDiverged
from netcfg.solver.spec import load_solver
from tests.reliability import write_tiny_solver


def solver(path, deferred: bool, out: str = "") -> Solver:
    s = Solver(load_solver(path), out=path.parent / (out or f"run-{deferred}"), log=lambda line: None,
               deferred_check=deferred)
    assert (s._deferred is not None) == deferred
    return s


def params(s: Solver) -> list[torch.Tensor]:
    return [p.detach().clone() for p in s.net.parameters()]


@pytest.mark.parametrize("opt", [{"type": "SGD", "momentum": 0.9}, {"type": "Adam", "base_lr": 0.01}])
def test_trains_bit_for_bit_as_the_per_iteration_check(tmp_path, opt):
    path = write_tiny_solver(tmp_path, max_iter=12, display=5, snapshot=4, **opt)
    a = solver(path, False)
    a.solve()
    b = solver(path, True)  # after a's run: a solver seeds the global RNG when made
    b.solve()
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    assert [float(v) for v in a.losses] == [float(v) for v in b.losses]
    # the deferred run's snapshot resumes exactly, in either mode
    c = solver(path, False, out="resumed")
    c.restore(b.run.path / "tiny_iter_8.solverstate")
    c.solve()
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(c)))


def poison(s: Solver, at: int):
    """ip1's weight gradient turns NaN at iteration ``at`` (and in any replay of it); the loss stays finite."""
    return s.net.ip1.weight.register_hook(lambda g: g * float("nan") if s.iter == at else g)


def test_a_bad_gradient_stops_at_its_iteration_with_the_weights_from_before_it(tmp_path):
    path = write_tiny_solver(tmp_path, max_iter=12, display=0, snapshot=3)
    runs = {}
    for deferred in (False, True):
        s = solver(path, deferred)
        hook = poison(s, 5)
        with pytest.raises(TrainingDiverged) as e:
            s.solve()
        runs[deferred] = (s, str(e.value))
    (a, msg_a), (b, msg_b) = runs[False], runs[True]
    assert "a gradient is NaN or infinite" in msg_a and "at iteration 5; first made by the backward pass of layer 'ip1'" in msg_a
    assert msg_b == msg_a.replace("run-False", "run-True")  # same iteration, layer and last good snapshot
    assert "last good snapshot: " in msg_b and msg_b.endswith("tiny_iter_3.solverstate. " + msg_b.split(". ")[-1])
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))  # iterations 5 and 6 never updated
    # the deferred run noticed at its iteration-6 snapshot, and wrote none
    assert sorted(p.name for p in b.run.path.glob("*.safetensors")) == ["tiny_iter_3.safetensors"]
    # the same Solver, cured and restored from its last good snapshot, trains on as a fresh run would
    hook.remove()
    b.restore(b.run.path / "tiny_iter_3.solverstate")
    b.solve()
    straight = solver(path, False, out="straight")
    straight.solve()
    assert all(torch.equal(x, y) for x, y in zip(params(b), params(straight)))


def test_the_progress_bar_gets_the_loss_without_a_display(tmp_path):
    # on_step gets the loss as of the last read of the flag: every 100 iterations at the most
    path = write_tiny_solver(tmp_path, max_iter=120, display=0, snapshot=0)
    seen = []
    s = Solver(load_solver(path), out=tmp_path / "run", log=lambda line: None, deferred_check=True,
               on_step=lambda solver, loss: seen.append(loss))
    s.solve()
    assert all(v != v for v in seen[:99]) and all(0 < v < 3 for v in seen[100:])  # NaN until the first read


def test_a_bad_loss_stops_at_the_same_iteration_as_the_per_iteration_check(tmp_path):
    path = write_tiny_solver(tmp_path, max_iter=40, display=0, snapshot=0, base_lr=1e30)  # NaN at iteration 1
    messages, weights = [], []
    for deferred in (False, True):
        s = solver(path, deferred)
        with pytest.raises(TrainingDiverged) as e:
            s.solve()
        messages.append(str(e.value).replace(f"run-{deferred}", "run"))
        weights.append(params(s))
    assert messages[0] == messages[1] and " at iteration " in messages[0]
    assert all(torch.equal(x, y) for x, y in zip(*weights))


@pytest.mark.parametrize("keys", [{"type": "RMSProp"}, {"type": "AdaGrad", "momentum": None}])
def test_needs_a_fused_optimizer(tmp_path, keys):
    # only fused kernels skip an update on the device: the others keep the per-iteration check
    s = Solver(load_solver(write_tiny_solver(tmp_path, **keys)), out=tmp_path / "run", log=lambda line: None,
               deferred_check=True)
    assert s._deferred is None


def test_a_bad_loss_found_at_a_test_names_the_layer_with_an_average_of_the_weights(tmp_path):
    # ema: the test puts the average in the net; a deferred check read there must replay the
    # bad iteration on the weights that diverged, not on the average (which gives a finite loss)
    data = {"train": {"source": "digits", "split": "train", "batch_size": 32, "scale": 0.00390625, "limit": 256},
            "test": {"source": "digits", "split": "test", "batch_size": 32, "scale": 0.00390625, "limit": 64}}
    path = write_tiny_solver(tmp_path, data=data, max_iter=40, display=0, snapshot=0, base_lr=1e22,
                             test_interval=2, test_initialization=False, ema={"decay": 0.999, "warmup": 0})
    messages = []
    for deferred in (False, True):
        s = solver(path, deferred)
        with pytest.raises(TrainingDiverged) as e:
            s.solve()
        messages.append(str(e.value).replace(f"run-{deferred}", "run"))
    assert "loss is nan at iteration 1; first non-finite output: layer 'ip2'" in messages[0]
    assert messages[1] == messages[0]
