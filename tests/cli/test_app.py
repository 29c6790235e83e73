"""``netcfg --help``: fast, and without importing torch."""

from __future__ import annotations

import subprocess
import sys
import time

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


def test_help_is_fast():
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "netcfg.cli.app", "--help"], capture_output=True, timeout=60)
        best = min(best, time.perf_counter() - start)
        assert proc.returncode == 0, proc.stderr
    assert best < 0.5, f"netcfg --help took {best:.2f} s (best of 3)"
