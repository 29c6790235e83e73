"""``onnx``: the deploy net as an ONNX model, checked in onnxruntime.

Opset 18 and above go through PyTorch's ``torch.export``-based exporter (the default
since torch 2.9; 18 is its native opset). It cannot lower a model below 18 (it
falls back to onnx's version converter, which has no adapters for common ops and
then leaves the model at 18), so ``--opset`` 9 to 17 use PyTorch's TorchScript-based
exporter, which writes each opset natively. Either way the written file's opset is
checked against the one asked for. Inputs and outputs are named after the blobs;
a dynamic batch is the symbolic dimension ``batch``. The metadata properties hold
the deploy net config (``netcfg.net``) and the export's facts (``netcfg.export``).
"""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import torch

from netcfg.errors import NetcfgError
from netcfg.exporting.job import ExportJob, Runner, quiet
from netcfg.exporting.to_program import dynamic_shapes
from netcfg.layers.pool import floor_pooling
from netcfg.solver.checkpoint import atomic_write_bytes

__all__ = ["DEFAULT_OPSET", "DYNAMO_MIN_OPSET", "has_runtime", "opset_range", "run", "write"]

DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18
MIN_OPSET = 9


def require() -> None:
    """Refuse early, with the install line, when the `onnx` extra is missing."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise NetcfgError(f"ONNX export needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                          "not installed; "
                          "pip install 'netcfg[onnx]' (onnx, onnxscript, onnxruntime)")


def has_runtime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def opset_range() -> tuple[int, int]:
    """The opsets this installation can write: 9 to the newest the onnx package knows."""
    import onnx.defs

    return MIN_OPSET, onnx.defs.onnx_opset_version()


def write(job: ExportJob) -> None:
    import onnx

    opset = job.opset or DEFAULT_OPSET
    _refuse_shared_names(job)
    module = job.module()
    args = job.example()
    names, outputs = job.deploy.inputs, job.deploy.outputs
    with quiet(), torch.no_grad():
        if opset >= DYNAMO_MIN_OPSET:
            # placeholders, named after the blobs below: the exporter names its values after ops
            # (relu, linear), and renamed onto a blob called so, two values would share the name
            slots = [f"netcfg_input_{i}" for i in range(len(names))], [f"netcfg_output_{i}" for i in range(len(outputs))]
            program = torch.onnx.export(module, args, input_names=slots[0], output_names=slots[1], opset_version=opset,
                                        dynamo=True, dynamic_shapes=dynamic_shapes(job, args), external_data=False,
                                        verbose=False)
            model = program.model_proto
            _name_values(model.graph, dict(zip([*slots[0], *slots[1]], [*names, *outputs])))
        else:
            buf = io.BytesIO()
            axes = {n: {0: "batch"} for n in [*names, *outputs]} if job.batch is None else None
            with floor_pooling(module, opset < 10):  # no ceil_mode before opset 10
                torch.onnx.export(module, args, buf, input_names=names, output_names=outputs, opset_version=opset,
                                  dynamo=False, dynamic_axes=axes)
            model = onnx.load_from_string(buf.getvalue())
    _restore_inputs(model, job)
    got = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise NetcfgError(f"the ONNX exporter wrote opset {got} when opset {opset} was asked for; "
                          f"try --opset {DYNAMO_MIN_OPSET} or later")
    for key, value in job.metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.producer_name = "netcfg"
    atomic_write_bytes(job.path, model.SerializeToString())


def _refuse_shared_names(job: ExportJob) -> None:
    """An output named as an input (an in-place layer on the input, ``top: data``) would be
    two values of one name, which ONNX cannot hold."""
    for name in set(job.deploy.outputs) & set(job.deploy.inputs):
        layer = [n.name for n in job.deploy.graph.nodes if name in n.tops][-1]
        raise NetcfgError(f"ONNX cannot hold output '{name}': it has the name of an input, which layer '{layer}' "
                          f"rewrites in place, and ONNX names each value once (give '{layer}' a top of its own, "
                          f"such as top: {name}_out, or leave '{name}' out of --top)")


def _name_values(graph, names: dict[str, str]) -> None:
    """Rename the graph's values ``names`` maps (placeholder -> blob), moving any other value
    already called like a blob out of the way first."""
    values = {v for node in graph.node for v in (*node.input, *node.output)}
    values |= {v.name for v in (*graph.input, *graph.output)} | {t.name for t in graph.initializer}
    taken, mapping = values | set(names.values()), dict(names)
    for value in sorted(values & set(names.values()) - set(names)):
        fresh, n = f"{value}_", 1
        while fresh in taken:
            fresh, n = f"{value}_{n}", n + 1
        taken.add(fresh)
        mapping[value] = fresh
    _rename(graph, mapping)


def _rename(graph, mapping: dict[str, str]) -> None:
    for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        v.name = mapping.get(v.name, v.name)
    for node in graph.node:
        for field in (node.input, node.output):
            renamed = [mapping.get(v, v) for v in field]
            del field[:]
            field.extend(renamed)
        for attr in node.attribute:  # subgraphs (If, Loop) read outer values by name
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename(sub, mapping)


def _restore_inputs(model, job: ExportJob) -> None:
    """Give the graph every input of the deploy net, in its order. The TorchScript-based
    exporter (opsets below 18) drops an input no op reads the values of (a Crop's
    reference, read for its shape only); a user feeding every input by name would then
    be refused by onnxruntime. Put back, the input is declared and unused."""
    from onnx import TensorProto, helper

    graph = model.graph
    present = {i.name: i for i in graph.input}
    ordered = []
    for name in job.deploy.inputs:
        if name not in present:
            blob = job.deploy.graph.inputs[name]  # the declared blob: an in-place layer may rebind the name
            elem = (TensorProto.BFLOAT16 if blob.dtype == "bfloat16"
                    else helper.np_dtype_to_tensor_dtype(np.dtype(blob.dtype)))
            dims = ["batch" if job.batch is None else job.batch, *blob.shape]
            present[name] = helper.make_tensor_value_info(name, elem, dims)
        ordered.append(present.pop(name))
    ordered += present.values()  # none expected; kept rather than dropped
    del graph.input[:]
    graph.input.extend(ordered)


def run(job: ExportJob) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(job.path), options, providers=["CPUExecutionProvider"])
    names = job.deploy.inputs

    def call(inputs):  # every input by name, as the file's users feed it
        out = session.run(job.deploy.outputs, {n: x.numpy() for n, x in zip(names, inputs)})
        return tuple(torch.from_numpy(o) for o in out)

    return call
