"""Registry-wide tests: every registered layer type, built from the ``examples`` declared
on its own class, must infer the shapes its module really produces, train, count its
parameters right, round-trip, document itself; plus the registry's own rules.
(Inputs of a dtype a layer refuses are covered by the error tests, not here.)"""

from __future__ import annotations

import math
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
import yaml

from netcfg.errors import ConfigErrors
from netcfg.layers import _registry
from netcfg.layers.base import LayerSpec
from netcfg.layers._registry import RegistryError, lookup, register, registry
from netcfg.net import Net, build_graph
from netcfg.net.spec import load_net, net_from_source
from netcfg.schema import layer_reference, net_schema
from netcfg.source import parse_yaml

BATCH = 2
FLOATS = {torch.float32, torch.float64, torch.float16, torch.bfloat16}
DOCS = Path(__file__).resolve().parent.parent / "docs" / "layers.md"

CASES = [pytest.param(t, i, id=f"{t}-{i}") for t, cls in registry().items() for i in range(len(cls.examples))]
# examples that can also be written in place (one bottom, one top)
IN_PLACE = [pytest.param(t, i, id=f"{t}-{i}") for t, cls in registry().items()
            if cls.n_tops == (1, 1) and not cls.reduces_batch
            for i, ex in enumerate(cls.examples) if len(ex["inputs"]) == 1 and "top" not in ex]


# ---------------------------------------------------------------- helpers


def net_doc(type_name: str, example: dict, in_place: bool = False) -> dict[str, Any]:
    """A net file (as plain data): the example's inputs feeding one layer of the type
    (written in place, top = bottom, with ``in_place``)."""
    fields = {k: v for k, v in example.items() if k != "inputs"}
    layer = {"name": "layer", "type": type_name, "bottom": list(example["inputs"]), **fields}
    if in_place:
        layer["top"] = layer["bottom"]
    return {"name": f"example_{type_name}", "inputs": example["inputs"], "layers": [layer]}


def graph_of(type_name: str, index: int, phase: str = "TRAIN", in_place: bool = False):
    doc = net_doc(type_name, registry()[type_name].examples[index], in_place)
    return build_graph(net_from_source(parse_yaml(yaml.safe_dump(doc, sort_keys=False))), phase)


def make_inputs(graph, seed: int = 0) -> dict[str, torch.Tensor]:
    """Float inputs N(0, 1) (requiring grad); integer inputs in [0, 2) (labels, token ids)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, blob in graph.inputs.items():
        dtype = getattr(torch, blob.dtype)
        shape = (BATCH, *blob.shape)
        if dtype in FLOATS:
            out[name] = torch.randn(shape, generator=gen).to(dtype).requires_grad_()
        elif dtype is torch.bool:
            out[name] = torch.randint(0, 2, shape, generator=gen).bool()
        else:
            out[name] = torch.randint(0, 2, shape, generator=gen).to(dtype)
    return out


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def check_outputs(graph, outputs: dict[str, torch.Tensor]) -> None:
    """Every top's real shape (batch excluded, unless the type has none) and dtype are the inferred ones."""
    (node,) = graph.nodes
    assert set(outputs) == set(node.tops), (list(outputs), node.tops)
    for top, blob in zip(node.tops, node.out_blobs):
        t = outputs[top]
        real = tuple(t.shape) if node.spec.reduces_batch else tuple(t.shape[1:])
        if not node.spec.reduces_batch:
            assert t.shape[0] == BATCH, f"top '{top}' lost the batch dimension: {tuple(t.shape)}"
        assert real == blob.shape, f"top '{top}': inferred {list(blob.shape)}, forward gave {list(real)}"
        assert dtype_name(t) == blob.dtype, f"top '{top}': inferred {blob.dtype}, forward gave {dtype_name(t)}"


# ---------------------------------------------------------------- per type


@pytest.mark.parametrize("type_name", list(registry()))
def test_every_type_declares_examples(type_name):
    cls = registry()[type_name]
    assert "examples" in vars(cls) and cls.examples, (
        f"layer type {type_name} ({cls.__module__}.{cls.__qualname__}) has no examples of its own: add "
        "`examples: ClassVar[list[dict]] = [{\"inputs\": {...}, <fields>}]` to the class, covering its main "
        "options (see LayerSpec.examples and docs/adding-a-layer.md)")
    for ex in cls.examples:
        assert isinstance(ex.get("inputs"), dict) and ex["inputs"], f"{type_name} example without inputs: {ex}"
        assert not {"name", "type", "bottom"} & set(ex), f"{type_name}: name/type/bottom are filled by the test: {ex}"


@pytest.fixture(scope="module")
def schema_defs() -> dict[str, Any]:
    return net_schema()["$defs"]


@pytest.mark.parametrize("type_name", list(registry()))
def test_schema_and_descriptions(type_name, schema_defs):
    cls = registry()[type_name]
    defs = schema_defs
    assert cls.__name__ in defs, f"{type_name} is missing from the net JSON Schema"
    assert type_name in defs["Layer"]["discriminator"]["mapping"]
    props = defs[cls.__name__]["properties"]
    # `type` is exempt: its one allowed value is its documentation
    undocumented = [n for n, f in cls.model_fields.items()
                    if n != "type" and not (f.description and props[n].get("description"))]
    assert not undocumented, f"{type_name}: give these fields Field(description=...): {undocumented}"
    assert cls.__doc__, f"{type_name} needs a one-line docstring (it is the docs/layers.md summary)"


@pytest.mark.parametrize(("type_name", "index"), CASES)
def test_inferred_shapes_match_forward_and_backward_works(type_name, index):
    graph = graph_of(type_name, index)
    net = Net(graph)
    inputs = make_inputs(graph)
    outputs = net(**inputs)
    check_outputs(graph, outputs)

    # backward: from every float output that carries a gradient
    live = [t for t in outputs.values() if t.dtype in FLOATS and t.requires_grad]
    if not live:
        return
    sum(t.float().sum() for t in live).backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"parameter {name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"parameter {name} has a non-finite gradient"
    for name, x in inputs.items():
        if x.grad is not None:
            assert torch.isfinite(x.grad).all(), f"input {name} has a non-finite gradient"


@pytest.mark.parametrize(("type_name", "index"), CASES)
def test_param_count_and_blob_names(type_name, index):
    graph = graph_of(type_name, index)
    net = Net(graph)
    (node,) = graph.nodes
    module = net.get_submodule(node.name)
    real = sum(p.numel() for p in module.parameters())
    assert node.params == real, f"graph counted {node.params} parameters (meta device), the module has {real}"
    assert graph.total_params == sum(p.numel() for p in net.parameters())
    assert isinstance(node.flops, int) and node.flops >= 0
    for blob in node.spec.blob_names():
        module.get_parameter(blob)  # AttributeError if the name does not resolve
    listed = {id(module.get_parameter(path)) for path, _ in node.spec.param_entries()}
    unlisted = [n for n, p in module.named_parameters() if id(p) not in listed]
    assert not unlisted, f"param_entries() misses {unlisted}: `param:` (lr_mult, sharing) cannot reach them"


@pytest.mark.parametrize(("type_name", "index"), CASES)
def test_spec_round_trips(type_name, index):
    cls = registry()[type_name]
    layer = net_doc(type_name, cls.examples[index])["layers"][0]
    spec = cls.model_validate(layer)  # standalone: a net-validated spec also carries its key path
    assert cls.model_validate(spec.model_dump(mode="json", exclude_unset=True)) == spec
    assert cls.model_validate(spec.model_dump(mode="json")) == spec
    assert cls.model_validate(yaml.safe_load(yaml.safe_dump(spec.model_dump(mode="json")))) == spec


@pytest.mark.parametrize(("type_name", "index"), CASES)
def test_test_phase_forward_is_deterministic(type_name, index):
    graph = graph_of(type_name, index, phase="TEST")
    net = Net(graph)
    assert not net.training
    inputs = {k: v.detach() for k, v in make_inputs(graph).items()}
    with torch.no_grad():
        first = net(**inputs)
        second = net(**inputs)
    check_outputs(graph, first)
    for top in first:
        torch.testing.assert_close(first[top], second[top], rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m, top=top: f"top '{top}' differs between two eval calls: {m}")


@pytest.mark.parametrize(("type_name", "index"), IN_PLACE)
def test_in_place_top_keeps_the_declared_input(type_name, index):
    """Caffe's in-place form (top = bottom) rebinds the name, even when the shape changes;
    the net's input is still the declared one."""
    graph = graph_of(type_name, index, in_place=True)
    ((name, declared),) = registry()[type_name].examples[index]["inputs"].items()
    shape = declared["shape"] if isinstance(declared, dict) else declared
    assert graph.inputs[name].shape == tuple(shape)
    inputs = {k: v.detach() for k, v in make_inputs(graph).items()}
    check_outputs(graph, Net(graph)(**inputs))


def test_layer_reference_is_current():
    assert DOCS.read_text() == layer_reference(), (
        "docs/layers.md is stale: run `python -m netcfg.schema > docs/layers.md`")


def test_examples_are_many_and_cheap():
    """The sweep stays fast: small shapes only."""
    n = sum(len(c.examples) for c in registry().values())
    assert n >= len(registry())
    for t, cls in registry().items():
        for ex in cls.examples:
            for i in ex["inputs"].values():
                shape = i["shape"] if isinstance(i, dict) else i
                assert math.prod(shape) <= 512, f"{t}: keep example inputs small, got {shape}"


# ---------------------------------------------------------------- the registry itself


@pytest.fixture
def scratch_registry(monkeypatch):
    """Types registered during the test are forgotten afterwards."""
    registry()  # built-ins loaded before the copy
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))


@pytest.fixture
def plugin_module(tmp_path, monkeypatch, scratch_registry):
    """Write a module to tmp_path (on sys.path) and return its name; unloaded afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def make(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


PLUGIN = '''
    """A plugin layer type for the registry tests."""
    from typing import ClassVar, Literal

    from torch import nn

    from netcfg.layers.base import LayerSpec, register  # as docs/adding-a-layer.md had it until the registry moved


    @register
    class {cls}(LayerSpec):
        """x * 2."""

        type: Literal["{cls}"]
        examples: ClassVar[list[dict]] = [{{"inputs": {{"x": [3]}}}}]

        def infer(self, bottoms):
            return list(bottoms)

        def build(self, bottoms):
            return Twice()


    class Twice(nn.Module):
        def forward(self, x):
            return 2 * x
'''


def one_layer_net(type_name: str, plugins: list[str] | None = None) -> str:
    doc: dict[str, Any] = {"name": "p", **({"plugins": plugins} if plugins is not None else {}),
                           "inputs": {"x": [3]}, "layers": [{"name": "l", "type": type_name}]}
    return yaml.safe_dump(doc, sort_keys=False)


def test_registering_a_taken_name_fails_and_keeps_the_first(scratch_registry):
    first = registry()["ReLU"]

    class Impostor(LayerSpec):
        """Another ReLU."""

        type: Literal["ReLU"]

    with pytest.raises(RegistryError) as e:
        register(Impostor)
    msg = str(e.value)
    assert "'ReLU' registered twice" in msg
    assert f"{first.__module__}.{first.__qualname__}" in msg  # netcfg.layers.activation.ReLU
    assert f"{__name__}." in msg and "Impostor" in msg
    assert registry()["ReLU"] is first
    register(first)  # registering the same class again is harmless


def test_a_notebook_cell_run_again_replaces_its_layer_type(scratch_registry, tmp_path):
    # a cell that defines and registers a layer, run a second time after a fix, was refused with
    # "'Twice' registered twice: by __main__.Twice and by __main__.Twice"
    cell = """
from typing import Literal
from torch import nn
import netcfg

@netcfg.register
class Twice(netcfg.LayerSpec):
    type: Literal["Twice"]
    factor: float = FACTOR

    def infer(self, bottoms):
        return list(bottoms)

    def build(self, bottoms):
        return nn.Identity()
"""
    scope = {"__name__": "__main__"}
    for factor in ("2.0", "3.0"):  # as a notebook runs a cell: not under this file's __future__ import
        exec(compile(cell.replace("FACTOR", factor), "<cell>", "exec", dont_inherit=True), scope)
    assert registry()["Twice"] is scope["Twice"] and registry()["Twice"].model_fields["factor"].default == 3.0
    net = tmp_path / "net.yaml"
    net.write_text("name: t\ninputs: {x: [3]}\nlayers:\n  - {name: t, type: Twice, bottom: x, top: y}\n")
    assert load_net(net).layers[0].factor == 3.0  # the net file gets the new definition


def test_a_layer_type_without_infer_or_build_is_refused_when_registered():
    class Halfway(LayerSpec):
        type: Literal["Halfway"]

        def infer(self, bottoms):
            return bottoms

    with pytest.raises(TypeError, match="Halfway does not define build"):
        register(Halfway)
    assert "Halfway" not in registry()


def test_entry_point_loads_an_unknown_type(plugin_module, monkeypatch):
    mod = plugin_module("netcfg_test_ep_plugin", PLUGIN.format(cls="EntryPointTwice"))
    real = metadata.entry_points
    asked = []

    def entry_points(**kw):
        if kw.get("group") == "netcfg.layers":
            asked.append(kw)
            return [metadata.EntryPoint(name="EntryPointTwice", value=mod, group="netcfg.layers")]
        return real(**kw)

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    assert "EntryPointTwice" not in registry()
    spec = net_from_source(parse_yaml(one_layer_net("EntryPointTwice")))
    assert asked and mod in sys.modules
    assert type(spec.layers[0]) is lookup("EntryPointTwice")
    x = torch.randn(BATCH, 3)
    torch.testing.assert_close(Net(build_graph(spec))(x=x)["l"], 2 * x)
    with pytest.raises(KeyError):  # a name no entry point provides is still unknown
        lookup("NoSuchLayerType")


def test_unknown_type_without_entry_point_is_a_located_error(scratch_registry):
    text = one_layer_net("Relu")
    with pytest.raises(ConfigErrors) as e:
        net_from_source(parse_yaml(text))
    (err,) = e.value.errors
    assert "unknown layer type 'Relu'" in err.message and "did you mean 'ReLU'" in str(err)
    assert err.line == text.splitlines().index("  type: Relu") + 1


def test_plugins_list_imports_the_module(plugin_module):
    mod = plugin_module("netcfg_test_listed_plugin", PLUGIN.format(cls="ListedTwice"))
    assert "ListedTwice" not in registry()
    spec = net_from_source(parse_yaml(one_layer_net("ListedTwice", plugins=[mod])))
    assert spec.plugins == [mod]
    assert "ListedTwice" in registry()
    x = torch.randn(BATCH, 3)
    torch.testing.assert_close(Net(build_graph(spec))(x=x)["l"], 2 * x)


def test_unimportable_plugin_is_a_located_error(plugin_module):
    ok = plugin_module("netcfg_test_ok_plugin", PLUGIN.format(cls="OkTwice"))
    text = one_layer_net("OkTwice", plugins=[ok, "netcfg_test_no_such_module"])
    with pytest.raises(ConfigErrors) as e:
        net_from_source(parse_yaml(text, file="net.yaml"))
    (err,) = e.value.errors
    assert "cannot import plugin module 'netcfg_test_no_such_module'" in err.message
    assert err.path == ("plugins", 1)
    line = text.splitlines().index("- netcfg_test_no_such_module") + 1
    assert (err.file, err.line) == ("net.yaml", line)
    assert err.render().startswith(f"net.yaml:{line}:")
