"""``exported``: a ``torch.export`` ExportedProgram saved with ``torch.export.save`` (``.pt2``).

The program's outputs are a dict keyed by top name; a dynamic batch is a
``torch.export.Dim("batch")`` shared by every input, a fixed ``--batch-size`` a
static graph. Load with ``torch.export.load(f).module()``, call with positional
inputs. The net config is stored as the extra file ``netcfg.net.txt``.
"""

from __future__ import annotations

import io

import torch

from netcfg.exporting.job import ExportJob, Runner, quiet
from netcfg.solver.checkpoint import atomic_write_bytes

__all__ = ["dynamic_shapes", "run", "write"]


def dynamic_shapes(job: ExportJob, args: tuple) -> tuple | None:
    """torch.export's spec for the one ``*inputs`` parameter: dim 0 of every input is the batch."""
    if job.batch is not None:
        return None
    batch = torch.export.Dim("batch", min=1)
    return (tuple({0: batch} for _ in args),)


def write(job: ExportJob) -> None:
    module = job.module(as_dict=True)
    args = job.example()
    with quiet(), torch.no_grad():
        program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes(job, args), strict=False)
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={f"{k}.txt": v for k, v in job.metadata.items()})
    atomic_write_bytes(job.path, buffer.getvalue())  # a full disk is a WriteError, not an exporter's failure


def run(job: ExportJob) -> Runner:
    with quiet():
        module = torch.export.load(str(job.path)).module()
    outputs = job.deploy.outputs

    def call(inputs):
        with quiet(), torch.no_grad():
            out = module(*inputs)
        return tuple(out[k] for k in outputs)

    return call
