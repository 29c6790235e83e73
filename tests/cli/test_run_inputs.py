"""Every command that reads a net or solver file also takes a run directory (its config.yaml),
and the net-reading ones a .safetensors written by netcfg (its stored net), as export does."""

from __future__ import annotations

import json

import pytest

from tests.cli import netcfg
from tests.solver.test_runner import MLP, solve, write_solver

# a layer only in the "wide" stage: the stored stages must reach the net-reading commands
STAGED = MLP.replace("  - {name: ip2,", "  - {name: extra, type: ReLU, top: ip1, include: {stage: wide}}\n  - {name: ip2,")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run directory with two snapshots, trained in the "wide" stage."""
    folder = tmp_path_factory.mktemp("run_inputs")
    solver = write_solver(folder / "src", STAGED, max_iter=4, snapshot=2, train_stages=["wide"],
                          test_stages=["wide"])
    solve(solver, folder / "run")
    return folder / "run"


def layer_names(out: str) -> list[str]:
    return [layer["name"] for layer in json.loads(out)["layers"]]


@pytest.mark.parametrize("which", ["run", "config", "weights", "state"])
def test_check_reads_a_run_directory_and_a_snapshot(run, which):
    path = {"run": run, "config": run / "config.yaml", "weights": run / "tiny_iter_4.safetensors",
            "state": run / "tiny_iter_2.solverstate"}[which]
    code, out, err = netcfg("check", path, "--json")
    assert code == 0, err
    assert layer_names(out) == ["ip1", "relu1", "extra", "ip2", "loss"]  # the run's stage, from the file


def test_draw_time_and_expand_read_a_run_directory(run):
    code, out, err = netcfg("draw", run)
    assert code == 0, err
    assert "extra" in out and out.startswith("digraph")
    code, out, err = netcfg("draw", run / "tiny_iter_4.safetensors", "--phase", "TEST")
    assert code == 0, err
    assert "accuracy" in out and "extra" in out
    code, out, err = netcfg("time", run, "-n", "1", "--warmup", "0", "-b", "2", "--device", "cpu", "--json")
    assert code == 0, err
    assert [x["name"] for x in json.loads(out)["layers"]] == ["ip1", "relu1", "extra", "ip2", "loss"]
    code, out, err = netcfg("expand", run)
    assert code == 0, err
    assert out.startswith(f"# Expanded from {run} by")
    assert "name: TinyMLP" in out and "{name: extra, type: ReLU" in out


def test_expand_of_a_run_writes_a_net_file_that_checks(run, tmp_path):
    code, _, err = netcfg("expand", run / "tiny_iter_4.safetensors", "-o", tmp_path / "net.yaml")
    assert code == 0, err
    code, out, err = netcfg("check", tmp_path / "net.yaml", "--stage", "wide", "--json")
    assert code == 0, err
    assert "extra" in layer_names(out)


def test_test_takes_a_run_directory_and_its_newest_snapshot(run):
    code, out, err = netcfg("test", run, "--json")
    assert code == 0, err
    assert set(json.loads(out)) == {"loss", "accuracy"}
    code, out, err = netcfg("test", run / "tiny_iter_2.safetensors")
    assert code == 0, err
    assert f"weights from {run / 'tiny_iter_2.safetensors'}" in out


def test_test_of_a_run_with_a_warm_up_gives_its_last_test(tmp_path):
    # netcfg test loads the solver with max_iter=0, which the warm-up check refused
    # ("warmup_iter 2 is not below max_iter 0"): no run with warmup_iter could be tested
    solver = write_solver(tmp_path / "src", MLP, max_iter=4, warmup_iter=2, test_interval=4)
    solve(solver, tmp_path / "run")
    code, out, err = netcfg("test", tmp_path / "run", "--json")
    assert code == 0, err
    last = [r for r in map(json.loads, (tmp_path / "run/metrics.jsonl").read_text().splitlines())
            if r["event"] == "test"][-1]
    assert json.loads(out) == {k: last[k] for k in ("loss", "accuracy")}


def test_test_without_weights_says_what_to_give(run, tmp_path):
    code, _, err = netcfg("test", run / "config.yaml")
    assert code == 2
    assert err.startswith("--weights: error: missing option --weights")
    assert "give a run directory as SOLVER" in err


def test_weights_and_data_read_a_run_directory(run):
    code, _, err = netcfg("weights", run)
    assert code == 2
    assert err.startswith(f"{run / 'config.yaml'}:") and "the solver has no weights: to check" in err
    code, out, err = netcfg("data", "stats", run)
    assert code == 0, err
    assert "mean_value" in out


def test_train_a_run_directory_is_the_same_training_as_a_new_run(run, tmp_path):
    code, _, err = netcfg("train", run, "--set", "max_iter=1", "--out", tmp_path / "again")
    assert code == 0, err
    assert (tmp_path / "again" / "tiny_iter_1.safetensors").is_file()


@pytest.mark.parametrize("command", [["check"], ["draw"], ["time"], ["expand"], ["train"], ["test"],
                                     ["weights"], ["data", "stats"]])
def test_a_directory_that_is_not_a_run_is_one_located_error(tmp_path, command):
    code, out, err = netcfg(*command, tmp_path)
    assert code == 2
    assert err.strip() == (f"{tmp_path}: error: is a directory without a config.yaml, so not a run directory "
                           "(give a net or solver file, or a run directory that netcfg train wrote)")


def test_a_weights_file_is_no_solver(run):
    code, _, err = netcfg("train", run / "tiny_iter_4.safetensors")
    assert code == 2
    assert err.strip() == (f"{run / 'tiny_iter_4.safetensors'}: error: is a weights file: it holds the net but "
                           f"not the solver (data, lr, ...) (give its run directory, {run})")


@pytest.mark.parametrize("command", ["check", "expand", "train"])
def test_an_error_in_a_set_of_the_inline_net_names_the_set(run, tmp_path, command):
    # a run's config.yaml holds its net inline: the bad value is the --set's, not the file's line
    bad = "net.layers.ip1.num_output=0"
    code, _, err = netcfg(command, run, "--set", bad, *(["--out", tmp_path / "r"] if command == "train" else []))
    assert code == 2
    assert err.startswith(f"--set {bad}: error: net.layers[0].num_output: input should be greater than or equal to 1"), err


def test_a_snapshot_given_for_its_net_is_not_read_whole(run, monkeypatch):
    # check, draw, time, expand and export need the stored net: a large model's tensors stay on disk
    import safetensors

    read: list[str] = []
    real = safetensors.safe_open

    class Spy:
        def __init__(self, *args, **kwargs):
            self.file = real(*args, **kwargs)

        def __enter__(self):
            self.f = self.file.__enter__()
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def get_tensor(self, name):
            read.append(name)
            return self.f.get_tensor(name)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    for command in (["check"], ["draw"], ["expand"]):
        code, _, err = netcfg(*command, run / "tiny_iter_4.safetensors")
        assert code == 0, err
    assert read == []


@pytest.mark.parametrize("command", ["check", "draw", "time", "expand", "export"])
def test_a_solver_state_without_its_weights_names_them(run, tmp_path, command):
    # every net-reading command reads the same way; check, draw, time and expand said only
    # "<state>.safetensors: weights file not found", blaming a file the user never gave
    state = tmp_path / "tiny_iter_2.solverstate"
    state.write_bytes((run / "tiny_iter_2.solverstate").read_bytes())
    code, _, err = netcfg(command, state)
    assert code == 2
    assert err.startswith(f"{state}: error: is a solver state (what --resume takes), not weights"), err
    assert f"its weights are {tmp_path / 'tiny_iter_2.safetensors'}" in err


def test_a_run_directory_means_its_config_or_its_newest_snapshot(run):
    from netcfg.solver.netfile import read_net_file

    config = read_net_file(run, run_dir="config")  # what check, draw, time and expand read
    assert (config.file, config.weights, config.solver.max_iter) == (run / "config.yaml", None, 4)
    snapshot = read_net_file(run, run_dir="snapshot")  # what export and load_net_with_weights read
    assert (snapshot.file, snapshot.weights, snapshot.solver) == ((run / "tiny_iter_4.safetensors").resolve(),) * 2 + (None,)
    assert [layer.name for layer in config.net.layers] == [layer.name for layer in snapshot.net.layers]
    for read in (config, snapshot):  # the stages it trained in, either way
        assert (read.stages_of("train"), read.stages_of("TEST")) == (("wide",), ("wide",))


@pytest.mark.parametrize("command", [["train"], ["weights"], ["landscape", "-w", "RUN"]])
def test_a_solver_state_is_no_solver_and_is_not_called_weights(run, command):
    """`netcfg weights RUN/x.solverstate` said 'is a weights file'; it is the optimizer's state."""
    state = run / "tiny_iter_4.solverstate"
    code, _, err = netcfg(command[0], state, *(run if a == "RUN" else a for a in command[1:]))
    assert code == 2
    assert err.strip() == (f"{state}: error: is a solver state (what --resume takes): the optimizer's state of a "
                           f"snapshot, not the solver (data, lr, ...) (give its run directory, {run}; its weights "
                           f"are {run / 'tiny_iter_4.safetensors'})")


def test_test_and_train_take_a_solver_state_as_export_does_for_the_weights_beside_it(run, tmp_path):
    # `export -w X.solverstate` used X.safetensors; `test -w` and `train -w` refused it ("is a solver state")
    state, weights = run / "tiny_iter_2.solverstate", run / "tiny_iter_2.safetensors"
    code, out, err = netcfg("test", run / "config.yaml", "-w", state, "--device", "cpu")
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"weights from {weights}: ")  # which file it used
    assert "Iteration 2, Testing net" in out
    code, out, err = netcfg("train", run / "config.yaml", "-w", state, "--out", tmp_path / "again",
                            "--set", "max_iter=0", "--device", "cpu")
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"weights from {weights}: ")
    assert f"weights: {weights}" in (tmp_path / "again" / "config.yaml").read_text()  # pinned to the file read
