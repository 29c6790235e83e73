"""What the docs show still holds: their YAML examples validate, the options of their
`netcfg` command lines exist, and their zoo tables quote the config headers."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import typer.main
import yaml

from netcfg import zoo
from netcfg.cli.app import app
from netcfg.net import build_graph, load_net
from netcfg.solver.spec import load_solver

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCED_YAML = re.compile(r"```ya?ml\n(.*?)```", re.S)
# a minimal solver a fragment of a solver file is merged into (a fragment's data splits replace these)
BASE_SOLVER = {
    "net": "../configs/lenet.yaml", "base_lr": 0.01, "max_iter": 10, "test_interval": 5, "snapshot_prefix": "x",
    "data": {"train": {"source": "digits", "split": "train", "batch_size": 8},
             "test": {"source": "digits", "split": "test", "batch_size": 8}},
}


def _yaml_blocks():
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCED_YAML.finditer(text):
            yield pytest.param(m.group(1), id=f"{doc.name}:{text[:m.start()].count(chr(10)) + 1}")


def _is_net(data: dict) -> bool:
    return "layers" in data or "blocks" in data or "plugins" in data


@pytest.mark.parametrize("block", list(_yaml_blocks()))
def test_every_yaml_example_of_the_docs_validates(block, tmp_path):
    """A doc's solver snippet (a whole file, or some keys of one) is a valid solver file;
    net snippets with elided parts (`layers: [...]`) are left to tests/net/test_templates.py."""
    data = yaml.safe_load(block)
    if _is_net(data):
        pytest.skip("a net snippet with elided parts")
    if "train" in data or "test" in data:  # a data section written without its `data:` key
        data = {"data": data}
    solver = {**BASE_SOLVER, **data, "data": {**BASE_SOLVER["data"], **data.get("data", {})}}
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "solvers").mkdir()
    path = tmp_path / "solvers/s.yaml"
    path.write_text(yaml.safe_dump(solver, sort_keys=False))
    load_solver(path)  # raises a located NetcfgError where the example has gone stale


def test_the_readmes_net_example_builds(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\n((?: {4}name: LeNet\n)(?: {4}.*\n)+)", readme).group(1)
    path = tmp_path / "lenet.yaml"
    path.write_text(textwrap.dedent(block))
    g = build_graph(load_net(path))
    assert g.blobs["ip2"].shape == (10,)


def _options() -> dict[str, set[str]]:
    """'train', 'data show', ...: each command's option names."""
    out = {}
    for name, cmd in typer.main.get_command(app).commands.items():
        subs = {f"{name} {sub}": c for sub, c in cmd.commands.items()} if hasattr(cmd, "commands") else {name: cmd}
        for full, c in subs.items():
            out[full] = {o for p in c.params for o in (*p.opts, *p.secondary_opts)}
    return out


def test_every_option_the_docs_show_exists():
    options = _options()
    groups = {name.split()[0] for name in options if " " in name}
    stale = []
    for doc in DOCS + sorted((ROOT / "solvers").glob("*.yaml")) + [ROOT / "bench/README.md"]:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for m in re.finditer(r"netcfg ([a-z-]+)((?: +[^\s`#|]+)*)", line):
                command, words = m.group(1), m.group(2).split()
                if command in groups and words:
                    command = f"{command} {words.pop(0)}"
                if command not in options:
                    continue  # prose ("netcfg checks ...") or a sub-command shown as a choice
                for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", " ".join(words)):
                    if flag not in options[command]:
                        stale.append(f"{doc.relative_to(ROOT)}:{number}: netcfg {command} has no {flag}")
    assert stale == []


def _zoo_rows(doc: str) -> list[tuple[list[str], list[int]]]:
    """(net names, parameter counts) of each row of a docs table with a 'parameters' column
    whose first cell names zoo nets (`lenet`, or `mlp`, `selu_mlp`)."""
    rows, column = [], None
    for line in (ROOT / doc).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if "parameters" in cells:
            column = cells.index("parameters")
        elif not cells:
            column = None
        elif column is not None and cells[0].startswith("`"):
            counts = [int(n.replace(",", "")) for n in re.findall(r"\d{1,3}(?:,\d{3})+|\d+", cells[column])]
            rows.append((re.findall(r"`([a-z0-9_]+)`", cells[0]), counts))
    return rows


@pytest.mark.parametrize("doc", ["README.md", "docs/zoo.md"])
def test_the_zoo_tables_quote_each_headers_parameter_count(doc):
    counts = {e.name: e.parameters for e in zoo.zoo_entries()}
    rows = _zoo_rows(doc)
    assert {name for names, _ in rows for name in names} == set(counts), doc
    for names, quoted in rows:
        assert set(quoted) <= {counts[n] for n in names}, (doc, names, quoted)
        assert len(quoted) in (len(names), 2), (doc, names, quoted)  # each net's, or a range


@pytest.mark.parametrize("doc", ["README.md", "docs/zoo.md"])
def test_the_zoo_tables_quote_the_recipes_measurements(doc):
    """A row's 'reaches' percentages are those its recipes' headers measured, rounded."""
    for line in (ROOT / doc).read_text().splitlines():
        recipes = re.findall(r"solvers/\w+\.yaml", line) if line.startswith("| `") else []
        measured = [float(x) for r in recipes
                    for x in re.findall(r"(\d+(?:\.\d+)?)%", zoo.header_comment((ROOT / r).read_text()))]
        for quoted in re.findall(r"(\d+\.\d+)%", line) if recipes else []:
            half = 0.5 * 10 ** -len(quoted.partition(".")[2]) + 1e-9
            assert any(abs(float(quoted) - m) <= half for m in measured), (doc, quoted, recipes)
