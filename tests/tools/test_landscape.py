"""``netcfg landscape``: filter-normalised directions, the loss surface, and its pictures."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from netcfg.solver import Solver
from netcfg.solver.spec import load_solver
from netcfg.tools.landscape import evaluate, filter_normalized_direction, loss_surface, prepare
from tests.cli import run_cli
from tests.tools import RESNET, ROOT, assert_picture

DIGITS = ROOT / "solvers" / "digits.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """configs/digits_cnn.yaml trained briefly (80 iterations) with solvers/digits.yaml: its weights file."""
    out = tmp_path_factory.mktemp("digits") / "run"
    s = Solver.from_file(DIGITS, overrides=["max_iter=80", "test_interval=0", "display=0"], out=out)
    s.solve()
    return out / "digits_iter_80.safetensors"


def test_directions_are_filter_normalised_and_skip_biases_and_batchnorm(tmp_path):
    (tmp_path / "res.yaml").write_text(RESNET)
    from netcfg.net import build_net

    net = build_net(tmp_path / "res.yaml")
    d = filter_normalized_direction(net, torch.Generator().manual_seed(0))
    params = dict(net.named_parameters())
    assert set(d) == set(params)
    for name, p in params.items():
        if p.dim() <= 1:  # biases, BatchNorm scale and shift
            assert not d[name].any(), name
            continue
        for i in range(p.shape[0]):  # each filter (output channel / unit) has its weights' norm
            torch.testing.assert_close(d[name][i].norm(), p[i].detach().norm(), msg=f"{name} filter {i}")
    assert "stage2.block1.shortcut.proj.weight" in d and "stem.bn.weight" in d


def test_1d_curve_has_its_minimum_at_the_trained_weights(trained):
    spec = load_solver(DIGITS)
    net, batches = prepare(spec, trained, samples=300)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = loss_surface(net, batches, steps=5, span=1.0)
    assert s.alphas == [-1.0, -0.5, 0.0, 0.5, 1.0] and s.betas is None and s.samples == 300
    assert s.loss[2] == pytest.approx(s.center_loss)
    assert s.center_loss == min(s.loss) and s.loss[0] > 3 * s.center_loss and s.loss[4] > 3 * s.center_loss
    assert s.center_metrics["accuracy"] > 0.7 and s.metrics["accuracy"][2] == s.center_metrics["accuracy"]  # 10 classes: 0.1 untrained
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the weights are put back
    assert not net.training  # BatchNorm/Dropout in eval mode
    assert evaluate(net, batches)[0] == pytest.approx(s.center_loss)


def test_the_same_seed_gives_the_same_surface(trained):
    spec = load_solver(DIGITS)
    net, batches = prepare(spec, trained, samples=100)
    a = loss_surface(net, batches, steps=3, seed=7, two_d=True)
    b = loss_surface(net, batches, steps=3, seed=7, two_d=True)
    c = loss_surface(net, batches, steps=3, seed=8, two_d=True)
    assert a.loss == b.loss and a.loss != c.loss
    assert len(a.loss) == 3 and all(len(row) == 3 for row in a.loss)


def test_cli_1d_picture_and_json(trained, tmp_path):
    out = tmp_path / "surface.png"
    result = run_cli("landscape", str(DIGITS), "--weights", str(trained), "-o", str(out), "--steps", "5",
                     "--samples", "200", "--json")
    assert result.exit_code == 0, result.stderr
    assert_picture(out, (700, 450))
    data = json.loads(result.stdout)
    (s,) = data["surfaces"]
    assert s["name"] == "DigitsCNN" and len(s["loss"]) == 5 and s["samples"] == 200
    assert "DigitsCNN: loss" in result.stderr and "accuracy" in result.stderr
    assert "over the 5 points (span 1, 200 train samples)" in result.stderr  # was "over the 5 grid"


def test_cli_takes_a_run_directory_for_its_newest_snapshot(trained, tmp_path):
    """`landscape RUN -w RUN`, as `netcfg test RUN` reads it: the run's config and newest
    snapshot (was refused as "a directory without a snapshot")."""
    run = trained.parent
    result = run_cli("landscape", str(run), "-w", str(run), "-o", str(tmp_path / "s.png"), "--steps", "3",
                     "--samples", "50", "--json")
    assert result.exit_code == 0, result.stderr
    by_file = run_cli("landscape", str(run), "-w", str(trained), "-o", str(tmp_path / "t.png"), "--steps", "3",
                      "--samples", "50", "--json")
    assert json.loads(result.stdout)["surfaces"] == json.loads(by_file.stdout)["surfaces"]


def test_cli_2d_side_by_side(trained, tmp_path):
    out = tmp_path / "surface.png"
    result = run_cli("landscape", str(DIGITS), str(DIGITS), "--weights", str(trained), "--weights", str(trained),
                     "-o", str(out), "--2d", "--steps", "5", "--samples", "100")
    assert result.exit_code == 0, result.stderr
    assert_picture(out, (1100, 450))
    assert result.stdout.count("over the 5x5 grid") == 2
    assert "DigitsCNN (digits)" in result.stdout  # the same net twice: told apart by file


def test_cli_errors(trained, tmp_path):
    result = run_cli("landscape", str(DIGITS), "--weights", str(trained), "--weights", str(trained))
    assert result.exit_code == 2 and "1 solver(s) but 2 --weights" in result.stderr
    result = run_cli("landscape", str(DIGITS), "--weights", str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "s.png"))
    assert result.exit_code == 2 and "weights file not found" in result.stderr
    result = run_cli("landscape", str(DIGITS), "--weights", str(trained), "-o", str(tmp_path / "s.gif"))
    assert result.exit_code == 2 and ".png, .svg or .pdf" in result.stderr
    (tmp_path / "file").write_text("x")  # refused before the grid is evaluated, not a traceback after
    result = run_cli("landscape", str(DIGITS), "--weights", str(trained), "-o", str(tmp_path / "file" / "s.png"))
    assert result.exit_code == 2 and result.stderr.startswith("--output: error: cannot write"), result.stderr
    assert "DigitsCNN: loss" not in result.stdout + result.stderr  # refused before the curve was evaluated
    other = tmp_path / "other.safetensors"  # weights of another net: refused, not a surface around random weights
    save_file({"ip.weight": torch.zeros(2, 2)}, str(other))
    result = run_cli("landscape", str(DIGITS), "--weights", str(other), "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 2 and "its weights do not fit this net" in result.stderr, result.stderr
