"""``--set net.KEY=VALUE`` on a solver: set in the net it names, whether inline or a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from netcfg.errors import ConfigError, ConfigErrors
from netcfg.exporting.load import read_net
from netcfg.overrides import apply_overrides
from netcfg.solver.netfile import read_net_file
from netcfg.solver.rundir import resolved_config
from netcfg.solver.spec import load_solver
from netcfg.source import parse_yaml, to_yaml
from tests.solver.test_runner import MLP, write_solver


@pytest.fixture
def solver(tmp_path) -> Path:
    """solver.yaml naming net.yaml (a file), with a test split."""
    return write_solver(tmp_path, MLP)


@pytest.fixture
def inline(solver) -> Path:
    """The same solver with its net inline, as a run's config.yaml holds it."""
    path = solver.parent / "config.yaml"
    path.write_text(to_yaml(resolved_config(load_solver(solver))))
    return path


def errors(path: Path, *sets: str) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as exc:
        load_solver(path, list(sets))
    return exc.value.errors


def test_a_net_key_is_set_in_the_net_file_the_solver_names(solver):
    before = (solver.parent / "net.yaml").read_text()
    spec = load_solver(solver, ["net.layers.ip1.num_output=12", "net.layers[2].bias_term=false", "max_iter=3"])
    ip1, ip2 = spec.net_spec.layers[0], spec.net_spec.layers[2]
    assert (ip1.num_output, ip2.bias_term, spec.max_iter, spec.net) == (12, False, 3, "net.yaml")
    assert (solver.parent / "net.yaml").read_text() == before  # read with the key set, never written
    # the run's config.yaml inlines the net as set, so a resume or an export of the run sees it
    assert resolved_config(spec)["net"]["layers"][0]["num_output"] == 12


def test_every_reader_of_a_solver_sets_it_the_same(solver, inline):
    for path in (solver, inline):
        assert read_net_file(path, ["net.layers.ip1.num_output=12"], run_dir="config").net.layers[0].num_output == 12
        assert read_net(path, ["net.layers.ip1.num_output=12"]).net.layers[0].num_output == 12


@pytest.mark.parametrize("text, message, hint", [
    ("net.layers.ip9.num_output=3", "no item 'ip9' in net.layers", "did you mean 'ip2'?; indices 0..4 or a name"),
    ("net.layers.ip1.num_output=0", "net.layers[0].num_output: input should be greater than or equal to 1, got 0", None),
    ("net.layers.ip1.num_outptu=3", "net.layers[0].num_outptu: unknown key 'num_outptu' for InnerProduct layer",
     "did you mean 'num_output'?"),
    ("net.name.x=1", "'net.name' is a value ('TinyMLP'), not a mapping or list", None),
])
def test_errors_name_the_set_as_typed_whether_the_net_is_a_file_or_inline(solver, inline, text, message, hint):
    for path in (solver, inline):
        (err,) = errors(path, text)
        assert (err.file, err.line, str(err)) == (f"--set {text}", None, message + (f" ({hint})" if hint else ""))


def test_errors_in_the_net_file_itself_still_point_at_its_lines(solver):
    (solver.parent / "net.yaml").write_text(MLP.replace("num_output: 10", "num_output: -1"))
    (err,) = errors(solver, "net.layers.ip1.num_output=12")
    assert (err.file, err.line, err.path) == (str(solver.parent / "net.yaml"), 8, ("layers", 2, "num_output"))


def test_net_replaced_by_another_file_gets_the_net_keys_in_any_order(solver):
    (solver.parent / "other.yaml").write_text(MLP.replace("TinyMLP", "Other"))
    for sets in (["net=other.yaml", "net.layers.ip1.num_output=7"], ["net.layers.ip1.num_output=7", "net=other.yaml"]):
        net = load_solver(solver, sets).net_spec
        assert (net.name, net.layers[0].num_output) == ("Other", 7)
    (err,) = errors(solver, "net=nope.yaml", "net.layers.ip1.num_output=7")
    assert (err.file, err.message) == ("--set net=nope.yaml", f"net file not found: {solver.parent / 'nope.yaml'}")


def test_a_net_key_on_a_solver_without_a_net_says_to_name_one(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("data: {train: {source: digits, split: train, batch_size: 8}}\nbase_lr: 0.1\nmax_iter: 1\n")
    (err,) = errors(path, "net.layers.ip1.num_output=3")
    assert err.render() == ("--set net.layers.ip1.num_output=3: error: net: this solver names no net to set "
                            "layers.ip1.num_output in (name it in the solver file with net: NET.yaml, or add "
                            "--set net=NET.yaml)")


def test_a_net_key_on_a_net_file_is_an_unknown_key_as_before():
    src = apply_overrides(parse_yaml(MLP, "net.yaml"), ["net.x=1"])
    assert src.data["net"] == {"x": 1} and not src.net_sets
    assert src.overridden == {("net",): "--set net.x=1"}


def test_locating_an_error_of_a_set_twice_changes_nothing():
    src = apply_overrides(parse_yaml("net: {layers: [{name: a}]}\n", "s.yaml"), ["net.layers.a.num_output=0"]).under("net")
    err = src.locate(src.locate(ConfigError("bad", ("layers", 0, "num_output"))))
    assert (err.file, err.line, err.path) == ("--set net.layers.a.num_output=0", None, ("net", "layers", 0, "num_output"))
