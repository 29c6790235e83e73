"""``netcfg plot``: curves of real runs rendered to an image; resumed runs, bad input, no matplotlib."""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest

from netcfg.solver import Solver
from netcfg.tools.plot import read_run, smooth
from tests.cli import run_cli
from tests.solver.test_runner import write_solver
from tests.tools import assert_picture


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short runs of the tiny MLP on digits, with tests, at two learning rates."""
    tmp = tmp_path_factory.mktemp("runs")
    out = []
    for name, lr in (("fast", 0.1), ("slow", 0.01)):
        path = write_solver(tmp / name, name=name, base_lr=lr, max_iter=40, display=2, test_interval=10,
                            lr_policy="step", gamma=0.5, stepsize=10)
        Solver.from_file(path, out=tmp / "runs" / name, log=lambda line: None).solve()
        out.append(tmp / "runs" / name)
    return out


@pytest.mark.parametrize("x", ["iter", "seconds", "epoch"])
def test_two_runs_make_a_1200_by_800_picture(runs, tmp_path, x):
    out = tmp_path / "curves.png"
    result = run_cli("plot", *map(str, runs), "-o", str(out), "--x", x)
    assert result.exit_code == 0, result.stderr
    assert_picture(out, (1200, 800))


def test_svg_holds_the_legend_and_panel_titles(runs, tmp_path):
    out = tmp_path / "curves.svg"
    assert run_cli("plot", *map(str, runs), "-o", str(out)).exit_code == 0
    svg = out.read_text()
    for text in ("fast", "slow", "test accuracy", "learning rate", "train (smoothed 0.6)"):
        assert text in svg, text


def test_runs_are_read_as_train_and_test_curves(runs):
    run = read_run(runs[0])
    assert [r["iter"] for r in run.train] == list(range(0, 40, 2))
    assert [r["iter"] for r in run.test] == [0, 10, 20, 30, 40]
    assert run.test_metrics() == ["accuracy"]
    assert run.train[-1]["lr"] == pytest.approx(0.1 * 0.5 ** 3)
    seconds = run.x(run.test, "seconds")
    assert seconds == sorted(seconds) and seconds[-1] > 0  # test times placed on the training clock


def test_a_resume_that_repeats_iterations_keeps_the_later_records(tmp_path):
    lines = [{"event": "train", "iter": i, "loss": 1.0, "lr": 0.1, "seconds": i} for i in (0, 10, 20, 30)]
    lines += [{"event": "train", "iter": i, "loss": 0.5, "lr": 0.1, "seconds": i} for i in (20, 30, 40)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"event": "tra')
    run = read_run(tmp_path)  # the partial last line (a run still writing) is skipped
    assert [(r["iter"], r["loss"]) for r in run.train] == [(0, 1.0), (10, 1.0), (20, 0.5), (30, 0.5), (40, 0.5)]


def test_a_resume_from_an_earlier_snapshot_drops_the_abandoned_records_it_does_not_repeat(tmp_path):
    """Tested at 30 and 40, resumed from 20 with test_interval 35: the new run tests at 35 only,
    and the old test at 30, of weights the resume threw away, stayed on the curve."""
    path = write_solver(tmp_path, max_iter=40, display=2, test_interval=10, snapshot=20)
    run_dir = tmp_path / "run"
    assert run_cli("train", str(path), "--out", str(run_dir)).exit_code == 0
    assert [r["iter"] for r in read_run(run_dir).test] == [0, 10, 20, 30, 40]
    result = run_cli("train", str(run_dir), "--resume", str(run_dir / "tiny_iter_20.solverstate"), "--force",
                     "--set", "test_interval=35", "--set", "display=7")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"event": "resume", "iter": 20, "state": "tiny_iter_20.solverstate"} in records
    run = read_run(run_dir)
    assert [r["iter"] for r in run.test] == [0, 10, 20, 35]
    assert [r["iter"] for r in run.train] == list(range(0, 21, 2)) + [21, 28, 35]


def test_smoothing_is_a_debiased_moving_average():
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])
    s = smooth([1.0, 0.0], 0.5)
    assert s == pytest.approx([1.0, 1 / 3])
    s = smooth([1.0, float("nan"), 0.0], 0.5)  # skipped, as TensorBoard does, not NaN from there on
    assert s[0] == 1.0 and s[1] != s[1] and s[2] == pytest.approx(1 / 3)


def test_bad_input_is_an_error(tmp_path, runs):
    result = run_cli("plot", str(tmp_path), "-o", str(tmp_path / "c.png"))
    assert result.exit_code == 2 and "has no metrics.jsonl" in result.stderr
    (tmp_path / "metrics.jsonl").write_text('{"event": "train", "iter": 0}\nnot json\n{"event": "train", "iter": 1}\n')
    result = run_cli("plot", str(tmp_path), "-o", str(tmp_path / "c.png"))
    assert result.exit_code == 2 and f"{tmp_path / 'metrics.jsonl'}:2:1: error: not a JSON line" in result.stderr
    (tmp_path / "metrics.jsonl").write_text('{"event": "train", "iter": 0, "loss": 1.0}\n'
                                            '{"event": "train", "iter": 5, "loss": "abc"}\n{"event": "train", "iter": 6}\n')
    result = run_cli("plot", str(tmp_path), "-o", str(tmp_path / "c.png"))
    assert result.exit_code == 2 and "metrics.jsonl:2:31: error: 'loss' is \"abc\", not a number" in result.stderr
    result = run_cli("plot", str(runs[0]), "--x", "iters")
    assert result.exit_code == 2 and "did you mean 'iter'" in result.stderr
    result = run_cli("plot", str(runs[0]), "-o", str(tmp_path / "c.jpg"))
    assert result.exit_code == 2 and ".png, .svg or .pdf" in result.stderr
    (tmp_path / "file").write_text("x")
    result = run_cli("plot", str(runs[0]), "-o", str(tmp_path / "file" / "c.png"))  # was a traceback
    assert result.exit_code == 2 and result.stderr.startswith("--output: error: cannot write"), result.stderr


def test_a_run_with_per_class_accuracy_plots(runs, tmp_path):
    """Accuracy's per-class top is a list in each test record (netcfg test --json's too): plot
    drew nothing, refusing the run as "'per_class' is [...], not a number"; now the list is
    read and left out of the curves. A list of other things is still refused."""
    lines = (runs[0] / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records:
        if r["event"] == "test":
            r["per_class"] = [0.5, 1.0, 0.75]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_cli("plot", str(tmp_path), "-o", str(tmp_path / "c.png"))
    assert result.exit_code == 0, result.stderr
    assert_picture(tmp_path / "c.png", (1200, 800))
    assert read_run(tmp_path).test_metrics() == read_run(runs[0]).test_metrics()
    (tmp_path / "metrics.jsonl").write_text('{"event": "test", "iter": 0, "per_class": [0.5, "x"]}\n')
    result = run_cli("plot", str(tmp_path), "-o", str(tmp_path / "c.png"))
    assert result.exit_code == 2 and "'per_class' is [0.5, \"x\"], not a number" in result.stderr


@pytest.mark.parametrize("name", ["tiny_iter_40.safetensors", "tiny_iter_40.solverstate", "config.yaml"])
def test_another_file_of_a_run_is_an_error_naming_the_run_directory(runs, tmp_path, name):
    # a snapshot was a UnicodeDecodeError traceback; config.yaml a bare "not a JSON line"
    result = run_cli("plot", str(runs[0] / name), "-o", str(tmp_path / "c.png"))
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(str(runs[0] / name) + ":")
    assert f"give the run directory ({runs[0]}) or its metrics.jsonl" in result.stderr
    assert not (tmp_path / "c.png").exists()


def test_without_matplotlib_the_error_says_how_to_install_it(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = run_cli("plot", str(runs[0]), "-o", str(tmp_path / "c.png"))
    assert result.exit_code == 2
    assert "pip install 'netcfg[plot]'" in result.stderr and not (tmp_path / "c.png").exists()


def test_runs_of_one_name_are_labelled_by_the_path_part_that_tells_them_apart(runs, tmp_path, monkeypatch):
    """`plot a/x/run b/x/run` labelled the curves with the paths as typed; `plot .` with ''; and
    `plot r1 r1` drew one run twice under the same label."""
    for parent in ("a", "b"):
        (tmp_path / parent / "x").mkdir(parents=True)
        shutil.copytree(runs[0], tmp_path / parent / "x" / "run")
    monkeypatch.chdir(tmp_path / "a" / "x" / "run")
    result = run_cli("plot", ".", str(tmp_path / "b/x/run"), str(runs[1]), "-o", str(tmp_path / "c.svg"))
    assert result.exit_code == 0, result.stderr
    svg = (tmp_path / "c.svg").read_text()
    texts = re.findall(r"<!-- (.+?) -->", svg)  # every text of the figure, in drawing order
    legend = texts.index("train (as logged)")
    assert texts[legend - 3:legend] == ["a/x/run", "b/x/run", "slow"]
    result = run_cli("plot", str(runs[0]), str(runs[0] / "metrics.jsonl"), "-o", str(tmp_path / "d.png"))
    assert result.exit_code == 2 and not (tmp_path / "d.png").exists()
    assert result.stderr == (f"{runs[0] / 'metrics.jsonl'}: error: {runs[0] / 'metrics.jsonl'} is the run {runs[0]} "
                             "again (give each run once)\n")
