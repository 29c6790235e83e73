"""How long until netcfg answers? Wall and CPU time of `netcfg --help` and `netcfg check` in fresh processes.

Targets (issue 8): ``netcfg --help`` under 0.3 s (the CLI imports no torch for it),
``netcfg check configs/resnet50.yaml`` under 2.5 s (most of it importing torch).
Each command runs ``--repeat`` times in a new process; the table shows the best and
the median wall time and the CPU time (user + system) of the best run. On a shared
machine the CPU time is the steadier number: it is what the command costs.

Run: python bench/startup.py [--repeat 5]
Writes bench/results/startup.json (or --json PATH). Numbers: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {  # name: (argv after `netcfg`, target seconds)
    "netcfg --help": (["--help"], 0.3),
    "netcfg check configs/lenet.yaml": (["check", "configs/lenet.yaml"], None),
    "netcfg check configs/resnet50.yaml": (["check", "configs/resnet50.yaml"], 2.5),
    "python -c 'import torch'": (None, None),
}


def run_once(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/startup.json")
    args = p.parse_args()
    exe = shutil.which("netcfg")
    if exe is None:
        raise SystemExit("netcfg is not on PATH: pip install -e . first")
    print(f"load average {os.getloadavg()[0]:.2f}, best of {args.repeat} fresh processes")
    print(f"{'command':<38} {'best wall':>9} {'median':>8} {'CPU':>6}  target")
    rows = []
    for name, (argv, target) in COMMANDS.items():
        full = [sys.executable, "-c", "import torch"] if argv is None else [exe, *argv]
        runs = [run_once(full) for _ in range(args.repeat)]
        best = min(runs)
        med = statistics.median(w for w, _ in runs)
        ok = "" if target is None else (f"< {target} s " + ("ok" if best[0] < target else "MISSED"))
        print(f"{name:<38} {best[0]:>8.2f}s {med:>7.2f}s {best[1]:>5.2f}s  {ok}", flush=True)
        rows.append({"command": name, "best_wall_s": round(best[0], 3), "median_wall_s": round(med, 3),
                     "cpu_s": round(best[1], 3), "target_s": target})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg()[0],
                                     "runs": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
