"""``--set net.KEY=...`` on a solver whose ``net:`` is a file, through every command that reads it."""

from __future__ import annotations

from safetensors.torch import load_file

from netcfg.solver.spec import load_solver
from tests.cli import netcfg
from tests.solver.test_runner import MLP, metrics, write_solver


def test_train_resume_test_and_export_all_see_a_net_key_set_on_the_command_line(tmp_path):
    solver, run = write_solver(tmp_path, MLP, max_iter=4, snapshot=2, test_interval=4, display=0), tmp_path / "run"
    wide = ("--set", "net.layers.ip1.num_output=24")
    code, out, err = netcfg("train", solver, *wide, "--out", run)
    assert code == 0, err
    assert load_file(run / "tiny_iter_4.safetensors")["ip1.weight"].shape == (24, 64)
    assert metrics(run, "test")[-1]["iter"] == 4
    # config.yaml records the net as trained: the run resumes and exports without the --set
    assert load_solver(run).net_spec.layers[0].num_output == 24
    code, out, err = netcfg("train", run, "--resume", run, "--set", "max_iter=6")
    assert code == 0, err
    assert "Resumed from" in out and (run / "tiny_iter_6.safetensors").is_file()
    code, out, err = netcfg("export", run, "-f", "pt", "-o", tmp_path / "net.pt")
    assert code == 0, err
    # the solver file, with the same --set, tests the run's weights; without it they do not fit
    code, out, err = netcfg("test", solver, *wide, "--weights", run)
    assert code == 0 and "Iteration 6, Testing net" in out, err
    code, out, err = netcfg("test", solver, "--weights", run)
    assert code == 2 and "ip1.weight (file [24, 64], net [16, 64])" in err
    code, out, err = netcfg("export", solver, *wide, "--weights", run, "-f", "safetensors", "-o", tmp_path / "d.safetensors")
    assert code == 0, err
    assert load_file(tmp_path / "d.safetensors")["ip1.weight"].shape == (24, 64)


def test_expand_of_such_a_solver_gives_the_command_that_expands_its_net_with_the_keys_set(tmp_path):
    solver = write_solver(tmp_path, MLP)
    code, out, err = netcfg("expand", solver, "--set", "net.layers.ip1.num_output=24")
    assert code == 2 and f"(netcfg expand {tmp_path / 'net.yaml'} --set layers.ip1.num_output=24)" in err
    code, out, err = netcfg("expand", tmp_path / "net.yaml", "--set", "layers.ip1.num_output=24")
    assert code == 0 and "num_output: 24" in out, err


def test_a_net_key_set_without_net_on_a_run_config_is_one_error_of_the_solver(tmp_path):
    """layers.ip1... on a run's config.yaml (a solver, net inlined) used to turn it into a broken
    net file for time, draw and export (a dozen 'unknown key' errors), and expand dropped it."""
    solver, run = write_solver(tmp_path, MLP, max_iter=2, test=False), tmp_path / "run"
    assert netcfg("train", solver, "--out", run)[0] == 0
    bare = ("--set", "layers.ip1.num_output=24")
    for command in (("time", "-n", "1", "--warmup", "0"), ("draw",), ("export", "-f", "pt", "-w", run)):
        code, out, err = netcfg(*command[:1], run / "config.yaml", *command[1:], *bare)
        assert code == 2 and err.count("error:") == 1, (command, err)
        assert "layers: unknown key 'layers' for SGD optimizer" in err, (command, err)
    code, out, err = netcfg("expand", run / "config.yaml", *bare)
    assert code == 2 and out == ""
    assert ("layers.ip1.num_output would be set in the solver, but expand prints only its net "
            "(--set net.layers.ip1.num_output=24 sets it in the net)") in err
    code, out, err = netcfg("expand", run / "config.yaml", "--set", "net.layers.ip1.num_output=24")
    assert code == 0 and "num_output: 24" in out, err
