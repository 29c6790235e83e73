"""``netcfg time NET|SOLVER``: per-layer forward/backward milliseconds, like ``caffe time``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from netcfg.cli.options import PluginOpt
from netcfg.cli.plugins import import_plugins

ORDER = 40

_BAR = 20  # characters of the widest share bar


def register(app: typer.Typer) -> None:
    app.command("time")(time_cmd)


def time_cmd(
    file: Annotated[Path, typer.Argument(help="net or solver file (its net and train batch size), a run directory (its config.yaml), or a .safetensors written by netcfg (its net)", show_default=False)],
    iterations: Annotated[int, typer.Option("--iterations", "-n", min=1, help="timed iterations (the median is shown)")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="untimed iterations first")] = 3,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", min=1, help="default: the solver's train batch_size, else 64")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N (default: the solver's, else auto)")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="fp32, bf16 or fp16 autocast (default: the solver's, else fp32)")] = None,
    phase: Annotated[str, typer.Option("--phase", help="TRAIN or TEST net", case_sensitive=False)] = "TRAIN",
    stage: Annotated[list[str], typer.Option("--stage", help="active stage (repeatable); default: the file's for PHASE")] = [],
    set_: Annotated[list[str], typer.Option("--set", help="override a key: a.b=value (repeatable)")] = [],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
    plugin: PluginOpt = [],
) -> None:
    """Time each layer's forward and backward pass and the whole net on a random batch.

    Each layer runs alone on detached inputs, its backward alone on the gradients
    its consumers produced (Caffe's method), the device synchronised around it;
    the whole net is also timed as one ordinary forward + backward, which gives
    images/s. Medians over --iterations after --warmup; see docs/tools.md."""
    import_plugins(plugin)
    from netcfg.errors import ConfigError
    from netcfg.net import Net, build_graph
    from netcfg.solver.netfile import read_net_file
    from netcfg.tools.device import pick_device
    from netcfg.tools.timing import time_net

    phase = phase.upper()
    if phase not in ("TRAIN", "TEST"):
        raise ConfigError(f"--phase must be TRAIN or TEST, got '{phase}'", file="--phase")
    loaded = read_net_file(file, set_, run_dir="config")
    net_spec, solver = loaded.net, loaded.solver
    stages = net_spec.checked_stages(stage, "--stage") or loaded.stages_of(phase)
    if batch_size is None:
        split = solver.data.train if solver is not None else None
        batch_size = split.batch_size if split is not None else 64
    dev = pick_device(device, solver)
    precision = (precision or (solver.precision if solver is not None else "fp32")).lower()
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"--precision must be fp32, bf16 or fp16, got '{precision}'", file="--precision")
    if precision == "fp16" and dev.type != "cuda":
        raise ConfigError("fp16 autocast needs a CUDA device", file="--precision", hint="use bf16 on the CPU")
    graph = build_graph(net_spec, phase, stages)
    need, _ = graph.min_batch()
    if batch_size < need:
        raise ConfigError(f"batch {batch_size} is too small: {graph.min_batch_reason()}", file="--batch-size",
                          hint=f"use -b {need} or more, or --phase TEST")
    from netcfg.solver.layout import use_channels_last
    from netcfg.solver.memory import check_fits

    too_big = check_fits(graph, batch_size, dev, train=phase == "TRAIN", optimizer="SGD", precision=precision,
                         iter_size=1, split="train")
    if too_big is not None:  # before allocating: an out-of-memory traceback helps nobody
        raise ConfigError(too_big.message, file="--batch-size", hint="lower -b, or time a smaller input")
    net = Net(graph).to(dev)
    # the layout training uses (a solver's memory_format; auto: channels_last for a conv net)
    channels_last = use_channels_last(solver.memory_format if solver is not None else "auto", net)
    timing = time_net(net, batch_size, iterations=iterations, warmup=warmup, precision=precision,
                      channels_last=channels_last)
    if as_json:
        typer.echo(json.dumps(timing.as_dict(), indent=1))
    else:
        typer.echo(render(timing))


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def render(timing) -> str:
    """The table, slowest layer first, then the sums and the whole-net numbers."""
    t = timing
    layout = ", channels_last" if t.channels_last else ""
    head = (f"{t.net} ({t.phase}), batch {t.batch_size} on {t.device} ({t.threads} threads, {t.precision}{layout}): "
            f"median of {t.iterations} iterations after {t.warmup} warm-up")
    rows = [("layer", "type", "forward ms", "backward ms", "total ms", "share", "")]
    widest = max((t.share(x) for x in t.layers), default=0.0) or 1.0
    for x in sorted(t.layers, key=lambda x: -x.total_ms):
        share = t.share(x)
        rows.append((x.name, x.type, _ms(x.forward_ms), _ms(x.backward_ms) or "-", _ms(x.total_ms),
                     f"{100 * share:.1f}%", "#" * round(_BAR * share / widest)))
    rows.append(("sum of layers", "", _ms(t.layer_forward_ms), _ms(t.layer_backward_ms), _ms(t.layer_total_ms), "100.0%", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(7)]
    right = {2, 3, 4, 5}
    lines = [head, ""]
    for j, r in enumerate(rows):
        if j == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths[:6]))
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths[:6]))
    lines.append("")
    if t.net_backward_ms is None:
        lines.append(f"whole net, forward only (no loss to backpropagate): {t.net_forward_ms:.3f} ms per batch, "
                     f"{t.images_per_s:,.0f} images/s")
    else:
        lines.append(f"whole net: forward {t.net_forward_ms:.3f} ms + backward {t.net_backward_ms:.3f} ms = "
                     f"{t.net_step_ms:.3f} ms per batch, {t.images_per_s:,.0f} images/s (optimizer step not included)")
    return "\n".join(lines)
