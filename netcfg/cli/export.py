"""``netcfg export NET --weights W [--format F] [-o OUT]``: the deploy net as one deployable file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt
from netcfg.cli.plugins import import_plugins

ORDER = 40

FORMAT_NAMES = ("safetensors", "pt", "torchscript", "exported", "onnx")  # netcfg.exporting.FORMATS, without torch


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    net: Annotated[Path, typer.Argument(help="net file, solver file or run config.yaml, a .safetensors written by "
                                             "netcfg (which holds its net), or a run directory (its newest snapshot)", show_default=False)],
    format: Annotated[str | None, typer.Option("--format", "-f", help=f"{' | '.join(FORMAT_NAMES)}; default: "
                                               "the one OUT's suffix names (.onnx, .pt2, .torchscript, "
                                               ".safetensors), else onnx", show_default=False)] = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="trained weights (.safetensors, a .pt "
                                                 "state_dict, or a run directory); default: NET when it holds weights")] = None,
    out: Annotated[Path | None, typer.Option("--out", "--output", "-o", help="file to write; default: the weights file's name "
                                             "with the format's suffix", show_default=False)] = None,
    phase: Annotated[str, typer.Option("--phase", help="whose layers (include/exclude rules): TEST or TRAIN; "
                                       "the file always runs in inference mode")] = "TEST",
    stage: Annotated[list[str], typer.Option("--stage", help="active stage (repeatable)")] = [],
    top: Annotated[list[str], typer.Option("--top", help="export only these tops as outputs (repeatable); "
                                           "default: the predictions the losses and metrics read")] = [],
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default 18; 9-17 use the TorchScript-based "
                                              "exporter)", show_default=False)] = None,
    batch_size: Annotated[str, typer.Option("--batch-size", "-b", help="'dynamic', or a fixed batch size N "
                                            "(a static graph)")] = "dynamic",
    set_: Annotated[list[str], typer.Option("--set", help="override a key of the NET file: a.b=value (repeatable)")] = [],
    check: Annotated[bool, typer.Option("--check/--no-check", help="run the written file on random inputs and "
                                        "compare with PyTorch")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite OUT if it exists")] = False,
    plugin: PluginOpt = [],
) -> None:
    """Export a trained net to safetensors, pt, TorchScript, torch.export or ONNX, checked.

    The deploy form: the TEST layers without losses, metrics and label inputs, outputs
    named after their tops, a dynamic batch.

    The file is checked against the PyTorch net (batch 1 and 5) before it is put in
    place; a layer the format cannot hold is named, and nothing is written."""
    import_plugins(plugin)
    from netcfg.exporting import export as run_export

    result = run_export(net, weights, format, out, phase=phase, stages=stage, outputs=top or None, opset=opset,
                        batch_size=batch_size, overrides=set_, check=check, force=force)
    if as_json:
        d = result.deploy
        typer.echo(json.dumps({
            "path": str(result.path), "format": result.format, "opset": result.opset,
            "batch_size": result.batch or "dynamic", "inputs": d.inputs, "outputs": d.outputs,
            "dropped": list(d.dropped), "pruned": list(d.pruned), "unused_inputs": d.unused_inputs,
            "checked_batches": list(result.checked_batches), "max_abs_diff": result.max_abs_diff,
            "seconds": round(result.seconds, 3), "notes": result.notes}))
    else:
        typer.echo("\n".join(result.lines()))
