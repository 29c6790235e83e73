"""The run directory: resolved config.yaml, metrics.jsonl, log and snapshots.

A new run never reuses an existing directory: ``runs/lenet`` taken means
``runs/lenet-2`` (as Ultralytics does), so no earlier run is ever overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import safetensors

from netcfg.errors import ConfigError
from netcfg.solver.checkpoint import WriteError, atomic_write_bytes
from netcfg.solver.config_diff import config_diff
from netcfg.solver.lock import LOCK_NAME, RunLock, remove_stale_temporaries
from netcfg.solver.spec import SolverSpec
from netcfg.source import to_yaml

__all__ = ["RunDir", "resolved_config", "config_diff", "newest_snapshot", "run_config"]

_SAFE = re.compile(r"[\s/\\\x00]+")  # spaces, path separators

# what a run that stopped before its first metric leaves, and a new run may take over
_RUN_FILES = {"config.yaml", "train.log", LOCK_NAME}


def resolved_config(spec: SolverSpec) -> dict:
    """The solver with its net inlined and paths made absolute: loads back as is."""
    data = spec.model_dump(mode="json", exclude_unset=True)
    data["net"] = spec.net_spec.model_dump(mode="json", exclude_unset=True)
    for split in ("train", "test"):
        ds = getattr(spec.data, split)
        if ds is not None:  # every path (path, mean_file, sub-sources...) made absolute
            data["data"][split] = ds.resolved_dump(spec.base_dir)
    if spec.weights:  # absolute files; a run directory pinned to the snapshot it gave
        from netcfg.solver.weights_spec import resolved_weights

        data["weights"] = resolved_weights(spec)
    return data


def run_config(path: str | Path, *, weights_ok: bool = False) -> Path:
    """The config file a command reads for ``path``: a run directory stands for its
    config.yaml (the solver it trained, net inlined); any other path is itself. A
    ``.safetensors`` or ``.solverstate`` holds a net but no solver: refused unless
    ``weights_ok`` (the net-reading commands take its stored net)."""
    path = Path(path)
    if path.is_dir():
        if (path / "config.yaml").is_file():
            return path / "config.yaml"
        raise ConfigError("is a directory without a config.yaml, so not a run directory", file=str(path),
                          hint="give a net or solver file, or a run directory that netcfg train wrote")
    if not weights_ok and path.suffix in (".safetensors", ".solverstate"):
        hint = f"give its run directory, {path.parent}" if (path.parent / "config.yaml").is_file() \
            else "give the solver file that trained it"
        if path.suffix == ".solverstate":  # the optimizer's half of a snapshot, not its weights
            raise ConfigError("is a solver state (what --resume takes): the optimizer's state of a snapshot, "
                              "not the solver (data, lr, ...)", file=str(path),
                              hint=f"{hint}; its weights are {path.with_suffix('.safetensors')}")
        raise ConfigError("is a weights file: it holds the net but not the solver (data, lr, ...)", file=str(path),
                          hint=hint)
    return path


def run_name(spec: SolverSpec) -> str:
    """The default run directory's name: the solver file's stem, or for a run's own
    config.yaml trained again, that run's name (runs/lenet/config.yaml: lenet, not config)."""
    file = Path(spec._source.file) if spec._source is not None else Path("run")
    if file.name == "config.yaml" and file.resolve().parent.name:
        return file.resolve().parent.name
    return file.stem


class RunDir:
    """Where one training run writes its files."""

    def __init__(self, path: Path, spec: SolverSpec, lock: RunLock | None = None):
        self.path = path
        # a net name is free text; as a file-name prefix it must not climb out of the run directory
        self.prefix = spec.snapshot_prefix or _SAFE.sub("_", spec.net_spec.name.lower()).lstrip(".") or "net"
        self._config = to_yaml(resolved_config(spec))
        self.lock = lock
        self.writes = True  # False for torchrun's ranks > 0: rank 0 writes for all (see follow)
        self.closed = False  # close() let the directory go: its Solver may not write there any more

    @classmethod
    def create(cls, spec: SolverSpec, out: str | Path | None = None) -> RunDir:
        """A new run directory, locked for this process: ``runs/<solver name>[-N]`` or ``out``."""
        where = "--out"
        try:
            if out is None:
                base = Path("runs") / run_name(spec)
                base.parent.mkdir(parents=True, exist_ok=True)
                path, n = base, 2
                while True:
                    try:
                        path.mkdir()  # not exists() then mkdir(): two runs started together must not share one
                        break
                    except FileExistsError:
                        path = base.with_name(f"{base.name}-{n}")
                        n += 1
                made = True
            else:
                path = Path(out)
                try:  # not exists() then mkdir(): a run started at the same moment may make it in between,
                    path.mkdir(parents=True)  # and ours, refused by its lock, would delete its directory
                    made = True
                except FileExistsError:
                    if not path.is_dir():  # mkdir's "File exists" read as if a folder were there
                        raise ConfigError(f"cannot create the run directory {path}: it is a file", file=where,
                                          hint="pick a new folder with --out") from None
                    made = False
        except OSError as e:
            raise ConfigError(f"cannot create the run directory {e.filename or out}: {e.strerror}", file=where,
                              hint="pick a writable place with --out") from None
        try:
            lock = RunLock.acquire(path, where)  # a live run there: refused, naming its pid
        except ConfigError:
            if made:  # leave nothing behind
                shutil.rmtree(path, ignore_errors=True)
            raise
        if any(path.glob("*.solverstate")) or (path / "metrics.jsonl").exists():
            lock.release()
            raise ConfigError(f"run directory {path} already holds a run (metrics.jsonl or snapshots); "
                              "refusing to mix runs", file=where,
                              hint="pick a new --out, or continue it with --resume")
        others = sorted(p.name for p in path.iterdir() if p.name not in _RUN_FILES)
        if others:  # a folder of the user's: its config.yaml or train.log would be overwritten
            lock.release()
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise ConfigError(f"--out {path} is a folder that holds other files ({shown})", file=where,
                              hint="give a new or empty folder for the run")
        run = cls(path, spec, lock)
        try:
            run.write_config()
        except WriteError as e:
            run.close()
            if made:  # leave nothing behind
                shutil.rmtree(path, ignore_errors=True)
            raise ConfigError(f"cannot write in the run directory {path}: {e.strerror}", file=where,
                              hint="pick a writable place with --out") from None
        return run

    @classmethod
    def resume(cls, spec: SolverSpec, state_path: Path, log=None) -> RunDir:
        """Continue writing into the directory of an existing snapshot, once no live run
        holds it; half-written files that a killed run left there are removed."""
        path = state_path.resolve().parent
        lock = RunLock.acquire(path, "--resume")
        if lock.previous and log is not None:
            log(f"took over the stale lock of a run that is gone ({lock.previous})")
        for p in remove_stale_temporaries(path):
            if log is not None:
                log(f"removed {p.name}, a file a killed run left half written")
        for name in ("metrics.jsonl", "train.log"):
            if cut_torn_line(path / name) and log is not None:
                log(f"removed the half-written last line of {name} (a record the run was writing when it was killed)")
        return cls(path, spec, lock)

    @classmethod
    def follow(cls, path: Path, spec: SolverSpec) -> RunDir:
        """Rank 0's run directory as another torchrun rank sees it: it knows the paths
        (snapshot names for messages) but writes nothing and takes no lock."""
        run = cls(path, spec)
        run.writes = False
        return run

    def close(self) -> None:
        """Let another run use this directory."""
        self.closed = True
        if self.lock is not None:
            self.lock.release()

    def config_text(self) -> str:
        return self._config

    def write_config(self) -> None:
        """Write config.yaml; a resumed run rewrites it once the resume is accepted,
        so that it holds what the run now continues with (a grown max_iter, say)."""
        if not self.writes:
            return
        atomic_write_bytes(self.path / "config.yaml", self._config.encode())

    def metric(self, record: dict) -> None:
        self._append("metrics.jsonl", json.dumps(record) + "\n")

    def log_line(self, line: str) -> None:
        self._append("train.log", line + "\n")

    def _append(self, name: str, text: str) -> None:
        if not self.writes:
            return
        path, size = self.path / name, None
        try:
            with open(path, "a") as f:
                size = f.tell()  # the end, where a cut-short record would start
                f.write(text)
        except OSError as e:  # a full disk: say so, not a traceback
            if size is not None:  # no half line left for a resumed run to append after (netcfg plot would refuse it)
                with contextlib.suppress(OSError):
                    os.truncate(path, size)
            raise WriteError(path, e) from None

    def snapshot_paths(self, it: int) -> tuple[Path, Path]:
        base = f"{self.prefix}_iter_{it}"  # not with_suffix(): a prefix may hold dots ("lenet.v2")
        return self.path / f"{base}.safetensors", self.path / f"{base}.solverstate"

    def best_paths(self) -> tuple[Path, Path]:
        """The best snapshot's pair (``snapshot_best``), replaced as the metric improves."""
        return self.path / f"{self.prefix}_best.safetensors", self.path / f"{self.prefix}_best.solverstate"

    def latest_snapshot(self, before: int | None = None) -> Path | None:
        """The newest complete snapshot (its .solverstate exists) in this run,
        of an iteration below ``before`` if given."""
        found = [p for it, p in snapshot_states(self.path, self.prefix) if before is None or it < before]
        return found[-1] if found else None


def cut_torn_line(path: Path) -> bool:
    """Cut a last line without its newline from ``path``: a record a run was writing when it
    was killed (or the power went). Appending after it would leave a broken line in the middle
    of the file, which ``netcfg plot`` refuses. True when something was cut."""
    try:
        with open(path, "rb+") as f:
            end = pos = f.seek(0, os.SEEK_END)
            while pos > 0:  # back from the end, a block at a time, to the last newline
                start = max(0, pos - 65536)
                f.seek(start)
                newline = f.read(pos - start).rfind(b"\n")
                if newline >= 0:
                    pos = start + newline + 1
                    break
                pos = start
            if pos < end:
                f.truncate(pos)
            return pos < end
    except OSError:  # none there yet, or not ours to change: the run's first write will say so
        return False


def later_snapshots(state: Path) -> list[Path]:
    """The .solverstate files beside ``state`` (``<prefix>_iter_<N>`` or ``<prefix>_best``) of its
    prefix and a higher iteration, in iteration order."""
    m = _STATE.fullmatch(state.name) or _BEST.fullmatch(state.name)
    it = int(m.group(2)) if m and m.re is _STATE else best_iteration(state) if m else None
    if it is None:
        return []
    return [p for n, p in snapshot_states(state.parent, m.group(1), complete=False) if n > it]


def newest_snapshot(directory: Path) -> Path | None:
    """The complete snapshot (.solverstate with its weights) of the highest iteration in ``directory``.

    Both files are renamed into place whole (weights first), so a state file found
    here is complete; a kill in the middle of a write leaves only a ``*.tmp-<pid>``.
    A ``<prefix>_best`` snapshot counts at the iteration it was written (its weights'
    metadata): it is taken only when it is newer than every ``<prefix>_iter_<N>`` (a
    test came after the last periodic snapshot), so a run directory always stands for
    where the run got to, never for an earlier best."""
    found = [(it, 1, p) for it, p in snapshot_states(Path(directory))]  # a tie: the periodic one
    for p in Path(directory).glob("*_best.solverstate"):
        it = best_iteration(p) if _BEST.fullmatch(p.name) else None
        if it is not None:
            found.append((it, 0, p))
    return max(found)[2] if found else None


def best_iteration(state: Path) -> int | None:
    """The iteration of a ``<prefix>_best`` snapshot, from its weights' metadata; None when
    the pair is not complete or the weights file is not readable."""
    weights = state.with_suffix(".safetensors")
    if not state.is_file() or not weights.is_file():
        return None
    try:
        with safetensors.safe_open(str(weights), framework="pt") as f:
            it = (f.metadata() or {}).get("iter", "")
    except Exception:  # safetensors raises its own error types for a bad header: not a snapshot
        return None
    return int(it) if it.isdigit() else None


_STATE = re.compile(r"(.+)_iter_(\d+)\.solverstate")
_BEST = re.compile(r"(.+)_best\.solverstate")


def snapshot_states(directory: Path, prefix: str | None = None, *, complete: bool = True) -> list[tuple[int, Path]]:
    """(iteration, .solverstate) of the snapshots in ``directory`` (of ``prefix``, if given),
    by iteration; ``complete``: only those whose .safetensors is there too."""
    found = []
    for p in directory.glob("*_iter_*.solverstate"):
        m = _STATE.fullmatch(p.name)
        if m and (prefix is None or m.group(1) == prefix) and (not complete or p.with_suffix(".safetensors").is_file()):
            found.append((int(m.group(2)), p))
    return sorted(found)
