"""``--set net.KEY=VALUE`` on a solver: set in the net it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from netcfg.errors import ConfigError, ConfigErrors
from netcfg.overrides import apply_overrides
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


@pytest.mark.parametrize("text, message, hint", [
    ("net.layers.ip9.num_output=3", "no item 'ip9' in net.layers", "did you mean 'ip2'?; indices 0..4 or a name"),
    ("net.layers.ip1.num_output=0", "net.layers[0].num_output: input should be greater than or equal to 1, got 0", None),
    ("net.layers.ip1.num_outptu=3", "net.layers[0].num_outptu: unknown key 'num_outptu' for InnerProduct layer",
     "did you mean 'num_output'?"),
    ("net.name.x=1", "'net.name' is a value ('TinyMLP'), not a mapping or list", None),
])
def test_errors_in_an_inline_net_name_the_set_as_typed(inline, text, message, hint):
    (err,) = errors(inline, text)
    assert (err.file, err.line, str(err)) == (f"--set {text}", None, message + (f" ({hint})" if hint else ""))


def test_locating_an_error_of_a_set_twice_changes_nothing():
    src = apply_overrides(parse_yaml("net: {layers: [{name: a}]}\n", "s.yaml"), ["net.layers.a.num_output=0"]).under("net")
    err = src.locate(src.locate(ConfigError("bad", ("layers", 0, "num_output"))))
    assert (err.file, err.line, err.path) == ("--set net.layers.a.num_output=0", None, ("net", "layers", 0, "num_output"))
