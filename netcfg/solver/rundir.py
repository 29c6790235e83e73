"""The run directory: resolved config.yaml, metrics.jsonl, log and snapshots.

A new run never reuses an existing directory: ``runs/lenet`` taken means
``runs/lenet-2`` (as Ultralytics does), so no earlier run is ever overwritten.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from netcfg.solver.checkpoint import atomic_write_bytes
from netcfg.solver.spec import SolverSpec

__all__ = ["RunDir", "resolved_config", "config_diff"]

# keys a resumed run may change without being asked to confirm
_MAY_CHANGE = {"max_iter", "display", "snapshot", "test_interval", "test_iter", "device", "weights"}


def config_diff(old, new, path: str = "") -> list[str]:
    """Human-readable differences between two resolved configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            if not path and k in _MAY_CHANGE:
                continue
            key = f"{path}.{k}" if path else str(k)
            if k not in new:
                out.append(f"{key}: {old[k]!r} -> (removed)")
            elif k not in old:
                out.append(f"{key}: (unset) -> {new[k]!r}")
            else:
                out += config_diff(old[k], new[k], key)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in config_diff(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def resolved_config(spec: SolverSpec) -> dict:
    """The solver with its net inlined and paths made absolute: loads back as is."""
    data = spec.model_dump(mode="json", exclude_unset=True)
    data["net"] = spec.net_spec.model_dump(mode="json", exclude_unset=True)
    for split in ("train", "test"):
        ds = getattr(spec.data, split)
        if ds is not None and ds.path is not None:
            data["data"][split]["path"] = str(ds.resolved_path(spec.base_dir))
    if spec.weights:
        data["weights"] = str((spec.base_dir / spec.weights).resolve())
    return data


class RunDir:
    """Where one training run writes its files."""

    def __init__(self, path: Path, spec: SolverSpec):
        self.path = path
        self.prefix = spec.snapshot_prefix or spec.net_spec.name.lower().replace(" ", "_")
        self._config = yaml.safe_dump(resolved_config(spec), sort_keys=False)

    @classmethod
    def create(cls, spec: SolverSpec, out: str | Path | None = None) -> RunDir:
        if out is None:
            stem = spec._source.file if spec._source is not None else "run"
            base = Path("runs") / Path(stem).stem
            base.parent.mkdir(parents=True, exist_ok=True)
            path, n = base, 2
            while True:
                try:
                    path.mkdir()  # not exists() then mkdir(): two runs started together must not share one
                    break
                except FileExistsError:
                    path = base.with_name(f"{base.name}-{n}")
                    n += 1
        else:
            path = Path(out)
            if path.exists() and (any(path.glob("*.solverstate")) or (path / "metrics.jsonl").exists()):
                from netcfg.errors import ConfigError

                raise ConfigError(f"run directory {path} already holds a run (metrics.jsonl or snapshots); "
                                  "refusing to mix runs", file="--out",
                                  hint="pick a new --out, or continue it with --resume")
            path.mkdir(parents=True, exist_ok=True)
        run = cls(path, spec)
        run.write_config()
        return run

    @classmethod
    def resume(cls, spec: SolverSpec, state_path: Path) -> RunDir:
        """Continue writing into the directory of an existing snapshot."""
        return cls(state_path.resolve().parent, spec)

    def config_text(self) -> str:
        return self._config

    def write_config(self) -> None:
        """Write config.yaml; a resumed run rewrites it once the resume is accepted,
        so that it holds what the run now continues with (a grown max_iter, say)."""
        atomic_write_bytes(self.path / "config.yaml", self._config.encode())

    def metric(self, record: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_line(self, line: str) -> None:
        with open(self.path / "train.log", "a") as f:
            f.write(line + "\n")

    def snapshot_paths(self, it: int) -> tuple[Path, Path]:
        base = self.path / f"{self.prefix}_iter_{it}"
        return base.with_suffix(".safetensors"), base.with_suffix(".solverstate")

    def latest_snapshot(self, before: int | None = None) -> Path | None:
        """The newest complete snapshot (its .solverstate exists) in this run,
        of an iteration below ``before`` if given."""
        best = None
        for p in self.path.glob(f"{self.prefix}_iter_*.solverstate"):
            m = re.fullmatch(rf"{re.escape(self.prefix)}_iter_(\d+)\.solverstate", p.name)
            if m and p.with_suffix(".safetensors").exists() and (before is None or int(m.group(1)) < before):
                if best is None or int(m.group(1)) > best[0]:
                    best = (int(m.group(1)), p)
        return best[1] if best else None
