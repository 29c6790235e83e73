"""Training curves from run directories' metrics.jsonl: loss, test metrics, learning rate, speed.

Caffe's ``plot_training_log.py``, read from the JSON lines the solver writes
(``netcfg/solver/runner.py``): ``train`` records (iter, epoch, loss, the net's
scalar outputs, lr, images_per_s, seconds since the start) and ``test`` records
(iter, epoch, the TEST net's scalar outputs, samples, the test's own seconds).
A resumed run appends to the same file, after a ``resume`` record of the iteration
it continues from: the earlier records past it (a killed run's, or those of the
later snapshots a forced resume overwrote) are dropped, so a resume that tests or
displays at other iterations leaves none behind. Without that record (runs written
before it), records of iterations that a resume repeated replace the earlier ones.

Figures are drawn with matplotlib's object API (``Figure`` + Agg canvas), never
pyplot, so nothing global (the backend, open figures) changes in the caller.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from netcfg.errors import ConfigError, NetcfgError
from netcfg.source import read_text

__all__ = ["Run", "read_run", "plot_runs", "require_matplotlib", "smooth", "FIGSIZE", "DPI"]

FIGSIZE = (12.0, 8.0)  # inches: 1200 x 800 pixels at DPI
DPI = 100
_NOT_METRICS = {"event", "iter", "epoch", "lr", "images_per_s", "seconds", "samples", "weights", "state"}


def require_matplotlib():
    """The matplotlib module, or a NetcfgError saying how to install it."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise NetcfgError("this command draws with matplotlib, which is not installed: "
                          "pip install 'netcfg[plot]' (or pip install matplotlib)") from None
    return matplotlib


@dataclass
class Run:
    """The train and test records of one run, in iteration order."""

    label: str
    path: Path
    train: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)

    def test_metrics(self) -> list[str]:
        """Scalar outputs of the TEST net other than the loss (accuracy, ...)."""
        keys: dict[str, None] = {}
        for r in self.test:
            for k, v in r.items():
                if k not in _NOT_METRICS and k != "loss" and isinstance(v, (int, float)):
                    keys[k] = None
        return list(keys)

    def x(self, records: list[dict], axis: str) -> list[float]:
        """x values of ``records``: iteration, epoch, or training seconds (a test record's
        time is interpolated from the train records around its iteration)."""
        if axis == "iter":
            return [r["iter"] for r in records]
        if axis == "epoch":
            return [r.get("epoch", math.nan) for r in records]
        known = [(r["iter"], r["seconds"]) for r in self.train if "seconds" in r]
        return [_interp(r["iter"], known) for r in records]


def _interp(it: float, points: list[tuple[float, float]]) -> float:
    if not points:
        return math.nan
    if it <= points[0][0]:
        return points[0][1] if len(points) == 1 or it == points[0][0] else max(0.0, _line(it, points[0], points[1]))
    for a, b in zip(points, points[1:]):
        if a[0] <= it <= b[0]:
            return _line(it, a, b)
    return _line(it, points[-2], points[-1]) if len(points) > 1 else points[-1][1]


def _line(it: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    return a[1] if b[0] == a[0] else a[1] + (b[1] - a[1]) * (it - a[0]) / (b[0] - a[0])


def _append(records: list[dict], rec: dict) -> None:
    """Add a record; a resume that repeats iterations replaces the records it repeats."""
    while records and records[-1]["iter"] >= rec["iter"]:
        records.pop()
    records.append(rec)


def read_run(path: str | Path, label: str | None = None) -> Run:
    """Read ``RUN_DIR/metrics.jsonl`` (or a metrics file given directly)."""
    path = Path(path)
    file = path / "metrics.jsonl" if path.is_dir() else path
    if not file.is_file():
        what = "has no metrics.jsonl" if path.is_dir() else "does not exist"
        raise ConfigError(f"{path} {what}", file=str(path), hint="give a run directory that `netcfg train` wrote")
    run = Run(label or file.resolve().parent.name, path)  # `netcfg plot .`: the directory's own name
    # another file of a run (a snapshot, config.yaml) given for its metrics: name the right one
    other = None if file.name.endswith(".jsonl") else f"give the run directory ({file.parent}) or its metrics.jsonl"
    lines = read_text(file, "metrics.jsonl", binary_hint=other or "is this a metrics.jsonl?").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):
                continue  # a run still writing may leave a partial last line
            raise ConfigError(f"not a JSON line: {e.msg}", file=str(file), line=n, col=e.colno, hint=other) from None
        if not isinstance(rec, dict) or not isinstance(rec.get("iter"), int):
            raise ConfigError("a metrics record must be a JSON object with an integer 'iter'", file=str(file), line=n, col=1)
        for key, value in rec.items():  # a train or test record holds numbers (NaN included)
            if rec.get("event") in ("train", "test") and key != "event" and not _numbers(value, rec["event"]):
                raise ConfigError(f"'{key}' is {json.dumps(value)}, not a number", file=str(file), line=n,
                                  col=line.find(f'"{key}"') + 1 or 1, hint="train and test records hold numbers "
                                  "only (a test record also lists of numbers: Accuracy's per-class top)")
        if rec.get("event") == "resume":
            run.train = [r for r in run.train if r["iter"] <= rec["iter"]]
            run.test = [r for r in run.test if r["iter"] <= rec["iter"]]
        elif rec.get("event") == "train":
            _append(run.train, rec)
        elif rec.get("event") == "test":
            _append(run.test, rec)
    if not run.train and not run.test:
        raise ConfigError(f"{file} holds no train or test records yet", file=str(file))
    return run


def _numbers(value, event: str) -> bool:
    """A number, or in a test record a list of numbers (Accuracy's per-class top, not drawn)."""
    if isinstance(value, list) and event == "test":
        return all(_numbers(v, "train") for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start; a NaN or
    infinite value is drawn as it is and left out of the average (as TensorBoard does), so
    one diverged record does not turn the rest of the curve into NaN."""
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(avg / norm if norm else v)
    return out


_XLABEL = {"iter": "iteration", "epoch": "epoch", "seconds": "training time (s)"}


def plot_runs(runs: list[Run], out: str | Path, *, x: str = "iter", smoothing: float = 0.6):
    """Draw a 2x2 figure (loss, test metrics, learning rate, images/s) and save it to ``out``."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    (ax_loss, ax_acc), (ax_lr, ax_speed) = fig.subplots(2, 2)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    losses: list[float] = []
    styles = ["-", "--", ":", "-."]
    metric_names: dict[str, None] = {}
    for run, color in zip(runs, colors):
        if run.train:
            xs, ys = run.x(run.train, x), [r.get("loss", math.nan) for r in run.train]
            ax_loss.plot(xs, ys, color=color, alpha=0.3, linewidth=0.8)
            ax_loss.plot(xs, smooth(ys, smoothing), color=color, linewidth=1.8)
            losses += ys
            ax_lr.plot(xs, [r.get("lr", math.nan) for r in run.train], color=color, linewidth=1.5)
            ax_speed.plot(xs, [r.get("images_per_s", math.nan) for r in run.train], color=color, linewidth=1.2)
        tests = [r for r in run.test if "loss" in r]
        if tests:
            ys = [r["loss"] for r in tests]
            ax_loss.plot(run.x(tests, x), ys, color=color, linestyle="--", marker="o", markersize=3, linewidth=1.2)
            losses += ys
        for i, name in enumerate(run.test_metrics()):
            metric_names[name] = None
            recs = [r for r in run.test if name in r]
            ax_acc.plot(run.x(recs, x), [r[name] for r in recs], color=color, marker="o", markersize=3,
                        linestyle=styles[list(metric_names).index(name) % len(styles)], linewidth=1.5)
    finite = [v for v in losses if math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 30:
        ax_loss.set_yscale("log")
    rates = [r.get("lr") for run in runs for r in run.train if r.get("lr")]
    if rates and max(rates) / min(rates) > 30:
        ax_lr.set_yscale("log")
    ax_loss.set_title("loss")
    ax_acc.set_title("test " + ", ".join(metric_names) if metric_names else "test metrics")
    ax_lr.set_title("learning rate")
    ax_speed.set_title("training speed (images/s)")
    for ax in (ax_loss, ax_acc, ax_lr, ax_speed):
        ax.set_xlabel(_XLABEL[x])
        ax.grid(True, alpha=0.3)
    if not metric_names:
        ax_acc.text(0.5, 0.5, "no test records", ha="center", va="center", transform=ax_acc.transAxes, color="0.5")
    handles = [Line2D([], [], color=c, linewidth=2, label=r.label) for r, c in zip(runs, colors)]
    handles += [Line2D([], [], color="0.4", alpha=0.4, linewidth=0.8, label="train (as logged)"),
                Line2D([], [], color="0.4", linewidth=1.8, label=f"train (smoothed {smoothing:g})"),
                Line2D([], [], color="0.4", linestyle="--", marker="o", markersize=3, label="test")]
    ax_loss.legend(handles=handles, fontsize=8)
    if len(metric_names) > 1:
        ax_acc.legend(handles=[Line2D([], [], color="0.4", linestyle=styles[i % len(styles)], label=n)
                               for i, n in enumerate(metric_names)], fontsize=8)
    fig.savefig(out, dpi=DPI)
    return fig
