"""``netcfg import-caffe``: convert Caffe .prototxt nets and solvers (and .caffemodel weights) to netcfg files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

ORDER = 60


def register(app: typer.Typer) -> None:
    app.command("import-caffe")(import_caffe)


def import_caffe(
    net: Annotated[Path | None, typer.Argument(
        help="Caffe net .prototxt; with --solver it replaces the solver's net (a netcfg .yaml net works too)",
        show_default=False)] = None,
    solver: Annotated[Path | None, typer.Option("--solver", help="Caffe solver .prototxt to convert")] = None,
    out: Annotated[Path | None, typer.Option("--out", "--output", "-o", help="output .yaml (default: print to stdout); with "
                                             "--solver the net is written beside it")] = None,
    data: Annotated[str | None, typer.Option("--data", help="netcfg data source replacing the Data layers' "
                                             "databases: SOURCE[:PATH], e.g. idx:/usr/share/datasets/fashion-mnist")] = None,
    input_: Annotated[list[str], typer.Option("--input", help="per-sample shape of a data layer's top: "
                                              "NAME=C,H,W[:DTYPE] (repeatable)")] = [],
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="also convert this .caffemodel to a "
                                                 ".safetensors beside the output")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite files that exist (the output, and the net and "
                                        "weights written beside it)")] = False,
) -> None:
    """Convert a Caffe net (NET.prototxt) or solver (--solver) to netcfg YAML.

    Data layers become the net's inputs; --data SOURCE:PATH makes them a solver's data: section.
    Problems are reported at their line in the .prototxt; the result passes `netcfg check`."""
    from netcfg.errors import ConfigError

    if solver is None and net is None:
        raise ConfigError("give a Caffe net (NET.prototxt) or a solver (--solver SOLVER.prototxt)", file="import-caffe")
    if weights is not None and out is None:
        raise ConfigError("--weights writes a .safetensors beside the output: give -o NET.yaml", file="--weights")
    inputs = dict(_input_option(text) for text in input_)
    if data is not None:
        from netcfg.caffe.data import parse_data_option

        parse_data_option(data)  # options are checked before any file is read
    if solver is None:
        _net(net, out, data, inputs, weights, force)
    else:
        _solver(solver, net, out, data, inputs, weights, force)


def _input_option(text: str):
    from netcfg.caffe.inputs import InputShape
    from netcfg.errors import ConfigError
    from netcfg.net.spec import DTYPES

    name, eq, rest = text.partition("=")
    dims, _, dtype = rest.partition(":")
    try:
        shape = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        shape = None
    if not eq or not name or shape is None or any(d < 1 for d in shape) or (dtype and dtype not in DTYPES):
        raise ConfigError(f"bad --input '{text}'", file="--input",
                          hint="write NAME=C,H,W (per sample, no batch), e.g. data=1,28,28; a scalar label: "
                               f"label=:int64; dtypes: {', '.join(DTYPES)}")
    return name, InputShape(shape, dtype or "float32")


def _check_input_names(inputs: dict, net_data: dict) -> None:
    """A --input NAME that is no input of the imported net is a typo, not something to ignore."""
    from netcfg.errors import ConfigError, ConfigErrors, did_you_mean

    known = list(net_data.get("inputs", {}))
    errors = [ConfigError(f"--input {name}: the net has no input '{name}'", file="--input",
                          hint=did_you_mean(name, known, show_all=8)) for name in inputs if name not in known]
    if errors:
        raise ConfigErrors(errors)


def _header(source: Path, what: str, notes: list[str]) -> list[str]:
    lines = [f"Imported from {source} by `netcfg import-caffe`.", what]
    if notes:
        lines.append("Notes from the import:")
        lines += [f"  - {n}" for n in notes]
    return lines


def _summary(graphs: dict) -> str:
    g = graphs["TRAIN"]
    layers, params = len(g.nodes), g.total_params
    return f"{g.name}: {layers} layer{'s' * (layers != 1)} (TRAIN), {params:,} parameter{'s' * (params != 1)}"


def _refuse_overwrite(paths: list[Path | None], force: bool) -> None:
    """Before anything is written: every file this import would replace, refused without --force."""
    from netcfg.errors import ConfigError, ConfigErrors

    if force:
        return
    errors = [ConfigError(f"{p} already exists", file=str(p), hint="pass --force to overwrite it, or choose another -o")
              for p in dict.fromkeys(paths) if p is not None and p.exists()]
    if errors:
        raise ConfigErrors(errors)


def _emit(text: str, out: Path | None, notes: list[str]) -> None:
    if out is None:
        typer.echo(text, nl=False)
    else:
        from netcfg.cli.output import write_output

        write_output(out, text, option="-o")
    for n in notes:
        typer.echo(f"note: {n}", err=True)


def _net(net: Path, out: Path | None, data: str | None, inputs: dict, weights: Path | None, force: bool) -> None:
    from netcfg.caffe.data import data_shapes
    from netcfg.caffe.emit import dump_yaml
    from netcfg.caffe.net import net_from_obj
    from netcfg.caffe.parser import parse_file
    from netcfg.caffe.proto import decode

    obj = decode(parse_file(net), "NetParameter", str(net))
    shapes = {**data_shapes(obj, data, Path.cwd(), []), **inputs}
    imported = net_from_obj(obj, str(net), shapes, net.stem)
    _check_input_names(inputs, imported.data)
    if imported.data_layers and any(d.source for d in imported.data_layers):
        imported.notes.append("the Data layers became inputs: their batches come from a solver's data: section "
                              "(netcfg import-caffe --solver SOLVER --data SOURCE[:PATH] writes one)")
    graphs = imported.check()
    summary = _summary(graphs)
    _refuse_overwrite([out, out.with_suffix(".safetensors") if weights is not None else None], force)
    if weights is not None:  # first: a .caffemodel that does not fit leaves nothing written
        _weights(imported, weights, out.with_suffix(".safetensors"))
    _emit(dump_yaml(imported.data, _header(net, summary, imported.notes)), out, imported.notes)
    if out is not None:
        typer.echo(f"wrote {out}: {summary}", err=True)


def _solver(solver: Path, net: Path | None, out: Path | None, data: str | None, inputs: dict,
            weights: Path | None, force: bool) -> None:
    from netcfg.caffe.emit import dump_yaml
    from netcfg.caffe.solver import import_solver
    from netcfg.errors import ConfigError
    from netcfg.solver.check import check_solver

    imp = import_solver(solver, net, data, inputs)
    if imp.net is not None:
        _check_input_names(inputs, imp.net.data)
    if weights is not None and imp.net is None:
        raise ConfigError("--weights needs a Caffe net to match the blobs to; the net here is a netcfg file",
                          file="--weights", hint="convert the weights with the Caffe net: netcfg import-caffe NET "
                                                 "--weights W.caffemodel -o NET.yaml")
    base = (out.parent if out is not None else Path.cwd()).resolve()
    notes = list(imp.notes)
    if imp.net is not None:
        notes = imp.net.notes + notes
        graphs = imp.net.check(imp.data.get("train_stages", []), imp.data.get("test_stages", []))
        summary = _summary(graphs)
        spec = imp.spec(imp.net.data, base)  # validated with the net inline, before any file is written
        net_out = None
        if out is not None:
            net_out = out.with_name(Path(imp.net.file).stem + ".yaml")
            if net_out.resolve() == out.resolve() or Path(imp.net.file).resolve() == Path(solver).resolve():
                net_out = out.with_name(out.stem + "_net.yaml")
        net_ref = net_out.name if net_out is not None else imp.net.data
    else:
        summary = f"net: {imp.net_yaml}"
        net_abs = imp.net_yaml.resolve()
        net_ref = os.path.relpath(net_abs, base) if out is not None else str(net_abs)
        spec = imp.spec(str(net_abs), base)
        net_out = None
    if "data" in imp.data:
        check_solver(spec)  # the data against the net's inputs, both phases
    _refuse_overwrite([out, net_out, net_out.with_suffix(".safetensors") if net_out and weights else None], force)
    if net_out is not None:
        if weights is not None:
            _weights(imp.net, weights, net_out.with_suffix(".safetensors"))
        text = dump_yaml(imp.net.data, _header(Path(imp.net.file), summary, imp.net.notes))
        _emit(text, net_out, [])
        typer.echo(f"wrote {net_out}: {summary}", err=True)
    text = dump_yaml({"net": net_ref, **imp.data}, _header(solver, f"solver type {imp.data['type']}; {summary}", notes),
                     imp.data_comment)
    _emit(text, out, notes)
    if out is not None:
        typer.echo(f"wrote {out}", err=True)


def _weights(imported, caffemodel: Path, target: Path) -> None:
    from netcfg.caffe.weights import convert_weights

    report = convert_weights(imported, caffemodel, target)
    for line in report:
        typer.echo(line, err=True)
