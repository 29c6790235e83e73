"""Peak memory of a training run, netcfg against the hand-written twin, each in a fresh process.

The run: ``--iters`` iterations of Caffe's LeNet recipe on Fashion-MNIST
(solvers/lenet_fashion_mnist.yaml) and one test on the 10,000 test images; netcfg
through ``Solver`` (which also writes its run directory and a snapshot), the
hand-written loop from bench/time_to_accuracy.py. Peak memory is the child's
maximum resident set size on the CPU (``ru_maxrss``), or
``torch.cuda.max_memory_allocated`` with ``--device cuda``. Both processes import
torch and hold the data set, so the ratio shows what netcfg itself adds. Target
(issue 8): within 1.1x.

Run: python bench/memory.py [--iters 500] [--device cpu|cuda]
Writes bench/results/memory.json. Numbers: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(kind: str, iters: int, device: str) -> None:
    """Train in this process and print the peak memory in MiB."""
    import torch

    if kind == "netcfg":
        from netcfg.solver import Solver

        with tempfile.TemporaryDirectory() as tmp:
            Solver.from_file(ROOT / "solvers/lenet_fashion_mnist.yaml",
                             [f"max_iter={iters}", "test_iter=null", "display=0", "snapshot=0", f"device={device}",
                              f"test_interval={iters}", "test_initialization=false"],
                             out=Path(tmp) / "run", log=lambda line: None).solve()
    else:  # no netcfg import at all: torch, the data and the loop alone
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from time_to_accuracy import HandWritten

        hand = HandWritten(None, 1, channels_last=True, device=torch.device(device))
        hand.train(iters)
        hand.test()
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"{peak:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", choices=["netcfg", "hand"], help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/memory.json")
    args = p.parse_args()
    if args.child:
        child(args.child, args.iters, args.device)
        return
    peaks: dict[str, list[float]] = {"netcfg": [], "hand": []}
    for _ in range(args.repeat):
        for kind in peaks:
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--iters", str(args.iters),
                                  "--device", args.device], check=True, capture_output=True, text=True).stdout
            peaks[kind].append(float(out.split()[-1]))
    what = "max allocated (CUDA)" if args.device == "cuda" else "peak RSS"
    best = {k: min(v) for k, v in peaks.items()}
    ratio = best["netcfg"] / best["hand"]
    print(f"LeNet on Fashion-MNIST, {args.iters} iterations + a test, {what}, best of {args.repeat} processes:")
    print(f"  netcfg {best['netcfg']:.1f} MiB, hand-written {best['hand']:.1f} MiB, ratio {ratio:.3f} (target <= 1.1)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "device": args.device, "measure": what,
                                     "iters": args.iters, "mib": peaks, "ratio": round(ratio, 4)}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
