"""Fixtures for the export tests: zoo nets with weights on disk, as a user's training run leaves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from netcfg.net import load_net
from tests.export.helpers import write_weights


@pytest.fixture(scope="session")
def zoo_weights(tmp_path_factory):
    """config path -> (spec, weights file), written once per session on demand."""
    folder = tmp_path_factory.mktemp("zoo_weights")
    cache: dict[Path, tuple] = {}

    def get(path: Path):
        if path not in cache:
            spec = load_net(path)
            cache[path] = (spec, write_weights(spec, folder / f"{path.stem}.safetensors"))
        return cache[path]

    return get
