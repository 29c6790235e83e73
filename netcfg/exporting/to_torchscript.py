"""``torchscript``: the deploy net traced with ``torch.jit.trace`` and saved with ``torch.jit.save``.

Traced, not scripted: layers take a variable number of bottoms, which the script
compiler refuses, and a trace of a net without data-dependent control flow (every
built-in layer) records shape arithmetic, so the batch stays free. PyTorch has
deprecated TorchScript in favour of ``torch.export`` (format ``exported``); it is
still what LibTorch (C++) and older mobile runtimes load. Load with
``torch.jit.load(f)``; call with positional inputs; returns a tuple of tops.
"""

from __future__ import annotations

import io

import torch

from netcfg.exporting.job import ExportJob, Runner, quiet
from netcfg.solver.checkpoint import atomic_write_bytes

__all__ = ["run", "write"]


def write(job: ExportJob) -> None:
    module = job.module()
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(module, job.example(), check_trace=False)
        extra = {f"{k}.txt": v for k, v in job.metadata.items()}  # torch.jit.load(f, _extra_files=...) reads them
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files=extra)
    atomic_write_bytes(job.path, buffer.getvalue())  # a full disk is a WriteError, not an exporter's failure


def run(job: ExportJob) -> Runner:
    with quiet():
        loaded = torch.jit.load(str(job.path), map_location="cpu")

    def call(inputs):
        with quiet(), torch.no_grad():
            out = loaded(*inputs)
        return tuple(out)

    return call
