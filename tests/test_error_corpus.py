"""Golden error messages: ``netcfg check`` on every bad net in tests/errors/nets/.

Each ``<name>.yaml`` has a ``<name>.expected`` holding the exact stderr, with the
file named as ``tests/errors/nets/<name>.yaml`` (the check runs from the repo
root). After changing a message on purpose, regenerate and read the diff:

    NETCFG_REGEN=1 pytest tests/test_error_corpus.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.errors import REGEN, check_complete

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path("tests/errors/nets")  # relative: it is how the messages name the files
CASES = sorted(p.stem for p in (ROOT / CORPUS).glob("*.yaml"))
# every line: FILE:LINE:COL: error: MESSAGE, then a count when there are several
LINE = re.compile(r"^(?P<file>\S+):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>\S.*)$")


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_corpus_is_complete():
    assert len(CASES) >= 30
    check_complete(ROOT / CORPUS, CASES)
    # a checkout that re-encodes files would quietly turn this case into a valid one
    with pytest.raises(UnicodeDecodeError):
        (ROOT / CORPUS / "not_utf8.yaml").read_bytes().decode("utf-8")


@pytest.mark.parametrize("name", CASES)
def test_error_message(name):
    path = CORPUS / f"{name}.yaml"
    result = run_cli("check", str(path))
    golden = ROOT / CORPUS / f"{name}.expected"
    if REGEN:
        golden.write_text(result.stderr)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr == golden.read_text()
    lines = result.stderr.rstrip("\n").split("\n")
    if len(lines) > 1:
        assert lines.pop() == f"{len(lines)} errors"
    for line in lines:
        m = LINE.match(line)
        assert m, f"not FILE:LINE:COL: error: MESSAGE: {line!r}"
        assert m["file"] == str(path)


@pytest.mark.parametrize("name", ["yaml_syntax", "several_graph_errors"])
def test_console_script_prints_the_same(name):
    """The installed entry point, in a real process: same bytes, exit 2."""
    path = CORPUS / f"{name}.yaml"
    proc = subprocess.run([sys.executable, "-c", "from netcfg.cli.app import main; main()", "check", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (ROOT / CORPUS / f"{name}.expected").read_text()
