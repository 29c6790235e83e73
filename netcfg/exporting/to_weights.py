"""``safetensors`` and ``pt``: the deploy net's weights, keyed ``<layer>.<blob>``.

safetensors carries the deploy net config in its metadata, so
``netcfg.load_net_with_weights(file)`` rebuilds the model from that one file. ``pt``
is what PyTorch users mean by weights in a ``.pt``: the ``state_dict`` written by
``torch.save`` (tensors only, so ``torch.load(f, weights_only=True)`` reads it
without running pickled code); it holds no config: pair it with the net file.
"""

from __future__ import annotations

import torch

from netcfg.exporting.job import ExportJob, Runner
from netcfg.exporting.load import load_net_with_weights
from netcfg.net.module import Net
from netcfg.solver.checkpoint import atomic_write_bytes
from netcfg.solver.weights_file import save_weights

__all__ = ["run_pt", "run_safetensors", "write_pt", "write_safetensors"]


def write_safetensors(job: ExportJob) -> None:
    extra = {k: v for k, v in job.metadata.items() if k != "netcfg.net"}
    save_weights(job.path, job.net, job.deploy.config, extra=extra)


def run_safetensors(job: ExportJob) -> Runner:
    net = load_net_with_weights(job.path)  # the round trip a user makes
    return _positional(net, job)


def write_pt(job: ExportJob) -> None:
    import io

    state = {k: v.detach().to("cpu").clone() for k, v in job.net.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(job.path, buf.getvalue())


def run_pt(job: ExportJob) -> Runner:
    net = Net(job.deploy.graph)  # what the docs tell users: build the net, load the state_dict
    net.load_state_dict(torch.load(job.path, map_location="cpu", weights_only=True))
    return _positional(net, job)


def _positional(net, job: ExportJob) -> Runner:
    names, outputs = job.deploy.inputs, job.deploy.outputs

    def run(inputs):
        with torch.no_grad():
            out = net(**dict(zip(names, inputs)))
        return tuple(out[k] for k in outputs)

    return run
