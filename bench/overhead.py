"""What does netcfg cost over hand-written PyTorch? Training throughput, netcfg / its hand-written twin.

For each net (configs/lenet.yaml, configs/resnet9_28.yaml, configs/mlp.yaml) the
netcfg side is the real thing: ``Solver.step`` of a solver file (the data loader,
the layout, the loss sum, the per-step NaN check and loss read-back, the Ctrl-C
bookkeeping, the optimizer groups from lr_mult/decay_mult). The twin
(bench/twins.py) is the loop a PyTorch user writes: the same data as a uint8 tensor
in memory, a random permutation per epoch, ``x.float() * scale``, forward, backward,
``torch.optim.SGD`` with the same groups and hyperparameters (torch's default kernel,
or with ``--twin-sgd fused`` the fused one netcfg picks, which leaves only the tool's
own per-step work between the two). The twin starts from netcfg's weights (checked:
the same first loss) and uses netcfg's memory format, so the ratio measures the tool,
not a layout choice.

Blocks of steps of the two alternate in ABBA order in one process, so that a
neighbour's load hits both alike; the ratio is the median over block pairs, the
spread their 10th-90th percentiles. Time is this process's CPU time by default (on
a shared machine wall-clock time measures the neighbours); ``--wall`` on a quiet one.

``--options`` also measures what a user switches on in the solver file, against
the hand-written eager twin in its default layout (contiguous, fp32):
``memory_format: contiguous|channels_last``, ``precision: bf16`` and ``compile: true``
(compile time reported separately).

Run: python bench/overhead.py [--nets lenet,resnet9_28,mlp] [--blocks 10] [--options] [--wall] [--twin-sgd fused]
                              [--nan-check per-iteration]
Writes bench/results/overhead.json (or --json PATH). Numbers: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from twins import SGD_KERNELS, TWINS, copy_from, sgd  # noqa: E402

from netcfg.solver import Solver  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCALE = 0.00390625
SAMPLES = 12_800


def make_solver(tmp: Path, net: str, batch: int, device: str = "cpu", deferred_check: bool | None = None,
                **options) -> Solver:
    """A Solver for configs/<net>.yaml on random 28x28 uint8 images (an npz in ``tmp``)."""
    data = tmp / "data.npz"
    if not data.exists():
        rng = np.random.default_rng(0)
        np.savez(data, x=rng.integers(0, 256, (SAMPLES, 1, 28, 28), dtype=np.uint8),
                 y=rng.integers(0, 10, SAMPLES).astype(np.int64))
    lines = [f"net: {ROOT / 'configs' / (net + '.yaml')}",
             f"data: {{train: {{source: npz, path: {data}, split: train, batch_size: {batch}, "
             f"arrays: {{data: x, label: y}}, scale: {SCALE}}}}}",
             "type: SGD", "base_lr: 0.01", "momentum: 0.9", "weight_decay: 0.0005", "max_iter: 1000000",
             "display: 0", "snapshot_after_train: false", "random_seed: 1", f"device: {device}",
             *(f"{k}: {v}" for k, v in options.items())]
    path = tmp / f"{net}-{len(list(tmp.glob('*.yaml')))}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return Solver.from_file(path, out=tmp / path.stem, log=lambda line: None, deferred_check=deferred_check)


class Twin:
    """The hand-written loop: the twin net, SGD with netcfg's groups, in-memory uint8 data."""

    def __init__(self, name: str, solver: Solver, channels_last: bool, kernel: str = "default"):
        self.model = TWINS[name]().to(solver.device)
        copy_from(self.model, solver.net)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        mine = list(self.model.parameters())
        index = {id(p): i for i, p in enumerate(solver.net.parameters())}
        groups = [{"params": [mine[index[id(p)]] for p in g["params"]], "lr": g["lr"],
                   "weight_decay": g["weight_decay"]} for g in solver.optimizer.param_groups]
        self.optimizer = sgd(groups, kernel, lr=0.01, momentum=0.9)
        split = solver.train_data.split.tensors
        self.x, self.y = split["data"].to(solver.device), split["label"].to(solver.device)
        self.batch = solver.spec.data.train.batch_size
        self.order, self.pos = torch.randperm(len(self.y), device=self.x.device), 0

    def next_batch(self):
        if self.pos + self.batch > len(self.order):
            self.order, self.pos = torch.randperm(len(self.y), device=self.x.device), 0
        idx = self.order[self.pos:self.pos + self.batch]
        self.pos += self.batch
        x = self.x[idx].float().mul_(SCALE)
        return (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x), self.y[idx]

    def step(self, n: int) -> None:
        self.model.train()
        for _ in range(n):
            x, y = self.next_batch()
            loss = self.model(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


def first_losses_agree(name: str, solver: Solver, twin: Twin) -> float:
    """The twin computes netcfg's loss on the same batch (eval mode: no dropout, fixed BN)."""
    batch = {k: v[:32].to(solver.device) for k, v in solver.train_data.split.tensors.items()}
    x = batch["data"].float() * SCALE
    solver.net.eval()
    twin.model.eval()
    with torch.no_grad():
        a = float(solver.net.loss(solver.net(data=x, label=batch["label"])))
        b = float(twin.model(x, batch["label"]))
    solver.net.train()
    if abs(a - b) > 1e-4 * max(1.0, abs(a)):
        raise SystemExit(f"{name}: the twin is not the same net (loss {b} vs netcfg's {a})")
    return a


def alternate(runs: dict, steps: int, blocks: int, clock) -> dict[str, list[float]]:
    """Seconds per step of each run, per block, in ABBA order."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for b in range(blocks):
        for k in (names if b % 2 == 0 else names[::-1]):
            t0 = clock()
            runs[k](steps)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[k].append((clock() - t0) / steps)
    return times


def ratio_stats(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
    """Throughput ratio (theirs time / ours time) per block: median, 10th and 90th percentile."""
    r = sorted(t / o for o, t in zip(ours, theirs))
    q = statistics.quantiles(r, n=10) if len(r) >= 2 else [r[0]] * 9
    return statistics.median(r), q[0], q[-1]


def overhead(name: str, args, tmp: Path, clock) -> dict:
    solver = make_solver(tmp, name, args.batch, args.device,
                         deferred_check=False if args.nan_check == "per-iteration" else None)
    twin = Twin(name, solver, solver.channels_last, args.twin_sgd)
    loss = first_losses_agree(name, solver, twin)
    solver.step(10)
    twin.step(10)
    times = alternate({"netcfg": solver.step, "twin": twin.step}, args.steps, args.blocks, clock)
    med, lo, hi = ratio_stats(times["netcfg"], times["twin"])
    per_s = {k: args.batch / statistics.median(v) for k, v in times.items()}
    print(f"{name:<11} {per_s['netcfg']:>10,.0f} {per_s['twin']:>10,.0f}   {med:.3f} [{lo:.3f}, {hi:.3f}]"
          f"   {'channels_last' if solver.channels_last else 'contiguous'}", flush=True)
    return {"net": name, "netcfg_images_per_s": round(per_s["netcfg"], 1), "twin_images_per_s": round(per_s["twin"], 1),
            "ratio": round(med, 4), "ratio_p10": round(lo, 4), "ratio_p90": round(hi, 4),
            "memory_format": "channels_last" if solver.channels_last else "contiguous", "first_loss": loss}


def options(name: str, args, tmp: Path, clock) -> list[dict]:
    """netcfg with each solver option against the hand-written eager twin (contiguous, fp32)."""
    variants = {"contiguous": {"memory_format": "contiguous"}, "channels_last": {"memory_format": "channels_last"},
                "bf16": {"precision": "bf16"}, "compile": {"compile": "true"}}
    solvers = {}
    compile_s = None
    for k, opts in variants.items():
        s = make_solver(tmp, name, args.batch, args.device, **opts)
        t0 = time.perf_counter()
        s.step(3)  # compiles, for compile: true
        if k == "compile":
            compile_s = time.perf_counter() - t0
        solvers[k] = s
    twin = Twin(name, solvers["contiguous"], channels_last=False, kernel=args.twin_sgd)
    runs = {"twin": twin.step, **{k: s.step for k, s in solvers.items()}}
    for run in runs.values():
        run(5)
    times = alternate(runs, args.steps, args.blocks, clock)
    rows = []
    for k in variants:
        med, lo, hi = ratio_stats(times[k], times["twin"])
        rows.append({"net": name, "variant": k, "images_per_s": round(args.batch / statistics.median(times[k]), 1),
                     "vs_eager_twin": round(med, 3), "p10": round(lo, 3), "p90": round(hi, 3),
                     **({"compile_seconds": round(compile_s, 1)} if k == "compile" else {})})
        extra = f"   (compile {compile_s:.0f} s wall)" if k == "compile" else ""
        print(f"{name:<11} {k:<14} {rows[-1]['images_per_s']:>10,.0f}   {med:.2f}x [{lo:.2f}, {hi:.2f}]{extra}",
              flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default="lenet,resnet9_28,mlp")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="steps per block")
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--wall", action="store_true", help="wall-clock time instead of this process's CPU time")
    p.add_argument("--options", action="store_true", help="also measure memory_format, bf16 and compile")
    p.add_argument("--device", default="cpu", help="cpu or cuda (use --wall on CUDA: CPU time misses the GPU)")
    p.add_argument("--twin-sgd", choices=SGD_KERNELS, default="default",
                   help="the twin's SGD kernel: torch's default (what a user writes) or netcfg's fused one")
    p.add_argument("--nan-check", choices=["default", "per-iteration"], default="default",
                   help="per-iteration: netcfg's NaN/Inf check with a host sync each step, which CUDA's default defers")
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/overhead.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.wall else time.process_time
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{'wall-clock' if args.wall else 'CPU'} time, {args.blocks} blocks of {args.steps} steps, "
          f"twin SGD kernel: {args.twin_sgd}, NaN check: {args.nan_check}")
    print(f"{'net':<11} {'netcfg/s':>10} {'twin/s':>10}   ratio [p10, p90]   layout")
    result = {"machine": platform.processor() or platform.machine(), "device": args.device, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "clock": "wall" if args.wall else "cpu", "batch": args.batch,
              "twin_sgd": args.twin_sgd, "nan_check": args.nan_check, "date": time.strftime("%Y-%m-%d"), "overhead": [], "options": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets.split(","):
            result["overhead"].append(overhead(name, args, Path(tmp), clock))
        if args.options:
            print(f"\n{'net':<11} {'variant':<14} {'images/s':>10}   vs hand-written eager [p10, p90]")
            for name in args.nets.split(","):
                result["options"] += options(name, args, Path(tmp), clock)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
