"""Helpers the layer tests share: a one-net text, and the located errors of its graph."""

from __future__ import annotations

import pytest

from netcfg.errors import ConfigErrors
from netcfg.net import build_graph
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml


def net_of(layers: str, inputs: str) -> str:
    """A net file named t with ``inputs`` and one layer a line of ``layers`` (flow-style mappings)."""
    return f"name: t\ninputs: {inputs}\nlayers:\n" + "".join(f"  - {line}\n" for line in layers.strip().splitlines())


def graph_errors(text: str) -> ConfigErrors:
    """The ConfigErrors that validating and wiring the net file ``text`` raises (it must raise)."""
    with pytest.raises(ConfigErrors) as e:
        build_graph(net_from_source(parse_yaml(text)))
    return e.value
