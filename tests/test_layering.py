"""Imports point down docs/architecture.md's chain, and nothing but the CLI imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "netcfg"

# docs/architecture.md's chain, bottom first: a part may import only parts of a lower rank
RANK = {
    "errors": 0,
    "source": 1, "stop": 1,
    "overrides": 2,
    "spec": 3,
    "layers": 4,
    "net": 5, "data": 5,
    "solver": 6,
    "exporting": 7, "tools": 7, "caffe": 7, "schema": 7, "zoo": 7,
    "cli": 8,
    "__main__": 9,
}
# (importing part, imported module) allowed across the chain, with the reason
ALLOWED = {
    ("data", "netcfg.caffe.blobproto"),  # mean files are Caffe BlobProtos; blobproto needs only numpy
}


def _part(module: str) -> str:
    """``netcfg.solver.spec`` -> ``solver``; ``netcfg.errors`` -> ``errors``."""
    return module.split(".")[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of a netcfg module in ``path``, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("netcfg.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("netcfg."):
            out.append((node.lineno, node.module))
    return out


FILES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_part_of_the_package_has_a_rank():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in FILES}
    assert parts == set(RANK), "add the new part to RANK (and to docs/architecture.md)"


def test_imports_point_down_the_chain():
    upward = []
    for path in FILES:
        me = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        upward += [f"{path.relative_to(PACKAGE.parent)}:{line}: {me} (rank {RANK[me]}) imports {module}"
                   for line, module in _imports(path)
                   if _part(module) != me and RANK[_part(module)] >= RANK[me] and (me, module) not in ALLOWED]
    assert not upward, "imports at the same rank or above:\n" + "\n".join(upward)
