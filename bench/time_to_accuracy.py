"""Time to 90%: Caffe's LeNet recipe on Fashion-MNIST, netcfg against the hand-written loop.

netcfg trains solvers/lenet_fashion_mnist.yaml through ``Solver`` (its loader, test
net, lr policy, every per-step check). The hand-written loop is what a PyTorch user
writes from the same recipe: the IDX files read with gzip + numpy, the same LeNet
(bench/twins.py) starting from netcfg's initial weights, ``torch.optim.SGD`` with
Caffe's groups (biases at twice the rate) and its ``inv`` policy, batch 64, a new
permutation per epoch drawn from the same seed as netcfg's (so both see the same
batches), a test on the 10,000 test images every 500 iterations. Both use the same
memory format (netcfg's choice, or ``--memory-format``).

The two runs advance in lockstep, 500 iterations (one test interval) of one, then of
the other, so that a shared machine's load hits both alike (the solver's own tests are
off: the loop calls ``test()`` as the hand-written one does); each run's clock counts
its own chunks and tests only. The result is the time each took to reach
``--target`` test accuracy and their ratio netcfg / hand-written (target: 1.02 or
better, i.e. at most 2% slower).

The loop's SGD is torch's default kernel unless ``--twin-sgd fused``: netcfg uses the
fused kernel, whose float rounding differs, so with the default the two runs' accuracies
part by a few hundredths of a point and may cross the target at different tests; with
``fused`` they agree at every test and the time ratio is the tool's cost alone.

Run: python bench/time_to_accuracy.py [--target 0.90] [--max-iter 15000] [--wall] [--twin-sgd fused]
Writes bench/results/time_to_accuracy.json. Numbers: bench/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from twins import SGD_KERNELS, LeNet, copy_from, sgd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")
INTERVAL = 500


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = np.frombuffer(raw, ">u4", dims, 4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


class HandWritten:
    """Caffe's LeNet recipe as a plain PyTorch loop."""

    def __init__(self, init_from, seed: int, channels_last: bool, device=torch.device("cpu"), kernel: str = "default"):
        """``init_from``: a netcfg net whose initial weights to copy (None: PyTorch's own init)."""
        torch.manual_seed(seed)
        self.seed = seed
        self.model = LeNet().to(device)
        if init_from is not None:
            copy_from(self.model, init_from)
        self.cl = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        weights = [p for n, p in self.model.named_parameters() if n.endswith("weight")]
        biases = [p for n, p in self.model.named_parameters() if n.endswith("bias")]
        self.opt = sgd([{"params": weights, "lr_mult": 1.0}, {"params": biases, "lr_mult": 2.0}], kernel,
                       lr=0.01, momentum=0.9, weight_decay=5e-4)
        load = lambda name: torch.from_numpy(read_idx(FASHION / name).copy()).to(device)  # noqa: E731
        self.x, self.y = load("train-images-idx3-ubyte.gz")[:, None], load("train-labels-idx1-ubyte.gz").long()
        self.tx, self.ty = load("t10k-images-idx3-ubyte.gz")[:, None], load("t10k-labels-idx1-ubyte.gz").long()
        self.device = device
        self.epoch, self.it, self.pos = 0, 0, 0
        self.order = self.permutation(0)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's sample order: seeded from (seed, epoch) exactly as netcfg's loader does,
        so that with the same initial weights both runs see the same batches (same seeds)."""
        mixed = np.random.SeedSequence([self.seed % 2**64, epoch]).generate_state(1, np.uint64)[0]
        gen = torch.Generator().manual_seed(int(mixed))
        return torch.randperm(len(self.y), generator=gen).to(self.device)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().mul_(0.00390625)
        return x.contiguous(memory_format=torch.channels_last) if self.cl else x

    def train(self, n: int) -> None:
        self.model.train()
        for _ in range(n):
            if self.pos >= len(self.order):  # a new epoch (the last batch of one may be short)
                self.epoch, self.pos = self.epoch + 1, 0
                self.order = self.permutation(self.epoch)
            idx = self.order[self.pos:self.pos + 64]
            self.pos += 64
            lr = 0.01 * (1 + 1e-4 * self.it) ** -0.75  # Caffe's inv policy
            for g in self.opt.param_groups:
                g["lr"] = lr * g["lr_mult"]
            loss = self.model(self.images(self.x[idx]), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.it += 1

    @torch.no_grad()
    def test(self) -> float:
        self.model.eval()
        correct = 0
        for i in range(0, len(self.ty), 100):
            logits = self.model.logits(self.images(self.tx[i:i + 100]))
            correct += int((logits.argmax(1) == self.ty[i:i + 100]).sum())
        return correct / len(self.ty)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", type=float, default=0.90)
    p.add_argument("--max-iter", type=int, default=15000)
    p.add_argument("--memory-format", choices=["auto", "channels_last", "contiguous"], default="auto")
    p.add_argument("--wall", action="store_true", help="wall-clock time instead of this process's CPU time")
    p.add_argument("--device", default="cpu", help="cpu or cuda (on CUDA, use --wall: CPU time misses the GPU)")
    p.add_argument("--twin-sgd", choices=SGD_KERNELS, default="default",
                   help="the hand-written loop's SGD kernel: torch's default (what a user writes; float rounding "
                        "then parts the two runs' accuracies slightly) or netcfg's fused one (identical accuracies)")
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/time_to_accuracy.json")
    args = p.parse_args()
    if not FASHION.is_dir():
        raise SystemExit(f"needs Fashion-MNIST in {FASHION} (apt-get install dataset-fashion-mnist)")
    clock = time.perf_counter if args.wall else time.process_time
    from netcfg.solver import Solver  # here: bench/memory.py imports HandWritten without netcfg

    with tempfile.TemporaryDirectory() as tmp:
        solver = Solver.from_file(ROOT / "solvers/lenet_fashion_mnist.yaml",
                                  [f"max_iter={args.max_iter}", "test_iter=null", "display=0", "snapshot=0", "test_interval=0",
                                   f"memory_format={args.memory_format}", f"device={args.device}"],
                                  out=Path(tmp) / "run", log=lambda line: None)
        hand = HandWritten(solver.net, solver.spec.random_seed, solver.channels_last, solver.device, args.twin_sgd)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{'channels_last' if solver.channels_last else 'contiguous'}, {'wall' if args.wall else 'CPU'} time, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"{'iter':>6} {'netcfg acc':>10} {'s':>7} {'hand acc':>9} {'s':>7}")
        spent = {"netcfg": 0.0, "hand": 0.0}
        reached: dict[str, tuple[int, float]] = {}
        it = 0
        while it < args.max_iter and len(reached) < 2:
            t0 = clock()
            solver.step(INTERVAL)
            acc_n = solver.test()["accuracy"]
            spent["netcfg"] += clock() - t0
            t0 = clock()
            hand.train(INTERVAL)
            acc_h = hand.test()
            spent["hand"] += clock() - t0
            it += INTERVAL
            for k, acc in (("netcfg", acc_n), ("hand", acc_h)):
                if acc >= args.target and k not in reached:
                    reached[k] = (it, spent[k])
            print(f"{it:>6} {acc_n:>10.4f} {spent['netcfg']:>7.1f} {acc_h:>9.4f} {spent['hand']:>7.1f}", flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "clock": "wall" if args.wall else "cpu", "target": args.target, "twin_sgd": args.twin_sgd,
              "memory_format": "channels_last" if solver.channels_last else "contiguous",
              "reached": {k: {"iter": i, "seconds": round(s, 2)} for k, (i, s) in reached.items()},
              "seconds_per_interval": {k: round(v / (it / INTERVAL), 3) for k, v in spent.items()}}
    if len(reached) == 2:
        result["time_ratio"] = round(reached["netcfg"][1] / reached["hand"][1], 4)
        print(f"{args.target:.0%} reached: netcfg at iteration {reached['netcfg'][0]} after {reached['netcfg'][1]:.1f} s, "
              f"hand-written at {reached['hand'][0]} after {reached['hand'][1]:.1f} s")
    ratio = spent["netcfg"] / spent["hand"]
    result["per_iteration_time_ratio"] = round(ratio, 4)
    print(f"time per interval (train + test), netcfg / hand-written: {ratio:.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
