"""Golden error messages for bad solver, data and command-line input: tests/errors/solvers/.

Each ``<name>.yaml`` is a solver file with a ``<name>.expected`` holding the exact
stderr. A first comment line ``# args: ...`` adds command-line arguments to both
``netcfg check`` and ``netcfg train``; ``# train: ...`` runs ``train`` only, with
those arguments (``--resume``, ``--weights``, ``--out``). Every case must exit 2
with no traceback, print the same message from each command, and write nothing:
the commands run in a scratch copy of the corpus whose every file is compared
before and after (no run directory, no lock left, no file a YAML tag or a
pickle would create). Paths in messages are shown relative to that copy. Regenerate
after changing a message on purpose, and read the diff:

    NETCFG_REGEN=1 pytest tests/reliability/test_solver_corpus.py
"""

from __future__ import annotations

import os
import pickle
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from netcfg.solver import Solver
from netcfg.solver.spec import load_solver
from tests.errors import REGEN, check_complete
from tests.reliability import ROOT, netcfg, tree

CORPUS = Path("tests/errors/solvers")  # relative: it is how the messages name the files
CASES = sorted(p.stem for p in (ROOT / CORPUS).glob("*.yaml"))
# the first line: FILE:LINE:COL: error: ..., FILE: error: ... for a file without lines (weights,
# snapshots), or --OPTION [VALUE]: error: ... for what the command line said
FIRST = re.compile(r"^(?:[^\s:]+(?::\d+:\d+)?|--[a-z]+(?: .*?)?): error: \S")


class Pwned:
    """Unpickling this runs os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A copy of the corpus, plus the files some cases name: another net's snapshot (and its
    solver state alone), a malicious pickle, a state_dict with unrelated names."""
    work = tmp_path_factory.mktemp("corpus")
    shutil.copytree(ROOT / CORPUS, work / CORPUS)
    other = work / "other.yaml"
    other.write_text(f"net: {CORPUS}/nets/other.yaml\n"
                     "data: {train: {source: digits, split: train, batch_size: 16, limit: 64}}\n"
                     "base_lr: 0.1\nmax_iter: 2\nsnapshot_prefix: other\ndisplay: 0\n")
    s = Solver(load_solver(other), out=work / CORPUS / "snapshots/other", log=lambda line: None)
    s.solve()
    s.run.close()
    other.unlink()
    (work / CORPUS / "snapshots/lone").mkdir()  # a solver state without its weights beside it
    shutil.copy(work / CORPUS / "snapshots/other/other_iter_2.solverstate", work / CORPUS / "snapshots/lone")
    files = work / CORPUS / "files"
    torch.save({"ip1.weight": torch.ones(16, 64), "x": Pwned(work / "pwned")}, files / "malicious.pt")
    (files / "raw.pth").write_bytes(pickle.dumps(Pwned(work / "pwned"), protocol=4))
    torch.save({"encoder.weight": torch.ones(3, 3)}, files / "unrelated.pt")
    return work


def _commands(name: str) -> list[list[str]]:
    path = str(CORPUS / f"{name}.yaml")
    first = (ROOT / CORPUS / f"{name}.yaml").read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
    m = re.match(r"# (args|train): (.*)", first)
    args = shlex.split(m.group(2)) if m else []
    if m and m.group(1) == "train":
        return [["train", path, *args]]
    return [["check", path, *args], ["train", path, *args]]


def test_corpus_is_complete():
    assert len(CASES) >= 60
    check_complete(ROOT / CORPUS, CASES)


@pytest.mark.parametrize("name", CASES)
def test_error_message(name, work, monkeypatch):
    monkeypatch.chdir(work)
    golden = ROOT / CORPUS / f"{name}.expected"
    for i, command in enumerate(_commands(name)):
        before = tree(work)
        code, out, err = netcfg(*command)
        err = err.replace(f"{os.path.realpath(work)}/", "").replace(f"{work}/", "")
        assert tree(work) == before, f"{' '.join(command)} wrote files"
        assert code == 2, f"{' '.join(command)}: exit {code}\n{out}{err}"
        assert "Traceback" not in out + err
        assert out == "" or command[0] == "train"  # train may log what it did before the error
        if REGEN and i == 0:
            golden.write_text(err)
        assert err == golden.read_text(), f"netcfg {' '.join(command)}"
        assert FIRST.match(err), f"not FILE[:LINE:COL]: error: MESSAGE: {err!r}"
        if len(err.rstrip("\n").split("\n")) > 1 and re.fullmatch(r"\d+ errors", err.rstrip("\n").rsplit("\n", 1)[-1]):
            lines = err.rstrip("\n").split("\n")
            assert int(lines[-1].split()[0]) == len(lines) - 1
