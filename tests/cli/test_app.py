"""``netcfg --help`` without importing torch (its time is measured by bench/startup.py, not here)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from netcfg.cli.app import main
try:
    main(["--help"])
except SystemExit as e:
    assert e.code in (0, None), e.code
heavy = sorted(m for m in ("torch", "numpy", "pydantic", "netcfg.layers", "netcfg.net") if m in sys.modules)
assert not heavy, f"--help imported {heavy}"
"""


def test_help_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("check", "train", "test", "schema", "layers"):
        assert command in proc.stdout

