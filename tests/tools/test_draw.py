"""``netcfg draw``: DOT and Mermaid name every layer and blob shape; Graphviz renders real pictures."""

from __future__ import annotations

import re
import shutil

import pytest

from netcfg.net import build_graph
from netcfg.net.spec import load_net
from netcfg.tools import draw as draw_module
from tests.cli import run_cli
from tests.tools import RESNET, ROOT, assert_picture

LENET = str(ROOT / "configs" / "lenet.yaml")
LENET_SHAPES = ["1x28x28", "20x24x24", "20x12x12", "50x8x8", "50x4x4", "500", "10"]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


@pytest.fixture
def resnet(tmp_path):
    path = tmp_path / "res.yaml"
    path.write_text(RESNET)
    return path


def graph_of(path, phase="TRAIN"):
    return build_graph(load_net(path), phase)


@pytest.mark.parametrize("fmt", ["dot", "mmd"])
def test_text_names_every_layer_its_type_and_every_blob_shape(tmp_path, fmt):
    out = tmp_path / f"lenet.{fmt}"
    result = run_cli("draw", LENET, "-o", str(out), "--phase", "TEST")
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    graph = graph_of(LENET, "TEST")
    for node in graph.nodes:
        assert node.name in text and node.spec.type in text
    for shape in LENET_SHAPES:
        assert shape in text, shape
    assert "400,500 params" in text and "num_output 500" in text  # params and key parameters of ip1
    assert ("mermaid.live" if fmt == "mmd" else "dot -Tsvg") in result.stderr  # how to render it


def test_dot_goes_to_stdout_and_is_wired_like_the_net():
    result = run_cli("draw", LENET, "--rankdir", "LR")
    assert result.exit_code == 0, result.stderr
    dot = result.stdout
    assert dot.startswith('digraph "LeNet (TRAIN)"') and "rankdir=LR;" in dot
    ids = dict(re.findall(r'^\s*(n\d+) \[label="([^\\"]+)', dot, re.M))  # node id -> first label line
    edges = {(ids[a], ids[b]) for a, b in re.findall(r"(n\d+) -> (n\d+)", dot)}
    assert ("data", "conv1") in edges and ("ip2", "loss") in edges and ("label", "loss") in edges
    assert ("relu1", "ip2") in edges  # the in-place ReLU sits between ip1 and ip2
    assert len(edges) == 10


def test_residual_blocks_are_clusters_with_their_inner_layers_and_a_sum(resnet):
    d = draw_module.build_drawing(graph_of(resnet))
    dot, mmd = draw_module.to_dot(d), draw_module.to_mermaid(d)
    for text in (dot, mmd):
        for inner in ("conv1", "bn1", "relu1", "conv2", "proj"):
            assert inner in text
        assert "stage1.block1" in text and "stage2.block1" in text
        for shape in ("8x8x8", "16x4x4", "16x1x1"):
            assert shape in text
    assert dot.count("subgraph cluster_") == 5  # stem, stage1 > block1, stage2 > block1
    assert dot.count("shape=circle") == 2        # one sum per block
    assert mmd.count("subgraph ") == 5 and mmd.count("\n    end") + mmd.count("\n  end") >= 2


def test_collapse_draws_each_block_and_scope_as_one_box(resnet):
    d = draw_module.build_drawing(graph_of(resnet), collapse=True)
    dot = draw_module.to_dot(d)
    first_lines = re.findall(r'^\s*n\d+ \[label="([^\\"]+)', dot, re.M)
    assert sorted(first_lines) == sorted(["data", "label", "stem", "stage1.block1", "stage2.block1", "pool", "fc",
                                          "loss", "loss"])  # the loss layer and the loss output
    assert "stem\\n3 layers: Convolution, BatchNorm, ReLU\\n96 params" in dot
    assert "stage1.block1\\nResidual: conv1, bn1, relu1, conv2 + identity\\n1,184 params" in dot
    assert "stage2.block1\\nResidual: conv1, bn1 + proj" in dot
    labels = re.findall(r'label="([^"]*)"\];', dot)
    assert labels.count("8x8x8") == 2  # stem -> block1 -> block2 each carry the blob once


def test_without_graphviz_a_picture_request_writes_dot_and_says_how(tmp_path, monkeypatch):
    monkeypatch.setattr(draw_module.shutil, "which", lambda name: None)
    out = tmp_path / "net.png"
    result = run_cli("draw", LENET, "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert not out.exists() and (tmp_path / "net.dot").read_text().startswith("digraph")
    assert "apt-get install graphviz" in result.stderr and f"dot -Tpng {tmp_path / 'net.dot'} -o {out}" in result.stderr


@needs_dot
@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_png_is_a_real_picture(tmp_path, rankdir, resnet):
    out = tmp_path / "net.png"
    result = run_cli("draw", str(resnet), "-o", str(out), "--rankdir", rankdir)
    assert result.exit_code == 0, result.stderr
    assert_picture(out)
    from PIL import Image

    w, h = Image.open(out).size
    assert (h > w) if rankdir == "TB" else (w > h)


@needs_dot
def test_svg_names_every_layer(tmp_path):
    out = tmp_path / "net.svg"
    assert run_cli("draw", LENET, "-o", str(out)).exit_code == 0
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for name in ("conv1", "pool2", "ip2", "SoftmaxWithLoss", "50x4x4"):
        assert name in svg


def test_a_solver_draws_its_net():
    result = run_cli("draw", str(ROOT / "solvers" / "digits.yaml"), "--format", "mmd")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("flowchart TB") and "DigitsCNN" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["-o", "net.jpg"], "cannot tell the format"),
    (["--format", "svgz"], "unknown format"),
    (["--format", "png"], "needs an output file"),
    (["--rankdir", "XY"], "--rankdir must be"),
    (["--phase", "VAL"], "TRAIN or TEST"),
])
def test_bad_options_are_errors(args, message):
    result = run_cli("draw", LENET, *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_an_output_that_cannot_be_written_or_is_the_net_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    result = run_cli("draw", LENET, "-o", str(tmp_path / "file" / "lenet.mmd"))
    assert result.exit_code == 2 and result.stderr.startswith("--output: error: cannot write"), result.stderr
    net = tmp_path / "lenet.yaml"
    net.write_text(open(LENET).read())
    result = run_cli("draw", str(net), "--format", "dot", "-o", str(net))
    assert result.exit_code == 2 and "is the file being read" in result.stderr
    assert net.read_text() == open(LENET).read()  # the net file is not replaced by its drawing


@pytest.mark.parametrize("depth, boxes", [(2, 9), (1, 3)])
def test_collapsed_scopes_keep_every_parameter(depth, boxes):
    """configs/plain20.yaml names its layers stage2.block1.conv1: collapsed to blocks (depth 2)
    or stages (depth 1), the boxes' parameter counts still add up to the net's."""
    graph = graph_of(ROOT / "configs" / "plain20.yaml")
    d = draw_module.build_drawing(graph, collapse=True, depth=depth)
    groups = [n for n in d.nodes.values() if n.kind == "group"]
    assert len(groups) == boxes
    per_box = "6 layers: Convolution x2, BatchNorm x2, ReLU x2" if depth == 2 else "18 layers: Convolution x6"
    assert all(n.lines[1].startswith(per_box) for n in groups), [n.lines for n in groups]
    counted = sum(int(line.split()[0].replace(",", "")) for n in d.nodes.values() for line in n.lines
                  if line.endswith(" params"))
    assert counted == graph.total_params == 269_434


@pytest.mark.parametrize("name, fmt", [("l.svg", "png"), ("l.png", "svg"), ("l.dot", "mmd"), ("l.mmd", "dot")])
def test_a_format_the_output_suffix_contradicts_is_refused_and_nothing_is_written(tmp_path, name, fmt):
    """-o l.svg -f png used to write PNG bytes into l.svg."""
    out = tmp_path / name
    result = run_cli("draw", LENET, "-o", str(out), "-f", fmt)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"--format: error: --format {fmt} does not match the output file {out}")
    assert f"name the file {out.with_suffix('.' + fmt)}" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_format_agreeing_with_the_suffix_or_for_an_unknown_suffix_is_taken(tmp_path):
    assert run_cli("draw", LENET, "-o", str(tmp_path / "l.gv"), "-f", "dot").exit_code == 0
    assert run_cli("draw", LENET, "-o", str(tmp_path / "l.txt"), "-f", "mmd").exit_code == 0
    assert (tmp_path / "l.txt").read_text().startswith("flowchart TB")


def test_depth_alone_collapses_to_that_many_names(tmp_path):
    """--depth 1 without --collapse was silently ignored: every layer was drawn."""
    plain20 = str(ROOT / "configs" / "plain20.yaml")
    result = run_cli("draw", plain20, "--depth", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == run_cli("draw", plain20, "--collapse", "--depth", "1").stdout
    first_lines = re.findall(r'^\s*n\d+ \[label="([^\\"]+)', result.stdout, re.M)
    assert {"stage1", "stage2", "stage3"} <= set(first_lines) and "stage1.block1" not in first_lines
    default = run_cli("draw", plain20, "--collapse").stdout  # --collapse alone: depth 2, template blocks
    assert "stage1.block1" in re.findall(r'^\s*n\d+ \[label="([^\\"]+)', default, re.M)
