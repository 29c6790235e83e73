"""One concept, one set of spellings: every command that has an output, weights, batch size,
iterations or format option takes all of that concept's spellings, and --stage beside --phase."""

from __future__ import annotations

import json

import pytest
import typer.main

from netcfg.cli.app import app
from tests.cli import netcfg
from tests.solver.test_runner import MLP, write_solver

SPELLINGS = [
    {"--out", "--output", "-o"},  # the file or run directory a command writes
    {"--weights", "-w"},
    {"--batch-size", "-b"},
    {"--iterations", "-n"},
    {"--format", "-f"},
]


def _commands() -> dict:
    """'train', 'data show', ...: every command of the app."""
    out = {}
    for name, cmd in typer.main.get_command(app).commands.items():
        if hasattr(cmd, "commands"):  # a group: netcfg data
            out.update({f"{name} {sub}": c for sub, c in cmd.commands.items()})
        else:
            out[name] = cmd
    return out


COMMANDS = _commands()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_spelling_of_a_concept_is_accepted(name):
    for param in COMMANDS[name].params:
        names = set(param.opts) | set(param.secondary_opts)
        for spellings in SPELLINGS:
            if names & spellings:
                assert spellings <= names, f"netcfg {name} {'/'.join(param.opts)}: add {spellings - names}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_phase_comes_with_its_stages(name):
    opts = {o for p in COMMANDS[name].params for o in p.opts}
    if "--phase" in opts:
        assert "--stage" in opts, f"netcfg {name} has --phase but no --stage"


def test_the_short_spellings_work(tmp_path):
    solver = write_solver(tmp_path, MLP, max_iter=2, test=True)
    code, _, err = netcfg("train", solver, "-o", tmp_path / "run")
    assert code == 0, err
    code, out, err = netcfg("test", solver, "-w", tmp_path / "run", "-n", "1", "--json")
    assert code == 0, err
    assert set(json.loads(out)) == {"loss", "accuracy"}
    code, _, err = netcfg("draw", tmp_path / "net.yaml", "-f", "mmd", "--out", tmp_path / "net.txt")
    assert code == 0, err
    assert (tmp_path / "net.txt").read_text().startswith("flowchart")
    code, _, err = netcfg("expand", tmp_path / "net.yaml", "--out", tmp_path / "expanded.yaml")
    assert code == 0, err
    code, _, err = netcfg("export", tmp_path / "run", "-f", "pt", "--output", tmp_path / "net.pt", "-b", "2")
    assert code == 0, err
    assert (tmp_path / "net.pt").is_file()


def test_time_takes_a_stage(tmp_path):
    net = tmp_path / "net.yaml"
    net.write_text(MLP.replace("  - {name: ip2,", "  - {name: extra, type: ReLU, top: ip1, include: {stage: wide}}\n"
                                                  "  - {name: ip2,"))
    layers = {}
    for args in ([], ["--stage", "wide"]):
        code, out, err = netcfg("time", net, "-n", "1", "--warmup", "0", "-b", "2", "--device", "cpu", "--json", *args)
        assert code == 0, err
        layers[bool(args)] = [x["name"] for x in json.loads(out)["layers"]]
    assert "extra" in layers[True] and "extra" not in layers[False]


def test_a_stage_no_layer_names_is_refused_by_every_command_that_takes_one(tmp_path):
    # a misspelt stage (Caffe accepts it) built another net without a word
    net = tmp_path / "net.yaml"
    net.write_text(MLP.replace("  - {name: ip2,", "  - {name: extra, type: ReLU, top: ip1, include: {stage: wide}}\n"
                                                  "  - {name: ip2,"))
    for args in (["check", net], ["draw", net, "-f", "mmd"], ["time", net, "-n", "1", "--device", "cpu"],
                 ["export", net, "-w", tmp_path / "none.safetensors", "-f", "pt", "-o", tmp_path / "n.pt"]):
        code, _, err = netcfg(*args, "--stage", "wdie")
        assert code == 2, (args, err)
        assert "--stage: error: stage 'wdie' is named by no include/exclude rule of net" in err, err
        assert "did you mean 'wide'?" in err
    solver = write_solver(tmp_path, MLP, max_iter=2)
    code, _, err = netcfg("check", solver, "--stage", "wide")
    assert code == 2 and "--stage is for a net file" in err and "--set test_stages=[STAGE]" in err
    code, _, err = netcfg("check", solver, "--set", "train_stages=[wide]")
    assert code == 2 and "train_stages[0]: stage 'wide' is named by no include/exclude rule" in err, err
