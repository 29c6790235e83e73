"""``netcfg weights SOLVER``: a dry run of the solver's ``weights:`` (and ``freeze:``), nothing trained."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt, SetOpt
from netcfg.cli.plugins import import_plugins

ORDER = 25


def register(app: typer.Typer) -> None:
    app.command("weights")(weights)


def weights(
    solver: Annotated[Path, typer.Argument(help="solver file (YAML), or a run directory (its config.yaml)", show_default=False)],
    set_: SetOpt = [],
    plugin: PluginOpt = [],
) -> None:
    """Dry run of `weights:` and `freeze:`: what `netcfg train SOLVER` would load, and freeze.

    Per rule of `weights:`: the blobs matched, renamed (old -> new), excluded, unused and
    shape-mismatched; then the net blobs nobody fills, and what `freeze:` freezes.

    Exit codes: 0 the train would accept these weights; 2 it would refuse them (a strict
    rule, a file that cannot be read, a pattern that matches nothing)."""
    import_plugins(plugin)
    from netcfg.errors import ConfigError, ConfigErrors
    from netcfg.net import Net, build_graph
    from netcfg.solver.freeze import freeze
    from netcfg.solver.spec import load_solver
    from netcfg.solver.weights import net_targets, plan_weights
    from netcfg.solver.weights_spec import WeightsRule

    spec = load_solver(solver, list(set_))
    if not spec.weights:
        raise spec.locate(ConfigError("the solver has no weights: to check", ("weights",),
                                      hint="add weights: [{file: ...}], or --set weights=FILE"))
    rules = spec.weights if isinstance(spec.weights, list) else [WeightsRule(file=spec.weights)]
    net = Net(build_graph(spec.net_spec, "TRAIN", spec.train_stages))
    test = Net(build_graph(spec.net_spec, "TEST", spec.test_stages), share=net) if spec.data.test else None
    try:
        plan = plan_weights(rules, spec.base_dir, *net_targets([net, test]))
    except ConfigErrors as e:
        raise ConfigErrors([spec.locate(_as_given(x, spec.weights)) for x in e.errors]) from None
    for line in plan.lines(full=True):
        typer.echo(line)
    if spec.freeze:
        typer.echo(freeze(spec, net).line())
    if plan.refusals:
        raise ConfigErrors([spec.locate(x) for x in plan.refusals])
    typer.echo("netcfg train would accept these weights")


def _as_given(error, weights):
    """A rule's error for ``weights: FILE``, which has no ``weights[0].file`` to name: at ``weights``."""
    from netcfg.errors import ConfigError

    if isinstance(weights, list) or error.path[:2] != ("weights", 0):
        return error
    return ConfigError(error.message, ("weights",), hint=error.hint, file=error.file)
