"""Check a solver as a whole: its net in both phases and its data against the net's inputs."""

from __future__ import annotations

import torch

from netcfg.data.loader import BatchLoader
from netcfg.data.split import load_source
from netcfg.errors import ConfigError, ConfigErrors, did_you_mean
from netcfg.net import Graph, build_graph, float_inputs
from netcfg.solver.keep import best_metric_errors
from netcfg.solver.spec import SolverSpec

__all__ = ["check_solver", "checked_loader", "match_inputs", "check_batches", "check_labels", "nothing_to_train"]


def match_inputs(spec: SolverSpec, split: str, graph: Graph, tensors: dict[str, tuple[tuple[int, ...], str]],
                 origins: dict[str, tuple] | None = None) -> list[ConfigError]:
    """Errors for each net input the data split does not deliver with the right shape and dtype,
    located at the data key a tensor comes from (``origins``: a sub-source, an ``inputs`` rename)."""
    errors = []
    for name, blob in graph.inputs.items():
        where = ("data", split) + (origins or {}).get(name, ())
        if name not in tensors:
            near = did_you_mean(name, tensors, show_all=0)
            close = near.split("'")[1] if near else None  # point at the key that made the near miss
            where = ("data", split) + (origins or {}).get(close, ())
            errors.append(ConfigError(
                f"the net's input '{name}' is not among the {split} data's tensors {sorted(tensors)}", where,
                hint=(near + "; " if near else "") + f"rename one with inputs: {{<tensor>: {name}}}"))
            continue
        shape, dtype = tensors[name]
        if tuple(shape) != tuple(blob.shape):
            errors.append(ConfigError(
                f"the {split} data's '{name}' has per-sample shape {list(shape)} but the net's input "
                f"'{name}' is {list(blob.shape)}", where, hint=_reshape_hint(tuple(shape), tuple(blob.shape))))
        elif dtype != blob.dtype and not (blob.dtype.startswith("float") and dtype.startswith("float")):
            declare = f"declare it as {{shape: {list(blob.shape)}, dtype: {dtype}}} in the net's inputs:"
            if dtype.startswith("float") and blob.dtype.startswith("int"):
                # float labels (saved from pandas, MATLAB): a class loss needs integers, so declaring
                # float32 only moves the error to the loss, which asks for int64 again
                declare = (f"store the data as integers (numpy: y.astype(np.int64); csv: label_type: int), "
                           f"or, if the net reads floats there, {declare}")
            errors.append(ConfigError(
                f"the {split} data's '{name}' is {dtype} but the net's input '{name}' is declared {blob.dtype}",
                where, hint=declare))
    return errors


def _reshape_hint(shape: tuple[int, ...], want: tuple[int, ...]) -> str:
    """What to do about a per-sample ``shape`` the net wants as ``want``: the same values with
    another number of unit dimensions (labels (N, 1), float images (N, H, W)) need a reshape;
    images stored (H, W, C), as Keras and TensorFlow keep them, need their channels moved."""
    if len(want) == 3 and shape == want[1:] + want[:1]:
        return ("the images are stored channels last (N, H, W, C): add channels_last: true to the npz/npy "
                "source, or store them as numpy's x.transpose(0, 3, 1, 2)")
    if [d for d in shape if d != 1] != [d for d in want if d != 1]:
        return "change the net's inputs:, or crop_size/the data set"
    dims = ", ".join(["N"] + [str(d) for d in want]) if want else "N,"
    how = "x[:, None]" if want == (1,) + shape else f"x.reshape({dims.replace('N', 'len(x)').rstrip(',')})"
    extra = " (only uint8 (N, H, W) arrays are taken as one-channel images)" if want == (1,) + shape and len(shape) == 2 else ""
    return f"the same values in another shape: store the array as ({dims}), numpy: {how}{extra}"


def check_batches(spec: SolverSpec, split: str, graph: Graph, samples: int) -> list[ConfigError]:
    """An error when a batch of ``split`` (``samples`` an epoch, in batches of batch_size, the
    last one partial unless drop_last) would hold fewer samples than a layer of ``graph``
    needs (``Graph.min_batch``: BatchNorm's batch statistics of a (C,) blob need two)."""
    need, node = graph.min_batch()
    ds = getattr(spec.data, split)
    if node is None or ds is None:
        return []
    why = graph.min_batch_reason()
    size, last = ds.batch_size, samples % ds.batch_size
    if size < need:
        return [ConfigError(f"batch_size {size} is too small: {why}", ("data", split, "batch_size"),
                            hint=f"use batch_size: {need} or more")]
    if 0 < last < need and not ds.drop_last:
        return [ConfigError(f"the last batch of each epoch would hold {last} sample(s) ({samples:,} = "
                            f"{samples // size:,} x {size} + {last}), but {why}", ("data", split, "batch_size"),
                            hint="set drop_last: true, or a batch_size that leaves no single sample over")]
    return []


def check_labels(spec: SolverSpec, split: str, graph: Graph, tensors, origins: dict | None = None) -> list[ConfigError]:
    """Errors for integer labels of ``split`` (``tensors``: name -> tensor) outside the classes
    of a layer that reads them (``LayerSpec.label_classes``): the loss would fail mid-run."""
    errors, seen = [], set()
    for node in graph.nodes:
        found = node.spec.label_classes(node.in_blobs)
        if found is None:
            continue
        index, classes, ignore = found
        name = node.bottoms[index]
        values = tensors.get(name) if name in graph.inputs and name not in seen else None
        if not isinstance(values, torch.Tensor) or values.is_floating_point() or not values.numel():
            continue
        valid = (values >= 0) & (values < classes)
        if ignore is not None:
            valid |= values == ignore
        if not bool(valid.all()):
            seen.add(name)
            bad = values[~valid]
            what, has, hint = ("labels", f"has {classes} classes", "relabel the data from 0 (classes: [...] "
                               "relabels), or give the net as many outputs as classes")
            if node.spec.type == "Embed":  # ids into a table of input_dim rows
                grow = f"set input_dim: {int(values.max()) + 1} or more, or " if values.max() >= classes else ""
                what, has, hint = "ids", f"has input_dim {classes}", f"{grow}map the ids into 0..{classes - 1}"
            errors.append(ConfigError(
                f"the {split} data's '{name}' holds {what} {int(values.min())}..{int(values.max())} "
                f"({bad.numel():,} outside 0..{classes - 1}, e.g. {int(bad[0])}), but layer '{node.name}' "
                f"({node.spec.type}) {has}", ("data", split) + (origins or {}).get(name, ()), hint=hint))
    return errors


def checked_loader(spec: SolverSpec, split: str, graph: Graph, device: torch.device) -> BatchLoader:
    """The batches of a data split, checked against the inputs, batch floor and label range of ``graph``."""
    ds = getattr(spec.data, split)
    prefix = ("data", split)
    try:
        tensors = load_source(ds, spec.base_dir)
        # torchrun: test shards are not padded, so each test sample counts once
        loader = BatchLoader(tensors, ds, seed=spec.random_seed, device=device, even=split == "train")
        loader.deliver(float_inputs(graph))  # a float64 net gets float64 batches
    except ConfigErrors as e:
        raise ConfigErrors([spec.locate(x.prefixed(prefix)) for x in e.errors]) from None
    except ConfigError as e:
        raise ConfigErrors([spec.locate(e.prefixed(prefix))]) from None
    batch = next(iter(loader.epoch_batches()), None)
    if batch is None:  # torchrun: a test split of fewer samples than ranks leaves this rank none
        got = loader.split.describe()
    else:
        got = {k: (tuple(v.shape[1:]), str(v.dtype).removeprefix("torch.")) for k, v in batch.items()}
    errors = (match_inputs(spec, split, graph, got, loader.split.origins)
              + check_batches(spec, split, graph, loader.num_samples)
              + check_labels(spec, split, graph, loader.split.tensors, loader.split.origins))
    if errors:
        raise ConfigErrors([spec.locate(e) for e in errors])
    return loader


def nothing_to_train(spec: SolverSpec, graph: Graph) -> list[ConfigError]:
    """An error when the solver would train a TRAIN net without a loss, or whose parameters
    all have lr_mult 0."""
    if spec.max_iter > 0 and not graph.losses:  # else the first iteration's Net.loss says it, unlocated
        err = ConfigError(f"net '{graph.name}' has no loss in phase TRAIN", ("layers",),
                          hint="add a loss layer or a loss_weight, or set max_iter: 0 to only test")
        return [graph.spec.locate(err) if graph.spec is not None else err]
    if spec.max_iter > 0 and graph.total_params and not graph.trainable_params:
        return [ConfigError("nothing to train: every parameter of the net has lr_mult 0", ("net",),
                            hint="give some layer param: [{lr_mult: 1}], or set max_iter: 0 to only test")]
    return []


def check_solver(spec: SolverSpec) -> dict[str, Graph]:
    """Build the TRAIN and TEST graphs and match each data split to its net's inputs."""
    graphs: dict[str, Graph] = {}
    errors: list[ConfigError] = []
    for phase, split, stages in (("TRAIN", "train", spec.train_stages), ("TEST", "test", spec.test_stages)):
        ds = getattr(spec.data, split)
        if ds is None and phase == "TEST":
            continue
        try:
            graphs[phase] = build_graph(spec.net_spec, phase, stages)
        except ConfigErrors as e:
            if phase == "TEST":  # the same errors as TRAIN, usually: report each once
                errors += [x for x in e.errors if x.render() not in {y.render() for y in errors}]
            else:
                errors += e.errors
            continue
        if phase == "TRAIN":
            errors += [spec.locate(x) for x in nothing_to_train(spec, graphs[phase])]
        else:
            errors += [spec.locate(x) for x in best_metric_errors(spec, graphs[phase])]
        if ds is None:
            continue
        try:
            data = load_source(ds, spec.base_dir)
        except (ConfigError, ConfigErrors) as e:
            for x in getattr(e, "errors", [e]):
                errors.append(spec.locate(x.prefixed(("data", split))))
            continue
        errors += [spec.locate(x) for x in match_inputs(spec, split, graphs[phase], data.describe(), data.origins)
                   + check_batches(spec, split, graphs[phase], data.num_samples)
                   + check_labels(spec, split, graphs[phase], data.tensors, data.origins)]
    if errors:
        raise ConfigErrors(errors)
    return graphs
