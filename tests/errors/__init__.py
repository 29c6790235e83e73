"""Golden error corpora: bad files in nets/ and solvers/, each with the .expected message it must give."""

from __future__ import annotations

import os
from pathlib import Path

REGEN = os.environ.get("NETCFG_REGEN") == "1"  # rewrite the .expected files from what netcfg prints now


def check_complete(folder: Path, cases: list[str]) -> None:
    """Every .yaml of ``folder`` has its .expected and vice versa (with REGEN, orphans go)."""
    if REGEN:
        for orphan in set(folder.glob("*.expected")) - {folder / f"{c}.expected" for c in cases}:
            orphan.unlink()
    expected = sorted(p.stem for p in folder.glob("*.expected"))
    assert expected == cases or REGEN, "every .yaml needs an .expected and vice versa"
