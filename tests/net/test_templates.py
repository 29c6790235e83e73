"""Block templates: substitution, repeats, scoped names, shared weights, errors, `netcfg expand`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from netcfg.errors import ConfigErrors
from netcfg.net import Net, build_graph, load_net
from netcfg.net.expr import ExprError, substitute
from netcfg.net.spec import net_from_source
from netcfg.net.templates import expand_templates
from netcfg.overrides import apply_overrides
from netcfg.source import parse_yaml
from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]

HEAD = """
name: t
inputs:
  data: [4, 8, 8]
  label: {shape: [], dtype: int64}
"""

# a basic residual block: projection and stride only where `first` asks for them
BASIC = HEAD + """
blocks:
  basic:
    params: {width: null, stride: 1, project: false}
    layers:
      - {name: conv1, type: Convolution, num_output: "${width}", kernel_size: 3, stride: "${stride}", pad: 1}
      - {name: relu1, type: ReLU}
      - {name: conv2, type: Convolution, num_output: "${width}", kernel_size: 3, pad: 1}
      - {name: proj, if: "${project}", type: Convolution, bottom: "${bottom}", num_output: "${width}",
         kernel_size: 1, stride: "${stride}"}
      - {name: add, type: Eltwise, bottom: [conv2, "${'proj' if project else bottom}"]}
      - {name: relu, type: ReLU}
layers:
  - {name: stage1, block: basic, repeat: 2, args: {width: 4}}
  - {name: stage2, block: basic, repeat: 3, args: {width: 8}, first: {stride: 2, project: true}}
  - {name: pool, type: Pooling, bottom: stage2, pool: AVE, global_pooling: true}
  - {name: fc, type: InnerProduct, num_output: 3}
  - {name: loss, type: SoftmaxWithLoss, bottom: [fc, label]}
"""


def spec(text: str):
    return net_from_source(parse_yaml(text, "net.yaml"))


def errors(text: str, *, graph: bool = False) -> str:
    with pytest.raises(ConfigErrors) as e:
        s = spec(text)
        if graph:
            build_graph(s)
    return e.value.render()


def layers(text: str) -> dict[str, dict]:
    """Expanded layer name -> its expanded data."""
    return {x["name"]: x for x in expand_templates(parse_yaml(text, "net.yaml")).data["layers"]}


# ---------------------------------------------------------------- substitution


@pytest.mark.parametrize(("text", "want"), [
    ("${width}", 64),                       # a lone expression keeps its type
    ("${width * 4}", 256),
    ("${width // 3 + width % 3}", 22),
    ("${width / 128}", 0.5),
    ("${(width + 1) * 2}", 130),
    ("${-width}", -64),
    ("${project}", True),
    ("${not project}", False),
    ("${2 if index == 1 else 1}", 2),
    ("${index == 1 and project}", True),
    ("${widths[index]}", 32),
    ("${max(width, 100)}", 100),
    ("${int(width * 1.5)}", 96),
    ("${'proj' if project else bottom}", "proj"),
    ("${bottom}", "data"),
    ("conv${index}_${width}", "conv1_64"),  # inside text: interpolated
    ("flag=${project}", "flag=true"),       # spelt as YAML
    ("cost $${width}", "cost ${width}"),    # $${ is a literal ${
    ("no expression", "no expression"),
])
def test_substitution(text, want):
    env = {"width": 64, "project": True, "index": 1, "widths": [16, 32], "bottom": "data"}
    got = substitute(text, env)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(("text", "message"), [
    ("${__import__('os').system('true')}", "templates may call only min, max, int, round"),
    ("${width.bit_length()}", "templates may call only"),
    ("${width.real}", "uses Attribute, which templates do not allow"),
    ("${[x for x in widths]}", "uses ListComp"),
    ("${lambda: 1}", "uses Lambda"),
    ("${width ** 1000}", "uses Pow"),
    ("${'a' * 1000000000}", "'*' multiplies numbers only"),
    ("${widths[0:1]}", "slices a list"),
    ("${width +}", "bad expression"),
    ("${width", "without a closing"),
    ("${}", "empty"),
    ("${width // 0}", "division or modulo by zero"),
    ("${nope}", "unknown name 'nope'"),
    ("${round(width, -1000000000)}", "round to at most 30 digits"),  # 10 ** 1e9 would never finish
    ("${int('x')}", "int('x'): invalid literal"),
])
def test_unsafe_or_bad_expressions_are_refused(text, message):
    with pytest.raises(ExprError, match=re.escape(message)):
        substitute(text, {"width": 64, "widths": [1, 2]})


def test_numbers_stay_numbers_in_the_expanded_net():
    conv = layers(BASIC)["stage2.block1.conv1"]
    assert conv["num_output"] == 8 and conv["stride"] == 2 and conv["kernel_size"] == 3


# ---------------------------------------------------------------- repeats and overrides


def test_repeat_names_and_first_block_overrides():
    g = build_graph(spec(BASIC))
    names = [n.name for n in g.nodes]
    assert names[:6] == [f"stage1.block1.{x}" for x in ("conv1", "relu1", "conv2", "add", "relu")] + ["stage1.block2.conv1"]
    # only the first block of stage2 projects and strides
    assert "stage2.block1.proj" in names and "stage2.block2.proj" not in names and "stage2.block3.proj" not in names
    nodes = {n.name: n for n in g.nodes}
    assert nodes["stage2.block1.conv1"].out_blobs[0].shape == (8, 4, 4)
    assert nodes["stage2.block2.conv1"].spec.stride == [1]
    # each copy's output is named after it; the instance's output after the instance
    assert nodes["stage1.block1.relu"].tops == ["stage1.block1"]
    assert nodes["stage1.block2.conv1"].bottoms == ["stage1.block1"]
    assert nodes["stage2.block3.relu"].tops == ["stage2"]
    assert nodes["pool"].bottoms == ["stage2"]
    assert g.total_params == 2 * 2 * (4 * 4 * 9 + 4) + (8 * 4 * 9 + 8) + (8 * 8 * 9 + 8) + (8 * 4 + 8) \
        + 2 * 2 * (8 * 8 * 9 + 8) + (8 * 3 + 3)


def test_without_repeat_there_is_no_block_level_and_repeat_1_has_one():
    text = BASIC.replace("{name: stage1, block: basic, repeat: 2, args: {width: 4}}",
                         "{name: stem, block: basic, args: {width: 4}}\n"
                         "  - {name: one, block: basic, repeat: 1, args: {width: 4}}")
    names = list(layers(text))
    assert "stem.conv1" in names and "one.block1.conv1" in names and "one.block2.conv1" not in names


def test_index_and_repeat_are_readable_in_expressions():
    text = HEAD + """
blocks:
  grow:
    params: {base: 2}
    layers:
      - {name: "conv${index}of${repeat}", type: Convolution, num_output: "${base * index}", kernel_size: 1}
layers:
  - {name: s, block: grow, repeat: 3}
"""
    got = {k: v["num_output"] for k, v in layers(text).items()}
    assert got == {"s.block1.conv1of3": 2, "s.block2.conv2of3": 4, "s.block3.conv3of3": 6}


def test_the_documented_functions_work_inside_blocks():
    text = HEAD + """
blocks:
  b:
    params: {w: 4}
    layers:
      - {name: c, type: Convolution, num_output: "${int(w * 1.5)}", kernel_size: "${min(w, 3)}",
         stride: "${max(1, round(w / 8))}"}
layers:
  - {name: s, block: b, args: {w: 8}}
"""
    conv = layers(text)["s.c"]
    assert (conv["num_output"], conv["kernel_size"], conv["stride"]) == (12, 3, 1)


def test_instance_bottom_and_top():
    text = HEAD + """
blocks:
  head:
    params: {n: null}
    layers:
      - {name: ip, type: InnerProduct, num_output: "${n}"}
      - {name: loss, type: SoftmaxWithLoss, bottom: [ip, /label]}
layers:
  - {name: trunk, type: Convolution, num_output: 4, kernel_size: 3}
  - {name: side, type: ReLU, bottom: data}
  - {name: a, block: head, bottom: trunk, top: loss_a, args: {n: 3}}
  - {name: b, block: head, bottom: side, args: {n: 5}}
"""
    g = build_graph(spec(text))
    nodes = {n.name: n for n in g.nodes}
    assert nodes["a.ip"].bottoms == ["trunk"] and nodes["b.ip"].bottoms == ["side"]
    assert nodes["a.loss"].bottoms == ["a.ip", "label"] and nodes["a.loss"].tops == ["loss_a"]
    assert set(g.losses) == {"loss_a", "b"}


# a block ending in Caffe's in-place, TRAIN-only Dropout; a net's `layers:` follow
FC_BLOCK = HEAD + """
blocks:
  fc:
    params: {width: null}
    layers:
      - {name: ip, type: InnerProduct, num_output: "${width}"}
      - {name: relu, type: ReLU, bottom: ip, top: ip}
      - {name: drop, type: Dropout, bottom: ip, top: ip, include: {phase: TRAIN}}
layers:"""


@pytest.mark.parametrize("bottom", ["bottom: ip, ", ""])  # written, or the previous top by default
def test_a_block_may_end_in_a_train_only_layer_in_place(bottom):
    # Caffe's idiom, Dropout in place and TRAIN only: the TEST net must still have the output
    text = (FC_BLOCK.replace("bottom: ip, top: ip, include", "BOTTOMtop: ip, include") + """
  - {name: fc1, block: fc, repeat: 2, args: {width: 6}}
  - {name: out, type: InnerProduct, num_output: 3}
  - {name: loss, type: SoftmaxWithLoss, bottom: [out, label]}
""").replace("BOTTOM", bottom)
    for phase in ("TRAIN", "TEST"):
        nodes = {n.name: n for n in build_graph(spec(text), phase).nodes}
        assert nodes["fc1.block1.ip"].tops == ["fc1.block1"] and nodes["fc1.block2.relu"].tops == ["fc1"]
        assert nodes["fc1.block2.ip"].bottoms == ["fc1.block1"] and nodes["out"].bottoms == ["fc1"]
    assert ("fc1.block2.drop" in nodes) is False


# ---------------------------------------------------------------- scoped names and weights


def test_two_instances_do_not_collide_and_weights_are_scoped():
    net = Net(build_graph(spec(BASIC)))
    params = dict(net.named_parameters())
    assert params["stage1.block1.conv1.weight"].shape == (4, 4, 3, 3)
    assert params["stage2.block1.proj.weight"].shape == (8, 4, 1, 1)
    assert params["stage2.block3.conv2.bias"].shape == (8,)
    assert "stage2.block1.conv1.weight" in net.state_dict()
    out = net(data=torch.randn(2, 4, 8, 8), label=torch.tensor([0, 2]))
    assert out["loss"].ndim == 0


SHARED = HEAD + """
blocks:
  twin:
    layers:
      - {name: a, type: Convolution, num_output: 4, kernel_size: 3, pad: 1, param: [{name: w}, {name: b}]}
      - {name: b, type: Convolution, num_output: 4, kernel_size: 3, pad: 1, param: [{name: w}, {name: b}]}
      - {name: c, type: Convolution, num_output: 4, kernel_size: 1, param: {name: /tied}}
layers:
  - {name: s, block: twin, repeat: 2}
  - {name: last, type: Convolution, num_output: 4, kernel_size: 1, param: {name: tied}}
"""


def test_share_names_are_scoped_to_the_copy_unless_global():
    net = Net(build_graph(spec(SHARED)))
    p = net.get_parameter
    assert p("s.block1.a.weight") is p("s.block1.b.weight")          # within one copy: shared
    assert p("s.block1.a.weight") is not p("s.block2.a.weight")      # across copies: not
    assert p("s.block1.c.weight") is p("s.block2.c.weight") is p("last.weight")  # '/tied': global
    assert layers(SHARED)["s.block2.a"]["param"] == [{"name": "s.block2.w"}, {"name": "s.block2.b"}]


def test_residual_inside_a_block_and_a_block_inside_a_residual():
    text = HEAD + """
blocks:
  cbr:
    params: {c: null, k: 3}
    layers:
      - {name: conv, type: Convolution, num_output: "${c}", kernel_size: "${k}", pad: "${k // 2}", bias_term: false}
      - {name: bn, type: BatchNorm}
      - {name: relu, type: ReLU}
  res:
    params: {c: null}
    layers:
      - name: r
        type: Residual
        body:
          - {name: a, block: cbr, args: {c: "${c}"}}
          - {name: b, block: cbr, args: {c: "${c}", k: 1}}
layers:
  - {name: s, block: res, repeat: 2, args: {c: 4}}
  - name: top_res
    type: Residual
    body:
      - {name: x, block: cbr, args: {c: 4}}
"""
    net = Net(build_graph(spec(text)))
    names = [n for n, _ in net.named_parameters()]
    assert "s.block1.r.body.a_conv.weight" in names and "s.block2.r.body.b_bn.weight" in names
    assert "top_res.body.x_conv.weight" in names
    out = net(data=torch.randn(2, 4, 8, 8), label=torch.zeros(2, dtype=torch.long))  # every input is required
    assert out["top_res"].shape == (2, 4, 8, 8)


# ---------------------------------------------------------------- the explicit form, expand


def test_a_net_without_templates_is_passed_through_untouched():
    src = parse_yaml((ROOT / "configs/lenet.yaml").read_text(), "lenet.yaml")
    assert expand_templates(src) is src


def test_positions_of_expanded_layers_are_the_template_lines():
    src = expand_templates(parse_yaml(BASIC, "net.yaml"))
    names = [x["name"] for x in src.data["layers"]]
    for copy in ("stage1.block1", "stage2.block3"):
        i = names.index(f"{copy}.conv2")
        assert src.positions[("layers", i, "num_output")] == (13, 54)  # "${width}" in the block
        assert src.origin(("layers", i, "num_output")) == (("blocks", "basic", "layers", 2, "num_output"), copy)
    fc = names.index("fc")
    assert src.positions[("layers", fc)] == (22, 5) and src.origin(("layers", fc)) == (("layers", 3), None)


@pytest.mark.parametrize("text", [BASIC, SHARED], ids=["basic", "shared"])
def test_expand_round_trip_builds_the_same_net(tmp_path, text):
    source = tmp_path / "net.yaml"
    source.write_text(text)
    expanded = tmp_path / "expanded.yaml"
    result = run_cli("expand", str(source), "-o", str(expanded))
    assert result.exit_code == 0, result.stderr
    text = expanded.read_text()
    assert "blocks:" not in text and "${" not in text and "block2" in text
    assert run_cli("expand", str(source)).stdout == text  # stdout and -o agree
    assert result.stdout == "" and result.stderr == f"wrote {expanded}\n"

    def build(path):
        torch.manual_seed(0)
        return Net(build_graph(load_net(path)))

    a, b = build(source), build(expanded)
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    x = {"data": torch.randn(3, 4, 8, 8), "label": torch.tensor([0, 1, 2])}
    out_a, out_b = a(**x), b(**x)
    assert list(out_a) == list(out_b) and all(torch.equal(out_a[k], out_b[k]) for k in out_a)
    assert load_net(source).model_dump() == load_net(expanded).model_dump()


def test_expand_refuses_a_bad_net_unless_asked(tmp_path):
    source = tmp_path / "net.yaml"
    source.write_text(BASIC.replace("kernel_size: 3, pad: 1}", "kernal_size: 3, pad: 1}"))
    result = run_cli("expand", str(source))
    assert result.exit_code == 2 and result.stdout == ""
    assert "blocks.basic.layers[2].kernal_size: unknown key" in result.stderr
    result = run_cli("expand", str(source), "--no-check")
    assert result.exit_code == 0 and "kernal_size: 3" in result.stdout


def test_the_resolved_spec_loads_back_as_the_same_net():
    # run directories store model_dump(exclude_unset=True) of the net: the expanded form
    a = spec(BASIC)
    b = net_from_source(parse_yaml(yaml.safe_dump(a.model_dump(mode="json", exclude_unset=True))))
    assert a.model_dump() == b.model_dump()


# ---------------------------------------------------------------- errors


def test_error_in_a_block_points_at_the_template_line_and_names_the_instances():
    text = BASIC.replace('{name: conv2, type: Convolution, num_output: "${width}"',
                         '{name: conv2, type: Convolution, num_output: "${width - 4}"')
    # stage1 (width 4) makes num_output 0; stage2 (width 8) is fine
    assert errors(text) == (
        "net.yaml:13:54: error: blocks.basic.layers[2].num_output: input should be greater than or equal to 1, "
        "got 0 (in stage1.block1, stage1.block2; width = 4 from line 19)")


def test_graph_error_in_a_block_names_the_copy():
    text = BASIC.replace("first: {stride: 2, project: true}", "first: {stride: 2}")
    msg = errors(text, graph=True)
    assert msg.startswith("net.yaml:16:44: error: blocks.basic.layers[4].bottom: Eltwise layer 'stage2.block1.add'")
    assert msg.endswith("(in stage2.block1)")


def test_errors_after_an_instance_keep_the_file_index():
    text = BASIC.replace("{name: fc, type: InnerProduct, num_output: 3}", "{name: fc, type: InnerProduct, num_ouput: 3}")
    assert errors(text).startswith("net.yaml:22:36: error: layers[3].num_ouput: unknown key")


def test_an_override_of_an_argument_is_named_in_the_error():
    src = apply_overrides(parse_yaml(BASIC, "net.yaml"), ["layers.stage2.args.width=-1"])
    with pytest.raises(ConfigErrors) as e:
        net_from_source(src)
    assert "(in stage2.block1, stage2.block2, stage2.block3; width = -1 from --set layers.stage2.args.width=-1)" \
        in e.value.render()


NESTED = HEAD + """
blocks:
  stage:
    params: {width: null, n: 2, groups: 1}
    layers:
      - {name: s, block: basic, repeat: "${n}", args: {width: "${width}", stride: "${width // groups}"}}
  basic:
    params: {width: null, stride: 1}
    layers:
      - {name: conv, type: Convolution, num_output: "${width}", kernel_size: 3, stride: "${stride}", pad: 1}
layers:
  - {name: stage1, block: stage, args: {width: 4}}
  - {name: stage2, block: stage, args: {width: 8, n: 0, groups: 0}}
"""


def test_an_error_in_a_nested_block_names_the_values_and_the_line_the_user_wrote_them():
    # the line of the outer instance's args (18), not the inner block's `${width}` (line 11)
    assert errors(NESTED.replace("groups: 0", "groups: 1")) == (
        "net.yaml:11:41: error: blocks.stage.layers[0].repeat: input should be greater than or equal to 1, "
        "got 0 (in stage2; n = 0 from line 18)")
    assert errors(NESTED) == (
        "net.yaml:11:83: error: blocks.stage.layers[0].args.stride: cannot evaluate '${width // groups}': "
        "integer division or modulo by zero (in stage2; groups = 0 from line 18, width = 8 from line 18)")
    msg = errors(NESTED.replace("width: 8, n: 0, groups: 0", "width: -8, n: 1"))
    assert ("net.yaml:15:53: error: blocks.basic.layers[0].num_output: input should be greater than or "
            "equal to 1, got -8 (in stage2.s.block1; width = -8 from line 18)\n") in msg
    assert "got 1.0 (in stage1; n = 2 from line 9) ('/' divides to a float (1.0 here), '//' to an integer: " \
        "${n // 2}; instantiate" in errors(NESTED.replace('repeat: "${n}"', 'repeat: "${n / 2}"'))


def test_an_expression_outside_a_block_says_it_is_not_evaluated_there():
    text = BASIC.replace("num_output: 3}", 'num_output: "${2 + 1}"}').replace("args: {width: 4}", 'args: {width: "${2 * 2}"}')
    msg = errors(text)
    assert "layers[3].num_output: input should be a valid integer, got '${2 + 1}' (${...} is evaluated only " \
        "inside a block's layers (see `blocks:` in docs/net-files.md); here, write the value itself" in msg
    assert "got '${2 * 2}' (in stage1.block1, stage1.block2; width = \"${2 * 2}\" from line 19) ('${2 * 2}' came " \
        "from an argument written outside any block, where ${...} is not evaluated; write the value itself there" in msg


@pytest.mark.parametrize(("edit", "message"), [
    (("block: basic, repeat: 2", "block: basik, repeat: 2"), "layers[0].block: unknown block 'basik' (did you mean 'basic'?"),
    (("args: {width: 4}", "args: {}"), "layers[0]: block 'basic' needs the argument 'width'"),
    (("args: {width: 4}", "args: {width: 4, widht: 2}"), "layers[0].args.widht: block 'basic' has no parameter 'widht'"),
    (("repeat: 2", "repeat: 0"), "layers[0].repeat: input should be greater than or equal to 1, got 0"),
    (('if: "${project}"', "if: maybe"), "blocks.basic.layers[3].if: 'if' must be true or false, got 'maybe'"),
    (('"${width}"', '"${widht}"'), "unknown name 'widht' in '${widht}' (did you mean 'width'?)"),
    (("params: {width: null,", "params: {index: 1, width: null,"), "parameter name 'index' is not allowed"),
    (("repeat: 2", "repeat: 1000000"), "the templates expand to more than 100,000 layers"),
    (('{name: conv2, type: Convolution, num_output: "${width}"', '{name: conv2, type: Convolution, num_output: "${width / 2}"'),
     "got 2.0 (in stage1.block1, stage1.block2; width = 4 from line 19) ('/' divides to a float (2.0 here), '//' to an "
     "integer: ${width // 2}; number of output channels (filters))"),
])
def test_template_mistakes_are_located_errors(edit, message):
    assert message in errors(BASIC.replace(*edit))


@pytest.mark.parametrize("blocks", [
    "  a:\n    layers:\n      - {name: again, block: a}\n",
    "  a:\n    layers:\n      - {name: x, block: b}\n  b:\n    layers:\n      - {name: y, block: a}\n",
])
def test_recursion_is_refused(blocks):
    text = HEAD + "blocks:\n" + blocks + "layers:\n  - {name: s, block: a}\n"
    msg = errors(text)
    assert "instantiates itself" in msg
    assert "leaves no layers" not in msg  # the users of an emptied block are not blamed too


# ---------------------------------------------------------------- the zoo and the docs


@pytest.mark.parametrize(("name", "count"), [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_resnet_parameter_counts_equal_torchvision(name, count):
    g = build_graph(load_net(ROOT / f"configs/{name}.yaml"))
    assert g.total_params == count
    assert g.nodes[-1].out_blobs[0].shape == () and g.blobs["fc"].shape == (1000,)
    assert g.blobs["layer4"].shape == ((2048 if name == "resnet50" else 512), 7, 7)


def test_resnet50_is_short():
    assert len((ROOT / "configs/resnet50.yaml").read_text().splitlines()) <= 120


def test_the_docs_example_builds():
    doc = (ROOT / "docs/net-files.md").read_text()
    example = re.search(r"## Templates.*?```yaml\n(.*?)```", doc, re.S).group(1)
    g = build_graph(spec("name: doc\ninputs: {data: [3, 32, 32]}\n" + example))
    assert g.blobs["pool"].shape == (128, 1, 1)
    assert "stage2.block1.proj" in [n.name for n in g.nodes]


def test_editors_schema_accepts_blocks_and_instances():
    jsonschema = pytest.importorskip("jsonschema")
    from netcfg.schema import net_schema

    validator = jsonschema.Draft202012Validator(net_schema())
    data = yaml.safe_load((ROOT / "configs/resnet50.yaml").read_text())
    assert list(validator.iter_errors(data)) == []
    data["layers"][4]["repat"] = 3  # a typo in an instance is flagged as you type
    assert list(validator.iter_errors(data))


def test_expand_does_not_overwrite_another_file_without_force(tmp_path):
    """expand -o replaced any existing file, another net included, without asking."""
    source, mine = tmp_path / "net.yaml", tmp_path / "mine.yaml"
    source.write_text(BASIC)
    mine.write_text("# my net\n")
    result = run_cli("expand", str(source), "-o", str(mine))
    assert result.exit_code == 2
    assert result.stderr == f"--output: error: {mine} already exists (pass --force to overwrite it, or choose another -o)\n"
    assert mine.read_text() == "# my net\n"
    assert run_cli("expand", str(source), "-o", str(mine), "--force").exit_code == 0
    assert "block2" in mine.read_text()


# ---------------------------------------------------------------- include/exclude on an instance

HEADED = FC_BLOCK + """
  - {name: fc1, block: fc, args: {width: 16}}
  - {name: aux, block: fc, bottom: fc1, args: {width: 8}, RULES}
  - {name: out, type: InnerProduct, bottom: fc1, num_output: 3}
  - {name: loss, type: SoftmaxWithLoss, bottom: [out, label]}
"""


def test_an_instances_include_and_exclude_hold_for_all_its_layers():
    # an auxiliary head only with a stage, as a layer's include: (it was refused: unknown key 'include')
    names = lambda g: [n.name for n in g.nodes if n.name.startswith("aux")]  # noqa: E731
    net = spec(HEADED.replace("RULES", "include: {stage: aux}"))
    assert names(build_graph(net, "TRAIN")) == [] and names(build_graph(net, "TEST")) == []
    assert names(build_graph(net, "TRAIN", ["aux"])) == ["aux.ip", "aux.relu", "aux.drop"]
    assert names(build_graph(net, "TEST", ["aux"])) == ["aux.ip", "aux.relu"]  # its own TRAIN-only rule still holds
    assert layers(HEADED.replace("RULES", "include: {stage: aux}"))["aux.drop"]["include"] == \
        [{"phase": "TRAIN", "stage": ["aux"]}]
    net = spec(HEADED.replace("RULES", "exclude: {phase: TRAIN}"))
    assert names(build_graph(net, "TRAIN")) == [] and names(build_graph(net, "TEST")) == ["aux.ip", "aux.relu"]


def test_an_instance_kept_in_test_only_drops_its_train_only_layers():
    # TEST and the Dropout's TRAIN never meet: that layer is never in the net, and is not written
    expanded = layers(HEADED.replace("RULES", "include: {phase: TEST}"))
    assert "aux.drop" not in expanded and expanded["aux.ip"]["include"] == [{"phase": "TEST"}]
    net = spec(HEADED.replace("RULES", "include: {phase: TEST}"))
    assert [n.name for n in build_graph(net, "TEST").nodes if n.name.startswith("aux")] == ["aux.ip", "aux.relu"]


def test_a_bad_rule_on_an_instance_is_located_there():
    text = HEADED.replace("RULES", "include: {phase: DEPLOY}")
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "DEPLOY" in x)
    assert f"net.yaml:{line}:" in errors(text) and "DEPLOY" in errors(text)
